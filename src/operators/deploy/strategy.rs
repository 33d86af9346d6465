//! The rollout as a state machine: which routing each step sets, when to bake, check, go on,
//! promote or roll back. Pure — the time is a parameter and effects are returned, not done —
//! so a rollout's state is a value the operator stores after every move and resumes from on
//! any later try.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::instant_after;

/// How a version reaches its traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Strategy {
    /// All traffic at once.
    Direct,
    /// Growing shares of live traffic, a bake and a check after each.
    Canary { steps: Vec<u8> },
    /// Mirrored traffic first (answers not used), then all of it once the check passes.
    Shadow,
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::Canary { .. } => "canary",
            Strategy::Shadow => "shadow",
        }
    }

    /// How many routings the rollout sets, in order.
    pub fn step_count(&self) -> usize {
        match self {
            Strategy::Direct => 1,
            Strategy::Canary { steps } => steps.len(),
            // Mirror, then promote.
            Strategy::Shadow => 2,
        }
    }
}

/// Whether a version answers requests or only sees copies of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Live,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Shadow => "shadow",
        }
    }
}

/// One version's share of traffic: a live weight (percent of requests it answers) or, in
/// shadow mode, the percent of requests mirrored to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    pub version: String,
    pub weight: u8,
    pub mode: Mode,
}

/// What the rollout is for: fixed when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub strategy: Strategy,
    /// The version being rolled out.
    pub version: String,
    /// The version the alias held before, which keeps the rest of the traffic and gets it all
    /// back on a rollback; `None` for a model's first deploy.
    pub previous: Option<String>,
    /// How long each step runs before its check.
    pub bake: Duration,
    /// Whether anything is checked after a step.
    pub checked: bool,
    /// How long a check may keep answering "not enough samples yet" after the bake.
    pub max_wait: Duration,
    /// How long to wait before looking again at a check that is waiting for samples.
    pub recheck: Duration,
}

impl Plan {
    /// The routing step `step` sets.
    pub fn routing_at(&self, step: usize) -> Vec<Route> {
        let new = |weight, mode| Route {
            version: self.version.clone(),
            weight,
            mode,
        };
        let Some(previous) = self.previous.as_ref().filter(|p| **p != self.version) else {
            return vec![new(100, Mode::Live)];
        };
        let old = |weight| Route {
            version: previous.clone(),
            weight,
            mode: Mode::Live,
        };
        match (&self.strategy, step) {
            (Strategy::Canary { steps }, _) => match steps.get(step).copied() {
                Some(weight) if weight < 100 => vec![old(100 - weight), new(weight, Mode::Live)],
                _ => vec![new(100, Mode::Live)],
            },
            (Strategy::Shadow, 0) => vec![old(100), new(100, Mode::Shadow)],
            _ => vec![new(100, Mode::Live)],
        }
    }

    /// The routing a rollback returns to: everything to the previous version.
    pub fn routing_back(&self) -> Vec<Route> {
        self.previous
            .iter()
            .map(|previous| Route {
                version: previous.clone(),
                weight: 100,
                mode: Mode::Live,
            })
            .collect()
    }

    /// Whether step `step` ends the rollout as soon as its routing is set: the promotion after
    /// a shadow phase, or any step when there is nothing to bake or check.
    fn ends_unchecked(&self, step: usize) -> bool {
        let shadow_promotion = matches!(self.strategy, Strategy::Shadow) && step == 1;
        shadow_promotion || (self.bake.is_zero() && !self.checked)
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// The step's routing is to be set (and its hook called).
    Route,
    /// The step's routing is set; bake until `bake_until`, then check.
    Bake,
    /// A check failed: the routing (and alias) go back, then the task fails with `reason`.
    RollBack { reason: String },
    /// Over: the version has the alias and all its traffic.
    Succeeded,
    /// Over: rolled back for `reason`.
    RolledBack { reason: String },
}

impl Phase {
    /// The name stored in `rollouts.state`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Route => "route",
            Phase::Bake => "bake",
            Phase::RollBack { .. } => "rolling_back",
            Phase::Succeeded => "succeeded",
            Phase::RolledBack { .. } => "rolled_back",
        }
    }
}

/// One evaluation of a step's checks, kept with the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub step: usize,
    pub at: DateTime<Utc>,
    /// `passed`, `failed` or `waiting`.
    pub outcome: String,
    /// What was read and decided, one sentence per check.
    pub details: Vec<String>,
}

