//! "Reproduce" from a tracking run or a model version: a confirmation page (`GET`) with the
//! original run's params, whose form POSTs to the same address and starts the workflow again
//! with them (`catalog::reproduce`), then shows the new run, whose page compares it with the
//! original.

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use tracing::info;

use super::actions::{Confirmation, back_to_run_saying, confirmation_page};
use super::auth::{CsrfForm, Session};
use super::{Result, WebError, WebState};
use crate::catalog::launch::LaunchError;
use crate::catalog::reproduce::{self, Original, ReproduceError, Resolved};

impl From<ReproduceError> for WebError {
    fn from(error: ReproduceError) -> Self {
        match error {
            ReproduceError::NotFound(message) => WebError::NotFound(message),
            ReproduceError::NoWorkflowRun(message) | ReproduceError::Gone(message) => {
                WebError::Conflict(message)
            }
            ReproduceError::Launch(LaunchError::Params(_)) => WebError::Conflict(error.to_string()),
            ReproduceError::Launch(LaunchError::Store(e)) | ReproduceError::Store(e) => {
                WebError::Store(e)
            }
            ReproduceError::Tracking(e) => WebError::Internal(e.to_string()),
        }
    }
}

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route(
            "/tracking/runs/{id}/reproduce",
            get(tracking_run_page).post(tracking_run),
        )
        .route(
            "/models/{name}/versions/{version}/reproduce",
            get(model_version_page).post(model_version),
        )
}

async fn resolve(state: &WebState, original: &Original) -> Result<Resolved> {
    let tracking = state.tracking.as_deref().ok_or_else(|| {
        WebError::Conflict(
            "this server has no tracking backend, so nothing can be reproduced".into(),
        )
    })?;
    Ok(reproduce::resolve(&state.store, &state.catalog, tracking, original).await?)
}

fn address(original: &Original) -> String {
    match original {
        Original::TrackingRun(id) => format!("/tracking/runs/{id}/reproduce"),
        Original::ModelVersion { model, version } => {
            format!("/models/{model}/versions/{version}/reproduce")
        }
    }
}

fn described(original: &Original) -> String {
    match original {
        Original::TrackingRun(id) => format!("tracking run {id}"),
        Original::ModelVersion { model, version } => format!("version {version} of {model}"),
    }
}

async fn confirm(state: &WebState, session: &Session, original: Original) -> Result<Response> {
    let resolved = resolve(state, &original).await?;
    let masker = &state.settings.masker;
    let params = super::actions::masked_params(masker, &resolved.run.params);
    confirmation_page(
        session,
        &resolved.run,
        Confirmation {
            heading: format!(
                "Reproduce {} with a new run of {}?",
                described(&original),
                resolved.run.workflow_id
            ),
            action: Some(address(&original)),
            confirm: "Start a run with the same params".into(),
            params,
            ..Confirmation::default()
        },
    )
}

async fn start(
    state: &WebState,
    session: &Session,
    form: &CsrfForm,
    original: Original,
) -> Result<Response> {
    session.authorize_action(&form.csrf)?;
    let resolved = resolve(state, &original).await?;
    let by = Some(format!("user:{}", session.user));
    let run_id = reproduce::start(&state.store, &resolved, "ui", by).await?;
    info!(workflow = %resolved.run.workflow_id, from = %resolved.run.id,
        tracking_run = %resolved.tracking_run_id, run_id = %run_id, user = %session.user,
        "Run started from the UI to reproduce a tracking run.");
    back_to_run_saying(
        state,
        &run_id,
        &format!("Started this run to reproduce {}.", described(&original)),
    )
}

/// `GET /tracking/runs/{id}/reproduce`: the params the new run would start with.
pub async fn tracking_run_page(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response> {
    confirm(&state, &session, Original::TrackingRun(id)).await
}

/// `POST /tracking/runs/{id}/reproduce`: starts the run and shows it.
pub async fn tracking_run(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    start(&state, &session, &form, Original::TrackingRun(id)).await
}

/// `GET /models/{name}/versions/{version}/reproduce`.
pub async fn model_version_page(
    State(state): State<WebState>,
    session: Session,
    Path((model, version)): Path<(String, u32)>,
) -> Result<Response> {
    confirm(&state, &session, Original::ModelVersion { model, version }).await
}

/// `POST /models/{name}/versions/{version}/reproduce`.
pub async fn model_version(
    State(state): State<WebState>,
    session: Session,
    Path((model, version)): Path<(String, u32)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    start(
        &state,
        &session,
        &form,
        Original::ModelVersion { model, version },
    )
    .await
}
