//! The workflow-trigger service: when a run ends, starts the workflows whose `workflow`
//! triggers match it (`triggers::matching_workflow_triggers`), through `launch` with trigger
//! `workflow`. `run_once(run_id)` is the whole decision for one ended run; `run` listens for
//! runs ending.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Result, SchedulerError};
use crate::catalog::launch::{LaunchError, RunRequest, launch};
use crate::catalog::live::Catalog;
use crate::store::{Store, StoreEvent};
use crate::template::Templates;
use crate::triggers::{RunFacts, matching_workflow_triggers};

pub struct WorkflowTriggerService {
    store: Store,
    catalog: Arc<Catalog>,
    templates: Arc<Templates>,
}

impl WorkflowTriggerService {
    pub fn new(store: Store, catalog: Arc<Catalog>, templates: Arc<Templates>) -> Self {
        WorkflowTriggerService {
            store,
            catalog,
            templates,
        }
    }

    /// Starts the runs that the end of `run_id` triggers; returns (workflow, new run id) for
    /// each. A run that has not ended triggers nothing. Paused workflows are not started.
    pub async fn run_once(&self, run_id: &str) -> Result<Vec<(String, String)>> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(Vec::new());
        };
        if !run.state.is_final() {
            return Ok(Vec::new());
        }
        let snapshot = self.catalog.snapshot();
        // Most workflows have no workflow triggers: skip reading the run's tasks for them.
        let listens = snapshot
            .workflows
            .values()
            .any(|e| !e.workflow.triggers.is_empty());
        if !listens {
            return Ok(Vec::new());
        }
        let outputs = self
            .store
            .task_results(run_id)
            .await?
            .into_iter()
            .map(|(task, result)| {
                let outputs = result
                    .get("outputs")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                (task, outputs)
            })
            .collect();
        let facts = RunFacts {
            workflow: run.workflow_id.clone(),
            run_id: run.id.clone(),
            state: run.state,
            outputs,
        };
        // Trigger templates are the workflow author's: render them off the async threads, so
        // a runaway `if` or param holds up nothing else.
        let candidates = Arc::clone(&snapshot);
        let matched = self
            .templates
            .off_thread("triggers", move |templates| {
                Ok(matching_workflow_triggers(
                    &facts,
                    candidates.workflows.values().map(|e| e.workflow.as_ref()),
                    templates,
                ))
            })
            .await;
        let matches = match matched {
            Ok(matches) => matches,
            Err(e) => {
                warn!(upstream_run = run_id, error = %e, "The workflow triggers could not be evaluated; none fires.");
                Vec::new()
            }
        };
        if matches.is_empty() {
            return Ok(Vec::new());
        }
        let paused = self.store.paused().await?;
        let mut started = Vec::new();
        for (workflow_id, params) in matches {
            if paused.contains(&workflow_id) {
                info!(workflow = %workflow_id, upstream_run = run_id, "A workflow trigger matched a paused workflow; no run started.");
                continue;
            }
            let Some(entry) = snapshot.workflows.get(&workflow_id) else {
                continue;
            };
            let mut request = RunRequest::now("workflow", params);
            request.triggered_by = Some(format!("{}/{}", run.workflow_id, run.id));
            let path = entry.path.to_string_lossy();
            match launch(&self.store, &entry.workflow, &path, request).await {
                Ok(new_run) => {
                    info!(workflow = %workflow_id, run_id = %new_run, upstream_run = run_id, "Run triggered by an upstream run.");
                    started.push((workflow_id, new_run));
                }
                Err(LaunchError::Params(problems)) => {
                    warn!(workflow = %workflow_id, upstream_run = run_id, problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(), "A workflow trigger matched but its params are invalid; no run started.");
                }
                Err(LaunchError::Store(e)) => return Err(SchedulerError::Store(e)),
            }
        }
        Ok(started)
    }

    /// Reacts to runs ending until `shutdown`.
    pub async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = events.recv() => match event {
                    Some(StoreEvent::RunState { run_id, state }) if state.is_final() => {
                        self.run_once(&run_id).await?;
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::RunState;
    use crate::store::StoreConfig;

    #[tokio::test]
    async fn an_ended_run_starts_the_matching_workflow_with_its_params() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.yaml"),
            "id: a\ntasks:\n  check: { operator: noop }\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("b.yaml"),
            "id: b\nparams:\n  from: { type: string }\ntriggers:\n  - workflow: { id: a, params: { from: \"{{ upstream.run_id }}\" } }\ntasks:\n  t: { operator: noop }\n",
        )
        .expect("write");
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let catalog = Arc::new(Catalog::open(dir.path()));
        assert!(catalog.snapshot().import_errors.is_empty());
        let a = catalog.get("a").expect("a");
        let run_a = launch(
            &store,
            &a.workflow,
            "a.yaml",
            RunRequest::now("manual", Default::default()),
        )
        .await
        .expect("launch");
        let service =
            WorkflowTriggerService::new(store.clone(), catalog, Arc::new(Templates::new()));
        assert!(service.run_once(&run_a).await.expect("pass").is_empty());
        store
            .set_run_state(&run_a, RunState::Queued, RunState::Running, None)
            .await
            .expect("start");
        store
            .set_run_state(&run_a, RunState::Running, RunState::Success, None)
            .await
            .expect("end");
        let started = service.run_once(&run_a).await.expect("pass");
        assert_eq!(started.len(), 1);
        let child = store.run(&started[0].1).await.expect("read").expect("run");
        assert_eq!(child.workflow_id, "b");
        assert_eq!(child.trigger, "workflow");
        assert_eq!(child.triggered_by, Some(format!("a/{run_a}")));
        assert_eq!(child.params["from"], serde_json::json!(run_a));
    }
}
