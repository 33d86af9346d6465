//! Recovery of tries whose worker is gone: after a crash (`kill -9`, power loss) or when a
//! worker's lease ran out. A try that was running is retried if its task has retries left,
//! otherwise failed with an error that says what happened. Tasks that had finished are never
//! touched, so they never run again.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::Result;
use crate::catalog::versions::Versions;
use crate::duration::instant_after;
use crate::lifecycle::TaskState;
use crate::operators::shell;
use crate::store::{NewTaskInstance, OrphanedTry, Store, TaskCompletion};

/// Which running tries recovery takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Every running try: right for SQLite, where `serve` is the only process, so at start-up
    /// nothing can still be running.
    AllRunning,
    /// Running tries whose lease expired before this time (workers on other machines).
    LeaseExpiredBefore(DateTime<Utc>),
}

/// Ends orphaned tries: up for retry (the next try is scheduled after the task's retry
/// delay) or failed. With `Orphans::AllRunning` (the tries ran on this machine), what is left
/// of their processes is killed first, so a retry never overlaps the cut-off try. Tries
/// recovered by lease ran elsewhere: their processes died with their worker (the `shell`
/// reaper), and a retry on the same machine kills any left over before it starts. Returns
/// how many tries were recovered.
pub async fn recover(store: &Store, versions: &Versions, which: Orphans) -> Result<usize> {
    let orphans = match which {
        Orphans::AllRunning => store.orphaned_tries(None).await?,
        Orphans::LeaseExpiredBefore(now) => store.orphaned_tries(Some(now)).await?,
    };
    if orphans.is_empty() {
        return Ok(0);
    }
    if which == Orphans::AllRunning {
        for orphan in &orphans {
            let (run_id, task, try_number) = (
                orphan.run_id.clone(),
                orphan.task_id.clone(),
                orphan.try_number,
            );
            // Reads every process's environment in `/proc`: off the async threads.
            let killed = tokio::task::spawn_blocking(move || {
                shell::kill_try_processes(&run_id, &task, try_number..=try_number)
            })
            .await
            .unwrap_or(0);
            if killed > 0 {
                info!(
                    run_id = %orphan.run_id,
                    task = %orphan.task_id,
                    killed,
                    "Killed the processes a cut-off try left running."
                );
            }
        }
    }
    let mut completions = Vec::with_capacity(orphans.len());
    for orphan in &orphans {
        completions.push(completion_for(store, versions, orphan).await?);
    }
    let accepted = store.complete(&[], &completions).await?;
    for c in completions.iter().filter(|c| accepted.contains(&c.id)) {
        info!(
            run_id = %c.run_id,
            task = %c.task_id,
            try_number = c.try_number,
            state = %c.state,
            "Recovered a try whose worker had stopped."
        );
    }
    Ok(accepted.len())
}

async fn completion_for(
    store: &Store,
    versions: &Versions,
    orphan: &OrphanedTry,
) -> Result<TaskCompletion> {
    let worker = orphan.worker.as_deref().unwrap_or("unknown");
    let message = format!(
        "the worker `{worker}` running this try stopped before it finished (a crash, a kill or \
         a lost lease)"
    );
    let mut completion = TaskCompletion {
        id: orphan.id,
        run_id: orphan.run_id.clone(),
        task_id: orphan.task_id.clone(),
        try_number: orphan.try_number,
        state: TaskState::Failed,
        exit_code: None,
        error: Some(message),
        outputs: None,
        warnings: Vec::new(),
        summary: None,
        ended_at: Utc::now(),
        retry: None,
    };
    // The run's own workflow version says how many retries the task has.
    let task = match store.run(&orphan.run_id).await? {
        Some(run) => match versions.get(store, &run.version_hash).await {
            Ok(workflow) => workflow
                .all_tasks()
                .find(|t| t.id == orphan.task_id)
                .cloned(),
            Err(e) => {
                warn!(run_id = %orphan.run_id, error = %e, "Cannot load the run's workflow; failing the try.");
                None
            }
        },
        None => None,
    };
    // Retries count from the task's last clear (`attempt`), not from try 1.
    if let Some(task) = task
        && orphan.attempt <= task.retries
    {
        let next_try = orphan.try_number + 1;
        let not_before = instant_after(Utc::now(), task.retry_delay_before(orphan.attempt + 1));
        completion.state = TaskState::UpForRetry;
        completion.retry = Some(NewTaskInstance::next_try(&task, next_try, not_before));
    }
    Ok(completion)
}
