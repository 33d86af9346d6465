//! The worker: claims queued task instances from the store, runs their operators with a
//! timeout and a cancellation token, masks what they log and return, and writes their
//! completion (logs first) in batches. It meets the scheduler only in `store`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::artifacts::{ArtifactError, Artifacts, Outbox};
use crate::catalog::versions::{VersionError, Versions};
use crate::dag::{Task, Workflow};
use crate::duration::instant_after;
use crate::lifecycle::TaskState;
use crate::metric;
use crate::operators::services::Services;
use crate::operators::{LogLine, LogSink, OpContext, Operator, OperatorError};
use crate::secrets::{Masker, Secrets};
use crate::store::{
    Claim, ClaimedTask, NewArtifact, NewLogLine, NewTaskInstance, RunRecord, Store, StoreError,
    StoreEvent, TaskCompletion,
};
use crate::template::{ArtifactPaths, Templates, contains_template};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in the database as the holder of claimed task instances.
    pub name: String,
    /// How many task instances run at once.
    pub concurrency: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// Where operators get per-try scratch folders.
    pub scratch_root: PathBuf,
    /// On shutdown, how long running tries may take to finish before they are stopped and
    /// handed back to the queue (to run again, same try, after a restart).
    pub shutdown_grace: Duration,
    /// Named pools and their slot counts (`[pools]` in `sluice.toml`).
    pub pools: std::collections::BTreeMap<String, u32>,
    /// The largest outputs object (as JSON) a try may return (`[worker] max_output_bytes`).
    pub max_output_bytes: u64,
    /// The queues this worker takes tasks from; empty takes every queue.
    pub queues: Vec<String>,
    /// Take only this run's tasks (`sluice run`, which must not run other processes' work).
    pub only_run: Option<String>,
    /// How often to look for work without being told: a fallback for wake-ups lost between
    /// processes (`None` when this process is the only writer and every change is seen).
    pub poll: Option<Duration>,
}

impl WorkerConfig {
    /// The default concurrency: tasks mostly wait on processes and the network, so several
    /// per core keep the machine busy without oversubscribing it.
    pub fn default_concurrency() -> usize {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        (cpus * 8).max(8)
    }
}

/// What the worker shares with every try it runs.
#[derive(Clone)]
pub struct WorkerDeps {
    pub versions: Arc<Versions>,
    pub templates: Arc<Templates>,
    pub secrets: Arc<Secrets>,
    pub masker: Arc<Masker>,
    pub http: reqwest::Client,
    /// Configured variables (`vars` in templates).
    pub vars: Arc<serde_json::Map<String, Value>>,
    /// What operators share: the database, mailer, artifact store, run links and the
    /// launcher of other runs (`trigger`).
    pub services: Arc<Services>,
    /// Where tries keep their artifacts and read those of upstream tasks.
    pub artifacts: Artifacts,
}

/// A run's facts a try needs, cached per run.
struct RunContext {
    run: RunRecord,
    workflow: Arc<Workflow>,
    index: HashMap<String, usize>,
    /// Where relative paths in the workflow resolve.
    base_dir: PathBuf,
}

enum Message {
    Log(NewLogLine),
    /// A try ended; with the artifacts it kept (already in the artifact store) on success.
    Done(Box<TaskCompletion>, Vec<NewArtifact>),
    /// The operator is not done: the same try goes back to `scheduled` until `not_before`.
    Reschedule {
        id: i64,
        not_before: chrono::DateTime<Utc>,
    },
}

impl From<TaskCompletion> for Message {
    fn from(completion: TaskCompletion) -> Self {
        Message::Done(Box::new(completion), Vec::new())
    }
}

pub struct Worker {
    store: Store,
    config: WorkerConfig,
    deps: WorkerDeps,
    runs: HashMap<String, Arc<RunContext>>,
    /// Running tries by row id, with the token that stops them.
    in_flight: HashMap<i64, (String, CancellationToken)>,
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
    /// Shutting down: tries stopped from now on go back to the queue instead of ending.
    handing_back: bool,
    /// Runs cancelled while this worker ran some of their tries: those tries end cancelled,
    /// even during a shutdown.
    cancelled_runs: std::collections::HashSet<String>,
    /// Log lines not written yet: they go with the next completion, or on their own once
    /// `logs_due` passes, so a short try's lines and its end are one write.
    pending_logs: Vec<NewLogLine>,
    logs_due: Option<tokio::time::Instant>,
}

/// How long a log line may wait for its try's completion before it is written on its own:
/// short enough for a live log view, long enough for a short try to end first.
const LOG_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// How many log lines may wait at once before they are written anyway.
const LOG_FLUSH_LINES: usize = 2_000;

