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
use super::support::Text;
use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::duration::HumanDuration;
use crate::store::Store;
use crate::store::rollouts::RolloutRecord;

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
    /// Deploy even when a guard refuses; the override is written to the task's log.
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
                let verdict = checks::evaluate(ctx, &config.check).await?;
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
    alias::ensure_registered(ctx, &config.model, &config.version).await?;
    if let Some(requires) = &config.requires
        && !alias::has_held(ctx, &config.model, &config.version, &requires.alias).await?
    {
        let refusal = format!(
            "version {} of {} has never held `{}`, which `requires` asks for",
            config.version, config.model, requires.alias
        );
        if !config.force {
            return Err(OperatorError::rejected(format!(
                "deploy refused: {refusal}"
            )));
        }
        ctx.log
            .system(format!("force: true: deploying although {refusal}."));
    }
    let previous = alias::holder(ctx, &config.model, &config.alias).await?;
    let plan = config.plan(previous);
    let rollout = Rollout::start(Utc::now());
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
