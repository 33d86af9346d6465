//! `gate`: checks metrics (usually `{{ tasks.evaluate.outputs.metrics }}`) against thresholds
//! (`min`/`max`, `severity: fail | warn`) and against a baseline's metrics (`max_regression`
//! per metric). A fail-severity breach fails the task at once, without retries; a warn breach
//! succeeds with warnings. The baseline is explicit metrics, or a registered model's alias
//! (the champion), read through [`champion_metrics`]. With `version`, the result is recorded
//! on that model version's tags (before a failure is returned), where `deploy` reads it.

use std::fmt;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::eval::format_value;
use super::support::{Text, gate_tags, registry, registry_error, version_number};
use super::{Completion, OpContext, OperatorError, Outputs, Result};

/// The settings of a `gate` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The metrics to check, name → number: usually `{{ tasks.evaluate.outputs.metrics }}`.
    pub metrics: Map<String, Value>,
    /// Bounds per metric: `{ min: 0.9 }`, `{ max: 2000, severity: warn }`.
    #[serde(default)]
    pub thresholds: IndexMap<String, Threshold>,
    /// What the metrics must not fall behind: explicit `metrics`, or a registered `model` and
    /// its `alias` (the champion); with `max_regression` per metric.
    #[serde(default)]
    pub baseline: Option<Baseline>,
    /// The registered model version the metrics belong to, like `{ model: assistant,
    /// version: "{{ tasks.track.outputs.model_version }}" }`: the result is recorded on it
    /// (tags `sluice.gate`, `sluice.gate.summary`, `sluice.gate.run`), so `deploy` can refuse
    /// a version that failed.
    #[serde(default)]
    pub version: Option<GateVersion>,
}

/// A model version in the registry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateVersion {
    /// The registered model's name.
    pub model: String,
    /// The version (text or a number).
    pub version: Text,
}

/// Bounds for one metric.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The least value that passes.
    #[serde(default)]
    pub min: Option<f64>,
    /// The greatest value that passes.
    #[serde(default)]
    pub max: Option<f64>,
    /// `fail` (default): a breach fails the task. `warn`: the task succeeds with a warning.
    #[serde(default)]
    pub severity: Severity,
}

/// What a breach does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Fail,
    Warn,
}

/// The metrics the gate compares against.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The baseline's metrics, name → number. Not together with `model`.
    #[serde(default)]
    pub metrics: Option<Map<String, Value>>,
    /// A registered model whose `alias` version's metrics are the baseline (from tracking).
    #[serde(default)]
    pub model: Option<String>,
    /// The alias of `model` to compare with. Default: `champion`.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// How far each metric may fall behind the baseline: a number, or `{ max, better,
    /// severity }`.
    #[serde(default)]
    pub max_regression: IndexMap<String, Regression>,
}

fn default_alias() -> String {
    "champion".to_owned()
}

/// How far a metric may fall behind the baseline.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Regression {
    /// The largest allowed step in the worse direction; breaches fail.
    By(f64),
    Detailed(RegressionLimit),
}

/// A regression limit with its direction and severity spelled out.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegressionLimit {
    /// The largest allowed step in the worse direction.
    pub max: f64,
    /// Which way is better. Default: `lower` for latency_*, cost_*, *_rate, *_tokens and
    /// toxicity; `higher` for every other metric.
    #[serde(default)]
    pub better: Option<Better>,
    #[serde(default)]
    pub severity: Severity,
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

impl Regression {
    fn parts(&self, metric: &str) -> (f64, Better, Severity) {
        match self {
            Regression::By(max) => (*max, better_by_name(metric), Severity::Fail),
            Regression::Detailed(limit) => (
                limit.max,
                limit.better.unwrap_or_else(|| better_by_name(metric)),
                limit.severity,
            ),
        }
    }
}

/// Which way a metric improves when nobody said: lower for latencies, costs, rates (error,
/// PII, refusal…), token counts and toxicity.
pub fn better_by_name(metric: &str) -> Better {
    if metric.starts_with("latency")
        || metric.starts_with("cost")
        || metric.ends_with("_rate")
        || metric.ends_with("_tokens")
        || metric == "toxicity"
    {
        Better::Lower
    } else {
        Better::Higher
    }
}

/// Where the baseline's metrics came from, as far as the gate is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum BaselineMetrics {
    /// No baseline configured.
    None,
    /// The baseline's metrics.
    Found(Map<String, Value>),
    /// A model and alias were named, but no version holds the alias yet (first deployment).
    NoChampion { model: String, alias: String },
}