impl Worker {
    pub fn new(store: Store, config: WorkerConfig, deps: WorkerDeps) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Worker {
            store,
            config,
            deps,
            runs: HashMap::new(),
            in_flight: HashMap::new(),
            tx,
            rx,
            handing_back: false,
            cancelled_runs: Default::default(),
            pending_logs: Vec::new(),
            logs_due: None,
        }
    }

    /// Claims and runs work until `shutdown` fires; then stops running tries and records them.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let mut maybe_work = true;
        // Leases are renewed well before they run out, so one late tick does not lose them.
        let mut heartbeat = tokio::time::interval(self.config.lease / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let polling = self.config.poll.is_some();
        let mut poll = tokio::time::interval(self.config.poll.unwrap_or(Duration::from_secs(3600)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if maybe_work && !shutdown.is_cancelled() {
                maybe_work = self.claim_and_start().await?;
            }
            let logs_due = self.logs_due;
            tokio::select! {
                biased;
                message = self.rx.recv() => {
                    // The sender half lives in `self`, so the channel never closes here.
                    let Some(message) = message else { return Ok(()) };
                    self.write(message).await?;
                    // A freed slot matters if the last claim filled every slot (then
                    // `maybe_work` is still set), or if pools held queued work back; anything
                    // queued since says so by an event.
                    if !self.config.pools.is_empty() {
                        maybe_work = true;
                    }
                }
                event = events.recv() => {
                    match event {
                        Some(StoreEvent::WorkQueued | StoreEvent::Missed) => maybe_work = true,
                        Some(StoreEvent::RunCancelRequested { run_id }) => self.stop_run(&run_id),
                        Some(StoreEvent::RunState { run_id, state }) if state.is_final() => {
                            self.runs.remove(&run_id);
                            // Scratch files (outputs, pid files) are only needed while tries run.
                            if !self.in_flight.values().any(|(owner, _)| *owner == run_id) {
                                let _ = std::fs::remove_dir_all(self.config.scratch_root.join(&run_id));
                            }
                        }
                        Some(_) => {}
                        None => return Ok(()),
                    }
                }
                _ = heartbeat.tick(), if !self.in_flight.is_empty() => self.heartbeat().await?,
                _ = tokio::time::sleep_until(logs_due.unwrap_or_else(tokio::time::Instant::now)),
                    if logs_due.is_some() => self.flush_logs().await?,
                _ = poll.tick(), if polling => maybe_work = true,
                _ = shutdown.cancelled() => return self.stop().await,
            }
        }
    }

    /// Renews the leases of running tries and stops those this worker no longer holds: their
    /// lease ran out (a stall, a network partition) and another try replaced them, so running
    /// on would only do the work twice. Their completions will be refused anyway.
    async fn heartbeat(&mut self) -> Result<()> {
        let ids: Vec<i64> = self.in_flight.keys().copied().collect();
        let held = self
            .store
            .renew_leases(&self.config.name, &ids, self.config.lease)
            .await?;
        for id in ids.iter().filter(|id| !held.contains(id)) {
            if let Some((run_id, token)) = self.in_flight.get(id) {
                warn!(run_id, id, "Lost the lease on a running try; stopping it.");
                metrics::counter!(metric::LEASES_LOST).increment(1);
                token.cancel();
            }
        }
        Ok(())
    }

    /// Lets running tries finish within the grace period, then stops the rest and hands them
    /// back to the queue.
    async fn stop(mut self) -> Result<()> {
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        while !self.in_flight.is_empty() {
            tokio::select! {
                message = self.rx.recv() => {
                    let Some(message) = message else { return Ok(()) };
                    self.write(message).await?;
                }
                _ = &mut grace => break,
            }
        }
        if self.in_flight.is_empty() {
            return self.flush_logs().await;
        }
        self.handing_back = true;
        for (_, token) in self.in_flight.values() {
            token.cancel();
        }
        while !self.in_flight.is_empty() {
            let Some(message) = self.rx.recv().await else {
                break;
            };
            self.write(message).await?;
        }
        self.flush_logs().await
    }

    /// Writes the log lines that were waiting for a completion.
    async fn flush_logs(&mut self) -> Result<()> {
        self.logs_due = None;
        if !self.pending_logs.is_empty() {
            let logs = std::mem::take(&mut self.pending_logs);
            self.store.append_logs(&logs).await?;
        }
        Ok(())
    }

    /// Claims as many task instances as there are free slots and starts them. Returns whether
    /// more work may be waiting.
    async fn claim_and_start(&mut self) -> Result<bool> {
        let free = self.config.concurrency.saturating_sub(self.in_flight.len());
        if free == 0 {
            return Ok(true);
        }
        let claimed = self
            .store
            .claim(&Claim {
                worker: &self.config.name,
                limit: free,
                lease: self.config.lease,
                pools: &self.config.pools,
                queues: &self.config.queues,
                run_id: self.config.only_run.as_deref(),
            })
            .await?;
        let more = claimed.len() == free;
        metrics::counter!(metric::CLAIMED).increment(claimed.len() as u64);
        for task in claimed {
            self.start(task).await;
        }
        metrics::gauge!(metric::TRIES_RUNNING).set(self.in_flight.len() as f64);
        Ok(more)
    }

    async fn start(&mut self, claimed: ClaimedTask) {
        let run = match self.run_context(&claimed.run_id).await {
            Ok(run) => run,
            Err(error) => {
                // The try cannot even start; record why instead of leaving it running.
                let message = format!("cannot load the run's workflow: {error}");
                let _ = self.tx.send(failed(&claimed, message, None).into());
                self.in_flight.insert(
                    claimed.id,
                    (claimed.run_id.clone(), CancellationToken::new()),
                );
                return;
            }
        };
        let cancel = CancellationToken::new();
        self.in_flight
            .insert(claimed.id, (claimed.run_id.clone(), cancel.clone()));
        let tx = self.tx.clone();
        let deps = self.deps.clone();
        let store = self.store.clone();
        let place = TryPlace {
            scratch_dir: self.config.scratch_root.join(&claimed.run_id),
            max_output_bytes: self.config.max_output_bytes,
        };
        tokio::spawn(async move {
            let ended = execute(&store, &deps, &run, &claimed, cancel, place, &tx).await;
            let _ = tx.send(ended);
        });
    }

    async fn run_context(&mut self, run_id: &str) -> Result<Arc<RunContext>, String> {
        if let Some(found) = self.runs.get(run_id) {
            return Ok(found.clone());
        }
        let run = match self.store.run(run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => return Err(format!("run `{run_id}` does not exist")),
            Err(e) => return Err(e.to_string()),
        };
        let workflow = self
            .deps
            .versions
            .get(&self.store, &run.version_hash)
            .await
            .map_err(|e: VersionError| e.to_string())?;
        let base_dir = self
            .store
            .workflow_version(&run.version_hash)
            .await
            .ok()
            .flatten()
            .and_then(|(path, _)| {
                std::path::Path::new(&path)
                    .parent()
                    .map(|p| p.to_path_buf())
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let index = workflow
            .all_tasks()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let context = Arc::new(RunContext {
            run,
            workflow,
            index,
            base_dir,
        });
        self.runs.insert(run_id.to_owned(), context.clone());
        Ok(context)
    }

    fn stop_run(&mut self, run_id: &str) {
        for (owner, token) in self.in_flight.values() {
            if owner == run_id {
                token.cancel();
                self.cancelled_runs.insert(run_id.to_owned());
            }
        }
    }

    /// Writes a message and everything else already waiting, logs before completions, in as
    /// few statements as possible.
    async fn write(&mut self, first: Message) -> Result<()> {
        let mut logs = std::mem::take(&mut self.pending_logs);
        let mut completions = Vec::new();
        let mut artifacts = Vec::new();
        let mut reschedules = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Log(line) => logs.push(line),
                Message::Done(completion, kept) => {
                    completions.push(*completion);
                    artifacts.extend(kept);
                }
                Message::Reschedule { id, not_before } => reschedules.push((id, not_before)),
            }
            next = self.rx.try_recv().ok();
        }
        if self.handing_back {
            // Stopped by the shutdown, not by the run: back to the queue, same try.
            let (back, rest): (Vec<_>, Vec<_>) = completions.into_iter().partition(|c| {
                c.state == TaskState::Cancelled && !self.cancelled_runs.contains(&c.run_id)
            });
            completions = rest;
            let ids: Vec<i64> = back.iter().map(|c| c.id).collect();
            self.store.hand_back(&ids).await?;
            for id in ids {
                self.in_flight.remove(&id);
            }
        }
        // A try's error also goes to its log, written with its end: an error that stops a
        // task before it produces output (a template that does not render) would otherwise
        // leave the log empty.
        for completion in &completions {
            let said = match completion.state {
                TaskState::Failed => "The task failed",
                TaskState::UpForRetry => "The try failed and will be retried",
                _ => continue,
            };
            if let Some(error) = &completion.error {
                logs.push(NewLogLine {
                    run_id: completion.run_id.clone(),
                    task_id: completion.task_id.clone(),
                    try_number: completion.try_number,
                    stream: crate::operators::LogStream::System.as_str(),
                    line: format!("{said}: {error}"),
                    logged_at: completion.ended_at,
                });
            }
        }
        if completions.is_empty() && reschedules.is_empty() {
            // Lines alone wait for their try's end (or the flush delay), so a short try is
            // one write instead of two.
            self.pending_logs = logs;
            if self.pending_logs.len() >= LOG_FLUSH_LINES {
                self.flush_logs().await?;
            } else {
                self.logs_due
                    .get_or_insert_with(|| tokio::time::Instant::now() + LOG_FLUSH_DELAY);
            }
        } else if completions.is_empty() {
            self.logs_due = None;
            self.store.append_logs(&logs).await?;
        } else {
            self.logs_due = None;
            let accepted = self
                .store
                .complete_with_artifacts(&logs, &completions, &artifacts)
                .await?;
            if accepted.len() != completions.len() {
                let rejected = completions.len() - accepted.len();
                warn!(
                    rejected,
                    "Completions were rejected: their tries had been taken over."
                );
                metrics::counter!(metric::COMPLETIONS_REJECTED).increment(rejected as u64);
            }
            for completion in &completions {
                self.in_flight.remove(&completion.id);
            }
        }
        if !reschedules.is_empty() {
            // After the logs above, so a sensor's log is never behind its state.
            self.store.reschedule(&reschedules).await?;
            for (id, _) in &reschedules {
                self.in_flight.remove(id);
            }
        }
        metrics::gauge!(metric::TRIES_RUNNING).set(self.in_flight.len() as f64);
        if !self.cancelled_runs.is_empty() {
            let in_flight = &self.in_flight;
            self.cancelled_runs
                .retain(|run| in_flight.values().any(|(owner, _)| owner == run));
        }
        Ok(())
    }
}

