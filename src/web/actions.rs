//! What operators do from the pages: pause and unpause a workflow, cancel a run, clear a task
//! (alone or with its downstream, every task or only the failed ones), mark a task success or
//! failed, and run a run again. Each run action has a confirmation page (`GET`) listing what it
//! affects, whose form POSTs to the same address with the session's CSRF token; the action
//! makes the same `web::control` or store call as the JSON API and goes back to the run page,
//! which then says what was done (a short-lived cookie, so a link cannot make the page claim
//! something happened).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::info;

use super::auth::{CsrfForm, Session};
use super::control::{self, ClearScope, ControlError, TaskAction};
use super::pages::{find_run, find_workflow, pinned_workflow};
use super::{Result, WebError, WebState, render};
use crate::store::MarkedState;

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

/// The cookie that carries the message of the action just done to the run page.
pub(super) const FLASH_COOKIE: &str = "sluice_flash";

/// How long the message waits for the page it was meant for.
const FLASH_SECONDS: u32 = 60;

/// A redirect to the run page that will say `message` once.
pub(super) fn back_to_run_saying(
    state: &WebState,
    run_id: &str,
    message: &str,
) -> Result<Response> {
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    // Hex keeps any text a valid cookie value.
    let cookie = format!(
        "{FLASH_COOKIE}={}; Path=/runs/; Max-Age={FLASH_SECONDS}; HttpOnly; SameSite=Strict{secure}",
        hex::encode(message)
    );
    let mut response = Redirect::to(&format!("/runs/{run_id}")).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|e| WebError::Internal(format!("cannot build the message cookie: {e}")))?,
    );
    Ok(response)
}

/// The message an action left for the run page, and the header that forgets it.
pub(super) fn take_flash(headers: &HeaderMap) -> Option<(String, HeaderValue)> {
    let raw = super::auth::cookie(headers, FLASH_COOKIE)?;
    let message = String::from_utf8(hex::decode(raw).ok()?).ok()?;
    let forget = HeaderValue::from_static(
        "sluice_flash=; Path=/runs/; Max-Age=0; HttpOnly; SameSite=Strict",
    );
    Some((message, forget))
}

impl From<ControlError> for WebError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => WebError::NotFound(m),
            ControlError::Refused(m) => WebError::Conflict(m),
            ControlError::Store(e) => WebError::Store(e),
        }
    }
}

/// A run action's choices, from the confirmation page's query or its form.
#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    csrf: String,
    /// `task` clears the task alone; anything else (the default) with its downstream.
    scope: Option<String>,
    /// Present: clear only the tasks that failed.
    only_failed: Option<String>,
    /// `success` or `failed`, for a mark.
    state: Option<String>,
}

impl Choice {
    fn clear_scope(&self) -> ClearScope {
        ClearScope {
            downstream: self.scope.as_deref() != Some("task"),
            only_failed: self.only_failed.is_some(),
        }
    }

    fn marked(&self) -> Result<MarkedState> {
        match self.state.as_deref() {
            Some("success") => Ok(MarkedState::Success),
            Some("failed") => Ok(MarkedState::Failed),
            _ => Err(WebError::BadRequest(
                "choose whether to mark the task success or failed".into(),
            )),
        }
    }
}

/// One run action's confirmation page.
#[derive(Default)]
pub(super) struct Confirmation<'a> {
    pub(super) heading: String,
    /// Where the confirming form posts; `None` when there is nothing to confirm.
    pub(super) action: Option<String>,
    pub(super) confirm: String,
    pub(super) danger: bool,
    /// The choices made, sent again with the confirming form.
    pub(super) hidden: Vec<(String, String)>,
    pub(super) plan: Option<control::Plan>,
    /// Why the action cannot be done with the choices made.
    pub(super) refusal: Option<String>,
    pub(super) clear: Option<ClearScope>,
    pub(super) task: Option<&'a str>,
    /// A re-run's params as people read them, and where to edit them.
    pub(super) params: Vec<(String, String)>,
    pub(super) edit: Option<String>,
}

