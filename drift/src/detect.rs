//! Per-column drift and the dataset verdict: which method checks a column (given, or chosen
//! by Evidently's rules), its threshold and direction, and whether the share of drifted
//! columns reaches `drift_share`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::embedding;
use crate::stats::binned::Sample;
use crate::stats::{
    NumberKey, TestResult, chi_square, jensen_shannon, ks::ks_2samp_sorted, psi, sort_floats,
    wasserstein_normed, z_test,
};
use crate::table::{Column, ColumnKind, Table};
use crate::text::{Descriptor, describe};
use crate::{Error, Result};

/// Up to this many reference rows Evidently's defaults are hypothesis tests (KS, chi-square,
/// Z at p < 0.05); above it, distances (normed Wasserstein, Jensen-Shannon at 0.1).
pub const SMALL_REFERENCE_ROWS: usize = 1000;

/// A drift method, named as Evidently names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Two-sample Kolmogorov-Smirnov; drift when p <= threshold (0.05).
    Ks,
    /// Pearson's chi-square against reference proportions; drift when p < threshold (0.05).
    ChiSquare,
    /// Two-proportion Z-test; drift when p < threshold (0.05).
    Z,
    /// Population stability index; drift when PSI >= threshold (0.1).
    Psi,
    /// Wasserstein distance over the reference std; drift when >= threshold (0.1).
    Wasserstein,
    /// Jensen-Shannon distance of the binned shares; drift when >= threshold (0.1).
    JensenShannon,
    /// Euclidean distance between mean embeddings; drift when > threshold (0.2).
    Euclidean,
    /// Cosine distance between mean embeddings; drift when > threshold (0.2).
    Cosine,
    /// Share of embedding components whose normed Wasserstein distance is >= 0.1; drift when
    /// the share > threshold (0.2).
    Ratio,
    /// Unbiased MMD² with a median-width Gaussian kernel; drift when > threshold (0.015).
    Mmd,
    /// A text column: the share of its descriptors that drifted; drift when > threshold (0).
    Descriptors,
}

impl Method {
    /// The names a user can select.
    pub const NAMES: [&'static str; 10] = [
        "ks",
        "chisquare",
        "z",
        "psi",
        "wasserstein",
        "jensenshannon",
        "euclidean",
        "cosine",
        "ratio",
        "mmd",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::ChiSquare => "chisquare",
            Method::Z => "z",
            Method::Psi => "psi",
            Method::Wasserstein => "wasserstein",
            Method::JensenShannon => "jensenshannon",
            Method::Euclidean => "euclidean",
            Method::Cosine => "cosine",
            Method::Ratio => "ratio",
            Method::Mmd => "mmd",
            Method::Descriptors => "descriptors",
        }
    }

    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Ks | Method::ChiSquare | Method::Z => 0.05,
            Method::Psi | Method::Wasserstein | Method::JensenShannon => 0.1,
            Method::Euclidean | Method::Cosine | Method::Ratio => 0.2,
            Method::Mmd => 0.015,
            Method::Descriptors => 0.0,
        }
    }

    /// Whether the result crosses the threshold, in the method's own direction.
    pub fn drifted(self, result: TestResult, threshold: f64) -> bool {
        let p = result.p_value.unwrap_or(f64::NAN);
        match self {
            Method::Ks => p <= threshold,
            Method::ChiSquare | Method::Z => p < threshold,
            Method::Psi | Method::Wasserstein | Method::JensenShannon => {
                result.statistic >= threshold
            }
            Method::Euclidean | Method::Cosine | Method::Ratio | Method::Mmd => {
                result.statistic > threshold
            }
            Method::Descriptors => result.statistic > threshold,
        }
    }

    fn applies_to(self, kind: ColumnKind) -> bool {
        match self {
            Method::Ks | Method::Wasserstein => {
                matches!(kind, ColumnKind::Numeric | ColumnKind::Text)
            }
            Method::ChiSquare | Method::Z | Method::Psi | Method::JensenShannon => {
                matches!(
                    kind,
                    ColumnKind::Numeric | ColumnKind::Categorical | ColumnKind::Text
                )
            }
            Method::Euclidean | Method::Cosine | Method::Ratio | Method::Mmd => {
                kind == ColumnKind::Embedding
            }
            Method::Descriptors => kind == ColumnKind::Text,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "ks" => Method::Ks,
            "chisquare" => Method::ChiSquare,
            "z" => Method::Z,
            "psi" => Method::Psi,
            "wasserstein" => Method::Wasserstein,
            "jensenshannon" => Method::JensenShannon,
            "euclidean" => Method::Euclidean,
            "cosine" => Method::Cosine,
            "ratio" => Method::Ratio,
            "mmd" => Method::Mmd,
            other => return Err(Error::UnknownMethod(other.to_string())),
        })
    }
}

