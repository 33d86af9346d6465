//! The built-in tracking backend's rows: experiments, tracking runs with their lineage, params,
//! every metric point, tags, files, registered models, model versions (their files' digests;
//! the bytes live in the artifact store), aliases and the history of every alias move. The
//! types here are also the tracking interface's (`tracking` re-exports them), so both backends
//! answer in the same shapes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, get, marks};

/// Metric points per insert statement. They travel as one JSON document (a bound value), which
/// the database unpacks: binding five values per point costs more than the whole insert.
const METRIC_ROWS: usize = 5_000;

/// How often a version tag write re-reads the tags after another writer changed them first.
const TAG_WRITE_ATTEMPTS: usize = 5;

/// `[["key",value,step,timestamp_ms],…]`. Non-finite values have no JSON form: they are refused.
fn metric_rows(points: &[MetricPoint]) -> Result<String> {
    use std::fmt::Write;
    let mut rows = String::with_capacity(points.len() * 48 + 2);
    rows.push('[');
    for (i, point) in points.iter().enumerate() {
        if !point.value.is_finite() {
            return Err(StoreError::Corrupt(format!(
                "metric `{}` has the value {}, which cannot be stored",
                point.key, point.value
            )));
        }
        if i > 0 {
            rows.push(',');
        }
        let key = serde_json::to_string(&point.key)
            .map_err(|e| StoreError::Corrupt(format!("metric name: {e}")))?;
        // `{:?}` keeps a float a float (`1.0`, not `1`) and round-trips every value.
        let _ = write!(
            rows,
            "[{key},{:?},{},{}]",
            point.value, point.step, point.timestamp_ms
        );
    }
    rows.push(']');
    Ok(rows)
}

/// An experiment: a named group of tracking runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    pub id: String,
    pub name: String,
}

/// An input file of a tracking run, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// As the workflow names it (relative to the workflow's folder).
    pub path: String,
    pub sha256: String,
}

/// What produced a tracking run: the workflow version, run, task and try, and the content of
/// each input file. Every field is optional: a run logged from outside a workflow has none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub workflow_id: Option<String>,
    pub version_hash: Option<String>,
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    pub try_number: Option<u32>,
    pub inputs: Vec<InputFile>,
}

/// Where a tracking run stands, with MLflow's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TrackingStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

impl TrackingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingStatus::Running => "RUNNING",
            TrackingStatus::Finished => "FINISHED",
            TrackingStatus::Failed => "FAILED",
            TrackingStatus::Killed => "KILLED",
        }
    }

    pub fn parse(text: &str) -> Option<TrackingStatus> {
        Some(match text {
            "RUNNING" | "SCHEDULED" => TrackingStatus::Running,
            "FINISHED" => TrackingStatus::Finished,
            "FAILED" => TrackingStatus::Failed,
            "KILLED" => TrackingStatus::Killed,
            _ => return None,
        })
    }
}

/// A tracking run to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTrackingRun {
    pub experiment_id: String,
    pub name: String,
    pub lineage: Lineage,
    pub started_at: DateTime<Utc>,
}

/// A tracking run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingRunRecord {
    pub id: String,
    pub experiment_id: String,
    pub name: String,
    pub status: TrackingStatus,
    pub lineage: Lineage,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One point of a metric's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub step: i64,
    /// Milliseconds since the Unix epoch, as MLflow keeps them.
    pub timestamp_ms: i64,
}

/// What one call logs to a tracking run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBatch {
    pub params: Vec<(String, String)>,
    pub metrics: Vec<MetricPoint>,
    pub tags: Vec<(String, String)>,
}

/// A file kept with a tracking run or a model version, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedFile {
    /// The run's name for it, or the path inside a version's source.
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// A tracking run with what was logged to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingRunDetail {
    pub run: TrackingRunRecord,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// Each metric's latest point.
    pub metrics: BTreeMap<String, MetricPoint>,
    pub files: Vec<TrackedFile>,
}

impl TrackingRunDetail {
    /// Each metric's latest value, as the JSON object gates and reports compare.
    pub fn latest_metrics(&self) -> serde_json::Map<String, serde_json::Value> {
        self.metrics
            .iter()
            .map(|(key, point)| (key.clone(), serde_json::json!(point.value)))
            .collect()
    }
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModelRecord {
    pub name: String,
    pub description: String,
}

/// A version of a registered model to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewModelVersion {
    pub model: String,
    pub tracking_run_id: Option<String>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// The source's files, already in the artifact store.
    pub files: Vec<TrackedFile>,
}

/// A model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersionRecord {
    pub model: String,
    pub version: u32,
    pub tracking_run_id: Option<String>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub files: Vec<TrackedFile>,
    /// The aliases that point at this version now.
    pub aliases: Vec<String>,
}

/// One move of an alias: set (`from` empty), moved, or deleted (`to` empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    pub model: String,
    pub alias: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub moved_at: DateTime<Utc>,
    /// Who moved it: `run:<run id>/<task>` or `user:<name>`.
    pub moved_by: String,
}

