//! `deploy`: promotes a model version to a registry alias, directly or as a canary or shadow
//! rollout with a bake and checks after each step, and rolls back on a failed check. The
//! rollout's state lives in the database (`store::rollouts`) and is written after every move,
//! so waiting is a reschedule (no worker slot held) and any later try resumes at its step.
//!
//! `strategy` is the pure state machine, `significance` the statistics, `checks` the metric
//! sources, `hook` the router call and `alias` the one place aliases move (in the registry).

pub mod alias;
pub mod checks;
pub mod hook;
pub mod significance;
pub mod strategy;

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use self::checks::CheckConfig;
use self::hook::{HookConfig, StepCall};
use self::strategy::{Effect, Phase, Plan, Rollout, Route, Strategy};
use super::support::{Text, gate_tags};
use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::duration::HumanDuration;
use crate::store::Store;
use crate::store::rollouts::RolloutRecord;
use crate::tracking::ModelVersionRecord;

/// The settings of a `deploy` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployWith {
    /// The registered model's name.
    pub model: String,
    /// The version to deploy (text or a number).
    pub version: Text,
    /// The alias the version takes: `champion` (default), `staging`, `production`, any name.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// `direct` (default): all traffic at once. `canary`: the shares in `steps`, a bake and
    /// the checks after each. `shadow`: mirrored traffic, a bake and the checks, then all of it.
    #[serde(default)]
    pub strategy: StrategyName,
    /// For `canary`: the new version's percent of traffic at each step, rising, ending at
    /// 100, like `[5, 25, 100]`.
    #[serde(default)]
    pub steps: Vec<u8>,
    /// How long each step runs before its checks. Default: `10m` for `canary` and `shadow`,
    /// `0s` for `direct`.
    #[serde(default)]
    pub bake: Option<HumanDuration>,
    /// What must hold after each step; a failure rolls back.
    #[serde(default)]
    pub check: Option<CheckConfig>,
    /// How long past the bake a check may wait for `min_samples` before the rollout rolls
    /// back. Default: `1h`.
    #[serde(default = "default_max_wait")]
    pub max_wait: HumanDuration,
    /// How often a waiting check looks again. Default: `1m`.
    #[serde(default = "default_recheck")]
    pub recheck: HumanDuration,
    /// An HTTP request sent at every routing change (each step and a rollback).
    #[serde(default)]
    pub hook: Option<HookConfig>,
    /// Refuse a version that has not held this alias before (dev → staging → prod).
    #[serde(default)]
    pub requires: Option<Requires>,
    /// Deploy even when a guard refuses (`requires`, or a failed gate result recorded on the
    /// version); the override is written to the task's log and is a warning of the task.
    #[serde(default)]
    pub force: bool,
}

/// A guard on the version's history.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// The alias the version must have held, like `staging`.
    pub alias: String,
}

/// How the version reaches its traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    #[default]
    Direct,
    Canary,
    Shadow,
}

fn default_alias() -> String {
    "champion".into()
}

fn default_max_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_recheck() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// The default bake of a canary or shadow step.
const DEFAULT_BAKE: Duration = Duration::from_secs(600);

/// A checked `deploy` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "DeployWith")]
pub struct DeployConfig {
    pub model: String,
    pub version: String,
    pub alias: String,
    #[schemars(with = "Value")]
    pub strategy: Strategy,
    pub bake: Duration,
    pub check: CheckConfig,
    pub max_wait: Duration,
    pub recheck: Duration,
    pub hook: Option<HookConfig>,
    pub requires: Option<Requires>,
    pub force: bool,
}

impl TryFrom<DeployWith> for DeployConfig {
    type Error = String;

