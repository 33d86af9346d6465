//! The eval report of an `eval` task: metrics against thresholds and the champion, every example, and the regressions.

use axum::Router;

use super::WebState;

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
}
