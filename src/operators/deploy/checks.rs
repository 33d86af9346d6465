//! What a rollout checks after each step: thresholds over metrics read from an HTTP JSON
//! endpoint, a Prometheus server or a tracking run (through `services.tracking`), and the
//! significance of champion against challenger. Every
//! request goes through the shared retry policy; a metric that cannot be read fails the try
//! (to be retried, resuming at its step), never the check.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::significance::{self, Mean, Proportion};
use super::strategy::Verdict;
use crate::operators::support::{error_chain, registry, registry_error, version_number};
use crate::operators::{OpContext, OperatorError, Result};
use crate::retry::{Failure, Jitter, RetryError, RetryPolicy, Retrying, SystemClock};

/// How long one metric request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an unexpected answer a message quotes.
const EXCERPT_CHARS: usize = 300;

/// Metric reads are retried briefly: a longer outage fails the try, and the task's own retries
/// resume the rollout at its step.
const METRIC_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    first_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(10),
    max_retry_after: Duration::from_secs(30),
    jitter: Jitter::Equal,
};

/// The checks after each step. Every one given must pass.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// A number read from an HTTP endpoint's JSON answer.
    #[serde(default)]
    pub http: Option<HttpMetric>,
    /// A number read from a Prometheus server's query API.
    #[serde(default)]
    pub prometheus: Option<PrometheusMetric>,
    /// The latest value of a metric of a tracking run (by default the one that registered
    /// the version).
    #[serde(default)]
    pub tracking: Option<TrackingMetric>,
    /// Champion against challenger on a success rate or a mean.
    #[serde(default)]
    pub significance: Option<SignificanceCheck>,
}

impl CheckConfig {
    pub fn is_empty(&self) -> bool {
        self.http.is_none()
            && self.prometheus.is_none()
            && self.tracking.is_none()
            && self.significance.is_none()
    }
}

/// A metric at a JSON pointer in an HTTP GET's answer, held to thresholds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpMetric {
    /// The URL to GET; its answer is JSON.
    pub url: String,
    /// Where the number is in the answer, as a JSON pointer (`/metrics/error_rate`). Default:
    /// the whole answer.
    #[serde(default)]
    pub pointer: String,
    /// The lowest value that passes.
    #[serde(default)]
    pub min: Option<f64>,
    /// The highest value that passes.
    #[serde(default)]
    pub max: Option<f64>,
}

/// An instant query to Prometheus (`/api/v1/query`) whose answer is one series, held to
/// thresholds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusMetric {
    /// The Prometheus server, like `http://127.0.0.1:9090`.
    pub url: String,
    /// A PromQL expression that yields exactly one series (aggregate with `sum` if needed).
    pub query: String,
    /// The lowest value that passes.
    #[serde(default)]
    pub min: Option<f64>,
    /// The highest value that passes.
    #[serde(default)]
    pub max: Option<f64>,
}

/// The latest value of a metric logged to tracking, held to thresholds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingMetric {
    /// The metric's name, like `error_rate`.
    pub metric: String,
    /// The tracking run to read. Default: the tracking run that registered the version being
    /// deployed.
    #[serde(default)]
    pub run: Option<String>,
    /// The lowest value that passes.
    #[serde(default)]
    pub min: Option<f64>,
    /// The highest value that passes.
    #[serde(default)]
    pub max: Option<f64>,
}

/// Which significance test to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// A success rate: each arm's JSON is `{"successes": k, "trials": n}`; the pooled
    /// two-proportion z-test.
    Proportions,
    /// A mean: each arm's JSON is `{"mean": m, "std": s, "n": n}` (sample standard deviation);
    /// Welch's t-test.
    Means,
}

/// Which direction is better for the metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    #[default]
    Higher,
    Lower,
}

/// Champion against challenger: the check fails when the challenger is significantly worse
/// (two-sided p-value below `alpha`, difference in the wrong direction), and waits while either
/// arm has fewer than `min_samples`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignificanceCheck {
    /// `proportions` or `means`.
    pub test: TestKind,
    /// The metric's name, for messages.
    #[serde(default)]
    pub metric: Option<String>,
    /// The significance level. Default: `0.05`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Samples (trials, or n) each arm needs before the test is run. Default: `100`.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// `higher` (default) or `lower`: which way the metric is better.
    #[serde(default)]
    pub better: Better,
    /// Where the champion's counts are.
    pub champion: ArmSource,
    /// Where the challenger's counts are.
    pub challenger: ArmSource,
}

