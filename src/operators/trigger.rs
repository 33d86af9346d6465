//! `trigger`: starts a run of another workflow with params and, with `wait: true`, waits for
//! it (rescheduling itself between checks, so no worker slot is held) and takes its state and
//! outputs.

use std::time::Duration;

use chrono::Utc;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Completion, OpContext, OperatorError, Outputs, Result, RunLauncher};
use crate::duration::HumanDuration;

/// The settings of a `trigger` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// The id of the workflow to start.
    pub workflow: String,
    /// The new run's params, checked against that workflow's `params`.
    #[serde(default)]
    pub params: IndexMap<String, Value>,
    /// Wait for the run to end: the task succeeds only if the run succeeds, and outputs its
    /// `state` and `outputs` (task id → outputs). Default: `false` (output `run_id` at once).
    #[serde(default)]
    pub wait: bool,
    /// With `wait`: how often to check whether the run has ended. Default: `5s`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// With `wait`: how long to wait for the run, from this try's start; then the task
    /// fails (the run keeps going). Default: no limit.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// Names the try asking for a run, so asking again (a rescheduled check, a try handed back
/// on shutdown) finds the run it already started instead of starting another one.
fn triggered_by(ctx: &OpContext) -> String {
    format!(
        "{}/{}/{}/{}",
        ctx.workflow, ctx.run_id, ctx.task, ctx.try_number
    )
}

async fn start_or_find(
    runs: &dyn RunLauncher,
    ctx: &OpContext,
    config: &TriggerConfig,
) -> Result<String> {
    let by = triggered_by(ctx);
    if let Some(run_id) = runs
        .find_triggered(&by)
        .await
        .map_err(OperatorError::failed)?
    {
        return Ok(run_id);
    }
    let params = config
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let run_id = runs
        .trigger(&config.workflow, params, by)
        .await
        .map_err(|e| OperatorError::failed(format!("cannot start `{}`: {e}", config.workflow)))?;
    ctx.log.system(format!(
        "Started run {run_id} of workflow `{}`.",
        config.workflow
    ));
    Ok(run_id)
}

