//! What operators do from the pages: pause and unpause a workflow, cancel a run, clear a task
//! (it runs again, with everything downstream). Each is a form POST that must carry the
//! session's CSRF token; each makes the same store call as the JSON API and goes back to the
//! page it came from.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::info;

use super::auth::{CsrfForm, Session};
use super::pages::{find_run, find_workflow, pinned_workflow};
use super::{Result, WebError, WebState};
use crate::store::ClearOutcome;

async fn set_paused(
    state: &WebState,
    session: &Session,
    id: &str,
    form: &CsrfForm,
    paused: bool,
) -> Result<Response> {
    session.authorize_action(&form.csrf)?;
    find_workflow(state, id)?;
    state.store.set_paused(id, paused).await?;
    info!(workflow = %id, paused, user = %session.user, "Workflow pause state changed from the UI.");
    let back = form.back.as_deref().and_then(super::local_path);
    Ok(Redirect::to(back.unwrap_or(&format!("/workflows/{id}"))).into_response())
}

/// `POST /workflows/{id}/pause`.
pub async fn pause(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    set_paused(&state, &session, &id, &form, true).await
}

/// `POST /workflows/{id}/unpause`.
pub async fn unpause(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    set_paused(&state, &session, &id, &form, false).await
}

/// `POST /runs/{run_id}/cancel`.
pub async fn cancel(
    State(state): State<WebState>,
    session: Session,
    Path(run_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    session.authorize_action(&form.csrf)?;
    let run = find_run(&state, &run_id).await?;
    let reason = format!("cancelled by {} in the UI", session.user);
    if !state.store.cancel_run(&run_id, &reason).await? {
        return Err(WebError::Conflict(format!(
            "run `{run_id}` has already ended ({}); there is nothing to cancel",
            run.state
        )));
    }
    info!(run_id = %run_id, user = %session.user, "Run cancelled from the UI.");
    Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
}

/// `POST /runs/{run_id}/tasks/{task}/clear`: the task and everything downstream run again.
pub async fn clear(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    session.authorize_action(&form.csrf)?;
    let run = find_run(&state, &run_id).await?;
    // The run's own version decides what is downstream, not the file as it is today.
    let workflow = pinned_workflow(&state, &run).await?;
    let index = workflow
        .task_index(&task)
        .ok_or_else(|| WebError::NotFound(format!("run `{run_id}` has no task `{task}`")))?;
    let tasks = workflow.with_downstream(index);
    match state.store.clear_tasks(&run_id, &tasks).await? {
        ClearOutcome::Cleared { .. } => {
            info!(run_id = %run_id, task = %task, cleared = tasks.len(), user = %session.user, "Tasks cleared from the UI.");
            Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
        }
        ClearOutcome::Refused(reason) => Err(WebError::Conflict(reason)),
    }
}
