//! The names of the metrics recorded through the `metrics` facade. The runtime records them;
//! `server::metrics` installs the recorder, sets their buckets and describes them.

/// How long task tries took, by operator (histogram, seconds).
pub const TASK_DURATION: &str = "sluice_task_duration_seconds";
/// How late the scheduler started a cron run after its planned time (histogram, seconds).
pub const FIRE_LAG: &str = "sluice_scheduler_fire_lag_seconds";
/// Tries this process runs now (gauge).
pub const TRIES_RUNNING: &str = "sluice_worker_tries_running";
/// Tries this process claimed (counter).
pub const CLAIMED: &str = "sluice_worker_claimed_total";
/// Completions refused because another try had replaced theirs (counter).
pub const COMPLETIONS_REJECTED: &str = "sluice_worker_completions_rejected_total";
/// Running tries whose lease this process lost, and stopped (counter).
pub const LEASES_LOST: &str = "sluice_worker_leases_lost_total";
/// Warnings successful tries returned, by workflow and operator (counter).
pub const TASK_WARNINGS: &str = "sluice_task_warnings_total";
