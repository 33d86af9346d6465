//! `POST /hooks/github`: GitHub webhook deliveries. A delivery is authenticated by its
//! `X-Hub-Signature-256` (nothing is read or stored before that), recorded once per
//! `X-GitHub-Delivery` id, and starts the workflows whose `github` triggers match it. Runs are
//! created, never awaited, so GitHub gets its answer well inside its 10-second limit.
//!
//! The route sits outside `/api/v1`: GitHub cannot send a bearer token, the signature is its
//! credential. So it is neither behind the token check nor in the OpenAPI document.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{AppState, ErrorBody};
use crate::catalog::launch::{LaunchError, RunRequest, prepare};
use crate::dag::intervals::manual_interval;
use crate::github::{EventFacts, Fired, TriggerMatch, match_trigger, verify_signature};
use crate::store::{
    DeliveryOutcome, DeliveryRecord, DeliveryRun, NewDelivery, Recorded, RunOrigin,
};

/// GitHub sends payloads of at most 25 MB; anything larger is answered with 413.
pub const HOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;
/// The most of a reason that is stored and sent back; enough for a few dozen workflows.
const MAX_REASON: usize = 2000;
/// Event names and delivery ids (GUIDs) are short; a longer header is not from GitHub.
const MAX_HEADER_TOKEN: usize = 100;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/hooks/github", post(github))
        .layer(DefaultBodyLimit::max(HOOK_BODY_LIMIT))
}

/// What a delivery is answered with.
#[derive(Debug, Serialize)]
struct HookAnswer {
    delivery: String,
    /// `started`, `ignored` or `rejected`.
    outcome: &'static str,
    /// The runs this delivery started (the first time it was received).
    runs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The delivery id was seen before: nothing new was started.
    redelivery: bool,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
            details: Vec::new(),
        }),
    )
        .into_response()
}

fn answer(status: StatusCode, record: &DeliveryRecord, redelivery: bool) -> Response {
    (
        status,
        axum::Json(HookAnswer {
            delivery: record.id.clone(),
            outcome: record.outcome.as_str(),
            runs: record.run_ids.clone(),
            reason: record.reason.clone(),
            redelivery,
        }),
    )
        .into_response()
}

fn text_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn internal(cause: impl std::fmt::Display) -> Response {
    super::Error::Internal(format!("a GitHub delivery could not be processed: {cause}"))
        .into_response()
}

async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(secret) = state.webhook_secret.clone() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "GitHub webhooks are not enabled on this server: set SLUICE_GITHUB_WEBHOOK_SECRET \
             (or `webhook_secret` under `[github]` in sluice.toml) to the hook's secret",
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the delivery is larger than the limit of {HOOK_BODY_LIMIT} bytes"),
            );
        }
        Err(rejection) => return refuse(rejection.status(), rejection.body_text()),
    };
    let signature = text_header(&headers, "x-hub-signature-256");
    if let Err(e) = verify_signature(secret.expose().as_bytes(), &body, signature) {
        info!(reason = %e, "A GitHub delivery was refused: its signature is missing or wrong.");
        return refuse(StatusCode::UNAUTHORIZED, e.to_string());
    }
    let (event, delivery_id) = match identity(&headers) {
        Ok(identity) => identity,
        Err(problem) => return refuse(StatusCode::BAD_REQUEST, problem),
    };
    let received_at = Utc::now();
    let mut delivery = NewDelivery {
        id: delivery_id.to_owned(),
        event: event.to_owned(),
        action: None,
        repository: None,
        branch: None,
        tag: None,
        sha: None,
        sender: None,
        outcome: DeliveryOutcome::Ignored,
        reason: None,
        received_at,
    };
    let payload = match parse_payload(&headers, &body) {
        Ok(payload) => payload,
        Err(problem) => {
            delivery.outcome = DeliveryOutcome::Rejected;
            delivery.reason = Some(problem.clone());
            warn!(delivery = %delivery.id, event, problem = %problem, "A signed GitHub delivery could not be read.");
            return match state.store.record_delivery(&delivery, &[]).await {
                Ok(_) => refuse(StatusCode::BAD_REQUEST, problem),
                Err(e) => internal(e),
            };
        }
    };
    let facts = EventFacts::from_payload(event, &payload);
    delivery.action = facts.action.clone();
    delivery.repository = facts.repository.clone();
    delivery.branch = facts.branch.clone();
    delivery.tag = facts.tag.clone();
    delivery.sha = facts.sha.clone();
    delivery.sender = facts.sender.clone();
    // A redelivery is answered from the record without matching again; the unique key in
    // `record_delivery` still decides between copies that arrive together.
    match state.store.delivery(&delivery.id).await {
        Ok(Some(record)) => return answer(StatusCode::OK, &record, true),
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let runs = if event == "ping" {
        delivery.reason = Some("ping: GitHub checked the hook; nothing to start".to_owned());
        Vec::new()
    } else {
        match plan(&state, &delivery.id, &facts, &payload).await {
            Ok((runs, reason)) => {
                delivery.reason = reason;
                runs
            }
            Err(response) => return response,
        }
    };
    if !runs.is_empty() {
        delivery.outcome = DeliveryOutcome::Started;
    }
    match state.store.record_delivery(&delivery, &runs).await {
        Ok(Recorded::New(record)) => {
            info!(delivery = %record.id, event, outcome = record.outcome.as_str(), runs = record.run_ids.len(), "GitHub delivery received.");
            let status = match record.outcome {
                DeliveryOutcome::Started => StatusCode::CREATED,
                _ if event == "ping" => StatusCode::OK,
                _ => StatusCode::ACCEPTED,
            };
            answer(status, &record, false)
        }
        Ok(Recorded::Known(record)) => answer(StatusCode::OK, &record, true),
        Err(e) => internal(e),
    }
}

