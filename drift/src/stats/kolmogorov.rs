//! Distributions of the one-sample Kolmogorov-Smirnov statistics, as scipy evaluates them:
//! `kstwo.sf` (two-sided D_n, scipy's `_kolmogn` after Simard and L'Ecuyer, 2011) and
//! `smirnov` (one-sided D_n+, the Birnbaum-Tingey sum). The two-sample test uses them when
//! its samples are too large for the exact distribution.
//!
//! Where scipy picks between exact algorithms (Durbin's matrix, Pomeranz's recursion) this
//! module uses Durbin's matrix for both: both are exact, so they agree to rounding.

use std::f64::consts::{LN_2, PI};

/// exp() of anything below this is zero in cephes (`MINLOG`).
const MIN_LOG: f64 = -7.083_964_185_322_641e2;
/// Above this n, cephes approximates the one-sided distribution instead of summing.
const SMIRNOV_MAX_COMPUTE_N: u64 = 1_000_000;

/// Pr(D_n ≥ x) for the two-sided one-sample statistic (`scipy.stats.kstwo.sf(x, n)`).
pub fn kstwo_sf(x: f64, n: u64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben-Gambino: 1/2n <= x <= 1/n.
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            (1..=n).fold(1.0, |p, i| p * (i as f64 * (1.0 / nf) * (2.0 * t - 1.0)))
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - cdf);
    }
    if t >= nf - 1.0 {
        return clip(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        return clip(2.0 * smirnov(n, x));
    }
    let nx_squared = t * x;
    if n <= 140 {
        if nx_squared <= 4.0 {
            return clip(1.0 - durbin_cdf(n, x));
        }
        return clip(2.0 * smirnov(n, x));
    }
    if nx_squared >= 370.0 {
        return 0.0;
    }
    if nx_squared >= 2.2 {
        return clip(2.0 * smirnov(n, x));
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    clip(1.0 - cdf)
}

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// log(n! / n^n) by Stirling's series with n log n taken out first.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    const STIRLING: [f64; 8] = [
        -2.955_065_359_477_124e-2,
        6.410_256_410_256_41e-3,
        -1.917_526_917_526_917_6e-3,
        8.417_508_417_508_417e-4,
        -5.952_380_952_380_953e-4,
        7.936_507_936_507_937e-4,
        -2.777_777_777_777_778e-3,
        8.333_333_333_333_333e-2,
    ];
    let rn = 1.0 / n;
    let polynomial = STIRLING.iter().fold(0.0, |acc, c| acc * (rn / n) + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * polynomial
}

/// Pr(D_n <= d) by Durbin's matrix (Marsaglia, Tsang and Wang, 2003), with the power taken
/// by squaring and the scale kept in a separate exponent.
fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0; m];
    let mut factorial = 1.0;
    for j in 1..=m {
        w[j - 1] = factorial;
        factorial /= j as f64;
        v[j - 1] *= factorial;
    }
    let tail = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tail) * factorial;

    let mut matrix = vec![0.0; m * m];
    for i in 1..m {
        for row in (i - 1)..m {
            matrix[row * m + i] = w[row - (i - 1)];
        }
    }
    for row in 0..m {
        matrix[row * m] = v[row];
    }
    for col in 0..m {
        matrix[(m - 1) * m + col] = v[m - 1 - col];
    }

    const SCALE_EXPONENT: i32 = 128;
    let scale_up = 2f64.powi(SCALE_EXPONENT);
    let scale_down = 2f64.powi(-SCALE_EXPONENT);
    let mut power = identity(m);
    let mut exponent: i64 = 0;
    let mut matrix_exponent: i64 = 0;
    let mut remaining = n;
    while remaining > 0 {
        if remaining % 2 == 1 {
            power = multiply(&power, &matrix, m);
            exponent += matrix_exponent;
        }
        matrix = multiply(&matrix, &matrix, m);
        matrix_exponent *= 2;
        if matrix[(k - 1) * m + (k - 1)].abs() > scale_up {
            for cell in &mut matrix {
                *cell *= scale_down;
            }
            matrix_exponent += SCALE_EXPONENT as i64;
        }
        remaining /= 2;
    }
    let mut p = power[(k - 1) * m + (k - 1)];
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < scale_down {
            p *= scale_up;
            exponent -= SCALE_EXPONENT as i64;
        }
    }
    clip(scale_by_power_of_two(p, exponent))
}

