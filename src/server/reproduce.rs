//! Reproducing a tracking run or a model version: a new run of the workflow that logged it,
//! with the same params, which records what it reproduces (`catalog::reproduce`). The new
//! run's `GET /api/v1/runs/{id}` then carries the comparison with the original.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tracing::info;
use utoipa::ToSchema;

use super::tracking::tracking;
use super::{AppState, Error, ErrorBody, Json, Path, Result};
use crate::catalog::reproduce::{self, Original, ReproduceError};

impl From<ReproduceError> for Error {
    fn from(error: ReproduceError) -> Self {
        match error {
            ReproduceError::NotFound(message) => Error::NotFound(message),
            ReproduceError::NoWorkflowRun(message) => Error::Invalid {
                message,
                details: Vec::new(),
            },
            ReproduceError::Gone(message) => Error::Conflict(message),
            ReproduceError::Launch(e) => e.into(),
            ReproduceError::Tracking(e) => e.into(),
            ReproduceError::Store(e) => Error::Store(e),
        }
    }
}

/// The run started, and what it reproduces.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReproduceResponse {
    /// The new run.
    pub run_id: String,
    /// The original workflow run, whose params the new run has.
    pub reproduces_run_id: String,
    /// The original tracking run.
    pub tracking_run_id: String,
}

async fn reproduce(
    state: &AppState,
    original: Original,
) -> Result<(StatusCode, Json<ReproduceResponse>)> {
    let resolved =
        reproduce::resolve(&state.store, &state.catalog, tracking(state)?, &original).await?;
    let run_id = reproduce::start(&state.store, &resolved, "api", None).await?;
    info!(workflow = %resolved.run.workflow_id, from = %resolved.run.id,
        tracking_run = %resolved.tracking_run_id, run_id = %run_id,
        "Run started through the API to reproduce a tracking run.");
    Ok((
        StatusCode::CREATED,
        Json(ReproduceResponse {
            run_id,
            reproduces_run_id: resolved.run.id,
            tracking_run_id: resolved.tracking_run_id,
        }),
    ))
}

/// Starts the workflow that logged a tracking run again, with its run's params; the new run
/// compares its workflow version and input files with the tracking run's lineage. 422 when
/// the lineage names no workflow run, 409 when that run or its workflow is gone.
#[utoipa::path(post, path = "/api/v1/tracking/runs/{id}/reproduce", tag = "tracking",
    params(("id" = String, Path, description = "Tracking run id")),
    responses((status = 201, body = ReproduceResponse), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn reproduce_tracking_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ReproduceResponse>)> {
    reproduce(&state, Original::TrackingRun(id)).await
}

/// Reproduces the tracking run that registered a model version (see
/// `POST /api/v1/tracking/runs/{id}/reproduce`).
#[utoipa::path(post, path = "/api/v1/models/{name}/versions/{version}/reproduce", tag = "registry",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number")),
    responses((status = 201, body = ReproduceResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn reproduce_model_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, u32)>,
) -> Result<(StatusCode, Json<ReproduceResponse>)> {
    reproduce(&state, Original::ModelVersion { model, version }).await
}
