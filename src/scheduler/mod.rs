//! The scheduler: decides, for each run it drives, which task instances become queued,
//! skipped or upstream_failed, and when the run is over. It is event-driven: a committed task
//! state change (a `StoreEvent`) makes its downstream tasks ready at once; retries are queued
//! by a timer set to the next due time, never by polling; so are run deadlines. It meets
//! workers only in `store`.

pub mod cron;
pub mod failure_mail;
pub mod github_status;
pub mod recovery;
pub mod retry_mail;
pub mod standard_mail;
pub mod triggers;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::catalog::versions::{VersionError, Versions};
use crate::dag::deadline::RunTimes;
use crate::dag::{Hook, Workflow, intervals};
use crate::lifecycle::{Decision, Outcome, RunState, TaskState, UpstreamSummary};
use crate::secrets::Secrets;
use crate::store::{
    DecisionBatch, NewTaskInstance, RunRecord, Store, StoreError, StoreEvent, TaskSlotRecord,
    TaskStateChange,
};
use crate::template::Templates;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Version(#[from] VersionError),
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

/// What the scheduler needs besides the store.
#[derive(Clone)]
pub struct SchedulerDeps {
    pub versions: Arc<Versions>,
    pub templates: Arc<Templates>,
    pub secrets: Arc<Secrets>,
    /// Configured variables (`vars` in templates).
    pub vars: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The base of links to run pages (`run.url` in templates).
    pub base_url: String,
}

/// The latest known try of one task in a tracked run.
#[derive(Debug, Clone, Copy)]
struct Slot {
    row_id: i64,
    try_number: u32,
    state: TaskState,
}

/// A run the scheduler drives: the pinned workflow and the state of each task's latest try.
/// Positions are those of `Workflow::all_tasks`: the main tasks, then the hooks, whose slots
/// stay empty until their event (a failure, a success, the deadline) has happened. A hook
/// group's task instances existing in the database is the record that its event fired.
struct Tracker {
    run: RunRecord,
    workflow: Arc<Workflow>,
    index: HashMap<String, usize>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    slots: Vec<Option<Slot>>,
    /// How many main tasks have a final latest try.
    main_done: usize,
    /// Adopted while queued: the run moves to `running` together with its first decisions.
    starting: bool,
}

impl Tracker {
    fn new(run: RunRecord, workflow: Arc<Workflow>) -> Self {
        let main = workflow.tasks.len();
        let index: HashMap<String, usize> = workflow
            .all_tasks()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let total = workflow.all_tasks().count();
        let mut upstream = vec![Vec::new(); total];
        let mut downstream = vec![Vec::new(); total];
        for (position, task) in workflow.all_tasks().enumerate() {
            // Main tasks come from the compiled graph; hooks only need other hooks.
            let ups: Vec<usize> = if position < main {
                workflow.upstream(position).collect()
            } else {
                task.needs
                    .iter()
                    .filter_map(|n| index.get(n).copied())
                    .filter(|&u| u >= main)
                    .collect()
            };
            for &up in &ups {
                downstream[up].push(position);
            }
            upstream[position] = ups;
        }
        Tracker {
            run,
            workflow,
            index,
            upstream,
            downstream,
            slots: vec![None; total],
            main_done: 0,
            starting: false,
        }
    }

    /// Takes in task instances as stored (with their row ids).
    fn load(&mut self, instances: Vec<TaskSlotRecord>) {
        for ti in instances {
            let change = TaskStateChange {
                task_id: ti.task_id,
                try_number: ti.try_number,
                state: ti.state,
            };
            self.apply(&change, Some(ti.id));
        }
    }

    fn main_len(&self) -> usize {
        self.workflow.tasks.len()
    }

    fn outcome(&self, task: usize) -> Option<Outcome> {
        self.slots[task].and_then(|s| s.state.outcome())
    }

    /// Records a change; returns whether it made the task final. A new try of a task that had
    /// ended (it was cleared) makes the task unfinished again, so the run cannot end before
    /// that try does.
    fn apply(&mut self, change: &TaskStateChange, row_id: Option<i64>) -> bool {
        let Some(&task) = self.index.get(&change.task_id) else {
            return false;
        };
        let was_done = self.outcome(task).is_some();
        match &mut self.slots[task] {
            Some(slot) if slot.try_number > change.try_number => return false,
            // Events from different writers can arrive out of commit order (the scheduler's
            // own "queued" after the worker's "success"): a try never moves back.
            // The one step down: a sensor rescheduling itself goes from running back to
            // scheduled, same try.
            Some(slot)
                if slot.try_number == change.try_number
                    && slot.state.rank() >= change.state.rank()
                    && !(slot.state == TaskState::Running
                        && change.state == TaskState::Scheduled) =>
            {
                return false;
            }
            Some(slot) => {
                if slot.try_number < change.try_number {
                    slot.row_id = row_id.unwrap_or(0);
                }
                slot.try_number = change.try_number;
                slot.state = change.state;
            }
            empty => {
                *empty = Some(Slot {
                    row_id: row_id.unwrap_or(0),
                    try_number: change.try_number,
                    state: change.state,
                })
            }
        }
        let is_done = self.outcome(task).is_some();
        if task < self.main_len() {
            match (was_done, is_done) {
                (false, true) => self.main_done += 1,
                (true, false) => self.main_done = self.main_done.saturating_sub(1),
                _ => {}
            }
        }
        !was_done && is_done
    }

    /// How many main tasks have a final latest try, counted from the slots instead of kept
    /// up to date like `main_done`: the tests check that the two agree.
    #[cfg(test)]
    fn main_done_recounted(&self) -> usize {
        (0..self.main_len())
            .filter(|&t| self.outcome(t).is_some())
            .count()
    }

    /// Whether a hook group's task instances exist (its event has fired).
    fn hooks_started(&self, hook: Hook) -> bool {
        self.slots[self.workflow.hook_positions(hook)]
            .iter()
            .any(Option::is_some)
    }

    /// Whether some hook that was started has not ended.
    fn hooks_running(&self) -> bool {
        self.slots[self.main_len()..]
            .iter()
            .flatten()
            .any(|slot| slot.state.outcome().is_none())
    }

    /// When this run's deadline passes, if it has one that has not fired yet.
    fn deadline_due(&self) -> Option<DateTime<Utc>> {
        let deadline = self.workflow.deadline?;
        if self.workflow.on_deadline.is_empty()
            || self.hooks_started(Hook::Deadline)
            || self.run.state.is_final()
        {
            return None;
        }
        deadline.due_at(
            self.workflow.timezone,
            &RunTimes {
                logical_date: self.run.logical_date,
                data_interval_end: self.run.data_interval_end,
                started_at: self.run.started_at,
            },
        )
    }
}

/// The scheduler's state: the runs it drives.
pub struct Scheduler {
    store: Store,
    deps: SchedulerDeps,
    config: SchedulerConfig,
    runs: HashMap<String, Tracker>,
    /// Set while a run whose end the database refused is read again, so that the re-read
    /// cannot recurse.
    rereading_refused_end: bool,
}

impl Scheduler {
    pub fn new(store: Store, deps: SchedulerDeps, config: SchedulerConfig) -> Self {
        Scheduler {
            store,
            deps,
            config,
            runs: HashMap::new(),
            rereading_refused_end: false,
        }
    }

    /// Whether the scheduler still drives any run.
    pub fn is_idle(&self) -> bool {
        self.runs.is_empty()
    }

    /// Takes over a run: loads its task instances, starts it if queued, and dispatches what is
    /// ready. Works for new runs and for runs interrupted by a crash alike.
    pub async fn adopt(&mut self, run_id: &str) -> Result<()> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_owned()))?;
        if run.state.is_final() {
            return Ok(());
        }
        let workflow = self
            .deps
            .versions
            .get(&self.store, &run.version_hash)
            .await?;
        let mut tracker = Tracker::new(run, workflow);
        tracker.load(self.store.task_states(run_id).await?);
        // A queued run starts in the same transaction as its first decisions: one commit less
        // between a trigger and the first task starting.
        tracker.starting = tracker.run.state == RunState::Queued;
        let all: Vec<usize> = (0..tracker.slots.len()).collect();
        self.runs.insert(run_id.to_owned(), tracker);
        self.evaluate(run_id, all).await?;
        match self.runs.get_mut(run_id) {
            // Nothing was ready to decide (or the run already ended): start it on its own.
            Some(tracker) if tracker.starting => {
                tracker.starting = false;
                self.store
                    .set_run_state(run_id, RunState::Queued, RunState::Running, None)
                    .await?;
                tracker.run.state = RunState::Running;
                tracker.run.started_at.get_or_insert_with(Utc::now);
                info!(run_id, workflow = %tracker.run.workflow_id, "Run started.");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reacts to one committed change.
    pub async fn handle(&mut self, event: &StoreEvent) -> Result<()> {
        match event {
            StoreEvent::TaskStates { run_id, changes } => {
                let Some(tracker) = self.runs.get_mut(run_id) else {
                    return Ok(());
                };
                if changes.iter().any(|c| c.state == TaskState::Pending) {
                    // New tries were created outside the scheduler (a task was cleared):
                    // start over from the database, which has their row ids.
                    self.runs.remove(run_id);
                    return self.adopt(run_id).await;
                }
                let mut downstream = Vec::new();
                for change in changes.iter() {
                    if tracker.apply(change, None)
                        && let Some(&task) = tracker.index.get(&change.task_id)
                    {
                        downstream.extend(tracker.downstream[task].iter().copied());
                    }
                }
                self.evaluate(run_id, downstream).await
            }
            StoreEvent::RunState { run_id, state } if state.is_final() => {
                if !self.runs.contains_key(run_id) {
                    return Ok(());
                }
                self.runs.remove(run_id);
                // The event can be older than what this scheduler has read since: a run whose
                // tasks were cleared after it ended runs again, and must stay driven.
                match self.store.run(run_id).await? {
                    Some(run) if !run.state.is_final() => self.adopt(run_id).await,
                    _ => {
                        debug!(run_id, %state, "Run left the scheduler.");
                        Ok(())
                    }
                }
            }
            // A run created (or cleared) elsewhere: the API, cron, a trigger. It starts when
            // its workflow's `max_active_runs` allows.
            StoreEvent::RunState {
                run_id,
                state: RunState::Queued,
            } if self.config.adopt_new_runs && !self.runs.contains_key(run_id) => {
                match self.store.run(run_id).await? {
                    Some(run) => self.start_queued(&run.workflow_id).await,
                    None => Ok(()),
                }
            }

            // Other processes' changes may have gone unheard: the database is the truth.
            StoreEvent::Missed => self.reload().await,
            StoreEvent::RunState { .. }
            | StoreEvent::WorkQueued
            | StoreEvent::RunCancelRequested { .. }
            | StoreEvent::Paused { .. } => Ok(()),
        }
    }

    /// Decides every pending task in `candidates` (and, transitively, what their skips and
    /// failures decide downstream), writes the decisions in one batch, and ends the run when
    /// every task is final.
    async fn evaluate(&mut self, run_id: &str, candidates: Vec<usize>) -> Result<()> {
        let Some(tracker) = self.runs.get_mut(run_id) else {
            return Ok(());
        };
        let mut batch = DecisionBatch::default();
        let mut work = candidates;
        // Results read for `if` conditions, by the tasks they name (`None`: all), so tasks
        // with the same condition share one read and a condition never reads the whole run.
        let mut task_results: HashMap<
            Option<std::collections::BTreeSet<String>>,
            serde_json::Map<String, serde_json::Value>,
        > = HashMap::new();
        while let Some(task) = work.pop() {
            let Some(slot) = tracker.slots[task] else {
                continue;
            };
            if slot.state != TaskState::Pending {
                continue;
            }
            let mut summary = UpstreamSummary::default();
            for &up in &tracker.upstream[task] {
                summary.add(tracker.outcome(up));
            }
            let Some(spec) = tracker.workflow.task_at(task) else {
                continue;
            };
            let mut why = None;
            let mut to = match spec.trigger_rule.decide(&summary) {
                Decision::Wait => continue,
                Decision::Run => TaskState::Queued,
                Decision::Skip => TaskState::Skipped,
                Decision::UpstreamFailed => TaskState::UpstreamFailed,
            };
            if let (TaskState::Queued, Some(condition)) = (to, &spec.condition) {
                let reads = crate::template::tasks_read([condition.as_str()]);
                let results = match task_results.get(&reads) {
                    Some(results) => results.clone(),
                    None => {
                        let results = self.store.task_results_of(run_id, reads.as_ref()).await?;
                        task_results.insert(reads, results.clone());
                        results
                    }
                };
                let mut context =
                    tracker
                        .run
                        .render_context(results, &self.deps.secrets, &self.deps.vars);
                context.run.url = Some(crate::config::run_url(&self.deps.base_url, run_id));
                let (condition, context) = (condition.clone(), context.to_value());
                match self
                    .deps
                    .templates
                    .off_thread("if", move |t| {
                        t.eval_condition_field("if", &condition, &context)
                    })
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => to = TaskState::Skipped,
                    Err(e) => {
                        let masker = self.deps.secrets.masker();
                        let error = masker
                            .mask(&format!("the task's `if` could not be evaluated: {e}"))
                            .into_owned();
                        warn!(run_id, task = %spec.id, %error, "The task's `if` could not be evaluated; it fails.");
                        to = TaskState::UpstreamFailed;
                        why = Some(error);
                    }
                }
            }
            match why {
                Some(error) => batch.push_with_error(
                    slot.row_id,
                    &spec.id,
                    slot.try_number,
                    TaskState::Pending,
                    to,
                    error,
                ),
                None => batch.push(
                    slot.row_id,
                    &spec.id,
                    slot.try_number,
                    TaskState::Pending,
                    to,
                ),
            }
            let change = TaskStateChange {
                task_id: spec.id.clone(),
                try_number: slot.try_number,
                state: to,
            };
            if tracker.apply(&change, None) {
                work.extend(tracker.downstream[task].iter().copied());
            }
        }
        if !batch.is_empty() {
            let applied = if tracker.starting {
                tracker.starting = false;
                tracker.run.state = RunState::Running;
                tracker.run.started_at.get_or_insert_with(Utc::now);
                info!(run_id, workflow = %tracker.run.workflow_id, "Run started.");
                self.store.start_run(run_id, &batch).await?
            } else {
                self.store.apply_decisions(run_id, &batch).await?
            };
            if applied.len() != batch.moves.len() {
                // Someone else moved some of these rows (a cancel, most likely): the database
                // is the truth, so start over from it.
                warn!(
                    run_id,
                    "Task states changed under the scheduler; reloading the run."
                );
                self.runs.remove(run_id);
                return Box::pin(self.adopt(run_id)).await;
            }
        }
        self.finish_if_done(run_id).await
    }

    /// Ends the run once every task is final: after the main tasks, the `on_success` or
    /// `on_failure` hooks run first, and hooks already running (`on_deadline`) are waited for.
    /// Hooks do not change the run's state: the main tasks decide it.
    async fn finish_if_done(&mut self, run_id: &str) -> Result<()> {
        let Some(tracker) = self.runs.get(run_id) else {
            return Ok(());
        };
        let main = tracker.main_len();
        if tracker.main_done < main {
            return Ok(());
        }
        let failed: Vec<String> = (0..main)
            .filter(|&t| {
                matches!(
                    tracker.outcome(t),
                    Some(Outcome::Failed | Outcome::UpstreamFailed)
                )
            })
            .map(|t| tracker.workflow.tasks[t].id.clone())
            .collect();
        let hook = if failed.is_empty() {
            Hook::Success
        } else {
            Hook::Failure
        };
        if !tracker.workflow.hooks(hook).is_empty() && !tracker.hooks_started(hook) {
            return Box::pin(self.start_hooks(run_id, hook)).await;
        }
        if tracker.hooks_running() {
            return Ok(());
        }
        let (state, error) = if failed.is_empty() {
            (RunState::Success, None)
        } else {
            (
                RunState::Failed,
                Some(format!("tasks did not succeed: {}", failed.join(", "))),
            )
        };
        if !self.store.end_run(run_id, state, error.as_deref()).await? {
            // The database knows something this view does not: a task was cleared (its new try
            // is on its way as an event) or the run was cancelled. Read the run again, once:
            // a view just read that still cannot end the run waits for the next event.
            if self.rereading_refused_end {
                warn!(
                    run_id,
                    "The run's tasks look finished but the database refused to end it."
                );
                return Ok(());
            }
            debug!(
                run_id,
                "The run did not end; reading it again from the database."
            );
            self.runs.remove(run_id);
            self.rereading_refused_end = true;
            let reread = Box::pin(self.adopt(run_id)).await;
            self.rereading_refused_end = false;
            return reread;
        }
        info!(run_id, %state, "Run ended.");
        if let Some(ended) = self.runs.remove(run_id)
            && self.config.adopt_new_runs
        {
            self.start_queued(&ended.run.workflow_id).await?;
        }
        Ok(())
    }

    /// Starts a workflow's queued runs, oldest first, while fewer than its `max_active_runs`
    /// are running.
    async fn start_queued(&mut self, workflow_id: &str) -> Result<()> {
        let queued: Vec<String> = self
            .store
            .run_ids_in_state(Some(workflow_id), RunState::Queued)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let Some(oldest) = queued.first() else {
            return Ok(());
        };
        let running = self
            .store
            .run_ids_in_state(Some(workflow_id), RunState::Running)
            .await?;
        let Some(run) = self.store.run(oldest).await? else {
            return Ok(());
        };
        let workflow = self
            .deps
            .versions
            .get(&self.store, &run.version_hash)
            .await?;
        let startable = intervals::runs_to_start(workflow.max_active_runs, running.len(), &queued);
        for id in startable {
            Box::pin(self.adopt(&id)).await?;
        }
        Ok(())
    }

    /// Takes over every run that has not ended, as `serve` does at start-up (after
    /// `recovery::recover`): running runs at once, queued ones as `max_active_runs` allows.
    pub async fn resume(&mut self) -> Result<()> {
        for (id, _) in self.store.run_ids_in_state(None, RunState::Running).await? {
            self.adopt(&id).await?;
        }
        let mut workflows: Vec<String> = self
            .store
            .run_ids_in_state(None, RunState::Queued)
            .await?
            .into_iter()
            .map(|(_, workflow)| workflow)
            .collect();
        workflows.dedup();
        workflows.sort();
        workflows.dedup();
        for workflow in workflows {
            self.start_queued(&workflow).await?;
        }
        Ok(())
    }

    /// Forgets what it knew and takes over every unfinished run again from the database.
    /// With `adopt_new_runs` that is every run; otherwise the runs it was driving.
    pub async fn reload(&mut self) -> Result<()> {
        if self.config.adopt_new_runs {
            self.runs.clear();
            return self.resume().await;
        }
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        self.runs.clear();
        for id in ids {
            self.adopt(&id).await?;
        }
        Ok(())
    }

    /// Creates a hook group's task instances and dispatches the ready ones.
    async fn start_hooks(&mut self, run_id: &str, hook: Hook) -> Result<()> {
        let Some(tracker) = self.runs.get_mut(run_id) else {
            return Ok(());
        };
        let hooks: Vec<NewTaskInstance> = tracker
            .workflow
            .hooks(hook)
            .iter()
            .map(NewTaskInstance::first_try)
            .collect();
        let why = match hook {
            Hook::Failure => "Run failed",
            Hook::Success => "Run succeeded",
            Hook::Deadline => "Run passed its deadline",
        };
        info!(
            run_id,
            hooks = hooks.len(),
            "{why}; running its {} tasks.",
            hook.key()
        );
        tracker.load(self.store.add_task_instances(run_id, &hooks).await?);
        let positions: Vec<usize> = tracker.workflow.hook_positions(hook).collect();
        self.evaluate(run_id, positions).await
    }

    /// The earliest deadline among the driven runs that have not fired theirs.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.runs.values().filter_map(Tracker::deadline_due).min()
    }

    /// Starts the `on_deadline` tasks of every driven run whose deadline is at or before
    /// `now` and has not fired; returns those runs' ids. Each run's deadline fires once: its
    /// `on_deadline` task instances, once written, are the record of it.
    pub async fn fire_deadlines(&mut self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let mut due: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, tracker)| tracker.deadline_due().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        due.sort();
        for run_id in &due {
            self.start_hooks(run_id, Hook::Deadline).await?;
        }
        Ok(due)
    }

    /// Queues retries whose delay is over and returns when the next one is due.
    async fn queue_due(&mut self) -> Result<Option<chrono::DateTime<Utc>>> {
        self.store.queue_due(Utc::now()).await?;
        Ok(self.store.next_due().await?)
    }

    /// The scheduler loop: reacts to store events until `shutdown` fires or, with
    /// `exit_when_idle`, until no run is left to drive.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let mut next_due = self.queue_due().await?;
        let reloading = self.config.reload_every.is_some();
        let mut reload = tokio::time::interval(
            self.config
                .reload_every
                .unwrap_or(std::time::Duration::from_secs(3600)),
        );
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.tick().await;
        loop {
            if self.config.exit_when_idle && self.is_idle() {
                return Ok(());
            }
            // One timer for retries and deadlines, set to whichever comes first.
            let wake = next_due.into_iter().chain(self.next_deadline()).min();
            let sleep_for = wake
                .map(|due| (due - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(sleep_for), if wake.is_some() => {
                    next_due = self.queue_due().await?;
                    self.fire_deadlines(Utc::now()).await?;
                }
                _ = reload.tick(), if reloading => {
                    self.reload().await?;
                    next_due = self.queue_due().await?;
                }
                event = events.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    let mut retry_scheduled = schedules_retry(&event);
                    self.handle(&event).await?;
                    // Drain what else is ready so a burst is handled without extra wake-ups.
                    while let Ok(event) = events.try_recv() {
                        retry_scheduled |= schedules_retry(&event);
                        self.handle(&event).await?;
                    }
                    if retry_scheduled {
                        next_due = self.queue_due().await?;
                    }
                }
            }
        }
    }
}

/// What the scheduler takes on, and when its loop ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedulerConfig {
    /// Drive runs created elsewhere (by the API, cron, triggers) as soon as they are queued.
    pub adopt_new_runs: bool,
    /// Stop once every adopted run has ended (the `run` command drives a single run).
    pub exit_when_idle: bool,
    /// Re-read every run from the database this often: the fallback for changes by other
    /// processes whose notification was lost. `None` when every writer is in this process.
    pub reload_every: Option<std::time::Duration>,
}

fn schedules_retry(event: &StoreEvent) -> bool {
    matches!(event, StoreEvent::TaskStates { changes, .. } if changes.iter().any(|c| c.state == TaskState::Scheduled))
}

#[cfg(test)]
mod tests;