/// Evidently's default method for a numeric or categorical column (`_get_default_stattest`),
/// from the reference size and the number of distinct values in both samples together.
pub fn default_method(kind: ColumnKind, reference_rows: usize, distinct_values: usize) -> Method {
    let numeric = kind != ColumnKind::Categorical;
    if reference_rows <= SMALL_REFERENCE_ROWS {
        if numeric && distinct_values > 5 {
            Method::Ks
        } else if distinct_values > 2 {
            Method::ChiSquare
        } else {
            Method::Z
        }
    } else if numeric && distinct_values > 5 {
        Method::Wasserstein
    } else {
        Method::JensenShannon
    }
}

/// How one column is checked; unset fields are inferred or defaulted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColumnSpec {
    pub name: String,
    pub kind: Option<ColumnKind>,
    pub method: Option<Method>,
    pub threshold: Option<f64>,
}

impl ColumnSpec {
    pub fn named(name: &str) -> Self {
        ColumnSpec {
            name: name.to_string(),
            ..ColumnSpec::default()
        }
    }
}

/// What to check and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// The columns to check; empty means every column present in both tables.
    pub columns: Vec<ColumnSpec>,
    /// Columns left out when `columns` is empty (such as the window's timestamp column).
    pub ignore: Vec<String>,
    /// The dataset drifts when the share of drifted columns is at least this.
    pub drift_share: f64,
    /// Seed of every random choice (embedding samples and permutations).
    pub seed: u64,
    /// Permutations behind the MMD p-value.
    pub mmd_permutations: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            columns: Vec::new(),
            ignore: Vec::new(),
            drift_share: 0.5,
            seed: 0,
            mmd_permutations: 100,
        }
    }
}

/// One column's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDrift {
    pub column: String,
    pub kind: ColumnKind,
    pub method: Method,
    pub statistic: f64,
    /// Present for hypothesis tests (KS, chi-square, Z) and MMD.
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    /// For a text column, the verdict on each descriptor (`answer.length`, …).
    pub descriptors: Vec<ColumnDrift>,
}

/// The dataset's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetDrift {
    pub drift_detected: bool,
    /// The share of checked columns that drifted.
    pub drift_share: f64,
    pub drifted_columns: Vec<String>,
    pub columns: Vec<ColumnDrift>,
}

/// Checks every configured column of `current` against `reference`. Columns are checked in
/// parallel; the result does not depend on the number of threads.
pub fn detect_drift(
    reference: &Table,
    current: &Table,
    config: &DriftConfig,
) -> Result<DatasetDrift> {
    detect_drift_until(reference, current, config, &|| false)
}

