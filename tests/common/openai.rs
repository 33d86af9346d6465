//! An OpenAI-compatible chat-completions server for the tests, in process: answers come from
//! a table keyed by the last user message, after a set latency; a message can ask for a fault
//! by holding a marker — `[429]` (once, with `Retry-After: 1`), `[500]` (once), `[malformed]`
//! (a 200 whose body is not JSON, every time) or `[slow]` (once, slower than any test's
//! request timeout). Usage counts words: prompt tokens over every message, completion tokens
//! over the answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How the server answers.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Last user message → answer.
    pub answers: HashMap<String, String>,
    /// Otherwise, the answer of the first entry whose text the last user message contains
    /// (judge prompts); anything else gets `I don't know.`
    pub when_contains: Vec<(String, String)>,
    /// How long every answer takes.
    pub latency: Duration,
}

/// A running server; it stops with the test's runtime.
pub struct FakeLlm {
    /// The base URL to give a target: `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    state: Arc<State>,
}

struct State {
    script: Script,
    /// Every request body, in arrival order.
    requests: Mutex<Vec<Value>>,
    /// Attempts per last user message, for the faults that happen once.
    attempts: Mutex<HashMap<String, u32>>,
}

impl FakeLlm {
    pub async fn start(script: Script) -> FakeLlm {
        let state = Arc::new(State {
            script,
            requests: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post({
                let state = state.clone();
                move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                    let mut body = body.0;
                    // Kept beside the body so tests can check the key was sent.
                    body["authorization"] =
                        json!(headers.get("authorization").and_then(|v| v.to_str().ok()));
                    answer(state.clone(), body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeLlm {
            base_url: format!("http://{address}/v1"),
            state,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("lock").clone()
    }
}

fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

async fn answer(state: Arc<State>, body: Value) -> Response {
    state.requests.lock().expect("lock").push(body.clone());
    let prompt = last_user_message(&body);
    let attempt = {
        let mut attempts = state.attempts.lock().expect("lock");
        let n = attempts.entry(prompt.clone()).or_default();
        *n += 1;
        *n
    };
    tokio::time::sleep(state.script.latency).await;
    if prompt.contains("[429]") && attempt == 1 {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return response;
    }
    if prompt.contains("[500]") && attempt == 1 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    if prompt.contains("[malformed]") {
        return (StatusCode::OK, "{\"choices\": [").into_response();
    }
    if prompt.contains("[slow]") && attempt == 1 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let text = state
        .script
        .answers
        .get(&prompt)
        .or_else(|| {
            state
                .script
                .when_contains
                .iter()
                .find(|(part, _)| prompt.contains(part.as_str()))
                .map(|(_, answer)| answer)
        })
        .cloned()
        .unwrap_or_else(|| "I don't know.".to_owned());
    let prompt_tokens: u64 = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .map(words)
        .sum();
    axum::Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words(&text), "total_tokens": prompt_tokens + words(&text)},
    }))
    .into_response()
}
