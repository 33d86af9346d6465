//! Task instances (one row per try): creation, the scheduler's decisions, claims by workers and
//! completions. Every write is batched (one statement per group of rows) because these are the
//! hot paths: 10,000 task instances per second on SQLite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, TransactionTrait, Value};

use super::artifacts::{NewArtifact, insert_artifacts};
use super::logs::{NewLogLine, insert_logs, insert_logs_statement};
use super::runs::START_RUN_SET;
use super::{CHUNK, Result, Store, StoreError, StoreEvent, get, marks};
use crate::lifecycle::{RunState, TaskState};

/// A task instance to create (try 1 of a task, or a retry).
#[derive(Debug, Clone)]
pub struct NewTaskInstance {
    pub task_id: String,
    pub try_number: u32,
    pub priority: i32,
    pub pool: Option<String>,
    /// The queue it waits in; only workers serving that queue claim it.
    pub queue: String,
    /// For retries: not to be queued before this time.
    pub not_before: Option<DateTime<Utc>>,
}

impl NewTaskInstance {
    /// The first try of a task, as a run creates it.
    pub fn first_try(task: &crate::dag::Task) -> Self {
        NewTaskInstance {
            task_id: task.id.clone(),
            try_number: 1,
            priority: task.priority,
            pool: task.pool.clone(),
            queue: task.queue.clone(),
            not_before: None,
        }
    }

    /// The try after `self` (a retry), due at `not_before`.
    pub fn next_try(task: &crate::dag::Task, try_number: u32, not_before: DateTime<Utc>) -> Self {
        NewTaskInstance {
            try_number,
            not_before: Some(not_before),
            ..NewTaskInstance::first_try(task)
        }
    }
}

/// One task instance as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInstanceRecord {
    pub id: i64,
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    pub state: TaskState,
    pub priority: i32,
    pub pool: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub outputs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Sentences about a success that still needs a look (masked), in the operator's order.
    pub warnings: Vec<String>,
    /// One line of what the try found, or why it was rejected (masked).
    pub summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A try's identity and state, as `task_states` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSlotRecord {
    pub id: i64,
    pub task_id: String,
    pub try_number: u32,
    pub state: TaskState,
}

/// A committed state change, as told to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStateChange {
    pub task_id: String,
    pub try_number: u32,
    pub state: TaskState,
}

/// The scheduler's decisions for one run: task instances to move, each from the state the
/// scheduler saw to a new one, and why, for the moves that record a reason.
#[derive(Debug, Clone, Default)]
pub struct DecisionBatch {
    pub moves: Vec<(i64, String, u32, TaskState, TaskState)>,
    /// Row id → the error stored with that move (an `if` that could not be evaluated).
    pub errors: HashMap<i64, String>,
}

impl DecisionBatch {
    pub fn push(
        &mut self,
        row_id: i64,
        task_id: &str,
        try_number: u32,
        from: TaskState,
        to: TaskState,
    ) {
        self.moves
            .push((row_id, task_id.to_owned(), try_number, from, to));
    }

    /// A move that records why on the task instance, as its `error`.
    pub fn push_with_error(
        &mut self,
        row_id: i64,
        task_id: &str,
        try_number: u32,
        from: TaskState,
        to: TaskState,
        error: String,
    ) {
        self.push(row_id, task_id, try_number, from, to);
        self.errors.insert(row_id, error);
    }

    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }
}

/// What a worker asks for when it claims work.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub worker: &'a str,
    pub limit: usize,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
    /// Named pools and their slot counts: a task in a pool is claimed only while fewer of
    /// the pool's tasks than its slots are running. Tasks in pools not named here are not
    /// limited.
    pub pools: &'a std::collections::BTreeMap<String, u32>,
    /// The queues this worker serves; empty serves every queue.
    pub queues: &'a [String],
    /// Only this run's tasks, when given.
    pub run_id: Option<&'a str>,
}

/// A task instance a worker now holds (it is `running`).
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: i64,
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    /// When the try first started; a rescheduled try (a sensor) keeps its first start.
    pub started_at: DateTime<Utc>,
    /// The try's number counted from the last time its task was cleared (1 for the first
    /// try after a clear, or for try 1): a task's retries count from there, so a cleared task
    /// gets all of them again.
    pub attempt: u32,
}

/// The end of one try, as a worker reports it.
#[derive(Debug, Clone)]
pub struct TaskCompletion {
    pub id: i64,
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    /// `success`, `failed`, `up_for_retry`, `skipped` or `cancelled`.
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub outputs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Sentences about a success that still needs a look; stored as a JSON list (none: NULL).
    pub warnings: Vec<String>,
    /// One line of what the try found, or why it was rejected.
    pub summary: Option<String>,
    pub ended_at: DateTime<Utc>,
    /// With `up_for_retry`: the next try, created in `scheduled` in the same transaction.
    pub retry: Option<NewTaskInstance>,
}

const TASK_COLUMNS: &str = "id, run_id, task_id, try_number, state, priority, pool, not_before, \
    worker, exit_code, error, outputs, warnings, summary, created_at, queued_at, started_at, ended_at";