fn failed(claimed: &ClaimedTask, error: String, exit_code: Option<i32>) -> TaskCompletion {
    TaskCompletion {
        id: claimed.id,
        run_id: claimed.run_id.clone(),
        task_id: claimed.task_id.clone(),
        try_number: claimed.try_number,
        state: TaskState::Failed,
        exit_code,
        error: Some(error),
        outputs: None,
        warnings: Vec::new(),
        summary: None,
        ended_at: Utc::now(),
        retry: None,
    }
}

/// Where a try runs and what it may hand back, from `WorkerConfig`.
#[derive(Debug, Clone)]
struct TryPlace {
    /// The run's scratch folder.
    scratch_dir: PathBuf,
    /// The largest outputs object (as JSON) the try may return.
    max_output_bytes: u64,
}

/// Refuses outputs larger than the limit: they are stored with the try and read by every
/// downstream render and page, so a file's worth of JSON belongs in an artifact instead. No
/// retry makes the same outputs smaller, so this is a rejection.
fn within_output_limit(
    completion: crate::operators::Completion,
    max_output_bytes: u64,
) -> std::result::Result<crate::operators::Completion, OperatorError> {
    let size = serde_json::to_vec(&completion.outputs).map_or(0, |json| json.len() as u64);
    if size > max_output_bytes {
        return Err(OperatorError::rejected(format!(
            "the task's outputs are {size} bytes of JSON, more than the limit of {max_output_bytes} bytes \
             (`[worker] max_output_bytes`); keep large results as artifacts",
        )));
    }
    Ok(completion)
}

