//! The two-sample Kolmogorov-Smirnov test, two-sided, as `scipy.stats.ks_2samp(method="auto")`
//! computes it: the exact distribution (Hodges' lattice-path recursion in Viehmann's form that
//! yields the p-value directly) when both samples have at most 10,000 values, otherwise the
//! distribution of the one-sample statistic for the effective size (`kstwo.sf`).

use super::kolmogorov::kstwo_sf;
use super::{TestResult, sort_floats};

/// scipy's `MAX_AUTO_N`: up to this size `auto` tries the exact distribution.
const MAX_EXACT_N: usize = 10_000;

/// The statistic D (largest distance between the two empirical CDFs) and its p-value.
/// Both samples must be non-empty and finite.
pub fn ks_2samp(reference: &[f64], current: &[f64]) -> TestResult {
    let mut a = reference.to_vec();
    let mut b = current.to_vec();
    sort_floats(&mut a);
    sort_floats(&mut b);
    ks_2samp_sorted(&a, &b)
}

/// [`ks_2samp`] over samples already sorted ascending.
pub fn ks_2samp_sorted(a: &[f64], b: &[f64]) -> TestResult {
    let (n1, n2) = (a.len(), b.len());
    let d = statistic(a, b);
    let g = gcd(n1, n2);
    let mut p_value = None;
    let mut d_used = d;
    if n1.max(n2) <= MAX_EXACT_N {
        let (d_rounded, exact) = exact_p_value(n1, n2, g, d);
        d_used = d_rounded;
        p_value = exact;
    }
    let p = match p_value {
        Some(p) => p,
        None => {
            let (m, n) = if n1 >= n2 {
                (n1 as f64, n2 as f64)
            } else {
                (n2 as f64, n1 as f64)
            };
            let effective_n = (m * n / (m + n)).round_ties_even();
            kstwo_sf(d_used, effective_n as u64)
        }
    };
    TestResult {
        statistic: d_used,
        p_value: Some(p.clamp(0.0, 1.0)),
    }
}

/// The largest absolute difference between the empirical CDFs, evaluated after each distinct
/// value as scipy evaluates `searchsorted(side="right")` at every pooled value.
fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut max_diff = f64::NEG_INFINITY;
    let mut min_diff = f64::INFINITY;
    while i < a.len() || j < b.len() {
        let value = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= value {
            i += 1;
        }
        while j < b.len() && b[j] <= value {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_side = (-min_diff).clamp(0.0, 1.0);
    if min_side > max_diff {
        min_side
    } else {
        max_diff
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// scipy's `_attempt_exact_2kssamp` for the two-sided test: D rounded to the lattice, and the
/// exact p-value, or `None` when the computation fails and the asymptotic one must be used.
fn exact_p_value(n1: usize, n2: usize, g: usize, d: f64) -> (f64, Option<f64>) {
    let lcm = ((n1 / g) * n2) as f64;
    let h = (d * lcm).round_ties_even();
    let d = h / lcm;
    if h == 0.0 {
        return (d, Some(1.0));
    }
    let h = h as usize;
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, g, h)
    };
    if (0.0..=1.0).contains(&p) {
        (d, Some(p))
    } else {
        (d, None)
    }
}

/// Pr(D ≥ h/n) for two samples of size n: the alternating sum of binomial ratios, evaluated
/// Horner-like to avoid cancellation (scipy's `_compute_prob_outside_square`).
fn prob_outside_square(n: usize, h: usize) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0f64;
    let mut k = n / h;
    while k >= 0 {
        let mut term = 1.0f64;
        for j in 0..h {
            term = (n - k * h - j) as f64 * term / (n + k * h + j + 1) as f64;
        }
        p = term * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// The share of lattice paths from (0, 0) to (m, n) that leave the band |x/m - y/n| <
/// h/lcm(m, n), kept one sliding column at a time and normalised as it goes so that it is the
/// p-value itself (scipy's `_compute_outer_prob_inside_method`).
fn outer_prob_inside(m: usize, n: usize, g: usize, h: usize) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for cell in a.iter_mut().take(maxj as usize) {
        *cell = 0.0;
    }
    for i in 1..=m {
        let lastminj = minj;
        let lastlen = curlen;
        minj = ((((ng * i - h) as f64) / mg as f64).floor() as i64 + 1).max(0);
        minj = minj.min(n);
        maxj = ((((ng * i + h) as f64) / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            val = (a[(jj + minj - lastminj) as usize] * fi + val * j as f64) / (fi + j as f64);
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for cell in &mut a[from..to] {
                *cell = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_samples_use_the_exact_distribution() {
        // scipy.stats.ks_2samp([1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8, 9])
        // -> statistic 0.5714285714285714, pvalue 0.23737373737373738
        let r = ks_2samp(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        );
        assert!((r.statistic - 0.5714285714285714).abs() < 1e-15);
        let p = r.p_value.unwrap();
        assert!(
            (p - 0.23737373737373738).abs() / 0.23737373737373738 < 1e-12,
            "{p}"
        );
        // Equal sizes: ks_2samp([1, 2, 3], [4, 5, 6]) -> 1.0, 0.09999999999999999
        let r = ks_2samp(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(r.statistic, 1.0);
        assert!((r.p_value.unwrap() - 0.1).abs() < 1e-15);
    }

    #[test]
    fn identical_samples_do_not_differ() {
        let r = ks_2samp(&[1.0, 1.0, 2.0], &[2.0, 1.0, 1.0]);
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, Some(1.0));
    }
}