    fn try_from(with: DeployWith) -> std::result::Result<Self, String> {
        let name_ok = |s: &str| !s.trim().is_empty();
        if !name_ok(&with.model) {
            return Err("`model` must name a registered model".into());
        }
        if !name_ok(&with.version.0) {
            return Err("`version` must not be empty".into());
        }
        if !name_ok(&with.alias) {
            return Err("`alias` must not be empty".into());
        }
        let strategy = match with.strategy {
            StrategyName::Direct | StrategyName::Shadow if !with.steps.is_empty() => {
                return Err("`steps` belongs to `strategy: canary`".into());
            }
            StrategyName::Direct => Strategy::Direct,
            StrategyName::Shadow => Strategy::Shadow,
            StrategyName::Canary => {
                if with.steps.is_empty() {
                    return Err("`strategy: canary` needs `steps`, like `[5, 25, 100]`".into());
                }
                if with.steps.windows(2).any(|w| w[0] >= w[1]) || with.steps[0] == 0 {
                    return Err(format!(
                        "`steps` must rise from above 0, each larger than the last; they are {:?}",
                        with.steps
                    ));
                }
                if with.steps.last() != Some(&100) {
                    return Err(format!(
                        "`steps` must end at 100 (all traffic); they end at {}",
                        with.steps.last().copied().unwrap_or_default()
                    ));
                }
                Strategy::Canary { steps: with.steps }
            }
        };
        let check = with.check.unwrap_or_default();
        if let Some(problem) = check.problems().into_iter().next() {
            return Err(problem);
        }
        if with.recheck.0.is_zero() {
            return Err("`recheck` must be longer than zero".into());
        }
        let bake = with.bake.map(|b| b.0).unwrap_or(match strategy {
            Strategy::Direct => Duration::ZERO,
            _ => DEFAULT_BAKE,
        });
        Ok(DeployConfig {
            model: with.model.trim().to_owned(),
            version: with.version.0.trim().to_owned(),
            alias: with.alias.trim().to_owned(),
            strategy,
            bake,
            check,
            max_wait: with.max_wait.0,
            recheck: with.recheck.0,
            hook: with.hook,
            requires: with.requires,
            force: with.force,
        })
    }
}

impl DeployConfig {
    fn plan(&self, previous: Option<String>) -> Plan {
        Plan {
            strategy: self.strategy.clone(),
            version: self.version.clone(),
            previous,
            bake: self.bake,
            checked: !self.check.is_empty(),
            max_wait: self.max_wait,
            recheck: self.recheck,
        }
    }
}

fn store_error(e: crate::store::StoreError) -> OperatorError {
    OperatorError::failed(format!(
        "the rollout's state could not be read or written: {e}"
    ))
}

pub async fn run(ctx: &OpContext, config: DeployConfig) -> Result<Completion> {
    let store = ctx.services.store.clone().ok_or_else(|| {
        OperatorError::failed("`deploy` needs the database, which this process does not have")
    })?;
    let (plan, mut rollout) = match store
        .rollout_for_task(&ctx.run_id, &ctx.task)
        .await
        .map_err(store_error)?
    {
        Some(row) => resume(ctx, &config, row)?,
        None => begin(ctx, &store, &config).await?,
    };
    loop {
        let now = Utc::now();
        match rollout.next(&plan, now) {
            Effect::Route {
                step,
                routing,
                move_alias,
            } => {
                send_hook(ctx, &config, step + 1, &routing, false).await?;
                if move_alias {
                    alias::move_alias(
                        ctx,
                        &alias::Move {
                            model: &config.model,
                            alias: &config.alias,
                            from: plan.previous.as_deref(),
                            to: Some(&config.version),
                            at: now,
                        },
                    )
                    .await?;
                }
                ctx.log.system(format!(
                    "Step {} of {}: routing {}.",
                    step + 1,
                    plan.strategy.step_count(),
                    describe(&routing)
                ));
                rollout.routed(&plan, routing, move_alias, Utc::now());
                save(ctx, &store, &config, &plan, &rollout).await?;
            }
            Effect::Wait { until } => {
                save(ctx, &store, &config, &plan, &rollout).await?;
                let after = (until - now).to_std().unwrap_or(Duration::ZERO);
                ctx.log.system(format!(
                    "Step {}: waiting until {} before checking.",
                    rollout.step + 1,
                    until.to_rfc3339()
                ));
                return Err(OperatorError::Reschedule {
                    after: after.max(Duration::from_secs(1)),
                });
            }
            Effect::Check { step } => {
                let subject = checks::Subject {
                    model: &config.model,
                    version: &config.version,
                };
                let verdict = checks::evaluate(ctx, &config.check, subject).await?;
                ctx.log
                    .system(format!("Step {} checked: {verdict:?}.", step + 1));
                rollout.checked(&plan, verdict, Utc::now());
                save(ctx, &store, &config, &plan, &rollout).await?;
            }
            Effect::RollBack {
                routing,
                restore_alias,
                reason,
            } => {
                ctx.log.system(format!("Rolling back: {reason}."));
                send_hook(ctx, &config, 0, &routing, true).await?;
                if restore_alias {
                    alias::move_alias(
                        ctx,
                        &alias::Move {
                            model: &config.model,
                            alias: &config.alias,
                            from: Some(&config.version),
                            to: plan.previous.as_deref(),
                            at: now,
                        },
                    )
                    .await?;
                }
                rollout.rolled_back(routing);
                save(ctx, &store, &config, &plan, &rollout).await?;
            }
            Effect::Succeeded => return Ok(completion(&config, &plan, &rollout)),
            Effect::RolledBack { reason } => {
                return Err(OperatorError::rejected(format!(
                    "the rollout of {} version {} was rolled back: {reason}",
                    config.model, config.version
                )));
            }
        }
    }
}

