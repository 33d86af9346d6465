//! The HTTP side of `sluice serve`: the JSON API under `/api/v1` (bearer tokens, OpenAPI
//! document), the operations endpoints (`/healthz`, `/metrics`) and GitHub's webhook
//! (`/hooks/github`, authenticated by its signature). `router` is a plain
//! function of the shared state, so tests drive it with `oneshot` and no socket.
//!
//! The server never imports `scheduler` or `worker`: it writes requests into `store` (a queued
//! run, cleared tries, a cancelled run) and they react to the store's events.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::error;
use utoipa::ToSchema;

use crate::catalog::live::Catalog;
use crate::config::WebhookSecret;
use crate::store::{Store, StoreError};
use crate::template::Templates;

mod api;
mod auth;
mod deliveries;
mod drift;
mod eval_report;
mod hooks;
pub mod metrics;
mod openapi;
mod ops;
mod reproduce;
mod routing;
mod tracking;

pub use ops::{OpsState, ops_only_router};

/// The largest request body accepted; anything bigger is answered with 413. Run params are
/// small documents, so a megabyte leaves room without letting one request fill memory.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    /// Accepted bearer tokens. Empty means reads are open and every change is refused.
    pub api_tokens: Arc<[String]>,
    /// The Prometheus recorder's handle, rendered by `/metrics` after the database gauges.
    pub metrics: Option<PrometheusHandle>,
    /// The secret GitHub signs deliveries with; without one `/hooks/github` accepts nothing.
    pub webhook_secret: Option<WebhookSecret>,
    /// Renders the params `github` triggers map from a delivery.
    pub templates: Arc<Templates>,
    /// How the web UI logs people in and what it masks.
    pub ui: Arc<crate::web::UiSettings>,
    /// Where artifact downloads are read from; `None` serves their list only.
    pub artifacts: Option<crate::artifacts::Artifacts>,
    /// Experiments and the model registry; `None` answers their routes with 503.
    pub tracking: Option<Arc<crate::tracking::Tracking>>,
}

impl AppState {
    /// The UI's view of this state, for the UI's routes and for readers the API shares with
    /// them. Each call gets a fresh login limiter: only `router` keeps one.
    pub(crate) fn web_state(&self) -> crate::web::WebState {
        crate::web::WebState {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            settings: self.ui.clone(),
            login_limiter: Arc::default(),
            artifacts: self.artifacts.clone(),
            tracking: self.tracking.clone(),
        }
    }

    /// State with the given tokens; empty tokens are dropped so a stray comma in
    /// `SLUICE_API_TOKEN` never makes the empty string a valid credential.
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        api_tokens: &[String],
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        AppState {
            store,
            catalog,
            api_tokens: api_tokens
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            metrics,
            webhook_secret: None,
            templates: Arc::new(Templates::new()),
            ui: Arc::default(),
            artifacts: None,
            tracking: None,
        }
    }

    /// The same state, serving experiments and the registry from `tracking`.
    pub fn with_tracking(self, tracking: Arc<crate::tracking::Tracking>) -> AppState {
        AppState {
            tracking: Some(tracking),
            ..self
        }
    }

    /// The same state, serving artifact downloads from `artifacts`.
    pub fn with_artifacts(self, artifacts: crate::artifacts::Artifacts) -> AppState {
        AppState {
            artifacts: Some(artifacts),
            ..self
        }
    }

    /// The same state, accepting GitHub deliveries signed with `secret` (none: refused).
    pub fn with_webhook_secret(self, secret: Option<WebhookSecret>) -> AppState {
        AppState {
            webhook_secret: secret,
            ..self
        }
    }

    /// The same state with the web UI's settings.
    pub fn with_ui(self, ui: crate::web::UiSettings) -> AppState {
        AppState {
            ui: Arc::new(ui),
            ..self
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens.
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("api_tokens", &self.api_tokens.len())
            .field("webhook_secret", &self.webhook_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// Every route the router serves. The router's OpenAPI document is generated from the
/// handlers, and a test checks that it lists exactly these routes, so a route cannot be added
/// without being listed here (and so without the auth test covering it).
pub fn routes() -> &'static [(Method, &'static str)] {
    ROUTES
}

static ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/healthz"),
    (Method::GET, "/metrics"),
    (Method::GET, "/api/v1/openapi.json"),
    (Method::GET, "/api/v1/workflows"),
    (Method::GET, "/api/v1/workflows/{id}"),
    (Method::POST, "/api/v1/workflows/{id}/pause"),
    (Method::POST, "/api/v1/workflows/{id}/unpause"),
    (Method::POST, "/api/v1/workflows/{id}/runs"),
    (Method::POST, "/api/v1/workflows/{id}/backfill"),
    (Method::POST, "/api/v1/backfills/{id}/cancel"),
    (Method::GET, "/api/v1/runs"),
    (Method::GET, "/api/v1/runs/{id}"),
    (Method::POST, "/api/v1/runs/{id}/cancel"),
    (Method::POST, "/api/v1/runs/{id}/tasks/{task}/clear"),
    (Method::POST, "/api/v1/runs/{id}/tasks/{task}/mark"),
    (Method::POST, "/api/v1/runs/{id}/rerun"),
    (Method::GET, "/api/v1/runs/{id}/tasks/{task}/logs"),
    (Method::GET, "/api/v1/runs/{id}/artifacts"),
    (Method::GET, "/api/v1/runs/{id}/artifacts/{name}"),
    (Method::GET, "/api/v1/runs/{id}/tasks/{task}/drift"),
    (Method::GET, "/api/v1/runs/{id}/tasks/{task}/eval"),
    (Method::GET, "/api/v1/import-errors"),
    (Method::GET, "/api/v1/github/deliveries"),
    (Method::GET, "/api/v1/models/{name}/routing"),
    (Method::GET, "/api/v1/tracking/experiments"),
    (Method::GET, "/api/v1/tracking/experiments/{id}/runs"),
    (Method::GET, "/api/v1/tracking/runs/{id}"),
    (Method::GET, "/api/v1/tracking/runs/{id}/metrics/{key}"),
    (Method::GET, "/api/v1/models"),
    (Method::GET, "/api/v1/models/{name}"),
    (Method::GET, "/api/v1/models/{name}/versions/{version}"),
    (Method::GET, "/api/v1/models/{name}/aliases/{alias}"),
    (Method::GET, "/api/v1/models/{name}/diff"),
    (Method::POST, "/api/v1/tracking/runs/{id}/reproduce"),
    (
        Method::POST,
        "/api/v1/models/{name}/versions/{version}/reproduce",
    ),
];