pub(super) fn confirmation_page(
    session: &Session,
    run: &crate::store::RunRecord,
    c: Confirmation<'_>,
) -> Result<Response> {
    let mut response = render(
        "confirm.html",
        minijinja::context! {
            title => c.heading.clone(),
            user => session.view(),
            run => minijinja::context! { id => run.id.clone(), workflow => run.workflow_id.clone(), state => run.state.as_str() },
            heading => c.heading,
            refusal => c.refusal.as_deref().map(super::as_sentence),
            action => c.action,
            confirm => c.confirm,
            danger => c.danger,
            hidden => c.hidden,
            plan => c.plan.map(|p| minijinja::Value::from(minijinja::value::Serde(p))),
            clear => c.clear.map(|s| minijinja::context! { downstream => s.downstream, only_failed => s.only_failed }),
            task => c.task,
            params => c.params,
            edit => c.edit,
        },
    )?
    .into_response();
    // The page holds a form token and a run's params.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /runs/{run_id}/cancel`: what cancelling would stop.
pub async fn cancel_page(
    State(state): State<WebState>,
    session: Session,
    Path(run_id): Path<String>,
) -> Result<Response> {
    let run = find_run(&state, &run_id).await?;
    if run.state.is_final() {
        return Err(WebError::Conflict(format!(
            "run `{run_id}` has already ended ({}); there is nothing to cancel",
            run.state
        )));
    }
    let tries = state.store.task_instances(&run_id).await?;
    let mut unfinished: Vec<control::Affected> = Vec::new();
    for t in tries.iter().filter(|t| !t.state.is_final()) {
        unfinished.push(control::Affected {
            task: t.task_id.clone(),
            state: t.state.as_str().to_owned(),
            becomes: if t.state == crate::lifecycle::TaskState::Running {
                "stopped"
            } else {
                "cancelled"
            },
        });
    }
    confirmation_page(
        &session,
        &run,
        Confirmation {
            heading: format!("Cancel this run of {}?", run.workflow_id),
            action: Some(format!("/runs/{run_id}/cancel")),
            confirm: "Cancel the run".into(),
            danger: true,
            plan: Some(control::Plan {
                affected: unfinished,
                run_effect: "The run ends as cancelled; running tasks are stopped.".into(),
            }),
            ..Confirmation::default()
        },
    )
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
    back_to_run_saying(&state, &run_id, "Cancelled the run.")
}

async fn task_action_page(
    state: &WebState,
    session: &Session,
    run_id: &str,
    task: &str,
    action: TaskAction,
) -> Result<Response> {
    let run = find_run(state, run_id).await?;
    let workflow = pinned_workflow(state, &run).await?;
    let plan = control::plan(&state.store, &workflow, run_id, task, action).await;
    // A clear that cannot apply with these choices still shows the choices, to change them.
    let (plan, refusal) = match (plan, action) {
        (Ok(plan), _) => (Some(plan), None),
        (Err(ControlError::Refused(why)), TaskAction::Clear(_)) => (None, Some(why)),
        (Err(e), _) => return Err(e.into()),
    };
    let (heading, path, confirm, hidden, clear) = match action {
        TaskAction::Clear(scope) => {
            let mut hidden = vec![(
                "scope".to_owned(),
                if scope.downstream {
                    "downstream"
                } else {
                    "task"
                }
                .to_owned(),
            )];
            if scope.only_failed {
                hidden.push(("only_failed".to_owned(), "on".to_owned()));
            }
            (
                format!("Clear {task}?"),
                format!("/runs/{run_id}/tasks/{task}/clear"),
                "Clear and run again".to_owned(),
                hidden,
                Some(scope),
            )
        }
        TaskAction::Mark(to) => (
            format!("Mark {task} {}?", to.task_state()),
            format!("/runs/{run_id}/tasks/{task}/mark"),
            format!("Mark {}", to.task_state()),
            vec![("state".to_owned(), to.task_state().as_str().to_owned())],
            None,
        ),
    };
    confirmation_page(
        session,
        &run,
        Confirmation {
            heading,
            action: refusal.is_none().then_some(path),
            confirm,
            danger: matches!(action, TaskAction::Mark(MarkedState::Failed)),
            hidden,
            plan,
            refusal,
            clear,
            task: Some(task),
            ..Confirmation::default()
        },
    )
}

async fn task_action(
    state: &WebState,
    session: &Session,
    run_id: &str,
    task: &str,
    action: TaskAction,
) -> Result<Response> {
    let run = find_run(state, run_id).await?;
    let workflow = pinned_workflow(state, &run).await?;
    let by = format!("{} in the UI", session.user);
    let done = control::apply(&state.store, &workflow, run_id, task, action, &by).await?;
    info!(run_id = %run_id, task = %task, ?action, tasks = ?done.tasks, user = %session.user, "Run control action from the UI.");
    back_to_run_saying(state, run_id, &done.message)
}

/// `GET /runs/{run_id}/tasks/{task}/clear`: the tasks a clear would run again, with the choice
/// of scope.
pub async fn clear_page(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task)): Path<(String, String)>,
    Query(choice): Query<Choice>,
) -> Result<Response> {
    task_action_page(
        &state,
        &session,
        &run_id,
        &task,
        TaskAction::Clear(choice.clear_scope()),
    )
    .await
}