fn scale_by_power_of_two(value: f64, exponent: i64) -> f64 {
    let mut value = value;
    let mut exponent = exponent;
    while exponent > 1000 {
        value *= 2f64.powi(1000);
        exponent -= 1000;
    }
    while exponent < -1000 {
        value *= 2f64.powi(-1000);
        exponent += 1000;
    }
    value * 2f64.powi(exponent as i32)
}

fn identity(m: usize) -> Vec<f64> {
    let mut matrix = vec![0.0; m * m];
    for i in 0..m {
        matrix[i * m + i] = 1.0;
    }
    matrix
}

fn multiply(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut product = vec![0.0; m * m];
    for i in 0..m {
        for l in 0..m {
            let left = a[i * m + l];
            if left == 0.0 {
                continue;
            }
            let row = &b[l * m..(l + 1) * m];
            for (out, right) in product[i * m..(i + 1) * m].iter_mut().zip(row) {
                *out += left * right;
            }
        }
    }
    product
}

/// Pelz and Good's (1976) approximation of Pr(D_n <= x): the Li-Chien/Korolyuk expansion
/// K0 + K1/√n + K2/n + K3/n^1.5, each term rewritten with Jacobi theta functions.
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let z = n.sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let q_log = -pi2 / 8.0 / z2;
    if q_log < -708.0 {
        return 0.0;
    }
    let q = q_log.exp();
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);

    let mut k = [0.0f64; 4];
    let max_k = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=max_k).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let q_power = q.powf(8.0 * kk as f64);
        let coefficients = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (term, c) in k.iter_mut().zip(coefficients) {
            *term = *term * q_power + c;
        }
    }
    let sqrt_2pi = (2.0 * PI).sqrt();
    let divisors = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (term, divisor) in k.iter_mut().zip(divisors) {
        *term = *term * q * sqrt_2pi / divisor;
    }
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let mut k2_extra = 0.0;
    let mut k3_extra = 0.0;
    for kk in (1..=max_k).rev() {
        let kf = kk as f64;
        let k_squared = kf * kf;
        let q_power = q.powf(k_squared);
        let k_pi = PI * kf;
        k2_extra += k_squared * q_power;
        k3_extra += (sqrt3z + k_pi) * (sqrt3z - k_pi) * k_squared * q_power;
    }
    k[2] += k2_extra * pi2 * sqrt_2pi / (-36.0 * z3);
    k[3] += k3_extra * pi2 * sqrt_2pi / (216.0 * z6);
    let mut total = 0.0;
    for (i, term) in k.iter().enumerate() {
        total += term / n.powf(i as f64 / 2.0);
    }
    total
}

