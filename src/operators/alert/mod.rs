//! `alert`: tells people something happened, by email (SMTP through lettre) and/or a chat
//! webhook (Slack-compatible JSON). Transient failures are tried again with backoff; permanent
//! ones fail the task with the server's reply. With a `window`, repeats of the same `key` are
//! held back and counted, and the next alert that goes out says how many were.

pub mod email;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::support::Retry;
use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::duration::HumanDuration;
use crate::secrets::Masker;
use crate::store::{Store, ThrottleDecision};

pub use email::{Envelope, Headline, Mailer, MailerError, SmtpSettings, compose, parse_addresses};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information; nothing to do.
    Info,
    /// Someone should look soon.
    #[default]
    Warning,
    /// Someone should act now.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_attempts() -> u32 {
    4
}

fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// The settings of an `alert` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertWith {
    /// `info`, `warning` (default) or `critical`; shown in front of the subject and the text.
    #[serde(default)]
    pub severity: Severity,
    /// An email to send, through `[smtp]` in `sluice.toml` or this email's own `smtp`.
    #[serde(default)]
    pub email: Option<email::EmailSpec>,
    /// A chat webhook to call (Slack-compatible, or any JSON).
    #[serde(default)]
    pub webhook: Option<webhook::WebhookSpec>,
    /// What makes two alerts "the same" for `window`. Default: the workflow, this task and the
    /// kinds of error of the run's failed tasks.
    #[serde(default)]
    pub key: Option<String>,
    /// Hold back alerts with the same `key` for this long after one went out (`30m`, `1h`);
    /// the next one that goes out says how many were held back. Absent: every alert goes out.
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// How many times each send is attempted when it fails in a way that may pass (SMTP 4xx,
    /// lost connections, timeouts, HTTP 408, 429 and 5xx other than 501). Default 4.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each (up to 1m). Default `1s`.
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
}

/// A checked `alert` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "AlertWith")]
pub struct AlertConfig {
    pub severity: Severity,
    pub email: Option<email::EmailSpec>,
    pub webhook: Option<webhook::WebhookSpec>,
    pub key: Option<String>,
    pub window: Option<Duration>,
    pub retry: Retry,
}

impl TryFrom<AlertWith> for AlertConfig {
    type Error = String;

    fn try_from(with: AlertWith) -> std::result::Result<Self, String> {
        if with.email.is_none() && with.webhook.is_none() {
            return Err("an alert needs `email`, `webhook` or both".into());
        }
        if let Some(email) = &with.email {
            email.check()?;
        }
        if let Some(webhook) = &with.webhook {
            webhook.check()?;
        }
        if with.attempts == 0 {
            return Err("`attempts` must be at least 1".into());
        }
        if with.window.is_some_and(|w| w.0.is_zero()) {
            return Err("`window` must be longer than zero (or left out)".into());
        }
        if with.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("`key` is empty".into());
        }
        Ok(AlertConfig {
            severity: with.severity,
            email: with.email,
            webhook: with.webhook,
            key: with.key,
            window: with.window.map(|w| w.0),
            retry: Retry {
                attempts: with.attempts,
                backoff: with.backoff.0,
            },
        })
    }
}

impl AlertConfig {
    /// Masks secret values in what the alert says (not in where it goes: the URL and the SMTP
    /// login are used, never shown). Alerts reach chat channels and inboxes, which are not
    /// places for secrets even when a template asked for one.
    fn mask_content(&mut self, masker: &Masker) {
        let mask = |text: &mut String| {
            if let std::borrow::Cow::Owned(masked) = masker.mask(text) {
                *text = masked;
            }
        };
        // The key is stored in the database and shown in outputs.
        if let Some(key) = &mut self.key {
            mask(key);
        }
        if let Some(email) = &mut self.email {
            mask(&mut email.subject);
            mask(&mut email.body);
            if let Some(html) = &mut email.html {
                mask(html);
            }
            for attachment in &mut email.attachments {
                if let email::AttachmentSpec::Detailed(details) = attachment
                    && let Some(content) = &mut details.content
                {
                    mask(content);
                }
            }
        }
        if let Some(webhook) = &mut self.webhook {
            if let Some(text) = &mut webhook.text {
                mask(text);
            }
            if let Some(blocks) = &mut webhook.blocks {
                blocks.iter_mut().for_each(|b| masker.mask_json(b));
            }
            if let Some(json) = &mut webhook.json {
                masker.mask_json(json);
            }
        }
    }
}

