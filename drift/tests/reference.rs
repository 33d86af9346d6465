//! Every statistic, p-value and default method of sluice-drift against scipy and Evidently.
//!
//! The cases are generated here with a seeded generator (normal, shifted, scaled,
//! heavy-tailed, ties, tiny and large samples, new and missing categories, binary values, text,
//! embeddings, whole CSV datasets). `reference.py` computes the same quantities with scipy and
//! Evidently 0.7 from the same data. The Python interpreter comes from
//! `SLUICE_TEST_DRIFT_PYTHON` (scripts/test sets it) or the venv scripts/test caches; without
//! one the committed `fixtures/reference.json` (the same script's output) is the reference, and
//! with `CI` set a missing interpreter fails the tests. `SLUICE_BLESS=1` rewrites the fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use sluice_drift::detect::{ColumnSpec, DriftConfig, Method, column_drift, numeric_drift};
use sluice_drift::embedding;
use sluice_drift::read::read_csv;
use sluice_drift::rng::SeededRng;
use sluice_drift::stats::binned::Sample;
use sluice_drift::stats::{self, NumberKey, ks::ks_2samp};
use sluice_drift::table::{Column, ColumnKind, Table};
use sluice_drift::{detect_drift, text};

/// Relative tolerance for every value computed in closed form or by an exact algorithm.
const EXACT: f64 = 1e-9;
/// Relative tolerance where scipy truncates a series (Pelz-Good's expansion of `kstwo`).
const SERIES: f64 = 1e-6;

enum Values {
    Numbers(Vec<f64>),
    Labels(Vec<String>),
}

struct SampleCase {
    id: &'static str,
    reference: Values,
    current: Values,
    integer: bool,
    tolerance: f64,
}

struct TextCase {
    id: &'static str,
    reference: Vec<Option<String>>,
    current: Vec<Option<String>>,
}

struct EmbeddingCase {
    id: &'static str,
    reference: Vec<Vec<f64>>,
    current: Vec<Vec<f64>>,
}

struct DatasetCase {
    id: &'static str,
    reference: String,
    current: String,
}

struct Cases {
    samples: Vec<SampleCase>,
    texts: Vec<TextCase>,
    embeddings: Vec<EmbeddingCase>,
    datasets: Vec<DatasetCase>,
}

fn normal(rng: &mut SeededRng, n: usize, mean: f64, sd: f64) -> Vec<f64> {
    (0..n).map(|_| mean + sd * rng.normal()).collect()
}

fn cauchy(rng: &mut SeededRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| scale * rng.normal() / rng.normal())
        .collect()
}

fn integers(rng: &mut SeededRng, n: usize, below: usize) -> Vec<f64> {
    (0..n).map(|_| rng.below(below) as f64).collect()
}

fn labels(rng: &mut SeededRng, n: usize, choices: &[(&str, f64)]) -> Vec<String> {
    let total: f64 = choices.iter().map(|(_, w)| w).sum();
    (0..n)
        .map(|_| {
            let mut draw = rng.next_f64() * total;
            for (label, weight) in choices {
                if draw < *weight {
                    return label.to_string();
                }
                draw -= weight;
            }
            choices[choices.len() - 1].0.to_string()
        })
        .collect()
}

const WORDS: &[&str] = &[
    "the", "model", "answer", "is", "late", "retry", "token", "prompt", "data", "shift", "user",
    "query", "résumé", "naïve", "ok",
];
const MARKS: &[&str] = &[",", ".", "!", "?", " 42", " (3)", ":", "\n", "'s", " -"];

fn sentences(rng: &mut SeededRng, n: usize, words: usize, marks: f64) -> Vec<Option<String>> {
    (0..n)
        .map(|i| {
            if i % 37 == 5 {
                return None;
            }
            let count = 1 + rng.below(words);
            let mut text = String::new();
            for w in 0..count {
                if w > 0 {
                    text.push(' ');
                }
                text.push_str(WORDS[rng.below(WORDS.len())]);
                if rng.next_f64() < marks {
                    text.push_str(MARKS[rng.below(MARKS.len())]);
                }
            }
            Some(text)
        })
        .collect()
}

fn matrix(rng: &mut SeededRng, rows: usize, width: usize, shift: f64) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|_| {
            (0..width)
                .map(|c| rng.normal() + shift * (c % 3) as f64)
                .collect()
        })
        .collect()
}

