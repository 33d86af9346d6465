//! The JSON API under `/api/v1`: workflows (list, detail, pause), runs (trigger, list, detail,
//! cancel, clear a task, logs), backfills and import errors. Request and response types live
//! here, separate from the store's records, so the wire format only changes on purpose.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Error, ErrorBody, Json, Path, Query, Result};
use crate::catalog::launch::{LaunchError, RunRequest, launch};
use crate::catalog::live::Entry;
use crate::dag::Workflow;
use crate::dag::intervals::{backfill_intervals, manual_interval};
use crate::lifecycle::{RunState, TaskState};
use crate::params::{ParamDecl, ParamProblem};
use crate::store::{
    LogRecord, MarkedState, RunFilter, RunRecord, Store, StoreEvent, TaskInstanceRecord,
};
use crate::web::artifacts;
use crate::web::control::{self, ClearScope, ControlError, TaskAction};

/// Runs per page when the caller does not say, and the most a caller may ask for.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The page size a list request asked for (`limit`), checked: 50 by default, 1 to 500.
pub(super) fn page_limit(limit: Option<u32>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_PAGE as usize),
        Some(n @ 1..=MAX_PAGE) => Ok(n as usize),
        Some(n) => Err(Error::BadRequest(format!(
            "limit {n} is out of range; use 1 to {MAX_PAGE}"
        ))),
    }
}
/// The most runs one backfill creates; a longer range is refused rather than cut short.
const MAX_BACKFILL_RUNS: usize = 1000;
/// Log lines read per query while streaming.
const LOG_BATCH: usize = 500;
/// How often a followed log is read again when no event arrived: lines written by workers in
/// other processes do not reach this process's store events.
const LOG_POLL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Workflows

/// A workflow in the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowSummary {
    pub id: String,
    pub description: Option<String>,
    /// The crontab expression, when the workflow is scheduled.
    pub schedule: Option<String>,
    pub timezone: String,
    pub paused: bool,
    pub tags: Vec<String>,
    /// The file the workflow was loaded from.
    pub path: String,
    /// The file no longer validates; this is its last good version.
    pub stale: bool,
    pub task_count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
}

/// One task of the graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphTask {
    pub id: String,
    pub operator: String,
    /// Upstream task ids, as written.
    pub needs: Vec<String>,
    /// Direct downstream task ids.
    pub downstream: Vec<String>,
    pub trigger_rule: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowGraph {
    /// Tasks in file order.
    pub tasks: Vec<GraphTask>,
    /// Tasks run after a run fails.
    pub on_failure: Vec<String>,
}

/// A workflow with its graph and the JSON Schema of its params.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowDetail {
    #[serde(flatten)]
    pub workflow: WorkflowSummary,
    pub graph: WorkflowGraph,
    /// A JSON Schema (draft 2020-12) that the `params` of a trigger request must satisfy.
    #[schema(value_type = Object)]
    pub params_schema: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PauseState {
    pub workflow: String,
    pub paused: bool,
}

fn summary(entry: &Entry, paused: &HashSet<String>) -> WorkflowSummary {
    let w = &entry.workflow;
    WorkflowSummary {
        id: w.id.clone(),
        description: w.description.clone(),
        schedule: w.schedule.as_ref().map(|s| s.expression.clone()),
        timezone: w.timezone.name().to_owned(),
        paused: paused.contains(&w.id),
        tags: w.tags.clone(),
        path: entry.path.display().to_string(),
        stale: entry.stale,
        task_count: w.tasks.len(),
    }
}

fn graph(w: &Workflow) -> WorkflowGraph {
    let tasks = w
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| GraphTask {
            id: t.id.clone(),
            operator: t.operator.clone(),
            needs: t.needs.clone(),
            downstream: w
                .downstream(i)
                .filter_map(|d| w.tasks.get(d).map(|t| t.id.clone()))
                .collect(),
            trigger_rule: t.trigger_rule.as_str().to_owned(),
        })
        .collect();
    WorkflowGraph {
        tasks,
        on_failure: w.on_failure.iter().map(|t| t.id.clone()).collect(),
    }
}

