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
use crate::store::{Store, StoreError, StoreEvent};

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
                        metrics::histogram!(crate::metric::FIRE_LAG)
                            .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
                        pass.created.push((id.clone(), run_id, lag));
                    }
                    // Params without defaults make a workflow unschedulable; say so and go on.
                    Err(LaunchError::Params(problems)) => {
                        warn!(workflow = %id, problems = ?problems.iter().map(ToString::to_string).collect::<Vec<_>>(), "A scheduled run cannot start: its params need values.");
                        break;
                    }
                    // Another scheduler on the database created it first.
                    Err(LaunchError::Store(StoreError::AlreadyScheduled { .. })) => {}
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
                        // A pause, or changes from other processes that went unheard.
                        Some(StoreEvent::Paused { .. } | StoreEvent::Missed) => break,
                        // Other events say nothing about schedules.
                        Some(_) => {}
                        None => return Ok(()),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::StoreConfig;

    async fn service(workflow: &str) -> (CronService, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("wf.yaml"), workflow).expect("write");
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let catalog = Arc::new(Catalog::open(dir.path()));
        assert!(
            catalog.snapshot().import_errors.is_empty(),
            "{:?}",
            catalog.snapshot().import_errors
        );
        let service = CronService::new(
            store.clone(),
            catalog,
            CronConfig {
                max_runs_per_pass: 10,
            },
        );
        (service, store, dir)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid date")
    }

    #[tokio::test]
    async fn catchup_creates_each_missed_interval_once() {
        let (cron, store, _dir) = service(
            "schedule: \"0 2 * * *\"\nstart_date: 2026-11-01\ncatchup: true\ntasks:\n  t: { operator: noop }\n",
        )
        .await;
        let now = utc(2026, 11, 4, 12, 0);
        let pass = cron.run_once(now).await.unwrap();
        // Intervals [11-01 02:00, 11-02 02:00) … [11-03 02:00, 11-04 02:00) have ended.
        assert_eq!(pass.created.len(), 3);
        assert_eq!(pass.next_wakeup, Some(utc(2026, 11, 5, 2, 0)));
        assert_eq!(
            store.last_logical_date("wf", "schedule").await.unwrap(),
            Some(utc(2026, 11, 3, 2, 0))
        );
        // The same moment again creates nothing: each logical date runs once.
        assert!(cron.run_once(now).await.unwrap().created.is_empty());
        let lag = pass.created.last().map(|c| c.2).unwrap();
        assert_eq!(lag, now - utc(2026, 11, 4, 2, 0));
    }

    #[tokio::test]
    async fn without_catchup_only_the_latest_interval_runs() {
        let (cron, _store, _dir) = service(
            "schedule: \"@hourly\"\nstart_date: 2026-11-01\ntasks:\n  t: { operator: noop }\n",
        )
        .await;
        let pass = cron.run_once(utc(2026, 11, 4, 12, 30)).await.unwrap();
        assert_eq!(pass.created.len(), 1);
        assert_eq!(pass.next_wakeup, Some(utc(2026, 11, 4, 13, 0)));
    }

    #[tokio::test]
    async fn paused_workflows_and_past_end_dates_create_nothing() {
        let (cron, store, _dir) = service(
            "schedule: \"@daily\"\nstart_date: 2026-11-01\ncatchup: true\ntasks:\n  t: { operator: noop }\n",
        )
        .await;
        store.set_paused("wf", true).await.unwrap();
        assert!(
            cron.run_once(utc(2026, 11, 4, 0, 0))
                .await
                .unwrap()
                .created
                .is_empty()
        );
        store.set_paused("wf", false).await.unwrap();
        assert_eq!(
            cron.run_once(utc(2026, 11, 4, 0, 0))
                .await
                .unwrap()
                .created
                .len(),
            3
        );

        let (ended, _store, _dir) = service(
            "schedule: \"@daily\"\nstart_date: 2026-11-01\nend_date: 2026-11-02\ncatchup: true\ntasks:\n  t: { operator: noop }\n",
        )
        .await;
        let pass = ended.run_once(utc(2026, 11, 10, 0, 0)).await.unwrap();
        assert_eq!(pass.created.len(), 2, "11-01 and 11-02 only");
        assert_eq!(pass.next_wakeup, None);
    }

    #[tokio::test]
    async fn a_dst_change_neither_skips_nor_doubles_a_day() {
        // Europe/Berlin springs forward on 2026-03-29: 02:30 does not exist that day.
        let (cron, store, _dir) = service(
            "schedule: \"30 2 * * *\"\ntimezone: Europe/Berlin\nstart_date: 2026-03-27\ncatchup: true\ntasks:\n  t: { operator: noop }\n",
        )
        .await;
        let pass = cron.run_once(utc(2026, 3, 31, 12, 0)).await.unwrap();
        assert_eq!(
            pass.created.len(),
            4,
            "27→28, 28→29, 29→30, 30→31: {:?}",
            pass.created
        );
        let ids: Vec<String> = pass.created.iter().map(|c| c.1.clone()).collect();
        let mut dates = Vec::new();
        for id in ids {
            dates.push(store.run(&id).await.unwrap().expect("run").logical_date);
        }
        dates.sort();
        dates.dedup();
        assert_eq!(dates.len(), 4, "one run per day");
    }
}
