//! The `artifacts:` globs of a task: one compiler, used by `dag::compile` to check them when a
//! workflow is read (`sluice validate` names the entry's line) and by `artifacts::collect` to
//! match files at run time, so what validates is exactly what runs. Pure: no IO.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

/// A glob relative to the workflow's folder: `*` stays within a segment, `**` crosses them.
/// An absolute path, a `..` segment or a pattern that is not a glob is refused, with the
/// reason as a sentence.
pub fn artifact_glob(pattern: &str) -> Result<GlobMatcher, String> {
    if pattern.starts_with('/') || Path::new(pattern).is_absolute() {
        return Err(
            "absolute paths are not allowed; write it relative to the workflow's folder".into(),
        );
    }
    if pattern.split('/').any(|s| s == "..") {
        return Err("`..` would leave the workflow's folder".into());
    }
    if pattern.trim().is_empty() {
        return Err("the pattern is empty".into());
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_stay_in_the_workflows_folder() {
        let matcher = artifact_glob("out/*.csv").expect("valid");
        assert!(matcher.is_match("out/a.csv"));
        assert!(
            !matcher.is_match("out/deep/a.csv"),
            "`*` stays in a segment"
        );
        assert!(
            artifact_glob("out/**/*.csv")
                .expect("valid")
                .is_match("out/deep/a.csv")
        );
        for (pattern, says) in [
            ("/etc/passwd", "absolute paths"),
            ("../secrets/*", "`..`"),
            ("out/../../x", "`..`"),
            ("out/[a-", "unclosed character class"),
            ("", "empty"),
        ] {
            let error = artifact_glob(pattern).expect_err(pattern);
            assert!(error.contains(says), "{pattern}: {error}");
        }
    }
}
