//! The web UI: server-rendered pages (minijinja templates from `web/templates`, embedded in the
//! binary with `web/static`), login sessions, form actions behind a per-session CSRF token, and
//! server-sent events that keep the run and workflow pages live.
//!
//! It sits beside `server` (which mounts `router` next to the API) and reads through `store`
//! and `catalog`; like `server`, it never imports `scheduler` or `worker`: an action writes to
//! the store and they react to its events.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use tracing::error;

use crate::catalog::live::Catalog;
use crate::secrets::Masker;
use crate::store::{BadCursor, Store, StoreError};

mod actions;
pub mod artifacts;
mod assets;
pub mod auth;
pub mod control;
mod deliveries;
mod deployments;
pub mod drift;
pub mod eval_report;
mod graph;
mod import_errors;
mod live;
mod logs;
mod pages;
mod reproduce;
mod run_view;
mod runs;
pub mod throttle;
mod times;
mod tracking;
mod trigger;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "sluice_session";

/// How the UI authenticates and what it shows.
#[derive(Debug, Clone)]
pub struct UiSettings {
    /// The argon2 hash of the `admin` user's password; without one, only users created with
    /// `sluice user add` can log in.
    pub admin_password_hash: Option<String>,
    pub session_lifetime: Duration,
    /// Mark the session cookie `Secure` (the UI is served over https).
    pub secure_cookies: bool,
    /// Masks secret values in everything a page shows.
    pub masker: Arc<Masker>,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            admin_password_hash: None,
            session_lifetime: crate::config::DEFAULT_SESSION_LIFETIME,
            secure_cookies: false,
            masker: Arc::new(Masker::new(Vec::new())),
        }
    }
}

/// What every UI handler shares. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub settings: Arc<UiSettings>,
    /// Login attempts per client address; one per server, shared by its requests.
    pub login_limiter: Arc<throttle::AddressLimiter>,
    /// Where artifact downloads and previews are read from; `None` lists them only.
    pub artifacts: Option<crate::artifacts::Artifacts>,
    /// Experiments and the model registry; `None` shows their pages as unavailable.
    pub tracking: Option<Arc<crate::tracking::Tracking>>,
}

/// The UI's routes, with their state already applied so they merge into any router.
pub fn router<S: Clone + Send + Sync + 'static>(state: WebState) -> Router<S> {
    Router::new()
        .route("/", get(pages::workflows))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", get(auth::logout_page).post(auth::logout))
        .route("/workflows/{id}", get(pages::workflow))
        .route(
            "/workflows/{id}/trigger",
            get(trigger::form).post(trigger::submit),
        )
        .route("/workflows/{id}/pause", post(actions::pause))
        .route("/workflows/{id}/unpause", post(actions::unpause))
        .route("/workflows/{id}/events", get(live::workflow_events))
        .route("/workflows/{id}/runs", get(pages::workflow_runs))
        .route("/runs", get(runs::list))
        .route("/runs/{run_id}", get(pages::run))
        .route(
            "/runs/{run_id}/cancel",
            get(actions::cancel_page).post(actions::cancel),
        )
        .route("/runs/{run_id}/rerun", get(actions::rerun_page))
        .route(
            "/runs/{run_id}/tasks/{task}/clear",
            get(actions::clear_page).post(actions::clear),
        )
        .route(
            "/runs/{run_id}/tasks/{task}/mark",
            get(actions::mark_page).post(actions::mark),
        )
        .route("/runs/{run_id}/events", get(live::run_events))
        .route("/runs/{run_id}/gantt", get(pages::run_gantt_section))
        .route("/runs/{run_id}/tasks/{task}/log.txt", get(logs::raw))
        .route("/runs/{run_id}/artifacts/{name}", get(artifacts::download))
        .route("/runs/{run_id}/tasks/{task}/drift", get(drift::report))
        .route("/github/deliveries", get(deliveries::list))
        .route("/import-errors/source", get(import_errors::source))
        .route("/static/{*path}", get(assets::serve))
        .merge(tracking::routes())
        .merge(reproduce::routes())
        .merge(eval_report::routes())
        .merge(deployments::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            error_pages_with_navigation,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The policy for every UI response: scripts and styles only from this server (so an injected
/// `<script>` or `style=` does nothing), no framing, no MIME sniffing, no referrer to others.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
                   frame-ancestors 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // A response with a stricter policy of its own (an artifact download's `sandbox`)
    // keeps it.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Every way a UI request fails, rendered as an HTML page with the matching status.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed: a missing or wrong CSRF token, or a role that may not act.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("rendering the page failed: {0}")]
    Template(#[from] minijinja::Error),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = WebError> = std::result::Result<T, E>;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            WebError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            WebError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            WebError::Template(_) | WebError::Internal(_) | WebError::Store(_) => {
                error!(cause = %self, "A page failed on the server side.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server could not show this page; the cause is in its log".to_owned(),
                )
            }
        };
        let mut response = error_page(status, &message, None);
        response.extensions_mut().insert(ErrorPage { message });
        response
    }
}

/// The message of an error page a handler returned, kept on the response so that
/// `error_pages_with_navigation` can draw it again for a logged-in visitor.
#[derive(Debug, Clone)]
struct ErrorPage {
    message: String,
}

