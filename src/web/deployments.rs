//! A model's deployment history (rollouts, their steps, checks and rollbacks) and the Rollback action.

use axum::Router;

use super::WebState;

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
}
