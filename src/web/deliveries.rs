//! `GET /github/deliveries`: the GitHub webhook deliveries received, newest first, a page at a
//! time, with what became of each (the runs it started, why it started none, or why it was
//! rejected). Everything shown but the times comes from GitHub payloads, so it reaches the
//! template as plain data, which escapes it.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

use super::{Result, WebError, WebState, auth::Session, iso, render};
use crate::store::DeliveryRecord;

/// Deliveries per page.
const PAGE: usize = 50;
/// A commit as the page shows it (the full id is in its title).
const SHORT_SHA: usize = 7;

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct DeliveryRow {
    id: String,
    received_at: String,
    event: String,
    action: Option<String>,
    repository: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    sha: Option<String>,
    short_sha: Option<String>,
    outcome: &'static str,
    reason: Option<String>,
    runs: Vec<String>,
}

impl DeliveryRow {
    fn of(d: DeliveryRecord) -> DeliveryRow {
        DeliveryRow {
            short_sha: d.sha.as_ref().map(|s| s.chars().take(SHORT_SHA).collect()),
            received_at: iso(d.received_at),
            outcome: d.outcome.as_str(),
            id: d.id,
            event: d.event,
            action: d.action,
            repository: d.repository,
            branch: d.branch,
            tag: d.tag,
            sha: d.sha,
            reason: d.reason,
            runs: d.run_ids,
        }
    }
}

/// `GET /github/deliveries`.
pub async fn list(
    State(state): State<WebState>,
    session: Session,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Response> {
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let page = state
        .store
        .list_deliveries(PAGE, cursor.as_deref())
        .await?
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let rows: Vec<DeliveryRow> = page.deliveries.into_iter().map(DeliveryRow::of).collect();
    Ok(render(
        "deliveries.html",
        minijinja::context! {
            title => "GitHub deliveries",
            user => session.view(),
            deliveries => minijinja::Value::from(Serde(&rows)),
            cursor,
            next_cursor => page.next_cursor,
        },
    )?
    .into_response())
}