/// A field of a tracking run that a search compares or sorts by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunField {
    Param(String),
    Metric(String),
    Tag(String),
    /// `RUNNING`, `FINISHED`, `FAILED` or `KILLED`.
    Status,
    Name,
    StartTime,
}

/// How a condition compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Ne => "!=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// What a field is compared with: metrics with numbers, everything else with text.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Number(f64),
    Text(String),
}

/// One condition of a search; a run matches when it has the field and the comparison holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: RunField,
    pub op: Comparison,
    pub value: FilterValue,
}

/// The order of a search's results. Runs without the field come last either way; ties go to
/// the newest run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOrder {
    pub field: RunField,
    pub descending: bool,
}

/// A search of an experiment's tracking runs: every condition must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct RunQuery {
    pub conditions: Vec<Condition>,
    /// `None`: newest first.
    pub order: Option<RunOrder>,
    pub max_results: u32,
    /// Where the previous page ended (from its `next_page_token`).
    pub page_token: Option<String>,
}

impl Default for RunQuery {
    fn default() -> Self {
        RunQuery {
            conditions: Vec::new(),
            order: None,
            max_results: 100,
            page_token: None,
        }
    }
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub runs: Vec<TrackingRunDetail>,
    pub next_page_token: Option<String>,
    /// How many runs match in all, when the backend says so cheaply.
    pub total: Option<u64>,
}

/// An experiment with how many tracking runs it has and when the latest started.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSummary {
    pub experiment: ExperimentRecord,
    /// `None` when the backend cannot count them cheaply.
    pub runs: Option<u64>,
    pub last_run_at: Option<DateTime<Utc>>,
}

const RUN_COLUMNS: &str = "id, experiment_id, name, status, workflow_id, version_hash, run_id, \
                           task_id, try_number, inputs, started_at, ended_at";

fn run_from_row(row: &QueryResult) -> Result<TrackingRunRecord> {
    let status: String = get(row, "status")?;
    let inputs: String = get(row, "inputs")?;
    Ok(TrackingRunRecord {
        id: get(row, "id")?,
        experiment_id: get(row, "experiment_id")?,
        name: get(row, "name")?,
        status: TrackingStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("tracking run status `{status}`")))?,
        lineage: Lineage {
            workflow_id: get(row, "workflow_id")?,
            version_hash: get(row, "version_hash")?,
            run_id: get(row, "run_id")?,
            task_id: get(row, "task_id")?,
            try_number: get::<Option<i32>>(row, "try_number")?.map(|n| n.max(0) as u32),
            inputs: serde_json::from_str(&inputs)
                .map_err(|e| StoreError::Corrupt(format!("tracking run inputs: {e}")))?,
        },
        started_at: get(row, "started_at")?,
        ended_at: get(row, "ended_at")?,
    })
}

fn point_from_row(row: &QueryResult) -> Result<MetricPoint> {
    Ok(MetricPoint {
        key: get(row, "key")?,
        value: get(row, "value")?,
        step: get(row, "step")?,
        timestamp_ms: get(row, "timestamp_ms")?,
    })
}

fn file_from_row(row: &QueryResult, name_column: &str) -> Result<TrackedFile> {
    Ok(TrackedFile {
        name: get(row, name_column)?,
        sha256: get(row, "sha256")?,
        size: get::<i64>(row, "size")?.max(0) as u64,
    })
}

fn version_number(version: i32) -> u32 {
    version.max(0) as u32
}

