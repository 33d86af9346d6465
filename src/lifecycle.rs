//! The run and task-instance state machines, and the trigger rules that decide when a task may
//! start. Pure: no IO, no clock. Every state change anywhere in Sluice is checked against the
//! tables here before the store writes it.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> queued
//!     queued --> running
//!     queued --> cancelled
//!     running --> success
//!     running --> failed
//!     running --> cancelled
//!     success --> queued: a task is cleared
//!     failed --> queued: a task is cleared
//!     cancelled --> queued: a task is cleared
//! ```
//!
//! A task instance is one try of one task in one run (one database row per try):
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> pending
//!     pending --> scheduled: upstream satisfied, `if` true
//!     pending --> skipped: `if` false or skip propagated
//!     pending --> upstream_failed
//!     scheduled --> queued: retry delay elapsed / slot free
//!     queued --> running: a worker claims it
//!     running --> success
//!     running --> failed
//!     running --> up_for_retry: failed with retries left (a new try row follows)
//!     running --> scheduled: a sensor reschedules itself (same try)
//!     pending --> cancelled
//!     scheduled --> cancelled
//!     queued --> cancelled
//!     running --> cancelled
//! ```

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The state of a run (one execution of a workflow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created and waiting to start. The scheduler moves it to `running` when it creates the
    /// run's first task instances, or to `cancelled` when the run is cancelled before that.
    Queued,
    /// At least one task has been dispatched. The scheduler moves it to a final state once every
    /// task instance is final.
    Running,
    /// Every task ended in `success` or `skipped`. Final, until a task of the run is
    /// cleared: then it is queued again.
    Success,
    /// Some task ended in `failed` or `upstream_failed`. Final, until a task is cleared.
    Failed,
    /// Cancelled by a user or a signal; running tasks were killed. Final, until a task is
    /// cleared.
    Cancelled,
}

/// The state of a task instance (one try of one task in one run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created with its run; waits for its upstream tasks. The scheduler moves it on.
    Pending,
    /// Its upstream tasks are satisfied (or it is a retry); it waits for its `not_before` time.
    /// The scheduler queues it when that time has come.
    Scheduled,
    /// Ready to run; a worker claims it (moving it to `running`) when a slot is free.
    Queued,
    /// A worker holds it and its lease. The worker moves it to a final state, or, if the worker
    /// dies, recovery moves it to `up_for_retry` or `failed` when the lease expires.
    Running,
    /// The operator returned outputs. Final.
    Success,
    /// The operator failed and no retries are left. Final.
    Failed,
    /// This try failed and another try follows: the same transaction inserts the next try's
    /// row in `scheduled`. Final for this row.
    UpForRetry,
    /// Not run: its `if` was false, or a skip propagated from upstream. Final.
    Skipped,
    /// Not run: an upstream task failed and its trigger rule cannot be met. Final.
    UpstreamFailed,
    /// The run was cancelled before this try finished. Final.
    Cancelled,
}

macro_rules! str_enum {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The name used in the database, the API and workflow files.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(UnknownName { kind: stringify!($ty), name: s.to_owned() }),
                }
            }
        }
    };
}

str_enum!(RunState {
    Queued => "queued",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Cancelled => "cancelled",
});

str_enum!(TaskState {
    Pending => "pending",
    Scheduled => "scheduled",
    Queued => "queued",
    Running => "running",
    Success => "success",
    Failed => "failed",
    UpForRetry => "up_for_retry",
    Skipped => "skipped",
    UpstreamFailed => "upstream_failed",
    Cancelled => "cancelled",
});

str_enum!(TriggerRule {
    AllSuccess => "all_success",
    AllDone => "all_done",
    AllFailed => "all_failed",
    OneSuccess => "one_success",
    OneFailed => "one_failed",
    NoneFailed => "none_failed",
    NoneFailedMinOneSuccess => "none_failed_min_one_success",
    Always => "always",
});

/// A state name that is not one of the known ones (from the database or an API request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a valid {kind}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

