//! Drift of embedding columns, as Evidently's embedding drift methods measure it: the distance
//! between the mean embeddings (euclidean or cosine), the share of components whose normed
//! Wasserstein distance drifts, and the unbiased squared maximum mean discrepancy (MMD) with a
//! Gaussian kernel whose width is the median distance. MMD also gets a p-value from a seeded
//! permutation test.

use crate::rng::SeededRng;
use crate::stats::{sort_floats, wasserstein::wasserstein_normed};

/// Evidently samples at most this many rows per side to pick the kernel width.
const MEDIAN_SAMPLE: usize = 1000;
/// The permutation test runs on at most this many rows per side, to bound its cost.
const PERMUTATION_SAMPLE: usize = 1000;

/// The mean of each component.
pub fn mean_embedding(rows: &[Vec<f64>]) -> Vec<f64> {
    let width = rows.first().map_or(0, Vec::len);
    let mut sums = vec![0.0; width];
    for row in rows {
        for (sum, value) in sums.iter_mut().zip(row) {
            *sum += value;
        }
    }
    sums.iter().map(|s| s / rows.len() as f64).collect()
}

/// `scipy.spatial.distance.euclidean` between the mean embeddings.
pub fn euclidean_distance(reference: &[Vec<f64>], current: &[Vec<f64>]) -> f64 {
    let (a, b) = (mean_embedding(reference), mean_embedding(current));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// `scipy.spatial.distance.cosine` between the mean embeddings (1 - cosine similarity,
/// clipped to [0, 2]).
pub fn cosine_distance(reference: &[Vec<f64>], current: &[Vec<f64>]) -> f64 {
    let (a, b) = (mean_embedding(reference), mean_embedding(current));
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let distance = 1.0 - dot(&a, &b) / (dot(&a, &a) * dot(&b, &b)).sqrt();
    distance.clamp(0.0, 2.0)
}

/// The share of components whose normed Wasserstein distance reaches `component_threshold`
/// (Evidently's `ratio` method with its default component test).
pub fn drifted_components_share(
    reference: &[Vec<f64>],
    current: &[Vec<f64>],
    component_threshold: f64,
) -> f64 {
    let width = reference.first().map_or(0, Vec::len);
    if width == 0 {
        return 0.0;
    }
    let drifted = (0..width)
        .filter(|&c| {
            let mut r: Vec<f64> = reference.iter().map(|row| row[c]).collect();
            let mut k: Vec<f64> = current.iter().map(|row| row[c]).collect();
            sort_floats(&mut r);
            sort_floats(&mut k);
            wasserstein_normed(&r, &k) >= component_threshold
        })
        .count();
    drifted as f64 / width as f64
}

/// The MMD estimate (never below 0, as Evidently reports it) and its permutation p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MmdResult {
    pub statistic: f64,
    pub p_value: f64,
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The median distance between reference and current rows (the kernel width), over at most
/// [`MEDIAN_SAMPLE`] rows per side; larger sides are sampled with `seed`.
fn median_distance(reference: &[Vec<f64>], current: &[Vec<f64>], seed: u64) -> f64 {
    let mut rng = SeededRng::new(seed);
    let pick = |rows: &[Vec<f64>], rng: &mut SeededRng| -> Vec<usize> {
        if rows.len() <= MEDIAN_SAMPLE {
            (0..rows.len()).collect()
        } else {
            rng.sample_indices(rows.len(), MEDIAN_SAMPLE)
        }
    };
    let (ri, ci) = (pick(reference, &mut rng), pick(current, &mut rng));
    let mut distances = Vec::with_capacity(ri.len() * ci.len());
    for &i in &ri {
        for &j in &ci {
            distances.push(squared_distance(&reference[i], &current[j]).sqrt());
        }
    }
    distances.sort_unstable_by(f64::total_cmp);
    let n = distances.len();
    if n % 2 == 1 {
        distances[n / 2]
    } else {
        (distances[n / 2 - 1] + distances[n / 2]) / 2.0
    }
}

/// The unbiased MMD² of the split `first` | `second` of the pooled rows under kernel `k`.
fn mmd2u(kernel: &[f64], size: usize, first: &[usize], second: &[usize]) -> f64 {
    let block = |a: &[usize], b: &[usize], skip_diagonal: bool| -> f64 {
        let mut sum = 0.0;
        for &i in a {
            let row = &kernel[i * size..(i + 1) * size];
            for &j in b {
                if !(skip_diagonal && i == j) {
                    sum += row[j];
                }
            }
        }
        sum
    };
    let (m, n) = (first.len() as f64, second.len() as f64);
    block(first, first, true) / (m * (m - 1.0)) + block(second, second, true) / (n * (n - 1.0))
        - 2.0 / (m * n) * block(first, second, false)
}

/// MMD² with the Gaussian kernel exp(-‖a-b‖² / median²) and a p-value from `permutations`
/// random splits of the pooled rows (the share of splits at least as large, counting the
/// observed one).
pub fn mmd(
    reference: &[Vec<f64>],
    current: &[Vec<f64>],
    permutations: usize,
    seed: u64,
) -> MmdResult {
    let median = median_distance(reference, current, seed);
    let gamma = 1.0 / (median * median);
    let pooled: Vec<&Vec<f64>> = reference.iter().chain(current).collect();
    let size = pooled.len();
    let kernel_at = |i: usize, j: usize| {
        if i == j {
            1.0
        } else {
            (-gamma * squared_distance(pooled[i], pooled[j])).exp()
        }
    };
    let (m, n) = (reference.len(), current.len());
    if m < 2 || n < 2 {
        return MmdResult {
            statistic: 0.0,
            p_value: 1.0,
        };
    }
    let (observed, p_value) = if size <= 2 * PERMUTATION_SAMPLE {
        let kernel = full_kernel(size, kernel_at);
        let first: Vec<usize> = (0..m).collect();
        let second: Vec<usize> = (m..size).collect();
        let observed = mmd2u(&kernel, size, &first, &second);
        let p = permutation_p_value(&kernel, size, m, observed, permutations, seed);
        (observed, p)
    } else {
        // The statistic over every row, streamed; the p-value over a seeded sample.
        let observed = streamed_mmd2u(m, n, kernel_at);
        let mut rng = SeededRng::new(seed ^ 0x5EED);
        let take_m = m.min(PERMUTATION_SAMPLE);
        let take_n = n.min(PERMUTATION_SAMPLE);
        let mut rows = rng.sample_indices(m, take_m);
        rows.extend(rng.sample_indices(n, take_n).into_iter().map(|j| j + m));
        let sample_size = rows.len();
        let kernel = full_kernel(sample_size, |i, j| kernel_at(rows[i], rows[j]));
        let p = permutation_p_value(&kernel, sample_size, take_m, observed, permutations, seed);
        (observed, p)
    };
    MmdResult {
        statistic: observed.max(0.0),
        p_value,
    }
}

fn full_kernel(size: usize, kernel_at: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let mut kernel = vec![0.0; size * size];
    for i in 0..size {
        for j in i..size {
            let value = kernel_at(i, j);
            kernel[i * size + j] = value;
            kernel[j * size + i] = value;
        }
    }
    kernel
}

fn streamed_mmd2u(m: usize, n: usize, kernel_at: impl Fn(usize, usize) -> f64) -> f64 {
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    for i in 0..m + n {
        for j in (i + 1)..m + n {
            let value = kernel_at(i, j);
            match (i < m, j < m) {
                (true, true) => xx += 2.0 * value,
                (false, false) => yy += 2.0 * value,
                _ => xy += value,
            }
        }
    }
    let (m, n) = (m as f64, n as f64);
    xx / (m * (m - 1.0)) + yy / (n * (n - 1.0)) - 2.0 / (m * n) * xy
}

fn permutation_p_value(
    kernel: &[f64],
    size: usize,
    first_size: usize,
    observed: f64,
    permutations: usize,
    seed: u64,
) -> f64 {
    if permutations == 0 {
        return f64::NAN;
    }
    let mut rng = SeededRng::new(seed);
    let mut order: Vec<usize> = (0..size).collect();
    let mut at_least = 0usize;
    for _ in 0..permutations {
        rng.shuffle(&mut order);
        let (first, second) = order.split_at(first_size);
        if mmd2u(kernel, size, first, second) >= observed {
            at_least += 1;
        }
    }
    (at_least + 1) as f64 / (permutations + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(rng: &mut SeededRng, rows: usize, shift: f64) -> Vec<Vec<f64>> {
        (0..rows)
            .map(|_| (0..4).map(|_| rng.normal() + shift).collect())
            .collect()
    }

    #[test]
    fn distances_between_means() {
        let reference = vec![vec![0.0, 0.0], vec![2.0, 0.0]];
        let current = vec![vec![1.0, 3.0], vec![1.0, 1.0]];
        assert_eq!(euclidean_distance(&reference, &current), 2.0);
        assert!((cosine_distance(&reference, &current) - (1.0 - 1.0 / 5f64.sqrt())).abs() < 1e-15);
    }

    #[test]
    fn mmd_separates_shifted_clouds_and_not_equal_ones() {
        let mut rng = SeededRng::new(11);
        let reference = cloud(&mut rng, 60, 0.0);
        let same = cloud(&mut rng, 60, 0.0);
        let shifted = cloud(&mut rng, 60, 1.0);
        let drifted = mmd(&reference, &shifted, 200, 1);
        let steady = mmd(&reference, &same, 200, 1);
        assert!(drifted.p_value < 0.01, "{drifted:?}");
        assert!(steady.p_value > 0.05, "{steady:?}");
        assert!(drifted.statistic > steady.statistic);
        assert_eq!(drifted, mmd(&reference, &shifted, 200, 1));
    }
}