/// An HTTP JSON endpoint with one arm's counts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmSource {
    /// The URL to GET.
    pub url: String,
    /// Where the arm's object is in the answer, as a JSON pointer. Default: the whole answer.
    #[serde(default)]
    pub pointer: String,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_min_samples() -> u64 {
    100
}

impl CheckConfig {
    /// A sentence for each setting that cannot work.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bounds = |name: &str, min: Option<f64>, max: Option<f64>| {
            if min.is_none() && max.is_none() {
                problems.push(format!("`check.{name}` needs `min`, `max` or both"));
            }
            if let (Some(min), Some(max)) = (min, max)
                && min > max
            {
                problems.push(format!(
                    "`check.{name}.min` ({min}) is above its `max` ({max})"
                ));
            }
        };
        if let Some(http) = &self.http {
            bounds("http", http.min, http.max);
        }
        if let Some(prometheus) = &self.prometheus {
            bounds("prometheus", prometheus.min, prometheus.max);
        }
        if let Some(tracking) = &self.tracking {
            bounds("tracking", tracking.min, tracking.max);
            if tracking.metric.trim().is_empty() {
                problems.push("`check.tracking.metric` must name a metric".into());
            }
        }
        if let Some(significance) = &self.significance
            && !(significance.alpha > 0.0 && significance.alpha < 1.0)
        {
            problems.push(format!(
                "`check.significance.alpha` is {}; it must be between 0 and 1",
                significance.alpha
            ));
        }
        problems
    }
}

/// Whether `value` is inside the thresholds; the sentence says what was compared.
pub fn within(name: &str, value: f64, min: Option<f64>, max: Option<f64>) -> (bool, String) {
    // NaN is below and above everything: it never passes.
    if let Some(min) = min
        && (value.is_nan() || value < min)
    {
        return (false, format!("{name} {value} < {min}"));
    }
    if let Some(max) = max
        && (value.is_nan() || value > max)
    {
        return (false, format!("{name} {value} > {max}"));
    }
    (true, format!("{name} {value} within thresholds"))
}

/// The model version a rollout deploys, whose tracking run a `tracking` check reads by default.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub model: &'a str,
    pub version: &'a str,
}

/// Runs every check; the first failure decides, then a wait, else a pass.
pub async fn evaluate(
    ctx: &OpContext,
    check: &CheckConfig,
    subject: Subject<'_>,
) -> Result<Verdict> {
    let mut details = Vec::new();
    let mut failure = None;
    let mut waiting = None;
    if let Some(http) = &check.http {
        let body = get_json(ctx, &http.url).await?;
        let value = number_at(&body, &http.pointer, &http.url)?;
        let name = if http.pointer.is_empty() {
            "the metric".to_owned()
        } else {
            http.pointer.clone()
        };
        let (ok, sentence) = within(&name, value, http.min, http.max);
        if !ok {
            failure.get_or_insert(sentence.clone());
        }
        details.push(sentence);
    }
    if let Some(prometheus) = &check.prometheus {
        let value = prometheus_value(ctx, prometheus).await?;
        let (ok, sentence) = within(&prometheus.query, value, prometheus.min, prometheus.max);
        if !ok {
            failure.get_or_insert(sentence.clone());
        }
        details.push(sentence);
    }
    if let Some(tracking) = &check.tracking {
        let value = tracking_value(ctx, tracking, subject).await?;
        let (ok, sentence) = within(tracking.metric.trim(), value, tracking.min, tracking.max);
        if !ok {
            failure.get_or_insert(sentence.clone());
        }
        details.push(sentence);
    }
    if let Some(significance) = &check.significance {
        match compare(ctx, significance).await? {
            Comparison::Decided { worse, sentence } => {
                if worse {
                    failure.get_or_insert(sentence.clone());
                }
                details.push(sentence);
            }
            Comparison::Waiting(sentence) => {
                waiting.get_or_insert(sentence.clone());
                details.push(sentence);
            }
        }
    }
    Ok(match (failure, waiting) {
        (Some(reason), _) => Verdict::Failed { reason, details },
        (None, Some(reason)) => Verdict::Waiting { reason, details },
        (None, None) => Verdict::Passed(details),
    })
}

enum Comparison {
    Decided { worse: bool, sentence: String },
    Waiting(String),
}

async fn compare(ctx: &OpContext, check: &SignificanceCheck) -> Result<Comparison> {
    let champion = arm(ctx, &check.champion).await?;
    let challenger = arm(ctx, &check.challenger).await?;
    let metric = check.metric.as_deref().unwrap_or("the metric");
    decide(check, metric, &champion, &challenger)
}

