//! The first Wasserstein distance between two samples (`scipy.stats.wasserstein_distance`)
//! and Evidently's normed form, divided by the reference standard deviation.

use super::{population_std, sort_floats};

/// The area between the two empirical CDFs.
pub fn wasserstein_distance(u: &[f64], v: &[f64]) -> f64 {
    let mut u = u.to_vec();
    let mut v = v.to_vec();
    sort_floats(&mut u);
    sort_floats(&mut v);
    wasserstein_distance_sorted(&u, &v)
}

/// [`wasserstein_distance`] over samples sorted ascending.
pub fn wasserstein_distance_sorted(u: &[f64], v: &[f64]) -> f64 {
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut sum = 0.0f64;
    let mut compensation = 0.0f64;
    while i < u.len() || j < v.len() {
        let take_u = j >= v.len() || (i < u.len() && u[i] <= v[j]);
        let value = if take_u {
            i += 1;
            u[i - 1]
        } else {
            j += 1;
            v[j - 1]
        };
        let next = match (u.get(i), v.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        if next > value {
            let term = (i as f64 / nu - j as f64 / nv).abs() * (next - value);
            let total = sum + term;
            compensation += if sum.abs() >= term.abs() {
                (sum - total) + term
            } else {
                (term - total) + sum
            };
            sum = total;
        }
    }
    sum + compensation
}

/// Evidently's normed Wasserstein distance: the distance over `max(np.std(reference), 0.001)`.
pub fn wasserstein_normed(reference_sorted: &[f64], current_sorted: &[f64]) -> f64 {
    let norm = population_std(reference_sorted).max(0.001);
    wasserstein_distance_sorted(reference_sorted, current_sorted) / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_matches_scipy() {
        // wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0
        assert!((wasserstein_distance(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]) - 5.0).abs() < 1e-12);
        // wasserstein_distance([3.4, 3.9, 7.5, 7.8], [4.5, 1.4]) == 2.7
        let d = wasserstein_distance(&[3.4, 3.9, 7.5, 7.8], &[4.5, 1.4]);
        assert!((d - 2.7).abs() < 1e-12, "{d}");
    }
}