fn task_from_row(row: &QueryResult) -> Result<TaskInstanceRecord> {
    let outputs: Option<String> = get(row, "outputs")?;
    let outputs = match outputs {
        None => None,
        Some(text) => match serde_json::from_str(&text)? {
            serde_json::Value::Object(map) => Some(map),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "task outputs are not an object: {other}"
                )));
            }
        },
    };
    Ok(TaskInstanceRecord {
        id: get(row, "id")?,
        run_id: get(row, "run_id")?,
        task_id: get(row, "task_id")?,
        try_number: get::<i32>(row, "try_number")? as u32,
        state: get::<String>(row, "state")?.parse()?,
        priority: get(row, "priority")?,
        pool: get(row, "pool")?,
        not_before: get(row, "not_before")?,
        worker: get(row, "worker")?,
        exit_code: get(row, "exit_code")?,
        error: get(row, "error")?,
        outputs,
        warnings: warnings_from_column(get(row, "warnings")?)?,
        summary: get(row, "summary")?,
        created_at: get(row, "created_at")?,
        queued_at: get(row, "queued_at")?,
        started_at: get(row, "started_at")?,
        ended_at: get(row, "ended_at")?,
    })
}

/// The `warnings` column: a JSON list of sentences, NULL when there are none.
fn warnings_from_column(text: Option<String>) -> Result<Vec<String>> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("task warnings are not a list of text: {e}"))),
    }
}

fn warnings_to_column(warnings: &[String]) -> Result<Option<String>> {
    if warnings.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_string(warnings)?))
}

/// The advisory lock that serialises claims of pooled tasks on PostgreSQL (an arbitrary
/// constant: "sluice:pools").
const POOL_CLAIM_LOCK: i64 = 0x736c_7569_6365_706c;

/// The conditions a claim adds to `state = 'queued'`: its queues (none: every queue) and its
/// run. `claim_filter_values` gives their values in the same order.
fn claim_filter(claim: &Claim<'_>) -> String {
    let mut filter = String::new();
    if !claim.queues.is_empty() {
        filter.push_str(&format!(" AND queue IN ({})", marks(claim.queues.len())));
    }
    if claim.run_id.is_some() {
        filter.push_str(" AND run_id = ?");
    }
    filter
}

fn claim_filter_values<'a>(claim: &'a Claim<'a>) -> impl Iterator<Item = Value> + 'a {
    let queues = claim.queues.iter().map(|q| Value::from(q.as_str()));
    queues.chain(claim.run_id.map(Value::from))
}

/// Inserts task instances with multi-row statements. `cleared_at` is set on tries created by
/// clearing their task: their task's retries count from them again.
pub(super) async fn insert_task_instances<C: ConnectionTrait>(
    store: &Store,
    conn: &C,
    run_id: &str,
    tasks: &[NewTaskInstance],
    state: TaskState,
    now: DateTime<Utc>,
    cleared_at: Option<DateTime<Utc>>,
) -> Result<()> {
    for chunk in tasks.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO task_instances (run_id, task_id, try_number, state, priority, pool, \
             queue, not_before, created_at, cleared_at) VALUES ",
        );
        let mut values = Vec::with_capacity(chunk.len() * 10);
        for (i, t) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
            values.extend([
                Value::from(run_id),
                t.task_id.as_str().into(),
                (t.try_number as i32).into(),
                state.as_str().into(),
                t.priority.into(),
                t.pool.clone().into(),
                t.queue.as_str().into(),
                t.not_before.into(),
                now.into(),
                cleared_at.into(),
            ]);
        }
        conn.execute_raw(store.stmt(&sql, values)).await?;
    }
    Ok(())
}

impl Store {
    /// Adds `pending` task instances to an existing run (the `on_failure` hooks) and returns
    /// them as stored.
    pub async fn add_task_instances(
        &self,
        run_id: &str,
        tasks: &[NewTaskInstance],
    ) -> Result<Vec<TaskSlotRecord>> {
        let txn = self.db().begin().await?;
        insert_task_instances(
            self,
            &txn,
            run_id,
            tasks,
            TaskState::Pending,
            Utc::now(),
            None,
        )
        .await?;
        txn.commit().await?;
        let wanted: std::collections::HashSet<(&str, u32)> = tasks
            .iter()
            .map(|t| (t.task_id.as_str(), t.try_number))
            .collect();
        let mut added = self.task_states(run_id).await?;
        added.retain(|ti| wanted.contains(&(ti.task_id.as_str(), ti.try_number)));
        Ok(added)
    }