pub async fn run(ctx: &OpContext, config: TriggerConfig) -> Result<Completion> {
    let Some(runs) = ctx.services.runs.as_deref() else {
        return Err(OperatorError::failed(
            "the `trigger` operator needs a catalog of workflows to start: run this workflow \
             with `sluice serve`, not `sluice run`",
        ));
    };
    let run_id = start_or_find(runs, ctx, &config).await?;
    let mut outputs = Outputs::new();
    outputs.insert("run_id".into(), run_id.clone().into());
    if !config.wait {
        return Ok(Completion::from(outputs));
    }
    let Some(outcome) = runs
        .run_outcome(&run_id)
        .await
        .map_err(OperatorError::failed)?
    else {
        let waited = (Utc::now() - ctx.first_started_at)
            .to_std()
            .unwrap_or_default();
        if let Some(limit) = config.timeout
            && waited >= limit.0
        {
            return Err(OperatorError::failed(format!(
                "run {run_id} of `{}` did not end within {limit}; it keeps running",
                config.workflow
            )));
        }
        let mut after = config.poll_interval.0;
        if let Some(limit) = config.timeout {
            after = after.min(limit.0.saturating_sub(waited));
        }
        return Err(OperatorError::Reschedule {
            after: after.max(Duration::from_millis(100)),
        });
    };
    if outcome.state != "success" {
        return Err(OperatorError::failed(format!(
            "run {run_id} of `{}` ended {}",
            config.workflow, outcome.state
        )));
    }
    outputs.insert("state".into(), outcome.state.into());
    outputs.insert("outputs".into(), json!(outcome.outputs));
    Ok(Completion::from(outputs))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::operators::services::Services;
    use crate::operators::support::test_support::context;
    use crate::operators::{BoxFuture, RunOutcome};

    /// Runs kept in memory: (triggered_by, workflow, run id), and outcomes by run id.
    #[derive(Debug, Default)]
    struct FakeRuns {
        started: Mutex<Vec<(String, String, String)>>,
        outcomes: Mutex<Vec<(String, RunOutcome)>>,
    }

    impl RunLauncher for FakeRuns {
        fn trigger(
            &self,
            workflow: &str,
            _params: serde_json::Map<String, Value>,
            triggered_by: String,
        ) -> BoxFuture<'_, std::result::Result<String, String>> {
            let workflow = workflow.to_owned();
            Box::pin(async move {
                if workflow == "missing" {
                    return Err("there is no workflow `missing`".into());
                }
                let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
                let id = format!("child-{}", started.len() + 1);
                started.push((triggered_by, workflow, id.clone()));
                Ok(id)
            })
        }

        fn find_triggered(
            &self,
            triggered_by: &str,
        ) -> BoxFuture<'_, std::result::Result<Option<String>, String>> {
            let by = triggered_by.to_owned();
            Box::pin(async move {
                let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
                Ok(started.iter().find(|s| s.0 == by).map(|s| s.2.clone()))
            })
        }

        fn run_outcome(
            &self,
            run_id: &str,
        ) -> BoxFuture<'_, std::result::Result<Option<RunOutcome>, String>> {
            let id = run_id.to_owned();
            Box::pin(async move {
                let outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
                Ok(outcomes.iter().find(|o| o.0 == id).map(|o| o.1.clone()))
            })
        }
    }

    fn config(with: Value) -> TriggerConfig {
        serde_json::from_value(with).expect("valid config")
    }

    #[tokio::test]
    async fn without_a_launcher_it_says_to_use_serve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ctx, _rx) = context(dir.path());
        let message = run(&ctx, config(json!({"workflow": "b"})))
            .await
            .expect_err("no launcher")
            .to_string();
        assert!(message.contains("sluice serve"), "{message}");
    }

    #[tokio::test]
    async fn waiting_reschedules_without_starting_twice_then_takes_the_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _rx) = context(dir.path());
        let fake = Arc::new(FakeRuns::default());
        ctx.services = Arc::new(Services {
            runs: Some(fake.clone()),
            ..Services::default()
        });
        let cfg = config(json!({"workflow": "b", "wait": true, "poll_interval": "2s"}));
        for _ in 0..2 {
            match run(&ctx, cfg.clone()).await {
                Err(OperatorError::Reschedule { after }) => {
                    assert_eq!(after, Duration::from_secs(2))
                }
                other => panic!("expected a reschedule, got {other:?}"),
            }
        }
        assert_eq!(fake.started.lock().expect("lock").len(), 1);
        let mut outputs = serde_json::Map::new();
        outputs.insert("check".into(), json!({"drift": "yes"}));
        fake.outcomes.lock().expect("lock").push((
            "child-1".into(),
            RunOutcome {
                state: "success".into(),
                outputs,
            },
        ));
        let done = run(&ctx, cfg).await.expect("success");
        assert_eq!(done.outputs["run_id"], "child-1");
        assert_eq!(done.outputs["state"], "success");
        assert_eq!(done.outputs["outputs"]["check"]["drift"], "yes");
    }

    #[tokio::test]
    async fn a_failed_child_fails_the_task_and_an_unknown_workflow_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _rx) = context(dir.path());
        let fake = Arc::new(FakeRuns::default());
        fake.outcomes.lock().expect("lock").push((
            "child-1".into(),
            RunOutcome {
                state: "failed".into(),
                outputs: Default::default(),
            },
        ));
        ctx.services = Arc::new(Services {
            runs: Some(fake.clone()),
            ..Services::default()
        });
        let message = run(&ctx, config(json!({"workflow": "b", "wait": true})))
            .await
            .expect_err("child failed")
            .to_string();
        assert!(message.contains("ended failed"), "{message}");
        ctx.try_number = 2;
        let message = run(&ctx, config(json!({"workflow": "missing"})))
            .await
            .expect_err("unknown")
            .to_string();
        assert!(message.contains("no workflow `missing`"), "{message}");
    }

    #[tokio::test]
    async fn without_wait_it_outputs_the_run_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _rx) = context(dir.path());
        ctx.services = Arc::new(Services {
            runs: Some(Arc::new(FakeRuns::default())),
            ..Services::default()
        });
        let done = run(&ctx, config(json!({"workflow": "b", "params": {"x": 1}})))
            .await
            .expect("started");
        assert_eq!(done.outputs["run_id"], "child-1");
    }

    #[tokio::test]
    async fn a_wait_past_its_timeout_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _rx) = context(dir.path());
        ctx.services = Arc::new(Services {
            runs: Some(Arc::new(FakeRuns::default())),
            ..Services::default()
        });
        ctx.first_started_at = Utc::now() - chrono::Duration::seconds(90);
        let message = run(
            &ctx,
            config(json!({"workflow": "b", "wait": true, "timeout": "1m"})),
        )
        .await
        .expect_err("timeout")
        .to_string();
        assert!(message.contains("did not end within 1m"), "{message}");
    }
}