/// Counts a successful try's warnings for `/metrics`.
fn count_warnings(workflow: &str, operator: Operator, completion: &TaskCompletion) {
    if completion.state == TaskState::Success && !completion.warnings.is_empty() {
        metrics::counter!(
            metric::TASK_WARNINGS,
            "workflow" => workflow.to_owned(),
            "operator" => operator.name()
        )
        .increment(completion.warnings.len() as u64);
    }
}

/// Runs one try to its end and says how it ended. Never fails: every problem becomes the
/// try's error.
async fn execute(
    store: &Store,
    deps: &WorkerDeps,
    run: &RunContext,
    claimed: &ClaimedTask,
    cancel: CancellationToken,
    place: TryPlace,
    tx: &mpsc::UnboundedSender<Message>,
) -> Message {
    let TryPlace {
        scratch_dir,
        max_output_bytes,
    } = place;
    let Some(&index) = run.index.get(&claimed.task_id) else {
        let message = format!(
            "task `{}` is not in the run's workflow version",
            claimed.task_id
        );
        return failed(claimed, message, None).into();
    };
    let Some(task) = run.workflow.task_at(index) else {
        let message = format!(
            "task `{}` is not in the run's workflow version",
            claimed.task_id
        );
        return failed(claimed, message, None).into();
    };
    let Some(operator) = Operator::from_name(&task.operator) else {
        return failed(
            claimed,
            format!("unknown operator `{}`", task.operator),
            None,
        )
        .into();
    };
    let (with, env) = match render(store, deps, run, claimed, task, &scratch_dir).await {
        Ok(rendered) => rendered,
        Err((message, retryable)) => {
            return finish(claimed, task, Err((message, None, retryable)), &deps.masker).into();
        }
    };
    let outbox = Outbox::for_try(&scratch_dir, &claimed.task_id, claimed.try_number);
    let artifacts_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (log_tx, mut log_rx) = mpsc::unbounded_channel();
    let ctx = OpContext {
        run_id: claimed.run_id.clone(),
        workflow: run.workflow.id.clone(),
        task: claimed.task_id.clone(),
        try_number: claimed.try_number,
        env,
        base_dir: run.base_dir.clone(),
        scratch_dir: scratch_dir.clone(),
        log: LogSink::new(log_tx),
        http: deps.http.clone(),
        cancel: cancel.clone(),
        masker: deps.masker.clone(),
        first_started_at: claimed.started_at,
        services: deps.services.clone(),
        artifacts_requested: artifacts_requested.clone(),
    };
    let started = Instant::now();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = task.timeout.map(|limit| {
        let cancel = cancel.clone();
        let timed_out = timed_out.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
            cancel.cancel();
        })
    });
    let forward = |line: LogLine| {
        let text = deps.masker.mask(&line.text).into_owned();
        let _ = tx.send(Message::Log(NewLogLine {
            run_id: claimed.run_id.clone(),
            task_id: claimed.task_id.clone(),
            try_number: claimed.try_number,
            stream: line.stream.as_str(),
            line: text,
            logged_at: Utc::now(),
        }));
    };
    let result = {
        let operation = operator.run(&ctx, with);
        tokio::pin!(operation);
        loop {
            tokio::select! {
                result = &mut operation => break result,
                Some(line) = log_rx.recv() => forward(line),
            }
        }
    };
    // Dropping the context closes the log channel, so the drain below ends.
    drop(ctx);
    while let Ok(line) = log_rx.try_recv() {
        forward(line);
    }
    if let Some(timer) = timer {
        timer.abort();
    }
    let elapsed = started.elapsed();
    metrics::histogram!(metric::TASK_DURATION, "operator" => operator.name())
        .record(elapsed.as_secs_f64());
    debug!(task = %claimed.task_id, elapsed_ms = elapsed.as_millis() as u64, "Try ended.");
    let result = result.and_then(|completion| within_output_limit(completion, max_output_bytes));
    let outcome = match result {
        Ok(completion)
            if !task.artifacts.is_empty()
                || artifacts_requested.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            match keep_artifacts(store, deps, run, claimed, task, &outbox).await {
                Ok(kept) => {
                    if !kept.is_empty() {
                        // Stored now; the copies need not wait for the run's scratch cleanup.
                        let _ = tokio::fs::remove_dir_all(outbox.dir()).await;
                    }
                    let completion = finish(claimed, task, Ok(completion), &deps.masker);
                    count_warnings(&run.workflow.id, operator, &completion);
                    return Message::Done(Box::new(completion), kept);
                }
                Err((message, retryable)) => Err((message, None, retryable)),
            }
        }
        Ok(completion) => Ok(completion),
        Err(OperatorError::Cancelled) if timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
            let limit = task
                .timeout
                .map(crate::duration::HumanDuration)
                .unwrap_or_default();
            Err((
                format!("the task timed out after {limit} and was killed"),
                None,
                true,
            ))
        }
        Err(OperatorError::Cancelled) => {
            return TaskCompletion {
                state: TaskState::Cancelled,
                error: Some("the run was cancelled; the task was stopped".into()),
                ..failed(claimed, String::new(), None)
            }
            .into();
        }
        // A `with` that does not fit the operator cannot succeed on a retry.
        Err(error @ OperatorError::Config { .. }) => {
            let message = error.to_string();
            return failed(claimed, deps.masker.mask(&message).into_owned(), None).into();
        }
        Err(OperatorError::Failed { message, exit_code }) => Err((message, exit_code, true)),
        // No retry can change it: the task fails now, and the reason is its summary.
        Err(OperatorError::Rejected { message }) => {
            let message = deps.masker.mask(&message).into_owned();
            return TaskCompletion {
                summary: Some(message.clone()),
                ..failed(claimed, message, None)
            }
            .into();
        }
        Err(OperatorError::Reschedule { after }) => {
            return Message::Reschedule {
                id: claimed.id,
                not_before: instant_after(Utc::now(), after),
            };
        }
    };
    let completion = finish(claimed, task, outcome, &deps.masker);
    count_warnings(&run.workflow.id, operator, &completion);
    completion.into()
}

