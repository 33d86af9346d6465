//! What a run reproduces: the workflow run and tracking run it was started from
//! (`runs.reproduces`), written with the run itself so a reproduction never exists without it.

use chrono::Utc;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde::{Deserialize, Serialize};

use super::runs::{NewRun, insert_run};
use super::tasks::NewTaskInstance;
use super::{Result, Store, StoreError, StoreEvent, get};
use crate::lifecycle::RunState;

/// The original a reproduction was started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reproduces {
    /// The original workflow run.
    pub run_id: String,
    /// The tracking run whose lineage names it.
    pub tracking_run_id: String,
}

impl Store {
    /// Creates a queued run, like `create_run`, recording in the same transaction that it
    /// reproduces `original`.
    pub async fn create_reproduction(
        &self,
        run: &NewRun,
        tasks: &[NewTaskInstance],
        original: &Reproduces,
    ) -> Result<()> {
        let recorded = serde_json::to_string(original)?;
        let txn = self.db().begin().await?;
        insert_run(self, &txn, run, None, tasks, Utc::now()).await?;
        txn.execute_raw(self.stmt(
            "UPDATE runs SET reproduces = ? WHERE id = ?",
            vec![recorded.into(), run.id.clone().into()],
        ))
        .await?;
        txn.commit().await?;
        self.publish(StoreEvent::RunState {
            run_id: run.id.clone(),
            state: RunState::Queued,
        });
        Ok(())
    }

    /// What run `run_id` reproduces; `None` for a run started any other way (or unknown).
    pub async fn reproduces(&self, run_id: &str) -> Result<Option<Reproduces>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT reproduces FROM runs WHERE id = ?",
                vec![run_id.into()],
            ))
            .await?;
        let Some(text) = row
            .map(|r| get::<Option<String>>(&r, "reproduces"))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("runs.reproduces of `{run_id}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{new_run, task};

    on_every_backend! {
        a_reproduction_records_its_original_with_the_run => recorded_with_the_run,
    }

    async fn recorded_with_the_run(store: Store) {
        store
            .create_run(&new_run("plain"), &[task("a")])
            .await
            .expect("a plain run");
        let original = Reproduces {
            run_id: "plain".into(),
            tracking_run_id: "t-1".into(),
        };
        store
            .create_reproduction(&new_run("again"), &[task("a")], &original)
            .await
            .expect("a reproduction");
        assert_eq!(store.reproduces("plain").await.expect("read"), None);
        assert_eq!(store.reproduces("nope").await.expect("read"), None);
        assert_eq!(
            store.reproduces("again").await.expect("read"),
            Some(original)
        );
        let run = store.run("again").await.expect("read").expect("the run");
        assert_eq!(run.state, RunState::Queued);
        assert_eq!(store.task_instances("again").await.expect("tries").len(), 1);
    }
}