/// Pr(D_n+ ≥ x) for the one-sided one-sample statistic (`scipy.special.smirnov(n, x)`), by the
/// Birnbaum-Tingey sum x Σ_v C(n, v) (1 - x - v/n)^(n-v) (x + v/n)^(v-1). Each term is
/// formed in logarithms from a binomial kept as mantissa and exponent, so no term overflows.
pub fn smirnov(n: u64, x: f64) -> f64 {
    if x.is_nan() || !(0.0..=1.0).contains(&x) || n == 0 {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    // floor(n x) and its remainder, exactly: n x = high + low with both parts kept.
    let high = nf * x;
    let low = nf.mul_add(x, -high);
    let mut floor = high.floor();
    let mut alpha = (high - floor) + low;
    if alpha < 0.0 {
        floor -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        floor += 1.0;
        alpha -= 1.0;
    }
    let nx_floor = floor as u64;
    let mut last_term = n as i64 - nx_floor as i64 - if alpha == 0.0 { 0 } else { 1 };
    if alpha == 0.0 {
        last_term -= 1;
    }
    if nx_floor == 0 || (nx_floor == 1 && alpha == 0.0) {
        let cdf = x * (1.0 + x).powf(nf - 1.0);
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if -2.0 * nf * x * x < MIN_LOG {
        return 0.0;
    }
    if nx_floor >= n - 1 {
        return (1.0 - x).powf(nf).clamp(0.0, 1.0);
    }
    if n > SMIRNOV_MAX_COMPUTE_N {
        let log_p = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return if log_p < -LN_2 {
            log_p.exp()
        } else {
            1.0 + log_p.exp_m1()
        };
    }
    let term_count = last_term + 1;
    // The binomial C(n, v) as mantissa * 2^exponent.
    let mut binomial_mantissa = 1.0f64;
    let mut binomial_exponent: i64 = 0;
    let first = (1.0 - x).powf(nf) / x;
    let mut sum = first;
    let mut compensation = 0.0;
    let mid = n / 2;
    for v in 1..term_count {
        let ratio = (nf - (v - 1) as f64) / v as f64;
        let (mantissa, exponent) = frexp(binomial_mantissa * ratio);
        binomial_mantissa = mantissa;
        binomial_exponent += exponent as i64;
        let vf = v as f64;
        let below = ((nf - vf - floor) - alpha) / nf; // 1 - x - v/n
        let above = ((vf + floor) + alpha) / nf; // x + v/n
        let log_term = binomial_mantissa.ln()
            + binomial_exponent as f64 * LN_2
            + (nf - vf) * below.ln()
            + (vf - 1.0) * above.ln();
        let term = log_term.exp();
        if term.is_finite() && term != 0.0 {
            let total = sum + term;
            compensation += if sum.abs() >= term.abs() {
                (sum - total) + term
            } else {
                (term - total) + sum
            };
            sum = total;
            if 4.0 * (term_count - v) as f64 * term < f64::EPSILON * sum && v != term_count - 1 {
                break;
            }
        } else if v as u64 > mid {
            break;
        }
    }
    (x * (sum + compensation)).clamp(0.0, 1.0)
}

/// Splits a positive float into a mantissa in [0.5, 1) and a power of two.
fn frexp(value: f64) -> (f64, i32) {
    if value == 0.0 || !value.is_finite() {
        return (value, 0);
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    if exponent == 0 {
        let (m, e) = frexp(value * 2f64.powi(64));
        return (m, e - 64);
    }
    let mantissa = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (mantissa, exponent - 1022)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        ((actual - expected) / expected).abs() < tolerance
    }

    #[test]
    fn smirnov_matches_scipy() {
        // scipy.special.smirnov(n, x)
        assert!(close(smirnov(5, 0.3), 0.34282, 1e-12));
        assert!(close(smirnov(1000, 0.05), 0.006506037390545166, 1e-9));
        assert!(close(smirnov(200, 0.1), 0.017055111658647187, 1e-9));
    }

    #[test]
    fn kstwo_sf_matches_scipy_in_each_regime() {
        // scipy.stats.kstwo.sf(x, n): smirnov tail, Pelz-Good, and Durbin's matrix.
        assert!(close(kstwo_sf(0.05, 1000), 0.013012074781090332, 1e-9));
        assert!(close(kstwo_sf(0.02, 5000), 0.03613941395325637, 1e-6));
        assert!(close(kstwo_sf(0.1, 100), 0.2526927570063874, 1e-9));
        assert!(close(kstwo_sf(0.3, 50), 0.00017353260202718738, 1e-9));
    }

    #[test]
    fn frexp_splits_like_c() {
        assert_eq!(frexp(8.0), (0.5, 4));
        assert_eq!(frexp(0.75), (0.75, 0));
    }
}
