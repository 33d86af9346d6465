//! Run control shared by the pages and the API: what clearing or marking a task would touch
//! (the confirmation page lists it before anything changes), and doing it through the store.
//! What a clear or a mark reaches downstream comes from the workflow version the run pinned.

use std::collections::HashMap;

use serde::Serialize;

use crate::dag::Workflow;
use crate::lifecycle::TaskState;
use crate::store::{
    ClearOutcome, MarkOutcome, MarkedState, RunAfterMark, Store, StoreError, TaskMark,
};

/// Which tasks a clear runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClearScope {
    /// The task's downstream tasks too (Airflow's "Downstream").
    pub downstream: bool,
    /// Only the tasks that failed or never ran because of a failure (Airflow's "Only failed").
    pub only_failed: bool,
}

/// One thing to do to a task of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    Clear(ClearScope),
    Mark(MarkedState),
}

/// Why an action cannot be done, as a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A task the action touches, with its state now and what it becomes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Affected {
    pub task: String,
    pub state: String,
    pub becomes: &'static str,
}

/// What an action would do, for the confirmation page and the API's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub affected: Vec<Affected>,
    /// What happens to the run, as a sentence.
    pub run_effect: String,
}

/// What an action did.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// The tasks it touched, the acted-on task first.
    pub tasks: Vec<String>,
    /// What it did, as a sentence for the page's message.
    pub message: String,
    /// The run had ended and is queued again.
    pub run_requeued: bool,
}

/// The state of each task's latest try in a run.
async fn latest_states(
    store: &Store,
    run_id: &str,
) -> Result<HashMap<String, TaskState>, ControlError> {
    let mut latest: HashMap<String, (u32, TaskState)> = HashMap::new();
    for t in store.task_instances(run_id).await? {
        let newer = latest
            .get(&t.task_id)
            .is_none_or(|(n, _)| t.try_number >= *n);
        if newer {
            latest.insert(t.task_id, (t.try_number, t.state));
        }
    }
    Ok(latest.into_iter().map(|(k, (_, s))| (k, s)).collect())
}

/// Whether `action` can apply to a task whose latest try is in `state` (`None`: never
/// started). The run page offers only the actions for which this holds.
pub fn applies(action: TaskAction, state: Option<TaskState>) -> bool {
    let Some(state) = state else {
        return false;
    };
    match action {
        TaskAction::Clear(scope) => {
            state.is_final() && (!scope.only_failed || failed_like(state) || scope.downstream)
        }
        TaskAction::Mark(to) => state.is_final() && state != to.task_state(),
    }
}

fn failed_like(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled
    )
}

fn main_index(workflow: &Workflow, run_id: &str, task: &str) -> Result<usize, ControlError> {
    workflow.task_index(task).ok_or_else(|| {
        ControlError::NotFound(format!(
            "run `{run_id}` has no task `{task}` that can be cleared or marked"
        ))
    })
}

fn state_name(state: Option<&TaskState>) -> String {
    state.map_or_else(|| "not started".to_owned(), |s| s.as_str().to_owned())
}

/// The tasks a clear would give a new try: the task (and its downstream with the scope) whose
/// latest try ended, only the failed ones with `only_failed`. Tasks still waiting to be
/// decided need nothing; one still at work refuses the clear.
fn clear_selection(
    workflow: &Workflow,
    states: &HashMap<String, TaskState>,
    run_id: &str,
    task: &str,
    scope: ClearScope,
) -> Result<Vec<String>, ControlError> {
    let index = main_index(workflow, run_id, task)?;
    let state = states.get(task).copied();
    if !state.is_some_and(TaskState::is_final) {
        return Err(ControlError::Refused(format!(
            "task `{task}` is {}; only a task that has ended can be cleared",
            state_name(state.as_ref())
        )));
    }
    let candidates = if scope.downstream {
        workflow.with_downstream(index)
    } else {
        vec![task.to_owned()]
    };
    let mut selection = Vec::new();
    let mut busy = Vec::new();
    for t in candidates {
        match states.get(&t) {
            Some(s) if s.is_final() => {
                if !scope.only_failed || failed_like(*s) {
                    selection.push(t);
                }
            }
            Some(TaskState::Pending) | None => {}
            Some(_) => busy.push(t),
        }
    }
    if !busy.is_empty() {
        return Err(ControlError::Refused(format!(
            "task(s) {} downstream have not ended yet; wait for them, or cancel the run",
            busy.join(", ")
        )));
    }
    if selection.is_empty() {
        return Err(ControlError::Refused(format!(
            "nothing failed at or after task `{task}`, so there is nothing to clear with \
             “failed only”"
        )));
    }
    Ok(selection)
}