/// A new rollout: the guards, then its first row.
async fn begin(ctx: &OpContext, store: &Store, config: &DeployConfig) -> Result<(Plan, Rollout)> {
    let version = alias::ensure_registered(ctx, &config.model, &config.version).await?;
    let mut refusals = Vec::new();
    if let Some(refusal) = gate_refusal(ctx, &version) {
        refusals.push(refusal);
    }
    if let Some(requires) = &config.requires
        && !alias::has_held(ctx, &config.model, &config.version, &requires.alias).await?
    {
        refusals.push(format!(
            "version {} of {} has never held `{}`, which `requires` asks for",
            config.version, config.model, requires.alias
        ));
    }
    if !config.force
        && let Some(refusal) = refusals.first()
    {
        return Err(OperatorError::rejected(format!(
            "deploy refused: {refusal}"
        )));
    }
    let mut overrides = Vec::with_capacity(refusals.len());
    for refusal in refusals {
        ctx.log
            .system(format!("force: true: deploying although {refusal}."));
        overrides.push(format!("deployed with force: true although {refusal}"));
    }
    let previous = alias::holder(ctx, &config.model, &config.alias).await?;
    let plan = config.plan(previous);
    let mut rollout = Rollout::start(Utc::now());
    rollout.overrides = overrides;
    save(ctx, store, config, &plan, &rollout).await?;
    ctx.log.system(format!(
        "Deploying {} version {} to `{}` ({}), after {}.",
        config.model,
        config.version,
        config.alias,
        config.strategy.name(),
        plan.previous
            .as_deref()
            .map_or("no earlier version".to_owned(), |v| format!("version {v}"))
    ));
    Ok((plan, rollout))
}

/// Why the version's recorded gate result forbids deploying it, if it does. A version no gate
/// has judged deploys; the log says so.
fn gate_refusal(ctx: &OpContext, version: &ModelVersionRecord) -> Option<String> {
    let tag = |key: &str| version.tags.get(key).map(String::as_str);
    match tag(gate_tags::RESULT) {
        Some(gate_tags::FAILED) => Some(format!(
            "version {} of {} failed its gate ({}{})",
            version.version,
            version.model,
            tag(gate_tags::SUMMARY).unwrap_or("no summary recorded"),
            tag(gate_tags::RUN).map_or(String::new(), |run| format!(", {run}"))
        )),
        Some(result) => {
            ctx.log.system(format!(
                "Gate result of version {}: {result} ({}).",
                version.version,
                tag(gate_tags::SUMMARY).unwrap_or("no summary recorded")
            ));
            None
        }
        None => {
            ctx.log.system(format!(
                "Version {} has no gate result recorded.",
                version.version
            ));
            None
        }
    }
}

/// The rollout an earlier try (or execution) of this task stored.
fn resume(ctx: &OpContext, config: &DeployConfig, row: RolloutRecord) -> Result<(Plan, Rollout)> {
    if row.version != config.version || row.model != config.model {
        return Err(OperatorError::rejected(format!(
            "this task already rolled out {} version {}; it cannot roll out version {} of {} in \
             the same run",
            row.model, row.version, config.version, config.model
        )));
    }
    let rollout: Rollout = serde_json::from_value(row.detail)
        .map_err(|e| OperatorError::failed(format!("the stored rollout cannot be read: {e}")))?;
    ctx.log.system(format!(
        "Resuming the rollout at step {} ({}).",
        rollout.step + 1,
        rollout.phase.name()
    ));
    Ok((config.plan(row.previous_version), rollout))
}