/// The significance decision over two arms' JSON objects: pure, so tests give it numbers.
fn decide(
    check: &SignificanceCheck,
    metric: &str,
    champion: &Value,
    challenger: &Value,
) -> Result<Comparison> {
    let rejected = |e: significance::SignificanceError| {
        OperatorError::failed(format!("the significance check cannot run: {e}"))
    };
    let (samples, result, difference) = match check.test {
        TestKind::Proportions => {
            let read = |v: &Value, who: &str| -> Result<Proportion> {
                Ok(Proportion {
                    successes: field(v, "successes", who)?,
                    trials: field(v, "trials", who)?,
                })
            };
            let (a, b) = (read(champion, "champion")?, read(challenger, "challenger")?);
            let samples = [a.trials, b.trials];
            if samples.iter().any(|n| *n < check.min_samples as f64) {
                (samples, None, 0.0)
            } else {
                let result = significance::two_proportion_z(a, b).map_err(rejected)?;
                (
                    samples,
                    Some(result),
                    b.successes / b.trials - a.successes / a.trials,
                )
            }
        }
        TestKind::Means => {
            let read = |v: &Value, who: &str| -> Result<Mean> {
                Ok(Mean {
                    mean: field(v, "mean", who)?,
                    std: field(v, "std", who)?,
                    n: field(v, "n", who)?,
                })
            };
            let (a, b) = (read(champion, "champion")?, read(challenger, "challenger")?);
            let samples = [a.n, b.n];
            if samples.iter().any(|n| *n < check.min_samples as f64) {
                (samples, None, 0.0)
            } else {
                let result = significance::welch_t(a, b).map_err(rejected)?;
                (samples, Some(result), b.mean - a.mean)
            }
        }
    };
    let Some(result) = result else {
        return Ok(Comparison::Waiting(format!(
            "{metric}: waiting for {} samples per arm (champion {}, challenger {})",
            check.min_samples, samples[0], samples[1]
        )));
    };
    let wrong_way = match check.better {
        Better::Higher => difference < 0.0,
        Better::Lower => difference > 0.0,
    };
    let worse = wrong_way && result.p_value < check.alpha;
    let sentence = format!(
        "{metric}: challenger {} champion by {difference:.6} (statistic {:.4}, p = {:.6}, alpha {}){}",
        if difference < 0.0 {
            "below"
        } else {
            "at or above"
        },
        result.statistic,
        result.p_value,
        check.alpha,
        if worse { ", significantly worse" } else { "" }
    );
    Ok(Comparison::Decided { worse, sentence })
}

fn field(value: &Value, name: &str, who: &str) -> Result<f64> {
    value.get(name).and_then(Value::as_f64).ok_or_else(|| {
        OperatorError::failed(format!(
            "the {who}'s counts have no number `{name}`: {}",
            excerpt(&value.to_string())
        ))
    })
}

async fn arm(ctx: &OpContext, source: &ArmSource) -> Result<Value> {
    let body = get_json(ctx, &source.url).await?;
    body.pointer(&source.pointer).cloned().ok_or_else(|| {
        OperatorError::failed(format!(
            "the answer of {} has nothing at `{}`",
            source.url, source.pointer
        ))
    })
}

/// The number at `pointer` in `body` (a JSON number, or text holding one).
pub fn number_at(body: &Value, pointer: &str, url: &str) -> Result<f64> {
    let found = body.pointer(pointer).ok_or_else(|| {
        OperatorError::failed(format!("the answer of {url} has nothing at `{pointer}`"))
    })?;
    match found {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        OperatorError::failed(format!(
            "the answer of {url} has {} at `{pointer}`, which is not a number",
            excerpt(&found.to_string())
        ))
    })
}

