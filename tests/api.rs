//! The HTTP API and operations endpoints, driven through `server::router` with `oneshot`
//! against a temporary SQLite store and workflows folder: no socket, no spawned binary.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Utc;
use serde_json::{Value, json};
use sluice::catalog::live::Catalog;
use sluice::lifecycle::{RunState, TaskState};
use sluice::server::{self, AppState};
use sluice::store::{Claim, DecisionBatch, NewLogLine, Store, StoreConfig, TaskCompletion};
use tempfile::TempDir;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";

const PIPELINE: &str = "\
schedule: \"0 3 * * *\"
params:
  samples: { type: integer, default: 3 }
  model: { type: string, default: small }
tasks:
  a: { operator: noop }
  b: { operator: noop, needs: [a] }
  c: { operator: noop, needs: [b] }
  d: { operator: noop }
";

const BROKEN: &str = "tasks:\n  a: { operator: nope }\n";

struct Harness {
    _dir: TempDir,
    store: Store,
    router: Router,
}

async fn harness_with(tokens: &[&str], metrics: bool) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE).expect("write workflow");
    std::fs::write(dir.path().join("broken.yaml"), BROKEN).expect("write workflow");
    let store = Store::open(&StoreConfig::new("sqlite::memory:"))
        .await
        .expect("store");
    let catalog = Arc::new(Catalog::open(dir.path()));
    let tokens: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    let handle = metrics.then(server::metrics::install);
    let state = AppState::new(store.clone(), catalog, &tokens, handle);
    Harness {
        _dir: dir,
        store,
        router: server::router(state),
    }
}

async fn harness() -> Harness {
    harness_with(&[TOKEN], false).await
}

/// Sends a request and returns the status and the body (JSON when it parses, else a string).
async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Body>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body),
        None => request.body(Body::empty()),
    }
    .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(20), router.clone().oneshot(request))
        .await
        .expect("the response came in time")
        .expect("infallible");
    let status = response.status();
    let bytes = tokio::time::timeout(
        Duration::from_secs(20),
        axum::body::to_bytes(response.into_body(), usize::MAX),
    )
    .await
    .expect("the body ended in time")
    .expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

async fn get(h: &Harness, uri: &str) -> (StatusCode, Value) {
    send(&h.router, Method::GET, uri, Some(TOKEN), None).await
}

async fn post(h: &Harness, uri: &str, body: Value) -> (StatusCode, Value) {
    send(
        &h.router,
        Method::POST,
        uri,
        Some(TOKEN),
        Some(Body::from(body.to_string())),
    )
    .await
}

async fn trigger(h: &Harness, params: Value) -> String {
    let (status, body) = post(
        h,
        "/api/v1/workflows/pipeline/runs",
        json!({ "params": params }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["run_id"].as_str().expect("run id").to_owned()
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "x").replace("{task}", "t")
}

#[tokio::test]
async fn every_mutating_route_refuses_missing_and_wrong_tokens() {
    let h = harness().await;
    let mutating: Vec<_> = server::routes()
        .iter()
        .filter(|(m, _)| *m != Method::GET && *m != Method::HEAD)
        .collect();
    assert!(mutating.len() >= 7, "the route list looks incomplete");
    for (method, path) in mutating {
        let uri = concrete(path);
        for token in [None, Some("wrong"), Some("")] {
            let (status, body) = send(
                &h.router,
                method.clone(),
                &uri,
                token,
                Some(Body::from("{}")),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert!(body["error"].is_string(), "{method} {path}: {body}");
        }
    }
    // Reads need the token too once one is configured.
    for (method, path) in server::routes().iter().filter(|(m, _)| *m == Method::GET) {
        let uri = concrete(path);
        let (status, _) = send(&h.router, method.clone(), &uri, None, None).await;
        let open = !path.starts_with("/api/");
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            !open,
            "GET {path} without a token"
        );
    }
}

#[tokio::test]
async fn every_listed_route_is_served_with_a_token() {
    let h = harness().await;
    for (method, path) in server::routes() {
        let uri = concrete(path);
        let body = (*method == Method::POST).then(|| Body::from("{}"));
        let (status, body) = send(&h.router, method.clone(), &uri, Some(TOKEN), body).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let fallback = body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such route"));
        assert!(!fallback, "{method} {path} is listed but not served");
    }
    let (status, body) = get(&h, "/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such route"))
    );
}

