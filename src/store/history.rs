//! A task's outputs over the past runs of its workflow: what reports draw as a line over time
//! (a drift statistic creeping up before it crosses its threshold).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult};

use super::{Result, Store, StoreError, get};

/// The outputs one successful try of a task left, with the run it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct PastOutputs {
    pub run_id: String,
    pub logical_date: DateTime<Utc>,
    pub try_number: u32,
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

fn past_from_row(row: &QueryResult) -> Result<PastOutputs> {
    let text: String = get(row, "outputs")?;
    let outputs = match serde_json::from_str(&text)? {
        serde_json::Value::Object(map) => map,
        other => {
            return Err(StoreError::Corrupt(format!(
                "task outputs are not an object: {other}"
            )));
        }
    };
    Ok(PastOutputs {
        run_id: get(row, "run_id")?,
        logical_date: get(row, "logical_date")?,
        try_number: get::<i32>(row, "try_number")? as u32,
        outputs,
    })
}

impl Store {
    /// The outputs of task `task` in the latest `limit` runs of `workflow` (by logical date,
    /// so backfills fall in place) where it succeeded, oldest first; of a run whose task
    /// succeeded more than once (a clear), its latest successful try.
    pub async fn task_outputs_history(
        &self,
        workflow: &str,
        task: &str,
        limit: usize,
    ) -> Result<Vec<PastOutputs>> {
        // The latest successful try per run first, then the newest runs: a run cleared many
        // times still counts once.
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT ti.run_id, r.logical_date, ti.try_number, ti.outputs \
                 FROM task_instances ti JOIN runs r ON r.id = ti.run_id \
                 WHERE r.workflow_id = ? AND ti.task_id = ? AND ti.state = 'success' \
                   AND ti.outputs IS NOT NULL \
                   AND ti.try_number = (SELECT MAX(t2.try_number) FROM task_instances t2 \
                       WHERE t2.run_id = ti.run_id AND t2.task_id = ti.task_id \
                         AND t2.state = 'success') \
                 ORDER BY r.logical_date DESC, r.id DESC LIMIT ?",
                vec![
                    workflow.into(),
                    task.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        let mut history = rows.iter().map(past_from_row).collect::<Result<Vec<_>>>()?;
        history.reverse();
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use serde_json::json;

    use super::*;
    use crate::lifecycle::TaskState;
    use crate::store::TaskCompletion;
    use crate::store::conformance::{claim_one, new_run, queued, success};

    on_every_backend! {
        a_tasks_outputs_over_past_runs_come_oldest_first_one_per_run => outputs_history,
    }

    /// Creates run `id` of `wf` at `logical_date` with task `a` and ends its first try in
    /// `state` with `outputs`.
    async fn finished_try(
        store: &Store,
        id: &str,
        logical_date: chrono::DateTime<Utc>,
        state: TaskState,
        outputs: serde_json::Value,
    ) {
        let mut run = new_run(id);
        run.logical_date = logical_date;
        queued(store, &run).await;
        let claimed = claim_one(store).await;
        let done = TaskCompletion {
            state,
            exit_code: None,
            outputs: outputs.as_object().cloned(),
            ..success(&claimed)
        };
        let accepted = store
            .complete_with_artifacts(&[], &[done], &[])
            .await
            .expect("complete");
        assert_eq!(accepted, [claimed.id]);
    }

    async fn outputs_history(store: Store) {
        let day = |n: i64| Utc::now() - Duration::days(n);
        // Created out of logical-date order, as a backfill would.
        finished_try(&store, "r2", day(2), TaskState::Success, json!({"s": 2})).await;
        finished_try(&store, "r3", day(1), TaskState::Success, json!({"s": 3})).await;
        finished_try(&store, "r1", day(3), TaskState::Success, json!({"s": 1})).await;
        finished_try(&store, "rf", day(0), TaskState::Failed, json!({"s": 9})).await;
        let all = store
            .task_outputs_history("wf", "a", 10)
            .await
            .expect("history");
        let seen: Vec<(&str, &serde_json::Value)> = all
            .iter()
            .map(|p| (p.run_id.as_str(), &p.outputs["s"]))
            .collect();
        assert_eq!(
            seen,
            [("r1", &json!(1)), ("r2", &json!(2)), ("r3", &json!(3))]
        );
        let newest = store
            .task_outputs_history("wf", "a", 2)
            .await
            .expect("history");
        let ids: Vec<&str> = newest.iter().map(|p| p.run_id.as_str()).collect();
        assert_eq!(ids, ["r2", "r3"]);
        assert!(
            store
                .task_outputs_history("wf", "other", 10)
                .await
                .expect("history")
                .is_empty()
        );
        assert!(
            store
                .task_outputs_history("nope", "a", 10)
                .await
                .expect("history")
                .is_empty()
        );
    }
}
