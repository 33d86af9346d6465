//! Champion against challenger: the pooled two-proportion z-test (a success rate) and Welch's
//! t-test (a mean), two-sided, with the p-values scipy gives (`fixtures/significance.py`
//! computes the committed reference values). Pure: numbers in, a verdict out.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// One arm's successes out of its trials.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    pub successes: f64,
    pub trials: f64,
}

/// One arm's sample mean, sample standard deviation (n - 1 in the denominator) and size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    pub mean: f64,
    pub std: f64,
    pub n: f64,
}

/// A test's statistic (challenger minus champion) and its two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub statistic: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignificanceError {
    #[error("{0}")]
    Invalid(String),
}

/// The pooled two-proportion z-test of `challenger` against `champion`.
pub fn two_proportion_z(
    champion: Proportion,
    challenger: Proportion,
) -> Result<TestResult, SignificanceError> {
    for (name, arm) in [("champion", champion), ("challenger", challenger)] {
        if !(arm.trials > 0.0 && arm.successes >= 0.0 && arm.successes <= arm.trials) {
            return Err(SignificanceError::Invalid(format!(
                "the {name} has {} successes out of {} trials; successes must be between 0 and \
                 the trials, and trials above 0",
                arm.successes, arm.trials
            )));
        }
    }
    let pooled =
        (champion.successes + challenger.successes) / (champion.trials + challenger.trials);
    let variance = pooled * (1.0 - pooled) * (1.0 / champion.trials + 1.0 / challenger.trials);
    let difference =
        challenger.successes / challenger.trials - champion.successes / champion.trials;
    if variance <= 0.0 {
        // Both arms all successes or all failures: nothing tells them apart.
        return Ok(TestResult {
            statistic: 0.0,
            p_value: 1.0,
        });
    }
    let statistic = difference / variance.sqrt();
    Ok(TestResult {
        statistic,
        p_value: 2.0 * standard_normal_sf(statistic.abs()),
    })
}

/// Welch's t-test (unequal variances) of `challenger` against `champion`, as
/// `scipy.stats.ttest_ind(challenger, champion, equal_var=False)`.
pub fn welch_t(champion: Mean, challenger: Mean) -> Result<TestResult, SignificanceError> {
    for (name, arm) in [("champion", champion), ("challenger", challenger)] {
        if !(arm.n >= 2.0 && arm.std >= 0.0 && arm.mean.is_finite() && arm.std.is_finite()) {
            return Err(SignificanceError::Invalid(format!(
                "the {name}'s mean {} (std {}, n {}) cannot be tested; it needs at least 2 \
                 samples and a finite, non-negative standard deviation",
                arm.mean, arm.std, arm.n
            )));
        }
    }
    let v1 = champion.std * champion.std / champion.n;
    let v2 = challenger.std * challenger.std / challenger.n;
    let se2 = v1 + v2;
    if se2 <= 0.0 {
        // No spread in either arm: equal means are no evidence, different ones are certain.
        let same = champion.mean == challenger.mean;
        return Ok(TestResult {
            statistic: if same {
                0.0
            } else {
                f64::INFINITY.copysign(challenger.mean - champion.mean)
            },
            p_value: if same { 1.0 } else { 0.0 },
        });
    }
    let statistic = (challenger.mean - champion.mean) / se2.sqrt();
    // Welch–Satterthwaite degrees of freedom.
    let dof = se2 * se2 / (v1 * v1 / (champion.n - 1.0) + v2 * v2 / (challenger.n - 1.0));
    let t = StudentsT::new(0.0, 1.0, dof).map_err(|e| {
        SignificanceError::Invalid(format!(
            "no t distribution with {dof} degrees of freedom: {e}"
        ))
    })?;
    Ok(TestResult {
        statistic,
        p_value: (2.0 * t.sf(statistic.abs())).min(1.0),
    })
}

fn standard_normal_sf(x: f64) -> f64 {
    // N(0, 1) always exists; the fallback is never taken.
    Normal::standard().sf(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn close(actual: f64, expected: f64, what: &str) {
        let tolerance = 1e-9 * expected.abs().max(1e-12);
        assert!(
            (actual - expected).abs() <= tolerance,
            "{what}: {actual} against scipy's {expected}"
        );
    }

    fn fixtures() -> Value {
        serde_json::from_str(include_str!("fixtures/significance.json")).expect("fixture JSON")
    }

    #[test]
    fn two_proportion_z_matches_scipy() {
        let cases = fixtures()["proportions"].as_array().expect("cases").clone();
        assert!(!cases.is_empty());
        for case in cases {
            let arm = |name: &str| Proportion {
                successes: case[name]["successes"].as_f64().expect("successes"),
                trials: case[name]["trials"].as_f64().expect("trials"),
            };
            let result = two_proportion_z(arm("champion"), arm("challenger")).expect("valid");
            close(
                result.statistic,
                case["statistic"].as_f64().expect("z"),
                "z",
            );
            close(result.p_value, case["p_value"].as_f64().expect("p"), "p");
        }
    }

    #[test]
    fn welch_t_matches_scipy() {
        let cases = fixtures()["means"].as_array().expect("cases").clone();
        assert!(!cases.is_empty());
        for case in cases {
            let arm = |name: &str| Mean {
                mean: case[name]["mean"].as_f64().expect("mean"),
                std: case[name]["std"].as_f64().expect("std"),
                n: case[name]["n"].as_f64().expect("n"),
            };
            let result = welch_t(arm("champion"), arm("challenger")).expect("valid");
            close(
                result.statistic,
                case["statistic"].as_f64().expect("t"),
                "t",
            );
            close(result.p_value, case["p_value"].as_f64().expect("p"), "p");
        }
    }

    #[test]
    fn degenerate_arms_give_an_answer_or_a_clear_error() {
        let all = Proportion {
            successes: 10.0,
            trials: 10.0,
        };
        assert_eq!(two_proportion_z(all, all).expect("valid").p_value, 1.0);
        let bad = Proportion {
            successes: 11.0,
            trials: 10.0,
        };
        let error = two_proportion_z(all, bad).expect_err("more successes than trials");
        assert!(error.to_string().contains("challenger"), "{error}");
        let flat = Mean {
            mean: 1.0,
            std: 0.0,
            n: 5.0,
        };
        assert_eq!(welch_t(flat, flat).expect("valid").p_value, 1.0);
        let one = Mean {
            mean: 1.0,
            std: 0.0,
            n: 1.0,
        };
        assert!(welch_t(flat, one).is_err(), "one sample has no variance");
    }
}
