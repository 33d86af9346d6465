//! The cron service: creates the scheduled runs that are due, then sleeps until the next
//! interval of any workflow ends (or the catalog changes). It computes fire times; it never
//! polls. `run_once(now)` is the whole decision, so tests drive it with a fake clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Result, SchedulerError};
use crate::catalog::launch::{LaunchError, RunRequest, launch};
use crate::catalog::live::Catalog;
use crate::dag::intervals;
use crate::store::{Store, StoreEvent};

/// Cron service settings.
#[derive(Debug, Clone)]
pub struct CronConfig {
    /// At most this many runs are created per workflow in one pass (a long catchup is worked
    /// off over several passes instead of in one burst).
    pub max_runs_per_pass: usize,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            max_runs_per_pass: 100,
        }
    }
}

/// One pass's result.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pass {
    /// The runs created, as (workflow, run id, how late the run was created after its
    /// interval ended).
    pub created: Vec<(String, String, chrono::Duration)>,
    /// When the next interval of any workflow ends.
    pub next_wakeup: Option<DateTime<Utc>>,
}

pub struct CronService {
    store: Store,
    catalog: Arc<Catalog>,
    config: CronConfig,
}

impl CronService {
    pub fn new(store: Store, catalog: Arc<Catalog>, config: CronConfig) -> Self {
        CronService {
            store,
            catalog,
            config,
        }
    }

    /// Creates every scheduled run due at `now` for unpaused workflows.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<Pass> {
        let snapshot = self.catalog.snapshot();
        let paused = self.store.paused().await?;
        let mut pass = Pass::default();
        for (id, entry) in &snapshot.workflows {
            let workflow = &entry.workflow;
            if workflow.schedule.is_none() {
                continue;
            }
            let mut last = self.store.last_logical_date(id, "schedule").await?;
            if paused.contains(id) {
                continue;
            }
            let due = intervals::due_intervals(workflow, last, now, self.config.max_runs_per_pass);
            for interval in due {
                if self.store.run_exists_for(id, interval.start).await? {
                    last = Some(interval.start);
                    continue;
                }
                let request = RunRequest {
                    params: serde_json::Map::new(),
                    trigger: "schedule".into(),
                    triggered_by: None,
                    logical_date: interval.start,
                    data_interval: (interval.start, interval.end),
                };
                let path = entry.path.to_string_lossy();
                match launch(&self.store, workflow, &path, request).await {
                    Ok(run_id) => {
                        let lag = now - interval.end;
                        info!(workflow = %id, run_id, logical_date = %interval.start, "Scheduled run created.");
                        metrics::histogram!("sluice_scheduler_fire_lag_seconds")
                            .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
                        pass.created.push((id.clone(), run_id, lag));
                    }
                    // Params without defaults make a workflow unschedulable; say so and go on.
                    Err(LaunchError::Params(problems)) => {
                        warn!(workflow = %id, problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(), "A scheduled run cannot start: its params need values.");
                        break;
                    }
                    Err(LaunchError::Store(e)) => return Err(SchedulerError::Store(e)),
                }
                last = Some(interval.start);
            }
            let next = intervals::next_wakeup(workflow, last, now);
            pass.next_wakeup = match (pass.next_wakeup, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(pass)
    }

    /// Runs passes until `shutdown`: at each computed wake-up time, whenever `changed` is
    /// notified (the catalog reloaded), and when a workflow is paused or unpaused.
    pub async fn run(
        self,
        changed: Arc<Notify>,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        loop {
            let pass = self.run_once(Utc::now()).await?;
            // A wake-up already past means more runs are due (a capped catchup): go again.
            let sleep_for = match pass.next_wakeup {
                Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(24 * 3600),
            };
            let wake = tokio::time::sleep(sleep_for);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = changed.notified() => break,
                    _ = &mut wake => break,
                    event = events.recv() => match event {
                        Some(StoreEvent::Paused { .. }) => break,
                        // Other events say nothing about schedules.
                        Some(_) => {}
                        None => return Ok(()),
                    },
                }
            }
        }
    }
}
