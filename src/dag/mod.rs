//! The compiled, checked workflow: what the runtime executes. `compile` turns a `spec` (the
//! file as written) into a `Workflow` or a list of diagnostics. No IO.

use std::time::Duration;

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use crate::duration::MAX_DURATION;
use crate::lifecycle::TriggerRule;
use crate::params::ParamDecl;

mod compile;

pub mod deadline;
pub mod globs;
pub mod intervals;

pub use compile::{
    Compiled, DEFAULT_QUEUE, DEFAULT_RETRY_DELAY, DeferredFields, OperatorCheck, compile,
    compile_checked, is_valid_id,
};

/// A checked workflow. Tasks are in file order (the display order); `graph` has one node per
/// task, whose weight is the task's index in `tasks`, and an edge from each upstream task to
/// its downstream task.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub id: String,
    pub description: Option<String>,
    pub schedule: Option<crate::schedule::Schedule>,
    pub timezone: chrono_tz::Tz,
    pub start_date: Option<chrono::NaiveDate>,
    pub end_date: Option<chrono::NaiveDate>,
    pub catchup: bool,
    pub max_active_runs: u32,
    pub tags: Vec<String>,
    pub params: IndexMap<String, ParamDecl>,
    /// Triggers as written (matched by the `triggers` layer later).
    pub triggers: Vec<Value>,
    pub tasks: Vec<Task>,
    /// Tasks run after a run fails, in file order. They have no `needs` among `tasks`.
    pub on_failure: Vec<Task>,
    /// Tasks run after every main task succeeded, before the run ends as a success.
    pub on_success: Vec<Task>,
    /// When a run should be done by; `on_deadline` runs once when a run passes it.
    pub deadline: Option<deadline::Deadline>,
    pub on_deadline: Vec<Task>,
    pub graph: DiGraph<usize, ()>,
    /// The exact file content this workflow was compiled from, and its SHA-256 (hex).
    pub source: String,
    pub source_hash: String,
}

/// A checked task. Strings inside `with`, `env` and `condition` are still templates; they are
/// rendered when the task runs.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// The operator's name as in the registry (`shell`, `http`, `noop`, …).
    pub operator: String,
    pub with: Value,
    /// Upstream task ids, in the order written.
    pub needs: Vec<String>,
    pub trigger_rule: TriggerRule,
    /// The `if` expression (a template), if any.
    pub condition: Option<String>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_backoff: Backoff,
    pub max_retry_delay: Option<Duration>,
    pub timeout: Option<Duration>,
    pub pool: Option<String>,
    /// The queue the task waits in: `default` unless the file names one.
    pub queue: String,
    pub priority: i32,
    pub env: IndexMap<String, String>,
    /// Paths or globs (relative to the workflow's folder) kept as artifacts on success.
    pub artifacts: Vec<String>,
}

/// How the delay between tries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    #[default]
    Fixed,
    Exponential,
}

impl Task {
    /// The delay before try `next_try` (2 for the first retry), after backoff and cap.
    pub fn retry_delay_before(&self, next_try: u32) -> Duration {
        let base = self.retry_delay;
        let delay = match self.retry_backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => {
                let exponent = next_try.saturating_sub(2).min(30);
                base.saturating_mul(1u32 << exponent)
            }
        };
        let capped = match self.max_retry_delay {
            Some(cap) => delay.min(cap),
            None => delay,
        };
        // Backoff can multiply a delay far past anything a file may state; the same limit
        // keeps the retry's date computable.
        capped.min(MAX_DURATION)
    }
}

/// The groups of tasks that run around the main tasks, on a run's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `on_failure`: after the main tasks ended with a failure.
    Failure,
    /// `on_success`: after every main task succeeded.
    Success,
    /// `on_deadline`: once, when the run passes its deadline while still running.
    Deadline,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Failure, Hook::Success, Hook::Deadline];

    /// The workflow key the group is written under.
    pub fn key(self) -> &'static str {
        match self {
            Hook::Failure => "on_failure",
            Hook::Success => "on_success",
            Hook::Deadline => "on_deadline",
        }
    }
}