/// [`detect_drift`] that asks `stop` before each column and gives up with [`Error::Stopped`]
/// once it says yes, so a caller that is cancelled does not wait for every column.
pub fn detect_drift_until(
    reference: &Table,
    current: &Table,
    config: &DriftConfig,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<DatasetDrift> {
    if !(0.0..=1.0).contains(&config.drift_share) {
        return Err(Error::InvalidSetting(format!(
            "`drift_share` must be between 0 and 1, not {}.",
            config.drift_share
        )));
    }
    let specs: Vec<ColumnSpec> = if config.columns.is_empty() {
        let in_current: HashSet<&String> = current.column_names().iter().collect();
        reference
            .column_names()
            .iter()
            .filter(|n| in_current.contains(n) && !config.ignore.contains(n))
            .map(|n| ColumnSpec::named(n))
            .collect()
    } else {
        config.columns.clone()
    };
    if specs.is_empty() {
        return Err(Error::InvalidSetting(
            "The reference and current data share no column to check.".to_string(),
        ));
    }
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(specs.len());
    let mut results: Vec<Option<Result<ColumnDrift>>> = (0..specs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        if stop() {
                            break;
                        }
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(spec) = specs.get(index) else { break };
                        done.push((index, column_drift(reference, current, spec, config)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            // A worker only computes; a panic there is a bug worth surfacing as one.
            let done = worker
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (index, result) in done {
                results[index] = Some(result);
            }
        }
    });
    if results.iter().any(Option::is_none) {
        return Err(Error::Stopped);
    }
    let columns = results
        .into_iter()
        .flatten()
        .collect::<Result<Vec<ColumnDrift>>>()?;
    let drifted_columns: Vec<String> = columns
        .iter()
        .filter(|c| c.drifted)
        .map(|c| c.column.clone())
        .collect();
    let drift_share = drifted_columns.len() as f64 / columns.len() as f64;
    Ok(DatasetDrift {
        drift_detected: drift_share >= config.drift_share,
        drift_share,
        drifted_columns,
        columns,
    })
}

/// Checks one column.
pub fn column_drift(
    reference: &Table,
    current: &Table,
    spec: &ColumnSpec,
    config: &DriftConfig,
) -> Result<ColumnDrift> {
    let name = spec.name.as_str();
    let reference_column = reference.column(name)?;
    let current_column = current.column(name)?;
    // Evidently takes the kind of the current data's column.
    let kind = match spec.kind {
        Some(kind) => kind,
        None => current_column
            .inferred_kind()
            .or_else(|| reference_column.inferred_kind())
            .ok_or_else(|| Error::EmptyColumn {
                column: name.to_string(),
                source_name: current.source_name().to_string(),
            })?,
    };
    if let Some(threshold) = spec.threshold
        && !threshold.is_finite()
    {
        return Err(Error::InvalidSetting(format!(
            "The threshold of column `{name}` must be a finite number."
        )));
    }
    if let Some(method) = spec.method
        && !method.applies_to(kind)
    {
        return Err(Error::MethodNotForKind {
            method: method.name().to_string(),
            kind: kind.name().to_string(),
            column: name.to_string(),
        });
    }
    match kind {
        ColumnKind::Numeric => {
            let integer = is_integer(reference_column) && is_integer(current_column);
            numeric_drift(
                name,
                reference.numbers(name)?,
                current.numbers(name)?,
                integer,
                spec,
            )
        }
        ColumnKind::Categorical => categorical_drift(
            name,
            reference.categories(name)?,
            current.categories(name)?,
            spec,
        ),
        ColumnKind::Text => text_drift(name, reference, current, spec),
        ColumnKind::Embedding => embedding_drift(name, reference, current, spec, config),
    }
}

fn is_integer(column: &Column) -> bool {
    matches!(column, Column::Numbers { integer: true, .. })
}

fn finish(
    name: &str,
    kind: ColumnKind,
    method: Method,
    result: TestResult,
    threshold: Option<f64>,
) -> ColumnDrift {
    let threshold = threshold.unwrap_or(method.default_threshold());
    ColumnDrift {
        column: name.to_string(),
        kind,
        method,
        statistic: result.statistic,
        p_value: result.p_value,
        threshold,
        drifted: method.drifted(result, threshold),
        descriptors: Vec::new(),
    }
}

/// Checks a numeric sample (a numeric column or a text descriptor).
pub fn numeric_drift(
    name: &str,
    mut reference: Vec<f64>,
    mut current: Vec<f64>,
    integer: bool,
    spec: &ColumnSpec,
) -> Result<ColumnDrift> {
    sort_floats(&mut reference);
    sort_floats(&mut current);
    let method = match spec.method {
        Some(method) => method,
        None => default_method(
            ColumnKind::Numeric,
            reference.len(),
            distinct_in_sorted(&reference, &current),
        ),
    };
    let sample = |values| Sample::Numbers { values, integer };
    let keys = |values: &[f64]| {
        values
            .iter()
            .map(|v| NumberKey::new(*v))
            .collect::<Vec<_>>()
    };
    let result = match method {
        Method::Ks => ks_2samp_sorted(&reference, &current),
        Method::Wasserstein => distance(wasserstein_normed(&reference, &current)),
        Method::Psi => distance(psi(sample(&reference), sample(&current))),
        Method::JensenShannon => distance(jensen_shannon(sample(&reference), sample(&current))),
        Method::ChiSquare => chi_square(&keys(&reference), &keys(&current)),
        Method::Z => z_test(&keys(&reference), &keys(&current)),
        other => {
            return Err(Error::MethodNotForKind {
                method: other.name().to_string(),
                kind: "numeric".to_string(),
                column: name.to_string(),
            });
        }
    };
    Ok(finish(
        name,
        ColumnKind::Numeric,
        method,
        result,
        spec.threshold,
    ))
}

fn distance(statistic: f64) -> TestResult {
    TestResult {
        statistic,
        p_value: None,
    }
}

/// Distinct values of two sorted samples taken together.
fn distinct_in_sorted(a: &[f64], b: &[f64]) -> usize {
    let (mut i, mut j, mut count) = (0, 0, 0);
    let mut last: Option<f64> = None;
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && a[i] <= b[j]);
        let value = if take_a {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if last != Some(value) {
            count += 1;
            last = Some(value);
        }
    }
    count
}

