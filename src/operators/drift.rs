//! `drift`: whether a current data set has drifted from a reference one, column by column,
//! with the statistics of the `sluice-drift` crate (numbers equal to scipy's and Evidently's).
//! This file owns the task's side: where the data comes from (files, artifacts, rows from
//! upstream outputs), the time window ending at the run's data-interval end, running the
//! reading and the check on the blocking pool under the task's cancellation, and what the task
//! leaves: its outputs, a summary line, warnings for columns left out, and the histograms the
//! report page draws (artifact [`HISTOGRAMS_ARTIFACT`]).

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_drift::histogram::{Histogram, histogram};
use sluice_drift::stats::binned::Sample;
use sluice_drift::table::Column;
use sluice_drift::text::{Descriptor, describe};
use sluice_drift::{ColumnKind, ColumnSpec, DatasetDrift, Method, Table};
use tokio_util::sync::CancellationToken;

use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::duration::HumanDuration;

/// The artifact holding each checked column's reference and current histograms.
pub const HISTOGRAMS_ARTIFACT: &str = "drift/histograms.json";

/// The most bytes one read from a data file asks for, so a cancelled task stops reading soon.
const READ_CHUNK: usize = 8 << 20;

/// The settings of a `drift` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftWith {
    /// The data the current data is compared with: a CSV or JSON Lines file (a relative path
    /// starts at the workflow file's folder; an upstream artifact is
    /// `{{ tasks.<id>.artifacts["name"] }}`), or an array of row objects (such as
    /// `{{ tasks.<id>.outputs.rows }}`).
    pub reference: DataSource,
    /// The data checked for drift, given like `reference`.
    pub current: DataSource,
    /// Check only the current rows whose time falls in the window; the reference is used whole.
    #[serde(default)]
    pub window: Option<WindowWith>,
    /// The columns to check: a list of names, or a map of name to kind (`numeric`,
    /// `categorical`, `text` or `embedding`). Default: every column in both data sets (but
    /// the window's), each of the kind inferred as Evidently infers it.
    #[serde(default)]
    pub columns: Option<ColumnsWith>,
    /// Column → the method that checks it instead of the default (`ks`, `chisquare`, `z`,
    /// `psi`, `wasserstein`, `jensenshannon`; for embeddings `euclidean`, `cosine`, `ratio`,
    /// `mmd`).
    #[serde(default)]
    pub method: IndexMap<String, String>,
    /// Column → the threshold of its method instead of the method's default.
    #[serde(default)]
    pub threshold: IndexMap<String, f64>,
    /// The data set drifts when at least this share of the checked columns drifted.
    /// Default: `0.5`.
    #[serde(default = "default_drift_share")]
    pub drift_share: f64,
    /// Check a seeded random sample of at most this many rows of each data set (for very
    /// large inputs).
    #[serde(default)]
    pub sample: Option<SampleWith>,
}

fn default_drift_share() -> f64 {
    0.5
}

/// Where a data set comes from.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DataSource {
    /// A CSV file (`.csv`) or JSON Lines file (`.jsonl`, `.ndjson`, `.json`); another name is
    /// read as JSON Lines when it starts with `{`, else as CSV.
    Path(String),
    /// Rows, each an object of column name → value.
    Rows(Vec<Map<String, Value>>),
}

/// The time window of the current data.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowWith {
    /// The column with each row's time: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or seconds
    /// since 1970.
    pub column: String,
    /// How far back from the window's end rows count, such as `24h`.
    pub last: HumanDuration,
    /// When the window ends (RFC 3339). Default: the run's data-interval end, so a backfilled
    /// run checks its own day; a run started by hand ends it when the run was created.
    #[serde(default)]
    pub end: Option<String>,
}

/// The columns to check.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ColumnsWith {
    /// Names; each kind is inferred.
    Names(Vec<String>),
    /// Name → kind (`numeric`, `categorical`, `text` or `embedding`).
    Kinds(IndexMap<String, String>),
}

