//! Marking a task success or failed by hand, as Airflow's "Mark success" / "Mark failed": the
//! task gets a new try in the marked state (with a `system` log line saying who marked it), and
//! the tasks downstream of it whose outcome the mark changes get new `pending` tries, so the
//! scheduler decides them again by their trigger rules.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::logs::{NewLogLine, insert_logs};
use super::tasks::{NewTaskInstance, insert_task_instances};
use super::{Result, Store, StoreError, StoreEvent, TaskStateChange, get};
use crate::lifecycle::{Outcome, RunState, TaskState};

/// The state a task is marked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkedState {
    Success,
    Failed,
}

impl MarkedState {
    pub fn task_state(self) -> TaskState {
        match self {
            MarkedState::Success => TaskState::Success,
            MarkedState::Failed => TaskState::Failed,
        }
    }

    /// Whether a downstream task whose latest try ended in `state` is decided again after
    /// this mark. Marking success lets what it held back run (Airflow clears the failed and
    /// upstream-failed tasks downstream); marking failed re-decides everything downstream, so
    /// that the trigger rules (`upstream_failed` under `all_success`) apply to it.
    pub fn redecides(self, state: TaskState) -> bool {
        match self {
            MarkedState::Success => {
                matches!(state, TaskState::Failed | TaskState::UpstreamFailed)
            }
            MarkedState::Failed => state.is_final(),
        }
    }
}

/// One mark to make.
#[derive(Debug, Clone)]
pub struct TaskMark<'a> {
    pub run_id: &'a str,
    pub task_id: &'a str,
    pub state: MarkedState,
    /// Every task downstream of the marked one (those `redecides` picks get a pending try).
    pub downstream: &'a [String],
    /// The run's main tasks (not hooks): they decide an ended run's state when nothing is
    /// decided again.
    pub main_tasks: &'a [String],
    /// Who marked it, for the log line.
    pub by: &'a str,
}

/// What a mark did to the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAfterMark {
    /// The run had not ended; the scheduler goes on with it.
    Unchanged,
    /// The run had ended and tasks are decided again: it is queued again, as after a clear.
    Requeued,
    /// The run had ended and nothing downstream is decided again: its state is restated from
    /// its tasks' outcomes now (a failed run whose only failure is marked success succeeds).
    Restated(RunState),
}

/// What marking a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    Marked {
        /// The marked task's new try.
        try_number: u32,
        /// The downstream tasks that got a pending try.
        redecided: Vec<String>,
        run: RunAfterMark,
    },
    /// Nothing changed: a sentence saying why.
    Refused(String),
}

