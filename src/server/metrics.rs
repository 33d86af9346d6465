//! The process's Prometheus recorder: what is recorded anywhere through the `metrics` facade
//! (task durations and claims by workers, fire lag by the scheduler) lands here, and `/metrics`
//! renders it after the gauges it computes from the database.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use crate::metric::{
    CLAIMED, COMPLETIONS_REJECTED, FIRE_LAG, LEASES_LOST, TASK_DURATION, TASK_WARNINGS,
    TRIES_RUNNING,
};

/// How long tasks take, in seconds: from sub-second checks to multi-hour training jobs.
const TASK_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];
const FIRE_LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder and returns its
/// handle. Calling it again returns the same handle, so tests and `serve` can both call it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(TASK_DURATION.into()), TASK_DURATION_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(FIRE_LAG.into()), FIRE_LAG_BUCKETS)
                });
            let builder = match builder {
                Ok(builder) => builder,
                Err(e) => {
                    // Only empty bucket lists fail, and ours are constants; fall back to
                    // summaries rather than no metrics at all.
                    warn!(error = %e, "Histogram buckets were refused; durations are exported as summaries.");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                warn!(error = %e, "Another metrics recorder is installed; /metrics shows only database gauges.");
            }
            metrics::describe_histogram!(
                TASK_DURATION,
                metrics::Unit::Seconds,
                "How long task tries took, from claim to completion."
            );
            metrics::describe_counter!(
                TASK_WARNINGS,
                "Warnings returned by successful task tries, by workflow and operator."
            );
            metrics::describe_gauge!(TRIES_RUNNING, "Task tries this process runs now.");
            metrics::describe_counter!(CLAIMED, "Task tries this process claimed.");
            metrics::describe_counter!(
                COMPLETIONS_REJECTED,
                "Completions refused because another try had taken over."
            );
            metrics::describe_counter!(
                LEASES_LOST,
                "Running tries whose lease ran out, stopped by this process."
            );
            metrics::describe_histogram!(
                FIRE_LAG,
                metrics::Unit::Seconds,
                "How late scheduled runs were started after their planned time."
            );
            handle
        })
        .clone()
}
