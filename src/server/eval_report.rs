//! `GET /api/v1/runs/{id}/tasks/{task}/eval`: an eval task's report as JSON, the twin of the
//! report page, read by the same `web::eval_report::read_report`: the metrics against the
//! gate's thresholds and the champion, the examples with failures first, and the regressions.

use axum::extract::{Path, Query, State};

use super::{AppState, Error, ErrorBody, Json, Result};
use crate::web::WebError;
use crate::web::eval_report::{EvalReport, ReportQuery, read_report};

/// The report of an eval task's latest success in a run.
#[utoipa::path(get, path = "/api/v1/runs/{id}/tasks/{task}/eval", tag = "runs",
    params(("id" = String, Path, description = "Run id"),
        ("task" = String, Path, description = "Task id of an `eval` task"),
        ("champion" = Option<String>, Query,
            description = "The champion to compare with, as `model@alias`; default: the gate's baseline model")),
    responses((status = 200, body = EvalReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn eval_report(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
    Query(query): Query<ReportQuery>,
) -> Result<Json<EvalReport>> {
    let report = read_report(&state.web_state(), &id, &task, query.champion.as_deref())
        .await
        .map_err(|e| match e {
            WebError::NotFound(m) => Error::NotFound(m),
            WebError::BadRequest(m) => Error::BadRequest(m),
            WebError::Store(e) => Error::Store(e),
            other => Error::Internal(other.to_string()),
        })?;
    Ok(Json(report))
}