impl Store {
    /// Marks a task success or failed. Refused, changing nothing, when the task's latest try
    /// has not ended (or never existed), already has the marked state, or a downstream task
    /// to decide again is still running.
    pub async fn mark_task(&self, mark: &TaskMark<'_>) -> Result<MarkOutcome> {
        let run = self
            .run(mark.run_id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(mark.run_id.to_owned()))?;
        let run_id = mark.run_id;
        let txn = self.db().begin().await?;
        let rows = txn
            .query_all_raw(self.stmt(
                "SELECT task_id, try_number, state, priority, pool, queue FROM task_instances \
                 WHERE run_id = ? ORDER BY try_number",
                vec![run_id.into()],
            ))
            .await?;
        // The latest try of each task (rows come in try order, so the last one wins).
        let mut latest: HashMap<String, (TaskState, NewTaskInstance)> = HashMap::new();
        for row in &rows {
            let task_id: String = get(row, "task_id")?;
            let next = NewTaskInstance {
                task_id: task_id.clone(),
                try_number: get::<i32>(row, "try_number")? as u32 + 1,
                priority: get(row, "priority")?,
                pool: get(row, "pool")?,
                queue: get(row, "queue")?,
                not_before: None,
            };
            latest.insert(task_id, (get::<String>(row, "state")?.parse()?, next));
        }
        let marked = mark.state.task_state();
        let Some((current, next)) = latest.get(mark.task_id).cloned() else {
            return Ok(MarkOutcome::Refused(format!(
                "task `{}` has not been started in run `{run_id}`; there is nothing to mark",
                mark.task_id
            )));
        };
        if !current.is_final() {
            return Ok(MarkOutcome::Refused(format!(
                "task `{}` is {current}; wait for it to end, or cancel the run",
                mark.task_id
            )));
        }
        if current == marked {
            return Ok(MarkOutcome::Refused(format!(
                "task `{}` is already {current}",
                mark.task_id
            )));
        }
        let mut redecide = Vec::new();
        let mut busy = Vec::new();
        for task in mark.downstream {
            match latest.get(task) {
                Some((state, next)) if mark.state.redecides(*state) => redecide.push(next.clone()),
                // A pending task is decided when its time comes, with the mark already seen.
                Some((state, _)) if !state.is_final() && *state != TaskState::Pending => {
                    busy.push(task.as_str())
                }
                _ => {}
            }
        }
        if !busy.is_empty() {
            return Ok(MarkOutcome::Refused(format!(
                "downstream task(s) {} have not ended yet; wait for them, or cancel the run",
                busy.join(", ")
            )));
        }
        let now = Utc::now();
        insert_task_instances(
            self,
            &txn,
            run_id,
            std::slice::from_ref(&next),
            marked,
            now,
            None,
        )
        .await?;
        let note = format!("Marked {marked} by {}.", mark.by);
        txn.execute_raw(self.stmt(
            "UPDATE task_instances SET ended_at = ?, error = ? \
             WHERE run_id = ? AND task_id = ? AND try_number = ?",
            vec![
                now.into(),
                (mark.state == MarkedState::Failed)
                    .then(|| note.clone())
                    .into(),
                run_id.into(),
                mark.task_id.into(),
                (next.try_number as i32).into(),
            ],
        ))
        .await?;
        insert_logs(
            self,
            &txn,
            &[NewLogLine {
                run_id: run_id.to_owned(),
                task_id: mark.task_id.to_owned(),
                try_number: next.try_number,
                stream: "system",
                line: note,
                logged_at: now,
            }],
        )
        .await?;
        insert_task_instances(
            self,
            &txn,
            run_id,
            &redecide,
            TaskState::Pending,
            now,
            Some(now),
        )
        .await?;
        let (run_after, run_error) = if !run.state.is_final() {
            (RunAfterMark::Unchanged, None)
        } else if !redecide.is_empty() {
            run.state.check_move(RunState::Queued)?;
            (RunAfterMark::Requeued, None)
        } else {
            // The outcomes the scheduler would end the run with, with the mark applied.
            let mut failed: Vec<&str> = mark
                .main_tasks
                .iter()
                .filter(|t| {
                    let state = if t.as_str() == mark.task_id {
                        Some(marked)
                    } else {
                        latest.get(*t).map(|(s, _)| *s)
                    };
                    matches!(
                        state.and_then(TaskState::outcome),
                        Some(Outcome::Failed | Outcome::UpstreamFailed)
                    )
                })
                .map(String::as_str)
                .collect();
            failed.sort_unstable();
            if failed.is_empty() {
                (RunAfterMark::Restated(RunState::Success), None)
            } else {
                let error = format!("tasks did not succeed: {}", failed.join(", "));
                (RunAfterMark::Restated(RunState::Failed), Some(error))
            }
        };
        let moved = match &run_after {
            // Touching the row guards on the run still going (and, on PostgreSQL, holds it
            // until the commit).
            RunAfterMark::Unchanged => {
                txn.execute_raw(self.stmt(
                    "UPDATE runs SET state = ? WHERE id = ? AND state = ?",
                    vec![
                        run.state.as_str().into(),
                        run_id.into(),
                        run.state.as_str().into(),
                    ],
                ))
                .await?
                .rows_affected()
                    == 1
            }
            RunAfterMark::Requeued => {
                txn.execute_raw(self.stmt(
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
                    == 1
            }
            RunAfterMark::Restated(to) => {
                txn.execute_raw(self.stmt(
                    "UPDATE runs SET state = ?, error = ? WHERE id = ? AND state = ?",
                    vec![
                        to.as_str().into(),
                        run_error.into(),
                        run_id.into(),
                        run.state.as_str().into(),
                    ],
                ))
                .await?
                .rows_affected()
                    == 1
            }
        };
        // A run that moved meanwhile (ended, or was cleared) leaves the mark unmade: dropping
        // the transaction rolls it back.
        if !moved {
            return Ok(MarkOutcome::Refused(format!(
                "run `{run_id}` changed while the task was being marked; look at it again and retry"
            )));
        }
        txn.commit().await?;
        let mut changes = vec![TaskStateChange {
            task_id: mark.task_id.to_owned(),
            try_number: next.try_number,
            state: marked,
        }];
        changes.extend(redecide.iter().map(|t| TaskStateChange {
            task_id: t.task_id.clone(),
            try_number: t.try_number,
            state: TaskState::Pending,
        }));
        match run_after {
            RunAfterMark::Requeued => self.publish(StoreEvent::RunState {
                run_id: run_id.to_owned(),
                state: RunState::Queued,
            }),
            RunAfterMark::Restated(state) => self.publish(StoreEvent::RunState {
                run_id: run_id.to_owned(),
                state,
            }),
            RunAfterMark::Unchanged => {}
        }
        self.publish(StoreEvent::TaskStates {
            run_id: run_id.to_owned(),
            changes: Arc::from(changes),
        });
        Ok(MarkOutcome::Marked {
            try_number: next.try_number,
            redecided: redecide.into_iter().map(|t| t.task_id).collect(),
            run: run_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{new_run, task};

    on_every_backend! {
        marking_success_redecides_what_the_failure_held_back => success_redecides_downstream,
        marking_an_ended_run_without_downstream_restates_it => restates_an_ended_run,
    }

    /// Sets the state of a run and of the first tries of its tasks, as a run that ended so.
    async fn ended(store: &Store, run: &str, run_state: RunState, tasks: &[(&str, TaskState)]) {
        let names: Vec<&str> = tasks.iter().map(|(t, _)| *t).collect();
        let new_tasks: Vec<NewTaskInstance> = names.iter().map(|t| task(t)).collect();
        store
            .create_run(&new_run(run), &new_tasks)
            .await
            .expect("run");
        for (t, state) in tasks {
            store
                .db()
                .execute_raw(store.stmt(
                    "UPDATE task_instances SET state = ? WHERE run_id = ? AND task_id = ?",
                    vec![state.as_str().into(), run.into(), (*t).into()],
                ))
                .await
                .expect("task state");
        }
        store
            .db()
            .execute_raw(store.stmt(
                "UPDATE runs SET state = ? WHERE id = ?",
                vec![run_state.as_str().into(), run.into()],
            ))
            .await
            .expect("run state");
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    async fn latest(store: &Store, run: &str, task: &str) -> (u32, TaskState) {
        store
            .task_instances(run)
            .await
            .expect("tries")
            .into_iter()
            .filter(|t| t.task_id == task)
            .max_by_key(|t| t.try_number)
            .map(|t| (t.try_number, t.state))
            .expect("a try")
    }

    async fn success_redecides_downstream(store: Store) {
        use TaskState::*;
        ended(
            &store,
            "r1",
            RunState::Failed,
            &[("a", Success), ("b", Failed), ("c", UpstreamFailed)],
        )
        .await;
        let mut events = store.subscribe();
        let main = names(&["a", "b", "c"]);
        let downstream = names(&["c"]);
        let mark = |task_id, state, downstream| TaskMark {
            run_id: "r1",
            task_id,
            state,
            downstream,
            main_tasks: &main,
            by: "ann in the UI",
        };
        let outcome = store
            .mark_task(&mark("b", MarkedState::Success, &downstream))
            .await
            .expect("mark");
        assert_eq!(
            outcome,
            MarkOutcome::Marked {
                try_number: 2,
                redecided: names(&["c"]),
                run: RunAfterMark::Requeued,
            }
        );
        assert_eq!(latest(&store, "r1", "b").await, (2, Success));
        assert_eq!(latest(&store, "r1", "c").await, (2, Pending));
        let run = store.run("r1").await.expect("read").expect("run");
        assert_eq!((run.state, run.ended_at), (RunState::Queued, None));
        let logs = store.logs("r1", Some("b")).await.expect("logs");
        assert_eq!(logs.len(), 1);
        assert_eq!(
            (
                logs[0].try_number,
                logs[0].stream.as_str(),
                logs[0].line.as_str()
            ),
            (2, "system", "Marked success by ann in the UI.")
        );
        // The scheduler hears the run queued and the new tries in one batch.
        let mut heard = Vec::new();
        while let Ok(event) = events.try_recv() {
            heard.push(event);
        }
        assert!(
            heard.iter().any(|e| matches!(
                e,
                StoreEvent::RunState {
                    state: RunState::Queued,
                    ..
                }
            )),
            "{heard:?}"
        );
        assert!(
            heard
                .iter()
                .any(|e| matches!(e, StoreEvent::TaskStates { changes, .. } if changes.len() == 2)),
            "{heard:?}"
        );

        // Refusals change nothing: the same state again, a task still waiting, an unknown one.
        for (task_id, state) in [
            ("b", MarkedState::Success),
            ("c", MarkedState::Failed),
            ("zz", MarkedState::Failed),
        ] {
            let refused = store
                .mark_task(&mark(task_id, state, &[]))
                .await
                .expect("mark");
            assert!(
                matches!(refused, MarkOutcome::Refused(_)),
                "{task_id}: {refused:?}"
            );
        }
        // A downstream task still pending is left to the scheduler; the run goes on.
        let downstream = names(&["b", "c"]);
        let outcome = store
            .mark_task(&mark("a", MarkedState::Failed, &downstream))
            .await
            .expect("mark");
        assert_eq!(
            outcome,
            MarkOutcome::Marked {
                try_number: 2,
                redecided: names(&["b"]),
                run: RunAfterMark::Unchanged,
            }
        );
        assert_eq!(latest(&store, "r1", "b").await, (3, Pending));
        assert_eq!(latest(&store, "r1", "c").await, (2, Pending));
        let a = store
            .task_instances("r1")
            .await
            .expect("tries")
            .into_iter()
            .find(|t| t.task_id == "a" && t.try_number == 2)
            .expect("a's marked try");
        assert_eq!(a.error.as_deref(), Some("Marked failed by ann in the UI."));
        assert!(a.ended_at.is_some() && a.started_at.is_none(), "{a:?}");
    }

    async fn restates_an_ended_run(store: Store) {
        use TaskState::*;
        ended(
            &store,
            "r2",
            RunState::Failed,
            &[("a", Success), ("b", Failed)],
        )
        .await;
        let main = names(&["a", "b"]);
        let mark = |task_id, state| TaskMark {
            run_id: "r2",
            task_id,
            state,
            downstream: &[],
            main_tasks: &main,
            by: "the API",
        };
        let outcome = store
            .mark_task(&mark("b", MarkedState::Success))
            .await
            .expect("mark");
        assert!(
            matches!(
                outcome,
                MarkOutcome::Marked {
                    run: RunAfterMark::Restated(RunState::Success),
                    ..
                }
            ),
            "{outcome:?}"
        );
        let run = store.run("r2").await.expect("read").expect("run");
        assert_eq!((run.state, run.error), (RunState::Success, None));
        store
            .mark_task(&mark("a", MarkedState::Failed))
            .await
            .expect("mark");
        let run = store.run("r2").await.expect("read").expect("run");
        assert_eq!(run.state, RunState::Failed);
        assert_eq!(run.error.as_deref(), Some("tasks did not succeed: a"));
    }
}