/// Collects what a successful try kept (its artifacts folder and `artifacts:` globs) and
/// stores the blobs. Any failure fails the try; one of the store (an outage) is retryable,
/// one of the files (a name, an escape, a limit) is not.
async fn keep_artifacts(
    store: &Store,
    deps: &WorkerDeps,
    run: &RunContext,
    claimed: &ClaimedTask,
    task: &Task,
    outbox: &Outbox,
) -> std::result::Result<Vec<NewArtifact>, (String, bool)> {
    let refused = |e: ArtifactError| {
        let retryable = matches!(e, ArtifactError::Io { .. } | ArtifactError::Join(_));
        (format!("cannot keep the task's artifacts: {e}"), retryable)
    };
    let files = crate::artifacts::collect(
        outbox,
        &task.artifacts,
        &run.base_dir,
        deps.artifacts.limits,
    )
    .await
    .map_err(refused)?;
    if files.is_empty() {
        // Most tries keep nothing: no query, no upload.
        return Ok(Vec::new());
    }
    let run_total = store
        .run_artifact_bytes(&claimed.run_id)
        .await
        .map_err(|e| (format!("cannot read the run's artifacts: {e}"), true))?;
    crate::artifacts::check_run_limit(&files, run_total, deps.artifacts.limits).map_err(refused)?;
    let mut kept = Vec::with_capacity(files.len());
    for file in files {
        let stored = deps.artifacts.put_file(&file.path).await.map_err(|e| {
            (
                format!("cannot keep artifact `{}`: {e}", file.name),
                !matches!(e, ArtifactError::Name(_)),
            )
        })?;
        kept.push(NewArtifact {
            try_id: claimed.id,
            name: file.name,
            size: stored.size,
            sha256: stored.sha256,
            media_type: file.media_type,
        });
    }
    Ok(kept)
}

