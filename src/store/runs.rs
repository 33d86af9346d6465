//! Runs and the workflow versions they pin.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};

use super::tasks::{NewTaskInstance, insert_task_instances};
use super::{Result, Store, StoreError, StoreEvent, TaskStateChange, get};
use crate::lifecycle::{RunState, TaskState};
use crate::secrets::Secrets;
use crate::template::{RenderContext, RunInfo};

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub workflow_id: String,
    /// The workflow version (content hash) the run pins.
    pub version_hash: String,
    /// `manual`, `schedule`, `api`, `github`, `workflow`, `backfill`.
    pub trigger: String,
    pub triggered_by: Option<String>,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
}

/// Where a run came from, beyond its `trigger` name: recorded for runs started by a GitHub
/// delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOrigin {
    /// The trigger's facts (`event`, `delivery`, `repository`, `sha`, `sender`, …) as a JSON
    /// object, shown by the API and read by the commit status service.
    pub details: serde_json::Value,
    /// The payload, which templates read as `event`.
    pub event: serde_json::Value,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub workflow_id: String,
    pub version_hash: String,
    pub state: RunState,
    pub trigger: String,
    pub triggered_by: Option<String>,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the run first started; clearing its tasks later never changes it.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run last started again after tasks of it had been cleared; `None` for a run
    /// that ran once.
    pub rerun_started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The trigger's facts (see `RunOrigin::details`), when it recorded any.
    pub trigger_details: Option<serde_json::Value>,
    /// The trigger's payload as templates see it under `event`; null when there is none.
    /// Only `Store::run` reads it: listings leave it null, to stay small.
    pub event: serde_json::Value,
}

pub(super) const RUN_COLUMNS: &str = "id, workflow_id, version_hash, state, trigger, triggered_by, params, \
    logical_date, data_interval_start, data_interval_end, error, created_at, started_at, ended_at, \
    trigger_details, rerun_started_at";

/// The `SET` list that moves a run to `running` (values: the state, then the time twice). A
/// run that has started before (tasks of it were cleared after it ended) keeps its first
/// start and records this one as its re-run start. Both right-hand sides read the row as it
/// was before the update, on SQLite and PostgreSQL alike.
pub(super) const START_RUN_SET: &str = "state = ?, started_at = COALESCE(started_at, ?), \
    rerun_started_at = CASE WHEN started_at IS NULL THEN rerun_started_at ELSE ? END";

pub(super) fn run_from_row(row: &QueryResult) -> Result<RunRecord> {
    let params: String = get(row, "params")?;
    let params = match serde_json::from_str(&params)? {
        serde_json::Value::Object(map) => map,
        other => {
            return Err(StoreError::Corrupt(format!(
                "run params are not an object: {other}"
            )));
        }
    };
    Ok(RunRecord {
        id: get(row, "id")?,
        workflow_id: get(row, "workflow_id")?,
        version_hash: get(row, "version_hash")?,
        state: get::<String>(row, "state")?.parse()?,
        trigger: get(row, "trigger")?,
        triggered_by: get(row, "triggered_by")?,
        params,
        logical_date: get(row, "logical_date")?,
        data_interval_start: get(row, "data_interval_start")?,
        data_interval_end: get(row, "data_interval_end")?,
        error: get(row, "error")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        ended_at: get(row, "ended_at")?,
        trigger_details: json_column(row, "trigger_details")?,
        rerun_started_at: get(row, "rerun_started_at")?,
        event: serde_json::Value::Null,
    })
}

/// A nullable text column holding JSON.
fn json_column(row: &QueryResult, column: &str) -> Result<Option<serde_json::Value>> {
    get::<Option<String>>(row, column)?
        .map(|text| serde_json::from_str(&text).map_err(StoreError::from))
        .transpose()
}

