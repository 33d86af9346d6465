//! Tests on binned shares: PSI and Jensen-Shannon distance, over Evidently's bins
//! (`get_binned_data`): Sturges bins over the pooled data for a numeric column with more than
//! 20 distinct reference values, otherwise the share of each value.

use std::collections::BTreeMap;

use super::compensated_sum;
use crate::table::canonical_bits;

/// A sample to bin: numbers (sorted or not) or labels.
#[derive(Debug, Clone, Copy)]
pub enum Sample<'a> {
    /// Numbers; `integer` says pandas holds them as integers (which widens narrow bins).
    Numbers {
        values: &'a [f64],
        integer: bool,
    },
    Labels(&'a [String]),
}

/// Numeric columns with more distinct reference values than this are binned by Sturges' rule.
const MAX_DISTINCT_FOR_VALUE_SHARES: usize = 20;

/// The reference and current shares per bin, Evidently's way.
pub fn binned_shares(reference: Sample<'_>, current: Sample<'_>) -> (Vec<f64>, Vec<f64>) {
    match (reference, current) {
        (
            Sample::Numbers {
                values: r,
                integer: ri,
            },
            Sample::Numbers {
                values: c,
                integer: ci,
            },
        ) => {
            let distinct = r
                .iter()
                .map(|v| canonical_bits(*v))
                .collect::<std::collections::HashSet<_>>()
                .len();
            if distinct > MAX_DISTINCT_FOR_VALUE_SHARES {
                histogram_shares(r, c, ri && ci)
            } else {
                let key = |v: &f64| canonical_bits(*v);
                value_shares(
                    &r.iter().map(key).collect::<Vec<_>>(),
                    &c.iter().map(key).collect::<Vec<_>>(),
                )
            }
        }
        (Sample::Labels(r), Sample::Labels(c)) => value_shares(r, c),
        (Sample::Labels(r), Sample::Numbers { values, .. })
        | (Sample::Numbers { values, .. }, Sample::Labels(r)) => {
            let labels: Vec<String> = values
                .iter()
                .map(|v| crate::table::number_label(*v))
                .collect();
            if matches!(reference, Sample::Labels(_)) {
                value_shares(r, &labels)
            } else {
                value_shares(&labels, r)
            }
        }
    }
}

fn value_shares<K: Ord + Clone>(reference: &[K], current: &[K]) -> (Vec<f64>, Vec<f64>) {
    let reference_counts = super::categorical::counts(reference);
    let current_counts = super::categorical::counts(current);
    let mut keys: BTreeMap<&K, ()> = BTreeMap::new();
    for key in reference_counts.keys().chain(current_counts.keys()) {
        keys.insert(key, ());
    }
    let share = |counts: &BTreeMap<K, usize>, key: &K, total: usize| {
        *counts.get(key).unwrap_or(&0) as f64 / total as f64
    };
    keys.keys()
        .map(|key| {
            (
                share(&reference_counts, key, reference.len()),
                share(&current_counts, key, current.len()),
            )
        })
        .unzip()
}

/// `np.histogram_bin_edges(pooled, bins="sturges")`, then `np.histogram(x, edges)[0] / len(x)`.
fn histogram_shares(reference: &[f64], current: &[f64], integer: bool) -> (Vec<f64>, Vec<f64>) {
    let edges = sturges_edges(reference, current, integer);
    (
        histogram(reference, &edges)
            .into_iter()
            .map(|c| c as f64 / reference.len() as f64)
            .collect(),
        histogram(current, &edges)
            .into_iter()
            .map(|c| c as f64 / current.len() as f64)
            .collect(),
    )
}