    /// The state of every try of a run, oldest first: only what a scheduler needs to resume
    /// the run (no outputs or timestamps to decode).
    pub async fn task_states(&self, run_id: &str) -> Result<Vec<TaskSlotRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT id, task_id, try_number, state FROM task_instances WHERE run_id = ? \
                 ORDER BY id",
                vec![run_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskSlotRecord {
                    id: get(r, "id")?,
                    task_id: get(r, "task_id")?,
                    try_number: get::<i32>(r, "try_number")? as u32,
                    state: get::<String>(r, "state")?.parse()?,
                })
            })
            .collect()
    }

    /// Every task instance of a run (all tries), oldest first.
    pub async fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstanceRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!("SELECT {TASK_COLUMNS} FROM task_instances WHERE run_id = ? ORDER BY id"),
                vec![run_id.into()],
            ))
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The decisions' UPDATEs, one per (from, to) group and chunk of rows.
    async fn move_rows<C: ConnectionTrait>(
        &self,
        conn: &C,
        groups: &HashMap<(TaskState, TaskState), Vec<usize>>,
        batch: &DecisionBatch,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<i64>> {
        let mut moved_ids = std::collections::HashSet::new();
        for ((from, to), indices) in groups {
            for chunk in indices.chunks(CHUNK) {
                let time_column = match to {
                    TaskState::Queued => "queued_at",
                    TaskState::Scheduled => "created_at",
                    _ => "ended_at",
                };
                let sql = format!(
                    "UPDATE {} SET state = ?, {time_column} = ? \
                     WHERE state = ? AND id IN ({}) RETURNING id",
                    self.task_rows_by_id(),
                    marks(chunk.len())
                );
                let mut values: Vec<Value> =
                    vec![to.as_str().into(), now.into(), from.as_str().into()];
                values.extend(chunk.iter().map(|&i| Value::from(batch.moves[i].0)));
                for row in conn.query_all_raw(self.stmt(&sql, values)).await? {
                    moved_ids.insert(get::<i64>(&row, "id")?);
                }
            }
        }
        // Reasons are rare (a broken `if`): one statement each, only for rows that moved.
        for (id, error) in &batch.errors {
            if moved_ids.contains(id) {
                conn.execute_raw(self.stmt(
                    "UPDATE task_instances SET error = ? WHERE id = ?",
                    vec![error.as_str().into(), (*id).into()],
                ))
                .await?;
            }
        }
        Ok(moved_ids)
    }

    /// The table for an UPDATE of rows named by id and guarded on their state. Without
    /// statistics SQLite would walk the state index instead of looking the ids up, reading
    /// every pending row of a run for each decision: a chain's steps grew with its length.
    fn task_rows_by_id(&self) -> &'static str {
        match self.backend() {
            DbBackend::Sqlite => "task_instances NOT INDEXED",
            _ => "task_instances",
        }
    }

    /// Applies the scheduler's decisions together. A row only moves if it is still
    /// in the state the scheduler saw; returns the changes that were made.
    pub async fn apply_decisions(
        &self,
        run_id: &str,
        batch: &DecisionBatch,
    ) -> Result<Vec<TaskStateChange>> {
        self.decide(run_id, batch, false).await
    }

    /// Moves a queued run to `running` and applies its first decisions in one transaction.
    /// If the run is no longer queued (cancelled meanwhile), nothing changes.
    pub async fn start_run(
        &self,
        run_id: &str,
        batch: &DecisionBatch,
    ) -> Result<Vec<TaskStateChange>> {
        self.decide(run_id, batch, true).await
    }

    async fn decide(
        &self,
        run_id: &str,
        batch: &DecisionBatch,
        start: bool,
    ) -> Result<Vec<TaskStateChange>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut groups: HashMap<(TaskState, TaskState), Vec<usize>> = HashMap::new();
        for (i, (_, _, _, from, to)) in batch.moves.iter().enumerate() {
            from.check_move(*to)?;
            groups.entry((*from, *to)).or_default().push(i);
        }
        let moved_ids = if start {
            RunState::Queued.check_move(RunState::Running)?;
            let txn = self.db().begin().await?;
            let started = txn
                .execute_raw(self.stmt(
                    &format!("UPDATE runs SET {START_RUN_SET} WHERE id = ? AND state = ?"),
                    vec![
                        RunState::Running.as_str().into(),
                        now.into(),
                        now.into(),
                        run_id.into(),
                        RunState::Queued.as_str().into(),
                    ],
                ))
                .await?
                .rows_affected()
                == 1;
            if !started {
                txn.rollback().await?;
                return Ok(Vec::new());
            }
            let moved = self.move_rows(&txn, &groups, batch, now).await?;
            txn.commit().await?;
            self.publish(StoreEvent::RunState {
                run_id: run_id.to_owned(),
                state: RunState::Running,
            });
            moved
        } else if groups.len() == 1 && batch.moves.len() <= CHUNK && batch.errors.is_empty() {
            // One statement needs no transaction of its own; several must apply together.
            self.move_rows(self.db(), &groups, batch, now).await?
        } else {
            let txn = self.db().begin().await?;
            let moved = self.move_rows(&txn, &groups, batch, now).await?;
            txn.commit().await?;
            moved
        };
        let changes: Vec<TaskStateChange> = batch
            .moves
            .iter()
            .filter(|m| moved_ids.contains(&m.0))
            .map(|(_, task_id, try_number, _, to)| TaskStateChange {
                task_id: task_id.clone(),
                try_number: *try_number,
                state: *to,
            })
            .collect();
        let queued = changes.iter().any(|c| c.state == TaskState::Queued);
        if !changes.is_empty() {
            self.publish(StoreEvent::TaskStates {
                run_id: run_id.to_owned(),
                changes: Arc::from(changes.clone()),
            });
        }
        if queued {
            self.publish(StoreEvent::WorkQueued);
        }
        Ok(changes)
    }

    /// Claims up to `limit` queued task instances, highest priority first, moving them to
    /// `running` with a lease. The claim is one statement, so two workers never get the same
    /// row.
    pub async fn claim(&self, claim: &Claim<'_>) -> Result<Vec<ClaimedTask>> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let lease_until =
            now + chrono::Duration::from_std(claim.lease).unwrap_or(chrono::Duration::MAX);
        // PostgreSQL: several workers claim concurrently; SKIP LOCKED lets each take rows the
        // others are not taking instead of waiting on them. SQLite has one writer at a time,
        // so the plain sub-select is already exclusive (and sea-query would drop the clause).
        let lock = match self.backend() {
            DbBackend::Postgres => " FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let set = "UPDATE task_instances SET state = ?, worker = ?, \
                   started_at = COALESCE(started_at, ?), lease_expires_at = ?";
        let returning = "RETURNING id, run_id, task_id, try_number, started_at";
        let mut values: Vec<Value> = vec![
            TaskState::Running.as_str().into(),
            claim.worker.into(),
            now.into(),
            lease_until.into(),
        ];
        let rows = if claim.pools.is_empty() {
            // The common case is one statement: pick and take the rows together.
            let sql = format!(
                "{set} WHERE id IN (SELECT id FROM task_instances WHERE state = ?{} \
                 ORDER BY priority DESC, id LIMIT ?{lock}) {returning}",
                claim_filter(claim)
            );
            values.push(TaskState::Queued.as_str().into());
            values.extend(claim_filter_values(claim));
            values.push((claim.limit as i64).into());
            self.db().query_all_raw(self.stmt(&sql, values)).await?
        } else {
            let txn = self.db().begin().await?;
            if self.backend() == DbBackend::Postgres {
                // Workers in other processes claim at the same time: counting a pool's running
                // tasks and taking its free slots must not interleave, or two workers would
                // both take the last slot. SQLite's single writer serialises this already.
                txn.execute_raw(self.stmt(
                    "SELECT pg_advisory_xact_lock(?)",
                    vec![POOL_CLAIM_LOCK.into()],
                ))
                .await?;
            }
            let ids = self.pick_within_pools(&txn, claim, lock).await?;
            if ids.is_empty() {
                txn.commit().await?;
                return Ok(Vec::new());
            }
            let set = set.replacen("task_instances", self.task_rows_by_id(), 1);
            let sql = format!(
                "{set} WHERE state = ? AND id IN ({}) {returning}",
                marks(ids.len())
            );
            values.push(TaskState::Queued.as_str().into());
            values.extend(ids.into_iter().map(Value::from));
            let rows = txn.query_all_raw(self.stmt(&sql, values)).await?;
            txn.commit().await?;
            rows
        };
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(ClaimedTask {
                    id: get(r, "id")?,
                    run_id: get(r, "run_id")?,
                    task_id: get(r, "task_id")?,
                    try_number: get::<i32>(r, "try_number")? as u32,
                    started_at: get::<Option<DateTime<Utc>>>(r, "started_at")?.unwrap_or(now),
                    attempt: get::<i32>(r, "try_number")? as u32,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let attempts = self
            .attempts(claimed.iter().map(|c| (c.id, c.try_number)))
            .await?;
        for c in &mut claimed {
            if let Some(&attempt) = attempts.get(&c.id) {
                c.attempt = attempt;
            }
        }
        // RETURNING order is unspecified; keep claim order stable for the caller.
        claimed.sort_by_key(|c| c.id);
        self.publish_by_run(
            claimed
                .iter()
                .map(|c| (&c.run_id, &c.task_id, c.try_number, TaskState::Running)),
        );
        Ok(claimed)
    }

    /// The attempt number of one try (see `ClaimedTask::attempt`): its number counted from
    /// its task's last clear, which is what "try N of M" means to people (the retry notice).
    pub async fn attempt_of(&self, id: i64, try_number: u32) -> Result<u32> {
        let attempts = self.attempts(std::iter::once((id, try_number))).await?;
        Ok(attempts.get(&id).copied().unwrap_or(try_number))
    }

    /// The attempt number (see `ClaimedTask::attempt`) of the given tries, by row id, for
    /// those whose task was cleared at or before them; the others' attempt is their try
    /// number. Only tries after the first can differ, so most claims skip the query.
    async fn attempts(&self, tries: impl Iterator<Item = (i64, u32)>) -> Result<HashMap<i64, u32>> {
        let ids: Vec<i64> = tries
            .filter(|&(_, try_number)| try_number > 1)
            .map(|(id, _)| id)
            .collect();
        let mut attempts = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT t.id AS id, t.try_number AS try_number, \
                 MAX(c.try_number) AS cleared_try FROM task_instances t \
                 JOIN task_instances c ON c.run_id = t.run_id AND c.task_id = t.task_id \
                 AND c.try_number <= t.try_number AND c.cleared_at IS NOT NULL \
                 WHERE t.id IN ({}) GROUP BY t.id, t.try_number",
                marks(chunk.len())
            );
            let values: Vec<Value> = chunk.iter().map(|&id| Value::from(id)).collect();
            for row in self.db().query_all_raw(self.stmt(&sql, values)).await? {
                let try_number = get::<i32>(&row, "try_number")?;
                let cleared_try = get::<i32>(&row, "cleared_try")?;
                let attempt = u32::try_from(try_number - cleared_try + 1).unwrap_or(1);
                attempts.insert(get::<i64>(&row, "id")?, attempt);
            }
        }
        Ok(attempts)
    }

    /// The queued rows to claim when pools limit how many of their tasks run at once: highest
    /// priority first, skipping rows whose pool has no free slot.
    async fn pick_within_pools<C: ConnectionTrait>(
        &self,
        conn: &C,
        claim: &Claim<'_>,
        lock: &str,
    ) -> Result<Vec<i64>> {
        let running = conn
            .query_all_raw(self.stmt(
                "SELECT pool, COUNT(*) AS n FROM task_instances \
                 WHERE state = ? AND pool IS NOT NULL GROUP BY pool",
                vec![TaskState::Running.as_str().into()],
            ))
            .await?;
        let mut free: HashMap<&str, i64> = claim
            .pools
            .iter()
            .map(|(name, slots)| (name.as_str(), i64::from(*slots)))
            .collect();
        for row in &running {
            let pool: String = get(row, "pool")?;
            if let Some(slots) = free.get_mut(pool.as_str()) {
                *slots -= get::<i64>(row, "n")?;
            }
        }
        let full: Vec<&str> = free
            .iter()
            .filter(|(_, slots)| **slots <= 0)
            .map(|(name, _)| *name)
            .collect();
        let mut sql = format!(
            "SELECT id, pool FROM task_instances WHERE state = ?{}",
            claim_filter(claim)
        );
        let mut values: Vec<Value> = vec![TaskState::Queued.as_str().into()];
        values.extend(claim_filter_values(claim));
        if !full.is_empty() {
            sql.push_str(&format!(
                " AND (pool IS NULL OR pool NOT IN ({}))",
                marks(full.len())
            ));
            values.extend(full.iter().map(|name| Value::from(*name)));
        }
        // Read a few more rows than needed: pools can fill up within this one claim.
        sql.push_str(&format!(" ORDER BY priority DESC, id LIMIT ?{lock}"));
        values.push((claim.limit.saturating_mul(4) as i64).into());
        let mut chosen = Vec::with_capacity(claim.limit);
        for row in conn.query_all_raw(self.stmt(&sql, values)).await? {
            if chosen.len() == claim.limit {
                break;
            }
            let pool: Option<String> = get(&row, "pool")?;
            match pool.as_deref().and_then(|p| free.get_mut(p)) {
                Some(slots) if *slots <= 0 => continue,
                Some(slots) => *slots -= 1,
                None => {}
            }
            chosen.push(get::<i64>(&row, "id")?);
        }
        Ok(chosen)
    }

    /// The completions' statements: logs, the guarded UPDATE, and the next tries of retries.
    async fn finish_rows<C: ConnectionTrait>(
        &self,
        conn: &C,
        logs: &[NewLogLine],
        completions: &[TaskCompletion],
        artifacts: &[NewArtifact],
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<i64>> {
        // On SQLite a few lines go in the completions' first statement, ahead of its UPDATE:
        // one round trip to the database's thread instead of two, and still written first.
        let fold_logs = self.backend() == DbBackend::Sqlite
            && !logs.is_empty()
            && logs.len() <= CHUNK
            && !completions.is_empty();
        let mut folded = if fold_logs {
            Some(insert_logs_statement(logs))
        } else {
            insert_logs(self, conn, logs).await?;
            None
        };
        let mut accepted = std::collections::HashSet::new();
        for chunk in completions.chunks(CHUNK) {
            let (mut sql, mut values) = match folded.take() {
                Some((mut sql, values)) => {
                    sql.push_str("; ");
                    (sql, values)
                }
                None => (String::new(), Vec::with_capacity(chunk.len() * 8 + 1)),
            };
            sql.push_str(
                "WITH v(id, state, exit_code, error, outputs, warnings, summary, ended_at) AS (VALUES ",
            );
            for (i, c) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
                let outputs = c.outputs.as_ref().map(serde_json::to_string).transpose()?;
                values.extend([
                    Value::from(c.id),
                    c.state.as_str().into(),
                    c.exit_code.into(),
                    c.error.clone().into(),
                    outputs.into(),
                    warnings_to_column(&c.warnings)?.into(),
                    c.summary.clone().into(),
                    c.ended_at.into(),
                ]);
            }
            sql.push_str(
                ") UPDATE task_instances SET state = v.state, exit_code = v.exit_code, \
                 error = v.error, outputs = v.outputs, warnings = v.warnings, \
                 summary = v.summary, ended_at = v.ended_at, \
                 lease_expires_at = NULL FROM v \
                 WHERE task_instances.id = v.id AND task_instances.state = ? \
                 RETURNING task_instances.id",
            );
            values.push(TaskState::Running.as_str().into());
            for row in conn.query_all_raw(self.stmt(&sql, values)).await? {
                accepted.insert(get::<i64>(&row, "id")?);
            }
        }
        let mut retries_by_run: HashMap<&str, Vec<NewTaskInstance>> = HashMap::new();
        for c in completions.iter().filter(|c| accepted.contains(&c.id)) {
            if let (TaskState::UpForRetry, Some(retry)) = (c.state, &c.retry) {
                retries_by_run
                    .entry(&c.run_id)
                    .or_default()
                    .push(retry.clone());
            }
        }
        for (run_id, retries) in &retries_by_run {
            insert_task_instances(self, conn, run_id, retries, TaskState::Scheduled, now, None)
                .await?;
        }
        insert_artifacts(self, conn, completions, &accepted, artifacts, now).await?;
        Ok(accepted)
    }

    /// Records the end of tries. A completion is accepted only if its row is still `running`
    /// (fencing: a try that recovery already gave up on cannot overwrite what replaced it).
    /// Returns the ids of the accepted completions. The log lines the tries wrote last are
    /// inserted first, so logs are never behind the state they explain.
    pub async fn complete(
        &self,
        logs: &[NewLogLine],
        completions: &[TaskCompletion],
    ) -> Result<Vec<i64>> {
        self.complete_with_artifacts(logs, completions, &[]).await
    }

    /// `complete`, also recording the artifacts successful tries kept (`NewArtifact::try_id`
    /// names the completion). They are written in the completions' transaction and fenced
    /// like them: a completion that is refused records none of its artifacts.
    pub async fn complete_with_artifacts(
        &self,
        logs: &[NewLogLine],
        completions: &[TaskCompletion],
        artifacts: &[NewArtifact],
    ) -> Result<Vec<i64>> {
        for c in completions {
            TaskState::Running.check_move(c.state)?;
        }
        let now = Utc::now();
        // A retry's next try must appear together with the failed one's end; without retries
        // each statement stands alone, and logs go first so they are never behind the state.
        // Artifact rows, likewise, exist exactly when their try's success does.
        let retrying = completions.iter().any(|c| c.state == TaskState::UpForRetry);
        let accepted = if retrying || completions.len() > CHUNK || !artifacts.is_empty() {
            let txn = self.db().begin().await?;
            let accepted = self
                .finish_rows(&txn, logs, completions, artifacts, now)
                .await?;
            txn.commit().await?;
            accepted
        } else {
            self.finish_rows(self.db(), logs, completions, artifacts, now)
                .await?
        };
        let accepted_in_order: Vec<i64> = completions
            .iter()
            .map(|c| c.id)
            .filter(|id| accepted.contains(id))
            .collect();
        self.publish_by_run(
            completions
                .iter()
                .filter(|c| accepted.contains(&c.id))
                .flat_map(|c| {
                    let retry = c
                        .retry
                        .as_ref()
                        .filter(|_| c.state == TaskState::UpForRetry)
                        .map(|r| (&c.run_id, &c.task_id, r.try_number, TaskState::Scheduled));
                    std::iter::once((&c.run_id, &c.task_id, c.try_number, c.state)).chain(retry)
                }),
        );
        Ok(accepted_in_order)
    }

    /// Puts running tries back to `scheduled` until their `not_before` (a sensor that is not
    /// done yet), same try, keeping `started_at`. Only rows still running move; the moves are
    /// published, which also sets the scheduler's timer for them. A try whose run was
    /// cancelled meanwhile ends `cancelled` instead: nothing would ever stop it otherwise.
    pub async fn reschedule(&self, tries: &[(i64, DateTime<Utc>)]) -> Result<u64> {
        TaskState::Running.check_move(TaskState::Scheduled)?;
        TaskState::Running.check_move(TaskState::Cancelled)?;
        let mut moved = Vec::new();
        // One statement per try: each has its own time, and sensors are few and slow.
        for (id, not_before) in tries {
            let row = self
                .db()
                .query_one_raw(self.stmt(
                    "UPDATE task_instances SET state = ?, not_before = ?, worker = NULL, \
                     lease_expires_at = NULL WHERE id = ? AND state = ? AND EXISTS \
                     (SELECT 1 FROM runs WHERE runs.id = task_instances.run_id AND runs.state = ?) \
                     RETURNING run_id, task_id, try_number",
                    vec![
                        TaskState::Scheduled.as_str().into(),
                        (*not_before).into(),
                        (*id).into(),
                        TaskState::Running.as_str().into(),
                        crate::lifecycle::RunState::Running.as_str().into(),
                    ],
                ))
                .await?;
            let (row, state) = match row {
                Some(row) => (Some(row), TaskState::Scheduled),
                None => {
                    let row = self
                        .db()
                        .query_one_raw(self.stmt(
                            "UPDATE task_instances SET state = ?, ended_at = ?, error = ?, \
                             lease_expires_at = NULL WHERE id = ? AND state = ? \
                             RETURNING run_id, task_id, try_number",
                            vec![
                                TaskState::Cancelled.as_str().into(),
                                Utc::now().into(),
                                "the run was cancelled; the task was stopped".into(),
                                (*id).into(),
                                TaskState::Running.as_str().into(),
                            ],
                        ))
                        .await?;
                    (row, TaskState::Cancelled)
                }
            };
            if let Some(row) = row {
                moved.push((
                    get::<String>(&row, "run_id")?,
                    get::<String>(&row, "task_id")?,
                    get::<i32>(&row, "try_number")? as u32,
                    state,
                ));
            }
        }
        self.publish_by_run(
            moved
                .iter()
                .map(|(run, task, try_number, state)| (run, task, *try_number, *state)),
        );
        Ok(moved.len() as u64)
    }

    /// Tells subscribers about changes, one event per run.
    fn publish_by_run<'a>(
        &self,
        changes: impl Iterator<Item = (&'a String, &'a String, u32, TaskState)>,
    ) {
        let mut by_run: Vec<(&String, Vec<TaskStateChange>)> = Vec::new();
        for (run_id, task_id, try_number, state) in changes {
            let change = TaskStateChange {
                task_id: task_id.clone(),
                try_number,
                state,
            };
            match by_run.iter_mut().find(|(r, _)| *r == run_id) {
                Some((_, list)) => list.push(change),
                None => by_run.push((run_id, vec![change])),
            }
        }
        for (run_id, changes) in by_run {
            self.publish(StoreEvent::TaskStates {
                run_id: run_id.clone(),
                changes: Arc::from(changes),
            });
        }
    }
}

