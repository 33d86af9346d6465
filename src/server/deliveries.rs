//! `GET /api/v1/github/deliveries`: the GitHub deliveries received, newest first, with what
//! became of each (the runs it started, or why it started none), for checking a hook's setup.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Error, ErrorBody, Json, Query, Result};
use crate::store::DeliveryRecord;

/// One webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`.
    pub event: String,
    pub action: Option<String>,
    /// `owner/name`.
    pub repository: Option<String>,
    /// The branch the event concerns (a push's branch, a pull request's base branch, …).
    pub branch: Option<String>,
    /// The pushed or released tag.
    pub tag: Option<String>,
    /// The commit the event concerns.
    pub sha: Option<String>,
    /// The login of who caused the event.
    pub sender: Option<String>,
    /// `started`, `ignored` or `rejected`.
    pub outcome: String,
    /// Why nothing (or not everything) started.
    pub reason: Option<String>,
    /// The runs the delivery started.
    pub runs: Vec<String>,
    pub received_at: DateTime<Utc>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            delivery: d.id,
            event: d.event,
            action: d.action,
            repository: d.repository,
            branch: d.branch,
            tag: d.tag,
            sha: d.sha,
            sender: d.sender,
            outcome: d.outcome.as_str().to_owned(),
            reason: d.reason,
            runs: d.run_ids,
            received_at: d.received_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Deliveries per page (default 50, at most 500).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists GitHub webhook deliveries, newest first, one page at a time.
#[utoipa::path(get, path = "/api/v1/github/deliveries", tag = "github", params(DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_deliveries(
    State(state): State<AppState>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<DeliveryList>> {
    let limit = super::api::page_limit(query.limit)?;
    let page = state
        .store
        .list_deliveries(limit, query.cursor.as_deref())
        .await?
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    Ok(Json(DeliveryList {
        deliveries: page
            .deliveries
            .into_iter()
            .map(DeliveryView::from)
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
