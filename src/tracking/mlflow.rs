//! The MLflow tracking backend: the same operations over MLflow's REST API
//! (`/api/2.0/mlflow/...`; ids are strings, times epoch milliseconds) and its artifact proxy
//! (`/api/2.0/mlflow-artifacts/artifacts/...`). Every call goes through the shared retry
//! policy and is counted (`calls`), so tests can hold the client to a budget.
//!
//! What MLflow has no field for is kept in tags under `sluice.`: a tracking run's lineage
//! (`sluice.workflow_id`, `sluice.inputs`, …) and files (`sluice.file/<name>`), a version's
//! files (`sluice.files`, `sluice.source`) and each alias move (a registered-model tag
//! `sluice.alias_move.<time-ordered id>`). Those tags are read back into the interface's
//! fields and left out of `tags`; a version's other tags (a gate's `sluice.gate`) stay in them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{
    AliasMove, ExperimentRecord, ExperimentSummary, InputFile, Lineage, LogBatch, MetricPoint,
    ModelVersionRecord, NewTrackingRun, RegisteredModelRecord, Result, RunPage, RunQuery,
    SourceFile, TrackedFile, TrackingError, TrackingRunDetail, TrackingRunRecord, TrackingStatus,
    VersionRequest,
};
use crate::retry::{Failure, Jitter, RetryError, RetryPolicy, SystemClock};

/// MLflow's `log-batch` limits: per call at most 1,000 metrics, 100 params, 100 tags, and
/// 1,000 entries in all.
const BATCH_METRICS: usize = 1_000;
const BATCH_PARAMS: usize = 100;
const BATCH_TAGS: usize = 100;
const BATCH_TOTAL: usize = 1_000;

/// Results per page of a search.
const PAGE: u32 = 1_000;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How a failed call is repeated: lost connections, 429 and 5xx.
const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    first_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(5),
    max_retry_after: Duration::from_secs(30),
    jitter: Jitter::Equal,
};

const TAG_PREFIX: &str = "sluice.";
const FILE_TAG: &str = "sluice.file/";
const MOVE_TAG: &str = "sluice.alias_move.";
/// A version's tags that hold its fields (its files and where they are); other `sluice.` tags,
/// like a gate's result, are the version's own.
const INTERNAL_VERSION_TAGS: &[&str] = &["sluice.files", "sluice.source"];
const REGISTRY_FOLDER: &str = "sluice-registry";

/// An MLflow server's answer that is not a success.
#[derive(Debug)]
struct CallError {
    code: String,
    message: String,
}

impl CallError {
    fn is(&self, code: &str) -> bool {
        self.code == code
    }
}

/// What a request sends.
enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

/// A client of one MLflow server.
pub struct Mlflow {
    http: reqwest::Client,
    uri: String,
    token: Option<String>,
    calls: AtomicU64,
    /// Experiment names already resolved: a track task in a known experiment costs no lookup.
    experiments: Mutex<HashMap<String, ExperimentRecord>>,
    /// Each run's folder behind the artifact proxy (`<experiment>/<run>/artifacts`).
    artifact_roots: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Mlflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Mlflow")
            .field("uri", &self.uri)
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// A request error with its causes ("connection refused" is usually a cause).
fn reason(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn from_ms(value: &Value) -> Option<DateTime<Utc>> {
    let ms = match value {
        Value::String(s) => s.parse().ok()?,
        other => other.as_i64()?,
    };
    DateTime::from_timestamp_millis(ms)
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
}

fn pairs(value: &Value) -> BTreeMap<String, String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| (text(item, "key"), text(item, "value")))
                .collect()
        })
        .unwrap_or_default()
}

fn key_values(pairs: &[(String, String)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect()
}

fn point(value: &Value) -> MetricPoint {
    MetricPoint {
        key: text(value, "key"),
        value: value["value"].as_f64().unwrap_or(f64::NAN),
        step: number(&value["step"]).unwrap_or(0),
        timestamp_ms: number(&value["timestamp"]).unwrap_or(0),
    }
}

/// `sluice-registry/<model>/<digest of the files>`: equal sources share a folder.
fn source_folder(model: &str, files: &[SourceFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.name.as_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&file.bytes));
    }
    let digest = hex::encode(hasher.finalize());
    format!("{REGISTRY_FOLDER}/{model}/{}", &digest[..16])
}

