//! Operations endpoints, open without a token: `/healthz` for load balancers and `/metrics`
//! for Prometheus.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::trace::TraceLayer;
use tracing::warn;
use utoipa::ToSchema;

use super::{AppState, Result};
use crate::store::Store;

/// What the operations endpoints read: the database and this process's recorder.
#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    pub metrics: Option<PrometheusHandle>,
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> Self {
        OpsState {
            store: state.store.clone(),
            metrics: state.metrics.clone(),
        }
    }
}

/// The operations endpoints alone, for processes without the API (`sluice worker --bind`).
pub fn ops_only_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            super::Error::NotFound("this process serves only /healthz and /metrics".into())
        })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    pub status: String,
}

/// 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub(super) async fn healthz(State(state): State<OpsState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok".into(),
            }),
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "Health check failed: the database does not answer.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Health {
                    status: "unavailable".into(),
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus text format: runs and task instances by state and the queue depth, counted in
/// the database at scrape time (so every server shows the same numbers), then the histograms
/// this process recorded.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(state): State<OpsState>) -> Result<Response> {
    let runs = state.store.run_counts().await?;
    let tasks = state.store.task_counts().await?;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(text, "# HELP sluice_runs Runs by state.");
    let _ = writeln!(text, "# TYPE sluice_runs gauge");
    for (s, n) in &runs {
        let _ = writeln!(text, "sluice_runs{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(
        text,
        "# HELP sluice_task_instances Task instances (tries) by state."
    );
    let _ = writeln!(text, "# TYPE sluice_task_instances gauge");
    for (s, n) in &tasks {
        let _ = writeln!(text, "sluice_task_instances{{state=\"{s}\"}} {n}");
    }
    let queued = tasks
        .iter()
        .find(|(s, _)| *s == crate::lifecycle::TaskState::Queued)
        .map_or(0, |(_, n)| *n);
    let _ = writeln!(
        text,
        "# HELP sluice_queue_depth Task instances waiting for a worker."
    );
    let _ = writeln!(text, "# TYPE sluice_queue_depth gauge");
    let _ = writeln!(text, "sluice_queue_depth {queued}");
    if let Some(handle) = &state.metrics {
        // Without the exporter's own runtime, draining old samples is the caller's job.
        handle.run_upkeep();
        text.push_str(&handle.render());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
