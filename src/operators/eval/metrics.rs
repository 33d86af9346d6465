//! The reference metrics of `eval`, each a pure function of one output (and the example's
//! `expected`), and the latency percentiles over all examples. docs/eval.md defines each one
//! precisely enough to recompute by hand; the tests below are those hand computations.

use std::collections::HashMap;

/// `exact_match`'s normalisation: trimmed, every run of whitespace made one space,
/// case-folded (Unicode lower case). Nothing else: punctuation and articles stay.
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether the output equals `expected` after [`normalize`] on both.
pub fn exact_match(output: &str, expected: &str) -> bool {
    normalize(output) == normalize(expected)
}

/// Whether the normalised output contains the normalised `expected`.
pub fn contains(output: &str, expected: &str) -> bool {
    normalize(output).contains(&normalize(expected))
}

/// Whether the output, trimmed, is one JSON document.
pub fn json_valid(output: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(output.trim()).is_ok()
}

/// The tokens `f1` and `rouge_l` compare: lower-cased runs of letters and digits (every other
/// character separates tokens).
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The harmonic mean of precision and recall; 0 when both are 0.
fn f_measure(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Token-overlap F1 (SQuAD's, without its article and punctuation rules): the overlap is the
/// multiset intersection of the two token lists. Two empty texts score 1, one empty text 0.
pub fn f1(output: &str, expected: &str) -> f64 {
    let predicted = tokens(output);
    let reference = tokens(expected);
    if predicted.is_empty() || reference.is_empty() {
        return if predicted.is_empty() && reference.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for token in &reference {
        *counts.entry(token).or_default() += 1;
    }
    let mut overlap = 0usize;
    for token in &predicted {
        if let Some(left) = counts.get_mut(token.as_str())
            && *left > 0
        {
            *left -= 1;
            overlap += 1;
        }
    }
    f_measure(
        overlap as f64 / predicted.len() as f64,
        overlap as f64 / reference.len() as f64,
    )
}

/// ROUGE-L F-measure (β = 1): the longest common subsequence of the token lists, over the
/// output's length (precision) and the reference's (recall). Empty texts as in [`f1`].
pub fn rouge_l(output: &str, expected: &str) -> f64 {
    let predicted = tokens(output);
    let reference = tokens(expected);
    if predicted.is_empty() || reference.is_empty() {
        return if predicted.is_empty() && reference.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    // One row of the dynamic programme at a time: memory is linear in the reference.
    let mut previous = vec![0usize; reference.len() + 1];
    let mut current = vec![0usize; reference.len() + 1];
    for p in &predicted {
        for (j, r) in reference.iter().enumerate() {
            current[j + 1] = if p == r {
                previous[j] + 1
            } else {
                current[j].max(previous[j + 1])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let lcs = previous[reference.len()] as f64;
    f_measure(lcs / predicted.len() as f64, lcs / reference.len() as f64)
}

/// The `q`-th percentile (0–100) of `values` by numpy's default method ("linear"): on the
/// sorted values, rank `h = (n - 1) * q / 100`, and the value at `h` interpolated between its
/// two neighbours. `None` for no values.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() - 1) as f64 * (q / 100.0).clamp(0.0, 1.0);
    let below = rank.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = rank - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_trims_collapses_whitespace_and_folds_case_only() {
        assert!(exact_match("  Paris\n", "paris"));
        assert!(exact_match("New   York\tCity", "new york city"));
        assert!(exact_match("STRASSE", "strasse"));
        assert!(!exact_match("Paris.", "Paris"), "punctuation is kept");
        assert!(!exact_match("the Paris", "Paris"), "articles are kept");
    }

    #[test]
    fn contains_and_json_valid() {
        assert!(contains("The answer is  PARIS, France", "paris, france"));
        assert!(!contains("Lyon", "Paris"));
        assert!(json_valid(" {\"a\": [1, 2]}\n"));
        assert!(json_valid("3"));
        assert!(!json_valid("{\"a\": 1} trailing"));
        assert!(!json_valid(""));
    }

    #[test]
    fn f1_counts_the_multiset_overlap() {
        // Output tokens [the, cat, sat, the], reference [the, cat, the, mat]: overlap the×2 +
        // cat = 3; precision 3/4, recall 3/4, F1 0.75.
        assert!((f1("The cat sat, the", "the cat the mat") - 0.75).abs() < 1e-12);
        // Output [paris], reference [paris, france]: P 1, R 1/2, F1 2/3.
        assert!((f1("Paris", "Paris, France") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1("", ""), 1.0);
        assert_eq!(f1("x", ""), 0.0);
        assert_eq!(f1("a b", "c d"), 0.0);
    }

    #[test]
    fn rouge_l_is_the_lcs_f_measure() {
        // Output [the, cat, was, on, the, mat], reference [the, cat, sat, on, the, mat]:
        // LCS the cat on the mat = 5; P 5/6, R 5/6, F 5/6.
        let score = rouge_l("The cat was on the mat", "the cat sat on the mat");
        assert!((score - 5.0 / 6.0).abs() < 1e-12, "{score}");
        // Output [a, b, c, d], reference [b, d]: LCS 2; P 1/2, R 1, F 2/3.
        assert!((rouge_l("a b c d", "b d") - 2.0 / 3.0).abs() < 1e-12);
        // Order matters, unlike f1: [b, a] vs [a, b] has LCS 1.
        assert!((rouge_l("b a", "a b") - 0.5).abs() < 1e-12);
        assert_eq!(rouge_l("", ""), 1.0);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        // numpy.percentile([1, 2, 3, 4], 95) = 3 + 0.85 * (4 - 3) = 3.85
        let values = [4.0, 1.0, 3.0, 2.0];
        assert!((percentile(&values, 95.0).expect("p95") - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&values, 50.0), Some(2.5));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    /// Compares with numpy's own answers: `tests/fixtures/eval/percentiles.json` was written by
    /// `tests/fixtures/eval/percentiles.py` with numpy 2.4.6, the version scripts/test pins.
    #[test]
    fn percentiles_match_numpy() {
        let text = include_str!("../../../tests/fixtures/eval/percentiles.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).expect("fixture");
        assert!(cases.len() >= 5);
        for case in cases {
            let values: Vec<f64> = serde_json::from_value(case["values"].clone()).expect("values");
            for (q, expected) in case["percentiles"].as_object().expect("map") {
                let q: f64 = q.parse().expect("q");
                let expected = expected.as_f64().expect("number");
                let got = percentile(&values, q).expect("some");
                assert!(
                    (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                    "p{q} of {values:?}: {got} vs numpy {expected}"
                );
            }
        }
    }
}