/// The whole HTTP surface: API routes behind the token check, operations routes open, and the
/// web UI (its own login) beside them.
pub fn router(state: AppState) -> Router {
    let web_state = state.web_state();
    let web = crate::web::router(web_state.clone());
    let (api, doc) = openapi::api_router().split_for_parts();
    let (ops, ops_doc) = openapi::ops_router().split_for_parts();
    let mut doc = doc;
    doc.merge(ops_doc);
    let api = api
        .merge(openapi::document_route(doc))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    ops.merge(api)
        .merge(hooks::router())
        .merge(web)
        .fallback({
            let web_state = web_state.clone();
            move |request: Request| not_found(web_state.clone(), request)
        })
        .method_not_allowed_fallback(move |request: Request| {
            method_not_allowed(web_state.clone(), request)
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// An unknown path: the HTML 404 page for people, this API's JSON error for programs.
async fn not_found(web: crate::web::WebState, request: Request) -> Response {
    if wants_page(request.uri().path(), request.headers()) {
        crate::web::not_found_page(web, request).await
    } else {
        Error::NotFound("there is no such route; see /api/v1/openapi.json".into()).into_response()
    }
}

/// Whether a refused request is answered with a page. Under `/api` and `/hooks` and on the
/// operations endpoints only a browser (one that accepts HTML) gets one; elsewhere everyone
/// does, except a client that asks for JSON and not HTML.
fn wants_page(path: &str, headers: &axum::http::HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let accepts_html = accept.contains("text/html");
    let machine_side = ["/api", "/hooks"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        || matches!(path, "/healthz" | "/metrics");
    if machine_side {
        accepts_html
    } else {
        accepts_html || !accept.contains("application/json")
    }
}

/// A known path with a method it does not take: a page for people, JSON for programs.
async fn method_not_allowed(web: crate::web::WebState, request: Request) -> Response {
    if wants_page(request.uri().path(), request.headers()) {
        crate::web::method_not_allowed_page(web, request).await
    } else {
        Error::Rejected {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "this route does not accept that method; see /api/v1/openapi.json".into(),
        }
        .into_response()
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error!("A request handler panicked.");
    Error::Internal("a request handler panicked".into()).into_response()
}

/// Every error the API answers with, rendered as `{"error": "...", "details": [...]}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its content is not acceptable (422).
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    Conflict(String),
    /// An extractor refused the request (malformed JSON, body too large, wrong method…).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// A failure on our side; the cause is logged, the caller sees a plain message.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A sentence saying what went wrong.
    pub error: String,
    /// The individual problems, when there are several (one per invalid param, for example).
    pub details: Vec<String>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, message, details) = match self {
            Error::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m, Vec::new()),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, m, Vec::new()),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, m, Vec::new()),
            Error::Invalid { message, details } => {
                (StatusCode::UNPROCESSABLE_ENTITY, message, details)
            }
            Error::Conflict(m) => (StatusCode::CONFLICT, m, Vec::new()),
            Error::Rejected { status, message } => (status, message, Vec::new()),
            Error::Store(StoreError::RunNotFound(id)) => (
                StatusCode::NOT_FOUND,
                format!("there is no run with id `{id}`"),
                Vec::new(),
            ),
            Error::Internal(cause) => {
                error!(cause = %cause, "A request failed on the server side.");
                internal()
            }
            Error::Store(cause) => {
                error!(cause = %cause, "A request failed in the database.");
                internal()
            }
        };
        let mut response = (
            status,
            axum::Json(ErrorBody {
                error: message,
                details,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn internal() -> (StatusCode, String, Vec<String>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server could not complete the request; the cause is in its log".into(),
        Vec::new(),
    )
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        let status = match &rejection {
            // A syntax error is a malformed request; a well-formed document of the wrong shape
            // keeps axum's 422.
            JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
            _ => rejection.status(),
        };
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than the limit of {BODY_LIMIT} bytes")
        } else {
            rejection.body_text()
        };
        Error::Rejected { status, message }
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Error::BadRequest(rejection.body_text())
    }
}

/// `axum::Json` whose refusals are this API's JSON errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose refusals are this API's JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` whose refusals are this API's JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_pages_and_api_clients_json() {
        let accept = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(header::ACCEPT, v);
            }
            headers
        };
        let browser = accept("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(wants_page("/nope", &browser));
        assert!(wants_page("/api/v1/nope", &browser));
        assert!(wants_page("/nope", &accept("")));
        assert!(!wants_page("/nope", &accept("application/json")));
        assert!(!wants_page("/api/v1/nope", &accept("")));
        assert!(!wants_page("/api", &accept("*/*")));
        assert!(!wants_page("/hooks/nope", &accept("application/json")));
        assert!(wants_page("/apix", &accept("*/*")), "only the /api folder");
        assert!(!wants_page("/healthz", &accept("*/*")));
    }
}
