//! Tests on category counts: Pearson's chi-square of the current counts against the
//! reference proportions (`scipy.stats.chisquare` as Evidently calls it) and Evidently's
//! two-proportion Z-test.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use statrs::distribution::{ChiSquared, ContinuousCDF};
use statrs::function::erf::{erf, erfc};

use super::TestResult;

/// A number used as a category: ordered numerically (so the Z-test's "smallest value" is the
/// smallest number) and equal as pandas compares floats (0.0 and -0.0 are one value).
#[derive(Debug, Clone, Copy)]
pub struct NumberKey(f64);

impl NumberKey {
    pub fn new(value: f64) -> Self {
        NumberKey(if value == 0.0 { 0.0 } else { value })
    }
}

impl PartialEq for NumberKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for NumberKey {}

impl PartialOrd for NumberKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NumberKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Hash for NumberKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// Counts of each value, in a map ordered by value so sums run in a fixed order.
pub(crate) fn counts<K: Ord + Clone>(values: &[K]) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value.clone()).or_insert(0) += 1;
    }
    counts
}

/// Chi-square of the current counts against the reference counts scaled to the current size,
/// over the union of the values. A value new in the current data makes the statistic
/// infinite and the p-value 0, as in scipy.
pub fn chi_square<K: Ord + Clone + Hash>(reference: &[K], current: &[K]) -> TestResult {
    let reference_counts = counts(reference);
    let current_counts = counts(current);
    let mut keys: Vec<&K> = reference_counts
        .keys()
        .chain(current_counts.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let scale = current.len() as f64 / reference.len() as f64;
    let mut statistic = 0.0;
    for key in &keys {
        let expected = *reference_counts.get(*key).unwrap_or(&0) as f64 * scale;
        let observed = *current_counts.get(*key).unwrap_or(&0) as f64;
        statistic += (observed - expected) * (observed - expected) / expected;
    }
    let degrees_of_freedom = keys.len() as f64 - 1.0;
    let p_value = if degrees_of_freedom < 1.0 {
        // One category: the two samples cannot differ (scipy's df = 0 gives NaN).
        statistic = 0.0;
        1.0
    } else if statistic.is_infinite() {
        0.0
    } else {
        match ChiSquared::new(degrees_of_freedom) {
            Ok(distribution) => distribution.sf(statistic),
            Err(_) => f64::NAN,
        }
    };
    TestResult {
        statistic,
        p_value: Some(p_value),
    }
}

/// Evidently's two-proportion Z-test: the share of values other than the smallest value, in
/// the reference against the current data, two-sided. Equal one-valued samples give 1.
pub fn z_test<K: Ord + Clone + Hash>(reference: &[K], current: &[K]) -> TestResult {
    let distinct_reference: HashMap<&K, ()> = reference.iter().map(|k| (k, ())).collect();
    let distinct_current: HashMap<&K, ()> = current.iter().map(|k| (k, ())).collect();
    if distinct_reference.len() == 1
        && distinct_current.len() == 1
        && reference.first() == current.first()
    {
        return TestResult {
            statistic: 0.0,
            p_value: Some(1.0),
        };
    }
    let Some(first_key) = distinct_reference
        .keys()
        .chain(distinct_current.keys())
        .min()
        .copied()
    else {
        return TestResult {
            statistic: 0.0,
            p_value: Some(1.0),
        };
    };
    let others = |values: &[K]| values.iter().filter(|v| *v != first_key).count() as f64;
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    let p1 = others(reference) / n1;
    let p2 = others(current) / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let p_value = 2.0 * (1.0 - normal_cdf(z.abs()));
    TestResult {
        statistic: z,
        p_value: Some(p_value),
    }
}

/// The standard normal CDF as cephes' `ndtr` evaluates it (erf near 0, erfc in the tails).
pub(crate) fn normal_cdf(a: f64) -> f64 {
    let x = a * std::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * erf(x)
    } else {
        let y = 0.5 * erfc(z);
        if x > 0.0 { 1.0 - y } else { y }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi_square_matches_scipy() {
        // chisquare([30, 50, 20], [100/3, 100/3, 100/3]) -> 14.0, 0.0009118819655545164
        let reference = ["a", "b", "c"];
        let current: Vec<&str> = std::iter::repeat_n("a", 30)
            .chain(std::iter::repeat_n("b", 50))
            .chain(std::iter::repeat_n("c", 20))
            .collect();
        let r = chi_square(&reference, &current);
        assert!((r.statistic - 14.0).abs() < 1e-12);
        let p = r.p_value.unwrap();
        assert!(((p - 0.0009118819655545164) / p).abs() < 1e-9, "{p}");
    }

    #[test]
    fn a_new_category_is_certain_drift() {
        let r = chi_square(&["a", "b", "a"], &["a", "b", "c"]);
        assert!(r.statistic.is_infinite());
        assert_eq!(r.p_value, Some(0.0));
    }

    #[test]
    fn z_test_matches_evidently() {
        // proportions_diff_z_test(proportions_diff_z_stat_ind(...)) for 40/100 vs 60/100
        let reference: Vec<u8> = (0..100).map(|i| u8::from(i < 40)).collect();
        let current: Vec<u8> = (0..100).map(|i| u8::from(i < 60)).collect();
        let r = z_test(&reference, &current);
        assert!(
            (r.statistic + 2.8284271247461894).abs() < 1e-12,
            "{}",
            r.statistic
        );
        let p = r.p_value.unwrap();
        assert!(((p - 0.004677734981047177) / p).abs() < 1e-9, "{p}");
        assert_eq!(z_test(&[1, 1], &[1]).p_value, Some(1.0));
    }
}