/// Turns an operator's result into a completion: masked outputs on success; on failure a
/// retry (when tries are left and the failure may be transient) or a final failure.
fn finish(
    claimed: &ClaimedTask,
    task: &Task,
    outcome: std::result::Result<crate::operators::Completion, (String, Option<i32>, bool)>,
    masker: &Masker,
) -> TaskCompletion {
    match outcome {
        Ok(completion) => {
            let mut outputs = Value::Object(completion.outputs);
            masker.mask_json(&mut outputs);
            let Value::Object(outputs) = outputs else {
                unreachable!("masking keeps the shape")
            };
            TaskCompletion {
                state: TaskState::Success,
                exit_code: completion.exit_code,
                error: None,
                outputs: Some(outputs),
                warnings: completion
                    .warnings
                    .iter()
                    .map(|warning| masker.mask(warning).into_owned())
                    .collect(),
                summary: completion
                    .summary
                    .map(|summary| masker.mask(&summary).into_owned()),
                ..failed(claimed, String::new(), None)
            }
        }
        Err((message, exit_code, retryable)) => {
            let message = masker.mask(&message).into_owned();
            let next_try = claimed.try_number + 1;
            // Retries count from the task's last clear (`attempt`), not from try 1.
            if retryable && claimed.attempt <= task.retries {
                let delay = task.retry_delay_before(claimed.attempt + 1);
                let not_before = instant_after(Utc::now(), delay);
                TaskCompletion {
                    state: TaskState::UpForRetry,
                    retry: Some(NewTaskInstance::next_try(task, next_try, not_before)),
                    ..failed(claimed, message, exit_code)
                }
            } else {
                failed(claimed, message, exit_code)
            }
        }
    }
}

