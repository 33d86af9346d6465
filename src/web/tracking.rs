//! Experiments, tracking runs and the model registry: the pages over `tracking::Tracking`.

use axum::Router;

use super::WebState;

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
}