/// Handlers fail before (or without) knowing who asks, so their error pages are drawn
/// without the navigation; this draws them again with it when the request has a session.
async fn error_pages_with_navigation(
    axum::extract::State(state): axum::extract::State<WebState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::extract::FromRequestParts;
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let Some(ErrorPage { message }) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    // A GET with the same headers: the session extractor reads only the cookie.
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    parts.headers = headers;
    match auth::Session::from_request_parts(&mut parts, &state).await {
        Ok(session) => error_page(response.status(), &message, Some(&session)),
        Err(_) => response,
    }
}

/// What a page says when the store refuses the cursor in its link.
pub(crate) const DAMAGED_PAGE_LINK: &str =
    "This page link is damaged or out of date; start again from the newest runs.";

impl From<BadCursor> for WebError {
    fn from(_: BadCursor) -> Self {
        WebError::BadRequest(DAMAGED_PAGE_LINK.to_owned())
    }
}

/// An error page: a heading people understand for the status, the message as a sentence, and
/// the navigation when the visitor is logged in.
fn error_page(status: StatusCode, message: &str, session: Option<&auth::Session>) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::BAD_REQUEST => "This request cannot be used",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible right now",
        StatusCode::INTERNAL_SERVER_ERROR => "Something went wrong",
        StatusCode::METHOD_NOT_ALLOWED => "Not a page",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let message = as_sentence(message);
    let user = session.map(auth::Session::view);
    let body = render(
        "error.html",
        minijinja::context! { title, status => status.as_u16(), message, user },
    )
    .unwrap_or_else(|_| {
        Html(format!(
            "<!doctype html><title>{status}</title><p>{status}</p>"
        ))
    });
    (status, body).into_response()
}

/// A handler's message as people read it: a capital first letter, names in quotes rather than
/// code marks, and a full stop.
fn as_sentence(message: &str) -> String {
    let mut quoted = String::with_capacity(message.len() + 4);
    let mut open = true;
    for c in message.chars() {
        if c == '`' {
            quoted.push(if open { '“' } else { '”' });
            open = !open;
        } else {
            quoted.push(c);
        }
    }
    let mut chars = quoted.chars();
    let mut sentence: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !sentence.ends_with(['.', '!', '?']) {
        sentence.push('.');
    }
    sentence
}

/// The most of an unknown path an error page repeats.
const SHOWN_PATH_CHARS: usize = 200;

/// The page for a path nothing serves: the HTML 404, with the navigation when the visitor is
/// logged in (an anonymous visitor is not sent to log in only to find nothing there).
pub async fn not_found_page(state: WebState, request: axum::extract::Request) -> Response {
    fallback_page(state, request, StatusCode::NOT_FOUND).await
}

/// The page for a known path asked with a method it does not take (a form's address opened
/// as a link): the HTML 405, with the navigation when the visitor is logged in.
pub async fn method_not_allowed_page(state: WebState, request: axum::extract::Request) -> Response {
    fallback_page(state, request, StatusCode::METHOD_NOT_ALLOWED).await
}

async fn fallback_page(
    state: WebState,
    request: axum::extract::Request,
    status: StatusCode,
) -> Response {
    use axum::extract::FromRequestParts;
    let (mut parts, _) = request.into_parts();
    let session = auth::Session::from_request_parts(&mut parts, &state)
        .await
        .ok();
    let path: String = parts.uri.path().chars().take(SHOWN_PATH_CHARS).collect();
    let message = if status == StatusCode::NOT_FOUND {
        format!("there is no page at `{path}`; check the address")
    } else {
        format!("`{path}` is not a page to open; use the buttons and forms of the pages instead")
    };
    security_headers(error_page(status, &message, session.as_ref())).await
}

/// Renders one of the embedded templates; `.html` templates escape every value.
pub(crate) fn render(name: &str, context: minijinja::Value) -> Result<Html<String>> {
    Ok(Html(
        assets::templates().get_template(name)?.render(context)?,
    ))
}

/// A time as the pages print it: UTC, ISO 8601, to the second.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration as people read it: `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
pub(crate) fn human_duration(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A path inside this site, safe to redirect to after login (never `//host` or a scheme).
pub(crate) fn local_path(candidate: &str) -> Option<&str> {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.starts_with("/\\")
        && !candidate.chars().any(|c| c.is_control());
    ok.then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        let d = chrono::TimeDelta::milliseconds;
        assert_eq!(human_duration(d(850)), "850ms");
        assert_eq!(human_duration(d(12_340)), "12.3s");
        assert_eq!(human_duration(d(245_000)), "4m 05s");
        assert_eq!(human_duration(d(7_380_000)), "2h 03m");
        assert_eq!(human_duration(d(-5)), "0ms");
    }

    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(
            as_sentence("there is no run with id `r1`"),
            "There is no run with id “r1”."
        );
        assert_eq!(as_sentence("Done."), "Done.");
        assert_eq!(as_sentence(""), "");
    }

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert_eq!(local_path("/runs/x?a=1"), Some("/runs/x?a=1"));
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "runs",
            "/a\nb",
            "",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
    }
}