#[tokio::test]
async fn without_tokens_reads_are_open_and_changes_say_how_to_enable_them() {
    let h = harness_with(&[], false).await;
    let (status, body) = send(&h.router, Method::GET, "/api/v1/workflows", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &h.router,
        Method::POST,
        "/api/v1/workflows/pipeline/runs",
        None,
        Some(Body::from("{}")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("set SLUICE_API_TOKEN")),
        "{body}"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes() {
    let h = harness().await;
    let (status, doc) = get(&h, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut documented: HashSet<(String, String)> = HashSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    // The document does not describe itself.
    documented.insert(("GET".into(), "/api/v1/openapi.json".into()));
    let listed: HashSet<(String, String)> = server::routes()
        .iter()
        .map(|(m, p)| (m.as_str().to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = listed.difference(&documented).collect();
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(missing.is_empty(), "listed but not documented: {missing:?}");
    assert!(
        unlisted.is_empty(),
        "served but not in routes(): {unlisted:?}"
    );
    assert!(doc["components"]["schemas"]["RunDetail"].is_object());
}

#[tokio::test]
async fn trigger_resolves_params_and_refuses_bad_ones() {
    let h = harness().await;
    let run_id = trigger(&h, json!({ "samples": 7 })).await;
    let run = h.store.run(&run_id).await.expect("db").expect("run stored");
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.trigger, "api");
    assert_eq!(run.params["samples"], 7);
    assert_eq!(run.params["model"], "small", "defaults are filled in");

    let (status, body) = post(
        &h,
        "/api/v1/workflows/pipeline/runs",
        json!({ "params": { "sampels": 1 } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let details = body["details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.contains("sampels"))),
        "{body}"
    );

    let (status, body) = post(
        &h,
        "/api/v1/workflows/pipeline/runs",
        json!({ "params": { "samples": "many" } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["details"][0]
            .as_str()
            .is_some_and(|d| d.contains("samples"))
    );

    let (status, body) = post(&h, "/api/v1/workflows/nope/runs", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = send(
        &h.router,
        Method::POST,
        "/api/v1/workflows/pipeline/runs",
        Some(TOKEN),
        Some(Body::from("{\"params\": ")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].is_string());

    let huge = format!(
        "{{\"params\": {{\"model\": \"{}\"}}}}",
        "x".repeat(1024 * 1024 + 10)
    );
    let (status, body) = send(
        &h.router,
        Method::POST,
        "/api/v1/workflows/pipeline/runs",
        Some(TOKEN),
        Some(Body::from(huge)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn runs_are_listed_in_pages_with_filters() {
    let h = harness().await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(trigger(&h, json!({})).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/runs?limit=2&cursor={c}"),
            None => "/api/v1/runs?limit=2".to_owned(),
        };
        let (status, body) = get(&h, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        for run in body["runs"].as_array().expect("runs") {
            for field in [
                "run_id",
                "workflow",
                "state",
                "trigger",
                "logical_date",
                "params",
                "created_at",
                "started_at",
                "rerun_started_at",
                "ended_at",
            ] {
                assert!(run.get(field).is_some(), "{field} missing in {run}");
            }
            seen.push(run["run_id"].as_str().expect("id").to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, each run once");

    let (_, body) = get(&h, "/api/v1/runs?workflow=nope").await;
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(0));
    let (_, body) = get(&h, "/api/v1/runs?workflow=pipeline&state=queued").await;
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(5));
    h.store
        .cancel_run(&created[0], "test")
        .await
        .expect("cancel");
    let (_, body) = get(&h, "/api/v1/runs?state=cancelled").await;
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["runs"][0]["run_id"], created[0].as_str());

    for bad in [
        "cursor=zz",
        "cursor=deadbeef",
        "state=sleeping",
        "limit=0",
        "limit=abc",
    ] {
        let (status, body) = get(&h, &format!("/api/v1/runs?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
}

/// Drives a run to `success` through the store the way the scheduler and a worker would:
/// `a` succeeds with outputs and logs, the others are skipped.
async fn finish_run(h: &Harness, run_id: &str) {
    let store = &h.store;
    assert!(
        store
            .set_run_state(run_id, RunState::Queued, RunState::Running, None)
            .await
            .expect("db")
    );
    let tries = store.task_instances(run_id).await.expect("db");
    let mut batch = DecisionBatch::default();
    for t in &tries {
        let to = if t.task_id == "a" {
            TaskState::Queued
        } else {
            TaskState::Skipped
        };
        batch.push(t.id, &t.task_id, 1, TaskState::Pending, to);
    }
    store.apply_decisions(run_id, &batch).await.expect("db");
    let claimed = store
        .claim(&Claim {
            worker: "w",
            limit: 1,
            pools: &Default::default(),
            queues: &[],
            run_id: None,
            lease: Duration::from_secs(30),
        })
        .await
        .expect("db");
    assert_eq!(claimed.len(), 1);
    let log = |n: usize| NewLogLine {
        run_id: run_id.to_owned(),
        task_id: "a".into(),
        try_number: 1,
        stream: "stdout",
        line: format!("line {n}"),
        logged_at: Utc::now(),
    };
    store.append_logs(&[log(1), log(2)]).await.expect("db");
    let mut outputs = serde_json::Map::new();
    outputs.insert("score".into(), json!(0.9));
    store
        .complete(
            &[],
            &[TaskCompletion {
                id: claimed[0].id,
                run_id: run_id.to_owned(),
                task_id: "a".into(),
                try_number: 1,
                state: TaskState::Success,
                exit_code: Some(0),
                error: None,
                outputs: Some(outputs),
                warnings: vec!["cost_per_1k 0.61 > 0.50 (warn)".into()],
                summary: Some("score 0.9 on 3 samples".into()),
                ended_at: Utc::now(),
                retry: None,
            }],
        )
        .await
        .expect("db");
    assert!(
        store
            .set_run_state(run_id, RunState::Running, RunState::Success, None)
            .await
            .expect("db")
    );
}

#[tokio::test]
async fn a_run_shows_its_tasks_and_clearing_requeues_it() {
    let h = harness().await;
    let run_id = trigger(&h, json!({})).await;
    finish_run(&h, &run_id).await;

    let (status, run) = get(&h, &format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["state"], "success");
    assert_eq!(run["tasks"]["a"]["state"], "success");
    assert_eq!(run["tasks"]["a"]["try_number"], 1);
    assert_eq!(run["tasks"]["a"]["outputs"]["score"], 0.9);
    assert!(run["tasks"]["a"]["duration_ms"].is_i64());
    assert_eq!(run["tasks"]["b"]["state"], "skipped");
    // A try's outcome beyond its state: warnings of a success, and its summary line.
    assert_eq!(
        run["tasks"]["a"]["warnings"],
        json!(["cost_per_1k 0.61 > 0.50 (warn)"])
    );
    assert_eq!(run["tasks"]["a"]["summary"], "score 0.9 on 3 samples");
    assert_eq!(run["tasks"]["b"]["warnings"], json!([]));
    assert_eq!(run["tasks"]["b"]["summary"], Value::Null);
    let (_, openapi) = get(&h, "/api/v1/openapi.json").await;
    let task_view = &openapi["components"]["schemas"]["TaskView"]["properties"];
    for field in ["warnings", "summary"] {
        assert!(
            task_view[field]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{field}: {task_view}"
        );
    }

    let (status, body) = post(
        &h,
        &format!("/api/v1/runs/{run_id}/tasks/b/clear"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cleared"], json!(["b", "c"]));
    assert_eq!(body["run_requeued"], true);
    let run = h.store.run(&run_id).await.expect("db").expect("run");
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.ended_at, None);
    let tries = h.store.task_instances(&run_id).await.expect("db");
    let try_of = |task: &str, n: u32| {
        tries
            .iter()
            .find(|t| t.task_id == task && t.try_number == n)
            .map(|t| t.state)
    };
    assert_eq!(try_of("b", 2), Some(TaskState::Pending));
    assert_eq!(try_of("c", 2), Some(TaskState::Pending));
    assert_eq!(try_of("a", 2), None, "upstream tasks are left alone");
    assert_eq!(try_of("d", 2), None, "unrelated tasks are left alone");

    // The new tries have not ended, so clearing again is refused.
    let (status, _) = post(
        &h,
        &format!("/api/v1/runs/{run_id}/tasks/c/clear"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = post(
        &h,
        &format!("/api/v1/runs/{run_id}/tasks/zz/clear"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&h, "/api/v1/runs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancelling_a_queued_run_cancels_it_once() {
    let h = harness().await;
    let run_id = trigger(&h, json!({})).await;
    let (status, body) = post(&h, &format!("/api/v1/runs/{run_id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    let run = h.store.run(&run_id).await.expect("db").expect("run");
    assert_eq!(run.state, RunState::Cancelled);
    let (status, _) = post(&h, &format!("/api/v1/runs/{run_id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = post(&h, "/api/v1/runs/nope/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pausing_persists_and_workflows_show_it() {
    let h = harness().await;
    let (status, body) = post(&h, "/api/v1/workflows/pipeline/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(h.store.paused().await.expect("db").contains("pipeline"));
    let (_, body) = get(&h, "/api/v1/workflows").await;
    assert_eq!(body["workflows"][0]["id"], "pipeline");
    assert_eq!(body["workflows"][0]["paused"], true);
    let (status, _) = post(&h, "/api/v1/workflows/pipeline/unpause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.store.paused().await.expect("db").is_empty());
    let (status, _) = post(&h, "/api/v1/workflows/nope/pause", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, detail) = get(&h, "/api/v1/workflows/pipeline").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["paused"], false);
    assert_eq!(detail["graph"]["tasks"][0]["downstream"], json!(["b"]));
    assert_eq!(
        detail["params_schema"]["properties"]["samples"]["type"],
        "integer"
    );
}

#[tokio::test]
async fn import_errors_carry_their_position() {
    let h = harness().await;
    let (status, body) = get(&h, "/api/v1/import-errors").await;
    assert_eq!(status, StatusCode::OK);
    let errors = body["import_errors"].as_array().expect("list");
    assert_eq!(errors.len(), 1, "{body}");
    let location = errors[0]["problems"][0]["location"]
        .as_str()
        .expect("location");
    assert!(location.contains("broken.yaml:2:"), "{location}");
    assert!(
        errors[0]["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope"))
    );
}

#[tokio::test]
async fn logs_are_returned_and_following_an_ended_task_ends() {
    let h = harness().await;
    let run_id = trigger(&h, json!({})).await;
    finish_run(&h, &run_id).await;
    let (status, body) = get(&h, &format!("/api/v1/runs/{run_id}/tasks/a/logs")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines: Vec<&str> = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert_eq!(lines, ["line 1", "line 2"]);

    let (status, body) = get(
        &h,
        &format!("/api/v1/runs/{run_id}/tasks/a/logs?follow=true"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("ndjson text");
    let followed: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(followed.len(), 2);
    assert_eq!(followed[1]["line"], "line 2");

    let (status, _) = get(&h, &format!("/api/v1/runs/{run_id}/tasks/zz/logs")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn following_a_running_task_streams_until_it_ends() {
    let h = harness().await;
    let run_id = trigger(&h, json!({})).await;
    let router = h.router.clone();
    let uri = format!("/api/v1/runs/{run_id}/tasks/a/logs?follow=true");
    let follower =
        tokio::spawn(async move { send(&router, Method::GET, &uri, Some(TOKEN), None).await });
    // The task has not run yet; the stream stays open until the run finishes.
    finish_run(&h, &run_id).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), follower)
        .await
        .expect("the stream ended after the task")
        .expect("join");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_str().map(|t| t.lines().count()), Some(2), "{body}");
}

#[tokio::test]
async fn backfill_creates_a_run_per_interval_and_cancels_them() {
    let h = harness().await;
    let (status, body) = post(
        &h,
        "/api/v1/workflows/pipeline/backfill",
        json!({ "from": "2026-01-01", "to": "2026-01-03", "params": { "samples": 1 } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run_ids = body["run_ids"].as_array().expect("ids");
    assert_eq!(run_ids.len(), 3);
    let backfill_id = body["backfill_id"].as_str().expect("id");
    let first = h
        .store
        .run(run_ids[0].as_str().expect("id"))
        .await
        .expect("db")
        .expect("run");
    assert_eq!(first.trigger, "backfill");
    assert_eq!(first.logical_date.to_rfc3339(), "2026-01-01T03:00:00+00:00");

    let (status, body) = post(
        &h,
        &format!("/api/v1/backfills/{backfill_id}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cancelled"].as_array().map(Vec::len), Some(3));
    let (_, body) = get(&h, "/api/v1/runs?state=cancelled").await;
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(3));

    let (status, _) = post(&h, "/api/v1/backfills/nope/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = post(
        &h,
        "/api/v1/workflows/pipeline/backfill",
        json!({ "from": "2026-01-03", "to": "2026-01-01" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = post(
        &h,
        "/api/v1/workflows/pipeline/backfill",
        json!({ "from": "2026-01-01", "to": "2026-01-01", "params": { "samples": "x" } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn healthz_and_metrics_answer_without_a_token() {
    let h = harness_with(&[TOKEN], true).await;
    let (status, body) = send(&h.router, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": "ok" }));

    trigger(&h, json!({})).await;
    metrics::histogram!("sluice_task_duration_seconds").record(2.0);
    let (status, body) = send(&h.router, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().expect("text");
    assert!(text.contains("sluice_runs{state=\"queued\"} 1"), "{text}");
    assert!(text.contains("sluice_runs{state=\"success\"} 0"), "{text}");
    assert!(
        text.contains("sluice_task_instances{state=\"pending\"} 4"),
        "{text}"
    );
    assert!(text.contains("sluice_queue_depth 0"), "{text}");
    assert!(
        text.contains("sluice_task_duration_seconds_bucket"),
        "{text}"
    );
}
