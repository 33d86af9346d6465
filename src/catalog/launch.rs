//! Turning a request for a run into a stored run: params checked against their declarations,
//! the workflow version pinned, one pending task instance per task. Every way a run starts
//! (the `run` command, the API, cron, triggers, GitHub deliveries) goes through `launch`, or
//! through `prepare` when the run is inserted with other rows.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::dag::Workflow;
use crate::dag::intervals::manual_interval;
use crate::params::{self, ParamProblem};
use crate::store::{NewRun, NewTaskInstance, RunRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the run's params are invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Params(Vec<ParamProblem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What starts a run, and with what.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Param values as given; checked and completed with defaults.
    pub params: Map<String, Value>,
    /// `manual`, `api`, `schedule`, `backfill`, `workflow`, `github`.
    pub trigger: String,
    pub triggered_by: Option<String>,
    /// The logical date and data interval (start, end); `now` for unscheduled runs.
    pub logical_date: DateTime<Utc>,
    pub data_interval: (DateTime<Utc>, DateTime<Utc>),
}

impl RunRequest {
    /// A run for right now, with no data interval of its own.
    pub fn now(trigger: &str, params: Map<String, Value>) -> Self {
        let now = Utc::now();
        RunRequest {
            params,
            trigger: trigger.to_owned(),
            triggered_by: None,
            logical_date: now,
            data_interval: (now, now),
        }
    }
}

impl RunRequest {
    /// A request to start `run`'s workflow again, as `workflow` is now, with the run's params
    /// and `replaced` laid over them; params the workflow no longer declares are dropped
    /// rather than refused.
    pub fn again(
        workflow: &Workflow,
        run: &RunRecord,
        replaced: Map<String, Value>,
        trigger: &str,
        triggered_by: Option<String>,
    ) -> Self {
        let mut params = run.params.clone();
        params.retain(|name, _| workflow.params.contains_key(name));
        params.extend(replaced);
        let interval = manual_interval(workflow, Utc::now());
        RunRequest {
            params,
            trigger: trigger.to_owned(),
            triggered_by,
            logical_date: interval.logical_date(),
            data_interval: (interval.start, interval.end),
        }
    }
}

/// Creates a queued run of `workflow` (whose source was read from `path`) and returns its id.
pub async fn launch(
    store: &Store,
    workflow: &Workflow,
    path: &str,
    request: RunRequest,
) -> Result<String, LaunchError> {
    let prepared = prepare(store, workflow, path, request).await?;
    store.create_run(&prepared.run, &prepared.tasks).await?;
    Ok(prepared.run.id)
}

/// A run checked and ready to insert, for callers that create it together with other rows in
/// one transaction (a GitHub delivery and the runs it starts).
#[derive(Debug, Clone)]
pub struct PreparedRun {
    pub run: NewRun,
    pub tasks: Vec<NewTaskInstance>,
}

/// Everything `launch` does but creating the run: params checked and completed, the workflow
/// version pinned (recording a version is idempotent, so an unused one costs nothing).
pub async fn prepare(
    store: &Store,
    workflow: &Workflow,
    path: &str,
    request: RunRequest,
) -> Result<PreparedRun, LaunchError> {
    let params = params::resolve(&workflow.params, &request.params).map_err(LaunchError::Params)?;
    store
        .save_workflow_version(&workflow.id, &workflow.source_hash, path, &workflow.source)
        .await?;
    let run = NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        workflow_id: workflow.id.clone(),
        version_hash: workflow.source_hash.clone(),
        trigger: request.trigger,
        triggered_by: request.triggered_by,
        params,
        logical_date: request.logical_date,
        data_interval_start: request.data_interval.0,
        data_interval_end: request.data_interval.1,
    };
    let tasks = workflow
        .tasks
        .iter()
        .map(NewTaskInstance::first_try)
        .collect();
    Ok(PreparedRun { run, tasks })
}