/// The metrics of the version of `model` that holds `alias`: the latest value of each metric
/// of the tracking run that registered it. `Ok(None)` when no version holds the alias (a first
/// deployment) or the version has no tracking run to read metrics from.
async fn champion_metrics(
    ctx: &OpContext,
    model: &str,
    alias: &str,
) -> std::result::Result<Option<Map<String, Value>>, String> {
    let Some(tracking) = ctx.services.tracking.as_deref() else {
        return Err(format!(
            "tracking is not configured, so the metrics of `{model}@{alias}` cannot be read; give \
             the baseline's metrics as `baseline: {{ metrics: {{…}} }}`"
        ));
    };
    let version = tracking
        .get_alias(model, alias)
        .await
        .map_err(|e| format!("cannot read `{model}@{alias}` from tracking: {e}"))?;
    let Some(run_id) = version.and_then(|v| v.tracking_run_id) else {
        return Ok(None);
    };
    let run = tracking
        .run(&run_id)
        .await
        .map_err(|e| format!("cannot read the tracking run of `{model}@{alias}`: {e}"))?;
    Ok(run.map(|detail| detail.latest_metrics()))
}

/// One row of the gate's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub metric: String,
    pub value: Option<f64>,
    pub threshold: Option<String>,
    pub baseline: Option<f64>,
    pub delta: Option<f64>,
    pub status: Status,
}

/// How a row came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
    pub table: Vec<Row>,
}

impl Decision {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line: the failures, else the warnings, else how many checks passed.
    pub fn summary(&self) -> String {
        if !self.failures.is_empty() {
            self.failures.join("; ")
        } else if !self.warnings.is_empty() {
            format!("passed with warnings: {}", self.warnings.join("; "))
        } else {
            let checks = self.table.len();
            format!(
                "passed {checks} check{}",
                if checks == 1 { "" } else { "s" }
            )
        }
    }
}

/// A metric value as a number: numbers as they are, numeric text parsed.
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Checks every threshold and every regression limit. Pure: the baseline is already read.
pub fn decide(config: &GateConfig, baseline: &BaselineMetrics) -> Decision {
    let mut decision = Decision {
        failures: Vec::new(),
        warnings: Vec::new(),
        table: Vec::new(),
    };
    for (metric, threshold) in &config.thresholds {
        let bound = match (threshold.min, threshold.max) {
            (Some(min), Some(max)) => {
                format!(">= {} and <= {}", format_value(min), format_value(max))
            }
            (Some(min), None) => format!(">= {}", format_value(min)),
            (None, Some(max)) => format!("<= {}", format_value(max)),
            (None, None) => "none".to_owned(),
        };
        let value = config.metrics.get(metric).and_then(number);
        let status = match value {
            None => breach(
                &mut decision,
                threshold.severity,
                format!("{metric} is missing from the metrics"),
            ),
            Some(v) => {
                if let Some(min) = threshold.min.filter(|min| v < *min) {
                    breach(
                        &mut decision,
                        threshold.severity,
                        format!("{metric} {} < {}", format_value(v), format_value(min)),
                    )
                } else if let Some(max) = threshold.max.filter(|max| v > *max) {
                    breach(
                        &mut decision,
                        threshold.severity,
                        format!("{metric} {} > {}", format_value(v), format_value(max)),
                    )
                } else {
                    Status::Pass
                }
            }
        };
        decision.table.push(Row {
            metric: metric.clone(),
            value,
            threshold: Some(bound),
            baseline: None,
            delta: None,
            status,
        });
    }
    let Some(limits) = config.baseline.as_ref().map(|b| &b.max_regression) else {
        return decision;
    };
    match baseline {
        BaselineMetrics::None => {}
        BaselineMetrics::NoChampion { model, alias } => {
            if !limits.is_empty() {
                decision.warnings.push(format!(
                    "no version of {model} holds the alias {alias} yet: checked against \
                     thresholds only"
                ));
            }
        }
        BaselineMetrics::Found(baseline) => {
            for (metric, limit) in limits {
                let (max, better, severity) = limit.parts(metric);
                let value = config.metrics.get(metric).and_then(number);
                let base = baseline.get(metric).and_then(number);
                let (status, delta) = match (value, base) {
                    (None, _) => (
                        breach(
                            &mut decision,
                            severity,
                            format!("{metric} is missing from the metrics"),
                        ),
                        None,
                    ),
                    (Some(_), None) => {
                        decision
                            .warnings
                            .push(format!("the baseline has no {metric} to compare with"));
                        (Status::Warn, None)
                    }
                    (Some(v), Some(b)) => {
                        let delta = v - b;
                        let worse_by = match better {
                            Better::Higher => -delta,
                            Better::Lower => delta,
                        };
                        // A hair of rounding must not fail a gate that sits exactly on its limit.
                        let status = if worse_by > max + 1e-12 {
                            breach(
                                &mut decision,
                                severity,
                                format!(
                                    "{metric} {} regressed by {} from the baseline's {} (at most {})",
                                    format_value(v),
                                    format_value(worse_by),
                                    format_value(b),
                                    format_value(max)
                                ),
                            )
                        } else {
                            Status::Pass
                        };
                        (status, Some(delta))
                    }
                };
                let row = decision.table.iter_mut().find(|r| r.metric == *metric);
                match row {
                    // One row per metric: a threshold row gains the baseline columns, and the
                    // worse of the two statuses.
                    Some(row) => {
                        row.baseline = base;
                        row.delta = delta;
                        if rank(status) > rank(row.status) {
                            row.status = status;
                        }
                    }
                    None => decision.table.push(Row {
                        metric: metric.clone(),
                        value,
                        threshold: None,
                        baseline: base,
                        delta,
                        status,
                    }),
                }
            }
        }
    }
    decision
}

