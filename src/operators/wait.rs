//! `wait`: a sensor. Checks an HTTP URL, a file or an expression until it is true or the
//! timeout passes. By default it does not hold a worker slot between checks: each check is a
//! short execution of the same try, rescheduled `interval` later.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::duration::HumanDuration;

/// How long one HTTP check may take at most (a slow endpoint is "not yet", not a hang).
const HTTP_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a `wait` task (its `with`). Give exactly one of `http`, `file` and
/// `condition`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitWith {
    /// Wait until a GET of this URL answers with the expected status (and body text).
    #[serde(default)]
    pub http: Option<HttpCheck>,
    /// Wait until this file exists. Relative paths start at the workflow file's folder.
    #[serde(default)]
    pub file: Option<String>,
    /// Wait until this template is true (`true`, a non-zero number, or text other than
    /// `false`, `no`, `0` or empty). It is rendered again for every check in `reschedule`
    /// mode; in `poke` mode it is rendered once, so use `reschedule` for conditions.
    #[serde(default)]
    pub condition: Option<Value>,
    /// How long to wait between checks. Default: `30s`.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long to wait in all, from the try's first check; then the task fails.
    /// Default: `1h`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// `reschedule` (default): free the worker slot between checks. `poke`: sleep in the
    /// worker between checks (for intervals of a few seconds).
    #[serde(default)]
    pub mode: WaitMode,
}

/// What the `http` check expects.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The URL to GET (`http://` or `https://`).
    pub url: String,
    /// The status that means "ready". Default: `200`.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Text the response body must contain, too.
    #[serde(default)]
    pub contains: Option<String>,
}

/// How a sensor spends the time between checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Give the worker slot back between checks; the try runs again after `interval`.
    #[default]
    Reschedule,
    /// Keep the slot and sleep between checks.
    Poke,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_status() -> u16 {
    200
}

/// What to check.
#[derive(Debug, Clone, JsonSchema)]
pub enum Check {
    Http(HttpCheck),
    File(String),
    Condition(Value),
}

/// A checked `wait` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "WaitWith")]
pub struct WaitConfig {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    pub mode: WaitMode,
}

impl TryFrom<WaitWith> for WaitConfig {
    type Error = String;

    fn try_from(with: WaitWith) -> std::result::Result<Self, String> {
        let check = match (with.http, with.file, with.condition) {
            (Some(http), None, None) => {
                if !(100..=599).contains(&http.status) {
                    return Err(format!(
                        "`http.status` is {}, which is not an HTTP status",
                        http.status
                    ));
                }
                Check::Http(http)
            }
            (None, Some(file), None) => Check::File(file),
            (None, None, Some(condition)) => Check::Condition(condition),
            (None, None, None) => {
                return Err("give one of `http`, `file` or `condition` to wait for".into());
            }
            _ => return Err("give only one of `http`, `file` and `condition`".into()),
        };
        if with.interval.0.is_zero() {
            return Err("`interval` must be longer than zero".into());
        }
        Ok(WaitConfig {
            check,
            interval: with.interval.0,
            timeout: with.timeout.0,
            mode: with.mode,
        })
    }
}

impl Check {
    /// What is waited for, for messages.
    fn describe(&self, ctx: &OpContext) -> String {
        match self {
            Check::Http(http) => format!("{} to answer {}", http.url, http.status),
            Check::File(path) => format!("file `{}` to exist", resolve(ctx, path).display()),
            Check::Condition(value) => format!("the condition to be true (it was {value})"),
        }
    }
}

fn resolve(ctx: &OpContext, path: &str) -> PathBuf {
    ctx.base_dir.join(path)
}

/// Whether a rendered condition counts as true.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "no" | "0" | "none" | "null"
        ),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// One check. `Some(outputs)` when the wait is over.
async fn check_once(ctx: &OpContext, check: &Check) -> Option<Outputs> {
    match check {
        Check::Http(http) => {
            let request = ctx.http.get(&http.url).timeout(HTTP_CHECK_TIMEOUT);
            let response = tokio::select! {
                response = request.send() => response,
                _ = ctx.cancel.cancelled() => return None,
            };
            let response = match response {
                Ok(response) => response,
                Err(e) => {
                    // Not reachable yet is the usual reason to wait; say so and check again.
                    ctx.log
                        .system(format!("{} is not reachable yet: {e}", http.url));
                    return None;
                }
            };
            let status = response.status().as_u16();
            if status != http.status {
                ctx.log
                    .system(format!("{} answered {status}; waiting.", http.url));
                return None;
            }
            if let Some(needle) = &http.contains {
                let body = response.text().await.unwrap_or_default();
                if !body.contains(needle.as_str()) {
                    ctx.log.system(format!(
                        "{} answered {status} without `{needle}`; waiting.",
                        http.url
                    ));
                    return None;
                }
            }
            let mut outputs = Outputs::new();
            outputs.insert("status".into(), status.into());
            Some(outputs)
        }
        Check::File(path) => {
            let path = resolve(ctx, path);
            tokio::fs::try_exists(&path)
                .await
                .unwrap_or(false)
                .then(Outputs::new)
        }
        Check::Condition(value) => truthy(value).then(Outputs::new),
    }
}

/// Time spent waiting so far, counted from the try's first start.
fn waited(ctx: &OpContext) -> Duration {
    (Utc::now() - ctx.first_started_at)
        .to_std()
        .unwrap_or_default()
}