fn csv_of(columns: &[(&str, Vec<String>)]) -> String {
    let mut csv = columns
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for row in 0..columns[0].1.len() {
        let cells: Vec<&str> = columns.iter().map(|(_, v)| v[row].as_str()).collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    csv
}

fn texts_of(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| format!("{v:?}")).collect()
}

fn integer_texts(values: &[f64]) -> Vec<String> {
    values.iter().map(|v| format!("{}", *v as i64)).collect()
}

fn dataset(rng: &mut SeededRng, rows: usize, shift: f64, extra_category: bool) -> String {
    let x = normal(rng, rows, shift, 1.0 + shift);
    let k = integers(rng, rows, if extra_category { 4 } else { 3 });
    let n = integers(rng, rows, 50);
    let mut choices = vec![("red", 5.0), ("green", 3.0), ("blue", 2.0)];
    if extra_category {
        choices.push(("violet", 1.0));
    }
    let c = labels(rng, rows, &choices);
    let b = labels(rng, rows, &[("yes", 1.0 + shift), ("no", 1.0)]);
    csv_of(&[
        ("x", texts_of(&x)),
        ("k", integer_texts(&k)),
        ("n", integer_texts(&n)),
        ("c", c),
        ("b", b),
    ])
}

fn cases() -> &'static Cases {
    static CASES: OnceLock<Cases> = OnceLock::new();
    CASES.get_or_init(|| {
        let mut rng = SeededRng::new(20261206);
        let rng = &mut rng;
        let numbers = Values::Numbers;
        let mut samples = Vec::new();
        let mut sample = |id, reference, current, integer, tolerance| {
            samples.push(SampleCase {
                id,
                reference,
                current,
                integer,
                tolerance,
            })
        };
        sample(
            "normal_shift_1000_800",
            numbers(normal(rng, 1000, 0.0, 1.0)),
            numbers(normal(rng, 800, 0.3, 1.2)),
            false,
            EXACT,
        );
        sample(
            "tiny_7_5",
            numbers(normal(rng, 7, 0.0, 1.0)),
            numbers(normal(rng, 5, 1.0, 1.0)),
            false,
            EXACT,
        );
        sample(
            "equal_sizes_200",
            numbers(normal(rng, 200, 0.0, 1.0)),
            numbers(normal(rng, 200, 0.25, 1.0)),
            false,
            EXACT,
        );
        sample(
            "scaled_500_700",
            numbers(normal(rng, 500, 0.0, 1.0)),
            numbers(normal(rng, 700, 0.0, 2.0)),
            false,
            EXACT,
        );
        sample(
            "heavy_tailed_900_1100",
            numbers(cauchy(rng, 900, 1.0)),
            numbers(cauchy(rng, 1100, 1.5)),
            false,
            EXACT,
        );
        let ties = |rng: &mut SeededRng, n, mean| -> Vec<f64> {
            normal(rng, n, mean, 5.0)
                .iter()
                .map(|v| v.round())
                .collect()
        };
        sample(
            "ties_integers_600_400",
            numbers(ties(rng, 600, 10.0)),
            numbers(ties(rng, 400, 11.0)),
            true,
            EXACT,
        );
        sample(
            "few_values_300_300",
            numbers(integers(rng, 300, 3)),
            numbers(integers(rng, 300, 4)),
            true,
            EXACT,
        );
        // Exactly 20 distinct reference values: the last count Evidently bins by value.
        sample(
            "twenty_values_500_400",
            numbers(integers(rng, 500, 20)),
            numbers(integers(rng, 400, 21)),
            true,
            EXACT,
        );
        sample(
            "twenty_one_values_500_400",
            numbers(integers(rng, 500, 21)),
            numbers(integers(rng, 400, 21)),
            true,
            EXACT,
        );
        sample(
            "binary_250_150",
            numbers(
                (0..250)
                    .map(|_| f64::from(u8::from(rng.next_f64() < 0.3)))
                    .collect(),
            ),
            numbers(
                (0..150)
                    .map(|_| f64::from(u8::from(rng.next_f64() < 0.45)))
                    .collect(),
            ),
            true,
            EXACT,
        );
        sample(
            "exact_unequal_1000_3000",
            numbers(normal(rng, 1000, 0.0, 1.0)),
            numbers(normal(rng, 3000, 0.08, 1.0)),
            false,
            EXACT,
        );
        sample(
            "exact_equal_4000",
            numbers(normal(rng, 4000, 0.0, 1.0)),
            numbers(normal(rng, 4000, 0.04, 1.0)),
            false,
            EXACT,
        );
        sample(
            "asymptotic_tail_5000_12000",
            numbers(normal(rng, 5000, 0.0, 1.0)),
            numbers(normal(rng, 12000, 0.1, 1.0)),
            false,
            EXACT,
        );
        sample(
            "asymptotic_same_20000_15000",
            numbers(normal(rng, 20000, 0.0, 1.0)),
            numbers(normal(rng, 15000, 0.0, 1.0)),
            false,
            SERIES,
        );
        sample(
            "asymptotic_small_side_100_20000",
            numbers(normal(rng, 100, 0.0, 1.0)),
            numbers(normal(rng, 20000, 0.1, 1.0)),
            false,
            EXACT,
        );
        sample(
            "large_few_values_3000_2000",
            numbers(integers(rng, 3000, 4)),
            numbers(integers(rng, 2000, 5)),
            true,
            EXACT,
        );
        let same = normal(rng, 100, 0.0, 1.0);
        sample(
            "identical_100",
            numbers(same.clone()),
            numbers(same),
            false,
            EXACT,
        );
        sample(
            "categories_new_and_missing_400_300",
            Values::Labels(labels(
                rng,
                400,
                &[("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0), ("e", 0.5)],
            )),
            Values::Labels(labels(
                rng,
                300,
                &[("a", 4.0), ("b", 2.0), ("c", 2.0), ("f", 1.0)],
            )),
            false,
            EXACT,
        );
        sample(
            "categories_binary_80_60",
            Values::Labels(labels(rng, 80, &[("yes", 1.0), ("no", 1.0)])),
            Values::Labels(labels(rng, 60, &[("yes", 2.0), ("no", 1.0)])),
            false,
            EXACT,
        );
        sample(
            "categories_large_3000_2500",
            Values::Labels(labels(
                rng,
                3000,
                &[("x", 1.0), ("y", 1.0), ("z", 1.0), ("w", 0.2)],
            )),
            Values::Labels(labels(
                rng,
                2500,
                &[("x", 1.2), ("y", 1.0), ("z", 0.8), ("w", 0.2)],
            )),
            false,
            EXACT,
        );
        let texts = vec![
            TextCase {
                id: "text_small_300_200",
                reference: sentences(rng, 300, 12, 0.1),
                current: sentences(rng, 200, 16, 0.3),
            },
            TextCase {
                id: "text_large_1500_1200",
                reference: sentences(rng, 1500, 10, 0.2),
                current: sentences(rng, 1200, 10, 0.2),
            },
        ];
        let embeddings = vec![
            EmbeddingCase {
                id: "embeddings_60x8_shifted",
                reference: matrix(rng, 60, 8, 0.0),
                current: matrix(rng, 50, 8, 0.5),
            },
            EmbeddingCase {
                id: "embeddings_300x16_same",
                reference: matrix(rng, 300, 16, 0.0),
                current: matrix(rng, 250, 16, 0.0),
            },
        ];
        let datasets = vec![
            DatasetCase {
                id: "dataset_small_400_300",
                reference: dataset(rng, 400, 0.0, false),
                current: dataset(rng, 300, 0.3, true),
            },
            DatasetCase {
                id: "dataset_large_2000_1500",
                reference: dataset(rng, 2000, 0.0, false),
                current: dataset(rng, 1500, 0.1, false),
            },
        ];
        Cases {
            samples,
            texts,
            embeddings,
            datasets,
        }
    })
}

fn values_json(values: &Values) -> Value {
    match values {
        Values::Numbers(v) => json!(v),
        Values::Labels(v) => json!(v),
    }
}

/// The reference values: from Python when it is there, else from the committed fixture.
fn expected() -> &'static Value {
    static EXPECTED: OnceLock<Value> = OnceLock::new();
    EXPECTED.get_or_init(|| match reference_python() {
        Some(python) => {
            let fresh = run_reference(&python);
            if std::env::var_os("SLUICE_BLESS").is_some() {
                let text = serde_json::to_string_pretty(&fresh).expect("JSON serialises");
                std::fs::write(fixture_path(), text + "\n").expect("fixture is writable");
            }
            fresh
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but no Python with scipy and evidently was found: set \
                 SLUICE_TEST_DRIFT_PYTHON or run scripts/test"
            );
            eprintln!("No Python reference found; checking against the committed fixture.");
            committed_fixture()
        }
    })
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.json")
}