impl Store {
    /// Inserts the metric points of a JSON document of rows (`metric_rows`) for one run: the
    /// two databases unpack JSON arrays with different functions.
    fn metric_insert(&self) -> String {
        const COLUMNS: &str =
            "INSERT INTO tracking_metrics (tracking_run_id, key, value, step, timestamp_ms)";
        if self.backend() == sea_orm::DbBackend::Postgres {
            format!(
                "{COLUMNS} SELECT ?, e->>0, (e->>1)::double precision, (e->>2)::bigint, \
                 (e->>3)::bigint FROM json_array_elements(CAST(? AS json)) AS e"
            )
        } else {
            format!(
                "{COLUMNS} SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
                 json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)"
            )
        }
    }

    /// The experiment called `name`, created when there is none.
    pub async fn tracking_experiment(&self, name: &str) -> Result<ExperimentRecord> {
        self.db()
            .execute_raw(self.stmt(
                "INSERT INTO tracking_experiments (id, name, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
                vec![
                    uuid::Uuid::now_v7().simple().to_string().into(),
                    name.into(),
                    Utc::now().into(),
                ],
            ))
            .await?;
        self.tracking_experiment_where("name", name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("experiment `{name}` vanished")))
    }

    /// The experiment with id `id`.
    pub async fn tracking_experiment_by_id(&self, id: &str) -> Result<Option<ExperimentRecord>> {
        self.tracking_experiment_where("id", id).await
    }

    async fn tracking_experiment_where(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<ExperimentRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                &format!("SELECT id, name FROM tracking_experiments WHERE {column} = ?"),
                vec![value.into()],
            ))
            .await?;
        row.map(|row| {
            Ok(ExperimentRecord {
                id: get(&row, "id")?,
                name: get(&row, "name")?,
            })
        })
        .transpose()
    }

    /// Every experiment, by name.
    pub async fn tracking_experiments(&self) -> Result<Vec<ExperimentRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT id, name FROM tracking_experiments ORDER BY name",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExperimentRecord {
                    id: get(row, "id")?,
                    name: get(row, "name")?,
                })
            })
            .collect()
    }

    /// Starts a tracking run (status `RUNNING`).
    pub async fn start_tracking_run(&self, new: &NewTrackingRun) -> Result<TrackingRunRecord> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let lineage = &new.lineage;
        let inputs = serde_json::to_string(&lineage.inputs)
            .map_err(|e| StoreError::Corrupt(format!("tracking run inputs: {e}")))?;
        self.db()
            .execute_raw(self.stmt(
                &format!(
                    "INSERT INTO tracking_runs ({RUN_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                vec![
                    id.as_str().into(),
                    new.experiment_id.as_str().into(),
                    new.name.as_str().into(),
                    TrackingStatus::Running.as_str().into(),
                    lineage.workflow_id.clone().into(),
                    lineage.version_hash.clone().into(),
                    lineage.run_id.clone().into(),
                    lineage.task_id.clone().into(),
                    lineage.try_number.map(|n| n as i32).into(),
                    inputs.into(),
                    new.started_at.into(),
                    Option::<DateTime<Utc>>::None.into(),
                ],
            ))
            .await?;
        Ok(TrackingRunRecord {
            id,
            experiment_id: new.experiment_id.clone(),
            name: new.name.clone(),
            status: TrackingStatus::Running,
            lineage: new.lineage.clone(),
            started_at: new.started_at,
            ended_at: None,
        })
    }

    /// Logs params, metric points and tags to a tracking run in one transaction, metric
    /// points a few thousand rows per statement. A param or tag logged again takes the new
    /// value.
    pub async fn log_tracking_batch(&self, run_id: &str, batch: &LogBatch) -> Result<()> {
        let txn = self.db().begin().await?;
        for (table, pairs) in [
            ("tracking_params", &batch.params),
            ("tracking_tags", &batch.tags),
        ] {
            for chunk in pairs.chunks(super::CHUNK) {
                let mut sql = format!("INSERT INTO {table} (tracking_run_id, key, value) VALUES ");
                let mut values = Vec::with_capacity(chunk.len() * 3);
                for (i, (key, value)) in chunk.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str("(?, ?, ?)");
                    values.extend([
                        Value::from(run_id),
                        key.as_str().into(),
                        value.as_str().into(),
                    ]);
                }
                sql.push_str(
                    " ON CONFLICT (tracking_run_id, key) DO UPDATE SET value = excluded.value",
                );
                txn.execute_raw(self.stmt(&sql, values)).await?;
            }
        }
        for chunk in batch.metrics.chunks(METRIC_ROWS) {
            txn.execute_raw(self.stmt(
                &self.metric_insert(),
                vec![run_id.into(), metric_rows(chunk)?.into()],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Records a file kept with a tracking run (its blob is already stored).
    pub async fn add_tracking_file(&self, run_id: &str, file: &TrackedFile) -> Result<()> {
        self.db()
            .execute_raw(self.stmt(
                "INSERT INTO tracking_files (tracking_run_id, name, sha256, size) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (tracking_run_id, name) \
                 DO UPDATE SET sha256 = excluded.sha256, size = excluded.size",
                vec![
                    run_id.into(),
                    file.name.as_str().into(),
                    file.sha256.as_str().into(),
                    i64::try_from(file.size).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Ends a tracking run; a run already ended keeps its first end.
    pub async fn end_tracking_run(
        &self,
        run_id: &str,
        status: TrackingStatus,
        ended_at: DateTime<Utc>,
    ) -> Result<bool> {
        let done = self
            .db()
            .execute_raw(self.stmt(
                "UPDATE tracking_runs SET status = ?, ended_at = ? WHERE id = ? AND status = ?",
                vec![
                    status.as_str().into(),
                    ended_at.into(),
                    run_id.into(),
                    TrackingStatus::Running.as_str().into(),
                ],
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A tracking run with its params, tags, latest metrics and files.
    pub async fn tracking_run(&self, run_id: &str) -> Result<Option<TrackingRunDetail>> {
        let Some(run) = self.tracking_run_record(run_id).await? else {
            return Ok(None);
        };
        let mut details = self.tracking_details(&[run]).await?;
        Ok(details.pop())
    }

    /// A tracking run without what was logged to it.
    pub async fn tracking_run_record(&self, run_id: &str) -> Result<Option<TrackingRunRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                &format!("SELECT {RUN_COLUMNS} FROM tracking_runs WHERE id = ?"),
                vec![run_id.into()],
            ))
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The SQL of a run field, over `tracking_runs r`, and the values it binds.
    fn field_sql(field: &RunField) -> (String, Vec<Value>) {
        // A metric's value is its latest point's (highest step, then time), as MLflow's.
        let latest_metric = "(SELECT n.value FROM tracking_metrics n \
                             WHERE n.tracking_run_id = r.id AND n.key = ? \
                             ORDER BY n.step DESC, n.timestamp_ms DESC, n.id DESC LIMIT 1)";
        match field {
            RunField::Metric(key) => (latest_metric.to_owned(), vec![key.as_str().into()]),
            RunField::Param(key) => (
                "(SELECT p.value FROM tracking_params p \
                 WHERE p.tracking_run_id = r.id AND p.key = ?)"
                    .to_owned(),
                vec![key.as_str().into()],
            ),
            RunField::Tag(key) => (
                "(SELECT t.value FROM tracking_tags t \
                 WHERE t.tracking_run_id = r.id AND t.key = ?)"
                    .to_owned(),
                vec![key.as_str().into()],
            ),
            RunField::Status => ("r.status".to_owned(), Vec::new()),
            RunField::Name => ("r.name".to_owned(), Vec::new()),
            RunField::StartTime => ("r.started_at".to_owned(), Vec::new()),
        }
    }

    /// The `WHERE` clause of a search and its values.
    fn search_filter(
        experiment_id: &str,
        conditions: &[Condition],
    ) -> Result<(String, Vec<Value>)> {
        let mut sql = String::from("r.experiment_id = ?");
        let mut values = vec![Value::from(experiment_id)];
        for condition in conditions {
            let (field, bound) = Self::field_sql(&condition.field);
            let value = match (&condition.field, &condition.value) {
                (RunField::Metric(_), FilterValue::Number(n)) => Value::from(*n),
                (RunField::Metric(key), FilterValue::Text(text)) => {
                    return Err(StoreError::Corrupt(format!(
                        "metric `{key}` is compared with the text `{text}`; metrics compare \
                         with numbers"
                    )));
                }
                (RunField::StartTime, FilterValue::Number(ms)) => Value::from(
                    DateTime::<Utc>::from_timestamp_millis(*ms as i64).unwrap_or_default(),
                ),
                (_, FilterValue::Number(n)) => Value::from(n.to_string()),
                (_, FilterValue::Text(text)) => Value::from(text.as_str()),
            };
            // `NULL <op> x` is never true, so a run without the field never matches.
            sql.push_str(&format!(" AND {field} {} ?", condition.op.as_str()));
            values.extend(bound);
            values.push(value);
        }
        Ok((sql, values))
    }

    /// One page of an experiment's tracking runs matching every condition, in the order asked
    /// (newest first by default), from `offset`; whether more follow; and how many match.
    pub async fn search_tracking_runs(
        &self,
        experiment_id: &str,
        conditions: &[Condition],
        order: Option<&RunOrder>,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<TrackingRunDetail>, bool, u64)> {
        let (filter, filter_values) = Self::search_filter(experiment_id, conditions)?;
        // Without conditions the count is read from the index alone; with them, counting in
        // the page's own statement (a window) evaluates their subqueries once, not twice.
        let mut total = None;
        if conditions.is_empty() {
            total = Some(self.count_runs(&filter, filter_values.clone()).await?);
        }
        let counted = if total.is_none() {
            ", COUNT(*) OVER () AS total"
        } else {
            ""
        };
        let mut values = Vec::new();
        let (sort, direction) = match order {
            Some(order) => {
                let (sql, bound) = Self::field_sql(&order.field);
                values.extend(bound);
                (sql, if order.descending { "DESC" } else { "ASC" })
            }
            None => ("r.started_at".to_owned(), "DESC"),
        };
        values.extend(filter_values.iter().cloned());
        values.push(i64::from(limit.saturating_add(1)).into());
        values.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
        let columns = RUN_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {columns}, {sort} AS sort_value{counted} FROM tracking_runs r \
                     WHERE {filter} \
                     ORDER BY sort_value {direction} NULLS LAST, r.started_at DESC, r.id DESC \
                     LIMIT ? OFFSET ?"
                ),
                values,
            ))
            .await?;
        let total = match (total, rows.first()) {
            (Some(total), _) => total,
            (None, Some(row)) => get::<i64>(row, "total")?.max(0) as u64,
            // A page past the end has no row to carry the count: count apart.
            (None, None) if offset > 0 => self.count_runs(&filter, filter_values).await?,
            (None, None) => 0,
        };
        let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        let more = runs.len() > limit as usize;
        runs.truncate(limit as usize);
        Ok((self.tracking_details(&runs).await?, more, total))
    }

    /// How many tracking runs `filter` (a search's `WHERE` clause over `r`) matches.
    async fn count_runs(&self, filter: &str, values: Vec<Value>) -> Result<u64> {
        let count = self
            .db()
            .query_one_raw(self.stmt(
                &format!("SELECT COUNT(*) AS n FROM tracking_runs r WHERE {filter}"),
                values,
            ))
            .await?;
        match count {
            Some(row) => Ok(get::<i64>(&row, "n")?.max(0) as u64),
            None => Ok(0),
        }
    }

    /// Every experiment with its number of tracking runs and its latest run's start, by name.
    pub async fn tracking_experiment_summaries(&self) -> Result<Vec<ExperimentSummary>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT e.id, e.name, COUNT(r.id) AS runs, MAX(r.started_at) AS last_run_at \
                 FROM tracking_experiments e LEFT JOIN tracking_runs r ON r.experiment_id = e.id \
                 GROUP BY e.id, e.name ORDER BY e.name",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExperimentSummary {
                    experiment: ExperimentRecord {
                        id: get(row, "id")?,
                        name: get(row, "name")?,
                    },
                    runs: Some(get::<i64>(row, "runs")?.max(0) as u64),
                    last_run_at: get(row, "last_run_at")?,
                })
            })
            .collect()
    }

    /// The tracking runs a workflow run's tasks made.
    pub async fn tracking_runs_of_run(&self, run_id: &str) -> Result<Vec<TrackingRunRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM tracking_runs WHERE run_id = ? \
                     ORDER BY started_at, id"
                ),
                vec![run_id.into()],
            ))
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn tracking_details(&self, runs: &[TrackingRunRecord]) -> Result<Vec<TrackingRunDetail>> {
        let mut details: Vec<TrackingRunDetail> = runs
            .iter()
            .map(|run| TrackingRunDetail {
                run: run.clone(),
                params: BTreeMap::new(),
                tags: BTreeMap::new(),
                metrics: BTreeMap::new(),
                files: Vec::new(),
            })
            .collect();
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, d) in details.iter().enumerate() {
            at.insert(d.run.id.clone(), i);
        }
        for chunk in runs.chunks(super::CHUNK) {
            let ids: Vec<Value> = chunk.iter().map(|r| r.id.as_str().into()).collect();
            let list = marks(ids.len());
            for table in ["tracking_params", "tracking_tags"] {
                for row in self
                    .db()
                    .query_all_raw(self.stmt(
                        &format!(
                            "SELECT tracking_run_id, key, value FROM {table} \
                             WHERE tracking_run_id IN ({list})"
                        ),
                        ids.clone(),
                    ))
                    .await?
                {
                    let run: String = get(&row, "tracking_run_id")?;
                    if let Some(&i) = at.get(&run) {
                        let target = if table == "tracking_params" {
                            &mut details[i].params
                        } else {
                            &mut details[i].tags
                        };
                        target.insert(get(&row, "key")?, get(&row, "value")?);
                    }
                }
            }
            // The latest point of each metric is the one with the highest step, then the
            // latest timestamp (MLflow's rule); ties go to the last logged.
            for row in self
                .db()
                .query_all_raw(self.stmt(
                    &format!(
                        "SELECT tracking_run_id, key, value, step, timestamp_ms \
                         FROM tracking_metrics m WHERE tracking_run_id IN ({list}) \
                         AND id = (SELECT n.id FROM tracking_metrics n \
                           WHERE n.tracking_run_id = m.tracking_run_id AND n.key = m.key \
                           ORDER BY n.step DESC, n.timestamp_ms DESC, n.id DESC LIMIT 1)"
                    ),
                    ids.clone(),
                ))
                .await?
            {
                let run: String = get(&row, "tracking_run_id")?;
                if let Some(&i) = at.get(&run) {
                    let point = point_from_row(&row)?;
                    details[i].metrics.insert(point.key.clone(), point);
                }
            }
            for row in self
                .db()
                .query_all_raw(self.stmt(
                    &format!(
                        "SELECT tracking_run_id, name, sha256, size FROM tracking_files \
                         WHERE tracking_run_id IN ({list}) ORDER BY name"
                    ),
                    ids.clone(),
                ))
                .await?
            {
                let run: String = get(&row, "tracking_run_id")?;
                if let Some(&i) = at.get(&run) {
                    details[i].files.push(file_from_row(&row, "name")?);
                }
            }
        }
        Ok(details)
    }

    /// Every point of one metric of a tracking run, in step order.
    pub async fn tracking_metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<MetricPoint>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT key, value, step, timestamp_ms FROM tracking_metrics \
                 WHERE tracking_run_id = ? AND key = ? ORDER BY step, timestamp_ms, id",
                vec![run_id.into(), key.into()],
            ))
            .await?;
        rows.iter().map(point_from_row).collect()
    }

    /// The registered model called `name`, created (with `description`) when there is none.
    pub async fn registered_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModelRecord> {
        self.db()
            .execute_raw(self.stmt(
                "INSERT INTO registered_models (name, description, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
                vec![name.into(), description.into(), Utc::now().into()],
            ))
            .await?;
        self.get_registered_model(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("model `{name}` vanished")))
    }

    pub async fn get_registered_model(&self, name: &str) -> Result<Option<RegisteredModelRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT name, description FROM registered_models WHERE name = ?",
                vec![name.into()],
            ))
            .await?;
        row.map(|row| {
            Ok(RegisteredModelRecord {
                name: get(&row, "name")?,
                description: get(&row, "description")?,
            })
        })
        .transpose()
    }

    /// Every registered model, by name.
    pub async fn registered_models(&self) -> Result<Vec<RegisteredModelRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT name, description FROM registered_models ORDER BY name",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RegisteredModelRecord {
                    name: get(row, "name")?,
                    description: get(row, "description")?,
                })
            })
            .collect()
    }

    /// Creates the next version of a model (and the model, when new), with its files.
    pub async fn create_model_version(&self, new: &NewModelVersion) -> Result<ModelVersionRecord> {
        self.registered_model(&new.model, "").await?;
        let tags = serde_json::to_string(&new.tags)
            .map_err(|e| StoreError::Corrupt(format!("model version tags: {e}")))?;
        // Two writers may pick the same next number on PostgreSQL; the primary key refuses
        // the second, which takes the number after.
        let mut attempts = 0;
        let version = loop {
            attempts += 1;
            match self.insert_model_version(new, &tags).await {
                Ok(version) => break version,
                Err(StoreError::Db(e))
                    if attempts < 5
                        && matches!(
                            e.sql_err(),
                            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                        ) => {}
                Err(e) => return Err(e),
            }
        };
        self.model_version(&new.model, version)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("model version {version} vanished")))
    }

    async fn insert_model_version(&self, new: &NewModelVersion, tags: &str) -> Result<u32> {
        let txn = self.db().begin().await?;
        let row = txn
            .query_one_raw(self.stmt(
                "SELECT CAST(COALESCE(MAX(version), 0) AS INTEGER) AS latest \
                 FROM model_versions WHERE model = ?",
                vec![new.model.as_str().into()],
            ))
            .await?;
        let latest: i32 = match row {
            Some(row) => get(&row, "latest")?,
            None => 0,
        };
        let version = latest + 1;
        txn.execute_raw(self.stmt(
            "INSERT INTO model_versions \
             (model, version, tracking_run_id, description, tags, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                new.model.as_str().into(),
                version.into(),
                new.tracking_run_id.clone().into(),
                new.description.as_str().into(),
                tags.into(),
                Utc::now().into(),
            ],
        ))
        .await?;
        for chunk in new.files.chunks(super::CHUNK) {
            let mut sql = String::from(
                "INSERT INTO model_version_files (model, version, path, sha256, size) VALUES ",
            );
            let mut values = Vec::with_capacity(chunk.len() * 5);
            for (i, file) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?)");
                values.extend([
                    Value::from(new.model.as_str()),
                    version.into(),
                    file.name.as_str().into(),
                    file.sha256.as_str().into(),
                    i64::try_from(file.size).unwrap_or(i64::MAX).into(),
                ]);
            }
            txn.execute_raw(self.stmt(&sql, values)).await?;
        }
        txn.commit().await?;
        Ok(version_number(version))
    }

    /// A model version with its files and current aliases.
    pub async fn model_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ModelVersionRecord>> {
        let versions = self.versions_where(model, Some(version)).await?;
        Ok(versions.into_iter().next())
    }

    /// Every version of a model, newest first.
    pub async fn model_versions(&self, model: &str) -> Result<Vec<ModelVersionRecord>> {
        self.versions_where(model, None).await
    }

    async fn versions_where(
        &self,
        model: &str,
        version: Option<u32>,
    ) -> Result<Vec<ModelVersionRecord>> {
        let mut values = vec![Value::from(model)];
        let mut filter = String::from("model = ?");
        if let Some(version) = version {
            filter.push_str(" AND version = ?");
            values.push((version as i32).into());
        }
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT model, version, tracking_run_id, description, tags \
                     FROM model_versions WHERE {filter} ORDER BY version DESC"
                ),
                values.clone(),
            ))
            .await?;
        let mut versions = Vec::with_capacity(rows.len());
        for row in &rows {
            let tags: String = get(row, "tags")?;
            versions.push(ModelVersionRecord {
                model: get(row, "model")?,
                version: version_number(get(row, "version")?),
                tracking_run_id: get(row, "tracking_run_id")?,
                description: get(row, "description")?,
                tags: serde_json::from_str(&tags)
                    .map_err(|e| StoreError::Corrupt(format!("model version tags: {e}")))?,
                files: Vec::new(),
                aliases: Vec::new(),
            });
        }
        let find = |versions: &mut Vec<ModelVersionRecord>, n: u32| {
            versions.iter().position(|v| v.version == n)
        };
        for row in self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT version, path, sha256, size FROM model_version_files \
                     WHERE {filter} ORDER BY path"
                ),
                values.clone(),
            ))
            .await?
        {
            if let Some(i) = find(&mut versions, version_number(get(&row, "version")?)) {
                versions[i].files.push(file_from_row(&row, "path")?);
            }
        }
        for row in self
            .db()
            .query_all_raw(self.stmt(
                &format!("SELECT version, alias FROM model_aliases WHERE {filter} ORDER BY alias"),
                values,
            ))
            .await?
        {
            if let Some(i) = find(&mut versions, version_number(get(&row, "version")?)) {
                versions[i].aliases.push(get(&row, "alias")?);
            }
        }
        Ok(versions)
    }

    /// Sets one tag of a model version (replacing its value). `false` when the version does
    /// not exist. The tags are one JSON text per version: the write is guarded on the text it
    /// read, so two writers of different keys both land.
    pub async fn set_model_version_tag(
        &self,
        model: &str,
        version: u32,
        key: &str,
        value: &str,
    ) -> Result<bool> {
        let number = i32::try_from(version).unwrap_or(i32::MAX);
        for _ in 0..TAG_WRITE_ATTEMPTS {
            let row = self
                .db()
                .query_one_raw(self.stmt(
                    "SELECT tags FROM model_versions WHERE model = ? AND version = ?",
                    vec![model.into(), number.into()],
                ))
                .await?;
            let Some(row) = row else {
                return Ok(false);
            };
            let read: String = get(&row, "tags")?;
            let mut tags: BTreeMap<String, String> = serde_json::from_str(&read)
                .map_err(|e| StoreError::Corrupt(format!("model version tags: {e}")))?;
            tags.insert(key.to_owned(), value.to_owned());
            let written = serde_json::to_string(&tags)
                .map_err(|e| StoreError::Corrupt(format!("model version tags: {e}")))?;
            let updated = self
                .db()
                .execute_raw(self.stmt(
                    "UPDATE model_versions SET tags = ? \
                     WHERE model = ? AND version = ? AND tags = ?",
                    vec![written.into(), model.into(), number.into(), read.into()],
                ))
                .await?
                .rows_affected();
            if updated == 1 {
                return Ok(true);
            }
        }
        Err(StoreError::Contended(format!(
            "the tags of version {version} of `{model}`"
        )))
    }

    /// Points `alias` of `model` at `version` and records the move, in one transaction.
    /// `None` when the version does not exist.
    pub async fn set_model_alias(
        &self,
        model: &str,
        alias: &str,
        version: u32,
        moved_by: &str,
    ) -> Result<Option<AliasMove>> {
        let txn = self.db().begin().await?;
        let exists = txn
            .query_one_raw(self.stmt(
                "SELECT version FROM model_versions WHERE model = ? AND version = ?",
                vec![model.into(), (version as i32).into()],
            ))
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let from = current_alias(self, &txn, model, alias).await?;
        let now = Utc::now();
        txn.execute_raw(self.stmt(
            "INSERT INTO model_aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, \
             updated_at = excluded.updated_at",
            vec![
                model.into(),
                alias.into(),
                (version as i32).into(),
                now.into(),
            ],
        ))
        .await?;
        let moved = AliasMove {
            model: model.to_owned(),
            alias: alias.to_owned(),
            from,
            to: Some(version),
            moved_at: now,
            moved_by: moved_by.to_owned(),
        };
        record_move(self, &txn, &moved).await?;
        txn.commit().await?;
        Ok(Some(moved))
    }

    /// Removes `alias` of `model` and records the move; `None` when it was not set.
    pub async fn delete_model_alias(
        &self,
        model: &str,
        alias: &str,
        moved_by: &str,
    ) -> Result<Option<AliasMove>> {
        let txn = self.db().begin().await?;
        let Some(from) = current_alias(self, &txn, model, alias).await? else {
            return Ok(None);
        };
        txn.execute_raw(self.stmt(
            "DELETE FROM model_aliases WHERE model = ? AND alias = ?",
            vec![model.into(), alias.into()],
        ))
        .await?;
        let moved = AliasMove {
            model: model.to_owned(),
            alias: alias.to_owned(),
            from: Some(from),
            to: None,
            moved_at: Utc::now(),
            moved_by: moved_by.to_owned(),
        };
        record_move(self, &txn, &moved).await?;
        txn.commit().await?;
        Ok(Some(moved))
    }

    /// The version `alias` of `model` points at.
    pub async fn model_alias(&self, model: &str, alias: &str) -> Result<Option<u32>> {
        current_alias(self, self.db(), model, alias).await
    }

    /// Every move of every alias of `model`, oldest first.
    pub async fn alias_history(&self, model: &str) -> Result<Vec<AliasMove>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT model, alias, from_version, to_version, moved_at, moved_by \
                 FROM alias_history WHERE model = ? ORDER BY id",
                vec![model.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AliasMove {
                    model: get(row, "model")?,
                    alias: get(row, "alias")?,
                    from: get::<Option<i32>>(row, "from_version")?.map(version_number),
                    to: get::<Option<i32>>(row, "to_version")?.map(version_number),
                    moved_at: get(row, "moved_at")?,
                    moved_by: get(row, "moved_by")?,
                })
            })
            .collect()
    }
}