/// Records a breach as a failure or a warning, by its severity.
fn breach(decision: &mut Decision, severity: Severity, text: String) -> Status {
    match severity {
        Severity::Fail => {
            decision.failures.push(text);
            Status::Fail
        }
        Severity::Warn => {
            decision.warnings.push(text);
            Status::Warn
        }
    }
}

fn rank(status: Status) -> u8 {
    match status {
        Status::Pass => 0,
        Status::Warn => 1,
        Status::Fail => 2,
    }
}

pub async fn run(ctx: &OpContext, config: GateConfig) -> Result<Completion> {
    let baseline = match &config.baseline {
        None => BaselineMetrics::None,
        Some(baseline) => match (&baseline.metrics, &baseline.model) {
            (Some(_), Some(_)) => {
                return Err(OperatorError::Config {
                    operator: "gate",
                    message: "give the baseline as `metrics` or as `model` (and `alias`), not both"
                        .to_owned(),
                });
            }
            (Some(metrics), None) => BaselineMetrics::Found(metrics.clone()),
            (None, Some(model)) => {
                match champion_metrics(ctx, model, &baseline.alias)
                    .await
                    .map_err(OperatorError::rejected)?
                {
                    Some(metrics) => BaselineMetrics::Found(metrics),
                    None => BaselineMetrics::NoChampion {
                        model: model.clone(),
                        alias: baseline.alias.clone(),
                    },
                }
            }
            (None, None) => {
                return Err(OperatorError::Config {
                    operator: "gate",
                    message: "the baseline needs `metrics`, or a `model` whose `alias` to read"
                        .to_owned(),
                });
            }
        },
    };
    let decision = decide(&config, &baseline);
    for row in &decision.table {
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), format_value);
        ctx.log.system(format!(
            "{}: {} (threshold {}, baseline {}, delta {}): {}",
            row.metric,
            show(row.value),
            row.threshold.as_deref().unwrap_or("-"),
            show(row.baseline),
            show(row.delta),
            row.status
        ));
    }
    let summary = decision.summary();
    if let Some(version) = &config.version {
        record_result(ctx, version, decision.passed(), &summary).await?;
    }
    if !decision.passed() {
        return Err(OperatorError::rejected(summary));
    }
    let mut outputs = Outputs::new();
    outputs.insert("passed".into(), json!(true));
    outputs.insert("failures".into(), json!(decision.failures));
    outputs.insert("warnings".into(), json!(decision.warnings));
    outputs.insert(
        "table".into(),
        Value::Array(
            decision
                .table
                .iter()
                .map(|row| {
                    json!({
                        "metric": row.metric,
                        "value": row.value,
                        "threshold": row.threshold,
                        "baseline": row.baseline,
                        "delta": row.delta,
                        "status": row.status.to_string(),
                    })
                })
                .collect(),
        ),
    );
    Ok(Completion {
        outputs,
        warnings: decision.warnings,
        summary: Some(summary),
        ..Completion::default()
    })
}