/// Renders the task's `with` and `env`. Tasks without templates skip the context entirely.
/// Artifacts of upstream tasks that the templates use are fetched into the run's scratch
/// folder (cached by digest) before the operator starts. An error says whether a retry may
/// help: fetching from the store may, a broken template will not.
async fn render(
    store: &Store,
    deps: &WorkerDeps,
    run: &RunContext,
    claimed: &ClaimedTask,
    task: &Task,
    scratch_dir: &std::path::Path,
) -> std::result::Result<(Value, Vec<(String, String)>), (String, bool)> {
    let mut with_sources = Vec::new();
    template_strings(&task.with, &mut with_sources);
    let with_templated = !with_sources.is_empty();
    let mut sources = with_sources;
    sources.extend(
        task.env
            .values()
            .map(String::as_str)
            .filter(|v| contains_template(v)),
    );
    if sources.is_empty() {
        let env = task
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return Ok((task.with.clone(), env));
    }
    // Only the results (and artifacts) of the tasks the templates name are read: a try's
    // render then costs the same in the thousandth task of a run as in the first.
    let reads = crate::template::tasks_read(sources);
    let results = store
        .task_results_of(&claimed.run_id, reads.as_ref())
        .await
        .map_err(|e| (e.to_string(), false))?;
    let upstream_artifacts = if reads.as_ref().is_some_and(|tasks| tasks.is_empty()) {
        Vec::new()
    } else {
        store
            .latest_artifacts(&claimed.run_id)
            .await
            .map_err(|e| (e.to_string(), true))?
    };
    let mut artifact_paths = ArtifactPaths::default();
    let mut by_path = HashMap::new();
    for artifact in &upstream_artifacts {
        let local = crate::artifacts::cached_path(scratch_dir, &artifact.sha256, &artifact.name);
        let local = local.to_string_lossy().into_owned();
        artifact_paths.insert(&artifact.task_id, &artifact.name, local.clone());
        by_path.insert(local, artifact);
    }
    let mut context = run.run.render_context(results, &deps.secrets, &deps.vars);
    context.run.try_number = claimed.try_number;
    context.run.url = Some(deps.services.run_url(&claimed.run_id));
    if run.workflow.task_index(&task.id).is_none() {
        // A hook: it reports on the run's failed tasks.
        context.failed_tasks = store
            .task_failures(&claimed.run_id)
            .await
            .map_err(|e| (e.to_string(), false))?
            .iter()
            .filter(|f| run.workflow.task_index(&f.task_id).is_some())
            .map(|f| f.to_context())
            .collect();
    }
    let context = context.to_value_with(&artifact_paths);
    // Off the async threads and under the render budget: a template that loops for ever
    // fails this task instead of stalling the worker's other tasks, leases and shutdown.
    let with = if with_templated {
        let (with, context) = (task.with.clone(), context.clone());
        let deferred =
            Operator::from_name(&task.operator).map_or(&[][..], Operator::deferred_fields);
        deps.templates
            .off_thread("with", move |t| {
                t.render_field_deferring("with", &with, &context, deferred)
            })
            .await
            .map_err(|e| (format!("cannot render {e}"), false))?
    } else {
        task.with.clone()
    };
    let mut env = Vec::with_capacity(task.env.len());
    for (key, value) in &task.env {
        let value = if contains_template(value) {
            let field = format!("env.{key}");
            let (source, context) = (value.clone(), context.clone());
            deps.templates
                .off_thread(&field.clone(), move |t| {
                    t.render_str_field(&field, &source, &context)
                })
                .await
                .map_err(|e| (format!("cannot render {e}"), false))?
        } else {
            value.clone()
        };
        env.push((key.clone(), value));
    }
    for local in artifact_paths.used() {
        let Some(artifact) = by_path.get(&local) else {
            continue;
        };
        deps.artifacts
            .fetch_to(&artifact.sha256, std::path::Path::new(&local))
            .await
            .map_err(|e| {
                (
                    format!(
                        "cannot fetch artifact `{}` of task `{}`: {e}",
                        artifact.name, artifact.task_id
                    ),
                    true,
                )
            })?;
    }
    Ok((with, env))
}

