//! `http`: one HTTP request, repeated through the shared `retry` policy when it fails in a way
//! that may pass (408, 429 and 5xx other than 501, lost connections, timeouts; `Retry-After`
//! honoured); asserts the status; a JSON response becomes `outputs.json`.

use std::fmt;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::support::{Retry, Text, after_attempts, cut, error_chain, header_map, log_retry};
use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::duration::HumanDuration;
use crate::retry::{Failure, RetryAfter, RetryError, Succeeded, SystemClock};

/// Response bodies longer than this are cut in `outputs.body`: outputs live in the database
/// and stay well under `[worker] max_output_bytes` (1 MiB by default).
const MAX_TEXT_BYTES: usize = 256 * 1024;
/// Reading stops here; a body this large is not going to be parsed as JSON outputs.
const MAX_READ_BYTES: usize = 16 * 1024 * 1024;
/// How much of an unexpected response's body the failure message quotes.
const ERROR_BODY_BYTES: usize = 500;

/// The settings of an `http` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpWith {
    /// The URL to request (`http://` or `https://`).
    pub url: String,
    /// The request method. Default: `GET`.
    #[serde(default)]
    pub method: Method,
    /// Request headers, by name. Numbers and booleans are sent as their text.
    #[serde(default)]
    pub headers: IndexMap<String, Text>,
    /// A JSON body, sent with `Content-Type: application/json`. Not together with `body`.
    #[serde(default)]
    pub json: Option<Value>,
    /// A text body, sent as it is. Not together with `json`.
    #[serde(default)]
    pub body: Option<String>,
    /// The statuses that count as success, like `[200, 404]`. Default: any 2xx status.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// How long one attempt, including reading the response, may take. Default: `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How many times the request is made when it fails in a way that may pass (HTTP 408,
    /// 429 and 5xx other than 501 that `expect_status` does not list, lost connections,
    /// timeouts). Default: 3 for `GET`, `HEAD`, `PUT`, `DELETE` and `OPTIONS`, which may be
    /// repeated safely; 1 for `POST` and `PATCH`.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// The wait after the first failed attempt; it doubles after each (up to 1m), and a
    /// longer `Retry-After` from the server wins (up to 1m). Default `1s`.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    #[serde(alias = "get")]
    Get,
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
    #[serde(alias = "delete")]
    Delete,
    #[serde(alias = "head")]
    Head,
    #[serde(alias = "options")]
    Options,
}

impl Method {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
            Method::Options => reqwest::Method::OPTIONS,
        }
    }

    /// Attempts when `attempts` is not given: a request that means the same when repeated
    /// (RFC 9110's idempotent methods) is tried again; one that may act twice is not.
    fn default_attempts(self) -> u32 {
        match self {
            Method::Post | Method::Patch => 1,
            _ => 3,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_reqwest().as_str())
    }
}

/// A checked `http` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "HttpWith")]
pub struct HttpConfig {
    pub url: String,
    pub method: Method,
    pub headers: IndexMap<String, Text>,
    pub body: Option<Body>,
    /// Empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub timeout: Duration,
    pub retry: Retry,
}

/// A request body.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
pub enum Body {
    Json(Value),
    Text(String),
}

impl TryFrom<HttpWith> for HttpConfig {
    type Error = String;

    fn try_from(with: HttpWith) -> std::result::Result<Self, String> {
        let body = match (with.json, with.body) {
            (Some(_), Some(_)) => return Err("give either `json` or `body`, not both".into()),
            (Some(json), None) => Some(Body::Json(json)),
            (None, Some(text)) => Some(Body::Text(text)),
            (None, None) => None,
        };
        if let Some(bad) = with
            .expect_status
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(format!(
                "`expect_status` holds {bad}, which is not an HTTP status"
            ));
        }
        if with.timeout.0.is_zero() {
            return Err("`timeout` must be longer than zero".into());
        }
        if with.attempts == Some(0) {
            return Err("`attempts` must be at least 1".into());
        }
        // The URL and headers are checked when the task runs: they are often templates
        // (`{{ vars.base_url }}/v1/…`) that only make sense once rendered.
        Ok(HttpConfig {
            url: with.url,
            retry: Retry {
                attempts: with
                    .attempts
                    .unwrap_or_else(|| with.method.default_attempts()),
                backoff: with.backoff.0,
            },
            method: with.method,
            headers: with.headers,
            body,
            expect_status: with.expect_status,
            timeout: with.timeout.0,
        })
    }
}