fn committed_fixture() -> Value {
    let text = std::fs::read_to_string(fixture_path()).expect("the committed fixture is readable");
    serde_json::from_str(&text).expect("the committed fixture is JSON")
}

fn reference_python() -> Option<PathBuf> {
    let candidate = match std::env::var_os("SLUICE_TEST_DRIFT_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => {
            let cache = std::env::var_os("SLUICE_CACHE_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice"))
                })?;
            cache.join("venv-drift/bin/python")
        }
    };
    let works = Command::new(&candidate)
        .args(["-c", "import evidently, scipy, numpy, pandas"])
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(candidate)
}

fn run_reference(python: &Path) -> Value {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let cases = cases();
    let mut datasets = Vec::new();
    for case in &cases.datasets {
        let reference = dir.path().join(format!("{}_reference.csv", case.id));
        let current = dir.path().join(format!("{}_current.csv", case.id));
        std::fs::write(&reference, &case.reference).expect("writable");
        std::fs::write(&current, &case.current).expect("writable");
        datasets.push(
            json!({"id": case.id, "reference": reference, "current": current,
                             "drift_share": 0.5}),
        );
    }
    let input = json!({
        "samples": cases.samples.iter().map(|c| json!({
            "id": c.id,
            "kind": if matches!(c.reference, Values::Numbers(_)) { "numeric" } else { "categorical" },
            "integer": c.integer,
            "reference": values_json(&c.reference),
            "current": values_json(&c.current),
        })).collect::<Vec<_>>(),
        "texts": cases.texts.iter().map(|c| json!({
            "id": c.id, "reference": c.reference, "current": c.current,
        })).collect::<Vec<_>>(),
        "embeddings": cases.embeddings.iter().map(|c| json!({
            "id": c.id, "reference": c.reference, "current": c.current,
        })).collect::<Vec<_>>(),
        "datasets": datasets,
    });
    let input_path = dir.path().join("input.json");
    let output_path = dir.path().join("output.json");
    std::fs::write(&input_path, input.to_string()).expect("writable");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py");
    // A fixed hash seed fixes the order of Python's sets, so sums run in the same order on
    // every run and the fixture can be compared closely.
    let output = Command::new(python)
        .env("PYTHONHASHSEED", "0")
        .arg(&script)
        .arg(&input_path)
        .arg(&output_path)
        .output()
        .expect("the reference script starts");
    assert!(
        output.status.success(),
        "reference.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&output_path).expect("the script wrote its output");
    serde_json::from_str(&text).expect("the script wrote JSON")
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().expect("a float"),
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        Value::String(s) if s == "nan" => f64::NAN,
        other => panic!("not a number: {other}"),
    }
}