/// The latest value of the metric in its tracking run: the one named, or the one that
/// registered the version.
async fn tracking_value(
    ctx: &OpContext,
    metric: &TrackingMetric,
    subject: Subject<'_>,
) -> Result<f64> {
    let tracking = registry(ctx, "deploy")?;
    let name = metric.metric.trim();
    let run_id = match metric.run.as_deref().map(str::trim) {
        Some(run) if !run.is_empty() => run.to_owned(),
        _ => {
            let number = version_number(subject.model, subject.version)?;
            let version = tracking
                .model_version(subject.model, number)
                .await
                .map_err(|e| {
                    registry_error(
                        &format!("cannot read version {number} of `{}`", subject.model),
                        e,
                    )
                })?
                .ok_or_else(|| {
                    OperatorError::rejected(format!(
                        "model `{}` has no registered version {number}",
                        subject.model
                    ))
                })?;
            version.tracking_run_id.ok_or_else(|| {
                OperatorError::rejected(format!(
                    "version {number} of `{}` was registered without a tracking run; name the \
                     run to read `{name}` from in `check.tracking.run`",
                    subject.model
                ))
            })?
        }
    };
    let run = tracking
        .run(&run_id)
        .await
        .map_err(|e| registry_error(&format!("cannot read tracking run `{run_id}`"), e))?
        .ok_or_else(|| {
            OperatorError::rejected(format!("there is no tracking run with id `{run_id}`"))
        })?;
    // Not logged yet is worth another try: the task's retries resume at this step.
    run.metrics
        .get(name)
        .map(|point| point.value)
        .ok_or_else(|| {
            OperatorError::failed(format!(
                "tracking run `{run_id}` has no metric `{name}`{}",
                if run.metrics.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; it has {}",
                        run.metrics
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ))
        })
}

/// The single value of an instant query.
async fn prometheus_value(ctx: &OpContext, metric: &PrometheusMetric) -> Result<f64> {
    let mut url = reqwest::Url::parse(metric.url.trim()).map_err(|e| {
        OperatorError::rejected(format!("`check.prometheus.url` is not a valid URL ({e})"))
    })?;
    url.path_segments_mut()
        .map_err(|()| OperatorError::rejected("`check.prometheus.url` cannot be a base URL"))?
        .pop_if_empty()
        .extend(["api", "v1", "query"]);
    url.query_pairs_mut().append_pair("query", &metric.query);
    let body = get_json(ctx, url.as_str()).await?;
    single_sample(&body, &metric.query)
}