/// The template strings in `with` (strings without template syntax are left out).
fn template_strings<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
    match value {
        Value::String(s) if contains_template(s) => into.push(s),
        Value::Array(items) => items.iter().for_each(|v| template_strings(v, into)),
        Value::Object(map) => map.values().for_each(|v| template_strings(v, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn deps() -> WorkerDeps {
        rustls::crypto::ring::default_provider()
            .install_default()
            .ok();
        let secrets = Arc::new(Secrets::from_pairs([]));
        WorkerDeps {
            vars: Arc::default(),
            versions: Arc::new(Versions::new()),
            templates: Arc::new(Templates::new()),
            masker: Arc::new(secrets.masker()),
            secrets,
            http: reqwest::Client::new(),
            services: Arc::default(),
            artifacts: Artifacts::open(
                &crate::artifacts::Location::Folder(std::env::temp_dir().join("sluice-artifacts")),
                Default::default(),
            )
            .expect("a local artifact store"),
        }
    }

    /// A `shell` task `t` without retries.
    fn shell_task() -> Task {
        Task {
            id: "t".into(),
            operator: "shell".into(),
            with: Value::Null,
            needs: vec![],
            trigger_rule: crate::lifecycle::TriggerRule::AllSuccess,
            condition: None,
            retries: 0,
            retry_delay: Duration::ZERO,
            retry_backoff: crate::dag::Backoff::Fixed,
            max_retry_delay: None,
            timeout: None,
            pool: None,
            queue: "default".into(),
            priority: 0,
            env: Default::default(),
            artifacts: Vec::new(),
        }
    }

    /// Regression: a year-long retry delay doubled by backoff overflowed the date of the next
    /// try, which panicked the try's task: the failure was never reported and the run hung.
    #[test]
    fn a_failure_with_the_longest_backoff_schedules_its_retry() {
        let year = crate::duration::MAX_DURATION;
        let task = Task {
            retries: 61,
            retry_delay: year,
            retry_backoff: crate::dag::Backoff::Exponential,
            ..shell_task()
        };
        let masker = Secrets::from_pairs([]).masker();
        for try_number in 1..=60 {
            let claimed = ClaimedTask {
                id: 1,
                run_id: "r".into(),
                task_id: "t".into(),
                try_number,
                attempt: try_number,
                started_at: Utc::now(),
            };
            let before = Utc::now();
            let completion = finish(
                &claimed,
                &task,
                Err(("exit 1".into(), Some(1), true)),
                &masker,
            );
            assert_eq!(completion.state, TaskState::UpForRetry, "try {try_number}");
            let not_before = completion
                .retry
                .and_then(|retry| retry.not_before)
                .expect("the retry has a date");
            let delay = (not_before - before).to_std().expect("in the future");
            assert!(
                delay >= year && delay <= year + Duration::from_secs(60),
                "try {try_number}: retry after {delay:?}"
            );
        }
    }

    fn claimed_try() -> ClaimedTask {
        ClaimedTask {
            id: 1,
            run_id: "r".into(),
            task_id: "t".into(),
            try_number: 1,
            attempt: 1,
            started_at: Utc::now(),
        }
    }

    #[test]
    fn warnings_and_the_summary_are_kept_masked_with_a_success() {
        let task = shell_task();
        let masker = Secrets::from_pairs([("KEY".to_owned(), "sk-123".to_owned())]).masker();
        let completion = crate::operators::Completion {
            warnings: vec![
                "cost 0.61 > 0.50 with sk-123".into(),
                "3 rows skipped".into(),
            ],
            summary: Some("score 0.9 (sk-123)".into()),
            ..crate::operators::Completion::default()
        };
        let done = finish(&claimed_try(), &task, Ok(completion), &masker);
        assert_eq!(done.state, TaskState::Success);
        assert_eq!(
            done.warnings,
            ["cost 0.61 > 0.50 with ***", "3 rows skipped"]
        );
        assert_eq!(done.summary.as_deref(), Some("score 0.9 (***)"));
    }

    #[test]
    fn outputs_over_the_limit_are_a_rejection_naming_the_size_and_the_limit() {
        let limits = 20;
        let mut outputs = crate::operators::Outputs::new();
        outputs.insert("a".into(), Value::from(1));
        let small = crate::operators::Completion::from(outputs.clone());
        assert!(within_output_limit(small, limits).is_ok());
        outputs.insert("blob".into(), Value::from("x".repeat(40)));
        let size = serde_json::to_vec(&outputs).expect("json").len();
        let large = crate::operators::Completion::from(outputs);
        match within_output_limit(large, limits) {
            Err(OperatorError::Rejected { message }) => {
                assert!(
                    message.contains(&format!("{size} bytes"))
                        && message.contains("limit of 20 bytes")
                        && message.contains("max_output_bytes"),
                    "{message}"
                );
            }
            other => panic!("not a rejection: {other:?}"),
        }
    }

    #[test]
    fn warnings_of_successful_tries_are_counted_by_workflow_and_operator() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let success = TaskCompletion {
            state: TaskState::Success,
            error: None,
            warnings: vec!["one".into(), "two".into()],
            ..failed(&claimed_try(), String::new(), None)
        };
        let failure = TaskCompletion {
            warnings: vec!["not counted".into()],
            ..failed(&claimed_try(), "boom".into(), None)
        };
        metrics::with_local_recorder(&recorder, || {
            count_warnings("evals", Operator::Shell, &success);
            count_warnings("evals", Operator::Shell, &failure);
        });
        let text = handle.render();
        assert!(
            text.contains(&format!(
                "{}{{workflow=\"evals\",operator=\"shell\"}} 2",
                metric::TASK_WARNINGS
            )),
            "{text}"
        );
    }

    /// Regression: a worker that had just looked for work ignored shutdown and never returned.
    #[tokio::test]
    async fn shutdown_returns_when_idle_after_looking_for_work() {
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let config = WorkerConfig {
            name: "w".into(),
            concurrency: 4,
            lease: Duration::from_secs(30),
            scratch_root: std::env::temp_dir(),
            shutdown_grace: Duration::ZERO,
            pools: Default::default(),
            max_output_bytes: crate::config::DEFAULT_MAX_OUTPUT_BYTES,
            queues: Vec::new(),
            only_run: None,
            poll: None,
        };
        let worker = Worker::new(store.clone(), config, deps());
        let stop = CancellationToken::new();
        let events = store.subscribe();
        let handle = tokio::spawn(worker.run(events, stop.clone()));
        store.publish(StoreEvent::WorkQueued);
        stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), handle).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the worker did not stop: {result:?}"
        );
    }
}