/// Collects mismatches rather than stopping at the first, so one run shows them all.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn close(&mut self, what: String, actual: f64, expected: &Value, tolerance: f64) {
        let expected = number(expected);
        let same = actual == expected
            || (actual.is_nan() && expected.is_nan())
            || (actual - expected).abs() <= tolerance * expected.abs();
        if !same {
            self.0.push(format!(
                "{what}: sluice {actual:e} vs reference {expected:e} (relative {:e})",
                ((actual - expected) / expected).abs()
            ));
        }
    }

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: String, actual: T, expected: T) {
        if actual != expected {
            self.0.push(format!(
                "{what}: sluice {actual:?} vs reference {expected:?}"
            ));
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} mismatches:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

fn sample<'a>(values: &'a Values, integer: bool) -> Sample<'a> {
    match values {
        Values::Numbers(v) => Sample::Numbers { values: v, integer },
        Values::Labels(v) => Sample::Labels(v),
    }
}

fn chi_and_z(reference: &Values, current: &Values) -> (stats::TestResult, stats::TestResult) {
    match (reference, current) {
        (Values::Numbers(r), Values::Numbers(c)) => {
            let keys = |v: &[f64]| v.iter().map(|x| NumberKey::new(*x)).collect::<Vec<_>>();
            let (r, c) = (keys(r), keys(c));
            (stats::chi_square(&r, &c), stats::z_test(&r, &c))
        }
        (Values::Labels(r), Values::Labels(c)) => (stats::chi_square(r, c), stats::z_test(r, c)),
        _ => unreachable!("a case's two samples have one kind"),
    }
}

fn sample_table(name: &str, values: &Values, integer: bool) -> Table {
    let column = match values {
        Values::Numbers(v) => Column::Numbers {
            values: v.clone(),
            integer,
        },
        Values::Labels(v) => Column::Strings(v.iter().cloned().map(Some).collect()),
    };
    Table::new(name, vec!["v".to_string()], vec![column]).expect("one column")
}