/// The `X-GitHub-Event` and `X-GitHub-Delivery` headers, or what is wrong with them.
fn identity(headers: &HeaderMap) -> Result<(&str, &str), &'static str> {
    // Both are short ASCII tokens (an event name, a GUID); anything else is not from GitHub.
    let token = |value: &str| {
        value.len() <= MAX_HEADER_TOKEN && value.chars().all(|c| c.is_ascii_graphic())
    };
    let event = text_header(headers, "x-github-event")
        .ok_or("the delivery has no `X-GitHub-Event` header")?;
    if !token(event) {
        return Err("the `X-GitHub-Event` header is not an event name");
    }
    let delivery = text_header(headers, "x-github-delivery")
        .ok_or("the delivery has no `X-GitHub-Delivery` header")?;
    if !token(delivery) {
        return Err("the `X-GitHub-Delivery` header is not a delivery id");
    }
    Ok((event, delivery))
}

/// The payload as a JSON object, or a sentence saying why it is not one.
fn parse_payload(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let form = text_header(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        return Err(
            "the hook sends form-encoded payloads; set its content type to application/json"
                .to_owned(),
        );
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err("the payload is JSON but not an object".to_owned()),
        Err(e) => Err(format!("the payload is not valid JSON: {e}")),
    }
}

/// The runs a delivery starts, and why the workflows that listen for its event but start
/// nothing do not.
async fn plan(
    state: &AppState,
    delivery_id: &str,
    facts: &EventFacts,
    payload: &Value,
) -> Result<(Vec<DeliveryRun>, Option<String>), Response> {
    let snapshot = state.catalog.snapshot();
    // Params mappings are templates from workflow files: render them off the async threads
    // and under the render budget, so a runaway mapping cannot stall the server.
    let matched = {
        let (snapshot, facts, payload) = (snapshot.clone(), facts.clone(), payload.clone());
        state
            .templates
            .off_thread("params", move |templates| {
                let context = minijinja::context! { event => crate::template::from_json(&payload) };
                Ok(snapshot
                    .workflows
                    .iter()
                    .filter_map(|(id, entry)| {
                        match_trigger(id, &entry.workflow.triggers, &facts, &context, templates)
                            .map(|found| (id.clone(), found))
                    })
                    .collect::<Vec<_>>())
            })
            .await
    };
    let matched = match matched {
        Ok(matched) => matched,
        Err(e) => {
            let reason = format!("the triggers could not be matched: {e}");
            return Ok((Vec::new(), Some(shorten(reason))));
        }
    };
    let mut fired: Vec<(String, Fired)> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    for (id, found) in matched {
        match found {
            TriggerMatch::Refused(reason) => reasons.push(format!("{id}: {reason}")),
            TriggerMatch::Fired(f) => fired.push((id, f)),
        }
    }
    if fired.is_empty() && reasons.is_empty() {
        let reason = format!(
            "no workflow has a `github` trigger for `{}` events",
            facts.event
        );
        return Ok((Vec::new(), Some(reason)));
    }
    let paused = if fired.is_empty() {
        Default::default()
    } else {
        state.store.paused().await.map_err(internal)?
    };
    let mut runs = Vec::with_capacity(fired.len());
    for (id, f) in fired {
        let id = id.as_str();
        if paused.contains(id) {
            reasons.push(format!("{id}: the workflow is paused"));
            continue;
        }
        let Some(entry) = snapshot.workflows.get(id) else {
            continue;
        };
        let interval = manual_interval(&entry.workflow, Utc::now());
        let request = RunRequest {
            params: f.params,
            trigger: "github".to_owned(),
            triggered_by: Some(format!("github:{delivery_id}")),
            logical_date: interval.logical_date(),
            data_interval: (interval.start, interval.end),
        };
        let path = entry.path.display().to_string();
        match prepare(&state.store, &entry.workflow, &path, request).await {
            Ok(prepared) => {
                let mut details = facts.to_details(delivery_id);
                details["status"] = match &f.status {
                    Some(s) => json!({ "context": s.context, "description": s.description }),
                    None => Value::Null,
                };
                runs.push(DeliveryRun {
                    run: prepared.run,
                    tasks: prepared.tasks,
                    origin: RunOrigin {
                        details,
                        event: payload.clone(),
                    },
                });
            }
            Err(LaunchError::Params(problems)) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                reasons.push(format!(
                    "{id}: the mapped params are invalid: {}",
                    problems.join("; ")
                ));
            }
            Err(LaunchError::Store(e)) => return Err(internal(e)),
        }
    }
    let reason = (!reasons.is_empty()).then(|| shorten(reasons.join("; ")));
    Ok((runs, reason))
}

fn shorten(mut text: String) -> String {
    if text.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
