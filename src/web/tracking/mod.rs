//! Experiments, tracking runs and the model registry, read through `tracking::Tracking` (so
//! they show the same on the built-in backend and MLflow): the experiments list, an
//! experiment's runs as a table with chosen columns, sorted, filtered and paged by the backend
//! (`experiments`); a tracking run with its metric histories as charts, and two to four runs
//! side by side (`runs`, charts from `charts`); models, versions, aliases with their history
//! and the diff of two versions (`models`). Without a tracking backend every page says so.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Result, WebError, WebState, auth::Session, render};
use crate::tracking::TrackingError;

mod charts;
mod experiments;
mod models;
mod runs;

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new()
        .route("/experiments", get(experiments::list))
        .route("/experiments/{id}", get(experiments::runs))
        .route("/tracking/runs/{id}", get(runs::run))
        .route("/tracking/runs/{id}/files/{*name}", get(runs::file))
        .route("/tracking/compare", get(runs::compare))
        .route("/models", get(models::list))
        .route("/models/{name}", get(models::model))
        .route("/models/{name}/versions/{version}", get(models::version))
        .route("/models/{name}/diff", get(models::diff))
}

impl From<TrackingError> for WebError {
    fn from(error: TrackingError) -> Self {
        match error {
            TrackingError::Store(e) => WebError::Store(e),
            TrackingError::UnknownVersion { .. }
            | TrackingError::UnknownRun(_)
            | TrackingError::UnknownFile { .. } => WebError::NotFound(error.to_string()),
            TrackingError::Invalid(message) => WebError::BadRequest(message),
            other => WebError::Internal(other.to_string()),
        }
    }
}

/// The page every tracking page shows when the server has no tracking backend.
fn unavailable(session: &Session) -> Result<Response> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "tracking_unavailable.html",
        minijinja::context! { title => "Tracking is not configured", user => session.view() },
    )
}

/// A number as the pages print it.
fn number(value: f64) -> String {
    super::drift::shown(&serde_json::json!(value))
}

/// Text logged by a task, as the pages show it: secrets masked.
fn masked(state: &WebState, text: &str) -> String {
    state.settings.masker.mask(text).into_owned()
}