/// Sampling of large inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleWith {
    /// The most rows of each data set to check.
    pub rows: usize,
    /// The seed of the random choice (the same seed chooses the same rows). Default: `0`.
    #[serde(default)]
    pub seed: u64,
}

/// A checked `drift` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "DriftWith")]
pub struct DriftConfig {
    pub reference: DataSource,
    pub current: DataSource,
    pub window: Option<Window>,
    /// The columns given, in order; `None`: every shared column.
    pub columns: Option<Vec<ColumnSpec>>,
    /// Methods and thresholds for columns found when `columns` is not given.
    pub overrides: Vec<ColumnSpec>,
    pub drift_share: f64,
    pub sample: Option<(usize, u64)>,
}

/// A checked time window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub column: String,
    pub last: TimeDelta,
    /// `None`: the run's data-interval end.
    pub end: Option<DateTime<Utc>>,
}

// The schema editors and `sluice schema` see is the one of what people write.
impl JsonSchema for DriftConfig {
    fn schema_name() -> Cow<'static, str> {
        DriftWith::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        DriftWith::json_schema(generator)
    }
}

impl TryFrom<DriftWith> for DriftConfig {
    type Error = String;

    fn try_from(with: DriftWith) -> std::result::Result<Self, String> {
        if !(0.0..=1.0).contains(&with.drift_share) {
            return Err(format!(
                "`drift_share` is {}; it must be between 0 and 1",
                with.drift_share
            ));
        }
        let mut methods = IndexMap::new();
        for (column, name) in &with.method {
            let method = name.parse::<Method>().map_err(|e| {
                format!("`method.{column}`: {}", e.to_string().trim_end_matches('.'))
            })?;
            methods.insert(column.clone(), method);
        }
        for (column, threshold) in &with.threshold {
            if !threshold.is_finite() {
                return Err(format!("`threshold.{column}` must be a finite number"));
            }
        }
        let spec = |name: &str, kind: Option<ColumnKind>| ColumnSpec {
            name: name.to_owned(),
            kind,
            method: methods.get(name).copied(),
            threshold: with.threshold.get(name).copied(),
        };
        let columns = match &with.columns {
            None => None,
            Some(ColumnsWith::Names(names)) => {
                Some(names.iter().map(|n| spec(n, None)).collect::<Vec<_>>())
            }
            Some(ColumnsWith::Kinds(kinds)) => Some(
                kinds
                    .iter()
                    .map(|(name, kind)| {
                        let kind = kind.parse::<ColumnKind>().map_err(|e| {
                            format!("`columns.{name}`: {}", e.to_string().trim_end_matches('.'))
                        })?;
                        Ok(spec(name, Some(kind)))
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()?,
            ),
        };
        if let Some(columns) = &columns {
            if columns.is_empty() {
                return Err(
                    "`columns` is empty; name a column, or leave it out to check \
                            every shared column"
                        .to_owned(),
                );
            }
            for named in with.method.keys().chain(with.threshold.keys()) {
                if !columns.iter().any(|c| &c.name == named) {
                    return Err(format!(
                        "`{named}` has a method or threshold but is not in `columns`"
                    ));
                }
            }
        }
        let mut overrides: Vec<ColumnSpec> = Vec::new();
        if columns.is_none() {
            for name in with.method.keys().chain(with.threshold.keys()) {
                if !overrides.iter().any(|o| &o.name == name) {
                    overrides.push(spec(name, None));
                }
            }
        }
        let window = match with.window {
            None => None,
            Some(w) => {
                if w.last.0.is_zero() {
                    return Err("`window.last` must be longer than zero".to_owned());
                }
                let last = TimeDelta::from_std(w.last.0)
                    .map_err(|_| "`window.last` is too long".to_owned())?;
                let end = match &w.end {
                    None => None,
                    Some(text) => Some(
                        DateTime::parse_from_rfc3339(text.trim())
                            .map_err(|e| {
                                format!("`window.end` {text:?} is not an RFC 3339 time ({e})")
                            })?
                            .with_timezone(&Utc),
                    ),
                };
                Some(Window {
                    column: w.column,
                    last,
                    end,
                })
            }
        };
        let sample = match with.sample {
            None => None,
            Some(SampleWith { rows: 0, .. }) => {
                return Err("`sample.rows` must be at least 1".to_owned());
            }
            Some(s) => Some((s.rows, s.seed)),
        };
        Ok(DriftConfig {
            reference: with.reference,
            current: with.current,
            window,
            columns,
            overrides,
            drift_share: with.drift_share,
            sample,
        })
    }
}

/// A failure of the crate, as the task's error: bad data fails the task at once, since no
/// retry changes it.
fn data_error(error: sluice_drift::Error, cancel: &CancellationToken) -> OperatorError {
    if cancel.is_cancelled() || error == sluice_drift::Error::Stopped {
        OperatorError::Cancelled
    } else {
        OperatorError::rejected(error.to_string())
    }
}

/// A reader that gives up once the task is cancelled, asking for at most [`READ_CHUNK`]
/// bytes at a time so it notices soon.
struct Cancellable<R> {
    inner: R,
    cancel: CancellationToken,
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: `read_to_end` would retry that.
            return Err(std::io::Error::other("the task was cancelled"));
        }
        let len = buf.len().min(READ_CHUNK);
        self.inner.read(&mut buf[..len])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

/// The format of a data file: by its extension, else by its first character.
fn format_of(path: &Path) -> std::io::Result<Format> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => return Ok(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => return Ok(Format::JsonLines),
        _ => {}
    }
    let mut head = [0u8; 256];
    let read = std::fs::File::open(path)?.read(&mut head)?;
    let starts_with_brace = head[..read]
        .iter()
        .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF)
        .is_some_and(|b| *b == b'{');
    Ok(if starts_with_brace {
        Format::JsonLines
    } else {
        Format::Csv
    })
}

