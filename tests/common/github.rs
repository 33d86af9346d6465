//! GitHub on the test's side: signed webhook deliveries of the real-shaped payloads in
//! tests/fixtures/github, and a fake REST API that records the commit statuses it receives.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use sluice::github::signature::sign;

use super::server::{Server, client};

pub const SECRET: &str = "It's a Secret to Everybody";
pub const HEAD: &str = "9049f1265b7d61be4a8904a9a27120d2064dab3b";

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/github/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("read fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Posts a delivery with the given headers; `signature: None` sends none.
pub async fn deliver_raw(
    server: &Server,
    event: Option<&str>,
    delivery: Option<&str>,
    body: Vec<u8>,
    signature: Option<String>,
    content_type: &str,
) -> (u16, Value) {
    let mut request = client()
        .post(format!("{}/hooks/github", server.base))
        .header("Content-Type", content_type)
        .header("User-Agent", "GitHub-Hookshot/1")
        .body(body);
    if let Some(delivery) = delivery {
        request = request.header("X-GitHub-Delivery", delivery);
    }
    if let Some(event) = event {
        request = request.header("X-GitHub-Event", event);
    }
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    let response = request.send().await.expect("POST /hooks/github");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Posts a delivery signed with the server's secret, as GitHub does.
pub async fn deliver(
    server: &Server,
    event: &str,
    delivery: &str,
    payload: &Value,
) -> (u16, Value) {
    let body = serde_json::to_vec(payload).expect("serialize");
    let signature = sign(SECRET.as_bytes(), &body);
    deliver_raw(
        server,
        Some(event),
        Some(delivery),
        body,
        Some(signature),
        "application/json",
    )
    .await
}

/// A fake GitHub REST API: records every status request and answers the first final
/// (non-pending) one with a 500, so the service has to retry it.
#[derive(Clone, Default)]
pub struct FakeGithub {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    failed_once: Arc<Mutex<bool>>,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub repository: String,
    pub sha: String,
    pub authorization: String,
    pub body: Value,
    pub answered: u16,
}

async fn fake_status(
    State(fake): State<FakeGithub>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let mut answered = StatusCode::CREATED;
    if body["state"] != "pending" {
        let mut failed = fake.failed_once.lock().expect("lock");
        if !*failed {
            *failed = true;
            answered = StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    fake.requests.lock().expect("lock").push(Recorded {
        repository: format!("{owner}/{repo}"),
        sha,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: body.clone(),
        answered: answered.as_u16(),
    });
    (answered, axum::Json(body))
}

impl FakeGithub {
    /// Serves the statuses endpoint on a free port; returns the fake and its address.
    pub async fn spawn() -> (FakeGithub, std::net::SocketAddr) {
        let fake = FakeGithub::default();
        let app = Router::new()
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(fake_status))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, address)
    }

    /// Every status request received so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}