impl Workflow {
    /// Every task: `tasks` in file order, then the hooks (`on_failure`, `on_success`,
    /// `on_deadline`). A task's position in this sequence is its position for `task_at`.
    pub fn all_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks
            .iter()
            .chain(&self.on_failure)
            .chain(&self.on_success)
            .chain(&self.on_deadline)
    }

    /// The task at a position of `all_tasks`.
    pub fn task_at(&self, position: usize) -> Option<&Task> {
        if position < self.tasks.len() {
            return self.tasks.get(position);
        }
        Hook::ALL.into_iter().find_map(|hook| {
            let range = self.hook_positions(hook);
            range
                .contains(&position)
                .then(|| &self.hooks(hook)[position - range.start])
        })
    }

    /// A hook group's tasks.
    pub fn hooks(&self, hook: Hook) -> &[Task] {
        match hook {
            Hook::Failure => &self.on_failure,
            Hook::Success => &self.on_success,
            Hook::Deadline => &self.on_deadline,
        }
    }

    /// The positions (in `all_tasks`) of a hook group.
    pub fn hook_positions(&self, hook: Hook) -> std::ops::Range<usize> {
        let failure = self.tasks.len();
        let success = failure + self.on_failure.len();
        let deadline = success + self.on_success.len();
        match hook {
            Hook::Failure => failure..success,
            Hook::Success => success..deadline,
            Hook::Deadline => deadline..deadline + self.on_deadline.len(),
        }
    }

    pub fn task_index(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }

    /// Indices of the direct upstream tasks of task `index`.
    pub fn upstream(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(index), petgraph::Direction::Incoming)
            .map(|n| self.graph[n])
    }

    /// Indices of the direct downstream tasks of task `index`.
    pub fn downstream(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(index), petgraph::Direction::Outgoing)
            .map(|n| self.graph[n])
    }

    /// The main task at `index` and every task downstream of it, in file order: what clearing
    /// that task runs again.
    pub fn with_downstream(&self, index: usize) -> Vec<String> {
        let mut seen = vec![false; self.tasks.len()];
        let mut stack = vec![index];
        while let Some(i) = stack.pop() {
            if seen.get(i).copied().unwrap_or(true) {
                continue;
            }
            seen[i] = true;
            stack.extend(self.downstream(i));
        }
        self.tasks
            .iter()
            .zip(seen)
            .filter(|(_, s)| *s)
            .map(|(t, _)| t.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(backoff: Backoff, delay: u64, cap: Option<u64>) -> Task {
        Task {
            id: "t".into(),
            operator: "noop".into(),
            with: Value::Null,
            needs: vec![],
            trigger_rule: TriggerRule::AllSuccess,
            condition: None,
            retries: 5,
            retry_delay: Duration::from_secs(delay),
            retry_backoff: backoff,
            max_retry_delay: cap.map(Duration::from_secs),
            timeout: None,
            pool: None,
            queue: DEFAULT_QUEUE.into(),
            priority: 0,
            env: IndexMap::new(),
            artifacts: Vec::new(),
        }
    }

    #[test]
    fn retry_delays_follow_backoff_and_cap() {
        let fixed = task(Backoff::Fixed, 30, None);
        assert_eq!(fixed.retry_delay_before(2), Duration::from_secs(30));
        assert_eq!(fixed.retry_delay_before(5), Duration::from_secs(30));
        let exp = task(Backoff::Exponential, 10, Some(60));
        let delays: Vec<u64> = (2..=6)
            .map(|t| exp.retry_delay_before(t).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 60, 60]);
    }

    /// Regression: 60 exponential retries of a year-long delay overflowed the date of the
    /// next try and killed the worker's try unreported.
    #[test]
    fn exponential_backoff_over_sixty_retries_stays_computable() {
        let now = chrono::Utc::now();
        for cap in [None, Some(MAX_DURATION.as_secs())] {
            let exp = task(Backoff::Exponential, MAX_DURATION.as_secs(), cap);
            let mut previous = Duration::ZERO;
            for next_try in 2..=62 {
                let delay = exp.retry_delay_before(next_try);
                assert!(delay <= MAX_DURATION, "try {next_try}: {delay:?}");
                assert!(delay >= previous, "try {next_try}: backoff went down");
                previous = delay;
                let at = crate::duration::instant_after(now, delay);
                assert!(at > now && at < chrono::DateTime::<chrono::Utc>::MAX_UTC);
            }
        }
        let small = task(Backoff::Exponential, 1, None);
        assert_eq!(small.retry_delay_before(62), MAX_DURATION);
    }
}