/// What a step's checks found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed(Vec<String>),
    Failed {
        reason: String,
        details: Vec<String>,
    },
    /// Not decidable yet (an arm below `min_samples`).
    Waiting {
        reason: String,
        details: Vec<String>,
    },
}

/// The stored, resumable state of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub step: usize,
    pub phase: Phase,
    /// The routing as last set.
    pub routing: Vec<Route>,
    pub started: DateTime<Utc>,
    /// When the current step's routing was set.
    pub step_started: Option<DateTime<Utc>>,
    /// When the current step's next check is due.
    pub bake_until: Option<DateTime<Utc>>,
    /// Whether the alias was moved to the new version (so a rollback moves it back).
    pub alias_moved: bool,
    pub checks: Vec<CheckRecord>,
    /// The guards `force: true` overrode, one sentence each: the completion's warnings.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Each routing set, in order: the deployment history's steps.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
}

/// A step's routing as it was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// From 0.
    pub step: usize,
    pub at: DateTime<Utc>,
    pub routing: Vec<Route>,
}

/// What the operator has to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Set `routing` (moving the alias when `move_alias`), call the hook, then
    /// [`Rollout::routed`].
    Route {
        step: usize,
        routing: Vec<Route>,
        move_alias: bool,
    },
    /// Give the worker slot back until `until`.
    Wait { until: DateTime<Utc> },
    /// Evaluate the step's checks, then [`Rollout::checked`].
    Check { step: usize },
    /// Set `routing` back (and the alias when `restore_alias`), call the hook, then
    /// [`Rollout::rolled_back`].
    RollBack {
        routing: Vec<Route>,
        restore_alias: bool,
        reason: String,
    },
    /// The rollout succeeded.
    Succeeded,
    /// The rollout was rolled back for `reason`.
    RolledBack { reason: String },
}

