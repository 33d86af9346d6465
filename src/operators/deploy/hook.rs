//! The rollout's HTTP hook: one request per routing change (each step, and a rollback), for
//! the user's router or a Kubernetes API. Its body is templated with the step
//! (`step.weights`, `step.mode`, …), which the worker leaves to it (`DEFERRED`), rendered
//! through the budgeted template path, and sent through the shared retry policy.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::strategy::{Mode, Route};
use crate::duration::HumanDuration;
use crate::operators::http::Method;
use crate::operators::support::Text;
use crate::operators::support::error_chain;
use crate::operators::{OpContext, OperatorError, Result};
use crate::retry::{Failure, Jitter, RetryAfter, RetryError, RetryPolicy, Retrying, SystemClock};
use crate::template::{Deferred, Templates};

/// How much of a refusing answer the failure quotes.
const EXCERPT_CHARS: usize = 300;

/// A router that is down for a minute should not fail the rollout; one that refuses should.
const HOOK_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    first_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(30),
    max_retry_after: Duration::from_secs(60),
    jitter: Jitter::Equal,
};

/// The request sent at every routing change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The URL to call (`http://` or `https://`).
    pub url: String,
    /// The method. Default: `POST`.
    #[serde(default = "default_method")]
    pub method: Method,
    /// Request headers, by name.
    #[serde(default)]
    pub headers: IndexMap<String, Text>,
    /// The JSON body, rendered for each step with `step` in the context: `step.weights`
    /// (version → live weight), `step.mode` (`live` or `shadow`), `step.routing` (the full
    /// list), `step.number`, `step.rollback`, `step.model`, `step.version`, `step.alias`.
    /// The task's templates leave it alone: write `"{{ step.weights }}"` as it is. Default:
    /// `{model, alias, step, mode, weights, routing}`.
    #[serde(default)]
    pub json: Option<Value>,
    /// How long one request may take. Default: `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_method() -> Method {
    Method::Post
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// The hook's body is rendered here, for each step, with `step` alone in the context.
pub const DEFERRED: &[Deferred] = &[Deferred {
    path: "hook.json",
    roots: &["step"],
}];

/// What the hook is told about one routing change.
#[derive(Debug, Clone)]
pub struct StepCall<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub alias: &'a str,
    /// From 1; 0 for a rollback.
    pub number: usize,
    pub routing: &'a [Route],
    pub rollback: bool,
}

impl StepCall<'_> {
    /// `step` as the hook's template sees it.
    pub fn context(&self) -> Value {
        let weights: Map<String, Value> = self
            .routing
            .iter()
            .filter(|r| r.mode == Mode::Live)
            .map(|r| (r.version.clone(), json!(r.weight)))
            .collect();
        let mode = if self.routing.iter().any(|r| r.mode == Mode::Shadow) {
            Mode::Shadow
        } else {
            Mode::Live
        };
        json!({
            "model": self.model,
            "version": self.version,
            "alias": self.alias,
            "number": self.number,
            "rollback": self.rollback,
            "mode": mode.as_str(),
            "weights": weights,
            "routing": self.routing,
        })
    }
}

/// Renders the hook's body for `step`.
pub async fn body(config: &HookConfig, step: &StepCall<'_>) -> Result<Value> {
    let context = step.context();
    let Some(template) = config.json.clone() else {
        return Ok(json!({
            "model": context["model"],
            "alias": context["alias"],
            "step": context["number"],
            "mode": context["mode"],
            "weights": context["weights"],
            "routing": context["routing"],
        }));
    };
    let templates = Arc::new(Templates::new());
    let scope = crate::template::from_json(&json!({ "step": context }));
    templates
        .off_thread("with.hook.json", move |t| {
            t.render_field("with.hook.json", &template, &scope)
        })
        .await
        .map_err(|e| OperatorError::rejected(format!("cannot render {e}")))
}

