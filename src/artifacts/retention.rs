//! Retention, as Airflow's `db clean`: deletes runs that ended before a cutoff with their task
//! instances, logs and artifact rows (`store`), then the blobs no artifact refers to any more.
//! `sluice db clean` runs it once; `[retention]` runs it on a timer under `serve`.
//!
//! A blob is deleted only if it was last written more than `BLOB_GRACE` ago: workers rewrite a
//! blob right before the completion that refers to it, so a blob a new try is about to share
//! is never deleted between the reference check and the completion's commit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ArtifactError, Artifacts};
use crate::store::{Store, StoreError};

/// How recently written a blob must not be to be deleted.
pub const BLOB_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error("the age `{0:?}` is too large to subtract from now")]
    Age(Duration),
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub runs: u64,
    pub blobs: u64,
}

/// Deletes what ended more than `older_than` before `now`.
pub async fn clean(
    store: &Store,
    artifacts: &Artifacts,
    older_than: Duration,
    now: DateTime<Utc>,
) -> Result<Cleaned, RetentionError> {
    let before = |age: Duration| {
        chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .ok_or(RetentionError::Age(age))
    };
    let cutoff = before(older_than)?;
    let written_before = before(BLOB_GRACE)?;
    let cleaned = store.clean_runs_ended_before(cutoff).await?;
    let mut blobs = 0;
    for digest in &cleaned.unreferenced {
        if artifacts
            .delete_blob_older_than(digest, written_before)
            .await?
        {
            blobs += 1;
        }
    }
    Ok(Cleaned {
        runs: cleaned.runs,
        blobs,
    })
}

/// Runs `clean` every `every` until `shutdown` fires. A failed pass is logged and retried at
/// the next tick.
pub async fn run(
    store: Store,
    artifacts: Artifacts,
    older_than: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match clean(&store, &artifacts, older_than, Utc::now()).await {
            Ok(Cleaned { runs: 0, .. }) => {}
            Ok(cleaned) => info!(
                runs = cleaned.runs,
                blobs = cleaned.blobs,
                "Deleted old runs with their logs and artifacts."
            ),
            Err(error) => {
                warn!(%error, "Retention could not delete old runs; it tries again later.")
            }
        }
    }
}