impl HttpConfig {
    fn expects(&self, status: reqwest::StatusCode) -> bool {
        if self.expect_status.is_empty() {
            status.is_success()
        } else {
            self.expect_status.contains(&status.as_u16())
        }
    }

    fn wanted(&self) -> String {
        if self.expect_status.is_empty() {
            return "a 2xx status".to_owned();
        }
        let list: Vec<String> = self.expect_status.iter().map(u16::to_string).collect();
        list.join(" or ")
    }
}

/// What came back.
struct Response {
    status: reqwest::StatusCode,
    headers: Outputs,
    body: Vec<u8>,
    /// The body's full size, when reading stopped at [`MAX_READ_BYTES`].
    cut_at: Option<usize>,
}

pub async fn run(ctx: &OpContext, config: HttpConfig) -> Result<Completion> {
    let invalid = |message: String| OperatorError::Config {
        operator: "http",
        message,
    };
    let url = reqwest::Url::parse(&config.url)
        .map_err(|e| invalid(format!("`url` is not a valid URL ({e}): {}", config.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "`url` must start with http:// or https://: {url}"
        )));
    }
    let headers = header_map("http", &config.headers)?;
    let method = config.method;
    let attempt = |_| request_once(ctx, &config, &url, headers.clone());
    let outcome = config
        .retry
        .policy()
        .run(&SystemClock, &ctx.cancel, attempt, |retrying| {
            log_retry(&ctx.log, retrying)
        })
        .await;
    let (response, attempts) = match outcome {
        Ok(Succeeded { value, attempts }) => (value, attempts),
        Err(RetryError::Cancelled) => {
            ctx.log.system(format!(
                "{method} {url} was abandoned: the task was cancelled."
            ));
            return Err(OperatorError::Cancelled);
        }
        Err(
            RetryError::Refused { error, attempts } | RetryError::Exhausted { error, attempts },
        ) => {
            let message = after_attempts(error, attempts);
            return Err(OperatorError::failed(
                ctx.masker.mask(&message).into_owned(),
            ));
        }
        Err(RetryError::Interrupted(never)) => match never {},
    };

    let mut outputs = Outputs::new();
    outputs.insert("status".into(), Value::from(response.status.as_u16()));
    outputs.insert("headers".into(), Value::Object(response.headers));
    outputs.insert("attempts".into(), Value::from(attempts));
    let parsed = match response.cut_at {
        None => serde_json::from_slice::<Value>(&response.body).ok(),
        Some(_) => None,
    };
    match parsed {
        Some(json) => {
            outputs.insert("json".into(), json);
        }
        None => {
            let total = response.cut_at.unwrap_or(response.body.len());
            let mut text =
                String::from_utf8_lossy(cut(&response.body, MAX_TEXT_BYTES)).into_owned();
            if total > MAX_TEXT_BYTES {
                let size = match response.cut_at {
                    Some(_) => format!("more than {MAX_READ_BYTES} bytes"),
                    None => format!("{total} bytes"),
                };
                text.push_str(&format!(
                    "\n… (truncated: the response body was {size}; outputs keep the first {MAX_TEXT_BYTES})"
                ));
            }
            outputs.insert("body".into(), Value::String(text));
        }
    }
    Ok(Completion::from(outputs))
}

