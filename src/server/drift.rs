//! `GET /api/v1/runs/{id}/tasks/{task}/drift`: a drift task's report as JSON, the twin of the
//! report page (`web::drift`): the task's outputs, its histograms artifact and each column's
//! statistic over the past runs of the workflow.

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{AppState, Error, ErrorBody, Json, Result};
use crate::web::drift::{HISTORY_RUNS, kept_histograms, latest_outputs};

/// A drift task's report.
#[derive(Debug, Serialize, ToSchema)]
pub struct DriftReport {
    pub run_id: String,
    pub task: String,
    /// The outputs of the task's latest successful try: `drift_detected`, `drift_share`,
    /// `drifted_columns` and `columns`.
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
    /// The `drift/histograms.json` artifact (row counts, the window, each column's bins and
    /// shares); null when it cannot be read.
    #[schema(value_type = Option<Object>)]
    pub histograms: Option<Value>,
    /// The latest runs of the workflow (by logical date) in which the task succeeded, oldest
    /// first.
    pub history: Vec<DriftHistoryEntry>,
}

/// One past run's verdict on each column.
#[derive(Debug, Serialize, ToSchema)]
pub struct DriftHistoryEntry {
    pub run_id: String,
    pub logical_date: DateTime<Utc>,
    /// Column → `{statistic, drifted}`.
    #[schema(value_type = Object)]
    pub columns: Map<String, Value>,
}

/// The report of a drift task's latest success in a run.
#[utoipa::path(get, path = "/api/v1/runs/{id}/tasks/{task}/drift", tag = "runs",
    params(("id" = String, Path, description = "Run id"),
        ("task" = String, Path, description = "Task id of a `drift` task")),
    responses((status = 200, body = DriftReport), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn drift_report(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
) -> Result<Json<DriftReport>> {
    let run = state
        .store
        .run(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no run with id `{id}`")))?;
    let outputs = latest_outputs(&state.store, &id, &task)
        .await?
        .filter(|o| o.contains_key("drift_detected") && o.contains_key("columns"))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "task `{task}` of run `{id}` has no drift report: it is not a drift task, or it \
                 has not succeeded yet"
            ))
        })?;
    let histograms = kept_histograms(&state.store, state.artifacts.as_ref(), &id, &task)
        .await
        .ok();
    let history = state
        .store
        .task_outputs_history(&run.workflow_id, &task, HISTORY_RUNS)
        .await?
        .into_iter()
        .map(|past| {
            let columns = past
                .outputs
                .get("columns")
                .and_then(Value::as_object)
                .map(|columns| {
                    columns
                        .iter()
                        .map(|(name, c)| {
                            let verdict = serde_json::json!({
                                "statistic": c.get("statistic"),
                                "drifted": c.get("drifted"),
                            });
                            (name.clone(), verdict)
                        })
                        .collect()
                })
                .unwrap_or_default();
            DriftHistoryEntry {
                run_id: past.run_id,
                logical_date: past.logical_date,
                columns,
            }
        })
        .collect();
    Ok(Json(DriftReport {
        run_id: id,
        task,
        outputs,
        histograms,
        history,
    }))
}