/// Records the gate's result on the model version: whether it passed, its summary and this
/// task, so a later `deploy` can refuse a version that failed.
async fn record_result(
    ctx: &OpContext,
    target: &GateVersion,
    passed: bool,
    summary: &str,
) -> Result<()> {
    let model = target.model.trim();
    let number = version_number(model, &target.version.0)?;
    let tracking = registry(ctx, "gate")?;
    let result = if passed {
        gate_tags::PASSED
    } else {
        gate_tags::FAILED
    };
    let by = format!("run:{}/{}", ctx.run_id, ctx.task);
    let what = format!("cannot record the gate's result on version {number} of `{model}`");
    // The result last: a reader that sees it also sees the summary that explains it.
    for (key, value) in [
        (gate_tags::SUMMARY, summary),
        (gate_tags::RUN, by.as_str()),
        (gate_tags::RESULT, result),
    ] {
        tracking
            .set_version_tag(model, number, key, value)
            .await
            .map_err(|e| registry_error(&what, e))?;
    }
    ctx.log.system(format!(
        "Recorded `{}` = {result} on version {number} of `{model}`.",
        gate_tags::RESULT
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(with: Value) -> GateConfig {
        serde_json::from_value(with).expect("a gate config")
    }

    fn metrics() -> Value {
        json!({"faithfulness": 0.87, "latency_p95_ms": 1500, "cost_per_1k": 0.62, "exact_match": 0.80})
    }

    #[test]
    fn every_threshold_met_passes() {
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"faithfulness": {"min": 0.85}, "latency_p95_ms": {"max": 2000}},
        }));
        let decision = decide(&gate, &BaselineMetrics::None);
        assert!(decision.passed());
        assert!(decision.warnings.is_empty());
        assert_eq!(decision.summary(), "passed 2 checks");
        assert_eq!(decision.table[0].threshold.as_deref(), Some(">= 0.85"));
        assert_eq!(decision.table[1].status, Status::Pass);
    }

    #[test]
    fn a_warn_breach_passes_with_a_warning() {
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"cost_per_1k": {"max": 0.50, "severity": "warn"}},
        }));
        let decision = decide(&gate, &BaselineMetrics::None);
        assert!(decision.passed());
        assert_eq!(decision.warnings, ["cost_per_1k 0.62 > 0.50"]);
        assert_eq!(decision.table[0].status, Status::Warn);
    }

    #[test]
    fn a_fail_breach_fails_with_the_summary_line() {
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"faithfulness": {"min": 0.90}, "cost_per_1k": {"max": 0.50, "severity": "warn"}},
        }));
        let decision = decide(&gate, &BaselineMetrics::None);
        assert!(!decision.passed());
        assert_eq!(decision.summary(), "faithfulness 0.87 < 0.90");
        assert_eq!(decision.warnings.len(), 1, "the warning is still reported");
    }

    #[test]
    fn a_missing_metric_breaches_its_threshold() {
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"answer_relevancy": {"min": 0.5}, "toxicity": {"max": 0.1, "severity": "warn"}},
        }));
        let decision = decide(&gate, &BaselineMetrics::None);
        assert_eq!(
            decision.failures,
            ["answer_relevancy is missing from the metrics"]
        );
        assert_eq!(decision.warnings, ["toxicity is missing from the metrics"]);
        assert_eq!(decision.table[0].value, None);
    }

    #[test]
    fn a_missing_champion_passes_on_thresholds_alone_and_says_so() {
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"exact_match": {"min": 0.8}},
            "baseline": {"model": "assistant", "max_regression": {"exact_match": 0.02}},
        }));
        let decision = decide(
            &gate,
            &BaselineMetrics::NoChampion {
                model: "assistant".into(),
                alias: "champion".into(),
            },
        );
        assert!(decision.passed());
        assert_eq!(
            decision.warnings,
            [
                "no version of assistant holds the alias champion yet: checked against thresholds only"
            ]
        );
    }

    #[test]
    fn a_regression_alone_fails_though_every_threshold_is_met() {
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"exact_match": {"min": 0.7}},
            "baseline": {
                "metrics": {"exact_match": 0.85, "latency_p95_ms": 1400, "cost_per_1k": 0.60},
                "max_regression": {
                    "exact_match": 0.02,
                    "latency_p95_ms": {"max": 200},
                    "cost_per_1k": {"max": 0.01, "severity": "warn"},
                },
            },
        }));
        let baseline = BaselineMetrics::Found(
            gate.baseline
                .as_ref()
                .and_then(|b| b.metrics.clone())
                .expect("metrics"),
        );
        let decision = decide(&gate, &baseline);
        assert_eq!(
            decision.failures,
            ["exact_match 0.80 regressed by 0.05 from the baseline's 0.85 (at most 0.02)"]
        );
        // Latency is lower-is-better: +100 ms is within 200.
        let latency = decision
            .table
            .iter()
            .find(|r| r.metric == "latency_p95_ms")
            .expect("row");
        assert_eq!((latency.status, latency.delta), (Status::Pass, Some(100.0)));
        // Cost rose by 0.02 > 0.01: a warning only.
        assert_eq!(decision.warnings.len(), 1, "{:?}", decision.warnings);
        let exact = decision
            .table
            .iter()
            .find(|r| r.metric == "exact_match")
            .expect("row");
        assert_eq!(exact.threshold.as_deref(), Some(">= 0.70"));
        assert_eq!(exact.baseline, Some(0.85));
        assert_eq!(exact.status, Status::Fail);
    }

    #[test]
    fn a_regression_exactly_at_the_limit_passes_and_improvements_pass() {
        let gate = config(json!({
            "metrics": {"exact_match": 0.83, "error_rate": 0.0},
            "baseline": {
                "metrics": {"exact_match": 0.85, "error_rate": 0.05},
                "max_regression": {"exact_match": 0.02, "error_rate": 0.0},
            },
        }));
        let baseline = BaselineMetrics::Found(
            gate.baseline
                .as_ref()
                .and_then(|b| b.metrics.clone())
                .expect("metrics"),
        );
        let decision = decide(&gate, &baseline);
        assert!(decision.passed(), "{:?}", decision.failures);
        assert!(decision.warnings.is_empty());
    }

    #[tokio::test]
    async fn a_fail_breach_is_rejected_so_no_retry_runs() {
        let dir = tempfile::tempdir().expect("dir");
        let (ctx, _rx) = crate::operators::support::test_support::context(dir.path());
        let gate = config(json!({
            "metrics": metrics(),
            "thresholds": {"faithfulness": {"min": 0.90}},
        }));
        match run(&ctx, gate).await {
            Err(OperatorError::Rejected { message }) => {
                assert_eq!(message, "faithfulness 0.87 < 0.90");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let warn = config(json!({
            "metrics": metrics(),
            "thresholds": {"cost_per_1k": {"max": 0.5, "severity": "warn"}},
        }));
        let done = run(&ctx, warn).await.expect("passes");
        assert_eq!(done.warnings, ["cost_per_1k 0.62 > 0.50"]);
        assert_eq!(done.outputs["passed"], json!(true));
        assert_eq!(done.outputs["table"][0]["threshold"], json!("<= 0.50"));
    }

    #[tokio::test]
    async fn the_result_is_recorded_on_the_version_before_a_failure_returns() {
        use crate::operators::services::Services;
        use crate::tracking::VersionRequest;
        let dir = tempfile::tempdir().expect("dir");
        let tracking = crate::operators::support::test_support::builtin_tracking(dir.path()).await;
        let (mut ctx, _rx) = crate::operators::support::test_support::context(dir.path());
        ctx.services = std::sync::Arc::new(Services {
            tracking: Some(tracking.clone()),
            ..Services::default()
        });
        let version = tracking
            .create_model_version(VersionRequest {
                model: "assistant".into(),
                ..VersionRequest::default()
            })
            .await
            .expect("version")
            .version;
        let gate = |min: f64| {
            config(json!({
                "metrics": metrics(),
                "thresholds": {"faithfulness": {"min": min}},
                "version": {"model": "assistant", "version": version},
            }))
        };
        let tags = || async {
            tracking
                .model_version("assistant", version)
                .await
                .expect("read")
                .expect("version")
                .tags
        };
        let error = run(&ctx, gate(0.90)).await.expect_err("fails");
        assert!(matches!(error, OperatorError::Rejected { .. }), "{error}");
        let failed = tags().await;
        assert_eq!(failed["sluice.gate"], "failed");
        assert_eq!(failed["sluice.gate.summary"], "faithfulness 0.87 < 0.90");
        assert_eq!(failed["sluice.gate.run"], "run:run-1/t");
        run(&ctx, gate(0.80)).await.expect("passes");
        let passed = tags().await;
        assert_eq!(passed["sluice.gate"], "passed");
        assert_eq!(passed["sluice.gate.summary"], "passed 1 check");
        // A version the registry does not have is a refusal, not a retry.
        let unknown = config(json!({
            "metrics": metrics(),
            "version": {"model": "assistant", "version": "9"},
        }));
        let error = run(&ctx, unknown).await.expect_err("unknown version");
        assert!(matches!(error, OperatorError::Rejected { .. }), "{error}");
        assert!(error.to_string().contains("has no version 9"), "{error}");
    }

    #[tokio::test]
    async fn a_named_model_without_tracking_says_so() {
        let dir = tempfile::tempdir().expect("dir");
        let (ctx, _rx) = crate::operators::support::test_support::context(dir.path());
        let gate = config(json!({
            "metrics": metrics(),
            "baseline": {"model": "assistant", "max_regression": {"exact_match": 0.02}},
        }));
        let error = run(&ctx, gate).await.expect_err("no tracking").to_string();
        assert!(error.contains("tracking is not configured"), "{error}");
    }
}