pub async fn run(ctx: &OpContext, config: WaitConfig) -> Result<Completion> {
    loop {
        if let Some(mut outputs) = check_once(ctx, &config.check).await {
            outputs.insert("waited_seconds".into(), waited(ctx).as_secs().into());
            return Ok(Completion::from(outputs));
        }
        if ctx.cancel.is_cancelled() {
            return Err(OperatorError::Cancelled);
        }
        let waited = waited(ctx);
        if waited >= config.timeout {
            return Err(OperatorError::failed(format!(
                "gave up waiting for {} after {} (timeout {})",
                config.check.describe(ctx),
                HumanDuration(Duration::from_secs(waited.as_secs())),
                HumanDuration(config.timeout),
            )));
        }
        // Never sleep past the deadline, so a timeout is reported when it is due.
        let pause = config.interval.min(config.timeout - waited);
        ctx.log.system(format!(
            "Waiting for {}; next check in {}.",
            config.check.describe(ctx),
            HumanDuration(Duration::from_millis(pause.as_millis() as u64))
        ));
        match config.mode {
            WaitMode::Reschedule => return Err(OperatorError::Reschedule { after: pause }),
            WaitMode::Poke => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.cancel.cancelled() => return Err(OperatorError::Cancelled),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::support::test_support::context;
    use serde_json::json;

    fn config(with: Value) -> std::result::Result<WaitConfig, String> {
        serde_json::from_value(with).map_err(|e| e.to_string())
    }

    #[test]
    fn exactly_one_check_is_required() {
        assert!(config(json!({})).is_err());
        let both = config(json!({"file": "a", "condition": true})).unwrap_err();
        assert!(both.contains("only one"), "{both}");
        let ok = config(json!({"file": "a"})).expect("valid");
        assert_eq!(ok.interval, Duration::from_secs(30));
        assert_eq!(ok.timeout, Duration::from_secs(3600));
        assert_eq!(ok.mode, WaitMode::Reschedule);
        assert!(config(json!({"http": {"url": "http://x", "status": 42}})).is_err());
        assert!(config(json!({"file": "a", "interval": "0s"})).is_err());
        assert!(config(json!({"file": "a", "bogus": 1})).is_err());
    }

    #[test]
    fn truthiness_of_rendered_conditions() {
        for yes in [
            json!(true),
            json!("yes"),
            json!("True"),
            json!(1),
            json!([1]),
        ] {
            assert!(truthy(&yes), "{yes}");
        }
        for no in [
            json!(false),
            json!("false"),
            json!(""),
            json!(0),
            json!(null),
            json!("no"),
        ] {
            assert!(!truthy(&no), "{no}");
        }
    }

    #[tokio::test]
    async fn a_missing_file_reschedules_and_an_existing_one_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, _rx) = context(dir.path());
        let cfg = config(json!({"file": "ready.flag", "interval": "5s"})).expect("valid");
        match run(&ctx, cfg.clone()).await {
            Err(OperatorError::Reschedule { after }) => assert_eq!(after, Duration::from_secs(5)),
            other => panic!("expected a reschedule, got {other:?}"),
        }
        std::fs::write(dir.path().join("ready.flag"), "").expect("write");
        let done = run(&ctx, cfg).await.expect("success");
        assert!(done.outputs.contains_key("waited_seconds"));
    }

    #[tokio::test]
    async fn a_wait_past_its_timeout_fails_saying_what_it_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _rx) = context(dir.path());
        ctx.first_started_at = Utc::now() - chrono::Duration::seconds(120);
        let cfg = config(json!({"file": "never", "timeout": "1m"})).expect("valid");
        let error = run(&ctx, cfg).await.expect_err("timeout");
        let message = error.to_string();
        assert!(message.contains("never` to exist"), "{message}");
        assert!(message.contains("timeout 1m"), "{message}");
    }

    #[tokio::test]
    async fn poke_mode_sleeps_until_the_condition_holds_or_is_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, _rx) = context(dir.path());
        let cfg = config(json!({"condition": "{{ x }}", "mode": "poke", "interval": "1s"}))
            .expect("valid");
        // The text "{{ x }}" is truthy as rendered text; a false one waits until cancelled.
        assert!(run(&ctx, cfg).await.is_ok());
        let cfg =
            config(json!({"condition": false, "mode": "poke", "interval": "1s"})).expect("valid");
        let cancel = ctx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        assert!(matches!(
            run(&ctx, cfg).await,
            Err(OperatorError::Cancelled)
        ));
    }

    #[tokio::test]
    async fn a_condition_reschedules_until_the_deadline_then_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _rx) = context(dir.path());
        let cfg = config(json!({"condition": "false", "interval": "30s", "timeout": "1m"}))
            .expect("valid");
        ctx.first_started_at = Utc::now() - chrono::Duration::seconds(50);
        match run(&ctx, cfg.clone()).await {
            // Only the 10 seconds left are waited, not the whole interval.
            Err(OperatorError::Reschedule { after }) => assert!(after <= Duration::from_secs(10)),
            other => panic!("expected a reschedule, got {other:?}"),
        }
        ctx.first_started_at = Utc::now() - chrono::Duration::seconds(61);
        let message = run(&ctx, cfg).await.expect_err("timeout").to_string();
        assert!(message.contains("condition to be true"), "{message}");
    }
}
