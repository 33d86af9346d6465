//! Retention, as Airflow's `db clean`: deletes runs that ended before a cutoff with their task
//! instances, logs and artifact rows (`store`), then the blobs no artifact refers to any more —
//! those the deleted runs released, and orphans: blobs no row ever referred to (a try that
//! stored its files and then failed or lost its lease records none), found by listing the
//! blob store, so they go even in a pass that deletes no run.
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
    let old_blobs = artifacts.blobs_written_before(written_before).await?;
    let mut unreferenced = store.unreferenced(old_blobs).await?;
    unreferenced.extend(cleaned.unreferenced);
    let mut blobs = 0;
    for digest in &unreferenced {
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
            Ok(Cleaned { runs: 0, blobs: 0 }) => {}
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::artifacts::Location;
    use crate::store::conformance::{claim_one, queued_run, success};
    use crate::store::{NewArtifact, StoreConfig};

    /// Regression: retention deleted only the blobs of the runs it deleted, so a blob stored by
    /// a try that then failed (no row ever refers to it) stayed for ever.
    #[tokio::test]
    async fn orphan_blobs_older_than_the_grace_go_even_when_no_run_is_deleted() {
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = Artifacts::open(&Location::Folder(dir.path().into()), Default::default())
            .expect("a local artifact store");
        let orphan_old = artifacts
            .put_bytes(b"failed try".to_vec())
            .await
            .expect("put");
        let orphan_new = artifacts
            .put_bytes(b"running try".to_vec())
            .await
            .expect("put");
        let kept_old = artifacts.put_bytes(b"kept".to_vec()).await.expect("put");
        queued_run(&store, "r1").await;
        let claimed = claim_one(&store).await;
        let row = NewArtifact {
            try_id: claimed.id,
            name: "kept.txt".into(),
            size: kept_old.size,
            sha256: kept_old.sha256.clone(),
            media_type: "text/plain".into(),
        };
        store
            .complete_with_artifacts(&[], &[success(&claimed)], &[row])
            .await
            .expect("complete");
        let blob = |sha: &str| dir.path().join("sha256").join(&sha[..2]).join(sha);
        let hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        for sha in [&orphan_old.sha256, &kept_old.sha256] {
            std::fs::File::options()
                .write(true)
                .open(blob(sha))
                .and_then(|f| f.set_modified(hours_ago))
                .expect("age the blob");
        }
        let cleaned = clean(
            &store,
            &artifacts,
            Duration::from_secs(90 * 86400),
            Utc::now(),
        )
        .await
        .expect("clean");
        assert_eq!(cleaned, Cleaned { runs: 0, blobs: 1 });
        assert!(!blob(&orphan_old.sha256).exists(), "the old orphan is gone");
        assert!(
            blob(&orphan_new.sha256).exists(),
            "a recent blob may be about to be used"
        );
        assert!(
            blob(&kept_old.sha256).exists(),
            "a blob a row refers to stays"
        );
    }
}