async fn save(
    ctx: &OpContext,
    store: &Store,
    config: &DeployConfig,
    plan: &Plan,
    rollout: &Rollout,
) -> Result<()> {
    let rollback_reason = match &rollout.phase {
        Phase::RollBack { reason } | Phase::RolledBack { reason } => Some(reason.clone()),
        _ => None,
    };
    let record = RolloutRecord {
        run_id: ctx.run_id.clone(),
        task_id: ctx.task.clone(),
        try_number: ctx.try_number,
        model: config.model.clone(),
        version: config.version.clone(),
        previous_version: plan.previous.clone(),
        alias: config.alias.clone(),
        strategy: config.strategy.name().into(),
        step: u32::try_from(rollout.step).unwrap_or(u32::MAX),
        state: rollout.phase.name().into(),
        routing: json!(rollout.routing),
        detail: serde_json::to_value(rollout).map_err(|e| {
            OperatorError::failed(format!("the rollout's state cannot be written: {e}"))
        })?,
        checks: json!(rollout.checks),
        rollback_reason,
        started_at: rollout.started,
        updated_at: Utc::now(),
    };
    if store.save_rollout(&record).await.map_err(store_error)? {
        Ok(())
    } else {
        Err(OperatorError::failed(
            "a newer try of this task owns the rollout; this try stops",
        ))
    }
}

async fn send_hook(
    ctx: &OpContext,
    config: &DeployConfig,
    number: usize,
    routing: &[Route],
    rollback: bool,
) -> Result<()> {
    let Some(hook) = &config.hook else {
        return Ok(());
    };
    let step = StepCall {
        model: &config.model,
        version: &config.version,
        alias: &config.alias,
        number,
        routing,
        rollback,
    };
    hook::call(ctx, hook, &step).await.map(drop)
}

