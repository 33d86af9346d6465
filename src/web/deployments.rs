//! A model's deployment history (`/models/{name}/deployments`): each rollout, newest first, with
//! its steps and their weights, its check results and its rollback; the moves of the model's
//! aliases; and the Rollback action, which moves an alias back to the version it held before
//! its latest move (`deploy::alias::roll_back`, the one place aliases move) and records the
//! routing that gives that version all traffic.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

use super::auth::{Session, url_encode};
use super::{Result, WebError, WebState, iso, render};
use crate::operators::deploy::alias::{self, MANUAL_ROLLBACK, RollbackError};
use crate::operators::deploy::strategy::{CheckRecord, Route, StepRecord};
use crate::store::rollouts::RolloutRecord;
use crate::tracking::{AliasMove, Tracking};

/// How many of a model's newest rollouts the page shows.
const SHOWN_ROLLOUTS: u64 = 100;

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/models/{name}/deployments", get(page))
        .route(
            "/models/{name}/deployments/rollback",
            get(rollback_page).post(rollback),
        )
}

/// One rollout as the page shows it.
#[derive(Debug, Serialize)]
struct RolloutView {
    /// The run of the task that rolled out; `None` for a rollback by hand.
    run_id: Option<String>,
    task: String,
    by: Option<String>,
    strategy: String,
    alias: String,
    from: Option<String>,
    to: String,
    state: String,
    /// The state colour of its badge.
    badge: &'static str,
    started: String,
    /// When it ended (succeeded or rolled back).
    ended: Option<String>,
    steps: Vec<StepView>,
    checks: Vec<CheckView>,
    rollback_reason: Option<String>,
    overrides: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StepView {
    /// From 1.
    number: usize,
    at: String,
    routes: Vec<Route>,
}

#[derive(Debug, Serialize)]
struct CheckView {
    /// From 1.
    step: usize,
    at: String,
    outcome: String,
    details: Vec<String>,
}

/// The stored rollout state the page reads: what `deploy` keeps in the row's `detail`.
#[derive(Debug, Default, Deserialize)]
struct Detail {
    #[serde(default)]
    steps: Vec<StepRecord>,
    #[serde(default)]
    overrides: Vec<String>,
}

fn view(record: RolloutRecord) -> RolloutView {
    let detail: Detail = serde_json::from_value(record.detail).unwrap_or_default();
    let checks: Vec<CheckRecord> = serde_json::from_value(record.checks).unwrap_or_default();
    let manual = record.strategy == MANUAL_ROLLBACK;
    let ended = matches!(record.state.as_str(), "succeeded" | "rolled_back");
    let mut steps: Vec<StepView> = detail
        .steps
        .into_iter()
        .map(|s| StepView {
            number: s.step + 1,
            at: iso(s.at),
            routes: s.routing,
        })
        .collect();
    if manual {
        // A rollback by hand has one routing: all traffic to the restored version.
        steps.push(StepView {
            number: 1,
            at: iso(record.started_at),
            routes: serde_json::from_value(record.routing).unwrap_or_default(),
        });
    }
    RolloutView {
        run_id: (!manual).then(|| record.run_id.clone()),
        task: record.task_id,
        by: manual.then_some(record.run_id),
        strategy: record.strategy,
        alias: record.alias,
        from: record.previous_version,
        to: record.version,
        badge: match record.state.as_str() {
            "succeeded" => "success",
            "rolled_back" => "failed",
            "rolling_back" => "up_for_retry",
            _ => "running",
        },
        state: record.state,
        started: iso(record.started_at),
        ended: ended.then(|| iso(record.updated_at)),
        steps,
        checks: checks
            .into_iter()
            .map(|c| CheckView {
                step: c.step + 1,
                at: iso(c.at),
                outcome: c.outcome,
                details: c.details,
            })
            .collect(),
        rollback_reason: record.rollback_reason,
        overrides: detail.overrides,
    }
}

/// One alias move as the page shows it.
#[derive(Debug, Serialize)]
struct MoveView {
    alias: String,
    from: Option<u32>,
    to: Option<u32>,
    at: String,
    by: String,
    /// The run page, when a run's task moved it.
    run_link: Option<String>,
}

fn move_view(moved: &AliasMove) -> MoveView {
    let run_link = moved
        .moved_by
        .strip_prefix("run:")
        .and_then(|rest| rest.split_once('/'))
        .map(|(run, _)| format!("/runs/{run}"));
    MoveView {
        alias: moved.alias.clone(),
        from: moved.from,
        to: moved.to,
        at: iso(moved.moved_at),
        by: moved.moved_by.clone(),
        run_link,
    }
}

/// An alias that can be rolled back: where it is and where it would go.
#[derive(Debug, Serialize)]
struct Rollbackable {
    alias: String,
    current: u32,
    target: u32,
    /// Its confirmation page.
    href: String,
}

impl Rollbackable {
    fn new(model: &str, alias: &str, (current, target): (u32, u32)) -> Rollbackable {
        Rollbackable {
            alias: alias.to_owned(),
            current,
            target,
            href: format!(
                "/models/{}/deployments/rollback?alias={}",
                url_encode(model),
                url_encode(alias)
            ),
        }
    }
}

fn registry(state: &WebState) -> Result<&Tracking> {
    state.tracking.as_deref().ok_or_else(|| {
        WebError::NotFound("tracking is not configured, so there is no model registry".into())
    })
}

fn tracking_error(e: crate::tracking::TrackingError) -> WebError {
    WebError::Internal(format!("the model registry could not be read: {e}"))
}

/// The model's alias moves, oldest first; 404 when the registry has no such model.
async fn alias_moves(tracking: &Tracking, name: &str) -> Result<Vec<AliasMove>> {
    if tracking
        .get_model(name)
        .await
        .map_err(tracking_error)?
        .is_none()
    {
        return Err(WebError::NotFound(format!(
            "there is no registered model `{name}`"
        )));
    }
    tracking.alias_history(name).await.map_err(tracking_error)
}

/// The aliases a rollback can move, by name.
fn rollbackable(model: &str, moves: &[AliasMove]) -> Vec<Rollbackable> {
    let mut aliases: Vec<&str> = moves.iter().map(|m| m.alias.as_str()).collect();
    aliases.sort_unstable();
    aliases.dedup();
    aliases
        .into_iter()
        .filter_map(|alias| {
            alias::rollback_target(moves, alias).map(|found| Rollbackable::new(model, alias, found))
        })
        .collect()
}

async fn history_page(
    state: &WebState,
    session: &Session,
    name: &str,
    done: Option<String>,
) -> Result<Response> {
    let tracking = registry(state)?;
    let moves = alias_moves(tracking, name).await?;
    let rollouts: Vec<RolloutView> = state
        .store
        .rollouts_of_model(name, SHOWN_ROLLOUTS)
        .await?
        .into_iter()
        .map(view)
        .collect();
    let masker = &state.settings.masker;
    // Check details and reasons quote what metric sources answered.
    let rollouts: Vec<Value> = rollouts
        .iter()
        .map(|r| {
            let mut value = serde_json::to_value(r).unwrap_or_default();
            masker.mask_json(&mut value);
            value
        })
        .collect();
    let history: Vec<MoveView> = moves.iter().rev().map(move_view).collect();
    let mut response = render(
        "deployments.html",
        minijinja::context! {
            title => format!("{name} · deployments"),
            user => session.view(),
            model => name,
            rollouts => Serde(&rollouts),
            moves => Serde(&history),
            rollbackable => Serde(rollbackable(name, &moves)),
            done,
        },
    )?
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /models/{name}/deployments`.
async fn page(
    State(state): State<WebState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response> {
    history_page(&state, &session, &name, None).await
}

#[derive(Debug, Deserialize)]
struct AliasQuery {
    #[serde(default = "champion")]
    alias: String,
}

fn champion() -> String {
    "champion".into()
}

/// `GET /models/{name}/deployments/rollback?alias=champion`: what a rollback would move.
async fn rollback_page(
    State(state): State<WebState>,
    session: Session,
    Path(name): Path<String>,
    Query(query): Query<AliasQuery>,
) -> Result<Response> {
    let tracking = registry(&state)?;
    let moves = alias_moves(tracking, &name).await?;
    let target = alias::rollback_target(&moves, &query.alias)
        .map(|found| Rollbackable::new(&name, &query.alias, found));
    let refusal = target.is_none().then(|| {
        format!(
            "`{}` of `{name}` has no earlier version to go back to",
            query.alias
        )
    });
    let mut response = render(
        "deployments.html",
        minijinja::context! {
            title => format!("Roll back {name}?"),
            user => session.view(),
            model => name,
            confirm => Serde(&target),
            alias => query.alias,
            refusal => refusal.as_deref().map(super::as_sentence),
        },
    )?
    .into_response();
    // The page holds a form token.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct RollbackForm {
    #[serde(default)]
    csrf: String,
    alias: String,
    /// The version the alias held when the confirmation was shown.
    expected: u32,
}

/// `POST /models/{name}/deployments/rollback`: operators and admins only.
async fn rollback(
    State(state): State<WebState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Result<Response> {
    session.authorize_action(&form.csrf)?;
    let tracking = registry(&state)?;
    alias_moves(tracking, &name).await?;
    let moved = alias::roll_back(
        tracking,
        &state.store,
        &name,
        &form.alias,
        form.expected,
        &session.user,
    )
    .await
    .map_err(|e| match e {
        RollbackError::Refused(why) => WebError::Conflict(why),
        RollbackError::Store(e) => WebError::Store(e),
        RollbackError::Tracking(e) => tracking_error(e),
    })?;
    let (from, to) = (
        moved
            .from
            .map_or("nothing".to_owned(), |v| format!("version {v}")),
        moved
            .to
            .map_or("nothing".to_owned(), |v| format!("version {v}")),
    );
    info!(model = %name, alias = %form.alias, user = %session.user, %from, %to, "Alias rolled back from the UI.");
    let done = format!(
        "Rolled `{}` back from {from} to {to}; serving now routes all traffic to {to}.",
        form.alias
    );
    history_page(&state, &session, &name, Some(super::as_sentence(&done))).await
}
