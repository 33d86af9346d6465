//! `http`: one HTTP request; asserts the status; a JSON response becomes `outputs.json`.

use std::fmt;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::shell::Text;
use super::{Completion, OpContext, OperatorError, Outputs, Result, error_chain};
use crate::duration::HumanDuration;

/// Response bodies longer than this are cut in `outputs.body` (outputs live in the database).
const MAX_TEXT_BYTES: usize = 1024 * 1024;
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
    /// How long the whole request, including reading the response, may take. Default: `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
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
    pub headers: IndexMap<String, String>,
    pub body: Option<Body>,
    /// Empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub timeout: Duration,
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
        // The URL and headers are checked when the task runs: they are often templates
        // (`{{ vars.base_url }}/v1/…`) that only make sense once rendered.
        Ok(HttpConfig {
            url: with.url,
            method: with.method,
            headers: with.headers.into_iter().map(|(k, v)| (k, v.0)).collect(),
            body,
            expect_status: with.expect_status,
            timeout: with.timeout.0,
        })
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
    let method = config.method;
    let mut request = ctx
        .http
        .request(method.as_reqwest(), url.clone())
        .timeout(config.timeout);
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of header `{name}` is not valid in HTTP")))?;
        request = request.header(name, value);
    }
    request = match &config.body {
        Some(Body::Json(json)) => request.json(json),
        Some(Body::Text(text)) => request.body(text.clone()),
        None => request,
    };

    let started = Instant::now();
    let response = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            ctx.log.system(format!("{method} {url} was abandoned: the task was cancelled."));
            return Err(OperatorError::Cancelled);
        }
        response = send(request) => response,
    };
    let response = response.map_err(|e| {
        if e.is_timeout() {
            OperatorError::failed(format!(
                "{method} {url} did not finish within {}",
                HumanDuration(config.timeout)
            ))
        } else {
            OperatorError::failed(format!("{method} {url} failed: {}", error_chain(&e)))
        }
    })?;
    let status = response.status;
    ctx.log.system(format!(
        "{method} {url} -> {} in {} ms",
        status.as_u16(),
        started.elapsed().as_millis()
    ));

    let expected = if config.expect_status.is_empty() {
        status.is_success()
    } else {
        config.expect_status.contains(&status.as_u16())
    };
    if !expected {
        let wanted = if config.expect_status.is_empty() {
            "a 2xx status".to_owned()
        } else {
            let list: Vec<String> = config.expect_status.iter().map(u16::to_string).collect();
            list.join(" or ")
        };
        let body = String::from_utf8_lossy(cut(&response.body, ERROR_BODY_BYTES));
        let body = if body.trim().is_empty() {
            "the body was empty".to_owned()
        } else {
            format!("the body began with: {body}")
        };
        let message = format!("{method} {url} returned {status}, expected {wanted}; {body}");
        return Err(OperatorError::failed(
            ctx.masker.mask(&message).into_owned(),
        ));
    }

    let mut outputs = Outputs::new();
    outputs.insert("status".into(), Value::from(status.as_u16()));
    outputs.insert("headers".into(), Value::Object(response.headers));
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

/// The first `max` bytes, shortened to a character boundary when the bytes are UTF-8.
fn cut(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    // Step back over UTF-8 continuation bytes so the text does not end in half a character.
    while end > 0 && end > max.saturating_sub(4) && (bytes[end] & 0b1100_0000) == 0b1000_0000 {
        end -= 1;
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::super::LogStream;
    use super::super::shell::test_support::{context, lines};
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
        let err = run(&ctx, config(json!({"url": format!("http://{addr}/")})))
            .await
            .unwrap_err();
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
        let with = json!({"url": format!("http://{addr}/slow"), "timeout": "200ms"});
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
        let err = run(&ctx, config(json!({"url": format!("http://{addr}/")})))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("GET http://{addr}/ failed")),
            "{err}"
        );
    }

    #[test]
    fn config_checks() {
        use crate::operators::Operator;
        let err = |with: Value| Operator::Http.check_config(with).unwrap_err().to_string();
        assert!(err(json!({"url": "http://x", "json": {}, "body": "a"})).contains("not both"));
        assert!(err(json!({"url": "http://x", "expect_status": [99]})).contains("not an HTTP"));
        assert!(err(json!({"url": "http://x", "method": "FETCH"})).contains("unknown variant"));
        assert!(err(json!({})).contains("missing field `url`"));
        let c = config(json!({"url": "http://x"}));
        assert_eq!(
            (c.method, c.timeout),
            (Method::Get, Duration::from_secs(30))
        );
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

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo".as_bytes(), 2), b"h");
        assert_eq!(cut(b"abc", 10), b"abc");
    }
}
