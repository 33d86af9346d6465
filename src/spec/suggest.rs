//! "Did you mean" suggestions: the closest known name to a misspelt one, by edit distance.

/// The edit distance between two strings (insertions, deletions, substitutions and swaps of
/// adjacent characters each cost 1), compared case-insensitively.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // Three rows are enough for the optimal-string-alignment variant (adjacent swaps).
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `word`, when it is close enough to be what was meant: at most a
/// third of the word's length in edits (at least one), so short words only match typos.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest candidate, if any.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("retries", "retries"), 0);
        assert_eq!(distance("retires", "retries"), 1);
        assert_eq!(distance("neds", "needs"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("Needs", "needs"), 0);
    }

    #[test]
    fn suggests_only_close_names() {
        let known = ["needs", "retries", "operator", "timeout"];
        assert_eq!(closest("neds", known), Some("needs"));
        assert_eq!(closest("retires", known), Some("retries"));
        assert_eq!(closest("operater", known), Some("operator"));
        assert_eq!(closest("banana", known), None);
        assert_eq!(closest("x", known), None);
    }
}