fn categorical_drift(
    name: &str,
    reference: Vec<String>,
    current: Vec<String>,
    spec: &ColumnSpec,
) -> Result<ColumnDrift> {
    let method = match spec.method {
        Some(method) => method,
        None => {
            let distinct: HashSet<&String> = reference.iter().chain(&current).collect();
            default_method(ColumnKind::Categorical, reference.len(), distinct.len())
        }
    };
    let result = match method {
        Method::ChiSquare => chi_square(&reference, &current),
        Method::Z => z_test(&reference, &current),
        Method::Psi => distance(psi(Sample::Labels(&reference), Sample::Labels(&current))),
        Method::JensenShannon => distance(jensen_shannon(
            Sample::Labels(&reference),
            Sample::Labels(&current),
        )),
        other => {
            return Err(Error::MethodNotForKind {
                method: other.name().to_string(),
                kind: "categorical".to_string(),
                column: name.to_string(),
            });
        }
    };
    Ok(finish(
        name,
        ColumnKind::Categorical,
        method,
        result,
        spec.threshold,
    ))
}

/// A text column drifts when any of its descriptors does; each descriptor is checked as a
/// numeric column (with the column's method and threshold, when given).
fn text_drift(
    name: &str,
    reference: &Table,
    current: &Table,
    spec: &ColumnSpec,
) -> Result<ColumnDrift> {
    let reference_texts = reference.texts(name)?;
    let current_texts = current.texts(name)?;
    let descriptor_spec = ColumnSpec {
        name: String::new(),
        kind: Some(ColumnKind::Numeric),
        method: spec.method.filter(|m| *m != Method::Descriptors),
        threshold: spec.threshold.filter(|_| spec.method.is_some()),
    };
    let descriptors = Descriptor::ALL
        .iter()
        .map(|descriptor| {
            let part = format!("{name}.{}", descriptor.name());
            let mut drift = numeric_drift(
                &part,
                describe(&reference_texts, *descriptor),
                describe(&current_texts, *descriptor),
                // Length and word count are integers, as Evidently's features are.
                *descriptor != Descriptor::NonLetterPercent,
                &descriptor_spec,
            )?;
            drift.kind = ColumnKind::Numeric;
            Ok(drift)
        })
        .collect::<Result<Vec<ColumnDrift>>>()?;
    let share = descriptors.iter().filter(|d| d.drifted).count() as f64 / descriptors.len() as f64;
    let threshold = if spec.method.is_none() {
        spec.threshold
    } else {
        None
    };
    let mut drift = finish(
        name,
        ColumnKind::Text,
        Method::Descriptors,
        distance(share),
        threshold,
    );
    drift.descriptors = descriptors;
    Ok(drift)
}