/// Inserts a run in `queued` with one `pending` task instance (try 1) per task, inside
/// `txn`; the caller commits and then publishes the run's `RunState` event.
pub(super) async fn insert_run<C: ConnectionTrait>(
    store: &Store,
    txn: &C,
    run: &NewRun,
    origin: Option<&RunOrigin>,
    tasks: &[NewTaskInstance],
    now: DateTime<Utc>,
) -> Result<()> {
    let params = serde_json::to_string(&run.params)?;
    let details = origin.map(|o| o.details.to_string());
    let event = origin
        .filter(|o| !o.event.is_null())
        .map(|o| o.event.to_string());
    // Only one scheduled run may exist per logical date, whichever scheduler creates it first;
    // the unique key on (workflow, scheduled_for) decides.
    let scheduled_for = (run.trigger == "schedule").then_some(run.logical_date);
    let inserted = txn
        .execute_raw(store.stmt(
            &format!(
                "INSERT INTO runs ({RUN_COLUMNS}, event, scheduled_for) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            vec![
                run.id.as_str().into(),
                run.workflow_id.as_str().into(),
                run.version_hash.as_str().into(),
                RunState::Queued.as_str().into(),
                run.trigger.as_str().into(),
                run.triggered_by.clone().into(),
                params.into(),
                run.logical_date.into(),
                run.data_interval_start.into(),
                run.data_interval_end.into(),
                Value::String(None),
                now.into(),
                Value::ChronoDateTimeUtc(None),
                Value::ChronoDateTimeUtc(None),
                details.into(),
                Value::ChronoDateTimeUtc(None),
                event.into(),
                scheduled_for.into(),
            ],
        ))
        .await;
    match inserted {
        Ok(_) => {}
        Err(e)
            if scheduled_for.is_some()
                && matches!(
                    e.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) =>
        {
            return Err(StoreError::AlreadyScheduled {
                workflow_id: run.workflow_id.clone(),
                logical_date: run.logical_date,
            });
        }
        Err(e) => return Err(e.into()),
    }
    insert_task_instances(store, txn, &run.id, tasks, TaskState::Pending, now, None).await
}