/// `POST /runs/{run_id}/tasks/{task}/clear`: the task (by default with everything downstream)
/// runs again.
pub async fn clear(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task)): Path<(String, String)>,
    Form(choice): Form<Choice>,
) -> Result<Response> {
    session.authorize_action(&choice.csrf)?;
    task_action(
        &state,
        &session,
        &run_id,
        &task,
        TaskAction::Clear(choice.clear_scope()),
    )
    .await
}

/// `GET /runs/{run_id}/tasks/{task}/mark?state=success|failed`: what the mark would change.
pub async fn mark_page(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task)): Path<(String, String)>,
    Query(choice): Query<Choice>,
) -> Result<Response> {
    let to = choice.marked()?;
    task_action_page(&state, &session, &run_id, &task, TaskAction::Mark(to)).await
}

/// `POST /runs/{run_id}/tasks/{task}/mark`.
pub async fn mark(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task)): Path<(String, String)>,
    Form(choice): Form<Choice>,
) -> Result<Response> {
    session.authorize_action(&choice.csrf)?;
    let to = choice.marked()?;
    task_action(&state, &session, &run_id, &task, TaskAction::Mark(to)).await
}

/// `GET /runs/{run_id}/rerun`: the run's params, to start a new run with them as they are or
/// edited in the trigger form.
pub async fn rerun_page(
    State(state): State<WebState>,
    session: Session,
    Path(run_id): Path<String>,
) -> Result<Response> {
    let run = find_run(&state, &run_id).await?;
    let entry = find_workflow(&state, &run.workflow_id)?;
    let masker = &state.settings.masker;
    let given = super::trigger::given_from_params(&entry.workflow, &run.params);
    // A param holding a secret is not copied into the page; it is edited in the form instead.
    let secret = given.values().any(|v| masker.mask(v) != v.as_str());
    let mut hidden: Vec<(String, String)> = given.into_iter().collect();
    hidden.sort();
    let params = masked_params(masker, &run.params);
    confirmation_page(
        &session,
        &run,
        Confirmation {
            heading: format!("Run {} again?", run.workflow_id),
            action: (!secret).then(|| format!("/workflows/{}/trigger", run.workflow_id)),
            confirm: "Start a run with these params".into(),
            hidden: if secret { Vec::new() } else { hidden },
            refusal: secret.then(|| {
                "a param of this run holds a secret, so it is not copied here; edit the params to run again".to_owned()
            }),
            params,
            edit: Some(format!(
                "/workflows/{}/trigger?from={}",
                run.workflow_id, run.id
            )),
            ..Confirmation::default()
        },
    )
}

/// A run's params as the confirmation pages list them: as text, secrets masked.
pub(super) fn masked_params(
    masker: &crate::secrets::Masker,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                masker.mask(&super::trigger::as_text(v)).into_owned(),
            )
        })
        .collect()
}