#[test]
fn every_statistic_and_p_value_equals_scipy_and_evidently() {
    let expected = &expected()["samples"];
    let mut mismatches = Mismatches::default();
    for case in &cases().samples {
        let want = &expected[case.id];
        let tolerance = case.tolerance;
        let id = case.id;
        if let (Values::Numbers(r), Values::Numbers(c)) = (&case.reference, &case.current) {
            let ks = ks_2samp(r, c);
            mismatches.close(
                format!("{id} ks statistic"),
                ks.statistic,
                &want["ks"][0],
                EXACT,
            );
            mismatches.close(
                format!("{id} ks p-value"),
                ks.p_value.unwrap(),
                &want["ks"][1],
                tolerance,
            );
            let (mut rs, mut cs) = (r.clone(), c.clone());
            stats::sort_floats(&mut rs);
            stats::sort_floats(&mut cs);
            mismatches.close(
                format!("{id} wasserstein"),
                stats::wasserstein_normed(&rs, &cs),
                &want["wasserstein"],
                EXACT,
            );
        }
        let (chi, z) = chi_and_z(&case.reference, &case.current);
        mismatches.close(
            format!("{id} chi-square statistic"),
            chi.statistic,
            &want["chisquare"][0],
            EXACT,
        );
        mismatches.close(
            format!("{id} chi-square p-value"),
            chi.p_value.unwrap(),
            &want["chisquare"][1],
            EXACT,
        );
        mismatches.close(
            format!("{id} z statistic"),
            z.statistic,
            &want["z"][0],
            EXACT,
        );
        mismatches.close(
            format!("{id} z p-value"),
            z.p_value.unwrap(),
            &want["z"][1],
            EXACT,
        );
        let (rs, cs) = (
            sample(&case.reference, case.integer),
            sample(&case.current, case.integer),
        );
        mismatches.close(format!("{id} psi"), stats::psi(rs, cs), &want["psi"], EXACT);
        mismatches.close(
            format!("{id} jensen-shannon"),
            stats::jensen_shannon(rs, cs),
            &want["jensenshannon"],
            EXACT,
        );
    }
    mismatches.assert_none();
}

#[test]
fn the_default_method_per_column_is_evidentlys() {
    let expected = &expected()["samples"];
    let mut mismatches = Mismatches::default();
    for case in &cases().samples {
        let kind = match case.reference {
            Values::Numbers(_) => ColumnKind::Numeric,
            Values::Labels(_) => ColumnKind::Categorical,
        };
        let reference = sample_table("reference", &case.reference, case.integer);
        let current = sample_table("current", &case.current, case.integer);
        let spec = ColumnSpec {
            kind: Some(kind),
            ..ColumnSpec::named("v")
        };
        let drift = column_drift(&reference, &current, &spec, &DriftConfig::default())
            .expect("the column is checked");
        let want = expected[case.id]["default"].as_str().expect("a name");
        mismatches.equal(
            format!("{} default method", case.id),
            drift.method.name(),
            want,
        );
    }
    mismatches.assert_none();
}

#[test]
fn text_descriptors_drift_as_evidently_measures_them() {
    let expected = &expected()["texts"];
    let mut mismatches = Mismatches::default();
    for case in &cases().texts {
        for descriptor in text::Descriptor::ALL {
            let want = &expected[case.id][descriptor.name()];
            let what = format!("{} {}", case.id, descriptor.name());
            let reference = text::describe(&case.reference, descriptor);
            let current = text::describe(&case.current, descriptor);
            mismatches.close(
                format!("{what} reference sum"),
                reference.iter().sum(),
                &want["reference_sum"],
                EXACT,
            );
            mismatches.close(
                format!("{what} current sum"),
                current.iter().sum(),
                &want["current_sum"],
                EXACT,
            );
            let drift = numeric_drift(
                &what,
                reference,
                current,
                descriptor != text::Descriptor::NonLetterPercent,
                &ColumnSpec::default(),
            )
            .expect("descriptors are numbers");
            mismatches.equal(
                format!("{what} method"),
                drift.method.name(),
                want["method"].as_str().expect("a name"),
            );
            let score = drift.p_value.unwrap_or(drift.statistic);
            mismatches.close(format!("{what} score"), score, &want["score"], EXACT);
            mismatches.equal(
                format!("{what} drifted"),
                drift.drifted,
                want["drifted"].as_bool().expect("a flag"),
            );
        }
    }
    mismatches.assert_none();
}