/// Sends the hook for `step`; returns the answer's status.
pub async fn call(ctx: &OpContext, config: &HookConfig, step: &StepCall<'_>) -> Result<u16> {
    let invalid = |message: String| OperatorError::rejected(message);
    let url = reqwest::Url::parse(config.url.trim())
        .map_err(|e| invalid(format!("`hook.url` is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "`hook.url` must start with http:// or https://".into(),
        ));
    }
    let method = reqwest::Method::from_bytes(config.method.to_string().as_bytes())
        .map_err(|e| invalid(format!("`hook.method` is not a method ({e})")))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
        let value = HeaderValue::from_str(&value.0)
            .map_err(|_| invalid(format!("the value of header `{name}` is not valid")))?;
        headers.insert(name, value);
    }
    let body = body(config, step).await?;
    // The URL may carry a token: messages name its host.
    let target = url.host_str().unwrap_or("the hook").to_owned();
    let attempt = |_| {
        let request = ctx
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .json(&body)
            .timeout(config.timeout.0);
        let target = &target;
        async move {
            let response = request.send().await.map_err(|error| {
                Failure::from_request_error(&error, ()).map(|()| {
                    format!(
                        "the hook at {target} could not be reached: {}",
                        error_chain(&error.without_url())
                    )
                })
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(status.as_u16());
            }
            let retry_after = RetryAfter::from_headers(response.headers());
            let text = response.text().await.unwrap_or_default();
            let excerpt: String = text.trim().chars().take(EXCERPT_CHARS).collect();
            Err(Failure::from_status(
                status,
                retry_after,
                format!("the hook at {target} answered {status}: {excerpt}"),
            ))
        }
    };
    let announce = |retrying: &Retrying<'_, String>| {
        ctx.log.system(format!(
            "Attempt {}: {}; trying again in {}.",
            retrying.attempt,
            retrying.error,
            HumanDuration(retrying.wait)
        ));
    };
    match HOOK_RETRY
        .run(&SystemClock, &ctx.cancel, attempt, announce)
        .await
    {
        Ok(done) => {
            ctx.log.system(format!(
                "Hook to {target} answered {} for step {} (attempt {}).",
                done.value, step.number, done.attempts
            ));
            Ok(done.value)
        }
        Err(RetryError::Refused { error, .. } | RetryError::Exhausted { error, .. }) => {
            Err(OperatorError::failed(error))
        }
        Err(RetryError::Cancelled) => Err(OperatorError::Cancelled),
        Err(RetryError::Interrupted(never)) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing() -> Vec<Route> {
        vec![
            Route {
                version: "1".into(),
                weight: 75,
                mode: Mode::Live,
            },
            Route {
                version: "2".into(),
                weight: 25,
                mode: Mode::Live,
            },
        ]
    }

    #[tokio::test]
    async fn the_body_template_sees_the_steps_weights_and_mode() {
        let routing = routing();
        let step = StepCall {
            model: "m",
            version: "2",
            alias: "champion",
            number: 2,
            routing: &routing,
            rollback: false,
        };
        let config: HookConfig = serde_json::from_value(json!({
            "url": "http://router/weights",
            "json": {"weights": "{{ step.weights }}", "mode": "{{ step.mode }}", "note": "step {{ step.number }}"}
        }))
        .expect("config");
        let rendered = body(&config, &step).await.expect("renders");
        assert_eq!(
            rendered,
            json!({"weights": {"1": 75, "2": 25}, "mode": "live", "note": "step 2"})
        );
        let shadow = vec![
            Route {
                version: "1".into(),
                weight: 100,
                mode: Mode::Live,
            },
            Route {
                version: "2".into(),
                weight: 100,
                mode: Mode::Shadow,
            },
        ];
        let step = StepCall {
            routing: &shadow,
            ..step
        };
        let plain = HookConfig {
            json: None,
            ..config
        };
        let plain_body = body(&plain, &step).await.expect("default body");
        assert_eq!(plain_body["mode"], "shadow");
        assert_eq!(
            plain_body["weights"],
            json!({"1": 100}),
            "weights are the live shares"
        );
    }

    #[tokio::test]
    async fn a_broken_body_template_is_rejected_with_its_field() {
        let routing = routing();
        let step = StepCall {
            model: "m",
            version: "2",
            alias: "a",
            number: 1,
            routing: &routing,
            rollback: false,
        };
        let config: HookConfig = serde_json::from_value(json!({
            "url": "http://router", "json": {"w": "{{ step.wieghts }}"}
        }))
        .expect("config");
        let error = body(&config, &step).await.expect_err("unknown attribute");
        assert!(matches!(error, OperatorError::Rejected { .. }));
        assert!(error.to_string().contains("with.hook.json"), "{error}");
    }
}