impl Store {
    /// Queues every `scheduled` task instance whose `not_before` has passed (retries whose
    /// delay is over). Returns the changes, which are also published.
    pub async fn queue_due(&self, now: DateTime<Utc>) -> Result<Vec<(String, TaskStateChange)>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "UPDATE task_instances SET state = ?, queued_at = ? \
                 WHERE state = ? AND (not_before IS NULL OR not_before <= ?) \
                 RETURNING run_id, task_id, try_number",
                vec![
                    TaskState::Queued.as_str().into(),
                    now.into(),
                    TaskState::Scheduled.as_str().into(),
                    now.into(),
                ],
            ))
            .await?;
        let changes = rows
            .iter()
            .map(|r| {
                Ok((
                    get::<String>(r, "run_id")?,
                    TaskStateChange {
                        task_id: get(r, "task_id")?,
                        try_number: get::<i32>(r, "try_number")? as u32,
                        state: TaskState::Queued,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if !changes.is_empty() {
            self.publish_by_run(
                changes
                    .iter()
                    .map(|(run, c)| (run, &c.task_id, c.try_number, c.state)),
            );
            self.publish(StoreEvent::WorkQueued);
        }
        Ok(changes)
    }

    /// When the earliest `scheduled` task instance becomes due, if any.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT MIN(not_before) AS due FROM task_instances WHERE state = ?",
                vec![TaskState::Scheduled.as_str().into()],
            ))
            .await?;
        match row {
            Some(row) => get::<Option<DateTime<Utc>>>(&row, "due"),
            None => Ok(None),
        }
    }

    /// The latest try of every task of a run that has ended, as the template context wants
    /// it: task id → `{"outputs": {...}, "state": "..."}`.
    pub async fn task_results(
        &self,
        run_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.task_results_of(run_id, None).await
    }

    /// `task_results` for the given tasks only (`None`: every task). A render reads the
    /// results its templates name, so its cost does not grow with the run.
    pub async fn task_results_of(
        &self,
        run_id: &str,
        tasks: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut results = serde_json::Map::new();
        let mut values: Vec<Value> = vec![run_id.into()];
        let mut sql =
            String::from("SELECT task_id, state, outputs FROM task_instances WHERE run_id = ?");
        if let Some(tasks) = tasks {
            if tasks.is_empty() {
                return Ok(results);
            }
            sql.push_str(&format!(" AND task_id IN ({})", marks(tasks.len())));
            values.extend(tasks.iter().map(|t| Value::from(t.as_str())));
        }
        sql.push_str(" ORDER BY id");
        for row in self.db().query_all_raw(self.stmt(&sql, values)).await? {
            let outputs = match get::<Option<String>>(&row, "outputs")? {
                None => serde_json::Value::Object(Default::default()),
                Some(text) => match serde_json::from_str(&text)? {
                    object @ serde_json::Value::Object(_) => object,
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "task outputs are not an object: {other}"
                        )));
                    }
                },
            };
            let state: TaskState = get::<String>(&row, "state")?.parse()?;
            // Rows come oldest first, so a later try replaces an earlier one.
            results.insert(
                get(&row, "task_id")?,
                serde_json::json!({ "outputs": outputs, "state": state.as_str() }),
            );
        }
        Ok(results)
    }
}

