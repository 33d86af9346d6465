//! Alert dedup and throttle state (`alert_throttle`): per alert key, when the last alert went
//! out and how many were held back since. Shared through the database, so a window holds
//! across processes and restarts. `decide` is the whole rule, with the time as a parameter;
//! the store methods apply it with writes guarded on the version they read.
//!
//! Each row records when it stops mattering (`expires_at`): the end of its key's window for a
//! throttle row, [`ONCE_MARKER_LIFETIME`] after the event for a `claim_once` marker. Rows past
//! it that hold no held-back count to report are deleted by [`Store::prune_alert_state`].
//! Writes prune on the way, at most once per [`PRUNE_EVERY`] in a process: whatever adds rows
//! then also removes the dead ones, `sluice run` included (it never leads), with no timer of
//! its own; a few processes each pruning hourly cost one indexed `DELETE` apiece.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::{Result, Store, StoreError, get};
use crate::lifecycle::{RunState, TaskState};

/// How often a throttle write is tried again when another writer changed the row in between.
const MAX_ATTEMPTS: usize = 20;

/// How long a `claim_once` marker is kept. It only has to outlive every retry of its event's
/// work — a run's recovery after a crash or a leader change takes minutes — so this is
/// generous.
pub const ONCE_MARKER_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often one process prunes `alert_throttle`, at most.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A row is pruned only this long after it expired, so that a machine whose clock runs ahead
/// never deletes a window that the others still count.
const CLOCK_MARGIN: Duration = Duration::from_secs(600);

/// The latest expiry stored: a window too long to add up stays for good, and year 9999 still
/// sorts correctly where SQLite compares timestamps as text.
fn expiry(now: DateTime<Utc>, lifetime: Duration) -> DateTime<Utc> {
    let far_future = DateTime::parse_from_rfc3339("9999-12-31T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    chrono::Duration::from_std(lifetime)
        .ok()
        .and_then(|lifetime| now.checked_add_signed(lifetime))
        .map_or(far_future, |end| end.min(far_future))
}

fn before(now: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| now.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What the store knows about one alert key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// When the last alert under the key went out; `None` if none has (or it failed).
    pub last_sent_at: Option<DateTime<Utc>>,
    /// Alerts held back since the last one that went out.
    pub suppressed: u64,
}

/// Whether an alert goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleDecision {
    /// Send it; `suppressed` alerts under the same key were held back since the last one that
    /// went out, and the alert should say so.
    Send { suppressed: u64 },
    /// Hold it back: an alert under the same key went out at `last_sent_at`, less than a window
    /// ago. `suppressed` counts this one too.
    Suppress {
        suppressed: u64,
        last_sent_at: DateTime<Utc>,
    },
}

/// The throttle rule: an alert goes out unless one under the same key went out less than
/// `window` before `now`. A `last_sent_at` in the future (another machine's clock ahead) counts
/// as within the window.
pub fn decide(
    state: Option<&ThrottleState>,
    now: DateTime<Utc>,
    window: Duration,
) -> ThrottleDecision {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    match state {
        Some(ThrottleState {
            last_sent_at: Some(last),
            suppressed,
        }) if last.checked_add_signed(window).is_none_or(|end| now < end) => {
            ThrottleDecision::Suppress {
                suppressed: suppressed + 1,
                last_sent_at: *last,
            }
        }
        Some(state) => ThrottleDecision::Send {
            suppressed: state.suppressed,
        },
        None => ThrottleDecision::Send { suppressed: 0 },
    }
}

/// A send slot taken by [`Store::throttle`]. When the send then fails, give it back with
/// [`Store::release_throttle`], so the next alert is not held back by one that never arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleClaim {
    key: String,
    token: String,
    previous: Option<ThrottleState>,
    /// The row's expiry before the send took the slot.
    previous_expiry: Option<DateTime<Utc>>,
}

/// The outcome of [`Store::throttle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub decision: ThrottleDecision,
    /// Set when the decision is `Send`.
    pub claim: Option<ThrottleClaim>,
}

/// The latest try of a task that failed, as alerts describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub task_id: String,
    pub try_number: u32,
    pub error: String,
}