impl Store {
    /// Records a workflow version (idempotent: the hash is the key) and makes sure the
    /// workflow row exists.
    pub async fn save_workflow_version(
        &self,
        workflow_id: &str,
        hash: &str,
        path: &str,
        source: &str,
    ) -> Result<()> {
        let now = Utc::now();
        let txn = self.db().begin().await?;
        txn.execute_raw(self.stmt(
            "INSERT INTO workflows (id, paused, created_at, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
            vec![workflow_id.into(), false.into(), now.into(), now.into()],
        ))
        .await?;
        txn.execute_raw(self.stmt(
            "INSERT INTO workflow_versions (hash, workflow_id, path, source, created_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
            vec![
                hash.into(),
                workflow_id.into(),
                path.into(),
                source.into(),
                now.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The source text and path of a stored workflow version.
    pub async fn workflow_version(&self, hash: &str) -> Result<Option<(String, String)>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT path, source FROM workflow_versions WHERE hash = ?",
                vec![hash.into()],
            ))
            .await?;
        row.map(|r| Ok((get(&r, "path")?, get(&r, "source")?)))
            .transpose()
    }

    /// Creates a run in `queued` with one `pending` task instance (try 1) per task, in one
    /// transaction.
    pub async fn create_run(&self, run: &NewRun, tasks: &[NewTaskInstance]) -> Result<()> {
        let txn = self.db().begin().await?;
        insert_run(self, &txn, run, None, tasks, Utc::now()).await?;
        txn.commit().await?;
        self.publish(StoreEvent::RunState {
            run_id: run.id.clone(),
            state: RunState::Queued,
        });
        Ok(())
    }

    /// A run with everything it recorded, its trigger's payload included.
    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                &format!("SELECT {RUN_COLUMNS}, event FROM runs WHERE id = ?"),
                vec![id.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut run = run_from_row(&row)?;
        run.event = json_column(&row, "event")?.unwrap_or(serde_json::Value::Null);
        Ok(Some(run))
    }

    /// Moves a run from `from` to `to`, if it is still in `from`. Returns whether it moved.
    pub async fn set_run_state(
        &self,
        id: &str,
        from: RunState,
        to: RunState,
        error: Option<&str>,
    ) -> Result<bool> {
        from.check_move(to)?;
        let now = Utc::now();
        let (sql, values): (String, Vec<Value>) = if to == RunState::Running {
            (
                format!("UPDATE runs SET {START_RUN_SET} WHERE id = ? AND state = ?"),
                vec![
                    to.as_str().into(),
                    now.into(),
                    now.into(),
                    id.into(),
                    from.as_str().into(),
                ],
            )
        } else {
            (
                "UPDATE runs SET state = ?, ended_at = ?, error = ?, \
                 started_at = COALESCE(started_at, ?) WHERE id = ? AND state = ?"
                    .to_owned(),
                vec![
                    to.as_str().into(),
                    now.into(),
                    error.map(str::to_owned).into(),
                    now.into(),
                    id.into(),
                    from.as_str().into(),
                ],
            )
        };
        let moved = self
            .db()
            .execute_raw(self.stmt(&sql, values))
            .await?
            .rows_affected()
            == 1;
        if moved {
            self.publish(StoreEvent::RunState {
                run_id: id.to_owned(),
                state: to,
            });
        }
        Ok(moved)
    }

    /// Ends a running run in `to` (the scheduler's verdict), unless one of its task instances
    /// has not ended: a try created after the scheduler last looked (a task cleared meanwhile)
    /// keeps the run going, so a run never ends while any of its tasks is unfinished. Returns
    /// whether it ended.
    pub async fn end_run(&self, id: &str, to: RunState, error: Option<&str>) -> Result<bool> {
        RunState::Running.check_move(to)?;
        let unfinished: Vec<TaskState> = TaskState::ALL
            .iter()
            .copied()
            .filter(|s| !s.is_final())
            .collect();
        let now = Utc::now();
        let mut values: Vec<Value> = vec![
            to.as_str().into(),
            now.into(),
            error.map(str::to_owned).into(),
            id.into(),
            RunState::Running.as_str().into(),
        ];
        values.extend(unfinished.iter().map(|s| Value::from(s.as_str())));
        let moved = self
            .db()
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE runs SET state = ?, ended_at = ?, error = ? \
                     WHERE id = ? AND state = ? AND NOT EXISTS (SELECT 1 FROM task_instances \
                     WHERE task_instances.run_id = runs.id AND task_instances.state IN ({}))",
                    super::marks(unfinished.len())
                ),
                values,
            ))
            .await?
            .rows_affected()
            == 1;
        if moved {
            self.publish(StoreEvent::RunState {
                run_id: id.to_owned(),
                state: to,
            });
        }
        Ok(moved)
    }

    /// Cancels a run: the run becomes `cancelled` and every task instance that has not
    /// started becomes `cancelled`; running ones are left to their workers, who are told to
    /// stop them. Returns false when the run had already ended.
    pub async fn cancel_run(&self, id: &str, reason: &str) -> Result<bool> {
        let run = self
            .run(id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))?;
        if run.state.is_final() {
            return Ok(false);
        }
        let now = Utc::now();
        let txn = self.db().begin().await?;
        let moved = txn
            .execute_raw(self.stmt(
                "UPDATE runs SET state = ?, ended_at = ?, error = ?, \
                 started_at = COALESCE(started_at, ?) WHERE id = ? AND state = ?",
                vec![
                    RunState::Cancelled.as_str().into(),
                    now.into(),
                    reason.into(),
                    now.into(),
                    id.into(),
                    run.state.as_str().into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1;
        if !moved {
            return Ok(false);
        }
        let rows = txn
            .query_all_raw(self.stmt(
                "UPDATE task_instances SET state = ?, ended_at = ? \
                 WHERE run_id = ? AND state IN (?, ?, ?) RETURNING task_id, try_number",
                vec![
                    TaskState::Cancelled.as_str().into(),
                    now.into(),
                    id.into(),
                    TaskState::Pending.as_str().into(),
                    TaskState::Scheduled.as_str().into(),
                    TaskState::Queued.as_str().into(),
                ],
            ))
            .await?;
        txn.commit().await?;
        let changes: Vec<TaskStateChange> = rows
            .iter()
            .map(|r| {
                Ok(TaskStateChange {
                    task_id: get(r, "task_id")?,
                    try_number: get::<i32>(r, "try_number")? as u32,
                    state: TaskState::Cancelled,
                })
            })
            .collect::<Result<_>>()?;
        self.publish(StoreEvent::RunState {
            run_id: id.to_owned(),
            state: RunState::Cancelled,
        });
        if !changes.is_empty() {
            self.publish(StoreEvent::TaskStates {
                run_id: id.to_owned(),
                changes: Arc::from(changes),
            });
        }
        self.publish(StoreEvent::RunCancelRequested {
            run_id: id.to_owned(),
        });
        Ok(true)
    }
}

impl RunRecord {
    /// The template context of this run: params, run facts, the given task results
    /// (task id → `{"outputs", "state"}`), secrets and the configured `vars`.
    /// `run.try_number` is 0; a worker sets it per try.
    pub fn render_context(
        &self,
        tasks: serde_json::Map<String, serde_json::Value>,
        secrets: &Arc<Secrets>,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> RenderContext {
        RenderContext {
            params: self.params.clone(),
            run: RunInfo {
                id: self.id.clone(),
                workflow: self.workflow_id.clone(),
                logical_date: self.logical_date,
                data_interval_start: self.data_interval_start,
                data_interval_end: self.data_interval_end,
                trigger: self.trigger.clone(),
                triggered_by: self.triggered_by.clone(),
                try_number: 0,
                url: None,
            },
            tasks,
            event: self.event.clone(),
            upstream: serde_json::Value::Null,
            failed_tasks: Vec::new(),
            vars: vars.clone(),
            secrets: secrets.clone(),
        }
    }
}