impl Mlflow {
    /// A client of the server at `uri` (`http://127.0.0.1:5000`), sending `token` as a
    /// bearer token when given.
    pub fn new(http: reqwest::Client, uri: &str, token: Option<String>) -> Mlflow {
        Mlflow {
            http,
            uri: uri.trim_end_matches('/').to_owned(),
            token,
            calls: AtomicU64::new(0),
            experiments: Mutex::default(),
            artifact_roots: Mutex::default(),
        }
    }

    /// Requests sent to the server so far, retries included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn fail(&self, call: &str, error: CallError) -> TrackingError {
        TrackingError::Mlflow {
            uri: self.uri.clone(),
            call: call.to_owned(),
            message: error.message,
        }
    }

    /// One request with the retry policy; the body of a success.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Body,
    ) -> std::result::Result<Vec<u8>, CallError> {
        let never = CancellationToken::new();
        let body = &body;
        let attempt = |_| {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .timeout(REQUEST_TIMEOUT);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            request = match body {
                Body::None => request,
                Body::Json(value) => request.json(value),
                Body::Bytes(bytes) => request.body(bytes.clone()),
            };
            self.calls.fetch_add(1, Ordering::Relaxed);
            async move {
                let response = request.send().await.map_err(|error| {
                    let failure = Failure::from_request_error(&error, ());
                    failure.map(|()| CallError {
                        code: String::new(),
                        message: reason(&error),
                    })
                })?;
                let status = response.status();
                let retry_after = crate::retry::RetryAfter::from_headers(response.headers());
                let bytes = response.bytes().await.map_err(|error| {
                    Failure::transient(CallError {
                        code: String::new(),
                        message: error.to_string(),
                    })
                })?;
                if status.is_success() {
                    return Ok(bytes.to_vec());
                }
                let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let code = text(&parsed, "error_code");
                let message = match parsed["message"].as_str() {
                    Some(message) => format!("{status} {code}: {message}"),
                    None => format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    ),
                };
                Err(Failure::from_status(
                    status,
                    retry_after,
                    CallError { code, message },
                ))
            }
        };
        match POLICY.run(&SystemClock, &never, attempt, |_| {}).await {
            Ok(done) => Ok(done.value),
            Err(RetryError::Refused { error, .. } | RetryError::Exhausted { error, .. }) => {
                Err(error)
            }
            Err(RetryError::Cancelled) => Err(CallError {
                code: String::new(),
                message: "the call was cancelled".to_owned(),
            }),
            Err(RetryError::Interrupted(never)) => match never {},
        }
    }

    fn url(&self, path: &str) -> std::result::Result<reqwest::Url, CallError> {
        reqwest::Url::parse(&format!("{}/api/2.0/mlflow/{path}", self.uri)).map_err(|e| CallError {
            code: String::new(),
            message: format!("`{}` is not a usable MLflow URI ({e})", self.uri),
        })
    }

    /// A REST call; `query` goes in the URL, `body` as JSON.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> std::result::Result<Value, CallError> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let body = body.map_or(Body::None, Body::Json);
        let bytes = self.send(method, url, body).await?;
        if bytes.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError {
            code: String::new(),
            message: format!("the answer is not JSON ({e})"),
        })
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> std::result::Result<Value, CallError> {
        self.call(Method::GET, path, query, None).await
    }

    async fn post(&self, path: &str, body: Value) -> std::result::Result<Value, CallError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// The artifact proxy's URL of `folder/name`.
    fn artifact_url(&self, folder: &str, name: &str) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&format!("{}/", self.uri)).map_err(|e| {
            TrackingError::Invalid(format!("`{}` is not a usable MLflow URI ({e})", self.uri))
        })?;
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                TrackingError::Invalid(format!("`{}` cannot hold a path", self.uri))
            })?;
            segments.pop_if_empty();
            segments.extend(["api", "2.0", "mlflow-artifacts", "artifacts"]);
            segments.extend(folder.split('/').filter(|s| !s.is_empty()));
            segments.extend(name.split('/').filter(|s| !s.is_empty()));
        }
        Ok(url)
    }

    pub(super) async fn experiment(&self, name: &str) -> Result<ExperimentRecord> {
        if let Some(known) = self.lock_experiments().get(name) {
            return Ok(known.clone());
        }
        let found = match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(found) => found,
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => {
                match self.post("experiments/create", json!({"name": name})).await {
                    Ok(created) => json!({"experiment": {
                        "experiment_id": created["experiment_id"], "name": name}}),
                    // Someone else created it first.
                    Err(e) if e.is("RESOURCE_ALREADY_EXISTS") => self
                        .get("experiments/get-by-name", &[("experiment_name", name)])
                        .await
                        .map_err(|e| self.fail("experiments/get-by-name", e))?,
                    Err(e) => return Err(self.fail("experiments/create", e)),
                }
            }
            Err(e) => return Err(self.fail("experiments/get-by-name", e)),
        };
        let record = ExperimentRecord {
            id: text(&found["experiment"], "experiment_id"),
            name: name.to_owned(),
        };
        self.lock_experiments()
            .insert(name.to_owned(), record.clone());
        Ok(record)
    }

    fn lock_experiments(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExperimentRecord>> {
        self.experiments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_roots(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.artifact_roots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn experiment_by_id(&self, id: &str) -> Result<Option<ExperimentRecord>> {
        match self.get("experiments/get", &[("experiment_id", id)]).await {
            Ok(found) => Ok(Some(ExperimentRecord {
                id: text(&found["experiment"], "experiment_id"),
                name: text(&found["experiment"], "name"),
            })),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") || e.is("INVALID_PARAMETER_VALUE") => {
                Ok(None)
            }
            Err(e) => Err(self.fail("experiments/get", e)),
        }
    }

    pub(super) async fn experiments(&self) -> Result<Vec<ExperimentRecord>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"max_results": PAGE, "view_type": "ACTIVE_ONLY"});
            if let Some(token) = &token {
                body["page_token"] = json!(token);
            }
            let page = self
                .post("experiments/search", body)
                .await
                .map_err(|e| self.fail("experiments/search", e))?;
            for e in page["experiments"].as_array().into_iter().flatten() {
                all.push(ExperimentRecord {
                    id: text(e, "experiment_id"),
                    name: text(e, "name"),
                });
            }
            match page["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    pub(super) async fn start_run(&self, new: &NewTrackingRun) -> Result<TrackingRunRecord> {
        let lineage = &new.lineage;
        let mut tags: Vec<(String, String)> = vec![("mlflow.runName".into(), new.name.clone())];
        let fields = [
            ("workflow_id", lineage.workflow_id.clone()),
            ("version_hash", lineage.version_hash.clone()),
            ("run_id", lineage.run_id.clone()),
            ("task_id", lineage.task_id.clone()),
            ("try_number", lineage.try_number.map(|n| n.to_string())),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                tags.push((format!("{TAG_PREFIX}{key}"), value));
            }
        }
        let inputs = serde_json::to_string(&lineage.inputs)
            .map_err(|e| TrackingError::Invalid(format!("the inputs cannot be written: {e}")))?;
        tags.push((format!("{TAG_PREFIX}inputs"), inputs));
        let created = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": new.experiment_id,
                    "run_name": new.name,
                    "start_time": ms(new.started_at),
                    "tags": key_values(&tags),
                }),
            )
            .await
            .map_err(|e| self.fail("runs/create", e))?;
        let run = self.run_from(&created["run"]);
        Ok(run.run)
    }

    /// A run from MLflow's JSON, with Sluice's tags read back into their fields.
    fn run_from(&self, run: &Value) -> TrackingRunDetail {
        let info = &run["info"];
        let id = text(info, "run_id");
        if let Some(root) = info["artifact_uri"]
            .as_str()
            .and_then(|uri| uri.strip_prefix("mlflow-artifacts:"))
        {
            self.lock_roots()
                .insert(id.clone(), root.trim_start_matches('/').to_owned());
        }
        let all_tags = pairs(&run["data"]["tags"]);
        let sluice = |key: &str| all_tags.get(&format!("{TAG_PREFIX}{key}")).cloned();
        let lineage = Lineage {
            workflow_id: sluice("workflow_id"),
            version_hash: sluice("version_hash"),
            run_id: sluice("run_id"),
            task_id: sluice("task_id"),
            try_number: sluice("try_number").and_then(|n| n.parse().ok()),
            inputs: sluice("inputs")
                .and_then(|text| serde_json::from_str::<Vec<InputFile>>(&text).ok())
                .unwrap_or_default(),
        };
        let mut files = Vec::new();
        let mut tags = BTreeMap::new();
        for (key, value) in &all_tags {
            if let Some(name) = key.strip_prefix(FILE_TAG) {
                let (sha256, size) = value.split_once(' ').unwrap_or((value, "0"));
                files.push(TrackedFile {
                    name: name.to_owned(),
                    sha256: sha256.to_owned(),
                    size: size.parse().unwrap_or(0),
                });
            } else if !key.starts_with(TAG_PREFIX) && !key.starts_with("mlflow.") {
                tags.insert(key.clone(), value.clone());
            }
        }
        let metrics = run["data"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(point)
            .map(|p| (p.key.clone(), p))
            .collect();
        TrackingRunDetail {
            run: TrackingRunRecord {
                id,
                experiment_id: text(info, "experiment_id"),
                name: text(info, "run_name"),
                status: TrackingStatus::parse(&text(info, "status"))
                    .unwrap_or(TrackingStatus::Running),
                lineage,
                started_at: from_ms(&info["start_time"]).unwrap_or_default(),
                ended_at: from_ms(&info["end_time"]),
            },
            params: pairs(&run["data"]["params"]),
            tags,
            metrics,
            files,
        }
    }

    /// Logs a batch in as few calls as MLflow's limits allow: each call is filled with
    /// params and tags first, then metrics up to the totals.
    pub(super) async fn log_batch(&self, run_id: &str, batch: &LogBatch) -> Result<()> {
        let mut params = batch.params.as_slice();
        let mut tags = batch.tags.as_slice();
        let mut metrics = batch.metrics.as_slice();
        while !(params.is_empty() && tags.is_empty() && metrics.is_empty()) {
            let (p, rest) = params.split_at(params.len().min(BATCH_PARAMS));
            params = rest;
            let (t, rest) = tags.split_at(tags.len().min(BATCH_TAGS));
            tags = rest;
            let room = (BATCH_TOTAL - p.len() - t.len()).min(BATCH_METRICS);
            let (m, rest) = metrics.split_at(metrics.len().min(room));
            metrics = rest;
            let metrics_json: Vec<Value> = m
                .iter()
                .map(|point| {
                    json!({"key": point.key, "value": point.value,
                           "timestamp": point.timestamp_ms, "step": point.step})
                })
                .collect();
            self.post(
                "runs/log-batch",
                json!({"run_id": run_id, "params": key_values(p),
                       "tags": key_values(t), "metrics": metrics_json}),
            )
            .await
            .map_err(|e| self.fail("runs/log-batch", e))?;
        }
        Ok(())
    }

    /// The run's folder behind the artifact proxy.
    async fn artifact_root(&self, run_id: &str) -> Result<String> {
        if let Some(root) = self.lock_roots().get(run_id) {
            return Ok(root.clone());
        }
        self.run(run_id)
            .await?
            .ok_or_else(|| TrackingError::UnknownRun(run_id.to_owned()))?;
        self.lock_roots().get(run_id).cloned().ok_or_else(|| {
            TrackingError::Invalid(format!(
                "the MLflow server at {} does not proxy artifacts (its runs' artifact URIs are \
                 not `mlflow-artifacts:`); start it with --serve-artifacts",
                self.uri
            ))
        })
    }

    async fn upload(&self, folder: &str, file: &SourceFile) -> Result<()> {
        let url = self.artifact_url(folder, &file.name)?;
        self.send(Method::PUT, url, Body::Bytes(file.bytes.clone()))
            .await
            .map_err(|e| self.fail("mlflow-artifacts upload", e))?;
        Ok(())
    }

    pub(super) async fn log_file(&self, run_id: &str, file: SourceFile) -> Result<TrackedFile> {
        let root = self.artifact_root(run_id).await?;
        self.upload(&root, &file).await?;
        let tracked = TrackedFile {
            sha256: hex::encode(Sha256::digest(&file.bytes)),
            size: file.bytes.len() as u64,
            name: file.name,
        };
        self.post(
            "runs/set-tag",
            json!({"run_id": run_id, "key": format!("{FILE_TAG}{}", tracked.name),
                   "value": format!("{} {}", tracked.sha256, tracked.size)}),
        )
        .await
        .map_err(|e| self.fail("runs/set-tag", e))?;
        Ok(tracked)
    }

    pub(super) async fn end_run(&self, run_id: &str, status: TrackingStatus) -> Result<()> {
        self.post(
            "runs/update",
            json!({"run_id": run_id, "status": status.as_str(), "end_time": ms(Utc::now())}),
        )
        .await
        .map_err(|e| self.fail("runs/update", e))?;
        Ok(())
    }

    pub(super) async fn run(&self, run_id: &str) -> Result<Option<TrackingRunDetail>> {
        match self.get("runs/get", &[("run_id", run_id)]).await {
            Ok(found) => Ok(Some(self.run_from(&found["run"]))),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(self.fail("runs/get", e)),
        }
    }

    /// The experiments, each with its latest run's start (one `runs/search` of one run per
    /// experiment); MLflow has no cheap count of an experiment's runs.
    pub(super) async fn experiment_summaries(&self) -> Result<Vec<ExperimentSummary>> {
        let mut summaries = Vec::new();
        for experiment in self.experiments().await? {
            let latest = self
                .search_runs(
                    &experiment.id,
                    &RunQuery {
                        max_results: 1,
                        ..RunQuery::default()
                    },
                )
                .await?;
            summaries.push(ExperimentSummary {
                last_run_at: latest.runs.first().map(|r| r.run.started_at),
                runs: None,
                experiment,
            });
        }
        Ok(summaries)
    }

    /// `runs/search` with the query's filter, order and page written in MLflow's syntax.
    pub(super) async fn search_runs(
        &self,
        experiment_id: &str,
        query: &RunQuery,
    ) -> Result<RunPage> {
        let mut order_by = Vec::new();
        if let Some(order) = &query.order {
            order_by.push(super::query::order_to_mlflow(order));
        }
        // Ties (and the default) go to the newest run, as on the built-in backend.
        order_by.push("attributes.start_time DESC".to_owned());
        let mut body = json!({"experiment_ids": [experiment_id],
                              "max_results": query.max_results, "order_by": order_by});
        if let Some(filter) = super::query::to_mlflow(&query.conditions) {
            body["filter"] = json!(filter);
        }
        if let Some(token) = query.page_token.as_deref().filter(|t| !t.is_empty()) {
            body["page_token"] = json!(token);
        }
        let page = self
            .post("runs/search", body)
            .await
            .map_err(|e| self.fail("runs/search", e))?;
        Ok(RunPage {
            runs: page["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|run| self.run_from(run))
                .collect(),
            next_page_token: page["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            total: None,
        })
    }

    /// A file kept with a run, from the artifact proxy.
    pub(super) async fn run_file(&self, run_id: &str, file: &TrackedFile) -> Result<Vec<u8>> {
        let root = self.artifact_root(run_id).await?;
        let url = self.artifact_url(&root, &file.name)?;
        self.send(Method::GET, url, Body::None)
            .await
            .map_err(|e| self.fail("mlflow-artifacts download", e))
    }

    pub(super) async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        let mut points = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if let Some(token) = &token {
                query.push(("page_token", token));
            }
            let page = self
                .get("metrics/get-history", &query)
                .await
                .map_err(|e| self.fail("metrics/get-history", e))?;
            points.extend(page["metrics"].as_array().into_iter().flatten().map(point));
            match page["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        points.sort_by_key(|p| (p.step, p.timestamp_ms));
        Ok(points)
    }

    pub(super) async fn create_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModelRecord> {
        match self
            .post(
                "registered-models/create",
                json!({"name": name, "description": description}),
            )
            .await
        {
            Ok(created) => Ok(model_from(&created["registered_model"])),
            Err(e) if e.is("RESOURCE_ALREADY_EXISTS") => self
                .get_model(name)
                .await?
                .ok_or_else(|| TrackingError::Invalid(format!("model `{name}` vanished"))),
            Err(e) => Err(self.fail("registered-models/create", e)),
        }
    }

    async fn raw_model(&self, name: &str) -> Result<Option<Value>> {
        match self.get("registered-models/get", &[("name", name)]).await {
            Ok(found) => Ok(Some(found["registered_model"].clone())),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(self.fail("registered-models/get", e)),
        }
    }

    pub(super) async fn get_model(&self, name: &str) -> Result<Option<RegisteredModelRecord>> {
        Ok(self.raw_model(name).await?.as_ref().map(model_from))
    }

    pub(super) async fn models(&self) -> Result<Vec<RegisteredModelRecord>> {
        let mut models = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page_size = PAGE.to_string();
            let mut query = vec![("max_results", page_size.as_str())];
            if let Some(token) = &token {
                query.push(("page_token", token));
            }
            let page = self
                .get("registered-models/search", &query)
                .await
                .map_err(|e| self.fail("registered-models/search", e))?;
            models.extend(
                page["registered_models"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(model_from),
            );
            match page["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    /// Uploads the source's files beside the tracking run (MLflow keeps a version's files
    /// with a run) and registers the version with their digests in its tags.
    pub(super) async fn create_model_version(
        &self,
        request: VersionRequest,
    ) -> Result<ModelVersionRecord> {
        let Some(run_id) = request.tracking_run_id.clone() else {
            return Err(TrackingError::Invalid(
                "on MLflow a model version needs the tracking run that produced it".to_owned(),
            ));
        };
        self.create_model(&request.model, "").await?;
        let root = self.artifact_root(&run_id).await?;
        let folder = source_folder(&request.model, &request.files);
        let mut files = Vec::with_capacity(request.files.len());
        for file in &request.files {
            self.upload(&format!("{root}/{folder}"), file).await?;
            files.push(TrackedFile {
                name: file.name.clone(),
                sha256: hex::encode(Sha256::digest(&file.bytes)),
                size: file.bytes.len() as u64,
            });
        }
        let files_json = serde_json::to_string(&files)
            .map_err(|e| TrackingError::Invalid(format!("the file list cannot be written: {e}")))?;
        let mut tags: Vec<(String, String)> = request.tags.into_iter().collect();
        tags.push((format!("{TAG_PREFIX}files"), files_json));
        tags.push((format!("{TAG_PREFIX}source"), format!("{root}/{folder}")));
        let created = self
            .post(
                "model-versions/create",
                json!({"name": request.model, "source": format!("runs:/{run_id}/{folder}"),
                       "run_id": run_id, "description": request.description,
                       "tags": key_values(&tags)}),
            )
            .await
            .map_err(|e| self.fail("model-versions/create", e))?;
        Ok(version_from(&created["model_version"]))
    }

    async fn raw_version(&self, model: &str, version: u32) -> Result<Option<Value>> {
        let number = version.to_string();
        match self
            .get(
                "model-versions/get",
                &[("name", model), ("version", number.as_str())],
            )
            .await
        {
            Ok(found) => Ok(Some(found["model_version"].clone())),
            Err(e) if e.is("RESOURCE_DOES_NOT_EXIST") || e.is("INVALID_PARAMETER_VALUE") => {
                Ok(None)
            }
            Err(e) => Err(self.fail("model-versions/get", e)),
        }
    }

    pub(super) async fn model_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ModelVersionRecord>> {
        Ok(self
            .raw_version(model, version)
            .await?
            .as_ref()
            .map(version_from))
    }

    pub(super) async fn model_versions(&self, model: &str) -> Result<Vec<ModelVersionRecord>> {
        if model.contains('\'') {
            return Err(TrackingError::Invalid(format!(
                "model name `{model}` has a quote, which MLflow's search cannot take"
            )));
        }
        let filter = format!("name='{model}'");
        let mut versions = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page_size = PAGE.to_string();
            let mut query = vec![
                ("filter", filter.as_str()),
                ("max_results", page_size.as_str()),
            ];
            if let Some(token) = &token {
                query.push(("page_token", token));
            }
            let page = self
                .get("model-versions/search", &query)
                .await
                .map_err(|e| self.fail("model-versions/search", e))?;
            versions.extend(
                page["model_versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(version_from),
            );
            match page["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        // The search leaves aliases out: read them from each version.
        let mut full = Vec::with_capacity(versions.len());
        for v in versions {
            match self.model_version(model, v.version).await? {
                Some(found) => full.push(found),
                None => full.push(v),
            }
        }
        full.sort_by_key(|v| std::cmp::Reverse(v.version));
        Ok(full)
    }

    pub(super) async fn set_version_tag(
        &self,
        model: &str,
        version: u32,
        key: &str,
        value: &str,
    ) -> Result<()> {
        // MLflow answers an unknown version with an error code that does not say which.
        if self.raw_version(model, version).await?.is_none() {
            return Err(TrackingError::UnknownVersion {
                model: model.to_owned(),
                version,
            });
        }
        self.post(
            "model-versions/set-tag",
            json!({"name": model, "version": version.to_string(), "key": key, "value": value}),
        )
        .await
        .map_err(|e| self.fail("model-versions/set-tag", e))?;
        Ok(())
    }

    pub(super) async fn version_file(
        &self,
        model: &str,
        version: u32,
        path: &str,
    ) -> Result<Vec<u8>> {
        let raw = self.raw_version(model, version).await?.ok_or_else(|| {
            TrackingError::UnknownVersion {
                model: model.to_owned(),
                version,
            }
        })?;
        let record = version_from(&raw);
        let source = pairs(&raw["tags"])
            .remove(&format!("{TAG_PREFIX}source"))
            .unwrap_or_default();
        if source.is_empty() || !record.files.iter().any(|f| f.name == path) {
            return Err(TrackingError::UnknownFile {
                model: model.to_owned(),
                version,
                path: path.to_owned(),
            });
        }
        let url = self.artifact_url(&source, path)?;
        self.send(Method::GET, url, Body::None)
            .await
            .map_err(|e| self.fail("mlflow-artifacts download", e))
    }

    pub(super) async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: u32,
        moved_by: &str,
    ) -> Result<AliasMove> {
        if self.raw_version(model, version).await?.is_none() {
            return Err(TrackingError::UnknownVersion {
                model: model.to_owned(),
                version,
            });
        }
        let from = self.get_alias(model, alias).await?.map(|v| v.version);
        self.post(
            "registered-models/alias",
            json!({"name": model, "alias": alias, "version": version.to_string()}),
        )
        .await
        .map_err(|e| self.fail("registered-models/alias", e))?;
        let moved = AliasMove {
            model: model.to_owned(),
            alias: alias.to_owned(),
            from,
            to: Some(version),
            moved_at: Utc::now(),
            moved_by: moved_by.to_owned(),
        };
        self.record_move(&moved).await?;
        Ok(moved)
    }

    async fn record_move(&self, moved: &AliasMove) -> Result<()> {
        let value = json!({"alias": moved.alias, "from": moved.from, "to": moved.to,
                           "moved_at": ms(moved.moved_at), "moved_by": moved.moved_by});
        self.post(
            "registered-models/set-tag",
            json!({"name": moved.model,
                   "key": format!("{MOVE_TAG}{}", uuid::Uuid::now_v7().simple()),
                   "value": value.to_string()}),
        )
        .await
        .map_err(|e| self.fail("registered-models/set-tag", e))?;
        Ok(())
    }

    /// A missing alias is 400 `INVALID_PARAMETER_VALUE` on MLflow, and a missing model 404:
    /// both mean "not set".
    pub(super) async fn get_alias(
        &self,
        model: &str,
        alias: &str,
    ) -> Result<Option<ModelVersionRecord>> {
        match self
            .get(
                "registered-models/alias",
                &[("name", model), ("alias", alias)],
            )
            .await
        {
            Ok(found) => Ok(Some(version_from(&found["model_version"]))),
            Err(e) if e.is("INVALID_PARAMETER_VALUE") || e.is("RESOURCE_DOES_NOT_EXIST") => {
                Ok(None)
            }
            Err(e) => Err(self.fail("registered-models/alias", e)),
        }
    }

    pub(super) async fn delete_alias(
        &self,
        model: &str,
        alias: &str,
        moved_by: &str,
    ) -> Result<Option<AliasMove>> {
        let Some(from) = self.get_alias(model, alias).await? else {
            return Ok(None);
        };
        self.call(
            Method::DELETE,
            "registered-models/alias",
            &[("name", model), ("alias", alias)],
            Some(json!({"name": model, "alias": alias})),
        )
        .await
        .map_err(|e| self.fail("registered-models/alias", e))?;
        let moved = AliasMove {
            model: model.to_owned(),
            alias: alias.to_owned(),
            from: Some(from.version),
            to: None,
            moved_at: Utc::now(),
            moved_by: moved_by.to_owned(),
        };
        self.record_move(&moved).await?;
        Ok(Some(moved))
    }

    pub(super) async fn alias_history(&self, model: &str) -> Result<Vec<AliasMove>> {
        let Some(raw) = self.raw_model(model).await? else {
            return Ok(Vec::new());
        };
        // Tag keys end in a time-ordered id: their order is the order of the moves.
        let moves = pairs(&raw["tags"])
            .into_iter()
            .filter(|(key, _)| key.starts_with(MOVE_TAG))
            .filter_map(|(_, value)| serde_json::from_str::<Value>(&value).ok())
            .map(|m| AliasMove {
                model: model.to_owned(),
                alias: text(&m, "alias"),
                from: m["from"].as_u64().map(|v| v as u32),
                to: m["to"].as_u64().map(|v| v as u32),
                moved_at: from_ms(&m["moved_at"]).unwrap_or_default(),
                moved_by: text(&m, "moved_by"),
            })
            .collect();
        Ok(moves)
    }
}

fn model_from(value: &Value) -> RegisteredModelRecord {
    RegisteredModelRecord {
        name: text(value, "name"),
        description: text(value, "description"),
    }
}

fn version_from(value: &Value) -> ModelVersionRecord {
    let all_tags = pairs(&value["tags"]);
    let files = all_tags
        .get(&format!("{TAG_PREFIX}files"))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let mut aliases: Vec<String> = value["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    aliases.sort();
    let run_id = text(value, "run_id");
    ModelVersionRecord {
        model: text(value, "name"),
        version: number(&value["version"]).unwrap_or(0).max(0) as u32,
        tracking_run_id: (!run_id.is_empty()).then_some(run_id),
        description: text(value, "description"),
        tags: all_tags
            .into_iter()
            .filter(|(key, _)| {
                !INTERNAL_VERSION_TAGS.contains(&key.as_str()) && !key.starts_with("mlflow.")
            })
            .collect(),
        files,
        aliases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sources_share_a_folder_and_any_change_moves_it() {
        let file = |name: &str, bytes: &[u8]| SourceFile {
            name: name.into(),
            bytes: bytes.to_vec(),
        };
        let a = source_folder("m", &[file("p.yaml", b"x")]);
        assert_eq!(a, source_folder("m", &[file("p.yaml", b"x")]));
        assert_ne!(a, source_folder("m", &[file("p.yaml", b"y")]));
        assert_ne!(a, source_folder("m", &[file("q.yaml", b"x")]));
        assert!(a.starts_with("sluice-registry/m/"));
    }

    #[test]
    fn versions_read_back_sluice_tags_into_fields() {
        let record = version_from(&json!({
            "name": "m", "version": "3", "run_id": "r",
            "tags": [{"key": "team", "value": "a"},
                     {"key": "sluice.files", "value": "[{\"name\":\"p\",\"sha256\":\"00\",\"size\":1}]"}],
            "aliases": ["prod", "champion"]
        }));
        assert_eq!(record.version, 3);
        assert_eq!(record.files[0].name, "p");
        assert_eq!(record.tags.len(), 1, "internal tags stay out of `tags`");
        assert_eq!(record.aliases, vec!["champion", "prod"]);
    }
}