impl TaskFailure {
    /// The failure as templates see it in `failed_tasks`.
    pub fn to_context(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.task_id,
            "error": self.error,
            "try_number": self.try_number,
        })
    }
}

impl Store {
    /// Decides whether an alert under `key` goes out at `now` and records the decision: a send
    /// takes the window's slot and resets the count, a hold-back adds one to the count.
    pub async fn throttle(
        &self,
        key: &str,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Throttled> {
        for _ in 0..MAX_ATTEMPTS {
            let row = self
                .db()
                .query_one_raw(self.stmt(
                    "SELECT last_sent_at, suppressed, version, expires_at FROM alert_throttle \
                     WHERE key = ?",
                    vec![key.into()],
                ))
                .await?;
            let (state, version, previous_expiry) = match &row {
                Some(row) => (
                    Some(ThrottleState {
                        last_sent_at: get(row, "last_sent_at")?,
                        suppressed: get::<i64>(row, "suppressed")?.max(0) as u64,
                    }),
                    Some(get::<i64>(row, "version")?),
                    get::<Option<DateTime<Utc>>>(row, "expires_at")?,
                ),
                None => (None, None, None),
            };
            // A send opens a window; a hold-back leaves the one it falls in as it is.
            let expires_at = expiry(now, window);
            let decision = decide(state.as_ref(), now, window);
            let (statement, token) = match (decision, version) {
                (ThrottleDecision::Send { .. }, None) => {
                    let token = uuid::Uuid::new_v4().to_string();
                    let sql = "INSERT INTO alert_throttle \
                               (key, last_sent_at, suppressed, version, claim, updated_at, expires_at) \
                               VALUES (?, ?, 0, 1, ?, ?, ?) ON CONFLICT (key) DO NOTHING";
                    let values = vec![
                        key.into(),
                        now.into(),
                        token.as_str().into(),
                        now.into(),
                        expires_at.into(),
                    ];
                    (self.stmt(sql, values), Some(token))
                }
                (ThrottleDecision::Send { .. }, Some(version)) => {
                    let token = uuid::Uuid::new_v4().to_string();
                    let sql = "UPDATE alert_throttle SET last_sent_at = ?, suppressed = 0, \
                               version = version + 1, claim = ?, updated_at = ?, expires_at = ? \
                               WHERE key = ? AND version = ?";
                    let values = vec![
                        now.into(),
                        token.as_str().into(),
                        now.into(),
                        expires_at.into(),
                        key.into(),
                        version.into(),
                    ];
                    (self.stmt(sql, values), Some(token))
                }
                (ThrottleDecision::Suppress { .. }, version) => {
                    let sql = "UPDATE alert_throttle SET suppressed = suppressed + 1, \
                               version = version + 1, updated_at = ? WHERE key = ? AND version = ?";
                    let values = vec![now.into(), key.into(), version.unwrap_or(0).into()];
                    (self.stmt(sql, values), None)
                }
            };
            let moved = self.db().execute_raw(statement).await?.rows_affected() == 1;
            if moved {
                let claim = token.map(|token| ThrottleClaim {
                    key: key.to_owned(),
                    token,
                    previous: state,
                    previous_expiry,
                });
                self.prune_alert_state_if_due(now).await;
                return Ok(Throttled { decision, claim });
            }
            // Another writer changed the row between the read and the write: decide again on
            // what it wrote.
        }
        Err(StoreError::Contended(format!(
            "the alert throttle of `{key}`"
        )))
    }

    /// Gives back a send slot whose alert could not be sent: the key's last send time and
    /// expiry are what they were before, and the alerts held back meanwhile stay counted.
    pub async fn release_throttle(&self, claim: &ThrottleClaim) -> Result<()> {
        let now = Utc::now();
        let previous_sent = claim.previous.and_then(|p| p.last_sent_at);
        let previous_count = claim.previous.map_or(0, |p| p.suppressed) as i64;
        // A key with no window before this send has none now: the row only matters while it
        // holds a count.
        let previous_expiry = claim.previous_expiry.unwrap_or(now);
        self.db()
            .execute_raw(self.stmt(
                "UPDATE alert_throttle SET last_sent_at = ?, suppressed = suppressed + ?, \
                 version = version + 1, claim = NULL, updated_at = ?, expires_at = ? \
                 WHERE key = ? AND claim = ?",
                vec![
                    previous_sent.into(),
                    previous_count.into(),
                    now.into(),
                    previous_expiry.into(),
                    claim.key.as_str().into(),
                    claim.token.as_str().into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Records that `key` happened; true for the first caller only, in any process. What
    /// must be done once per event (the failure mail of a run) is done by whoever gets true.
    /// The marker is kept for [`ONCE_MARKER_LIFETIME`].
    pub async fn claim_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let inserted = self
            .db()
            .execute_raw(self.stmt(
                "INSERT INTO alert_throttle \
                 (key, last_sent_at, suppressed, version, claim, updated_at, expires_at) \
                 VALUES (?, ?, 0, 1, NULL, ?, ?) ON CONFLICT (key) DO NOTHING",
                vec![
                    key.into(),
                    now.into(),
                    now.into(),
                    expiry(now, ONCE_MARKER_LIFETIME).into(),
                ],
            ))
            .await?
            .rows_affected();
        self.prune_alert_state_if_due(now).await;
        Ok(inserted == 1)
    }

    /// Deletes the rows that no longer matter at `now`: past their expiry (by more than a
    /// margin for clocks that disagree) and holding no held-back count, which the next alert
    /// under the key still has to report. Rows written before expiries were recorded go
    /// [`ONCE_MARKER_LIFETIME`] after their last write (so such a throttle window, if longer,
    /// ends early once). Returns how many were deleted.
    pub async fn prune_alert_state(&self, now: DateTime<Utc>) -> Result<u64> {
        let deleted = self
            .db()
            .execute_raw(self.stmt(
                "DELETE FROM alert_throttle WHERE suppressed = 0 AND \
                 (expires_at < ? OR (expires_at IS NULL AND updated_at < ?))",
                vec![
                    before(now, CLOCK_MARGIN).into(),
                    before(now, ONCE_MARKER_LIFETIME).into(),
                ],
            ))
            .await?
            .rows_affected();
        Ok(deleted)
    }

    /// Prunes when this process has not for [`PRUNE_EVERY`]. A failure is only logged: the
    /// write that called it succeeded, and the next due prune tries again.
    async fn prune_alert_state_if_due(&self, now: DateTime<Utc>) {
        use std::sync::atomic::Ordering;
        let last = self.alerts_pruned_at.load(Ordering::Relaxed);
        let every = PRUNE_EVERY.as_secs() as i64;
        if now.timestamp().saturating_sub(last) < every {
            return;
        }
        // Of concurrent writers, the one that moves the mark prunes.
        if self
            .alerts_pruned_at
            .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        match self.prune_alert_state(now).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "Pruned alert dedup state."),
            Err(error) => tracing::warn!(%error, "Could not prune alert dedup state."),
        }
    }

    /// Undoes [`Store::claim_once`] (the work failed; let a later attempt do it).
    pub async fn forget_once(&self, key: &str) -> Result<()> {
        self.db()
            .execute_raw(self.stmt("DELETE FROM alert_throttle WHERE key = ?", vec![key.into()]))
            .await?;
        Ok(())
    }

    /// Runs that ended failed at or after `since`, oldest first: what a new leader checks
    /// for failure mails nobody sent.
    pub async fn runs_failed_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT id FROM runs WHERE state = ? AND ended_at >= ? ORDER BY ended_at, id",
                vec![RunState::Failed.as_str().into(), since.into()],
            ))
            .await?;
        rows.iter().map(|r| get(r, "id")).collect()
    }

    /// Tries that went up for retry at or after `since` in runs still running, oldest first,
    /// as (run, task, try): what a new leader checks for retry notices nobody sent. Once a
    /// run has ended, its outcome (and its failure mail) says more than a late notice would.
    pub async fn retries_since(&self, since: DateTime<Utc>) -> Result<Vec<(String, String, u32)>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT t.run_id, t.task_id, t.try_number FROM task_instances t \
                 JOIN runs r ON r.id = t.run_id \
                 WHERE t.state = ? AND t.ended_at >= ? AND r.state = ? \
                 ORDER BY t.ended_at, t.id",
                vec![
                    TaskState::UpForRetry.as_str().into(),
                    since.into(),
                    RunState::Running.as_str().into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "run_id")?,
                    get(r, "task_id")?,
                    get::<i32>(r, "try_number")? as u32,
                ))
            })
            .collect()
    }

    /// The tasks of a run whose latest try failed, in the order they were created.
    pub async fn task_failures(&self, run_id: &str) -> Result<Vec<TaskFailure>> {
        let mut latest: indexmap::IndexMap<String, (u32, TaskState, Option<String>)> =
            indexmap::IndexMap::new();
        for ti in self.task_instances(run_id).await? {
            // Rows come oldest first, so a later try replaces an earlier one.
            latest.insert(ti.task_id, (ti.try_number, ti.state, ti.error));
        }
        Ok(latest
            .into_iter()
            .filter(|(_, (_, state, _))| *state == TaskState::Failed)
            .map(|(task_id, (try_number, _, error))| TaskFailure {
                task_id,
                try_number,
                error: error.unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_alert_goes_out() {
        assert_eq!(
            decide(None, at("2026-11-27T10:00:00Z"), HOUR),
            ThrottleDecision::Send { suppressed: 0 }
        );
    }

    #[test]
    fn repeats_within_the_window_are_held_back_and_counted() {
        let state = ThrottleState {
            last_sent_at: Some(at("2026-11-27T10:00:00Z")),
            suppressed: 2,
        };
        assert_eq!(
            decide(Some(&state), at("2026-11-27T10:59:59Z"), HOUR),
            ThrottleDecision::Suppress {
                suppressed: 3,
                last_sent_at: at("2026-11-27T10:00:00Z")
            }
        );
        // A clock behind the sender's still counts as inside the window.
        assert!(matches!(
            decide(Some(&state), at("2026-11-27T09:59:00Z"), HOUR),
            ThrottleDecision::Suppress { .. }
        ));
    }

    #[test]
    fn after_the_window_the_next_alert_says_how_many_were_held_back() {
        let state = ThrottleState {
            last_sent_at: Some(at("2026-11-27T10:00:00Z")),
            suppressed: 99,
        };
        assert_eq!(
            decide(Some(&state), at("2026-11-27T11:00:00Z"), HOUR),
            ThrottleDecision::Send { suppressed: 99 }
        );
        // A key whose last send failed (no send time) sends at once.
        let failed = ThrottleState {
            last_sent_at: None,
            suppressed: 4,
        };
        assert_eq!(
            decide(Some(&failed), at("2026-11-27T10:00:01Z"), HOUR),
            ThrottleDecision::Send { suppressed: 4 }
        );
    }

    #[test]
    fn a_huge_window_does_not_overflow() {
        let state = ThrottleState {
            last_sent_at: Some(at("2026-11-27T10:00:00Z")),
            suppressed: 0,
        };
        assert!(matches!(
            decide(Some(&state), at("2300-01-01T00:00:00Z"), Duration::MAX),
            ThrottleDecision::Suppress { .. }
        ));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::store::conformance::{new_run, task};
    use crate::store::{Claim, DecisionBatch, NewTaskInstance, TaskCompletion};

    on_every_backend! {
        a_hundred_alerts_in_one_window_send_one_and_count_the_rest => hundred_in_one_window,
        a_failed_send_gives_its_slot_back => failed_send_gives_slot_back,
        claim_once_is_true_once => claim_once_once,
        task_failures_lists_latest_failed_tries => failures_of_a_run,
        failed_runs_and_pending_retries_are_found_since_a_time => missed_mail_candidates,
        pruning_deletes_ended_windows_and_old_markers_but_keeps_counts => pruning,
        writes_prune_at_most_once_per_period => pruning_on_writes,
        a_released_slot_keeps_the_window_it_had => release_keeps_expiry,
        rows_without_an_expiry_go_thirty_days_after_their_last_write => pruning_old_rows,
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    const WINDOW: Duration = Duration::from_secs(600);

    async fn hundred_in_one_window(store: Store) {
        let start = at("2026-11-27T10:00:00Z");
        let mut sent = 0;
        for i in 0..100 {
            let now = start + chrono::Duration::seconds(i);
            let outcome = store
                .throttle("wf/t/boom", WINDOW, now)
                .await
                .expect("throttle");
            match outcome.decision {
                ThrottleDecision::Send { suppressed } => {
                    assert_eq!(suppressed, 0);
                    assert!(outcome.claim.is_some());
                    sent += 1;
                }
                ThrottleDecision::Suppress { suppressed, .. } => {
                    assert_eq!(suppressed, i as u64);
                    assert!(outcome.claim.is_none());
                }
            }
        }
        assert_eq!(sent, 1);
        // Another key is independent.
        let other = store
            .throttle("wf/t/other", WINDOW, start)
            .await
            .expect("other");
        assert_eq!(other.decision, ThrottleDecision::Send { suppressed: 0 });
        // After the window, the next alert carries the count.
        let later = start + chrono::Duration::seconds(601);
        let next = store
            .throttle("wf/t/boom", WINDOW, later)
            .await
            .expect("later");
        assert_eq!(next.decision, ThrottleDecision::Send { suppressed: 99 });
        let after = store
            .throttle("wf/t/boom", WINDOW, later + chrono::Duration::seconds(1))
            .await
            .expect("after");
        assert!(
            matches!(
                after.decision,
                ThrottleDecision::Suppress { suppressed: 1, .. }
            ),
            "the count starts again after a send: {after:?}"
        );
    }

    async fn failed_send_gives_slot_back(store: Store) {
        let start = at("2026-11-27T10:00:00Z");
        let first = store.throttle("k", WINDOW, start).await.expect("first");
        let claim = first.claim.expect("a claim");
        let held = store
            .throttle("k", WINDOW, start + chrono::Duration::seconds(1))
            .await
            .expect("held");
        assert!(matches!(held.decision, ThrottleDecision::Suppress { .. }));
        store.release_throttle(&claim).await.expect("release");
        let retry = store
            .throttle("k", WINDOW, start + chrono::Duration::seconds(2))
            .await
            .expect("retry");
        assert_eq!(
            retry.decision,
            ThrottleDecision::Send { suppressed: 1 },
            "the slot is free again and the held-back alert is still counted"
        );
        // Releasing twice changes nothing.
        store.release_throttle(&claim).await.expect("again");
        let held = store
            .throttle("k", WINDOW, start + chrono::Duration::seconds(3))
            .await
            .expect("held again");
        assert!(matches!(held.decision, ThrottleDecision::Suppress { .. }));
    }

    async fn claim_once_once(store: Store) {
        let now = Utc::now();
        assert!(store.claim_once("mail/r1", now).await.expect("first"));
        assert!(!store.claim_once("mail/r1", now).await.expect("second"));
        store.forget_once("mail/r1").await.expect("forget");
        assert!(store.claim_once("mail/r1", now).await.expect("again"));
    }

    /// The keys in `alert_throttle`, sorted.
    async fn keys(store: &Store) -> Vec<String> {
        let rows = store
            .db()
            .query_all_raw(store.stmt("SELECT key FROM alert_throttle ORDER BY key", vec![]))
            .await
            .expect("keys");
        rows.iter()
            .map(|row| get::<String>(row, "key").expect("a key"))
            .collect()
    }

    fn minutes(n: i64) -> chrono::Duration {
        chrono::Duration::minutes(n)
    }

    async fn pruning(store: Store) {
        let t0 = at("2026-11-27T10:00:00Z");
        let send = |key: &'static str, window: Duration, now: DateTime<Utc>| {
            let store = store.clone();
            async move { store.throttle(key, window, now).await.expect("throttle") }
        };
        send("short", WINDOW, t0).await;
        send("counted", WINDOW, t0).await;
        let held = send("counted", WINDOW, t0 + minutes(1)).await;
        assert!(matches!(held.decision, ThrottleDecision::Suppress { .. }));
        send("long", Duration::from_secs(2 * 3600), t0).await;
        send("forever", Duration::MAX, t0).await;
        assert!(store.claim_once("once:mail", t0).await.expect("claim"));
        let all = ["counted", "forever", "long", "once:mail", "short"];
        assert_eq!(keys(&store).await, all);

        // Within the window, and within the clock margin after it, nothing goes.
        assert_eq!(
            store
                .prune_alert_state(t0 + minutes(5))
                .await
                .expect("prune"),
            0
        );
        assert_eq!(
            store
                .prune_alert_state(t0 + minutes(19))
                .await
                .expect("prune"),
            0
        );
        assert_eq!(keys(&store).await, all);
        // A 10 minute window is over (with the margin): its row goes, unless it holds a count.
        assert_eq!(
            store
                .prune_alert_state(t0 + minutes(21))
                .await
                .expect("prune"),
            1
        );
        assert_eq!(
            keys(&store).await,
            ["counted", "forever", "long", "once:mail"]
        );
        assert_eq!(
            store
                .prune_alert_state(t0 + minutes(200))
                .await
                .expect("prune"),
            1
        );
        assert_eq!(keys(&store).await, ["counted", "forever", "once:mail"]);
        // Once-only markers stay for 30 days, then go; the event can then be claimed anew.
        let day = chrono::Duration::days(1);
        store.prune_alert_state(t0 + day * 29).await.expect("prune");
        assert!(
            !store
                .claim_once("once:mail", t0 + day * 29)
                .await
                .expect("held")
        );
        store.prune_alert_state(t0 + day * 31).await.expect("prune");
        assert_eq!(keys(&store).await, ["counted", "forever"]);
        assert!(
            store
                .claim_once("once:mail", t0 + day * 31)
                .await
                .expect("anew")
        );
        // The held-back count is reported by the next alert; after its window the row goes.
        let later = t0 + day * 40;
        let next = send("counted", WINDOW, later).await;
        assert_eq!(next.decision, ThrottleDecision::Send { suppressed: 1 });
        store
            .prune_alert_state(later + minutes(21))
            .await
            .expect("prune");
        assert_eq!(keys(&store).await, ["forever", "once:mail"]);
        // A window too long to add up never ends.
        store
            .prune_alert_state(at("9000-01-01T00:00:00Z"))
            .await
            .expect("prune");
        assert_eq!(
            keys(&store).await,
            ["forever"],
            "only the endless window is left"
        );
    }

    async fn pruning_on_writes(store: Store) {
        let t0 = at("2026-11-27T10:00:00Z");
        // The first write of the process prunes (nothing yet).
        store.throttle("old", WINDOW, t0).await.expect("old");
        // 30 minutes on, `old` has expired but the last prune is too recent.
        store
            .throttle("a", WINDOW, t0 + minutes(30))
            .await
            .expect("a");
        assert_eq!(keys(&store).await, ["a", "old"]);
        // An hour after the last prune, a write prunes again: `old` and then-expired `a` go.
        assert!(
            store
                .claim_once("once:b", t0 + minutes(61))
                .await
                .expect("b")
        );
        assert_eq!(keys(&store).await, ["once:b"]);
    }

    async fn pruning_old_rows(store: Store) {
        let t0 = at("2026-11-27T10:00:00Z");
        // Written before expiries were recorded: one marker, one key with a count.
        for (key, suppressed) in [("once:old", 0i64), ("counted", 3)] {
            store
                .db()
                .execute_raw(store.stmt(
                    "INSERT INTO alert_throttle \
                     (key, last_sent_at, suppressed, version, claim, updated_at) \
                     VALUES (?, ?, ?, 1, NULL, ?)",
                    vec![key.into(), t0.into(), suppressed.into(), t0.into()],
                ))
                .await
                .expect("insert");
        }
        let day = chrono::Duration::days(1);
        store.prune_alert_state(t0 + day * 29).await.expect("prune");
        assert_eq!(keys(&store).await, ["counted", "once:old"]);
        store.prune_alert_state(t0 + day * 31).await.expect("prune");
        assert_eq!(keys(&store).await, ["counted"]);
    }

    async fn release_keeps_expiry(store: Store) {
        let t0 = at("2026-11-27T10:00:00Z");
        store.throttle("k", WINDOW, t0).await.expect("first");
        // The window ends; the next send fails and gives its slot back.
        let second = store
            .throttle("k", WINDOW, t0 + minutes(15))
            .await
            .expect("second");
        store
            .release_throttle(&second.claim.expect("a claim"))
            .await
            .expect("release");
        // The row has the first send's window again: pruned once that (and the margin) ended,
        // not held for the failed send's.
        store
            .prune_alert_state(t0 + minutes(21))
            .await
            .expect("prune");
        assert!(keys(&store).await.is_empty());
    }

    async fn failures_of_a_run(store: Store) {
        let now = Utc::now();
        store
            .create_run(&new_run("r"), &[task("ok"), task("bad")])
            .await
            .expect("run");
        assert!(store.task_failures("r").await.expect("none").is_empty());
        let mut batch = DecisionBatch::default();
        for ti in store.task_instances("r").await.expect("tis") {
            batch.push(ti.id, &ti.task_id, 1, TaskState::Pending, TaskState::Queued);
        }
        store.apply_decisions("r", &batch).await.expect("queue");
        let claim = Claim {
            worker: "w",
            limit: 10,
            lease: Duration::from_secs(30),
            pools: &Default::default(),
            queues: &[],
            run_id: None,
        };
        let claimed = store.claim(&claim).await.expect("claim");
        let completions: Vec<TaskCompletion> = claimed
            .iter()
            .map(|c| {
                let bad = c.task_id == "bad";
                TaskCompletion {
                    id: c.id,
                    run_id: "r".into(),
                    task_id: c.task_id.clone(),
                    try_number: 1,
                    state: if bad {
                        TaskState::Failed
                    } else {
                        TaskState::Success
                    },
                    exit_code: None,
                    error: bad.then(|| "exit code 3".to_owned()),
                    outputs: None,
                    warnings: Vec::new(),
                    summary: None,
                    ended_at: now,
                    retry: None,
                }
            })
            .collect();
        store.complete(&[], &completions).await.expect("complete");
        assert_eq!(
            store.task_failures("r").await.expect("failures"),
            vec![TaskFailure {
                task_id: "bad".into(),
                try_number: 1,
                error: "exit code 3".into()
            }]
        );
    }

    async fn missed_mail_candidates(store: Store) {
        let before = Utc::now() - chrono::Duration::seconds(1);
        // Four runs, each with one task that fails its first try: two retry it (one run goes
        // on, one already succeeded), one fails, one is still at its first try.
        for id in ["retrying", "recovered", "failed", "fresh"] {
            store
                .create_run(&new_run(id), &[task("t")])
                .await
                .expect("run");
            store
                .set_run_state(id, RunState::Queued, RunState::Running, None)
                .await
                .expect("start");
            if id == "fresh" {
                continue;
            }
            let row = store.task_states(id).await.expect("rows")[0].id;
            let mut batch = DecisionBatch::default();
            batch.push(row, "t", 1, TaskState::Pending, TaskState::Queued);
            store.apply_decisions(id, &batch).await.expect("queue");
            let claimed = store
                .claim(&Claim {
                    worker: "w",
                    limit: 1,
                    lease: Duration::from_secs(30),
                    pools: &Default::default(),
                    queues: &[],
                    run_id: Some(id),
                })
                .await
                .expect("claim");
            let retry = id != "failed";
            let completion = TaskCompletion {
                id: claimed[0].id,
                run_id: id.into(),
                task_id: "t".into(),
                try_number: 1,
                state: if retry {
                    TaskState::UpForRetry
                } else {
                    TaskState::Failed
                },
                exit_code: Some(1),
                error: Some("boom".into()),
                outputs: None,
                warnings: Vec::new(),
                summary: None,
                ended_at: Utc::now(),
                retry: retry.then(|| NewTaskInstance {
                    try_number: 2,
                    not_before: Some(Utc::now()),
                    ..task("t")
                }),
            };
            store.complete(&[], &[completion]).await.expect("complete");
        }
        store
            .set_run_state("failed", RunState::Running, RunState::Failed, Some("t"))
            .await
            .expect("fail");
        store
            .set_run_state("recovered", RunState::Running, RunState::Success, None)
            .await
            .expect("succeed");

        assert_eq!(
            store.runs_failed_since(before).await.expect("failed runs"),
            ["failed"]
        );
        assert_eq!(
            store.retries_since(before).await.expect("retries"),
            [("retrying".to_owned(), "t".to_owned(), 1)]
        );
        let later = Utc::now() + chrono::Duration::seconds(60);
        assert!(
            store
                .runs_failed_since(later)
                .await
                .expect("none")
                .is_empty()
        );
        assert!(store.retries_since(later).await.expect("none").is_empty());
    }
}
