//! The OpenAPI document, generated from the handlers' annotations and types: the routers here
//! register each handler together with its description, so the document cannot miss a route.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, api, deliveries, drift, eval_report, ops, reproduce, routing, tracking};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Sluice API", description = "Workflows, runs, task logs and backfills."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "workflows", description = "Workflow files in the catalog"),
        (name = "runs", description = "Runs, their tasks and logs"),
        (name = "github", description = "GitHub webhook deliveries"),
        (name = "tracking", description = "Experiments and their tracking runs"),
        (name = "registry", description = "Registered models, versions, aliases and diffs"),
        (name = "operations", description = "Health and metrics, open without a token"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api/v1` routes, behind the token check once split.
pub(super) fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::list_workflows))
        .routes(routes!(api::get_workflow))
        .routes(routes!(api::pause))
        .routes(routes!(api::unpause))
        .routes(routes!(api::trigger))
        .routes(routes!(api::backfill))
        .routes(routes!(api::cancel_backfill))
        .routes(routes!(api::list_runs))
        .routes(routes!(api::get_run))
        .routes(routes!(api::cancel_run))
        .routes(routes!(api::clear_task))
        .routes(routes!(api::mark_task))
        .routes(routes!(api::rerun))
        .routes(routes!(api::task_logs))
        .routes(routes!(api::list_artifacts))
        .routes(routes!(api::download_artifact))
        .routes(routes!(drift::drift_report))
        .routes(routes!(eval_report::eval_report))
        .routes(routes!(api::import_errors))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(tracking::list_experiments))
        .routes(routes!(tracking::experiment_runs))
        .routes(routes!(tracking::get_tracking_run))
        .routes(routes!(tracking::metric_history))
        .routes(routes!(tracking::list_models))
        .routes(routes!(tracking::get_model))
        .routes(routes!(tracking::get_model_version))
        .routes(routes!(tracking::get_alias))
        .routes(routes!(tracking::diff_versions))
        .routes(routes!(routing::model_routing))
        .routes(routes!(reproduce::reproduce_tracking_run))
        .routes(routes!(reproduce::reproduce_model_version))
}

/// The operations routes, open to everyone.
pub(super) fn ops_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
}

/// Serves the document itself; it is rendered once, when the router is built.
pub(super) fn document_route(doc: OpenApi) -> Router<AppState> {
    let body: Arc<str> = match doc.to_pretty_json() {
        Ok(json) => json.into(),
        Err(e) => {
            tracing::error!(error = %e, "The OpenAPI document could not be rendered.");
            "{}".into()
        }
    };
    Router::new().route(
        "/api/v1/openapi.json",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
        }),
    )
}
