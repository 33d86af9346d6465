//! What operators share beyond `OpContext`: errors as one line (`error_chain`), text cut to a
//! size (`shorten`, `cut`), `Text` for config values used as text, request headers from a
//! config (`header_map`), the attempts-and-backoff setting of calls to other services
//! (`Retry`, a `retry::RetryPolicy`) with its log line, the model registry as operators reach
//! it (`registry`, `registry_error`, `version_number`, the gate's version tags), and, for tests,
//! a try's context and a built-in registry (`test_support`). One owner each, so operators do not grow their own copies.

use std::time::Duration;

use indexmap::IndexMap;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{LogSink, OperatorError, Result};
use crate::duration::HumanDuration;
use crate::retry::{Jitter, RetryPolicy, Retrying};

/// An error and its causes in one line: what helps the reader ("connection refused", the
/// server's reply) is usually a cause, not the error itself.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` in at most `max_chars` characters: cut, with `…` as the last one, when longer.
pub fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first `max` bytes, shortened to a character boundary when the bytes are UTF-8.
pub fn cut(bytes: &[u8], max: usize) -> &[u8] {
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

/// A problem, with how many attempts it took to give up when there was more than one.
pub fn after_attempts(problem: String, attempts: u32) -> String {
    if attempts > 1 {
        format!("{problem} (after {attempts} attempts)")
    } else {
        problem
    }
}

/// A value that is used as text (an environment variable, an HTTP header): strings as they are,
/// numbers and booleans as their text, lists and maps as JSON, null as the empty string. Lets
/// `"{{ params.samples }}"`, which renders to a number, be used where text is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(Text(match Value::deserialize(deserializer)? {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }))
    }
}

impl JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Text; numbers and booleans are used as their text, lists and maps as JSON.",
            "type": ["string", "number", "boolean", "array", "object", "null"]
        })
    }
}

/// The model registry (`services.tracking`); `operator` names who needs it in the error.
pub fn registry<'a>(
    ctx: &'a super::OpContext,
    operator: &str,
) -> Result<&'a crate::tracking::Tracking> {
    ctx.services.tracking.as_deref().ok_or_else(|| {
        OperatorError::failed(format!(
            "`{operator}` needs the model registry, which this process does not have"
        ))
    })
}

/// A registry error as an operator's: an answer the registry gave is final, the rest may pass.
pub fn registry_error(what: &str, error: crate::tracking::TrackingError) -> OperatorError {
    use crate::tracking::TrackingError;
    match error {
        TrackingError::UnknownVersion { .. } | TrackingError::Invalid(_) => {
            OperatorError::rejected(format!("{what}: {error}"))
        }
        _ => OperatorError::failed(format!("{what}: {error}")),
    }
}

/// A version as the registry numbers it.
pub fn version_number(model: &str, version: &str) -> Result<u32> {
    version.trim().parse().map_err(|_| {
        OperatorError::rejected(format!(
            "`{version}` is not a version of `{model}`; registry versions are numbers (1, 2, …)"
        ))
    })
}

/// The version tags a gate records its result in: `passed` or `failed`, its one-line summary,
/// and the task that decided (`run:<id>/<task>`). `deploy` reads the first to refuse a version
/// that failed.
pub mod gate_tags {
    pub const RESULT: &str = "sluice.gate";
    pub const SUMMARY: &str = "sluice.gate.summary";
    pub const RUN: &str = "sluice.gate.run";
    pub const PASSED: &str = "passed";
    pub const FAILED: &str = "failed";
}