/// numpy's Sturges bin edges for the pooled samples.
pub(crate) fn sturges_edges(reference: &[f64], current: &[f64], integer: bool) -> Vec<f64> {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in reference.iter().chain(current) {
        low = low.min(*v);
        high = high.max(*v);
    }
    let size = (reference.len() + current.len()) as f64;
    let spread = high - low;
    let mut width = spread / (size.log2() + 1.0);
    let (first, last) = if low == high {
        (low - 0.5, high + 0.5)
    } else {
        (low, high)
    };
    if integer && width < 1.0 && width != 0.0 {
        width = 1.0;
    }
    let bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

/// `np.linspace(start, stop, count)` with the endpoint set exactly.
fn linspace(start: f64, stop: f64, count: usize) -> Vec<f64> {
    let divisions = (count - 1) as f64;
    let step = (stop - start) / divisions;
    let mut points: Vec<f64> = (0..count)
        .map(|i| {
            if step == 0.0 {
                (i as f64 / divisions) * (stop - start) + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    if let Some(end) = points.last_mut() {
        *end = stop;
    }
    points
}

/// Counts per bin; each bin holds [left, right) except the last, which holds its right edge.
pub(crate) fn histogram(values: &[f64], edges: &[f64]) -> Vec<usize> {
    let bins = edges.len() - 1;
    let mut counts = vec![0usize; bins];
    let (first, last) = (edges[0], edges[bins]);
    let step = (last - first) / bins as f64;
    for &v in values {
        if !(first..=last).contains(&v) {
            continue;
        }
        let mut index = if step > 0.0 {
            (((v - first) / step) as usize).min(bins - 1)
        } else {
            0
        };
        // The guess can be one off near an edge; the edges themselves decide.
        while index > 0 && v < edges[index] {
            index -= 1;
        }
        while index + 1 < bins && v >= edges[index + 1] {
            index += 1;
        }
        counts[index] += 1;
    }
    counts
}

/// Evidently's fill of empty bins before PSI, applied to each side separately: the smallest
/// non-empty share over a million if it is at most 1e-4, otherwise 1e-4.
fn fill_empty_bins(shares: &mut [f64]) {
    let smallest = shares
        .iter()
        .copied()
        .filter(|s| *s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() {
        return;
    }
    let fill = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    for share in shares.iter_mut().filter(|s| **s == 0.0) {
        *share = fill;
    }
}

/// Population stability index: Σ (r - c) ln(r / c) over the filled bins.
pub fn psi(reference: Sample<'_>, current: Sample<'_>) -> f64 {
    let (mut r, mut c) = binned_shares(reference, current);
    fill_empty_bins(&mut r);
    fill_empty_bins(&mut c);
    compensated_sum(r.iter().zip(&c).map(|(r, c)| (r - c) * (r / c).ln()))
}

/// Jensen-Shannon distance (`scipy.spatial.distance.jensenshannon`, natural logarithm) between
/// the unfilled bin shares.
pub fn jensen_shannon(reference: Sample<'_>, current: Sample<'_>) -> f64 {
    let (r, c) = binned_shares(reference, current);
    jensen_shannon_of_shares(&r, &c)
}

pub(crate) fn jensen_shannon_of_shares(p: &[f64], q: &[f64]) -> f64 {
    let p_total = compensated_sum(p.iter().copied());
    let q_total = compensated_sum(q.iter().copied());
    let p: Vec<f64> = p.iter().map(|v| v / p_total).collect();
    let q: Vec<f64> = q.iter().map(|v| v / q_total).collect();
    let relative_entropy = |x: f64, y: f64| {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let mut left = Vec::with_capacity(p.len());
    let mut right = Vec::with_capacity(p.len());
    for (a, b) in p.iter().zip(&q) {
        let m = (a + b) / 2.0;
        left.push(relative_entropy(*a, m));
        right.push(relative_entropy(*b, m));
    }
    let divergence = compensated_sum(left) + compensated_sum(right);
    (divergence / 2.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sturges_edges_match_numpy() {
        // np.histogram_bin_edges([0, 1, 2, 3, 10], bins="sturges")
        // -> [0., 2.5, 5., 7.5, 10.]
        let edges = sturges_edges(&[0.0, 1.0, 2.0], &[3.0, 10.0], false);
        assert_eq!(edges, vec![0.0, 2.5, 5.0, 7.5, 10.0]);
        // One value: a single bin of width 1 around it.
        assert_eq!(sturges_edges(&[2.0], &[2.0], false), vec![1.5, 2.5]);
    }

    #[test]
    fn the_last_bin_holds_its_right_edge() {
        assert_eq!(
            histogram(&[0.0, 2.5, 9.0, 10.0], &[0.0, 2.5, 5.0, 7.5, 10.0]),
            vec![1, 1, 0, 2]
        );
    }

    #[test]
    fn jensen_shannon_matches_scipy() {
        // jensenshannon([1.0, 0.0], [0.5, 0.5]) == 0.464501404022459
        let d = jensen_shannon_of_shares(&[1.0, 0.0], &[0.5, 0.5]);
        assert!((d - 0.464501404022459).abs() < 1e-15, "{d}");
    }

    #[test]
    fn psi_fills_empty_bins_before_the_logarithm() {
        let reference: Vec<String> = ["a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let current: Vec<String> = ["a", "c"].iter().map(|s| s.to_string()).collect();
        let value = psi(Sample::Labels(&reference), Sample::Labels(&current));
        assert!(value.is_finite() && value > 0.0);
    }
}