/// The params declarations as a JSON Schema: the declarations already use JSON Schema's
/// words (`type`, `default`, `enum`, `minimum`, `maximum`, `description`).
fn params_schema(params: &indexmap::IndexMap<String, ParamDecl>) -> Value {
    let properties: Map<String, Value> = params
        .iter()
        .map(|(name, decl)| {
            (
                name.clone(),
                serde_json::to_value(decl).unwrap_or(Value::Null),
            )
        })
        .collect();
    let required: Vec<&String> = params
        .iter()
        .filter(|(_, d)| d.default.is_none())
        .map(|(n, _)| n)
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn find_workflow(state: &AppState, id: &str) -> Result<Entry> {
    state
        .catalog
        .get(id)
        .ok_or_else(|| Error::NotFound(format!("there is no workflow `{id}`")))
}

/// Lists the workflows in the catalog.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows",
    responses((status = 200, body = WorkflowList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_workflows(State(state): State<AppState>) -> Result<Json<WorkflowList>> {
    let paused = state.store.paused().await?;
    let snapshot = state.catalog.snapshot();
    let workflows = snapshot
        .workflows
        .values()
        .map(|e| summary(e, &paused))
        .collect();
    Ok(Json(WorkflowList { workflows }))
}

/// One workflow with its task graph and params schema.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = WorkflowDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn get_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDetail>> {
    let entry = find_workflow(&state, &id)?;
    let paused = state.store.paused().await?;
    Ok(Json(WorkflowDetail {
        workflow: summary(&entry, &paused),
        graph: graph(&entry.workflow),
        params_schema: params_schema(&entry.workflow.params),
    }))
}

async fn set_paused(state: &AppState, id: &str, paused: bool) -> Result<Json<PauseState>> {
    find_workflow(state, id)?;
    state.store.set_paused(id, paused).await?;
    info!(workflow = %id, paused, "Workflow pause state changed through the API.");
    Ok(Json(PauseState {
        workflow: id.to_owned(),
        paused,
    }))
}

/// Pauses a workflow: its schedule stops starting runs.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/pause", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = PauseState), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PauseState>> {
    set_paused(&state, &id, true).await
}

/// Unpauses a workflow.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/unpause", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = PauseState), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn unpause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PauseState>> {
    set_paused(&state, &id, false).await
}

// ---------------------------------------------------------------------------------------------
// Triggering and backfills

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Param values; checked against the workflow's declarations, defaults filled in.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerResponse {
    pub run_id: String,
}

fn params_error(problems: Vec<ParamProblem>) -> Error {
    Error::Invalid {
        message: "the run's params are invalid".into(),
        details: problems.iter().map(ToString::to_string).collect(),
    }
}

impl From<LaunchError> for Error {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Params(problems) => params_error(problems),
            LaunchError::Store(e) => Error::Store(e),
        }
    }
}

