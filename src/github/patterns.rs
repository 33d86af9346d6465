//! Glob pattern lists with `!` exclusions, read the way GitHub Actions reads `branches`,
//! `tags` and `paths`: patterns apply in order and the last one that matches decides, so
//! `["docs/**", "!docs/drafts/**"]` takes docs but not drafts. `*` stays within one path
//! segment, `**` crosses them. A list of only exclusions starts from "everything".

use globset::{GlobBuilder, GlobMatcher};

/// A pattern that does not compile, with its index in the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern `{pattern}` is not a valid glob: {message}")]
pub struct PatternError {
    pub index: usize,
    pub pattern: String,
    pub message: String,
}

/// A compiled pattern list.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// (include, matcher) in the order written.
    rules: Vec<(bool, GlobMatcher)>,
    /// What a text that no pattern matches gets.
    default: bool,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, PatternError> {
        let mut rules = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            let (include, glob) = match pattern.strip_prefix('!') {
                Some(rest) => (false, rest),
                None => (true, pattern.as_str()),
            };
            let error = |message: String| PatternError {
                index,
                pattern: pattern.clone(),
                message,
            };
            if glob.trim().is_empty() {
                return Err(error("the pattern is empty".to_owned()));
            }
            let matcher = GlobBuilder::new(glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| error(e.kind().to_string()))?
                .compile_matcher();
            rules.push((include, matcher));
        }
        let default = rules.first().is_some_and(|(include, _)| !include);
        Ok(Patterns { rules, default })
    }

    /// Whether `text` is taken by the list.
    pub fn matches(&self, text: &str) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|(_, m)| m.is_match(text))
            .map_or(self.default, |(include, _)| *include)
    }

    /// Whether any of `texts` is taken by the list.
    pub fn matches_any<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> bool {
        texts.into_iter().any(|t| self.matches(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> Patterns {
        Patterns::new(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>())
            .expect("valid patterns")
    }

    #[test]
    fn star_stays_in_a_segment_and_double_star_crosses() {
        let p = list(&["feature/*"]);
        assert!(p.matches("feature/login"));
        assert!(!p.matches("feature/login/v2"));
        assert!(!p.matches("main"));
        let p = list(&["prompts/**"]);
        assert!(p.matches("prompts/a/b/c.txt"));
        assert!(!p.matches("src/prompts/a.txt"));
        let p = list(&["**/*.yaml"]);
        assert!(p.matches("a.yaml") && p.matches("x/y/a.yaml"));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let p = list(&["docs/**", "!docs/drafts/**", "docs/drafts/keep.md"]);
        assert!(p.matches("docs/guide.md"));
        assert!(!p.matches("docs/drafts/wip.md"));
        assert!(p.matches("docs/drafts/keep.md"));
        assert!(!p.matches("src/main.rs"));
    }

    #[test]
    fn only_exclusions_start_from_everything() {
        let p = list(&["!release/**"]);
        assert!(p.matches("main"));
        assert!(!p.matches("release/1.0"));
        assert!(p.matches_any(["release/1.0", "main"]));
        assert!(!p.matches_any(["release/1.0"]));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_index() {
        let bad = Patterns::new(&["main".to_owned(), "feat/[".to_owned()]).expect_err("bad glob");
        assert_eq!(bad.index, 1);
        assert!(bad.to_string().contains("feat/["), "{bad}");
        let empty = Patterns::new(&["!".to_owned()]).expect_err("empty");
        assert_eq!(empty.index, 0);
    }
}