pub async fn run(ctx: &OpContext, mut config: AlertConfig) -> Result<Completion> {
    config.mask_content(&ctx.masker);
    let mut outputs = Outputs::new();
    outputs.insert("severity".into(), json!(config.severity.as_str()));
    let mut note = None;
    let mut claim = None;
    if let Some(window) = config.window {
        let store = ctx.services.store.as_ref().ok_or_else(|| {
            OperatorError::failed("`window` needs the database, which this process does not have")
        })?;
        let key = match &config.key {
            Some(key) => key.trim().to_owned(),
            None => default_key(ctx, store).await?,
        };
        let throttled = store
            .throttle(&key, window, Utc::now())
            .await
            .map_err(|e| {
                OperatorError::failed(format!("cannot read the alert's dedup state: {e}"))
            })?;
        outputs.insert("key".into(), json!(key));
        match throttled.decision {
            ThrottleDecision::Suppress {
                suppressed,
                last_sent_at,
            } => {
                ctx.log.system(format!(
                    "Held back: an alert with key `{key}` went out at {} (window {}); {suppressed} held back since.",
                    last_sent_at.to_rfc3339(),
                    HumanDuration(window)
                ));
                outputs.insert("suppressed".into(), json!(true));
                outputs.insert("suppressed_count".into(), json!(suppressed));
                return Ok(Completion::from(outputs));
            }
            ThrottleDecision::Send { suppressed } => {
                outputs.insert("suppressed_before".into(), json!(suppressed));
                if suppressed > 0 {
                    note = Some(format!(
                        "{suppressed} similar alert{} held back since the last one (window {}).",
                        if suppressed == 1 { " was" } else { "s were" },
                        HumanDuration(window)
                    ));
                }
                claim = throttled.claim;
            }
        }
    }
    outputs.insert("suppressed".into(), json!(false));
    match deliver(ctx, &config, note.as_deref()).await {
        Ok(delivered) => {
            outputs.extend(delivered);
            Ok(Completion::from(outputs))
        }
        Err(error) => {
            // What failed did not arrive: it must not hold back the next alert.
            if let (Some(claim), Some(store)) = (claim, &ctx.services.store)
                && let Err(e) = store.release_throttle(&claim).await
            {
                ctx.log
                    .system(format!("Could not give back the alert's dedup slot: {e}"));
            }
            Err(error)
        }
    }
}

/// Sends the email and calls the webhook. Both are attempted even when the first fails, so one
/// broken channel does not silence the other.
async fn deliver(ctx: &OpContext, config: &AlertConfig, note: Option<&str>) -> Result<Outputs> {
    let run_url = ctx.services.run_url(&ctx.run_id);
    let run_line = format!("Workflow {}, run {}", ctx.workflow, ctx.run_id);
    let mut outputs = Outputs::new();
    let mut failures = Vec::new();
    if let Some(spec) = &config.email {
        let framing = email::Framing {
            severity: config.severity,
            note,
            run_line: &run_line,
            run_url: &run_url,
        };
        match email::send(ctx, spec, &framing, config.retry).await {
            Ok(sent) => {
                outputs.insert("email".into(), serde_json::Value::Object(sent));
            }
            Err(OperatorError::Cancelled) => return Err(OperatorError::Cancelled),
            Err(e @ OperatorError::Config { .. }) if config.webhook.is_none() => return Err(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(spec) = &config.webhook {
        let link = format!("<{run_url}|{run_line}>");
        let body = spec.body(config.severity, note, &link);
        match webhook::send(ctx, spec, &body, config.retry).await {
            Ok(sent) => {
                outputs.insert("webhook".into(), serde_json::Value::Object(sent));
            }
            Err(OperatorError::Cancelled) => return Err(OperatorError::Cancelled),
            Err(e @ OperatorError::Config { .. }) if config.email.is_none() => return Err(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        return Ok(outputs);
    }
    let mut message = failures.join("; ");
    if !outputs.is_empty() {
        let sent: Vec<&str> = outputs.keys().map(String::as_str).collect();
        message.push_str(&format!(" (the {} went out)", sent.join(" and ")));
    }
    Err(OperatorError::failed(message))
}

/// The default dedup key: the workflow, this task, and each failed task of the run with the
/// kind of its error — so the same breakage repeats under one key, and a new one does not.
async fn default_key(ctx: &OpContext, store: &Store) -> Result<String> {
    let failures = store
        .task_failures(&ctx.run_id)
        .await
        .map_err(|e| OperatorError::failed(format!("cannot read the run's failed tasks: {e}")))?;
    let mut key = format!("{}/{}", ctx.workflow, ctx.task);
    for failure in failures.iter().filter(|f| f.task_id != ctx.task) {
        key.push_str(&format!(
            " | {}: {}",
            failure.task_id,
            error_kind(&failure.error)
        ));
    }
    Ok(key)
}

/// An error message with what differs between occurrences of the same failure taken out:
/// its first line, digits replaced by `#`, at most 120 characters.
pub fn error_kind(error: &str) -> String {
    error
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .take(120)
        .collect()
}

/// Text made safe for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
