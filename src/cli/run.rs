//! `sluice run FILE`: one run in the foreground, with live progress on stderr and, with
//! `--json`, one JSON object on stdout at the end.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{DatabaseArgs, EXIT_USAGE, Shared};
use crate::catalog;
use crate::catalog::launch::{LaunchError, RunRequest, launch};
use crate::dag::Workflow;
use crate::lifecycle::{RunState, TaskState};
use crate::params;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::{Store, StoreEvent, TaskInstanceRecord};
use crate::worker::{Worker, WorkerConfig};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file to run.
    pub file: PathBuf,
    /// A run parameter, parsed by its declared type (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print one JSON object describing the run on stdout when it ends.
    #[arg(long)]
    pub json: bool,
    /// How many tasks may run at once (default: 16 per CPU, at least 32).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

pub async fn execute(config: Option<&std::path::Path>, args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = args.database.settings(config)?;
    // Said in the same words as `validate` says it, rather than as a file position.
    if !args.file.exists() {
        eprintln!(
            "error: {}",
            catalog::CatalogError::Missing(args.file.clone())
        );
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let workflow = match catalog::load_file(&args.file) {
        Ok(workflow) => Arc::new(workflow),
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let given = match parse_params(&workflow, &args.params) {
        Ok(p) => p,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let task_config = settings.config.clone();
    tokio::task::spawn_blocking(move || super::install_task_user(&task_config)).await??;
    let shared = Shared::new(&settings.config)?;
    let masker = shared.masker.clone();
    let store = Store::open(&settings.store()).await?;
    let path = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    shared.versions.insert(workflow.clone());

    // Subscribe before the run exists, so no event about it is missed.
    let scheduler_events = store.subscribe();
    let worker_events = store.subscribe();
    let progress_events = store.subscribe();
    let retry_mail = shared.retry_mail(&settings.config, &store);
    let retry_mail_events = retry_mail.as_ref().map(|_| store.subscribe());
    let mut request = RunRequest::now("manual", given);
    request.triggered_by = std::env::var("USER").ok();
    let run_id = match launch(&store, &workflow, &path.to_string_lossy(), request).await {
        Ok(id) => id,
        Err(LaunchError::Params(problems)) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return Ok(ExitCode::from(EXIT_USAGE));
        }
        Err(e) => return Err(e.into()),
    };

    let mut scheduler = Scheduler::new(
        store.clone(),
        shared.scheduler_deps(),
        SchedulerConfig {
            adopt_new_runs: false,
            exit_when_idle: true,
            reload_every: None,
        },
    );
    scheduler.adopt(&run_id).await?;
    let stop_scheduler = CancellationToken::new();
    let scheduler_task = tokio::spawn(scheduler.run(scheduler_events, stop_scheduler.clone()));

    // Retry notices go out while the run goes on; what the listener had not got to when the
    // run ended is caught up below.
    let stop_retry_mail = CancellationToken::new();
    let retry_mail_task = match (retry_mail.clone(), retry_mail_events) {
        (Some(service), Some(events)) => Some(tokio::spawn(service.run(
            events,
            Some(run_id.clone()),
            stop_retry_mail.clone(),
        ))),
        _ => None,
    };

    let scratch_root = std::env::temp_dir().join(format!("sluice-{}", std::process::id()));
    let worker = Worker::new(
        store.clone(),
        WorkerConfig {
            name: format!("run-{}", std::process::id()),
            concurrency: args
                .concurrency
                .unwrap_or_else(WorkerConfig::default_concurrency)
                .max(1),
            lease: Duration::from_secs(60),
            scratch_root: scratch_root.clone(),
            // Tries still running here belong to a cancelled run: stop them at once.
            shutdown_grace: Duration::ZERO,
            pools: settings.config.pools.clone(),
            max_output_bytes: settings.config.worker.max_output_bytes,
            // One run in one process: every queue, and every change is heard.
            queues: Vec::new(),
            only_run: Some(run_id.clone()),
            poll: None,
        },
        // `run` has no catalog of other workflows to start: `trigger` needs `serve`.
        shared.worker_deps(&store, None)?,
    );
    let stop_worker = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(worker_events, stop_worker.clone()));

    let progress = Progress::new(workflow.tasks.len());
    // The run's final state is read back from the database below; this only waits for it.
    tokio::select! {
        _ = progress.follow(&run_id, progress_events) => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("Cancelling the run…");
            store.cancel_run(&run_id, "cancelled by the user (Ctrl-C)").await?;
        }
    }
    // Stop running tries (only left over after a cancel) and wait until their ends are written.
    stop_worker.cancel();
    worker_task
        .await
        .context("the worker stopped unexpectedly")??;
    stop_scheduler.cancel();
    scheduler_task
        .await
        .context("the scheduler stopped unexpectedly")??;
    let _ = std::fs::remove_dir_all(&scratch_root);
    stop_retry_mail.cancel();
    if let Some(task) = retry_mail_task {
        task.await
            .context("the retry notice service stopped unexpectedly")??;
    }
    if let Some(retry_mail) = &retry_mail {
        retry_mail.catch_up(&run_id).await?;
    }
    if let Some(failure_mail) = shared.failure_mail(&settings.config, &store) {
        failure_mail.run_once(&run_id).await?;
    }

    let run = store
        .run(&run_id)
        .await?
        .context("the run disappeared from the database")?;
    let instances = store.task_instances(&run_id).await?;
    if args.json {
        let summary = summarize(&run.id, &workflow, run.state, &instances);
        println!("{}", masker.mask(&serde_json::to_string(&summary)?));
    }
    if run.state != RunState::Success {
        let logs_command = logs_command(&run.id, &args.database);
        report_failed_tasks(&store, &run.id, &instances, &masker, &logs_command).await?;
    }
    let outcome = super::run_outcome(run.state);
    if let Some(error) = &run.error {
        eprintln!("Run {} {outcome}: {}", run.id, masker.mask(error));
    } else {
        eprintln!("Run {} {outcome}.", run.id);
    }
    Ok(if run.state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How many of a failed try's last stderr lines the summary shows.
const STDERR_TAIL: usize = 10;

/// The `sluice logs` command that shows a run's logs from this same database.
fn logs_command(run_id: &str, database: &DatabaseArgs) -> String {
    let mut command = format!("sluice logs {}", super::shell_word(run_id));
    // A `--database` flag must be repeated; the same value from the environment need not.
    if let Some(url) = &database.url
        && crate::secrets::credential("SLUICE_DATABASE_URL")
            .and_then(|value| value.into_string().ok())
            .as_ref()
            != Some(url)
    {
        command.push_str(&format!(" --database {}", super::shell_word(url)));
    }
    command
}

/// Prints, for each task whose last try failed, its error, exit code and the end of its
/// stderr, and the command that shows the whole log: what someone debugging a run needs
/// first, without opening the UI.
async fn report_failed_tasks(
    store: &Store,
    run_id: &str,
    instances: &[TaskInstanceRecord],
    masker: &crate::secrets::Masker,
    logs_command: &str,
) -> anyhow::Result<()> {
    let mut latest: BTreeMap<&str, &TaskInstanceRecord> = BTreeMap::new();
    for ti in instances {
        latest.insert(&ti.task_id, ti);
    }
    let mut out = String::new();
    for ti in instances {
        let is_latest = latest
            .get(ti.task_id.as_str())
            .is_some_and(|l| l.id == ti.id);
        if !is_latest || ti.state != TaskState::Failed {
            continue;
        }
        let exit = ti
            .exit_code
            .map(|code| format!(", exit code {code}"))
            .unwrap_or_default();
        let error = masker.mask(ti.error.as_deref().unwrap_or("no error was recorded"));
        out.push_str(&format!(
            "Task `{}` failed (try {}{exit}): {error}\n",
            ti.task_id, ti.try_number,
        ));
        let logs = store.logs(run_id, Some(&ti.task_id)).await?;
        let stderr: Vec<String> = logs
            .iter()
            .filter(|l| l.try_number == ti.try_number && l.stream == "stderr")
            .map(|l| masker.mask(&l.line).into_owned())
            .collect();
        let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
        // A shell task's error already ends with its stderr; other failures (a timeout, a
        // lost lease) do not, and then the log's last lines say what the task was doing.
        let already_said = tail
            .last()
            .is_some_and(|last| error.contains(last.as_str()));
        if !tail.is_empty() && !already_said {
            match tail.len() {
                1 => out.push_str("  last line of stderr:\n"),
                n => out.push_str(&format!("  last {n} lines of stderr:\n")),
            }
            for line in tail {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out.push_str(&format!("  whole log: {logs_command} {}\n", ti.task_id));
    }
    eprint!("{out}");
    Ok(())
}

/// Parses `-p KEY=VALUE` items by the declared param types (checking happens in `launch`).
fn parse_params(
    workflow: &Workflow,
    raw: &[String],
) -> Result<serde_json::Map<String, Value>, Vec<String>> {
    let mut pairs = Vec::with_capacity(raw.len());
    let mut problems = Vec::new();
    for item in raw {
        match params::split_cli_pair(item) {
            Ok(pair) => pairs.push(pair),
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    params::parse_cli(&workflow.params, &pairs)
        .map_err(|ps| ps.iter().map(ToString::to_string).collect())
}

/// The `--json` document: the run and, per task, its latest try.
fn summarize(
    run_id: &str,
    workflow: &Workflow,
    state: RunState,
    instances: &[TaskInstanceRecord],
) -> Value {
    let mut latest: BTreeMap<&str, &TaskInstanceRecord> = BTreeMap::new();
    for ti in instances {
        latest.insert(&ti.task_id, ti);
    }
    let mut tasks = serde_json::Map::new();
    for task in workflow.all_tasks() {
        let Some(ti) = latest.get(task.id.as_str()) else {
            continue;
        };
        let duration_ms = match (ti.started_at, ti.ended_at) {
            (Some(start), Some(end)) => json!((end - start).num_milliseconds().max(0)),
            _ => Value::Null,
        };
        tasks.insert(
            task.id.clone(),
            json!({
                "state": ti.state.as_str(),
                "try_number": ti.try_number,
                "outputs": ti.outputs.clone().unwrap_or_default(),
                "duration_ms": duration_ms,
                "error": ti.error,
            }),
        );
    }
    json!({ "run_id": run_id, "workflow": workflow.id, "state": state.as_str(), "tasks": tasks })
}

/// Live progress on stderr: a line per state change, or, on a terminal, a line per finished
/// task and one status line redrawn in place.
struct Progress {
    total: usize,
    terminal: bool,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// Prints progress until the run reaches a final state, which it returns.
    async fn follow(
        &self,
        run_id: &str,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
    ) -> RunState {
        let mut finished = 0usize;
        let mut running: BTreeMap<String, u32> = BTreeMap::new();
        let stderr = std::io::stderr();
        while let Some(event) = events.recv().await {
            let mut out = std::io::BufWriter::new(stderr.lock());
            match event {
                StoreEvent::TaskStates {
                    run_id: id,
                    changes,
                } if id == run_id => {
                    for c in changes.iter() {
                        if c.state == TaskState::Running {
                            running.insert(c.task_id.clone(), c.try_number);
                        } else {
                            running.remove(&c.task_id);
                        }
                        if c.state.outcome().is_some() {
                            finished += 1;
                        }
                        if self.terminal && !c.state.is_final() {
                            continue;
                        }
                        if self.terminal {
                            let _ = write!(out, "\r\x1b[K");
                        }
                        let _ = writeln!(
                            out,
                            "{:>8.3}s  {:<16} {} (try {})",
                            self.started.elapsed().as_secs_f64(),
                            c.state.as_str(),
                            c.task_id,
                            c.try_number
                        );
                    }
                    if self.terminal {
                        let names: Vec<&str> = running.keys().take(4).map(String::as_str).collect();
                        let more = running.len().saturating_sub(names.len());
                        let _ = write!(
                            out,
                            "\r\x1b[K[{finished}/{}] running: {}{}",
                            self.total,
                            names.join(", "),
                            if more > 0 {
                                format!(" +{more}")
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                StoreEvent::RunState { run_id: id, state } if id == run_id && state.is_final() => {
                    if self.terminal {
                        let _ = write!(out, "\r\x1b[K");
                    }
                    let _ = out.flush();
                    return state;
                }
                _ => {}
            }
            let _ = out.flush();
        }
        RunState::Failed
    }
}