/// Reads the one sample of an instant query's answer; no series or several are errors.
pub fn single_sample(body: &Value, query: &str) -> Result<f64> {
    if body["status"] != "success" {
        return Err(OperatorError::failed(format!(
            "Prometheus refused the query `{query}`: {}",
            body["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => {
            let series = data["result"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            match series {
                [one] => &one["value"],
                [] => {
                    return Err(OperatorError::failed(format!(
                        "the query `{query}` returned no series: nothing is recorded yet, or \
                         the query names a metric that does not exist"
                    )));
                }
                several => {
                    return Err(OperatorError::failed(format!(
                        "the query `{query}` returned {} series; a check needs one (aggregate \
                         it, e.g. with `sum(...)`)",
                        several.len()
                    )));
                }
            }
        }
        Some("scalar") => &data["result"],
        other => {
            return Err(OperatorError::failed(format!(
                "the query `{query}` returned a {}, not an instant vector",
                other.unwrap_or("result of no type")
            )));
        }
    };
    // A sample is `[<unix time>, "<value as text>"]`.
    value[1]
        .as_str()
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
        .ok_or_else(|| {
            OperatorError::failed(format!(
                "the query `{query}` returned {}, which is not a number",
                excerpt(&value.to_string())
            ))
        })
}

/// GETs `url` through the retry policy and parses its JSON answer.
async fn get_json(ctx: &OpContext, url: &str) -> Result<Value> {
    let attempt = |_| {
        let request = ctx.http.get(url).timeout(REQUEST_TIMEOUT);
        async move {
            let response = request.send().await.map_err(|error| {
                let failure = Failure::from_request_error(&error, ());
                failure.map(|()| format!("{url} could not be reached: {}", error_chain(&error)))
            })?;
            let status = response.status();
            let retry_after = crate::retry::RetryAfter::from_headers(response.headers());
            let text = response
                .text()
                .await
                .map_err(|error| Failure::transient(format!("reading {url} failed: {error}")))?;
            if !status.is_success() {
                return Err(Failure::from_status(
                    status,
                    retry_after,
                    format!("{url} answered {status}: {}", excerpt(&text)),
                ));
            }
            serde_json::from_str::<Value>(&text).map_err(|e| {
                Failure::Permanent(format!(
                    "{url} did not answer JSON ({e}): {}",
                    excerpt(&text)
                ))
            })
        }
    };
    let announce = |retrying: &Retrying<'_, String>| {
        ctx.log.system(format!(
            "Attempt {}: {}; trying again in {}.",
            retrying.attempt,
            retrying.error,
            crate::duration::HumanDuration(retrying.wait)
        ));
    };
    match METRIC_RETRY
        .run(&SystemClock, &ctx.cancel, attempt, announce)
        .await
    {
        Ok(done) => Ok(done.value),
        Err(RetryError::Refused { error, .. } | RetryError::Exhausted { error, .. }) => {
            Err(OperatorError::failed(error))
        }
        Err(RetryError::Cancelled) => Err(OperatorError::Cancelled),
        Err(RetryError::Interrupted(never)) => match never {},
    }
}

fn excerpt(text: &str) -> String {
    text.trim().chars().take(EXCERPT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn significance(test: TestKind, min_samples: u64) -> SignificanceCheck {
        SignificanceCheck {
            test,
            metric: Some("thumbs_up_rate".into()),
            alpha: 0.05,
            min_samples,
            better: Better::Higher,
            champion: ArmSource {
                url: "http://a".into(),
                pointer: String::new(),
            },
            challenger: ArmSource {
                url: "http://b".into(),
                pointer: String::new(),
            },
        }
    }

    fn counts(successes: u64, trials: u64) -> Value {
        json!({"successes": successes, "trials": trials})
    }

    #[test]
    fn significance_waits_for_samples_then_passes_or_fails() {
        let check = significance(TestKind::Proportions, 1000);
        let few = decide(
            &check,
            "thumbs_up_rate",
            &counts(520, 1000),
            &counts(40, 90),
        )
        .expect("decides");
        assert!(
            matches!(&few, Comparison::Waiting(s) if s.contains("challenger 90")),
            "too few samples: wait"
        );
        // 52% against 48% at n = 1000 each: p = 0.074, not significant at 0.05.
        let close = decide(&check, "m", &counts(520, 1000), &counts(480, 1000)).expect("decides");
        assert!(matches!(close, Comparison::Decided { worse: false, .. }));
        // 70% against 64%: p = 0.004, significantly worse.
        let worse = decide(&check, "m", &counts(700, 1000), &counts(640, 1000)).expect("decides");
        assert!(
            matches!(&worse, Comparison::Decided { worse: true, sentence } if sentence.contains("significantly worse"))
        );
        // Significantly better never fails.
        let better = decide(&check, "m", &counts(640, 1000), &counts(700, 1000)).expect("decides");
        assert!(matches!(better, Comparison::Decided { worse: false, .. }));
    }

    #[test]
    fn significance_of_means_respects_the_better_direction() {
        let mut check = significance(TestKind::Means, 30);
        let champion = json!({"mean": 200.0, "std": 20.0, "n": 100});
        let challenger = json!({"mean": 240.0, "std": 25.0, "n": 100});
        let higher = decide(&check, "latency", &champion, &challenger).expect("decides");
        assert!(matches!(higher, Comparison::Decided { worse: false, .. }));
        check.better = Better::Lower;
        let lower = decide(&check, "latency", &champion, &challenger).expect("decides");
        assert!(
            matches!(lower, Comparison::Decided { worse: true, .. }),
            "slower is worse"
        );
        let missing = decide(&check, "latency", &json!({"mean": 1}), &challenger);
        assert!(missing.is_err_and(|e| e.to_string().contains("`std`")));
    }

    #[test]
    fn thresholds_are_the_gates() {
        assert!(within("error_rate", 0.01, None, Some(0.02)).0);
        let (ok, sentence) = within("error_rate", 0.05, None, Some(0.02));
        assert!(!ok);
        assert_eq!(sentence, "error_rate 0.05 > 0.02");
        assert!(
            !within("x", f64::NAN, Some(0.0), None).0,
            "NaN never passes"
        );
        let unbounded = CheckConfig {
            http: Some(HttpMetric {
                url: "u".into(),
                pointer: String::new(),
                min: None,
                max: None,
            }),
            ..CheckConfig::default()
        };
        assert!(unbounded.problems()[0].contains("needs `min`, `max`"));
    }

    #[test]
    fn prometheus_answers_give_one_value_or_a_clear_error() {
        let one = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1765000000.0, "0.007"]}]}});
        assert_eq!(single_sample(&one, "q").expect("one series"), 0.007);
        let none = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(single_sample(&none, "q").is_err_and(|e| e.to_string().contains("no series")));
        let two = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"a": "1"}, "value": [0, "1"]}, {"metric": {"a": "2"}, "value": [0, "2"]}]}});
        assert!(single_sample(&two, "q").is_err_and(|e| e.to_string().contains("2 series")));
        let refused = json!({"status": "error", "error": "parse error"});
        assert!(single_sample(&refused, "q").is_err_and(|e| e.to_string().contains("parse error")));
        assert_eq!(
            number_at(&json!({"m": {"e": "0.5"}}), "/m/e", "u").expect("text number"),
            0.5
        );
    }
}