/// A try whose worker is gone, as recovery sees it.
#[derive(Debug, Clone)]
pub struct OrphanedTry {
    pub id: i64,
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    /// As `ClaimedTask::attempt`: where the task's retries count from.
    pub attempt: u32,
    pub worker: Option<String>,
}

impl Store {
    /// Renews the lease of the given running tries held by `worker` (the heartbeat). Runs
    /// outside any claim transaction; returns how many leases were renewed.
    /// Extends the leases `worker` holds on `ids` and returns the ids it still holds: a try
    /// missing from the answer was taken over (its lease expired and recovery ended it).
    pub async fn renew_leases(
        &self,
        worker: &str,
        ids: &[i64],
        lease: Duration,
    ) -> Result<std::collections::HashSet<i64>> {
        let until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut renewed = std::collections::HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "UPDATE task_instances SET lease_expires_at = ? \
                 WHERE state = ? AND worker = ? AND id IN ({}) RETURNING id",
                marks(chunk.len())
            );
            let mut values: Vec<Value> = vec![
                until.into(),
                TaskState::Running.as_str().into(),
                worker.into(),
            ];
            values.extend(chunk.iter().map(|&id| Value::from(id)));
            for row in self.db().query_all_raw(self.stmt(&sql, values)).await? {
                renewed.insert(get::<i64>(&row, "id")?);
            }
        }
        Ok(renewed)
    }

    /// Running tries whose lease expired before `now`, or, with `now = None`, every running
    /// try (on SQLite `serve` is the only process, so at start-up none of them has a worker).
    pub async fn orphaned_tries(&self, now: Option<DateTime<Utc>>) -> Result<Vec<OrphanedTry>> {
        let (sql, values): (&str, Vec<Value>) = match now {
            Some(now) => (
                "SELECT id, run_id, task_id, try_number, worker FROM task_instances \
                 WHERE state = ? AND lease_expires_at < ? ORDER BY id",
                vec![TaskState::Running.as_str().into(), now.into()],
            ),
            None => (
                "SELECT id, run_id, task_id, try_number, worker FROM task_instances \
                 WHERE state = ? ORDER BY id",
                vec![TaskState::Running.as_str().into()],
            ),
        };
        let rows = self.db().query_all_raw(self.stmt(sql, values)).await?;
        let mut orphans = rows
            .iter()
            .map(|r| {
                let try_number = get::<i32>(r, "try_number")? as u32;
                Ok(OrphanedTry {
                    id: get(r, "id")?,
                    run_id: get(r, "run_id")?,
                    task_id: get(r, "task_id")?,
                    try_number,
                    attempt: try_number,
                    worker: get(r, "worker")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let attempts = self
            .attempts(orphans.iter().map(|o| (o.id, o.try_number)))
            .await?;
        for orphan in &mut orphans {
            if let Some(&attempt) = attempts.get(&orphan.id) {
                orphan.attempt = attempt;
            }
        }
        Ok(orphans)
    }
}

impl Store {
    /// Puts running tries back in the queue, same try (a worker shutting down). Only rows
    /// still running move. `started_at` stays: the try did start then, and a sensor's
    /// timeout keeps counting from its first check.
    pub async fn hand_back(&self, ids: &[i64]) -> Result<u64> {
        let mut moved = 0;
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "UPDATE task_instances SET state = ?, worker = NULL, \
                 lease_expires_at = NULL, queued_at = ? WHERE state = ? AND id IN ({})",
                marks(chunk.len())
            );
            let mut values: Vec<Value> = vec![
                TaskState::Queued.as_str().into(),
                Utc::now().into(),
                TaskState::Running.as_str().into(),
            ];
            values.extend(chunk.iter().map(|&id| Value::from(id)));
            moved += self
                .db()
                .execute_raw(self.stmt(&sql, values))
                .await?
                .rows_affected();
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod reschedule_tests {
    use super::*;
    use crate::lifecycle::RunState;
    use crate::store::{NewRun, StoreConfig};

    async fn running_try(store: &Store, run_id: &str) -> ClaimedTask {
        let now = Utc::now();
        store
            .save_workflow_version("wf", "h1", "/x/wf.yaml", "tasks: {}")
            .await
            .expect("version");
        let run = NewRun {
            id: run_id.into(),
            workflow_id: "wf".into(),
            version_hash: "h1".into(),
            trigger: "manual".into(),
            triggered_by: None,
            params: serde_json::Map::new(),
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
        };
        let sensor = NewTaskInstance {
            task_id: "sensor".into(),
            try_number: 1,
            priority: 0,
            pool: None,
            queue: "default".into(),
            not_before: None,
        };
        store.create_run(&run, &[sensor]).await.expect("run");
        store
            .set_run_state(run_id, RunState::Queued, RunState::Running, None)
            .await
            .expect("start");
        let ti = &store.task_instances(run_id).await.expect("tis")[0];
        let mut batch = DecisionBatch::default();
        batch.push(ti.id, "sensor", 1, TaskState::Pending, TaskState::Queued);
        store.apply_decisions(run_id, &batch).await.expect("queue");
        let claim = Claim {
            worker: "w",
            limit: 1,
            pools: &Default::default(),
            queues: &[],
            run_id: None,
            lease: Duration::from_secs(30),
        };
        store.claim(&claim).await.expect("claim").remove(0)
    }

    #[tokio::test]
    async fn a_rescheduled_try_keeps_its_number_and_first_start() {
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let first = running_try(&store, "r1").await;
        let mut events = store.subscribe();
        let due = Utc::now() - chrono::Duration::seconds(1);
        assert_eq!(store.reschedule(&[(first.id, due)]).await.expect("ok"), 1);
        match events.recv().await {
            Some(StoreEvent::TaskStates { changes, .. }) => {
                assert_eq!(changes[0].state, TaskState::Scheduled)
            }
            other => panic!("expected a state change, got {other:?}"),
        }
        let ti = &store.task_instances("r1").await.expect("tis")[0];
        assert_eq!((ti.state, ti.try_number), (TaskState::Scheduled, 1));
        assert_eq!(ti.worker, None);
        assert_eq!(store.next_due().await.expect("due"), Some(due));
        store.queue_due(Utc::now()).await.expect("queue");
        let claim = Claim {
            worker: "w",
            limit: 1,
            pools: &Default::default(),
            queues: &[],
            run_id: None,
            lease: Duration::from_secs(30),
        };
        let again = store.claim(&claim).await.expect("claim").remove(0);
        assert_eq!((again.id, again.try_number), (first.id, 1));
        assert_eq!(again.started_at, first.started_at);
    }

    #[tokio::test]
    async fn a_try_of_a_cancelled_run_ends_instead_of_rescheduling() {
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let claimed = running_try(&store, "r1").await;
        store.cancel_run("r1", "stop").await.expect("cancel");
        store
            .reschedule(&[(claimed.id, Utc::now())])
            .await
            .expect("ok");
        let ti = &store.task_instances("r1").await.expect("tis")[0];
        assert_eq!(ti.state, TaskState::Cancelled);
    }
}
