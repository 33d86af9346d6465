//! Reads that the web pages need beyond the API's: the latest state of every task of a page
//! of runs, in one query, for the workflow page's grid.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Value};

use super::logs::log_from_row;
use super::{CHUNK, LogRecord, Result, Store, get, marks};
use crate::lifecycle::TaskState;

impl Store {
    /// Up to `limit` log lines of a run (every task) written after line `after`, in order:
    /// what a live run page has not shown yet.
    pub async fn run_logs_after(
        &self,
        run_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT id, task_id, try_number, stream, line, logged_at FROM task_logs \
                 WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
                vec![
                    run_id.into(),
                    after.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        rows.iter().map(log_from_row).collect()
    }

    /// For each run, the state of the latest try of each of its tasks.
    pub async fn latest_task_states(
        &self,
        run_ids: &[String],
    ) -> Result<HashMap<String, HashMap<String, TaskState>>> {
        let mut latest: HashMap<String, HashMap<String, (u32, TaskState)>> = HashMap::new();
        for chunk in run_ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT run_id, task_id, try_number, state FROM task_instances \
                 WHERE run_id IN ({})",
                marks(chunk.len())
            );
            let values: Vec<Value> = chunk.iter().map(|id| id.as_str().into()).collect();
            for row in self.db().query_all_raw(self.stmt(&sql, values)).await? {
                let run_id: String = get(&row, "run_id")?;
                let task_id: String = get(&row, "task_id")?;
                let try_number = get::<i32>(&row, "try_number")? as u32;
                let state: TaskState = get::<String>(&row, "state")?.parse()?;
                let slot = latest
                    .entry(run_id)
                    .or_default()
                    .entry(task_id)
                    .or_insert((0, state));
                if try_number >= slot.0 {
                    *slot = (try_number, state);
                }
            }
        }
        Ok(latest
            .into_iter()
            .map(|(run, tasks)| (run, tasks.into_iter().map(|(t, (_, s))| (t, s)).collect()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::DecisionBatch;
    use crate::store::conformance::{new_run, task};

    #[tokio::test]
    async fn latest_task_states_of_several_runs() {
        for backend in crate::store::conformance::backends().await {
            eprintln!("latest_task_states_of_several_runs: on {}", backend.name);
            latest_states(backend.store.clone()).await;
            backend.finish().await;
        }
    }

    async fn latest_states(store: Store) {
        let now = Utc::now();
        for id in ["r1", "r2"] {
            store
                .create_run(&new_run(id), &[task("a"), task("b")])
                .await
                .expect("run");
        }
        let tis = store.task_instances("r1").await.expect("tis");
        let mut batch = DecisionBatch::default();
        batch.push(tis[0].id, "a", 1, TaskState::Pending, TaskState::Skipped);
        store.apply_decisions("r1", &batch).await.expect("decide");
        let states = store
            .latest_task_states(&["r1".into(), "r2".into(), "none".into()])
            .await
            .expect("states");
        assert_eq!(states.len(), 2);
        assert_eq!(states["r1"]["a"], TaskState::Skipped);
        assert_eq!(states["r1"]["b"], TaskState::Pending);
        assert_eq!(states["r2"]["a"], TaskState::Pending);

        let line = |task: &str, n: usize| crate::store::NewLogLine {
            run_id: "r1".into(),
            task_id: task.into(),
            try_number: 1,
            stream: "stdout",
            line: format!("line {n}"),
            logged_at: now,
        };
        store
            .append_logs(&[line("a", 0), line("b", 1), line("a", 2)])
            .await
            .expect("logs");
        let all = store.run_logs_after("r1", 0, 10).await.expect("logs");
        assert_eq!(
            all.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line 0", "line 1", "line 2"]
        );
        let rest = store
            .run_logs_after("r1", all[0].id, 1)
            .await
            .expect("logs");
        assert_eq!((rest.len(), rest[0].line.as_str()), (1, "line 1"));
        assert!(
            store
                .run_logs_after("r2", 0, 10)
                .await
                .expect("logs")
                .is_empty()
        );
    }
}