/// What `action` on `task` of run `run_id` would do, without doing it.
pub async fn plan(
    store: &Store,
    workflow: &Workflow,
    run_id: &str,
    task: &str,
    action: TaskAction,
) -> Result<Plan, ControlError> {
    let run = store
        .run(run_id)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("there is no run with id `{run_id}`")))?;
    let states = latest_states(store, run_id).await?;
    let ended = run.state.is_final();
    match action {
        TaskAction::Clear(scope) => {
            let selection = clear_selection(workflow, &states, run_id, task, scope)?;
            Ok(Plan {
                affected: selection
                    .into_iter()
                    .map(|t| Affected {
                        state: state_name(states.get(&t)),
                        task: t,
                        becomes: "runs again",
                    })
                    .collect(),
                run_effect: if ended {
                    format!(
                        "The run has ended ({}); it is queued again and ends once these tasks have run.",
                        run.state
                    )
                } else {
                    "The run goes on; these tasks run again as their upstream tasks allow."
                        .to_owned()
                },
            })
        }
        TaskAction::Mark(to) => {
            let index = main_index(workflow, run_id, task)?;
            let state = states.get(task).copied();
            if !applies(action, state) {
                return Err(ControlError::Refused(match state {
                    Some(s) if s == to.task_state() => format!("task `{task}` is already {s}"),
                    _ => format!(
                        "task `{task}` is {}; only a task that has ended can be marked",
                        state_name(state.as_ref())
                    ),
                }));
            }
            let mut affected = vec![Affected {
                task: task.to_owned(),
                state: state_name(state.as_ref()),
                becomes: match to {
                    MarkedState::Success => "marked success",
                    MarkedState::Failed => "marked failed",
                },
            }];
            for t in workflow.with_downstream(index).into_iter().skip(1) {
                if let Some(s) = states.get(&t)
                    && to.redecides(*s)
                {
                    affected.push(Affected {
                        state: s.as_str().to_owned(),
                        task: t,
                        becomes: "decided again by its trigger rule",
                    });
                }
            }
            let run_effect = match (ended, affected.len() > 1) {
                (false, _) => "The run goes on with the marked state.".to_owned(),
                (true, true) => format!(
                    "The run has ended ({}); it is queued again so the tasks downstream are decided again.",
                    run.state
                ),
                (true, false) => format!(
                    "The run has ended ({}); its state is restated from its tasks.",
                    run.state
                ),
            };
            Ok(Plan {
                affected,
                run_effect,
            })
        }
    }
}

/// Does `action` on `task` of run `run_id`; `by` names who asked, for the task's log.
pub async fn apply(
    store: &Store,
    workflow: &Workflow,
    run_id: &str,
    task: &str,
    action: TaskAction,
    by: &str,
) -> Result<Done, ControlError> {
    match action {
        TaskAction::Clear(scope) => {
            let states = latest_states(store, run_id).await?;
            let selection = clear_selection(workflow, &states, run_id, task, scope)?;
            match store.clear_tasks(run_id, &selection).await? {
                ClearOutcome::Cleared { run_requeued, .. } => Ok(Done {
                    message: format!(
                        "Cleared {}: {} run again.",
                        plural(selection.len(), "task"),
                        selection.join(", ")
                    ),
                    tasks: selection,
                    run_requeued,
                }),
                ClearOutcome::Refused(reason) => Err(ControlError::Refused(reason)),
            }
        }
        TaskAction::Mark(to) => {
            let index = main_index(workflow, run_id, task)?;
            let downstream: Vec<String> = workflow
                .with_downstream(index)
                .into_iter()
                .skip(1)
                .collect();
            let main_tasks: Vec<String> = workflow.tasks.iter().map(|t| t.id.clone()).collect();
            let mark = TaskMark {
                run_id,
                task_id: task,
                state: to,
                downstream: &downstream,
                main_tasks: &main_tasks,
                by,
            };
            match store.mark_task(&mark).await? {
                MarkOutcome::Marked { redecided, run, .. } => {
                    let mut message = format!("Marked {task} {}.", to.task_state());
                    if !redecided.is_empty() {
                        message.push_str(&format!(
                            " Decided again downstream: {}.",
                            redecided.join(", ")
                        ));
                    }
                    match &run {
                        RunAfterMark::Requeued => message.push_str(" The run is queued again."),
                        RunAfterMark::Restated(state) => {
                            message.push_str(&format!(" The run is now {state}."))
                        }
                        RunAfterMark::Unchanged => {}
                    }
                    let mut tasks = vec![task.to_owned()];
                    tasks.extend(redecided);
                    Ok(Done {
                        tasks,
                        message,
                        run_requeued: run == RunAfterMark::Requeued,
                    })
                }
                MarkOutcome::Refused(reason) => Err(ControlError::Refused(reason)),
            }
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