/// Request headers from a config's `headers` map. A name or value HTTP does not allow is a
/// config error of `operator` that names the header (never its value, which may be a secret).
pub fn header_map(operator: &'static str, headers: &IndexMap<String, Text>) -> Result<HeaderMap> {
    let invalid = |message: String| OperatorError::Config { operator, message };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
        let value = HeaderValue::from_str(&value.0)
            .map_err(|_| invalid(format!("the value of header `{name}` is not valid in HTTP")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The longest wait between two attempts of one call, and the longest `Retry-After` waited for
/// in full.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How a call to another service is repeated after a failure that may pass: the `attempts`
/// and `backoff` an operator's config documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub struct Retry {
    pub attempts: u32,
    /// The first wait; each next one is twice as long, up to [`MAX_BACKOFF`].
    pub backoff: Duration,
}

impl Retry {
    /// The shared retry policy with these settings.
    pub fn policy(self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.attempts,
            first_backoff: self.backoff,
            max_backoff: MAX_BACKOFF,
            max_retry_after: MAX_BACKOFF,
            jitter: Jitter::None,
        }
    }
}

/// The task log's line for a failed attempt that is tried again.
pub fn log_retry(log: &LogSink, retrying: &Retrying<'_, String>) {
    log.system(format!(
        "Attempt {}: {}; trying again in {}.",
        retrying.attempt,
        retrying.error,
        HumanDuration(retrying.wait)
    ));
}

/// Helpers shared by the operator tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::operators::{LogLine, LogSink, LogStream, OpContext};
    use crate::secrets::Masker;

    /// A context for one try of task `t` in `dir`, and the receiving end of its log.
    pub fn context(dir: &Path) -> (OpContext, mpsc::UnboundedReceiver<LogLine>) {
        rustls::crypto::ring::default_provider()
            .install_default()
            .ok();
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = OpContext {
            run_id: "run-1".into(),
            workflow: "wf".into(),
            task: "t".into(),
            try_number: 1,
            env: Vec::new(),
            base_dir: dir.to_path_buf(),
            scratch_dir: dir.join("scratch"),
            log: LogSink::new(tx),
            http: reqwest::Client::builder().build().expect("an HTTP client"),
            cancel: CancellationToken::new(),
            masker: Arc::new(Masker::default()),
            first_started_at: chrono::Utc::now(),
            services: Arc::default(),
            artifacts_requested: Arc::default(),
        };
        (ctx, rx)
    }

    /// A built-in registry over an in-memory database, its files under `dir`.
    pub async fn builtin_tracking(dir: &Path) -> Arc<crate::tracking::Tracking> {
        builtin_tracking_over(memory_store().await, dir)
    }

    /// An in-memory database.
    pub async fn memory_store() -> crate::store::Store {
        crate::store::Store::open(&crate::store::StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store")
    }

    /// A built-in registry over `store`, its files under `dir`.
    pub fn builtin_tracking_over(
        store: crate::store::Store,
        dir: &Path,
    ) -> Arc<crate::tracking::Tracking> {
        use crate::artifacts::{Artifacts, Limits, Location};
        let artifacts = Artifacts::open(&Location::Folder(dir.join("blobs")), Limits::default())
            .expect("blobs");
        Arc::new(crate::tracking::Tracking::Builtin(
            crate::tracking::Builtin::new(store, artifacts),
        ))
    }

    /// Every line logged so far on `stream`.
    pub fn lines(rx: &mut mpsc::UnboundedReceiver<LogLine>, stream: LogStream) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = rx.try_recv() {
            if line.stream == stream {
                out.push(line.text);
            }
        }
        out
    }

    /// Waits for `condition` to hold, checking every few milliseconds, for at most `limit`.
    pub async fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        condition()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_caps_characters_not_bytes() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo wörld", 5), "héll…");
        assert_eq!(shorten("abc", 0), "…");
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo".as_bytes(), 2), b"h");
        assert_eq!(cut(b"abc", 10), b"abc");
    }

    #[test]
    fn headers_are_checked_by_name_without_echoing_values() {
        let mut headers = IndexMap::new();
        headers.insert("X-N".to_owned(), Text("5".into()));
        headers.insert("X-N".to_owned(), Text("6".into()));
        let map = header_map("http", &headers).expect("valid");
        assert_eq!(map.get("x-n").and_then(|v| v.to_str().ok()), Some("6"));
        headers.insert("bad name".to_owned(), Text("v".into()));
        let error = header_map("http", &headers).expect_err("a bad name");
        assert!(matches!(
            error,
            OperatorError::Config {
                operator: "http",
                ..
            }
        ));
        assert!(error.to_string().contains("`bad name`"), "{error}");
        let mut secret = IndexMap::new();
        secret.insert("Authorization".to_owned(), Text("token\nsk-123".into()));
        let error = header_map("alert", &secret)
            .expect_err("a bad value")
            .to_string();
        assert!(
            error.contains("`authorization`") && !error.contains("sk-123"),
            "{error}"
        );
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot reach the server")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Outer(io)),
            "cannot reach the server: connection refused"
        );
    }
}
