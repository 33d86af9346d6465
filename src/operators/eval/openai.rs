//! Chat completions against any OpenAI-compatible endpoint, for the `openai` target and the
//! judge: one request per call, repeated through the shared `retry` policy on 429, 5xx and
//! lost connections (waiting as `Retry-After` asks), each attempt bounded by a timeout, token
//! usage read from the reply, and, when asked, answered from the store's response cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::duration::HumanDuration;
use crate::retry::{Failure, Jitter, RetryAfter, RetryError, RetryPolicy, SystemClock};
use crate::store::Store;

/// The most of an error reply's body an example's error quotes.
const ERROR_BODY_CHARS: usize = 200;

/// An OpenAI-compatible chat-completions endpoint and how to call it (the `openai` target,
/// and `judge`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiTarget {
    /// The API's base URL; requests go to `<base_url>/chat/completions`. Default:
    /// `https://api.openai.com/v1`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The model name sent with each request, and the key of its price in `[eval.prices]`.
    pub model: String,
    /// The name of the secret holding the API key (`SLUICE_SECRET_<NAME>`), sent as a bearer
    /// token. None: no `Authorization` header (local servers).
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Sampling temperature; the server's default when absent.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// The most tokens one answer may have; the server's default when absent.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// A system message sent before every example's messages.
    #[serde(default)]
    pub system: Option<String>,
    /// The user message for an example with `input`, as a template over `example` (`id`,
    /// `input`, `context` — a list — and `tags`). Default: `{{ example.input }}`. Written in
    /// the workflow, it is itself rendered as the task starts: wrap it in `{% raw %}…{% endraw
    /// %}`, or use `prompt_file`. Examples with `messages` are sent as written.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A file holding the `prompt` template, relative to the workflow file's folder. Not
    /// together with `prompt`.
    #[serde(default)]
    pub prompt_file: Option<std::path::PathBuf>,
    /// How many requests are in flight at once. Default: 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long one attempt may take, reading the answer included. Default: `60s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Attempts per example, the first included, on 429, 5xx, time-outs and lost
    /// connections. Default: 4.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_base_url() -> String {
    "https://api.openai.com/v1".to_owned()
}