/// Starts a run with the given params.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/runs", tag = "runs",
    params(("id" = String, Path, description = "Workflow id")),
    request_body = TriggerRequest,
    responses((status = 201, body = TriggerResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(request): Json<TriggerRequest>,
) -> Result<(StatusCode, Json<TriggerResponse>)> {
    let entry = find_workflow(&state, &id)?;
    let interval = manual_interval(&entry.workflow, Utc::now());
    let run_request = RunRequest {
        params: request.params,
        trigger: "api".into(),
        triggered_by: None,
        logical_date: interval.logical_date(),
        data_interval: (interval.start, interval.end),
    };
    let path = entry.path.display().to_string();
    let run_id = launch(&state.store, &entry.workflow, &path, run_request).await?;
    info!(workflow = %id, run_id = %run_id, "Run queued through the API.");
    Ok((StatusCode::CREATED, Json(TriggerResponse { run_id })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// The first day (in the workflow's time zone) whose intervals run.
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    /// The last day, included.
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillResponse {
    pub backfill_id: String,
    /// One run per interval, oldest first.
    pub run_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillCancelResponse {
    pub backfill_id: String,
    /// The runs that were cancelled (those that had not ended).
    pub cancelled: Vec<String>,
}

/// Runs of a backfill carry `triggered_by = "backfill:<id>"`, which is how cancel finds them.
fn backfill_tag(id: &str) -> String {
    format!("backfill:{id}")
}

/// Starts one run per schedule interval whose logical date falls on the given days.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/backfill", tag = "runs",
    params(("id" = String, Path, description = "Workflow id")),
    request_body = BackfillRequest,
    responses((status = 201, body = BackfillResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(request): Json<BackfillRequest>,
) -> Result<(StatusCode, Json<BackfillResponse>)> {
    let entry = find_workflow(&state, &id)?;
    let workflow = &entry.workflow;
    let intervals = backfill_intervals(workflow, request.from, request.to, MAX_BACKFILL_RUNS)
        .map_err(|e| Error::Invalid {
            message: e.to_string(),
            details: Vec::new(),
        })?;
    // Check the params once before creating anything, so a bad request creates no runs.
    crate::params::resolve(&workflow.params, &request.params).map_err(params_error)?;
    let backfill_id = uuid::Uuid::now_v7().to_string();
    let path = entry.path.display().to_string();
    let mut run_ids = Vec::with_capacity(intervals.len());
    for interval in intervals {
        let run_request = RunRequest {
            params: request.params.clone(),
            trigger: "backfill".into(),
            triggered_by: Some(backfill_tag(&backfill_id)),
            logical_date: interval.logical_date(),
            data_interval: (interval.start, interval.end),
        };
        run_ids.push(launch(&state.store, workflow, &path, run_request).await?);
    }
    info!(workflow = %id, backfill_id = %backfill_id, runs = run_ids.len(), "Backfill queued through the API.");
    Ok((
        StatusCode::CREATED,
        Json(BackfillResponse {
            backfill_id,
            run_ids,
        }),
    ))
}

/// Cancels the runs of a backfill that have not ended.
#[utoipa::path(post, path = "/api/v1/backfills/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Backfill id")),
    responses((status = 200, body = BackfillCancelResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn cancel_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BackfillCancelResponse>> {
    let tag = backfill_tag(&id);
    // The prefix query matches longer ids too; keep only this backfill's runs.
    let runs: Vec<RunRecord> = state
        .store
        .runs_by_triggered_by(&tag)
        .await?
        .into_iter()
        .filter(|r| r.triggered_by.as_deref() == Some(tag.as_str()))
        .collect();
    if runs.is_empty() {
        return Err(Error::NotFound(format!("there is no backfill `{id}`")));
    }
    let mut cancelled = Vec::new();
    for run in runs.iter().filter(|r| !r.state.is_final()) {
        if state
            .store
            .cancel_run(&run.id, "the backfill was cancelled through the API")
            .await?
        {
            cancelled.push(run.id.clone());
        }
    }
    info!(backfill_id = %id, cancelled = cancelled.len(), "Backfill cancelled through the API.");
    Ok(Json(BackfillCancelResponse {
        backfill_id: id,
        cancelled,
    }))
}

// ---------------------------------------------------------------------------------------------
// Runs

/// A run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub run_id: String,
    pub workflow: String,
    /// `queued`, `running`, `success`, `failed` or `cancelled`.
    pub state: String,
    /// `manual`, `api`, `schedule`, `backfill`, `workflow` or `github`.
    pub trigger: String,
    pub triggered_by: Option<String>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the run first started; clearing tasks of it later never changes it.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run last started again after tasks of it were cleared; null for a run that
    /// ran once.
    pub rerun_started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// What the trigger recorded: for `github`, the `event`, `action`, `delivery`,
    /// `repository`, `branch`, `tag`, `sha`, `sender` and the commit `status` it reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub trigger_details: Option<Value>,
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            run_id: r.id,
            workflow: r.workflow_id,
            state: r.state.as_str().to_owned(),
            trigger: r.trigger,
            triggered_by: r.triggered_by,
            logical_date: r.logical_date,
            data_interval_start: r.data_interval_start,
            data_interval_end: r.data_interval_end,
            params: r.params,
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
            rerun_started_at: r.rerun_started_at,
            ended_at: r.ended_at,
            trigger_details: r.trigger_details,
        }
    }
}

/// The latest try of one task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub state: String,
    pub try_number: u32,
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Map<String, Value>>,
    pub error: Option<String>,
    /// Sentences about a success that still needs a look (a warn-severity threshold
    /// breached, rows skipped); empty when there are none.
    pub warnings: Vec<String>,
    /// One line of what the try found, or why it was rejected without retries.
    pub summary: Option<String>,
    pub exit_code: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

impl From<TaskInstanceRecord> for TaskView {
    fn from(t: TaskInstanceRecord) -> Self {
        let duration_ms = match (t.started_at, t.ended_at) {
            (Some(s), Some(e)) => Some((e - s).num_milliseconds().max(0)),
            _ => None,
        };
        TaskView {
            state: t.state.as_str().to_owned(),
            try_number: t.try_number,
            outputs: t.outputs,
            error: t.error,
            warnings: t.warnings,
            summary: t.summary,
            exit_code: t.exit_code,
            started_at: t.started_at,
            ended_at: t.ended_at,
            duration_ms,
        }
    }
}

/// A run with the latest try of each of its tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    pub tasks: BTreeMap<String, TaskView>,
    /// For a run started to reproduce a tracking run: the original `run_id` and
    /// `tracking_run_id`, this run's own `reproduced_tracking_run_id`, and the `comparison`
    /// (`original_version`, `reproduced_version`, `same_version`, `inputs` with each file's
    /// `status`: `same`, `changed`, `missing` or `new`, `identical`, `differences`), or the
    /// `problem` that keeps part of it from being compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reproduces: Option<crate::catalog::reproduce::Report>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this state.
    pub state: Option<String>,
    /// Runs per page (default 50, at most 500).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists runs, newest first, one page at a time.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_runs(
    State(state): State<AppState>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<RunList>> {
    let run_state = query
        .state
        .as_deref()
        .map(str::parse::<RunState>)
        .transpose()
        .map_err(|e| {
            Error::BadRequest(format!(
                "{e}; use one of queued, running, success, failed, cancelled"
            ))
        })?;
    let limit = page_limit(query.limit)?;
    let filter = RunFilter {
        workflow: query.workflow,
        state: run_state,
        ..RunFilter::default()
    };
    let page = state
        .store
        .list_runs(&filter, limit, query.cursor.as_deref())
        .await?
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    Ok(Json(RunList {
        runs: page.runs.into_iter().map(RunView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn find_run(store: &Store, id: &str) -> Result<RunRecord> {
    store
        .run(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("there is no run with id `{id}`")))
}

/// The latest try of each task, keyed by task id.
fn latest_tries(tries: Vec<TaskInstanceRecord>) -> BTreeMap<String, TaskInstanceRecord> {
    let mut latest: BTreeMap<String, TaskInstanceRecord> = BTreeMap::new();
    for t in tries {
        let newer = latest
            .get(&t.task_id)
            .is_none_or(|seen| t.try_number >= seen.try_number);
        if newer {
            latest.insert(t.task_id.clone(), t);
        }
    }
    latest
}

/// One run with the latest try of each task.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>> {
    let run = find_run(&state.store, &id).await?;
    let tries = state.store.task_instances(&id).await?;
    let tasks = latest_tries(tries)
        .into_iter()
        .map(|(k, t)| (k, TaskView::from(t)))
        .collect();
    let reproduces =
        crate::catalog::reproduce::report(&state.store, state.tracking.as_deref(), &run).await?;
    Ok(Json(RunDetail {
        run: run.into(),
        tasks,
        reproduces,
    }))
}

/// Cancels a run that has not ended: tasks not started are cancelled, running ones killed.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>> {
    let run = find_run(&state.store, &id).await?;
    if !state
        .store
        .cancel_run(&id, "cancelled through the API")
        .await?
    {
        return Err(Error::Conflict(format!(
            "run `{id}` has already ended ({}); there is nothing to cancel",
            run.state
        )));
    }
    info!(run_id = %id, "Run cancelled through the API.");
    Ok(Json(find_run(&state.store, &id).await?.into()))
}

// ---------------------------------------------------------------------------------------------
// Run control: clear, mark, run again (the same `web::control` calls as the run page's actions)

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Clear the tasks downstream of this one too (default true).
    #[serde(default = "yes")]
    pub downstream: bool,
    /// Clear only the tasks that failed, were cancelled or never ran because of a failure.
    #[serde(default)]
    pub only_failed: bool,
}

fn yes() -> bool {
    true
}

/// A JSON body that may be left out (or empty): then the defaults.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the request body is not what this endpoint takes: {e}"
        ))
    })
}

impl Default for ClearRequest {
    fn default() -> Self {
        ClearRequest {
            downstream: true,
            only_failed: false,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClearResponse {
    pub run_id: String,
    /// The tasks that got a new pending try: the task and, as asked, those downstream of it
    /// that had ended (tasks still waiting to be decided need nothing).
    pub cleared: Vec<String>,
    /// The run had ended and is queued again: it runs again as its workflow's
    /// `max_active_runs` allows (keeping its first `started_at`, with the new start in
    /// `rerun_started_at`) and ends once every task has ended again.
    pub run_requeued: bool,
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => Error::NotFound(m),
            ControlError::Refused(m) => Error::Conflict(m),
            ControlError::Store(e) => Error::Store(e),
        }
    }
}

/// The workflow version a run pinned: what decides which tasks are downstream.
async fn pinned_workflow(store: &Store, run: &RunRecord) -> Result<crate::dag::Workflow> {
    let (path, source) = store
        .workflow_version(&run.version_hash)
        .await?
        .ok_or_else(|| {
            Error::Internal(format!(
                "run `{}` pins workflow version `{}`, which is not stored",
                run.id, run.version_hash
            ))
        })?;
    crate::catalog::compile_source(std::path::Path::new(&path), &source).map_err(|_| {
        Error::Internal(format!(
            "the stored workflow version `{}` of run `{}` no longer compiles",
            run.version_hash, run.id
        ))
    })
}

/// Runs a task again, by default with every task downstream of it that had ended, each with
/// all its retries; an ended run is queued again and ends with the state its tasks then earn.
/// Refused (409) while the task has not ended.
#[utoipa::path(post, path = "/api/v1/runs/{id}/tasks/{task}/clear", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ("task" = String, Path, description = "Task id")),
    request_body(content = Option<ClearRequest>, description = "Which tasks; without a body, the task and everything downstream"),
    responses((status = 200, body = ClearResponse), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn clear_task(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ClearResponse>> {
    let request: ClearRequest = optional_json(&body)?;
    let run = find_run(&state.store, &id).await?;
    let workflow = pinned_workflow(&state.store, &run).await?;
    let scope = ClearScope {
        downstream: request.downstream,
        only_failed: request.only_failed,
    };
    let done = control::apply(
        &state.store,
        &workflow,
        &id,
        &task,
        TaskAction::Clear(scope),
        "the API",
    )
    .await?;
    info!(run_id = %id, task = %task, cleared = done.tasks.len(), run_requeued = done.run_requeued, "Tasks cleared through the API.");
    Ok(Json(ClearResponse {
        run_id: id,
        cleared: done.tasks,
        run_requeued: done.run_requeued,
    }))
}

/// The state a task is marked with.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarkState {
    Success,
    Failed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRequest {
    pub state: MarkState,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkResponse {
    pub run_id: String,
    /// The marked task, then the downstream tasks given a pending try to be decided again by
    /// their trigger rules.
    pub tasks: Vec<String>,
    /// The run had ended and is queued again (tasks downstream are decided again).
    pub run_requeued: bool,
    /// What was done, as a sentence.
    pub message: String,
}

/// Marks a task that has ended success or failed, as Airflow does: it gets a new try in that
/// state (its log says who marked it). Marking success lets what its failure held back run
/// (failed and upstream-failed tasks downstream are decided again); marking failed decides
/// every task downstream that had ended again by its trigger rule (`upstream_failed` under
/// `all_success`). An ended run is queued again when tasks are decided again, and otherwise
/// takes the state its tasks now give it. Refused (409) while the task or a task downstream
/// is still at work, or when the task already has that state.
#[utoipa::path(post, path = "/api/v1/runs/{id}/tasks/{task}/mark", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ("task" = String, Path, description = "Task id")),
    request_body = MarkRequest,
    responses((status = 200, body = MarkResponse), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn mark_task(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
    Json(request): Json<MarkRequest>,
) -> Result<Json<MarkResponse>> {
    let run = find_run(&state.store, &id).await?;
    let workflow = pinned_workflow(&state.store, &run).await?;
    let to = match request.state {
        MarkState::Success => MarkedState::Success,
        MarkState::Failed => MarkedState::Failed,
    };
    let done = control::apply(
        &state.store,
        &workflow,
        &id,
        &task,
        TaskAction::Mark(to),
        "the API",
    )
    .await?;
    info!(run_id = %id, task = %task, state = %to.task_state(), "Task marked through the API.");
    Ok(Json(MarkResponse {
        run_id: id,
        tasks: done.tasks,
        run_requeued: done.run_requeued,
        message: done.message,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// Param values that replace the run's own; the others are the run's.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// Starts a new run of the run's workflow (as it is now) with the run's params, or with some
/// of them replaced.
#[utoipa::path(post, path = "/api/v1/runs/{id}/rerun", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    request_body(content = Option<RerunRequest>, description = "Params to replace; without a body, the same params"),
    responses((status = 201, body = TriggerResponse), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TriggerResponse>)> {
    let request: RerunRequest = optional_json(&body)?;
    let run = find_run(&state.store, &id).await?;
    let entry = find_workflow(&state, &run.workflow_id)?;
    let run_request = RunRequest::again(&entry.workflow, &run, request.params, "api", None);
    let path = entry.path.display().to_string();
    let run_id = launch(&state.store, &entry.workflow, &path, run_request).await?;
    info!(workflow = %run.workflow_id, from = %id, run_id = %run_id, "Run started again through the API.");
    Ok((StatusCode::CREATED, Json(TriggerResponse { run_id })))
}

// ---------------------------------------------------------------------------------------------
// Logs

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Stream new lines as newline-delimited JSON until the task ends.
    #[serde(default)]
    pub follow: bool,
    /// Only lines after this line id (the `id` of the last line you have).
    #[serde(default)]
    pub after: i64,
}

/// One log line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    pub id: i64,
    pub try_number: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
    pub logged_at: DateTime<Utc>,
}

impl From<LogRecord> for LogLine {
    fn from(l: LogRecord) -> Self {
        LogLine {
            id: l.id,
            try_number: l.try_number,
            stream: l.stream,
            line: l.line,
            logged_at: l.logged_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogLines {
    pub lines: Vec<LogLine>,
}

/// Whether no more lines will be written for this task: its latest try ended (and no retry
/// follows), or the run itself ended.
async fn task_ended(store: &Store, run_id: &str, task_id: &str) -> crate::store::Result<bool> {
    if store.run(run_id).await?.is_none_or(|r| r.state.is_final()) {
        return Ok(true);
    }
    let tries = store.task_instances(run_id).await?;
    let latest = tries
        .iter()
        .filter(|t| t.task_id == task_id)
        .max_by_key(|t| t.try_number);
    Ok(latest.is_some_and(|t| t.state.is_final() && t.state != TaskState::UpForRetry))
}

/// The log lines of a task; with `follow=true`, a stream of them that ends with the task.
#[utoipa::path(get, path = "/api/v1/runs/{id}/tasks/{task}/logs", tag = "runs",
    params(("id" = String, Path, description = "Run id"), ("task" = String, Path, description = "Task id"), LogsQuery),
    responses((status = 200, body = LogLines, description = "All lines; with follow=true, one LogLine per line as application/x-ndjson"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn task_logs(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Result<Response> {
    find_run(&state.store, &id).await?;
    let tries = state.store.task_instances(&id).await?;
    if !tries.iter().any(|t| t.task_id == task) {
        return Err(Error::NotFound(format!("run `{id}` has no task `{task}`")));
    }
    if !query.follow {
        let lines = state
            .store
            .logs(&id, Some(&task))
            .await?
            .into_iter()
            .filter(|l| l.id > query.after)
            .map(LogLine::from)
            .collect();
        return Ok(Json(LogLines { lines }).into_response());
    }
    let follow = Follow {
        events: state.store.subscribe(),
        store: state.store.clone(),
        run_id: id,
        task_id: task,
        after: query.after,
        buffered: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let line = f.next_line().await?;
        Some((Ok::<Bytes, Infallible>(line), f))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The state of one followed log.
struct Follow {
    store: Store,
    events: UnboundedReceiver<StoreEvent>,
    run_id: String,
    task_id: String,
    after: i64,
    buffered: VecDeque<LogRecord>,
}

impl Follow {
    /// The next line as NDJSON, waiting for it if needed; `None` once the task has ended and
    /// every line was sent (or the database failed, which ends the stream).
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                let mut text = serde_json::to_vec(&LogLine::from(record)).ok()?;
                text.push(b'\n');
                return Some(Bytes::from(text));
            }
            // Looking at the state before reading makes the last read complete: workers write
            // a try's logs before they record its end.
            let ended = match task_ended(&self.store, &self.run_id, &self.task_id).await {
                Ok(ended) => ended,
                Err(e) => {
                    warn!(run_id = %self.run_id, task = %self.task_id, error = %e, "Following a task's log stopped on a database error.");
                    return None;
                }
            };
            let lines = match self
                .store
                .logs_after(&self.run_id, &self.task_id, self.after, LOG_BATCH)
                .await
            {
                Ok(lines) => lines,
                Err(e) => {
                    warn!(run_id = %self.run_id, task = %self.task_id, error = %e, "Following a task's log stopped on a database error.");
                    return None;
                }
            };
            if let Some(last) = lines.last() {
                self.after = last.id;
                self.buffered.extend(lines);
                continue;
            }
            if ended {
                return None;
            }
            self.wait().await;
        }
    }

    /// Waits for an event about this run, or the poll interval, whichever comes first.
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(LOG_POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                event = self.events.recv() => match event {
                    Some(StoreEvent::TaskStates { run_id, .. } | StoreEvent::RunState { run_id, .. })
                        if run_id == self.run_id => return,
                    Some(_) => {}
                    // No more events: fall back to polling alone.
                    None => {
                        deadline.await;
                        return;
                    }
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Import errors

/// One problem in a workflow file.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportProblem {
    /// `PATH:LINE:COL`.
    pub location: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub help: Option<String>,
}

/// A workflow file that does not validate.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportErrorView {
    pub path: String,
    pub problems: Vec<ImportProblem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportErrors {
    pub import_errors: Vec<ImportErrorView>,
}

// ---------------------------------------------------------------------------------------------
// Artifacts

/// A file a task kept with the run (its latest successful try's).
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactInfo {
    pub task: String,
    pub try_number: u32,
    /// Its path relative to the task's artifacts folder (`report/summary.json`).
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
    pub created_at: DateTime<Utc>,
    /// Where to download it (`?task=` included).
    pub download: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactList {
    /// By task, then name.
    pub artifacts: Vec<ArtifactInfo>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArtifactQuery {
    /// The task that kept it; needed only when several tasks kept the same name.
    pub task: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = ArtifactList), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn list_artifacts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ArtifactList>> {
    find_run(&state.store, &id).await?;
    let artifacts = state
        .store
        .latest_artifacts(&id)
        .await?
        .into_iter()
        .map(|a| ArtifactInfo {
            download: format!(
                "/api/v1/runs/{}/artifacts/{}?task={}",
                id,
                artifacts::encode_segment(&a.name),
                artifacts::encode_segment(&a.task_id)
            ),
            task: a.task_id,
            try_number: a.try_number,
            name: a.name,
            size: a.size,
            sha256: a.sha256,
            media_type: a.media_type,
            created_at: a.created_at,
        })
        .collect();
    Ok(Json(ArtifactList { artifacts }))
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts/{name}", tag = "runs",
    params(("id" = String, Path, description = "Run id"),
        ("name" = String, Path, description = "The artifact's name, URL-encoded (`report%2Fsummary.json`)"),
        ArtifactQuery),
    responses((status = 200, content_type = "application/octet-stream", description = "The file, as an attachment"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Several tasks kept this name; say which with `task`")))]
pub(super) async fn download_artifact(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Query(query): Query<ArtifactQuery>,
) -> Result<Response> {
    find_run(&state.store, &id).await?;
    let artifact = artifacts::find(&state.store, &id, &name, query.task.as_deref()).await?;
    Ok(artifacts::serve(state.artifacts.as_ref(), &artifact, false).await?)
}

impl From<artifacts::DownloadError> for Error {
    fn from(error: artifacts::DownloadError) -> Self {
        match error {
            artifacts::DownloadError::NotFound(m) => Error::NotFound(m),
            artifacts::DownloadError::Ambiguous(m) => Error::Conflict(m),
            artifacts::DownloadError::Unavailable(m) => Error::Internal(m),
            artifacts::DownloadError::Store(e) => Error::Store(e),
        }
    }
}

/// The workflow files that do not validate, with every problem found in each.
#[utoipa::path(get, path = "/api/v1/import-errors", tag = "workflows",
    responses((status = 200, body = ImportErrors), (status = 401, body = ErrorBody)))]
pub(super) async fn import_errors(State(state): State<AppState>) -> Json<ImportErrors> {
    let snapshot = state.catalog.snapshot();
    let import_errors = snapshot
        .import_errors
        .iter()
        .map(|e| ImportErrorView {
            path: e.path.display().to_string(),
            problems: e
                .diagnostics
                .iter()
                .map(|d| ImportProblem {
                    location: format!("{}:{}:{}", d.path.display(), d.line, d.column),
                    line: d.line,
                    column: d.column,
                    message: d.message.clone(),
                    help: d.help.clone(),
                })
                .collect(),
        })
        .collect();
    Json(ImportErrors { import_errors })
}

#[cfg(test)]
mod tests {
    #[test]
    fn clearing_takes_everything_downstream_once() {
        let source = "tasks:\n  a: { operator: noop }\n  b: { operator: noop, needs: [a] }\n  \
                      c: { operator: noop, needs: [a, b] }\n  d: { operator: noop }\n";
        let workflow = crate::catalog::compile_source(std::path::Path::new("wf.yaml"), source)
            .expect("compiles");
        assert_eq!(workflow.with_downstream(0), ["a", "b", "c"]);
        assert_eq!(workflow.with_downstream(1), ["b", "c"]);
        assert_eq!(workflow.with_downstream(3), ["d"]);
    }
}