/// Where a data set is read from, resolved against the workflow's folder.
#[derive(Debug, Clone)]
enum Input {
    File(PathBuf),
    Rows(Vec<Map<String, Value>>),
}

impl Input {
    fn of(source: &DataSource, base_dir: &Path) -> Input {
        match source {
            DataSource::Path(path) => Input::File(base_dir.join(path.trim())),
            DataSource::Rows(rows) => Input::Rows(rows.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Rows(rows) => format!("{} rows given inline", rows.len()),
        }
    }
}

/// What to do to a table once read.
#[derive(Debug, Clone)]
struct Shaping {
    /// Columns declared numeric: a value that is not a number is reported with its row
    /// before the window and sampling renumber the rows.
    numeric: Vec<String>,
    window: Option<(String, DateTime<Utc>, TimeDelta)>,
    sample: Option<(usize, u64)>,
}

/// A data set as checked, and how many rows it had before the window and sampling.
struct Loaded {
    table: Table,
    rows_read: usize,
}

/// Reads, checks and shapes one data set. Runs on the blocking pool.
fn load(
    input: &Input,
    source_name: &str,
    shaping: &Shaping,
    cancel: &CancellationToken,
) -> Result<Loaded> {
    let table = match input {
        Input::File(path) => {
            let missing = |e: std::io::Error| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    OperatorError::rejected(format!(
                        "The {source_name} file {} does not exist.",
                        path.display()
                    ))
                } else {
                    OperatorError::rejected(format!(
                        "The {source_name} file {} cannot be read: {e}.",
                        path.display()
                    ))
                }
            };
            let format = format_of(path).map_err(missing)?;
            let file = std::fs::File::open(path).map_err(missing)?;
            let reader = Cancellable {
                inner: file,
                cancel: cancel.clone(),
            };
            match format {
                Format::Csv => sluice_drift::read::read_csv(reader, source_name),
                Format::JsonLines => sluice_drift::read::read_jsonl(reader, source_name),
            }
            .map_err(|e| data_error(e, cancel))?
        }
        Input::Rows(rows) => {
            // The rows take the JSON Lines reader's path, so they read exactly as a file would.
            let mut lines = Vec::new();
            for row in rows {
                serde_json::to_writer(&mut lines, row).map_err(|e| {
                    OperatorError::rejected(format!("The {source_name} rows are not JSON: {e}"))
                })?;
                lines.push(b'\n');
            }
            sluice_drift::read::read_jsonl(lines.as_slice(), source_name)
                .map_err(|e| data_error(e, cancel))?
        }
    };
    if table.rows() == 0 {
        return Err(OperatorError::rejected(format!(
            "The {source_name} data has no rows."
        )));
    }
    for name in &shaping.numeric {
        if let Ok(Column::Strings(_)) = table.column(name) {
            table.numbers(name).map_err(|e| data_error(e, cancel))?;
        }
    }
    let rows_read = table.rows();
    let mut table = table;
    if let Some((column, end, last)) = &shaping.window {
        table = table
            .window(column, *end, *last)
            .map_err(|e| data_error(e, cancel))?;
        if table.rows() == 0 {
            return Err(OperatorError::rejected(format!(
                "None of the {rows_read} {source_name} rows has a `{column}` in the window of \
                 {} ending at {}.",
                HumanDuration(last.to_std().unwrap_or_default()),
                end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
    }
    if let Some((rows, seed)) = shaping.sample {
        table = table.sample(rows, seed);
    }
    Ok(Loaded { table, rows_read })
}

/// The columns to check, and a sentence for each shared column left out.
fn column_specs(
    config: &DriftConfig,
    reference: &Table,
    current: &Table,
) -> Result<(Vec<ColumnSpec>, Vec<String>)> {
    if let Some(columns) = &config.columns {
        return Ok((columns.clone(), Vec::new()));
    }
    let window_column = config.window.as_ref().map(|w| w.column.as_str());
    let mut specs = Vec::new();
    let mut warnings = Vec::new();
    for name in reference.column_names() {
        if Some(name.as_str()) == window_column {
            continue;
        }
        if !current.column_names().contains(name) {
            warnings.push(format!(
                "Column `{name}` is only in the reference data; it was not checked."
            ));
            continue;
        }
        let empty = |table: &Table| {
            table
                .column(name)
                .map_or(true, |c| c.inferred_kind().is_none())
        };
        if empty(reference) || empty(current) {
            warnings.push(format!(
                "Column `{name}` has no values in the {} data; it was not checked.",
                if empty(reference) {
                    "reference"
                } else {
                    "current"
                }
            ));
            continue;
        }
        let spec = config
            .overrides
            .iter()
            .find(|o| &o.name == name)
            .cloned()
            .unwrap_or_else(|| ColumnSpec::named(name));
        specs.push(spec);
    }
    for name in current.column_names() {
        if Some(name.as_str()) != window_column && !reference.column_names().contains(name) {
            warnings.push(format!(
                "Column `{name}` is only in the current data; it was not checked."
            ));
        }
    }
    for o in &config.overrides {
        if !specs.iter().any(|s| s.name == o.name) {
            return Err(OperatorError::rejected(format!(
                "`method` or `threshold` names column `{}`, which is not checked: it is not a \
                 column with values in both data sets.",
                o.name
            )));
        }
    }
    if specs.is_empty() {
        return Err(OperatorError::rejected(
            "The reference and current data share no column to check.",
        ));
    }
    Ok((specs, warnings))
}

/// A checked column's histogram, and what was binned.
struct ColumnHistogram {
    column: String,
    /// `values`, or the text descriptor binned for a text column (`length`).
    of: &'static str,
    histogram: Histogram,
}

/// The histogram a report draws for a checked column; `None` for embeddings.
fn column_histogram(
    reference: &Table,
    current: &Table,
    column: &str,
    kind: ColumnKind,
) -> Option<ColumnHistogram> {
    let integer = |table: &Table| {
        matches!(
            table.column(column),
            Ok(Column::Numbers { integer: true, .. })
        )
    };
    let (of, histogram) = match kind {
        ColumnKind::Numeric => {
            let (r, c) = (
                reference.numbers(column).ok()?,
                current.numbers(column).ok()?,
            );
            let integer = integer(reference) && integer(current);
            let sample = |values| Sample::Numbers { values, integer };
            ("values", histogram(sample(&r), sample(&c)))
        }
        ColumnKind::Categorical => {
            let r = reference.categories(column).ok()?;
            let c = current.categories(column).ok()?;
            ("values", histogram(Sample::Labels(&r), Sample::Labels(&c)))
        }
        ColumnKind::Text => {
            let length =
                |table: &Table| Some(describe(&table.texts(column).ok()?, Descriptor::Length));
            let (r, c) = (length(reference)?, length(current)?);
            let sample = |values| Sample::Numbers {
                values,
                integer: true,
            };
            (Descriptor::Length.name(), histogram(sample(&r), sample(&c)))
        }
        ColumnKind::Embedding => return None,
    };
    Some(ColumnHistogram {
        column: column.to_owned(),
        of,
        histogram,
    })
}

/// The histograms of the checked columns, computed over the available threads.
fn histograms(reference: &Table, current: &Table, verdict: &DatasetDrift) -> Vec<ColumnHistogram> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, verdict.columns.len().max(1));
    let chunk = verdict.columns.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = verdict
            .columns
            .chunks(chunk)
            .map(|columns| {
                scope.spawn(move || {
                    columns
                        .iter()
                        .filter_map(|c| column_histogram(reference, current, &c.column, c.kind))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            // A histogram is a drawing aid: one that failed is left out, not the task.
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// A number for JSON; NaN and infinities (which JSON cannot hold) become null.
fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The task's outputs: the data set's verdict and each column's.
fn outputs_of(verdict: &DatasetDrift) -> Outputs {
    let mut columns = Map::new();
    for c in &verdict.columns {
        let mut column = Map::new();
        column.insert("method".into(), c.method.name().into());
        column.insert("statistic".into(), number(c.statistic));
        if let Some(p) = c.p_value {
            column.insert("p_value".into(), number(p));
        }
        column.insert("threshold".into(), number(c.threshold));
        column.insert("drifted".into(), c.drifted.into());
        columns.insert(c.column.clone(), Value::Object(column));
    }
    let mut outputs = Outputs::new();
    outputs.insert("drift_detected".into(), verdict.drift_detected.into());
    outputs.insert("drift_share".into(), number(verdict.drift_share));
    outputs.insert(
        "drifted_columns".into(),
        Value::from(verdict.drifted_columns.clone()),
    );
    outputs.insert("columns".into(), Value::Object(columns));
    outputs
}

/// One line for the run page: how many columns drifted, and which.
fn summary_of(verdict: &DatasetDrift) -> String {
    let checked = verdict.columns.len();
    let drifted = verdict.drifted_columns.len();
    let columns = if checked == 1 { "column" } else { "columns" };
    if drifted == 0 {
        format!("no drift in {checked} {columns}")
    } else {
        let verdict_word = if verdict.drift_detected {
            ""
        } else {
            " (below the data set's drift_share)"
        };
        format!(
            "drift in {drifted} of {checked} {columns}{verdict_word}: {}",
            verdict.drifted_columns.join(", ")
        )
    }
}

/// The histograms artifact: row counts, and each column's bins and shares.
fn histograms_json(
    reference: &Loaded,
    current: &Loaded,
    window: Option<&(String, DateTime<Utc>, TimeDelta)>,
    histograms: &[ColumnHistogram],
) -> Value {
    let columns: Map<String, Value> = histograms
        .iter()
        .map(|h| {
            let shares = |values: &[f64]| values.iter().map(|v| number(*v)).collect::<Vec<_>>();
            (
                h.column.clone(),
                json!({
                    "of": h.of,
                    "labels": h.histogram.labels,
                    "edges": shares(&h.histogram.edges),
                    "reference": shares(&h.histogram.reference),
                    "current": shares(&h.histogram.current),
                }),
            )
        })
        .collect();
    json!({
        "reference_rows": reference.table.rows(),
        "reference_rows_read": reference.rows_read,
        "current_rows": current.table.rows(),
        "current_rows_read": current.rows_read,
        "window": window.map(|(column, end, last)| json!({
            "column": column,
            "start": end
                .checked_sub_signed(*last)
                .map(|start| start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "end": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })),
        "columns": columns,
    })
}

/// Where the window ends: as configured, else the run's data-interval end from the store.
async fn window_end(ctx: &OpContext, window: &Window) -> Result<DateTime<Utc>> {
    if let Some(end) = window.end {
        return Ok(end);
    }
    let Some(store) = &ctx.services.store else {
        return Err(OperatorError::rejected(
            "`window.end` must be given here: there is no run to take its data-interval end from.",
        ));
    };
    match store.run(&ctx.run_id).await {
        Ok(Some(run)) => Ok(run.data_interval_end),
        Ok(None) => Err(OperatorError::failed(format!(
            "run `{}` is not in the database",
            ctx.run_id
        ))),
        Err(e) => Err(OperatorError::failed(format!(
            "reading the run's data interval failed: {e}"
        ))),
    }
}

/// Runs `work` on the blocking pool; returns at once when the task is cancelled (the work
/// itself stops at its next check of the token).
async fn blocking<T: Send + 'static>(
    ctx: &OpContext,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let handle = tokio::task::spawn_blocking(work);
    tokio::select! {
        joined = handle => joined.map_err(|e| OperatorError::failed(format!("the drift check stopped unexpectedly: {e}")))?,
        () = ctx.cancel.cancelled() => Err(OperatorError::Cancelled),
    }
}

pub async fn run(ctx: &OpContext, config: DriftConfig) -> Result<Completion> {
    let window = match &config.window {
        Some(w) => Some((w.column.clone(), window_end(ctx, w).await?, w.last)),
        None => None,
    };
    let numeric: Vec<String> = config
        .columns
        .iter()
        .flatten()
        .filter(|c| c.kind == Some(ColumnKind::Numeric))
        .map(|c| c.name.clone())
        .collect();
    let reference_shaping = Shaping {
        numeric: numeric.clone(),
        window: None,
        sample: config.sample,
    };
    let current_shaping = Shaping {
        numeric,
        window: window.clone(),
        sample: config.sample,
    };
    let reference_input = Input::of(&config.reference, &ctx.base_dir);
    let current_input = Input::of(&config.current, &ctx.base_dir);
    ctx.log.system(format!(
        "Reading the reference data ({}) and the current data ({}).",
        reference_input.describe(),
        current_input.describe()
    ));
    // Both data sets are read at once, one thread each.
    let (reference, current) = {
        let cancel = ctx.cancel.clone();
        let reference = blocking(ctx, move || {
            load(&reference_input, "reference", &reference_shaping, &cancel)
        });
        let cancel = ctx.cancel.clone();
        let current = blocking(ctx, move || {
            load(&current_input, "current", &current_shaping, &cancel)
        });
        tokio::try_join!(reference, current)?
    };
    ctx.log.system(format!(
        "Checking {} reference rows against {} current rows{}.",
        reference.table.rows(),
        current.table.rows(),
        match &window {
            Some((column, end, _)) => format!(
                " (of {} read; `{column}` in the window ending at {})",
                current.rows_read,
                end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => String::new(),
        }
    ));
    let (specs, warnings) = column_specs(&config, &reference.table, &current.table)?;
    let settings = sluice_drift::DriftConfig {
        columns: specs,
        ignore: Vec::new(),
        drift_share: config.drift_share,
        seed: config.sample.map_or(0, |(_, seed)| seed),
        ..sluice_drift::DriftConfig::default()
    };
    let cancel = ctx.cancel.clone();
    let (reference, current, verdict, histograms) = blocking(ctx, move || {
        let verdict =
            sluice_drift::detect_drift_until(&reference.table, &current.table, &settings, &|| {
                cancel.is_cancelled()
            })
            .map_err(|e| data_error(e, &cancel))?;
        let histograms = histograms(&reference.table, &current.table, &verdict);
        Ok((reference, current, verdict, histograms))
    })
    .await?;
    for c in &verdict.columns {
        ctx.log.system(format!(
            "{}: {} statistic {}{}, threshold {}: {}.",
            c.column,
            c.method,
            c.statistic,
            c.p_value
                .map(|p| format!(", p-value {p}"))
                .unwrap_or_default(),
            c.threshold,
            if c.drifted { "drifted" } else { "no drift" }
        ));
    }
    for warning in &warnings {
        ctx.log.system(warning.clone());
    }
    let artifact = histograms_json(&reference, &current, window.as_ref(), &histograms);
    ctx.artifacts()
        .put(HISTOGRAMS_ARTIFACT, artifact.to_string())
        .await
        .map_err(|e| OperatorError::failed(format!("keeping the histograms failed: {e}")))?;
    Ok(Completion {
        outputs: outputs_of(&verdict),
        exit_code: None,
        summary: Some(summary_of(&verdict)),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(with: Value) -> std::result::Result<DriftConfig, String> {
        serde_json::from_value::<DriftConfig>(with).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_shape_parses() {
        let parsed = config(json!({
            "reference": "data/reference.csv",
            "current": "data/production_outputs.jsonl",
            "window": {"column": "ts", "last": "24h"},
            "columns": {"latency_ms": "numeric", "answer_length": "numeric",
                        "topic": "categorical", "answer": "text"},
            "method": {"latency_ms": "ks"},
            "drift_share": 0.5,
        }))
        .expect("valid");
        assert_eq!(
            parsed.reference,
            DataSource::Path("data/reference.csv".into())
        );
        let window = parsed.window.expect("a window");
        assert_eq!(
            (window.column.as_str(), window.last, window.end),
            ("ts", TimeDelta::hours(24), None)
        );
        let columns = parsed.columns.expect("columns");
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["latency_ms", "answer_length", "topic", "answer"]);
        assert_eq!(columns[0].method, Some(Method::Ks));
        assert_eq!(columns[2].kind, Some(ColumnKind::Categorical));
        assert_eq!(columns[3].kind, Some(ColumnKind::Text));
        assert_eq!(columns[1].method, None);
        assert_eq!(parsed.drift_share, 0.5);
        assert!(parsed.overrides.is_empty());
    }

    #[test]
    fn defaults_rows_lists_and_overrides_parse() {
        let parsed = config(json!({
            "reference": [{"x": 1}, {"x": 2}],
            "current": "{{ tasks.a.artifacts[\"c.csv\"] }}",
            "method": {"x": "psi"},
            "threshold": {"x": 0.2},
            "sample": {"rows": 1000},
        }))
        .expect("valid");
        assert!(matches!(&parsed.reference, DataSource::Rows(rows) if rows.len() == 2));
        assert_eq!(parsed.columns, None);
        assert_eq!(parsed.drift_share, 0.5);
        assert_eq!(parsed.sample, Some((1000, 0)));
        assert_eq!(parsed.overrides.len(), 1);
        assert_eq!(parsed.overrides[0].method, Some(Method::Psi));
        assert_eq!(parsed.overrides[0].threshold, Some(0.2));
        let named = config(
            json!({"reference": "r.csv", "current": "c.csv", "columns": ["a", "b"],
            "window": {"column": "ts", "last": "1h", "end": "2026-11-05T00:00:00Z"}}),
        )
        .expect("valid");
        assert_eq!(named.columns.map(|c| c.len()), Some(2));
        assert_eq!(
            named.window.and_then(|w| w.end),
            "2026-11-05T00:00:00Z".parse::<DateTime<Utc>>().ok()
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_named() {
        let refused = |with: Value, needle: &str| {
            let error = config(with).expect_err("refused");
            assert!(error.contains(needle), "{error} should mention {needle}");
        };
        let base = |extra: Value| {
            let mut with = json!({"reference": "r.csv", "current": "c.csv"});
            if let (Some(map), Some(extra)) = (with.as_object_mut(), extra.as_object()) {
                map.extend(extra.clone());
            }
            with
        };
        refused(base(json!({"drift_share": 1.5})), "`drift_share`");
        refused(base(json!({"method": {"x": "kss"}})), "`method.x`");
        refused(base(json!({"columns": {"x": "number"}})), "`columns.x`");
        refused(
            base(json!({"columns": ["a"], "method": {"b": "ks"}})),
            "not in `columns`",
        );
        refused(base(json!({"columns": []})), "`columns` is empty");
        refused(
            base(json!({"window": {"column": "ts", "last": "0s"}})),
            "`window.last`",
        );
        refused(
            base(json!({"window": {"column": "ts", "last": "1h", "end": "yesterday"}})),
            "`window.end`",
        );
        refused(base(json!({"sample": {"rows": 0}})), "`sample.rows`");
        refused(base(json!({"colums": ["a"]})), "colums");
    }

    #[test]
    fn a_templated_window_end_is_left_to_run_time() {
        let with = json!({"reference": "r.csv", "current": "c.csv",
            "window": {"column": "ts", "last": "1h", "end": "{{ params.end }}"}});
        assert!(
            super::super::Operator::Drift.check_static(&with).is_ok(),
            "a template is checked once rendered"
        );
    }

    #[test]
    fn outputs_have_the_issue_shape() {
        let verdict = DatasetDrift {
            drift_detected: true,
            drift_share: 0.5,
            drifted_columns: vec!["a".into()],
            columns: vec![
                sluice_drift::ColumnDrift {
                    column: "a".into(),
                    kind: ColumnKind::Numeric,
                    method: Method::Ks,
                    statistic: 0.31,
                    p_value: Some(1.2e-9),
                    threshold: 0.05,
                    drifted: true,
                    descriptors: Vec::new(),
                },
                sluice_drift::ColumnDrift {
                    column: "b".into(),
                    kind: ColumnKind::Numeric,
                    method: Method::Wasserstein,
                    statistic: 0.01,
                    p_value: None,
                    threshold: 0.1,
                    drifted: false,
                    descriptors: Vec::new(),
                },
            ],
        };
        assert_eq!(
            Value::Object(outputs_of(&verdict)),
            json!({
                "drift_detected": true,
                "drift_share": 0.5,
                "drifted_columns": ["a"],
                "columns": {
                    "a": {"method": "ks", "statistic": 0.31, "p_value": 1.2e-9,
                          "threshold": 0.05, "drifted": true},
                    "b": {"method": "wasserstein", "statistic": 0.01, "threshold": 0.1,
                          "drifted": false},
                },
            })
        );
        assert_eq!(summary_of(&verdict), "drift in 1 of 2 columns: a");
    }

    #[test]
    fn formats_follow_the_extension_then_the_first_character() {
        let dir = tempfile::tempdir().expect("temp dir");
        let jsonl = dir.path().join("data");
        std::fs::write(&jsonl, "\n {\"a\": 1}\n").expect("write");
        let csv = dir.path().join("data.txt");
        std::fs::write(&csv, "a\n1\n").expect("write");
        assert_eq!(format_of(&jsonl).ok(), Some(Format::JsonLines));
        assert_eq!(format_of(&csv).ok(), Some(Format::Csv));
        assert_eq!(
            format_of(&dir.path().join("missing.csv")).ok(),
            Some(Format::Csv)
        );
        assert!(format_of(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_cancelled_read_stops() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut reader = Cancellable {
            inner: &b"a\n1\n"[..],
            cancel,
        };
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());
        assert!(out.is_empty());
    }
}
