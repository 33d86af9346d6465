//! Unit tests of the `alert` operator that need no SMTP server: configuration checks, webhook
//! retries against a local receiver, dedup over an in-memory store. Mail over a real SMTP
//! server is tested end to end in `tests/alerts.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::*;
use crate::operators::Operator;
use crate::operators::services::Services;
use crate::operators::support::test_support::context;
use crate::store::StoreConfig;

/// A webhook receiver on 127.0.0.1 answering with `statuses` in turn (then 200); returns its
/// URL and the bodies it received.
async fn receiver(statuses: &[u16]) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(VecDeque::from(statuses.to_vec())));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |body: axum::Json<Value>| {
                let seen = seen.clone();
                let answers = answers.clone();
                async move {
                    seen.lock().expect("lock").push(body.0);
                    let status = answers.lock().expect("lock").pop_front().unwrap_or(200);
                    let status = axum::http::StatusCode::from_u16(status).expect("a status");
                    (status, format!("answer {}", status.as_u16()))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/hook"), seen)
}

fn config(with: Value) -> AlertConfig {
    serde_json::from_value(with).expect("a valid alert")
}

async fn memory_store() -> Store {
    Store::open(&StoreConfig::new("sqlite::memory:"))
        .await
        .expect("store")
}

#[tokio::test]
async fn a_webhook_is_retried_after_429_and_500_then_succeeds() {
    let (url, seen) = receiver(&[429, 500]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let done = run(
        &ctx,
        config(json!({"severity": "critical", "backoff": "10ms",
                      "webhook": {"url": url, "text": "Drift detected"}})),
    )
    .await
    .expect("delivered");
    assert_eq!(
        done.outputs["webhook"],
        json!({"status": 200, "attempts": 3})
    );
    assert_eq!(done.outputs["severity"], json!("critical"));
    let bodies = seen.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 3);
    let text = bodies[2]["text"].as_str().expect("text");
    assert!(text.starts_with("[critical] Drift detected\n"), "{text}");
    assert!(
        text.contains("/runs/run-1|Workflow wf, run run-1>"),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_webhook_fails_at_once_with_the_reply() {
    let (url, seen) = receiver(&[400]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let err = run(
        &ctx,
        config(json!({"backoff": "10ms", "webhook": {"url": url, "json": {"k": 1}}})),
    )
    .await
    .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("answered 400 Bad Request: answer 400"),
        "{message}"
    );
    assert!(
        !message.contains("/hook"),
        "the URL stays out of errors: {message}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 1, "4xx is not retried");
    assert_eq!(seen.lock().expect("lock")[0], json!({"k": 1}));
}

/// 501 is a server error that says the server will never do this: trying again cannot help.
#[tokio::test]
async fn a_webhook_answering_501_is_not_retried() {
    let (url, seen) = receiver(&[501]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let err = run(
        &ctx,
        config(json!({"backoff": "5ms", "webhook": {"url": url, "text": "x"}})),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("501 Not Implemented"), "{err}");
    assert_eq!(seen.lock().expect("lock").len(), 1, "501 is not retried");
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_gives_up_after_its_attempts() {
    let (url, seen) = receiver(&[503, 503, 503]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let err = run(
        &ctx,
        config(json!({"attempts": 3, "backoff": "5ms", "webhook": {"url": url, "text": "x"}})),
    )
    .await
    .expect_err("gives up");
    assert!(err.to_string().contains("(after 3 attempts)"), "{err}");
    assert_eq!(seen.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn cancelling_stops_the_backoff() {
    let (url, _seen) = receiver(&[503, 503, 503, 503]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let cancel = ctx.cancel.clone();
    let task = tokio::spawn(async move {
        run(
            &ctx,
            config(json!({"backoff": "1h", "webhook": {"url": url, "text": "x"}})),
        )
        .await
    });
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("joins");
    assert!(
        matches!(result, Err(OperatorError::Cancelled)),
        "{result:?}"
    );
}

#[tokio::test]
async fn repeats_within_the_window_are_held_back_and_the_next_alert_says_so() {
    let (url, seen) = receiver(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ctx, _log) = context(dir.path());
    let store = memory_store().await;
    ctx.services = Arc::new(Services {
        store: Some(store.clone()),
        base_url: "http://sluice.test".into(),
        ..Services::default()
    });
    let with =
        json!({"window": "1h", "key": "drift/{{x}}", "webhook": {"url": url, "text": "Drift"}});
    let first = run(&ctx, config(with.clone())).await.expect("first");
    assert_eq!(first.outputs["suppressed"], json!(false));
    assert_eq!(first.outputs["suppressed_before"], json!(0));
    for n in 1..=3 {
        let held = run(&ctx, config(with.clone())).await.expect("held");
        assert_eq!(held.outputs["suppressed"], json!(true));
        assert_eq!(held.outputs["suppressed_count"], json!(n));
        assert!(!held.outputs.contains_key("webhook"));
    }
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "only the first went out"
    );
    // With a window that has passed (1ms, waited out on the clock), the next alert goes out
    // and tells about the three.
    let passed = chrono::Utc::now() + chrono::Duration::milliseconds(2);
    while chrono::Utc::now() < passed {
        tokio::task::yield_now().await;
    }
    let later = run(
        &ctx,
        config(json!({"window": "1ms", "key": "drift/{{x}}", "webhook": {"url": url, "text": "Drift"}})),
    )
    .await
    .expect("later");
    assert_eq!(later.outputs["suppressed"], json!(false));
    let bodies = seen.lock().expect("lock").clone();
    let text = bodies
        .last()
        .and_then(|b| b["text"].as_str())
        .expect("text");
    assert!(
        text.contains("3 similar alerts were held back since the last one"),
        "{text}"
    );
    assert!(text.contains("<http://sluice.test/runs/run-1|"), "{text}");
}

#[tokio::test]
async fn a_failed_send_does_not_hold_back_the_next_alert() {
    // Bind then drop: nothing listens there.
    let address = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ctx, _log) = context(dir.path());
    let store = memory_store().await;
    ctx.services = Arc::new(Services {
        store: Some(store.clone()),
        ..Services::default()
    });
    let with = json!({"window": "1h", "attempts": 2, "backoff": "5ms",
                      "webhook": {"url": format!("http://{address}/hook"), "text": "x"}});
    let err = run(&ctx, config(with)).await.expect_err("unreachable");
    assert!(err.to_string().contains("could not be reached"), "{err}");
    let (url, seen) = receiver(&[]).await;
    let with = json!({"window": "1h", "webhook": {"url": url, "text": "x"}});
    let done = run(&ctx, config(with)).await.expect("sent");
    assert_eq!(done.outputs["suppressed"], json!(false));
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn email_without_an_smtp_server_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let err = run(
        &ctx,
        config(json!({"email": {"to": "a@example.com", "subject": "s"}})),
    )
    .await
    .expect_err("no smtp");
    assert!(matches!(err, OperatorError::Config { .. }), "{err}");
    assert!(err.to_string().contains("add `[smtp]`"), "{err}");
}

#[test]
fn bad_configurations_are_reported() {
    let err = |with: Value| {
        Operator::Alert
            .check_config(with)
            .expect_err("invalid")
            .to_string()
    };
    assert!(err(json!({})).contains("needs `email`, `webhook` or both"));
    assert!(err(json!({"webhook": {"url": "u"}})).contains("needs `text`, `blocks` or `json`"));
    assert!(
        err(json!({"webhook": {"url": "u", "text": "t", "json": {}}})).contains("one or the other")
    );
    assert!(err(json!({"email": {"subject": "s"}})).contains("at least one recipient"));
    assert!(
        err(json!({"email": {"to": ["a@b"], "subject": "s",
                                  "attachments": [{"content": "x"}]}}))
        .contains("no `name`")
    );
    assert!(
        err(json!({"email": {"to": ["a@b"], "subject": "s",
                                  "attachments": [{"path": "a", "content": "x", "name": "n"}]}}))
        .contains("both `path` and `content`")
    );
    assert!(
        err(json!({"attempts": 0, "webhook": {"url": "u", "text": "t"}})).contains("at least 1")
    );
    assert!(
        err(json!({"window": "0s", "webhook": {"url": "u", "text": "t"}}))
            .contains("longer than zero")
    );
    assert!(
        err(json!({"severity": "urgent", "webhook": {"url": "u", "text": "t"}}))
            .contains("unknown variant")
    );
    assert!(
        err(json!({"webhook": {"url": "u", "text": "t", "colour": 1}})).contains("unknown field")
    );
    assert!(
        Operator::Alert
            .check_config(json!({"email": {"to": "a@b", "subject": "s", "body": "b"},
                             "webhook": {"url": "u", "text": "t"}}))
            .is_ok()
    );
}

#[tokio::test]
async fn a_bad_webhook_url_is_a_config_error_that_does_not_echo_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _log) = context(dir.path());
    let err = run(
        &ctx,
        config(json!({"webhook": {"url": "not a url s3cr3t", "text": "t"}})),
    )
    .await
    .expect_err("bad url");
    assert!(matches!(err, OperatorError::Config { .. }), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
}

#[test]
fn error_kinds_ignore_numbers_and_later_lines() {
    assert_eq!(
        error_kind("the command exited with code 3\nstderr: …"),
        "the command exited with code #"
    );
    assert_eq!(
        error_kind("timed out after 30s"),
        error_kind("timed out after 45s")
    );
}

#[test]
fn schema_documents_every_field() {
    let schema = serde_json::to_value(schemars::schema_for!(AlertConfig)).expect("schema");
    assert_eq!(schema["additionalProperties"], json!(false), "{schema}");
    for field in [
        "severity", "email", "webhook", "key", "window", "attempts", "backoff",
    ] {
        let doc = &schema["properties"][field]["description"];
        assert!(
            doc.as_str().is_some_and(|d| !d.is_empty()),
            "{field}: {schema}"
        );
    }
}

#[tokio::test]
async fn secrets_in_what_an_alert_says_are_masked() {
    let (url, seen) = receiver(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ctx, _log) = context(dir.path());
    ctx.masker = Arc::new(crate::secrets::Masker::new(["s3cr3t-value".to_owned()]));
    ctx.services = Arc::new(Services {
        store: Some(memory_store().await),
        ..Services::default()
    });
    let done = run(
        &ctx,
        config(json!({"window": "1h", "key": "k-s3cr3t-value",
                      "webhook": {"url": url, "text": "token s3cr3t-value",
                                  "blocks": [{"type": "section", "text": "s3cr3t-value"}]}})),
    )
    .await
    .expect("sent");
    assert_eq!(done.outputs["key"], json!("k-***"));
    let body = seen.lock().expect("lock")[0].to_string();
    assert!(!body.contains("s3cr3t-value"), "{body}");
    assert!(body.contains("token ***"), "{body}");
}
