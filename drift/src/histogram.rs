//! The bins a drift report draws: reference and current shares side by side, binned the way
//! the PSI and Jensen-Shannon tests bin them (Sturges bins over the pooled numbers, or one bin
//! per value), with the number of bins bounded so a report stays readable.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::stats::binned::{Sample, histogram as bin_counts, sturges_edges};
use crate::table::{canonical_bits, number_label};

/// The most bins of single values a histogram keeps; the rarest values beyond them share
/// one bin, labelled [`OTHER_LABEL`].
pub const MAX_VALUE_BINS: usize = 30;

/// The label of the bin that gathers the values beyond [`MAX_VALUE_BINS`].
pub const OTHER_LABEL: &str = "(other)";

/// Numbers with more distinct reference values than this get Sturges bins (as in
/// `binned_shares`).
const MAX_DISTINCT_FOR_VALUE_BINS: usize = 20;

/// Reference and current shares per bin.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// One label per bin: `[low, high)` for a range of numbers, else the value itself.
    pub labels: Vec<String>,
    /// The edges of ranged bins (one more than the bins); empty for bins of single values.
    pub edges: Vec<f64>,
    /// The share of reference values in each bin (summing to 1).
    pub reference: Vec<f64>,
    /// The share of current values in each bin.
    pub current: Vec<f64>,
}

/// Bins both samples alike. Empty samples give empty shares.
pub fn histogram(reference: Sample<'_>, current: Sample<'_>) -> Histogram {
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
            if more_distinct_than(r, MAX_DISTINCT_FOR_VALUE_BINS) {
                ranged(r, c, ri && ci)
            } else {
                number_values(r, c)
            }
        }
        (Sample::Labels(r), Sample::Labels(c)) => label_values(r, c),
        (Sample::Labels(r), Sample::Numbers { values, .. }) => label_values(
            r,
            &values.iter().map(|v| number_label(*v)).collect::<Vec<_>>(),
        ),
        (Sample::Numbers { values, .. }, Sample::Labels(c)) => label_values(
            &values.iter().map(|v| number_label(*v)).collect::<Vec<_>>(),
            c,
        ),
    }
}

/// Whether `values` hold more than `limit` distinct numbers; stops counting past the limit.
fn more_distinct_than(values: &[f64], limit: usize) -> bool {
    let mut seen = HashSet::with_capacity(limit + 1);
    for v in values {
        seen.insert(canonical_bits(*v));
        if seen.len() > limit {
            return true;
        }
    }
    false
}

fn ranged(reference: &[f64], current: &[f64], integer: bool) -> Histogram {
    if reference.is_empty() && current.is_empty() {
        return empty();
    }
    let edges = sturges_edges(reference, current, integer);
    let shares = |values: &[f64]| -> Vec<f64> {
        let total = values.len().max(1) as f64;
        bin_counts(values, &edges)
            .into_iter()
            .map(|c| c as f64 / total)
            .collect()
    };
    let labels = edges
        .windows(2)
        .map(|w| format!("[{}, {})", short(w[0]), short(w[1])))
        .collect();
    Histogram {
        labels,
        reference: shares(reference),
        current: shares(current),
        edges,
    }
}

fn empty() -> Histogram {
    Histogram {
        labels: Vec::new(),
        edges: Vec::new(),
        reference: Vec::new(),
        current: Vec::new(),
    }
}