async fn current_alias<C: ConnectionTrait>(
    store: &Store,
    conn: &C,
    model: &str,
    alias: &str,
) -> Result<Option<u32>> {
    let row = conn
        .query_one_raw(store.stmt(
            "SELECT version FROM model_aliases WHERE model = ? AND alias = ?",
            vec![model.into(), alias.into()],
        ))
        .await?;
    row.map(|row| get::<i32>(&row, "version").map(version_number))
        .transpose()
}

async fn record_move<C: ConnectionTrait>(store: &Store, conn: &C, moved: &AliasMove) -> Result<()> {
    conn.execute_raw(store.stmt(
        "INSERT INTO alias_history (model, alias, from_version, to_version, moved_at, moved_by) \
         VALUES (?, ?, ?, ?, ?, ?)",
        vec![
            moved.model.as_str().into(),
            moved.alias.as_str().into(),
            moved.from.map(|v| v as i32).into(),
            moved.to.map(|v| v as i32).into(),
            moved.moved_at.into(),
            moved.moved_by.as_str().into(),
        ],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    on_every_backend! {
        tracking_rows_round_trip => rows_round_trip,
        alias_moves_are_recorded_in_order => alias_moves,
        a_version_tag_is_set_and_replaced => version_tags,
    }

    async fn version_tags(store: Store) {
        let created = store
            .create_model_version(&NewModelVersion {
                model: "m".into(),
                tags: BTreeMap::from([("team".to_owned(), "a".to_owned())]),
                ..NewModelVersion::default()
            })
            .await
            .unwrap();
        assert!(
            !store.set_model_version_tag("m", 7, "k", "v").await.unwrap(),
            "an unknown version is not tagged"
        );
        for value in ["failed", "passed"] {
            assert!(
                store
                    .set_model_version_tag("m", created.version, "sluice.gate", value)
                    .await
                    .unwrap()
            );
        }
        let read = store
            .model_version("m", created.version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.tags["sluice.gate"], "passed", "the last write wins");
        assert_eq!(read.tags["team"], "a", "other tags stay");
    }

    async fn rows_round_trip(store: Store) {
        let experiment = store.tracking_experiment("eval").await.unwrap();
        assert_eq!(store.tracking_experiment("eval").await.unwrap(), experiment);
        let run = store
            .start_tracking_run(&NewTrackingRun {
                experiment_id: experiment.id.clone(),
                name: "t".into(),
                lineage: Lineage {
                    run_id: Some("r1".into()),
                    inputs: vec![InputFile {
                        path: "a".into(),
                        sha256: "00".into(),
                    }],
                    ..Lineage::default()
                },
                started_at: Utc::now(),
            })
            .await
            .unwrap();
        let point = |step, value| MetricPoint {
            key: "loss".into(),
            value,
            step,
            timestamp_ms: 1,
        };
        store
            .log_tracking_batch(
                &run.id,
                &LogBatch {
                    params: vec![("lr".into(), "0.1".into())],
                    metrics: vec![point(2, 0.5), point(1, 0.9)],
                    tags: vec![("k".into(), "v".into())],
                },
            )
            .await
            .unwrap();
        let detail = store.tracking_run(&run.id).await.unwrap().unwrap();
        assert_eq!(detail.params["lr"], "0.1");
        assert_eq!(
            detail.metrics["loss"].value, 0.5,
            "the highest step is the latest"
        );
        assert_eq!(detail.run.lineage.inputs[0].path, "a");
        let history = store
            .tracking_metric_history(&run.id, "loss")
            .await
            .unwrap();
        assert_eq!(
            history.iter().map(|p| p.step).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(
            store
                .end_tracking_run(&run.id, TrackingStatus::Finished, Utc::now())
                .await
                .unwrap()
        );
        assert_eq!(store.tracking_runs_of_run("r1").await.unwrap().len(), 1);
    }

    async fn alias_moves(store: Store) {
        for _ in 0..2 {
            store
                .create_model_version(&NewModelVersion {
                    model: "m".into(),
                    ..NewModelVersion::default()
                })
                .await
                .unwrap();
        }
        assert!(
            store
                .set_model_alias("m", "champion", 9, "user:a")
                .await
                .unwrap()
                .is_none()
        );
        store
            .set_model_alias("m", "champion", 1, "user:a")
            .await
            .unwrap();
        store
            .set_model_alias("m", "champion", 2, "run:r/t")
            .await
            .unwrap();
        assert_eq!(store.model_alias("m", "champion").await.unwrap(), Some(2));
        store
            .delete_model_alias("m", "champion", "user:b")
            .await
            .unwrap();
        let moves: Vec<_> = store
            .alias_history("m")
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.from, m.to, m.moved_by))
            .collect();
        assert_eq!(
            moves,
            vec![
                (None, Some(1), "user:a".to_owned()),
                (Some(1), Some(2), "run:r/t".to_owned()),
                (Some(2), None, "user:b".to_owned()),
            ]
        );
    }
}