impl Rollout {
    pub fn start(now: DateTime<Utc>) -> Rollout {
        Rollout {
            step: 0,
            phase: Phase::Route,
            routing: Vec::new(),
            started: now,
            step_started: None,
            bake_until: None,
            alias_moved: false,
            checks: Vec::new(),
            overrides: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// What to do next at `now`.
    pub fn next(&self, plan: &Plan, now: DateTime<Utc>) -> Effect {
        match &self.phase {
            Phase::Route => {
                let routing = plan.routing_at(self.step);
                let all_new = routing
                    .iter()
                    .all(|r| r.version == plan.version && r.mode == Mode::Live);
                Effect::Route {
                    step: self.step,
                    move_alias: all_new && !self.alias_moved,
                    routing,
                }
            }
            Phase::Bake => match self.bake_until {
                Some(until) if now < until => Effect::Wait { until },
                _ => Effect::Check { step: self.step },
            },
            Phase::RollBack { reason } => Effect::RollBack {
                routing: plan.routing_back(),
                restore_alias: self.alias_moved,
                reason: reason.clone(),
            },
            Phase::Succeeded => Effect::Succeeded,
            Phase::RolledBack { reason } => Effect::RolledBack {
                reason: reason.clone(),
            },
        }
    }

    /// The step's routing is set (and the alias moved, when asked).
    pub fn routed(
        &mut self,
        plan: &Plan,
        routing: Vec<Route>,
        moved_alias: bool,
        now: DateTime<Utc>,
    ) {
        self.steps.push(StepRecord {
            step: self.step,
            at: now,
            routing: routing.clone(),
        });
        self.routing = routing;
        self.alias_moved |= moved_alias;
        self.step_started = Some(now);
        if plan.ends_unchecked(self.step) {
            self.advance(plan);
        } else {
            self.phase = Phase::Bake;
            self.bake_until = Some(instant_after(now, plan.bake));
        }
    }

    /// The step's checks found `verdict` at `now`.
    pub fn checked(&mut self, plan: &Plan, verdict: Verdict, now: DateTime<Utc>) {
        let (outcome, details) = match &verdict {
            Verdict::Passed(details) => ("passed", details.clone()),
            Verdict::Failed { details, .. } => ("failed", details.clone()),
            Verdict::Waiting { details, .. } => ("waiting", details.clone()),
        };
        self.checks.push(CheckRecord {
            step: self.step,
            at: now,
            outcome: outcome.into(),
            details,
        });
        match verdict {
            Verdict::Passed(_) => self.advance(plan),
            Verdict::Failed { reason, .. } => self.phase = Phase::RollBack { reason },
            Verdict::Waiting { reason, .. } => {
                let baked = self
                    .step_started
                    .map_or(now, |started| instant_after(started, plan.bake));
                if now >= instant_after(baked, plan.max_wait) {
                    self.phase = Phase::RollBack {
                        reason: format!(
                            "the check of step {} could not decide within max_wait ({}): {reason}",
                            self.step + 1,
                            crate::duration::HumanDuration(plan.max_wait)
                        ),
                    };
                } else {
                    self.bake_until = Some(instant_after(now, plan.recheck));
                }
            }
        }
    }

    /// The routing (and alias) went back.
    pub fn rolled_back(&mut self, routing: Vec<Route>) {
        self.routing = routing;
        self.alias_moved = false;
        if let Phase::RollBack { reason } = &self.phase {
            self.phase = Phase::RolledBack {
                reason: reason.clone(),
            };
        }
    }

    fn advance(&mut self, plan: &Plan) {
        self.bake_until = None;
        if self.step + 1 < plan.strategy.step_count() {
            self.step += 1;
            self.phase = Phase::Route;
        } else {
            self.phase = Phase::Succeeded;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(strategy: Strategy) -> Plan {
        Plan {
            strategy,
            version: "2".into(),
            previous: Some("1".into()),
            bake: Duration::from_secs(600),
            checked: true,
            max_wait: Duration::from_secs(3600),
            recheck: Duration::from_secs(60),
        }
    }

    fn weights(routing: &[Route]) -> Vec<(String, u8, Mode)> {
        routing
            .iter()
            .map(|r| (r.version.clone(), r.weight, r.mode))
            .collect()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    /// Drives a rollout to its end, every check answering `verdicts` in turn; returns the
    /// routings set, in order, and the final effect.
    fn drive(plan: &Plan, verdicts: &mut Vec<Verdict>) -> (Vec<Vec<Route>>, Effect, Rollout) {
        let mut rollout = Rollout::start(at(0));
        let mut now = at(0);
        let mut routings = Vec::new();
        for _ in 0..100 {
            match rollout.next(plan, now) {
                Effect::Route {
                    routing,
                    move_alias,
                    ..
                } => {
                    routings.push(routing.clone());
                    rollout.routed(plan, routing, move_alias, now);
                }
                Effect::Wait { until } => {
                    assert!(until > now, "a wait moves forward");
                    now = until;
                }
                Effect::Check { .. } => {
                    let verdict = verdicts.remove(0);
                    rollout.checked(plan, verdict, now);
                }
                Effect::RollBack { routing, .. } => {
                    routings.push(routing.clone());
                    rollout.rolled_back(routing);
                }
                done @ (Effect::Succeeded | Effect::RolledBack { .. }) => {
                    return (routings, done, rollout);
                }
            }
        }
        panic!("the rollout never ended");
    }

    #[test]
    fn canary_walks_its_steps_and_moves_the_alias_at_full_traffic() {
        let plan = plan(Strategy::Canary {
            steps: vec![5, 25, 100],
        });
        let mut verdicts = vec![Verdict::Passed(vec![]); 3];
        let (routings, end, rollout) = drive(&plan, &mut verdicts);
        assert_eq!(end, Effect::Succeeded);
        let live = |v: &str, w| (v.to_owned(), w, Mode::Live);
        assert_eq!(
            routings.iter().map(|r| weights(r)).collect::<Vec<_>>(),
            vec![
                vec![live("1", 95), live("2", 5)],
                vec![live("1", 75), live("2", 25)],
                vec![live("2", 100)],
            ]
        );
        assert!(rollout.alias_moved);
        assert_eq!(rollout.checks.len(), 3);
    }

    #[test]
    fn a_failed_check_rolls_routing_and_alias_back() {
        let plan = plan(Strategy::Canary {
            steps: vec![50, 100],
        });
        let mut verdicts = vec![
            Verdict::Passed(vec![]),
            Verdict::Failed {
                reason: "error rate 0.05 > 0.02".into(),
                details: vec![],
            },
        ];
        let mut rollout = Rollout::start(at(0));
        let mut now = at(0);
        let mut restore = None;
        loop {
            match rollout.next(&plan, now) {
                Effect::Route {
                    routing,
                    move_alias,
                    ..
                } => rollout.routed(&plan, routing, move_alias, now),
                Effect::Wait { until } => now = until,
                Effect::Check { .. } => rollout.checked(&plan, verdicts.remove(0), now),
                Effect::RollBack {
                    routing,
                    restore_alias,
                    ..
                } => {
                    restore = Some(restore_alias);
                    assert_eq!(weights(&routing), vec![("1".to_owned(), 100, Mode::Live)]);
                    rollout.rolled_back(routing);
                }
                Effect::RolledBack { reason } => {
                    assert!(reason.contains("0.05 > 0.02"), "{reason}");
                    break;
                }
                Effect::Succeeded => panic!("a failed check must not succeed"),
            }
        }
        assert_eq!(
            restore,
            Some(true),
            "the alias had moved at 100%: it moves back"
        );
        assert!(!rollout.alias_moved);
    }

    #[test]
    fn shadow_mirrors_then_promotes() {
        let plan = plan(Strategy::Shadow);
        let (routings, end, _) = drive(&plan, &mut vec![Verdict::Passed(vec![])]);
        assert_eq!(end, Effect::Succeeded);
        assert_eq!(
            weights(&routings[0]),
            vec![
                ("1".to_owned(), 100, Mode::Live),
                ("2".to_owned(), 100, Mode::Shadow)
            ]
        );
        assert_eq!(
            weights(&routings[1]),
            vec![("2".to_owned(), 100, Mode::Live)]
        );
    }

    #[test]
    fn direct_without_checks_ends_at_once() {
        let plan = Plan {
            bake: Duration::ZERO,
            checked: false,
            ..plan(Strategy::Direct)
        };
        let (routings, end, rollout) = drive(&plan, &mut vec![]);
        assert_eq!(end, Effect::Succeeded);
        assert_eq!(routings.len(), 1);
        assert!(rollout.alias_moved);
    }

    #[test]
    fn waiting_for_samples_rechecks_until_max_wait_then_rolls_back() {
        let plan = plan(Strategy::Direct);
        let waiting = || Verdict::Waiting {
            reason: "the challenger has 10 of 1000 samples".into(),
            details: vec![],
        };
        let mut rollout = Rollout::start(at(0));
        let Effect::Route {
            routing,
            move_alias,
            ..
        } = rollout.next(&plan, at(0))
        else {
            panic!("routes first");
        };
        rollout.routed(&plan, routing, move_alias, at(0));
        assert_eq!(
            rollout.next(&plan, at(5)),
            Effect::Wait { until: at(10) },
            "bakes first"
        );
        assert_eq!(rollout.next(&plan, at(10)), Effect::Check { step: 0 });
        rollout.checked(&plan, waiting(), at(10));
        assert_eq!(
            rollout.next(&plan, at(10)),
            Effect::Wait { until: at(11) },
            "looks again after `recheck`"
        );
        rollout.checked(&plan, waiting(), at(69));
        assert_eq!(rollout.phase, Phase::Bake, "still inside max_wait");
        rollout.checked(&plan, waiting(), at(70));
        let Phase::RollBack { reason } = &rollout.phase else {
            panic!("max_wait passed: {:?}", rollout.phase);
        };
        assert!(
            reason.contains("max_wait") && reason.contains("10 of 1000"),
            "{reason}"
        );
    }

    #[test]
    fn the_state_survives_a_round_trip_through_json() {
        let plan = plan(Strategy::Canary {
            steps: vec![5, 100],
        });
        let mut rollout = Rollout::start(at(0));
        let Effect::Route {
            routing,
            move_alias,
            ..
        } = rollout.next(&plan, at(0))
        else {
            panic!("routes first");
        };
        rollout.routed(&plan, routing, move_alias, at(0));
        let stored = serde_json::to_string(&rollout).expect("serialize");
        let resumed: Rollout = serde_json::from_str(&stored).expect("deserialize");
        assert_eq!(resumed, rollout);
        assert_eq!(
            resumed.next(&plan, at(3)),
            Effect::Wait { until: at(10) },
            "resumes its bake"
        );
    }

    #[test]
    fn a_first_deploy_has_no_previous_version_to_share_with() {
        let plan = Plan {
            previous: None,
            ..plan(Strategy::Canary {
                steps: vec![5, 100],
            })
        };
        assert_eq!(
            weights(&plan.routing_at(0)),
            vec![("2".to_owned(), 100, Mode::Live)]
        );
        assert!(plan.routing_back().is_empty());
    }
}