/// A bin edge as people read it: at most four significant decimals.
fn short(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn number_values(reference: &[f64], current: &[f64]) -> Histogram {
    let mut counts: HashMap<u64, (f64, usize, usize)> = HashMap::new();
    for v in reference {
        counts.entry(canonical_bits(*v)).or_insert((*v, 0, 0)).1 += 1;
    }
    for v in current {
        counts.entry(canonical_bits(*v)).or_insert((*v, 0, 0)).2 += 1;
    }
    let mut bins: Vec<(f64, usize, usize)> = counts.into_values().collect();
    bins.sort_by(|a, b| a.0.total_cmp(&b.0));
    value_bins(
        bins.into_iter()
            .map(|(v, r, c)| (number_label(v), r, c))
            .collect(),
        reference.len(),
        current.len(),
    )
}

fn label_values(reference: &[String], current: &[String]) -> Histogram {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for v in reference {
        counts.entry(v).or_default().0 += 1;
    }
    for v in current {
        counts.entry(v).or_default().1 += 1;
    }
    value_bins(
        counts
            .into_iter()
            .map(|(label, (r, c))| (label.to_owned(), r, c))
            .collect(),
        reference.len(),
        current.len(),
    )
}

/// Shares of single-value bins in their given order; beyond [`MAX_VALUE_BINS`], the values
/// rarest in both samples together go to one last bin.
fn value_bins(
    mut bins: Vec<(String, usize, usize)>,
    reference_total: usize,
    current_total: usize,
) -> Histogram {
    let (r_total, c_total) = (reference_total.max(1) as f64, current_total.max(1) as f64);
    let weight = |bin: &(String, usize, usize)| bin.1 as f64 / r_total + bin.2 as f64 / c_total;
    if bins.len() > MAX_VALUE_BINS {
        let mut by_weight: Vec<usize> = (0..bins.len()).collect();
        by_weight.sort_by(|a, b| weight(&bins[*b]).total_cmp(&weight(&bins[*a])));
        let kept: HashSet<usize> = by_weight[..MAX_VALUE_BINS - 1].iter().copied().collect();
        let mut other = (OTHER_LABEL.to_owned(), 0, 0);
        let mut index = 0;
        bins.retain(|bin| {
            let keep = kept.contains(&index);
            index += 1;
            if !keep {
                other.1 += bin.1;
                other.2 += bin.2;
            }
            keep
        });
        bins.push(other);
    }
    Histogram {
        reference: bins.iter().map(|b| b.1 as f64 / r_total).collect(),
        current: bins.iter().map(|b| b.2 as f64 / c_total).collect(),
        labels: bins.into_iter().map(|b| b.0).collect(),
        edges: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(values: &[f64]) -> Sample<'_> {
        Sample::Numbers {
            values,
            integer: false,
        }
    }

    #[test]
    fn many_distinct_numbers_get_the_sturges_bins_of_the_tests() {
        let reference: Vec<f64> = (0..100).map(f64::from).collect();
        let current: Vec<f64> = (50..150).map(f64::from).collect();
        let h = histogram(numbers(&reference), numbers(&current));
        assert_eq!(h.edges, sturges_edges(&reference, &current, false));
        assert_eq!(h.labels.len() + 1, h.edges.len());
        assert!(h.labels[0].starts_with("[0, "), "{:?}", h.labels);
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        assert!((sum(&h.reference) - 1.0).abs() < 1e-12);
        assert!((sum(&h.current) - 1.0).abs() < 1e-12);
        // The current data sits to the right: its last bin is full, the reference's empty.
        assert_eq!(h.reference[h.reference.len() - 1], 0.0);
        assert!(h.current[h.current.len() - 1] > 0.0);
    }

    #[test]
    fn few_values_get_a_bin_each_in_order() {
        let h = histogram(numbers(&[2.0, 1.0, 1.0, 3.0]), numbers(&[1.0, 4.0]));
        assert_eq!(h.labels, ["1", "2", "3", "4"]);
        assert!(h.edges.is_empty());
        assert_eq!(h.reference, [0.5, 0.25, 0.25, 0.0]);
        assert_eq!(h.current, [0.5, 0.0, 0.0, 0.5]);
    }

    #[test]
    fn rare_categories_beyond_the_limit_share_one_bin() {
        let mut reference: Vec<String> = vec!["common".to_owned(); 100];
        reference.extend((0..50).map(|i| format!("rare{i:02}")));
        let current = vec!["common".to_owned(), "new".to_owned()];
        let h = histogram(Sample::Labels(&reference), Sample::Labels(&current));
        assert_eq!(h.labels.len(), MAX_VALUE_BINS);
        assert_eq!(h.labels.last().map(String::as_str), Some(OTHER_LABEL));
        assert!(h.labels.iter().any(|l| l == "common"));
        assert!(h.labels.iter().any(|l| l == "new"));
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        assert!((sum(&h.reference) - 1.0).abs() < 1e-12);
        assert!((sum(&h.current) - 1.0).abs() < 1e-12);
    }
}