#[test]
fn embedding_drift_equals_evidentlys_methods() {
    let expected = &expected()["embeddings"];
    let mut mismatches = Mismatches::default();
    for case in &cases().embeddings {
        let want = &expected[case.id];
        let (r, c) = (&case.reference, &case.current);
        let values = [
            (Method::Euclidean, embedding::euclidean_distance(r, c)),
            (Method::Cosine, embedding::cosine_distance(r, c)),
            (
                Method::Ratio,
                embedding::drifted_components_share(r, c, 0.1),
            ),
            (Method::Mmd, embedding::mmd(r, c, 50, 1).statistic),
        ];
        for (method, value) in values {
            let what = format!("{} {}", case.id, method.name());
            mismatches.close(what.clone(), value, &want[method.name()][0], EXACT);
            mismatches.equal(
                format!("{what} drifted"),
                value > method.default_threshold(),
                want[method.name()][1].as_bool().expect("a flag"),
            );
        }
    }
    mismatches.assert_none();
}

#[test]
fn a_csv_dataset_gets_evidentlys_kinds_methods_values_and_verdict() {
    let expected = &expected()["datasets"];
    let mut mismatches = Mismatches::default();
    for case in &cases().datasets {
        let want = &expected[case.id];
        let reference = read_csv(case.reference.as_bytes(), "reference").expect("valid CSV");
        let current = read_csv(case.current.as_bytes(), "current").expect("valid CSV");
        let verdict = detect_drift(&reference, &current, &DriftConfig::default()).expect("checked");
        let columns: BTreeMap<&str, _> = verdict
            .columns
            .iter()
            .map(|c| (c.column.as_str(), c))
            .collect();
        let wanted = want["columns"].as_object().expect("columns");
        mismatches.equal(
            format!("{} columns", case.id),
            columns.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
            wanted.keys().cloned().collect::<Vec<_>>(),
        );
        for (name, want) in wanted {
            let Some(drift) = columns.get(name.as_str()) else {
                continue;
            };
            let what = format!("{} {name}", case.id);
            mismatches.equal(
                format!("{what} method"),
                drift.method.name(),
                want["method"].as_str().expect("a name"),
            );
            mismatches.close(
                format!("{what} threshold"),
                drift.threshold,
                &want["threshold"],
                EXACT,
            );
            let score = drift.p_value.unwrap_or(drift.statistic);
            mismatches.close(format!("{what} value"), score, &want["value"], EXACT);
        }
        mismatches.close(
            format!("{} drifted count", case.id),
            verdict.drifted_columns.len() as f64,
            &want["count"],
            EXACT,
        );
        mismatches.close(
            format!("{} share", case.id),
            verdict.drift_share,
            &want["share"],
            EXACT,
        );
    }
    mismatches.assert_none();
}

#[test]
fn the_committed_fixture_is_the_reference_scripts_output() {
    // With Python present, a stale fixture fails here (bless with SLUICE_BLESS=1); without it,
    // the other tests already compare against the fixture.
    if reference_python().is_none() {
        return;
    }
    let mut stale = Vec::new();
    same_json("", &committed_fixture(), expected(), &mut stale);
    assert!(
        stale.is_empty(),
        "tests/fixtures/reference.json is stale (rerun with SLUICE_BLESS=1):\n{}",
        stale.join("\n")
    );
}

#[test]
fn a_missing_column_or_a_word_in_a_numeric_column_is_reported_clearly() {
    let table = read_csv("a,b\n1,x\n2,3\n".as_bytes(), "current").expect("valid CSV");
    let error = table.numbers("b").expect_err("b holds a word");
    assert_eq!(
        error.to_string(),
        "Column `b` is numeric but row 1 of the current data holds `x`, which is not a number."
    );
    let error = table.numbers("c").expect_err("no column c");
    assert_eq!(
        error.to_string(),
        "Column `c` is missing from the current data."
    );
}

/// Compares two reference outputs: equal structure, numbers equal to 1e-12 relative (floats
/// parsed from different texts may differ in their last bit).
fn same_json(path: &str, a: &Value, b: &Value, differences: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => same_json(&format!("{path}/{key}"), p, q, differences),
                    _ => differences.push(format!("{path}/{key} is only on one side")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same_json(&format!("{path}/{i}"), p, q, differences);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if x != y && (x - y).abs() > 1e-12 * y.abs() {
                differences.push(format!("{path}: {x:e} != {y:e}"));
            }
        }
        (x, y) if x == y => {}
        (x, y) => differences.push(format!("{path}: {x} != {y}")),
    }
}