/// One attempt: the request, its line in the log, and whether a status that is not expected
/// may pass.
async fn request_once(
    ctx: &OpContext,
    config: &HttpConfig,
    url: &reqwest::Url,
    headers: HeaderMap,
) -> std::result::Result<Response, Failure<String>> {
    let method = config.method;
    let request = ctx
        .http
        .request(method.as_reqwest(), url.clone())
        .headers(headers)
        .timeout(config.timeout);
    let request = match &config.body {
        Some(Body::Json(json)) => request.json(json),
        Some(Body::Text(text)) => request.body(text.clone()),
        None => request,
    };
    let started = Instant::now();
    let response = send(request).await.map_err(|e| {
        let problem = if e.is_timeout() {
            format!(
                "{method} {url} did not finish within {}",
                HumanDuration(config.timeout)
            )
        } else {
            format!("{method} {url} failed: {}", error_chain(&e))
        };
        Failure::from_request_error(&e, problem)
    })?;
    let status = response.status;
    ctx.log.system(format!(
        "{method} {url} -> {} in {} ms",
        status.as_u16(),
        started.elapsed().as_millis()
    ));
    if config.expects(status) {
        return Ok(response);
    }
    let body = String::from_utf8_lossy(cut(&response.body, ERROR_BODY_BYTES));
    let body = if body.trim().is_empty() {
        "the body was empty".to_owned()
    } else {
        format!("the body began with: {body}")
    };
    let retry_after = response
        .headers
        .get("retry-after")
        .and_then(Value::as_str)
        .and_then(RetryAfter::parse);
    let problem = format!(
        "{method} {url} returned {status}, expected {}; {body}",
        config.wanted()
    );
    Err(Failure::from_status(status, retry_after, problem))
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Result<Response> {
    let mut response = request.send().await?;
    let status = response.status();
    let mut headers = Outputs::new();
    for (name, value) in response.headers() {
        // Header names are lowercase already; repeated headers are joined as HTTP allows.
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let mut body = Vec::new();
    let mut cut_at = None;
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_READ_BYTES {
            cut_at = Some(body.len() + chunk.len());
            body.extend_from_slice(&chunk[..MAX_READ_BYTES - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
        cut_at,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::super::LogStream;
    use std::sync::{Arc, Mutex};

    use super::super::support::test_support::{context, lines, wait_for};
    use super::*;

    /// A request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    /// A canned answer: status line, extra headers, body; `stall` never answers.
    #[derive(Clone)]
    struct Reply {
        status: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        stall: bool,
    }

    fn reply(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            stall: false,
        }
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with `reply` and reports
    /// what it received.
    async fn serve(reply: Reply) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, reply) = (tx.clone(), reply.clone());
                tokio::spawn(async move {
                    let _ = answer(stream, reply, tx).await;
                });
            }
        });
        (addr, rx)
    }

    async fn answer(
        mut stream: TcpStream,
        reply: Reply,
        tx: mpsc::UnboundedSender<Seen>,
    ) -> std::io::Result<()> {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            data.extend_from_slice(&buf[..n]);
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0usize);
        while data.len() < head_end + length {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(Seen {
            head,
            body: data[head_end..].to_vec(),
        });
        if reply.stall {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
        let mut out = format!(
            "HTTP/1.1 {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    }

    fn config(with: Value) -> HttpConfig {
        serde_json::from_value(with).expect("a valid config")
    }

    #[tokio::test]
    async fn json_response_becomes_outputs() {
        let mut answer = reply("200 OK", r#"{"ok": true, "n": [1, 2]}"#);
        answer.headers = vec![
            ("Content-Type", "application/json"),
            ("X-Multi", "a"),
            ("X-Multi", "b"),
        ];
        let (addr, mut seen) = serve(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut log) = context(dir.path());
        let url = format!("http://{addr}/v1/thing?q=1");
        let done = run(
            &ctx,
            config(json!({"url": url, "headers": {"X-Token": "abc", "X-N": 5}})),
        )
        .await
        .unwrap();
        assert_eq!(done.outputs["status"], json!(200));
        assert_eq!(done.outputs["json"], json!({"ok": true, "n": [1, 2]}));
        assert_eq!(
            done.outputs["headers"]["content-type"],
            json!("application/json")
        );
        assert_eq!(done.outputs["headers"]["x-multi"], json!("a, b"));
        assert!(!done.outputs.contains_key("body"));
        let request = seen.recv().await.unwrap();
        assert!(
            request.head.starts_with("GET /v1/thing?q=1 HTTP/1.1"),
            "{}",
            request.head
        );
        assert!(request.head.to_lowercase().contains("x-token: abc"));
        assert!(request.head.to_lowercase().contains("x-n: 5"));
        let system = lines(&mut log, LogStream::System);
        assert!(
            system[0].starts_with(&format!("GET {url} -> 200 in ")),
            "{system:?}"
        );
        assert!(system[0].ends_with(" ms"), "{system:?}");
    }

    #[tokio::test]
    async fn text_response_is_kept_as_body() {
        let (addr, _seen) = serve(reply("200 OK", "plain words")).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let done = run(&ctx, config(json!({"url": format!("http://{addr}/")})))
            .await
            .unwrap();
        assert_eq!(done.outputs["body"], json!("plain words"));
        assert!(!done.outputs.contains_key("json"));
    }

    #[tokio::test]
    async fn post_json_body_arrives() {
        let (addr, mut seen) = serve(reply("201 Created", "{}")).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let with = json!({"url": format!("http://{addr}/items"), "method": "post",
                          "json": {"name": "x", "tags": [1, 2]}});
        let done = run(&ctx, config(with)).await.unwrap();
        assert_eq!(done.outputs["status"], json!(201));
        let request = seen.recv().await.unwrap();
        assert!(request.head.starts_with("POST /items"), "{}", request.head);
        assert!(
            request
                .head
                .to_lowercase()
                .contains("content-type: application/json")
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, json!({"name": "x", "tags": [1, 2]}));
    }

    #[tokio::test]
    async fn expected_status_list() {
        let (addr, _seen) = serve(reply("404 Not Found", "missing")).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let with = json!({"url": format!("http://{addr}/"), "expect_status": [200, 404]});
        let done = run(&ctx, config(with)).await.unwrap();
        assert_eq!(done.outputs["status"], json!(404));
        assert_eq!(done.outputs["body"], json!("missing"));
    }

    #[tokio::test]
    async fn unexpected_status_fails_with_the_body() {
        let long = format!("{{\"error\": \"boom\", \"pad\": \"{}\"}}", "x".repeat(2000));
        let (addr, _seen) = serve(reply("500 Internal Server Error", &long)).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let with = json!({"url": format!("http://{addr}/"), "attempts": 1});
        let err = run(&ctx, config(with)).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("returned 500 Internal Server Error"),
            "{message}"
        );
        assert!(message.contains("expected a 2xx status"), "{message}");
        assert!(message.contains("\"error\": \"boom\""), "{message}");
        assert!(message.len() < 700, "the body is cut: {}", message.len());
    }

    #[tokio::test]
    async fn timeout_fails_the_task() {
        let mut answer = reply("200 OK", "");
        answer.stall = true;
        let (addr, _seen) = serve(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let started = Instant::now();
        let with = json!({"url": format!("http://{addr}/slow"), "timeout": "200ms", "attempts": 1});
        let err = run(&ctx, config(with)).await.unwrap_err();
        assert!(
            err.to_string().contains("did not finish within 200ms"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn cancel_stops_the_request() {
        let mut answer = reply("200 OK", "");
        answer.stall = true;
        let (addr, mut seen) = serve(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let cancel = ctx.cancel.clone();
        let url = format!("http://{addr}/slow");
        let task = tokio::spawn(async move { run(&ctx, config(json!({"url": url}))).await });
        // Cancel once the server has the request in hand.
        seen.recv().await.unwrap();
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(OperatorError::Cancelled)),
            "{:?}",
            result.err()
        );
    }

    #[tokio::test]
    async fn connection_refused_is_reported() {
        // Bind then drop, so nothing listens on the port.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let with = json!({"url": format!("http://{addr}/"), "attempts": 2, "backoff": "10ms"});
        let err = run(&ctx, config(with)).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("GET http://{addr}/ failed")),
            "{err}"
        );
        // A connection that cannot be made may work next time: it was tried again.
        assert!(err.ends_with("(after 2 attempts)"), "{err}");
    }

    #[test]
    fn config_checks() {
        use crate::operators::Operator;
        let err = |with: Value| Operator::Http.check_config(with).unwrap_err().to_string();
        assert!(err(json!({"url": "http://x", "json": {}, "body": "a"})).contains("not both"));
        assert!(err(json!({"url": "http://x", "expect_status": [99]})).contains("not an HTTP"));
        assert!(err(json!({"url": "http://x", "method": "FETCH"})).contains("unknown variant"));
        assert!(err(json!({})).contains("missing field `url`"));
        assert!(err(json!({"url": "http://x", "attempts": 0})).contains("at least 1"));
        let c = config(json!({"url": "http://x"}));
        assert_eq!(
            (c.method, c.timeout, c.retry.attempts, c.retry.backoff),
            (
                Method::Get,
                Duration::from_secs(30),
                3,
                Duration::from_secs(1)
            )
        );
        // A request that may act twice is made once unless `attempts` says otherwise.
        let post = config(json!({"url": "http://x", "method": "POST"}));
        assert_eq!(post.retry.attempts, 1);
        let post = config(json!({"url": "http://x", "method": "POST", "attempts": 5}));
        assert_eq!(post.retry.attempts, 5);
    }

    #[test]
    fn schema_is_the_documented_with() {
        let schema = serde_json::to_value(schemars::schema_for!(HttpConfig)).unwrap();
        assert_eq!(schema["additionalProperties"], json!(false), "{schema}");
        assert_eq!(schema["required"], json!(["url"]), "{schema}");
        for field in [
            "url",
            "method",
            "headers",
            "json",
            "body",
            "expect_status",
            "timeout",
            "attempts",
            "backoff",
        ] {
            let doc = &schema["properties"][field]["description"];
            assert!(
                doc.as_str().is_some_and(|d| !d.is_empty()),
                "{field}: {schema}"
            );
        }
    }

    #[tokio::test]
    async fn bad_url_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let err = run(&ctx, config(json!({"url": "not a url"})))
            .await
            .unwrap_err();
        assert!(matches!(err, OperatorError::Config { .. }), "{err}");
        let err = run(&ctx, config(json!({"url": "ftp://x/"})))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");
    }

    /// An axum server on 127.0.0.1 that answers `GET /` with `answers` in turn (status and
    /// extra headers), then 200 with a JSON body; returns its URL and when each request came.
    async fn answering(
        answers: Vec<(u16, Vec<(&'static str, &'static str)>)>,
    ) -> (String, Arc<Mutex<Vec<Instant>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let app = axum::Router::new().route(
            "/",
            axum::routing::get({
                let seen = seen.clone();
                move || {
                    let (seen, answers) = (seen.clone(), answers.clone());
                    async move {
                        seen.lock().expect("lock").push(Instant::now());
                        let next = answers.lock().expect("lock").pop_front();
                        let (status, headers) = next.unwrap_or((200, Vec::new()));
                        let mut response = axum::response::Response::new(axum::body::Body::from(
                            format!("{{\"answer\": {status}}}"),
                        ));
                        *response.status_mut() =
                            axum::http::StatusCode::from_u16(status).expect("a status");
                        for (name, value) in headers {
                            response
                                .headers_mut()
                                .insert(name, axum::http::HeaderValue::from_static(value));
                        }
                        response
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/"), seen)
    }

    #[tokio::test]
    async fn a_429_is_retried_after_its_retry_after() {
        let (url, seen) = answering(vec![(429, vec![("retry-after", "1")])]).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut log) = context(dir.path());
        // The backoff alone would wait 10ms: the server asked for a second.
        let with = json!({"url": url, "backoff": "10ms"});
        let done = run(&ctx, config(with))
            .await
            .expect("the second attempt succeeds");
        assert_eq!(done.outputs["status"], json!(200));
        assert_eq!(done.outputs["json"], json!({"answer": 200}));
        assert_eq!(done.outputs["attempts"], json!(2));
        let times = seen.lock().expect("lock").clone();
        assert_eq!(times.len(), 2);
        assert!(
            times[1] - times[0] >= Duration::from_secs(1),
            "waited only {:?}",
            times[1] - times[0]
        );
        let system = lines(&mut log, LogStream::System);
        assert!(
            system
                .iter()
                .any(|l| l.starts_with("Attempt 1: GET ") && l.ends_with("trying again in 1s.")),
            "{system:?}"
        );
    }

    #[tokio::test]
    async fn a_503_twice_is_retried_with_backoff_then_succeeds() {
        let (url, seen) = answering(vec![(503, Vec::new()), (503, Vec::new())]).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let with = json!({"url": url, "backoff": "10ms"});
        let done = run(&ctx, config(with))
            .await
            .expect("the third attempt succeeds");
        assert_eq!(done.outputs["attempts"], json!(3));
        let times = seen.lock().expect("lock").clone();
        assert_eq!(times.len(), 3);
        // 10ms, then twice that.
        assert!(
            times[2] - times[1] >= Duration::from_millis(20),
            "{times:?}"
        );

        // With one attempt fewer, the last 503 is the task's error.
        let (url, seen) = answering(vec![(503, Vec::new()), (503, Vec::new())]).await;
        let with = json!({"url": url, "backoff": "10ms", "attempts": 2});
        let err = run(&ctx, config(with)).await.unwrap_err().to_string();
        assert!(
            err.contains("returned 503 Service Unavailable") && err.ends_with("(after 2 attempts)"),
            "{err}"
        );
        assert_eq!(seen.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn refused_and_expected_statuses_are_not_retried() {
        let (url, seen) = answering(vec![(404, Vec::new()), (501, Vec::new())]).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let with = json!({"url": url, "backoff": "10ms"});
        let err = run(&ctx, config(with.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("returned 404 Not Found"), "{err}");
        assert!(!err.contains("attempts"), "{err}");
        let err = run(&ctx, config(with)).await.unwrap_err().to_string();
        assert!(err.contains("returned 501 Not Implemented"), "{err}");
        assert_eq!(seen.lock().expect("lock").len(), 2);
        // A 503 the task expects is its answer, not a failure.
        let (url, seen) = answering(vec![(503, Vec::new())]).await;
        let with = json!({"url": url, "expect_status": [503]});
        let done = run(&ctx, config(with)).await.expect("expected");
        assert_eq!(done.outputs["status"], json!(503));
        assert_eq!(seen.lock().expect("lock").len(), 1);
    }

    #[tokio::test]
    async fn cancelling_ends_the_wait_between_attempts() {
        let (url, seen) = answering(vec![(429, vec![("retry-after", "60")])]).await;
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _log) = context(dir.path());
        let cancel = ctx.cancel.clone();
        let task = tokio::spawn(async move { run(&ctx, config(json!({"url": url}))).await });
        let asked = wait_for(Duration::from_secs(10), || {
            !seen.lock().expect("lock").is_empty()
        })
        .await;
        assert!(asked, "the server never saw the request");
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the wait ended at once")
            .expect("joined");
        assert!(
            matches!(result, Err(OperatorError::Cancelled)),
            "{result:?}"
        );
    }
}
