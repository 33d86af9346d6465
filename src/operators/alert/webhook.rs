//! Alert webhooks: a Slack-compatible `{"text": …}` (with optional blocks) or any JSON body,
//! POSTed to a URL, retried by the shared `retry` policy (429, 5xx, lost connections).

use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Severity;
use crate::duration::HumanDuration;
use crate::operators::support::{
    Retry, Text, after_attempts, error_chain, header_map, log_retry, shorten,
};
use crate::operators::{OpContext, OperatorError, Outputs, Result};
use crate::retry::{Failure, RetryAfter, RetryError, Succeeded, SystemClock};

/// How much of a refusing server's answer the task's error quotes.
const ERROR_BODY_CHARS: usize = 300;

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// The `webhook` of an alert.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where to POST; keep it in a secret: `{{ secrets.SLACK_WEBHOOK_URL }}`.
    pub url: String,
    /// The message, sent as Slack's `{"text": …}` with the severity in front.
    #[serde(default)]
    pub text: Option<String>,
    /// Slack Block Kit blocks, sent beside `text` (which is then the notification's fallback).
    #[serde(default)]
    pub blocks: Option<Vec<Value>>,
    /// Any JSON body instead of `text` and `blocks`, sent exactly as given.
    #[serde(default)]
    pub json: Option<Value>,
    /// Extra request headers, by name.
    #[serde(default)]
    pub headers: IndexMap<String, Text>,
    /// How long one request may take. Default `10s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

impl WebhookSpec {
    /// Problems visible before templates are rendered.
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        match (&self.json, self.text.is_some() || self.blocks.is_some()) {
            (Some(_), true) => {
                Err("`webhook` has `json` and `text`/`blocks`; give one or the other".into())
            }
            (None, false) => Err("`webhook` needs `text`, `blocks` or `json`".into()),
            _ if self.timeout.0.is_zero() => {
                Err("`webhook.timeout` must be longer than zero".into())
            }
            _ => Ok(()),
        }
    }

    /// The body to send: `json` as given, or the Slack message with the severity, the
    /// held-back count and the run's link.
    pub(super) fn body(&self, severity: Severity, note: Option<&str>, run_link: &str) -> Value {
        if let Some(json) = &self.json {
            return json.clone();
        }
        let mut text = format!("[{severity}] {}", self.text.as_deref().unwrap_or("").trim());
        if let Some(note) = note {
            text.push_str(&format!("\n_{note}_"));
        }
        text.push('\n');
        text.push_str(run_link);
        let mut body = json!({ "text": text });
        if let Some(blocks) = &self.blocks {
            let mut blocks = blocks.clone();
            if let Some(note) = note {
                blocks.push(json!({
                    "type": "context",
                    "elements": [{ "type": "mrkdwn", "text": note }]
                }));
            }
            body["blocks"] = Value::Array(blocks);
        }
        body
    }
}

/// POSTs the webhook; returns its outputs (`status`, `attempts`).
pub(super) async fn send(
    ctx: &OpContext,
    spec: &WebhookSpec,
    body: &Value,
    retry: Retry,
) -> Result<Outputs> {
    let invalid = |message: String| OperatorError::Config {
        operator: "alert",
        message,
    };
    // The URL is usually a secret: messages name its host at most.
    let url = reqwest::Url::parse(spec.url.trim())
        .map_err(|e| invalid(format!("`webhook.url` is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "`webhook.url` must start with http:// or https://".into(),
        ));
    }
    let target = url.host_str().unwrap_or("the webhook").to_owned();
    let headers = header_map("alert", &spec.headers)?;
    let policy = retry.policy();
    let attempt = |_| {
        let request = ctx
            .http
            .post(url.clone())
            .headers(headers.clone())
            .json(body)
            .timeout(spec.timeout.0);
        let target = &target;
        async move {
            let response = request.send().await.map_err(|error| {
                let failure = Failure::from_request_error(&error, ());
                // The URL is usually a secret: the message leaves it out.
                let problem = format!(
                    "the webhook at {target} could not be reached: {}",
                    error_chain(&error.without_url())
                );
                failure.map(|()| problem)
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(status.as_u16());
            }
            let retry_after = RetryAfter::from_headers(response.headers());
            let text = response.text().await.unwrap_or_default();
            let excerpt = shorten(text.trim(), ERROR_BODY_CHARS);
            let problem = format!("the webhook at {target} answered {status}: {excerpt}");
            Err(Failure::from_status(status, retry_after, problem))
        }
    };
    match policy
        .run(&SystemClock, &ctx.cancel, attempt, |retrying| {
            log_retry(&ctx.log, retrying)
        })
        .await
    {
        Ok(Succeeded {
            value: status,
            attempts,
        }) => {
            ctx.log.system(format!(
                "Webhook to {target} answered {status} (attempt {attempts})."
            ));
            let mut outputs = Outputs::new();
            outputs.insert("status".into(), json!(status));
            outputs.insert("attempts".into(), json!(attempts));
            Ok(outputs)
        }
        Err(
            RetryError::Refused { error, attempts } | RetryError::Exhausted { error, attempts },
        ) => Err(OperatorError::failed(after_attempts(error, attempts))),
        Err(RetryError::Cancelled) => Err(OperatorError::Cancelled),
        Err(RetryError::Interrupted(never)) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(with: Value) -> WebhookSpec {
        serde_json::from_value(with).expect("a valid webhook")
    }

    #[test]
    fn slack_text_gets_severity_note_and_link() {
        let body = spec(json!({"url": "http://x", "text": "Drift detected"})).body(
            Severity::Critical,
            Some("2 similar alerts were held back"),
            "<http://s/runs/r|wf run r>",
        );
        assert_eq!(
            body,
            json!({"text": "[critical] Drift detected\n_2 similar alerts were held back_\n<http://s/runs/r|wf run r>"})
        );
        let with_blocks = spec(
            json!({"url": "http://x", "text": "t", "blocks": [{"type": "divider"}]}),
        )
        .body(Severity::Info, Some("n"), "l");
        assert_eq!(with_blocks["blocks"].as_array().map(Vec::len), Some(2));
        let raw = spec(json!({"url": "http://x", "json": {"summary": "s"}})).body(
            Severity::Info,
            Some("n"),
            "l",
        );
        assert_eq!(
            raw,
            json!({"summary": "s"}),
            "a JSON body is sent exactly as given"
        );
    }

    #[test]
    fn body_choices_are_checked() {
        assert!(
            spec(json!({"url": "u", "text": "t", "json": {}}))
                .check()
                .is_err()
        );
        assert!(spec(json!({"url": "u"})).check().is_err());
        assert!(spec(json!({"url": "u", "blocks": []})).check().is_ok());
    }
}