/// A transition the state machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} cannot move from `{from}` to `{to}`")]
pub struct InvalidTransition {
    pub kind: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

impl RunState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failed | RunState::Cancelled
        )
    }

    /// The run transition table.
    pub fn can_move_to(self, to: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Queued, Failed)
                | (Running, Success)
                | (Running, Failed)
                | (Running, Cancelled)
                // Clearing a task of an ended run puts the run back in the queue.
                | (Success | Failed | Cancelled, Queued)
        )
    }

    pub fn check_move(self, to: RunState) -> Result<(), InvalidTransition> {
        if self.can_move_to(to) {
            Ok(())
        } else {
            Err(InvalidTransition {
                kind: "run",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

impl TaskState {
    /// A final state: this try will not change again.
    pub fn is_final(self) -> bool {
        use TaskState::*;
        matches!(
            self,
            Success | Failed | UpForRetry | Skipped | UpstreamFailed | Cancelled
        )
    }

    /// How far along a try is: each transition moves to a higher rank, so a subscriber that
    /// hears of two states of one try, in whatever order, keeps the higher one.
    pub fn rank(self) -> u8 {
        use TaskState::*;
        match self {
            Pending => 0,
            Scheduled => 1,
            Queued => 2,
            Running => 3,
            Success | Failed | UpForRetry | Skipped | UpstreamFailed | Cancelled => 4,
        }
    }

    /// The task-instance transition table.
    pub fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        match (self, to) {
            (Pending, Scheduled | Queued | Skipped | UpstreamFailed | Cancelled) => true,
            (Scheduled, Queued | Cancelled) => true,
            // A worker hands a claimed task back on shutdown: queued again, same try.
            (Queued, Running | Cancelled) => true,
            // A sensor reschedules itself: scheduled again, same try, until its next check.
            (Running, Success | Failed | UpForRetry | Cancelled | Queued | Scheduled) => true,
            _ => false,
        }
    }

    pub fn check_move(self, to: TaskState) -> Result<(), InvalidTransition> {
        if self.can_move_to(to) {
            Ok(())
        } else {
            Err(InvalidTransition {
                kind: "task instance",
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// How this state counts for trigger rules, seen from a downstream task. `None` while the
    /// task may still change (a try that is up for retry is followed by another try, so the
    /// task as a whole is not done).
    pub fn outcome(self) -> Option<Outcome> {
        use TaskState::*;
        match self {
            Success => Some(Outcome::Success),
            Failed => Some(Outcome::Failed),
            UpstreamFailed => Some(Outcome::UpstreamFailed),
            Skipped => Some(Outcome::Skipped),
            Cancelled => Some(Outcome::Failed),
            Pending | Scheduled | Queued | Running | UpForRetry => None,
        }
    }
}

/// The final outcome of an upstream task, as trigger rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed,
    UpstreamFailed,
    Skipped,
}

/// Counts of the direct upstream tasks of one task, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamSummary {
    pub total: usize,
    pub success: usize,
    pub failed: usize,
    pub upstream_failed: usize,
    pub skipped: usize,
}

impl UpstreamSummary {
    pub fn add(&mut self, outcome: Option<Outcome>) {
        self.total += 1;
        match outcome {
            Some(Outcome::Success) => self.success += 1,
            Some(Outcome::Failed) => self.failed += 1,
            Some(Outcome::UpstreamFailed) => self.upstream_failed += 1,
            Some(Outcome::Skipped) => self.skipped += 1,
            None => {}
        }
    }

    pub fn done(&self) -> usize {
        self.success + self.failed + self.upstream_failed + self.skipped
    }

    fn all_done(&self) -> bool {
        self.done() == self.total
    }

    fn any_failed(&self) -> bool {
        self.failed + self.upstream_failed > 0
    }
}

/// What a trigger rule decides for a pending task, given its upstream outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not decidable yet: wait for more upstream tasks to finish.
    Wait,
    /// The task may run (its `if` is evaluated next).
    Run,
    /// The task is skipped.
    Skip,
    /// The task cannot run because upstream tasks failed.
    UpstreamFailed,
}

/// When a task may start, relative to its upstream tasks (Airflow's trigger rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default). A skipped upstream skips this task; a failed
    /// one marks it `upstream_failed`.
    #[default]
    AllSuccess,
    /// Every upstream task is done, whatever its outcome.
    AllDone,
    /// Every upstream task failed or is upstream_failed.
    AllFailed,
    /// At least one upstream task succeeded (starts as soon as one does).
    OneSuccess,
    /// At least one upstream task failed (starts as soon as one does).
    OneFailed,
    /// No upstream task failed: each succeeded or was skipped.
    NoneFailed,
    /// No upstream task failed and at least one succeeded.
    NoneFailedMinOneSuccess,
    /// Runs once every upstream task is done, whatever happened (like `all_done`; kept for
    /// clarity in clean-up tasks).
    Always,
}

impl TriggerRule {
    /// Decides a pending task's fate from its direct upstream tasks' outcomes. A task with no
    /// upstream tasks always runs. Mirrors Airflow's `TriggerRuleDep`, including skip
    /// propagation.
    pub fn decide(self, up: &UpstreamSummary) -> Decision {
        use Decision::*;
        if up.total == 0 {
            return Run;
        }
        let all_done = up.all_done();
        match self {
            TriggerRule::AllSuccess => {
                if up.any_failed() {
                    UpstreamFailed
                } else if up.skipped > 0 {
                    Skip
                } else if up.success == up.total {
                    Run
                } else {
                    Wait
                }
            }
            TriggerRule::AllDone | TriggerRule::Always => {
                if all_done {
                    Run
                } else {
                    Wait
                }
            }
            TriggerRule::AllFailed => {
                if up.success > 0 || up.skipped > 0 {
                    Skip
                } else if all_done {
                    Run
                } else {
                    Wait
                }
            }
            TriggerRule::OneSuccess => {
                if up.success > 0 {
                    Run
                } else if !all_done {
                    Wait
                } else if up.skipped == up.total {
                    Skip
                } else {
                    UpstreamFailed
                }
            }
            TriggerRule::OneFailed => {
                if up.any_failed() {
                    Run
                } else if all_done {
                    Skip
                } else {
                    Wait
                }
            }
            TriggerRule::NoneFailed => {
                if up.any_failed() {
                    UpstreamFailed
                } else if all_done {
                    Run
                } else {
                    Wait
                }
            }
            TriggerRule::NoneFailedMinOneSuccess => {
                if up.any_failed() {
                    UpstreamFailed
                } else if !all_done {
                    Wait
                } else if up.success > 0 {
                    Run
                } else {
                    Skip
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(*s));
        }
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>(), Ok(*s));
        }
        for r in TriggerRule::ALL {
            assert_eq!(r.as_str().parse::<TriggerRule>(), Ok(*r));
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json, serde_json::Value::String(r.as_str().into()));
        }
        assert!("bogus".parse::<TaskState>().is_err());
    }

    /// Every pair of task states, against the table written out by hand.
    #[test]
    fn task_transition_table_is_exhaustive() {
        use TaskState::*;
        let allowed: &[(TaskState, &[TaskState])] = &[
            (
                Pending,
                &[Scheduled, Queued, Skipped, UpstreamFailed, Cancelled],
            ),
            (Scheduled, &[Queued, Cancelled]),
            (Queued, &[Running, Cancelled]),
            (
                Running,
                &[Success, Failed, UpForRetry, Cancelled, Queued, Scheduled],
            ),
            (Success, &[]),
            (Failed, &[]),
            (UpForRetry, &[]),
            (Skipped, &[]),
            (UpstreamFailed, &[]),
            (Cancelled, &[]),
        ];
        assert_eq!(allowed.len(), TaskState::ALL.len());
        for (from, tos) in allowed {
            for to in TaskState::ALL {
                assert_eq!(from.can_move_to(*to), tos.contains(to), "{from} -> {to}");
            }
            assert_eq!(from.is_final(), tos.is_empty(), "{from} finality");
            for to in *tos {
                // A worker handing a claim back (running -> queued) and a sensor rescheduling
                // itself (running -> scheduled) are the steps down.
                if !matches!((*from, *to), (Running, Queued | Scheduled)) {
                    assert!(
                        to.rank() > from.rank(),
                        "{from} -> {to} must move up in rank"
                    );
                }
            }
        }
    }

    #[test]
    fn run_transition_table_is_exhaustive() {
        use RunState::*;
        let allowed: &[(RunState, &[RunState])] = &[
            (Queued, &[Running, Cancelled, Failed]),
            (Running, &[Success, Failed, Cancelled]),
            (Success, &[Queued]),
            (Failed, &[Queued]),
            (Cancelled, &[Queued]),
        ];
        assert_eq!(allowed.len(), RunState::ALL.len());
        for (from, tos) in allowed {
            for to in RunState::ALL {
                assert_eq!(from.can_move_to(*to), tos.contains(to), "{from} -> {to}");
            }
            // Final states leave only through a clear, back to the queue.
            assert_eq!(from.is_final(), tos == &[Queued]);
        }
        assert!(Running.check_move(Queued).is_err());
    }

    fn summary(states: &[Option<Outcome>]) -> UpstreamSummary {
        let mut s = UpstreamSummary::default();
        for o in states {
            s.add(*o);
        }
        s
    }

    /// The trigger-rule × upstream-state matrix. Each row: upstream outcomes (None = still
    /// running), then the decision of every rule in `TriggerRule::ALL` order.
    #[test]
    fn trigger_rule_matrix() {
        use Decision::*;
        const S: Option<Outcome> = Some(Outcome::Success);
        const F: Option<Outcome> = Some(Outcome::Failed);
        const U: Option<Outcome> = Some(Outcome::UpstreamFailed);
        const K: Option<Outcome> = Some(Outcome::Skipped);
        const R: Option<Outcome> = None;
        #[rustfmt::skip]
        let matrix: &[(&[Option<Outcome>], [Decision; 8])] = &[
            //            all_success     all_done all_failed one_success     one_failed none_failed     nf_min_one      always
            (&[],         [Run,           Run,     Run,       Run,            Run,       Run,            Run,            Run]),
            (&[S, S],     [Run,           Run,     Skip,      Run,            Skip,      Run,            Run,            Run]),
            (&[S, R],     [Wait,          Wait,    Skip,      Run,            Wait,      Wait,           Wait,           Wait]),
            (&[S, F],     [UpstreamFailed,Run,     Skip,      Run,            Run,       UpstreamFailed, UpstreamFailed, Run]),
            (&[F, R],     [UpstreamFailed,Wait,    Wait,      Wait,           Run,       UpstreamFailed, UpstreamFailed, Wait]),
            (&[F, F],     [UpstreamFailed,Run,     Run,       UpstreamFailed, Run,       UpstreamFailed, UpstreamFailed, Run]),
            (&[U, F],     [UpstreamFailed,Run,     Run,       UpstreamFailed, Run,       UpstreamFailed, UpstreamFailed, Run]),
            (&[S, K],     [Skip,          Run,     Skip,      Run,            Skip,      Run,            Run,            Run]),
            (&[K, K],     [Skip,          Run,     Skip,      Skip,           Skip,      Run,            Skip,           Run]),
            (&[K, R],     [Skip,          Wait,    Skip,      Wait,           Wait,      Wait,           Wait,           Wait]),
            (&[K, F],     [UpstreamFailed,Run,     Skip,      UpstreamFailed, Run,       UpstreamFailed, UpstreamFailed, Run]),
            (&[R, R],     [Wait,          Wait,    Wait,      Wait,           Wait,      Wait,           Wait,           Wait]),
        ];
        for (upstream, expected) in matrix {
            let s = summary(upstream);
            for (rule, want) in TriggerRule::ALL.iter().zip(expected) {
                assert_eq!(rule.decide(&s), *want, "{rule} with upstream {upstream:?}");
            }
        }
    }

    #[test]
    fn up_for_retry_is_not_an_outcome() {
        assert_eq!(TaskState::UpForRetry.outcome(), None);
        assert_eq!(TaskState::Cancelled.outcome(), Some(Outcome::Failed));
    }
}
