//! The queries behind the API and the operations endpoints: paged run listings, pausing
//! workflows, clearing tasks so they run again, reading logs incrementally, counts by state
//! for metrics, and a liveness ping.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait, Value};

use super::marks;
use super::runs::{RUN_COLUMNS, run_from_row};
use super::tasks::{NewTaskInstance, insert_task_instances};
use super::{LogRecord, Result, RunRecord, Store, StoreError, StoreEvent, TaskStateChange, get};
use crate::lifecycle::{RunState, TaskState};

/// Which runs a listing returns. Every field left `None` matches every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub state: Option<RunState>,
    /// Runs whose `triggered_by` starts with this text (a backfill's runs, for example).
    pub triggered_by_prefix: Option<String>,
    /// Runs started by this kind of trigger (`schedule`, `manual`, `github`, …).
    pub trigger: Option<String>,
    /// Runs created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Runs created strictly before this time.
    pub created_before: Option<DateTime<Utc>>,
}

/// A page of runs, newest first, and the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub next_cursor: Option<String>,
}

/// A cursor string that this store did not hand out (or that was damaged on the way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid page cursor; pass the `next_cursor` of the previous page")]
pub struct BadCursor(pub String);

/// A position in the (created_at, id) descending order of runs. It is handed out as hex so
/// callers treat it as opaque and cannot build one by hand that skips the validation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    created_at: DateTime<Utc>,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        hex::encode(format!("{}|{}", self.created_at.to_rfc3339(), self.id))
    }

    fn decode(text: &str) -> Result<Cursor, BadCursor> {
        let bad = || BadCursor(text.chars().take(80).collect());
        let bytes = hex::decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let (at, id) = raw.split_once('|').ok_or_else(bad)?;
        let created_at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Cursor {
            created_at: created_at.with_timezone(&Utc),
            id: id.to_owned(),
        })
    }
}

/// What clearing tasks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearOutcome {
    /// New `pending` tries were inserted; `run_requeued` says whether the run had ended and
    /// went back to `queued`.
    Cleared {
        tries: Vec<TaskStateChange>,
        run_requeued: bool,
    },
    /// Nothing changed: a sentence saying why (a task is still running, or the run moved
    /// while we looked at it).
    Refused(String),
}