fn describe(routing: &[Route]) -> String {
    routing
        .iter()
        .map(|r| format!("version {} {}% {}", r.version, r.weight, r.mode.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn completion(config: &DeployConfig, plan: &Plan, rollout: &Rollout) -> Completion {
    let mut outputs = Outputs::new();
    outputs.insert("model".into(), json!(config.model));
    outputs.insert("version".into(), json!(config.version));
    outputs.insert("previous_version".into(), json!(plan.previous));
    outputs.insert("alias".into(), json!(config.alias));
    outputs.insert("strategy".into(), json!(config.strategy.name()));
    outputs.insert("routing".into(), json!(rollout.routing));
    outputs.insert("checks".into(), json!(rollout.checks));
    outputs.insert("started".into(), json!(rfc3339(rollout.started)));
    Completion {
        warnings: rollout.overrides.clone(),
        summary: Some(format!(
            "{} version {} is `{}` ({})",
            config.model,
            config.version,
            config.alias,
            config.strategy.name()
        )),
        ..Completion::from(outputs)
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(with: Value) -> std::result::Result<DeployConfig, String> {
        serde_json::from_value::<DeployConfig>(with).map_err(|e| e.to_string())
    }

    #[test]
    fn canary_steps_rise_to_100() {
        let ok = config(
            json!({"model": "m", "version": 3, "strategy": "canary", "steps": [5, 25, 100]}),
        )
        .expect("valid");
        assert_eq!(ok.version, "3", "a number is a version too");
        assert_eq!(ok.bake, DEFAULT_BAKE);
        for (steps, expected) in [
            (json!([]), "needs `steps`"),
            (json!([25, 5, 100]), "must rise"),
            (json!([5, 50]), "must end at 100"),
        ] {
            let error =
                config(json!({"model": "m", "version": "1", "strategy": "canary", "steps": steps}))
                    .expect_err("invalid steps");
            assert!(error.contains(expected), "{error}");
        }
        let direct =
            config(json!({"model": "m", "version": "1", "steps": [100]})).expect_err("direct");
        assert!(direct.contains("belongs to `strategy: canary`"), "{direct}");
    }

    /// A try's context with a database and the built-in registry over it, and a registered
    /// version 1 of `assistant` with `tags`.
    async fn with_registry(
        dir: &std::path::Path,
        tags: &[(&str, &str)],
    ) -> (
        OpContext,
        tokio::sync::mpsc::UnboundedReceiver<crate::operators::LogLine>,
    ) {
        use crate::operators::services::Services;
        use crate::operators::support::test_support;
        let store = test_support::memory_store().await;
        let tracking = test_support::builtin_tracking_over(store.clone(), dir);
        let version = tracking
            .create_model_version(crate::tracking::VersionRequest {
                model: "assistant".into(),
                ..crate::tracking::VersionRequest::default()
            })
            .await
            .expect("version");
        for (key, value) in tags {
            tracking
                .set_version_tag("assistant", version.version, key, value)
                .await
                .expect("tag");
        }
        let (mut ctx, log) = test_support::context(dir);
        ctx.services = std::sync::Arc::new(Services {
            store: Some(store),
            tracking: Some(tracking),
            ..Services::default()
        });
        (ctx, log)
    }

    #[tokio::test]
    async fn a_version_whose_gate_failed_is_refused_unless_forced() {
        let failed = [
            (gate_tags::RESULT, gate_tags::FAILED),
            (gate_tags::SUMMARY, "faithfulness 0.80 < 0.85"),
            (gate_tags::RUN, "run:r1/gate"),
        ];
        let dir = tempfile::tempdir().expect("dir");
        let (ctx, _log) = with_registry(dir.path(), &failed).await;
        let with = json!({"model": "assistant", "version": "1"});
        match run(&ctx, config(with.clone()).expect("config")).await {
            Err(OperatorError::Rejected { message }) => assert_eq!(
                message,
                "deploy refused: version 1 of assistant failed its gate (faithfulness 0.80 < \
                 0.85, run:r1/gate)"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }

        let dir = tempfile::tempdir().expect("dir");
        let (ctx, mut log) = with_registry(dir.path(), &failed).await;
        let forced = json!({"model": "assistant", "version": "1", "force": true});
        let done = run(&ctx, config(forced).expect("config"))
            .await
            .expect("forced");
        assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
        assert!(
            done.warnings[0].contains("force: true") && done.warnings[0].contains("0.80 < 0.85"),
            "{:?}",
            done.warnings
        );
        let lines = crate::operators::support::test_support::lines(
            &mut log,
            crate::operators::LogStream::System,
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("force: true: deploying although")),
            "{lines:?}"
        );

        let dir = tempfile::tempdir().expect("dir");
        let (ctx, mut log) = with_registry(dir.path(), &[]).await;
        let done = run(&ctx, config(with).expect("config"))
            .await
            .expect("a version no gate judged deploys");
        assert!(done.warnings.is_empty());
        let lines = crate::operators::support::test_support::lines(
            &mut log,
            crate::operators::LogStream::System,
        );
        assert!(
            lines.iter().any(|l| l.contains("no gate result")),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn a_tracking_check_reads_the_versions_tracking_run() {
        use crate::tracking::{LogBatch, MetricPoint, NewTrackingRun};
        let dir = tempfile::tempdir().expect("dir");
        let (ctx, _log) = with_registry(dir.path(), &[]).await;
        let tracking = ctx.services.tracking.clone().expect("tracking");
        let experiment = tracking.experiment("e").await.expect("experiment");
        let run_id = tracking
            .start_run(&NewTrackingRun {
                experiment_id: experiment.id,
                name: "eval".into(),
                lineage: Default::default(),
                started_at: Utc::now(),
            })
            .await
            .expect("run")
            .id;
        let point = |value, step| MetricPoint {
            key: "error_rate".into(),
            value,
            step,
            timestamp_ms: 0,
        };
        tracking
            .log_batch(
                &run_id,
                &LogBatch {
                    metrics: vec![point(0.5, 1), point(0.01, 2)],
                    ..LogBatch::default()
                },
            )
            .await
            .expect("log");
        let version = tracking
            .create_model_version(crate::tracking::VersionRequest {
                model: "assistant".into(),
                tracking_run_id: Some(run_id.clone()),
                ..crate::tracking::VersionRequest::default()
            })
            .await
            .expect("version 2");
        let check = |tracking: Value| -> CheckConfig {
            serde_json::from_value(json!({ "tracking": tracking })).expect("check")
        };
        let subject = |version: &'static str| checks::Subject {
            model: "assistant",
            version,
        };
        assert_eq!(version.version, 2);
        let passed = checks::evaluate(
            &ctx,
            &check(json!({"metric": "error_rate", "max": 0.02})),
            subject("2"),
        )
        .await
        .expect("read");
        assert_eq!(
            passed,
            strategy::Verdict::Passed(vec!["error_rate 0.01 within thresholds".into()])
        );
        let failed = checks::evaluate(
            &ctx,
            &check(json!({"metric": "error_rate", "run": run_id, "max": 0.005})),
            subject("1"),
        )
        .await
        .expect("read");
        assert!(
            matches!(&failed, strategy::Verdict::Failed { reason, .. } if reason == "error_rate 0.01 > 0.005"),
            "{failed:?}"
        );
        let error = checks::evaluate(
            &ctx,
            &check(json!({"metric": "error_rate", "max": 1})),
            subject("1"),
        )
        .await
        .expect_err("version 1 has no tracking run");
        assert!(error.to_string().contains("check.tracking.run"), "{error}");
        let error = checks::evaluate(
            &ctx,
            &check(json!({"metric": "latency", "max": 1})),
            subject("2"),
        )
        .await
        .expect_err("no such metric");
        assert!(
            matches!(error, OperatorError::Failed { .. })
                && error.to_string().contains("`error_rate`"),
            "{error}"
        );
        let bounds =
            config(json!({"model": "m", "version": "1", "check": {"tracking": {"metric": "x"}}}))
                .expect_err("no bounds");
        assert!(
            bounds.contains("`check.tracking` needs `min`, `max`"),
            "{bounds}"
        );
    }

    #[test]
    fn hook_templates_read_step_and_nothing_the_task_has() {
        let source = |json: &str| {
            format!(
                "tasks:\n  promote:\n    operator: deploy\n    with:\n      model: m\n      version: \"1\"\n      hook: {{ url: \"http://127.0.0.1:1/w\", json: {json} }}\n"
            )
        };
        let check = |json: &str| {
            crate::catalog::check_source(std::path::Path::new("w.yaml"), &source(json))
                .result
                .map(drop)
                .map_err(|errors| {
                    errors
                        .iter()
                        .map(|d| d.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
        };
        assert_eq!(check("\"{{ step.weights }}\""), Ok(()));
        assert_eq!(
            check("{ w: \"{{ step.weights }}\", m: \"{{ step.mode | upper }}\" }"),
            Ok(())
        );
        assert_eq!(
            check("{ w: \"{% raw %}{{ step.weights }}{% endraw %}\" }"),
            Ok(())
        );
        let error = check("{ w: \"{{ params.x }}\" }").expect_err("params are not the hook's");
        assert!(error.contains("`with.hook.json` reads `params`"), "{error}");
        let error = check("\"{{ step.weights | nosuch }}\"").expect_err("filters are checked");
        assert!(error.contains("nosuch"), "{error}");
        let outside = source("\"{{ step.weights }}\"")
            .replace("url: \"http://127.0.0.1:1/w\"", "url: \"{{ step.url }}\"");
        let error = crate::catalog::check_source(std::path::Path::new("w.yaml"), &outside)
            .result
            .expect_err("`step` only in the body");
        assert!(
            error.iter().any(|d| d.message.contains("reads `step`")),
            "{error:?}"
        );
    }

    #[test]
    fn checks_and_names_are_checked_before_running() {
        let error = config(json!({"model": "m", "version": "1", "check": {"prometheus": {"url": "u", "query": "q"}}}))
            .expect_err("no bounds");
        assert!(error.contains("needs `min`, `max`"), "{error}");
        let error = config(json!({"model": " ", "version": "1"})).expect_err("empty model");
        assert!(error.contains("`model`"), "{error}");
        let error =
            config(json!({"model": "m", "version": "1", "bogus": 1})).expect_err("unknown key");
        assert!(error.contains("bogus"), "{error}");
    }
}
