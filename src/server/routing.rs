//! `GET /api/v1/models/{name}/routing`: how a model's traffic is split right now — the versions,
//! their weights and modes (live or shadow) as its latest rollout set them — with an ETag, so a
//! serving layer can poll it cheaply (`If-None-Match` → 304).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Error, ErrorBody, Path, Query, Result};
use crate::operators::deploy::strategy::Route;

/// How many of a model's newest rollouts are searched for one of the asked alias.
const ALIAS_SEARCH: u64 = 200;

/// A model's routing as it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelRouting {
    pub model: String,
    /// The alias the rollout that set this routing moves.
    pub alias: String,
    /// The version that rollout deploys.
    pub version: String,
    /// Where that rollout stands: `route`, `bake`, `rolling_back`, `succeeded`, `rolled_back`.
    pub state: String,
    /// Each version's share: `live` versions answer `weight` percent of requests; `shadow`
    /// versions get a copy of `weight` percent, and their answers are not used.
    pub routes: Vec<Route>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoutingQuery {
    /// Only the rollouts of this alias (default: the model's latest rollout, any alias).
    pub alias: Option<String>,
}

/// The current routing of a model's traffic.
#[utoipa::path(get, path = "/api/v1/models/{name}/routing", tag = "registry",
    params(("name" = String, Path, description = "Registered model name"), RoutingQuery),
    responses((status = 200, body = ModelRouting, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn model_routing(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RoutingQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let rollouts = state.store.rollouts_of_model(&name, ALIAS_SEARCH).await?;
    let latest = rollouts
        .into_iter()
        .find(|r| query.alias.as_ref().is_none_or(|alias| *alias == r.alias))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "model `{name}` has no rollout{}",
                query
                    .alias
                    .as_ref()
                    .map_or(String::new(), |a| format!(" of alias `{a}`"))
            ))
        })?;
    let routes: Vec<Route> = serde_json::from_value(latest.routing).map_err(|e| {
        Error::Internal(format!(
            "the stored routing of `{name}` cannot be read: {e}"
        ))
    })?;
    let body = ModelRouting {
        model: latest.model,
        alias: latest.alias,
        version: latest.version,
        state: latest.state,
        routes,
        updated_at: latest.updated_at,
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| Error::Internal(format!("the routing cannot be written: {e}")))?;
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&json)[..16]));
    let etag_value = HeaderValue::from_str(&etag)
        .map_err(|e| Error::Internal(format!("bad ETag {etag}: {e}")))?;
    if matches(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        json,
    )
        .into_response())
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(matches(&headers, "\"b\""));
        assert!(matches(&headers, "\"a\""));
        assert!(!matches(&headers, "\"c\""));
        assert!(!matches(&HeaderMap::new(), "\"a\""));
    }
}