/// Escapes `%`, `_` and the escape character itself for a `LIKE … ESCAPE '\'` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// One page of runs matching `filter`, newest first (by creation time, then id). `cursor`
    /// is the `next_cursor` of the previous page.
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<std::result::Result<RunPage, BadCursor>> {
        let cursor = match cursor.map(Cursor::decode).transpose() {
            Ok(cursor) => cursor,
            Err(bad) => return Ok(Err(bad)),
        };
        let mut clauses: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(workflow) = &filter.workflow {
            clauses.push("workflow_id = ?");
            values.push(workflow.as_str().into());
        }
        if let Some(state) = filter.state {
            clauses.push("state = ?");
            values.push(state.as_str().into());
        }
        if let Some(prefix) = &filter.triggered_by_prefix {
            clauses.push("triggered_by LIKE ? ESCAPE '\\'");
            values.push(like_prefix(prefix).into());
        }
        if let Some(trigger) = &filter.trigger {
            clauses.push("trigger = ?");
            values.push(trigger.as_str().into());
        }
        if let Some(from) = filter.created_from {
            clauses.push("created_at >= ?");
            values.push(from.into());
        }
        if let Some(before) = filter.created_before {
            clauses.push("created_at < ?");
            values.push(before.into());
        }
        if let Some(c) = &cursor {
            // The same as `created_at < ? OR (created_at = ? AND id < ?)`, written with a plain
            // range first so the planner walks the (workflow, created_at) index from the cursor
            // instead of scanning, even once the database has statistics.
            clauses.push("created_at <= ? AND (created_at < ? OR id < ?)");
            values.extend([
                Value::from(c.created_at),
                c.created_at.into(),
                c.id.as_str().into(),
            ]);
        }
        let where_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        // One row more than asked tells whether another page follows without a COUNT.
        let fetch = limit.saturating_add(1);
        values.push(i64::try_from(fetch).unwrap_or(i64::MAX).into());
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs {where_sql} \
                     ORDER BY created_at DESC, id DESC LIMIT ?"
                ),
                values,
            ))
            .await?;
        let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(|last| {
                Cursor {
                    created_at: last.created_at,
                    id: last.id.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok(Ok(RunPage { runs, next_cursor }))
    }

    /// Every run started by `triggered_by` values beginning with `prefix`, newest first.
    pub async fn runs_by_triggered_by(&self, prefix: &str) -> Result<Vec<RunRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE triggered_by LIKE ? ESCAPE '\\' \
                     ORDER BY created_at DESC, id DESC"
                ),
                vec![like_prefix(prefix).into()],
            ))
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Pauses or unpauses a workflow, creating its row if the workflow never ran.
    pub async fn set_paused(&self, workflow_id: &str, paused: bool) -> Result<()> {
        let now = Utc::now();
        self.db()
            .execute_raw(self.stmt(
                "INSERT INTO workflows (id, paused, created_at, updated_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET paused = excluded.paused, \
                 updated_at = excluded.updated_at",
                vec![workflow_id.into(), paused.into(), now.into(), now.into()],
            ))
            .await?;
        self.publish(StoreEvent::Paused {
            workflow_id: workflow_id.to_owned(),
            paused,
        });
        Ok(())
    }

    /// The ids of the paused workflows.
    pub async fn paused(&self) -> Result<HashSet<String>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT id FROM workflows WHERE paused = ?",
                vec![true.into()],
            ))
            .await?;
        rows.iter().map(|r| get(r, "id")).collect()
    }

    /// Makes tasks of a run run again: each gets a new `pending` try (its latest try number
    /// plus one), marked as cleared so that its retries count from it. If the run had ended
    /// it goes back to `queued`: the scheduler starts it again (keeping its first start time,
    /// and recording this one as `rerun_started_at`) and ends it once every task has ended
    /// again. Refused, changing nothing, when the latest try of one of the tasks has not
    /// ended yet.
    pub async fn clear_tasks(&self, run_id: &str, task_ids: &[String]) -> Result<ClearOutcome> {
        let run = self
            .run(run_id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_owned()))?;
        if task_ids.is_empty() {
            return Ok(ClearOutcome::Cleared {
                tries: Vec::new(),
                run_requeued: false,
            });
        }
        let txn = self.db().begin().await?;
        let mut values: Vec<Value> = vec![run_id.into()];
        values.extend(task_ids.iter().map(|t| Value::from(t.as_str())));
        let rows = txn
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT task_id, try_number, state, priority, pool, queue FROM task_instances \
                     WHERE run_id = ? AND task_id IN ({}) ORDER BY try_number",
                    marks(task_ids.len())
                ),
                values,
            ))
            .await?;
        // The latest try of each task (rows come in try order, so the last one wins).
        let mut latest: HashMap<String, (TaskState, NewTaskInstance)> = HashMap::new();
        for row in &rows {
            let task_id: String = get(row, "task_id")?;
            let state: TaskState = get::<String>(row, "state")?.parse()?;
            let next = NewTaskInstance {
                task_id: task_id.clone(),
                try_number: get::<i32>(row, "try_number")? as u32 + 1,
                priority: get(row, "priority")?,
                pool: get(row, "pool")?,
                queue: get(row, "queue")?,
                not_before: None,
            };
            latest.insert(task_id, (state, next));
        }
        let busy: Vec<&str> = task_ids
            .iter()
            .filter(|t| latest.get(*t).is_some_and(|(state, _)| !state.is_final()))
            .map(String::as_str)
            .collect();
        if !busy.is_empty() {
            return Ok(ClearOutcome::Refused(format!(
                "task(s) {} of run `{run_id}` have not ended yet; wait for them or cancel the run",
                busy.join(", ")
            )));
        }
        // Ids without a try in this run (hooks that never started) have nothing to clear.
        let new_tries: Vec<NewTaskInstance> = task_ids
            .iter()
            .filter_map(|t| latest.remove(t).map(|(_, next)| next))
            .collect();
        let now = Utc::now();
        insert_task_instances(
            self,
            &txn,
            run_id,
            &new_tries,
            TaskState::Pending,
            now,
            Some(now),
        )
        .await?;
        let run_requeued = run.state.is_final();
        if run_requeued {
            run.state.check_move(RunState::Queued)?;
            let moved = txn
                .execute_raw(self.stmt(
                    "UPDATE runs SET state = ?, ended_at = NULL, error = NULL \
                     WHERE id = ? AND state = ?",
                    vec![
                        RunState::Queued.as_str().into(),
                        run_id.into(),
                        run.state.as_str().into(),
                    ],
                ))
                .await?
                .rows_affected()
                == 1;
            if !moved {
                // Dropping the transaction rolls the new tries back.
                return Ok(ClearOutcome::Refused(format!(
                    "run `{run_id}` changed state while its tasks were being cleared; try again"
                )));
            }
        }
        txn.commit().await?;
        let tries: Vec<TaskStateChange> = new_tries
            .iter()
            .map(|t| TaskStateChange {
                task_id: t.task_id.clone(),
                try_number: t.try_number,
                state: TaskState::Pending,
            })
            .collect();
        if run_requeued {
            self.publish(StoreEvent::RunState {
                run_id: run_id.to_owned(),
                state: RunState::Queued,
            });
        }
        self.publish(StoreEvent::TaskStates {
            run_id: run_id.to_owned(),
            changes: Arc::from(tries.clone()),
        });
        Ok(ClearOutcome::Cleared {
            tries,
            run_requeued,
        })
    }

    /// The log lines of one task of a run written after line `after_id` (0 for all), oldest
    /// first, at most `limit` of them.
    pub async fn logs_after(
        &self,
        run_id: &str,
        task_id: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<LogRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT id, task_id, try_number, stream, line, logged_at FROM task_logs \
                 WHERE run_id = ? AND task_id = ? AND id > ? ORDER BY id LIMIT ?",
                vec![
                    run_id.into(),
                    task_id.into(),
                    after_id.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        rows.iter().map(super::logs::log_from_row).collect()
    }

    /// How many runs are in each state: every state in declaration order, zero included.
    pub async fn run_counts(&self) -> Result<Vec<(RunState, u64)>> {
        let found = self.counts_by_state("runs").await?;
        RunState::ALL
            .iter()
            .map(|s| Ok((*s, found.get(s.as_str()).copied().unwrap_or(0))))
            .collect()
    }

    /// How many task instances (tries) are in each state: every state in declaration order,
    /// zero included.
    pub async fn task_counts(&self) -> Result<Vec<(TaskState, u64)>> {
        let found = self.counts_by_state("task_instances").await?;
        TaskState::ALL
            .iter()
            .map(|s| Ok((*s, found.get(s.as_str()).copied().unwrap_or(0))))
            .collect()
    }

    async fn counts_by_state(&self, table: &'static str) -> Result<HashMap<String, u64>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!("SELECT state, COUNT(*) AS n FROM {table} GROUP BY state"),
                Vec::new(),
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((get(r, "state")?, get::<i64>(r, "n")?.max(0) as u64)))
            .collect()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db()
            .query_one_raw(self.stmt("SELECT 1 AS one", Vec::new()))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: Utc::now(),
            id: "0190-abc".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        for garbage in [
            "",
            "zz",
            "6869",
            &hex::encode("nope|x"),
            &hex::encode("2024-01-01T00:00:00Z|"),
        ] {
            assert!(Cursor::decode(garbage).is_err(), "{garbage:?} was accepted");
        }
    }

    /// Every filter narrows the listing on each backend, alone and with a cursor.
    #[tokio::test]
    async fn runs_filter_by_trigger_and_creation_time() {
        use crate::store::conformance::{backends, new_run, task};
        for backend in backends().await {
            eprintln!(
                "runs_filter_by_trigger_and_creation_time: on {}",
                backend.name
            );
            let store = &backend.store;
            for (id, workflow, trigger) in [
                ("r1", "wf", "manual"),
                ("r2", "wf", "schedule"),
                ("r3", "other", "schedule"),
                ("r4", "wf", "schedule"),
            ] {
                let mut run = new_run(id);
                run.workflow_id = workflow.into();
                run.trigger = trigger.into();
                store.create_run(&run, &[task("a")]).await.expect("create");
            }
            let ids = |page: &RunPage| page.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
            let list = |filter: RunFilter, limit: usize, cursor: Option<String>| async move {
                store
                    .list_runs(&filter, limit, cursor.as_deref())
                    .await
                    .expect("query")
                    .expect("cursor")
            };
            let scheduled = RunFilter {
                trigger: Some("schedule".into()),
                ..RunFilter::default()
            };
            assert_eq!(
                ids(&list(scheduled.clone(), 10, None).await),
                ["r4", "r3", "r2"]
            );
            let first = list(scheduled.clone(), 2, None).await;
            assert_eq!(ids(&first), ["r4", "r3"]);
            let rest = list(scheduled.clone(), 2, first.next_cursor).await;
            assert_eq!(ids(&rest), ["r2"]);
            assert_eq!(rest.next_cursor, None);
            let ours = RunFilter {
                workflow: Some("wf".into()),
                ..scheduled
            };
            assert_eq!(ids(&list(ours, 10, None).await), ["r4", "r2"]);

            let all = list(RunFilter::default(), 10, None).await;
            let created = |id: &str| {
                all.runs
                    .iter()
                    .find(|r| r.id == id)
                    .map(|r| r.created_at)
                    .expect("listed")
            };
            let from_r2 = RunFilter {
                created_from: Some(created("r2")),
                ..RunFilter::default()
            };
            // Each run is created in its own transaction, so their times differ.
            assert_eq!(ids(&list(from_r2, 10, None).await), ["r4", "r3", "r2"]);
            let before_r4 = RunFilter {
                created_before: Some(created("r4")),
                ..RunFilter::default()
            };
            assert_eq!(ids(&list(before_r4, 10, None).await), ["r3", "r2", "r1"]);
            let nothing = RunFilter {
                created_from: Some(created("r4") + chrono::TimeDelta::seconds(1)),
                ..RunFilter::default()
            };
            assert!(list(nothing, 10, None).await.runs.is_empty());
            backend.finish().await;
        }
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_prefix("backfill:a_b%"), "backfill:a\\_b\\%%");
    }
}