fn embedding_drift(
    name: &str,
    reference: &Table,
    current: &Table,
    spec: &ColumnSpec,
    config: &DriftConfig,
) -> Result<ColumnDrift> {
    let reference_rows = reference.embeddings(name)?;
    let current_rows = current.embeddings(name)?;
    let (expected, found) = (reference_rows[0].len(), current_rows[0].len());
    if expected != found {
        return Err(Error::EmbeddingWidth {
            column: name.to_string(),
            source_name: current.source_name().to_string(),
            row: 1,
            expected,
            found,
        });
    }
    // Evidently's own default trains a classifier; the distance between means is the plain
    // default here.
    let method = spec.method.unwrap_or(Method::Euclidean);
    let result = match method {
        Method::Euclidean => distance(embedding::euclidean_distance(
            &reference_rows,
            &current_rows,
        )),
        Method::Cosine => distance(embedding::cosine_distance(&reference_rows, &current_rows)),
        Method::Ratio => distance(embedding::drifted_components_share(
            &reference_rows,
            &current_rows,
            Method::Wasserstein.default_threshold(),
        )),
        Method::Mmd => {
            let mmd = embedding::mmd(
                &reference_rows,
                &current_rows,
                config.mmd_permutations,
                config.seed,
            );
            TestResult {
                statistic: mmd.statistic,
                p_value: Some(mmd.p_value),
            }
        }
        other => {
            return Err(Error::MethodNotForKind {
                method: other.name().to_string(),
                kind: "embedding".to_string(),
                column: name.to_string(),
            });
        }
    };
    Ok(finish(
        name,
        ColumnKind::Embedding,
        method,
        result,
        spec.threshold,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_evidently() {
        use ColumnKind::*;
        assert_eq!(default_method(Numeric, 1000, 6), Method::Ks);
        assert_eq!(default_method(Numeric, 1000, 5), Method::ChiSquare);
        assert_eq!(default_method(Numeric, 1000, 2), Method::Z);
        assert_eq!(default_method(Numeric, 1001, 6), Method::Wasserstein);
        assert_eq!(default_method(Numeric, 1001, 5), Method::JensenShannon);
        assert_eq!(default_method(Categorical, 10, 100), Method::ChiSquare);
        assert_eq!(default_method(Categorical, 10, 2), Method::Z);
        assert_eq!(default_method(Categorical, 5000, 2), Method::JensenShannon);
    }

    #[test]
    fn method_names_round_trip_and_unknown_ones_are_refused() {
        for name in Method::NAMES {
            assert_eq!(name.parse::<Method>().unwrap().name(), name);
        }
        assert_eq!(
            "kss".parse::<Method>(),
            Err(Error::UnknownMethod("kss".into()))
        );
    }

    #[test]
    fn the_dataset_drifts_when_the_share_reaches_drift_share() {
        let names = vec!["a".to_string(), "b".to_string()];
        let numbers = |values: Vec<f64>| Column::Numbers {
            values,
            integer: false,
        };
        let base: Vec<f64> = (0..100).map(|i| i as f64 / 10.0).collect();
        let shifted: Vec<f64> = base.iter().map(|v| v + 5.0).collect();
        let reference = Table::new(
            "reference",
            names.clone(),
            vec![numbers(base.clone()), numbers(base.clone())],
        )
        .unwrap();
        let current = Table::new(
            "current",
            names,
            vec![numbers(shifted), numbers(base.clone())],
        )
        .unwrap();
        let verdict = detect_drift(&reference, &current, &DriftConfig::default()).unwrap();
        assert_eq!(verdict.drifted_columns, vec!["a".to_string()]);
        assert_eq!(verdict.drift_share, 0.5);
        assert!(verdict.drift_detected);
        let strict = DriftConfig {
            drift_share: 0.6,
            ..DriftConfig::default()
        };
        assert!(
            !detect_drift(&reference, &current, &strict)
                .unwrap()
                .drift_detected
        );
        let bad = DriftConfig {
            drift_share: 1.5,
            ..DriftConfig::default()
        };
        assert!(matches!(
            detect_drift(&reference, &current, &bad),
            Err(Error::InvalidSetting(_))
        ));
    }
}
