//! `CatalogRuns`: the operators' way to start and watch runs of other workflows (the
//! `trigger` operator), backed by the live catalog and the store. Runs start through `launch`
//! like every other run, with trigger `workflow`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::launch::{LaunchError, RunRequest, launch};
use super::live::Catalog;
use crate::operators::{BoxFuture, RunLauncher, RunOutcome};
use crate::store::Store;

/// Starts runs of the catalog's workflows and reports how they ended.
pub struct CatalogRuns {
    pub store: Store,
    pub catalog: Arc<Catalog>,
}

impl std::fmt::Debug for CatalogRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogRuns")
            .field("catalog", &self.catalog.dir())
            .finish_non_exhaustive()
    }
}

impl CatalogRuns {
    async fn find(&self, triggered_by: &str) -> Result<Option<String>, String> {
        let runs = self
            .store
            .runs_by_triggered_by(triggered_by)
            .await
            .map_err(|e| format!("cannot look up runs: {e}"))?;
        // The store matches a prefix; `…/task/1` must not find `…/task/12`'s run.
        Ok(runs
            .into_iter()
            .find(|r| r.triggered_by.as_deref() == Some(triggered_by))
            .map(|r| r.id))
    }

    async fn start(
        &self,
        workflow: &str,
        params: Map<String, Value>,
        triggered_by: String,
    ) -> Result<String, String> {
        if let Some(existing) = self.find(&triggered_by).await? {
            return Ok(existing);
        }
        let Some(entry) = self.catalog.get(workflow) else {
            let known: Vec<String> = self.catalog.snapshot().workflows.keys().cloned().collect();
            return Err(format!(
                "there is no workflow `{workflow}` (known: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        };
        let mut request = RunRequest::now("workflow", params);
        request.triggered_by = Some(triggered_by);
        let path = entry.path.to_string_lossy();
        launch(&self.store, &entry.workflow, &path, request)
            .await
            .map_err(|e| match e {
                LaunchError::Params(_) => e.to_string(),
                LaunchError::Store(e) => format!("cannot create the run: {e}"),
            })
    }

    async fn outcome(&self, run_id: &str) -> Result<Option<RunOutcome>, String> {
        let run = self
            .store
            .run(run_id)
            .await
            .map_err(|e| format!("cannot read run {run_id}: {e}"))?
            .ok_or_else(|| format!("run {run_id} does not exist any more"))?;
        if !run.state.is_final() {
            return Ok(None);
        }
        let results = self
            .store
            .task_results(run_id)
            .await
            .map_err(|e| format!("cannot read the tasks of run {run_id}: {e}"))?;
        let outputs = results
            .into_iter()
            .map(|(task, result)| {
                let outputs = result.get("outputs").cloned().unwrap_or(Value::Null);
                (task, outputs)
            })
            .collect();
        Ok(Some(RunOutcome {
            state: run.state.as_str().to_owned(),
            outputs,
        }))
    }
}

impl RunLauncher for CatalogRuns {
    fn trigger(
        &self,
        workflow: &str,
        params: Map<String, Value>,
        triggered_by: String,
    ) -> BoxFuture<'_, Result<String, String>> {
        let workflow = workflow.to_owned();
        Box::pin(async move { self.start(&workflow, params, triggered_by).await })
    }

    fn find_triggered(&self, triggered_by: &str) -> BoxFuture<'_, Result<Option<String>, String>> {
        let by = triggered_by.to_owned();
        Box::pin(async move { self.find(&by).await })
    }

    fn run_outcome(&self, run_id: &str) -> BoxFuture<'_, Result<Option<RunOutcome>, String>> {
        let id = run_id.to_owned();
        Box::pin(async move { self.outcome(&id).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::RunState;
    use crate::store::StoreConfig;

    async fn setup() -> (tempfile::TempDir, CatalogRuns) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("child.yaml"),
            "id: child\nparams:\n  n: { type: integer }\ntasks:\n  only: { operator: noop }\n",
        )
        .expect("write");
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let catalog = Arc::new(Catalog::open(dir.path()));
        (dir, CatalogRuns { store, catalog })
    }

    #[tokio::test]
    async fn triggering_is_idempotent_per_asking_try() {
        let (_dir, runs) = setup().await;
        let mut params = Map::new();
        params.insert("n".into(), 3.into());
        let first = runs
            .trigger("child", params.clone(), "p/r1/t/1".into())
            .await
            .expect("started");
        let again = runs
            .trigger("child", params.clone(), "p/r1/t/1".into())
            .await
            .expect("found");
        assert_eq!(first, again);
        let other = runs
            .trigger("child", params, "p/r1/t/12".into())
            .await
            .expect("started");
        assert_ne!(first, other);
        assert_eq!(
            runs.find_triggered("p/r1/t/1").await.expect("lookup"),
            Some(first.clone())
        );
        let run = runs.store.run(&first).await.expect("read").expect("run");
        assert_eq!(run.trigger, "workflow");
        assert_eq!(run.params["n"], 3);
        assert_eq!(runs.run_outcome(&first).await.expect("outcome"), None);
        runs.store
            .set_run_state(&first, RunState::Queued, RunState::Cancelled, None)
            .await
            .expect("cancel");
        let outcome = runs.run_outcome(&first).await.expect("outcome");
        assert_eq!(outcome.map(|o| o.state).as_deref(), Some("cancelled"));
    }

    #[tokio::test]
    async fn unknown_workflows_and_bad_params_are_explained() {
        let (_dir, runs) = setup().await;
        let message = runs
            .trigger("nope", Map::new(), "p/r/t/1".into())
            .await
            .expect_err("unknown");
        assert!(
            message.contains("no workflow `nope` (known: child)"),
            "{message}"
        );
        let message = runs
            .trigger("child", Map::new(), "p/r/t/1".into())
            .await
            .expect_err("missing param");
        assert!(message.contains("params are invalid"), "{message}");
    }
}