/// Renders a page with a status.
fn page(status: StatusCode, name: &str, context: minijinja::Value) -> Result<Response> {
    Ok((status, render(name, context)?).into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use chrono::Utc;
    use tower::ServiceExt;

    use super::*;
    use crate::artifacts::{Artifacts, Limits, Location};
    use crate::store::{Role, SessionRecord, Store, StoreConfig};
    use crate::tracking::Tracking;
    use crate::tracking::{
        Builtin, LogBatch, MetricPoint, NewTrackingRun, SourceFile, VersionRequest,
    };

    const COOKIE: &str = "sluice_session=test-session";

    struct Ui {
        router: Router,
        tracking: Arc<Tracking>,
        _dir: tempfile::TempDir,
    }

    async fn ui(with_tracking: bool) -> Ui {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        store
            .create_session(
                &super::super::auth::token_hash("test-session"),
                &SessionRecord {
                    user_name: "ana".into(),
                    role: Role::Viewer,
                    csrf_token: "csrf".into(),
                    expires_at: Utc::now() + chrono::TimeDelta::hours(1),
                },
                Utc::now(),
            )
            .await
            .expect("session");
        let artifacts = Artifacts::open(
            &Location::Folder(dir.path().join("blobs")),
            Limits::default(),
        )
        .expect("blobs");
        let tracking = Arc::new(Tracking::Builtin(Builtin::new(store.clone(), artifacts)));
        let state = WebState {
            store,
            catalog: Arc::new(crate::catalog::live::Catalog::open(dir.path())),
            settings: Arc::default(),
            login_limiter: Arc::default(),
            artifacts: None,
            tracking: with_tracking.then(|| tracking.clone()),
        };
        Ui {
            router: super::super::router(state),
            tracking,
            _dir: dir,
        }
    }

    impl Ui {
        async fn get(&self, uri: &str) -> (StatusCode, String) {
            let response = self
                .router
                .clone()
                .oneshot(
                    Request::get(uri)
                        .header("cookie", COOKIE)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        /// Three runs: model a/b/a, exact_match 0.25/0.5/0.75 (after an earlier point).
        async fn seed(&self) -> (String, Vec<String>) {
            let experiment = self
                .tracking
                .experiment("eval <b>")
                .await
                .expect("experiment");
            let mut ids = Vec::new();
            for i in 0..3_i64 {
                let run = self
                    .tracking
                    .start_run(&NewTrackingRun {
                        experiment_id: experiment.id.clone(),
                        name: format!("run-{i}"),
                        lineage: crate::tracking::Lineage {
                            workflow_id: Some("eval".into()),
                            run_id: Some(format!("wf-run-{i}")),
                            task_id: Some("track".into()),
                            ..Default::default()
                        },
                        started_at: Utc::now() + chrono::TimeDelta::seconds(i),
                    })
                    .await
                    .expect("run");
                let point = |value, step| MetricPoint {
                    key: "exact_match".into(),
                    value,
                    step,
                    timestamp_ms: 1,
                };
                self.tracking
                    .log_batch(
                        &run.id,
                        &LogBatch {
                            params: vec![
                                ("model".into(), if i == 1 { "b" } else { "a" }.into()),
                                ("n".into(), "10".into()),
                            ],
                            metrics: vec![point(0.0, 0), point((i + 1) as f64 * 0.25, 1)],
                            tags: Vec::new(),
                        },
                    )
                    .await
                    .expect("log");
                ids.push(run.id);
            }
            (experiment.id, ids)
        }
    }

    fn rows(page: &str) -> Vec<&str> {
        page.split("data-tracking-run=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[tokio::test]
    async fn without_a_backend_every_page_says_tracking_is_not_configured() {
        let ui = ui(false).await;
        for uri in [
            "/experiments",
            "/experiments/x",
            "/tracking/runs/x",
            "/models",
            "/models/m",
        ] {
            let (status, page) = ui.get(uri).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert!(page.contains("Tracking is not configured"), "{uri}: {page}");
        }
    }

    #[tokio::test]
    async fn the_runs_table_filters_sorts_and_refuses_bad_filters_with_a_sentence() {
        let ui = ui(true).await;
        let (experiment, ids) = ui.seed().await;
        let (status, page) = ui.get("/experiments").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("eval &lt;b&gt;"), "escaped: {page}");
        let base = format!("/experiments/{experiment}");
        let (status, page) = ui.get(&base).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(rows(&page), [&ids[2], &ids[1], &ids[0]], "newest first");
        assert!(
            page.contains("data-column=\"metric.exact_match\""),
            "{page}"
        );
        let (status, page) = ui
            .get(&format!(
                "{base}?filter=metric.exact_match+%3E%3D+0.5+and+param.model+%3D+a&sort=metric.exact_match&order=asc&columns=param.model"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(rows(&page), [&ids[2]]);
        assert!(
            page.contains("1 matching run<"),
            "counted with the filter: {page}"
        );
        assert!(page.contains("data-column=\"param.model\""));
        assert!(
            !page.contains("data-column=\"metric.exact_match\""),
            "only the chosen column"
        );
        let (status, page) = ui
            .get(&format!("{base}?sort=metric.exact_match&order=desc"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rows(&page), [&ids[2], &ids[1], &ids[0]]);
        for bad in [
            "metric.exact_match+%3E+high",
            "param.model+%3C+a",
            "x+%3D+1",
        ] {
            let (status, page) = ui.get(&format!("{base}?filter={bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(page.contains("id=\"filter-problems\""), "{bad}: {page}");
            assert!(page.contains("The filter cannot be used"), "{bad}");
        }
        let (status, page) = ui.get(&format!("{base}?page=nope")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("damaged"), "{page}");
        let (status, _) = ui.get("/experiments/none").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_run_shows_charts_and_lineage_and_runs_compare_side_by_side() {
        let ui = ui(true).await;
        let (_, ids) = ui.seed().await;
        ui.tracking
            .log_file(
                &ids[0],
                SourceFile {
                    name: "reports/summary.html".into(),
                    bytes: b"<script>alert(1)</script>".to_vec(),
                },
            )
            .await
            .expect("file");
        let (status, page) = ui.get(&format!("/tracking/runs/{}", ids[0])).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("/files/reports&#x2f;summary.html\" download>"),
            "a download link: {page}"
        );
        let link = format!("/tracking/runs/{}/files/reports/summary.html", ids[0]);
        let response = ui
            .router
            .clone()
            .oneshot(
                Request::get(&link)
                    .header("cookie", COOKIE)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("content-security-policy").as_deref(),
            Some("sandbox")
        );
        assert_eq!(
            header("content-disposition").as_deref(),
            Some("attachment; filename=\"summary.html\"")
        );
        assert!(page.contains("<polyline"), "a chart: {page}");
        assert!(!page.contains("style="), "no inline styles");
        assert!(
            page.contains("href=\"/runs/wf-run-0\""),
            "lineage links the workflow run"
        );
        let (status, page) = ui
            .get(&format!("/tracking/compare?runs={},{}", ids[0], ids[1]))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("<tr data-key=\"model\" class=\"differs\">"),
            "{page}"
        );
        assert!(page.contains("<tr data-key=\"n\">"), "equal values: {page}");
        assert!(
            page.contains("(+0.25)"),
            "the delta against the first run: {page}"
        );
        let (status, page) = ui.get(&format!("/tracking/compare?runs={}", ids[0])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("Choose 2 to 4 runs"), "{page}");
        let (status, _) = ui.get("/tracking/compare?runs=a,b").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_registry_shows_versions_alias_history_and_key_diffs() {
        let ui = ui(true).await;
        for (temperature, by) in [("0.2", "user:ana"), ("0.7", "run:r9/track")] {
            let version = ui
                .tracking
                .create_model_version(VersionRequest {
                    model: "assistant".into(),
                    tracking_run_id: None,
                    description: String::new(),
                    tags: BTreeMap::new(),
                    files: vec![SourceFile {
                        name: "assistant.yaml".into(),
                        bytes: format!("params:\n  temperature: {temperature}\n").into_bytes(),
                    }],
                })
                .await
                .expect("version");
            ui.tracking
                .set_alias("assistant", "champion", version.version, by)
                .await
                .expect("alias");
        }
        let (status, page) = ui.get("/models").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("champion → 2"), "{page}");
        let (status, page) = ui.get("/models/assistant").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("href=\"/runs/r9\""),
            "a run's move links to it: {page}"
        );
        assert!(page.contains("/models/assistant/deployments"));
        let (status, page) = ui.get("/models/assistant/versions/1").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("temperature: 0.2"), "{page}");
        let (status, page) = ui.get("/models/assistant/diff?from=1&to=2").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("<tr class=\"key-changed\" data-key=\"params.temperature\">"),
            "{page}"
        );
        assert!(page.contains("<code>0.2</code>") && page.contains("<code>0.7</code>"));
        let (status, page) = ui.get("/models/assistant/diff?from=1&to=9").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("is not a version"), "{page}");
        let (status, _) = ui.get("/models/assistant/versions/x").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = ui.get("/models/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