fn default_concurrency() -> usize {
    8
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_attempts() -> u32 {
    4
}

impl OpenAiTarget {
    pub fn check(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "`base_url` `{}` must start with http:// or https://",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return Err("`model` is empty".to_owned());
        }
        if self.concurrency == 0 {
            return Err("`concurrency` must be at least 1".to_owned());
        }
        if self.timeout.0.is_zero() {
            return Err("`timeout` must be longer than zero".to_owned());
        }
        if self.prompt.is_some() && self.prompt_file.is_some() {
            return Err("give `prompt` or `prompt_file`, not both".to_owned());
        }
        if self.attempts == 0 {
            return Err("`attempts` must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// An answer, with what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// From sending the first attempt to reading the last one's answer, waits included; for a
    /// cache hit, the latency of the request that filled the cache.
    pub latency_ms: f64,
    #[serde(skip)]
    pub cached: bool,
}

/// A client for one endpoint, shared by every example of a task.
pub struct Chat<'a> {
    pub http: &'a reqwest::Client,
    pub target: &'a OpenAiTarget,
    pub api_key: Option<String>,
    pub cache: Option<&'a Store>,
    pub cancel: &'a CancellationToken,
    /// Attempts that failed and were made again, over every call.
    pub retries: AtomicU64,
    /// Calls answered from the cache.
    pub cache_hits: AtomicU64,
}

impl Chat<'_> {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.target.attempts,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            jitter: Jitter::Equal,
        }
    }

    /// The cache key of a request: SHA-256 over the target kind, endpoint, model, messages as
    /// rendered and the sampling parameters.
    pub fn cache_key(&self, messages: &[Message]) -> String {
        let request = json!({
            "target": "openai",
            "base_url": self.target.base_url,
            "model": self.target.model,
            "messages": messages,
            "temperature": self.target.temperature,
            "max_tokens": self.target.max_tokens,
        });
        hex::encode(Sha256::digest(request.to_string().as_bytes()))
    }

    /// Asks for one completion. `on_retry` hears of each attempt that is followed by
    /// another. Errors are sentences for the example's result.
    pub async fn complete(
        &self,
        messages: &[Message],
        on_retry: impl FnMut(u32, &str, Duration),
    ) -> Result<Reply, String> {
        let key = self.cache.map(|_| self.cache_key(messages));
        if let (Some(store), Some(key)) = (self.cache, &key) {
            match store.eval_cache_get(key).await {
                Ok(Some(stored)) => {
                    if let Ok(mut reply) = serde_json::from_str::<Reply>(&stored) {
                        reply.cached = true;
                        self.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(reply);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(format!("the response cache could not be read: {e}")),
            }
        }
        let reply = self.request(messages, on_retry).await?;
        if let (Some(store), Some(key)) = (self.cache, &key) {
            let stored = serde_json::to_string(&reply).unwrap_or_default();
            if let Err(e) = store.eval_cache_put(key, &stored, chrono::Utc::now()).await {
                return Err(format!("the response cache could not be written: {e}"));
            }
        }
        Ok(reply)
    }

    async fn request(
        &self,
        messages: &[Message],
        mut on_retry: impl FnMut(u32, &str, Duration),
    ) -> Result<Reply, String> {
        let url = format!(
            "{}/chat/completions",
            self.target.base_url.trim_end_matches('/')
        );
        let mut body = json!({ "model": self.target.model, "messages": messages });
        if let Some(temperature) = self.target.temperature {
            body["temperature"] = json!(temperature);
        }
        if let Some(max_tokens) = self.target.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        let started = Instant::now();
        let outcome = self
            .policy()
            .run(
                &SystemClock,
                self.cancel,
                |_| self.attempt(&url, &body),
                |retrying| {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    on_retry(retrying.attempt, retrying.error.as_str(), retrying.wait);
                },
            )
            .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(done) => Ok(Reply {
                latency_ms,
                ..done.value
            }),
            Err(RetryError::Refused { error, .. }) => Err(error),
            Err(RetryError::Exhausted { error, attempts }) => {
                Err(format!("{error} (after {attempts} attempts)"))
            }
            Err(RetryError::Cancelled) => Err("the task was stopped".to_owned()),
            Err(RetryError::Interrupted(never)) => match never {},
        }
    }

    async fn attempt(&self, url: &str, body: &Value) -> Result<Reply, Failure<String>> {
        let mut request = self
            .http
            .post(url)
            .timeout(self.target.timeout.0)
            .json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            Failure::from_request_error(&e, describe_request_error(&e, self.target))
        })?;
        let status = response.status();
        let retry_after = RetryAfter::from_headers(response.headers());
        let text = response.text().await.map_err(|e| {
            Failure::from_request_error(&e, describe_request_error(&e, self.target))
        })?;
        if !status.is_success() {
            let quoted: String = text.chars().take(ERROR_BODY_CHARS).collect();
            return Err(Failure::from_status(
                status,
                retry_after,
                format!("the API answered {status}: {}", quoted.trim()),
            ));
        }
        parse_reply(&text).map_err(Failure::Permanent)
    }
}

fn describe_request_error(error: &reqwest::Error, target: &OpenAiTarget) -> String {
    if error.is_timeout() {
        format!(
            "no answer within {} (the target's `timeout`)",
            target.timeout
        )
    } else if error.is_connect() {
        format!("could not connect to {}", target.base_url)
    } else {
        format!(
            "the request failed: {}",
            crate::operators::support::error_chain(error)
        )
    }
}

/// Reads a chat-completions reply: the first choice's message and the token usage (0 when
/// the server reports none).
pub fn parse_reply(text: &str) -> Result<Reply, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the API's answer is not JSON ({e})"))?;
    let content = value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or("the API's answer has no `choices[0].message.content`")?;
    let usage = |name: &str| {
        value
            .pointer(&format!("/usage/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Reply {
        text: content.to_owned(),
        input_tokens: usage("prompt_tokens"),
        output_tokens: usage("completion_tokens"),
        latency_ms: 0.0,
        cached: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_with_their_usage() {
        let reply = parse_reply(
            r#"{"choices":[{"message":{"role":"assistant","content":"Paris"}}],
                "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        )
        .expect("a reply");
        assert_eq!(
            (reply.text.as_str(), reply.input_tokens, reply.output_tokens),
            ("Paris", 12, 3)
        );
        let no_usage =
            parse_reply(r#"{"choices":[{"message":{"content":"x"}}]}"#).expect("a reply");
        assert_eq!((no_usage.input_tokens, no_usage.output_tokens), (0, 0));
        assert!(parse_reply("{not json").is_err_and(|e| e.contains("not JSON")));
        assert!(parse_reply(r#"{"choices":[]}"#).is_err_and(|e| e.contains("choices[0]")));
    }
}
