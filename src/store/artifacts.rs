//! Artifact rows: what each successful try kept (name, size, digest, media type), written in
//! the transaction of the try's completion so a stale try's artifacts are never recorded; and
//! retention, which deletes old runs with their task instances, logs and artifact rows.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};

use super::{CHUNK, Result, Store, TaskCompletion, get, marks};
use crate::lifecycle::{RunState, TaskState};

/// A file a try kept, stored under its digest before the try's completion is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    /// The task instance (try) row that kept it: its completion's `id`.
    pub try_id: i64,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
}

/// An artifact as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
    pub created_at: DateTime<Utc>,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanedRuns {
    pub runs: u64,
    /// Digests whose last reference went with these runs: their blobs may go too.
    pub unreferenced: BTreeSet<String>,
}

const ARTIFACT_COLUMNS: &str =
    "run_id, task_id, try_number, name, size, sha256, media_type, created_at";

fn artifact_from_row(row: &QueryResult) -> Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        run_id: get(row, "run_id")?,
        task_id: get(row, "task_id")?,
        try_number: get::<i32>(row, "try_number")? as u32,
        name: get(row, "name")?,
        size: get::<i64>(row, "size")?.max(0) as u64,
        sha256: get(row, "sha256")?,
        media_type: get(row, "media_type")?,
        created_at: get(row, "created_at")?,
    })
}

/// Inserts the artifacts of the accepted successful completions (the others' are dropped:
/// a try that was taken over keeps nothing).
pub(super) async fn insert_artifacts<C: ConnectionTrait>(
    store: &Store,
    conn: &C,
    completions: &[TaskCompletion],
    accepted: &HashSet<i64>,
    artifacts: &[NewArtifact],
    now: DateTime<Utc>,
) -> Result<()> {
    let tries: HashMap<i64, &TaskCompletion> = completions
        .iter()
        .filter(|c| accepted.contains(&c.id) && c.state == TaskState::Success)
        .map(|c| (c.id, c))
        .collect();
    let rows: Vec<(&TaskCompletion, &NewArtifact)> = artifacts
        .iter()
        .filter_map(|a| tries.get(&a.try_id).map(|c| (*c, a)))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut sql = format!("INSERT INTO artifacts ({ARTIFACT_COLUMNS}) VALUES ");
        let mut values = Vec::with_capacity(chunk.len() * 8);
        for (i, (c, a)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
            values.extend([
                Value::from(c.run_id.as_str()),
                c.task_id.as_str().into(),
                (c.try_number as i32).into(),
                a.name.as_str().into(),
                i64::try_from(a.size).unwrap_or(i64::MAX).into(),
                a.sha256.as_str().into(),
                a.media_type.as_str().into(),
                now.into(),
            ]);
        }
        conn.execute_raw(store.stmt(&sql, values)).await?;
    }
    Ok(())
}

impl Store {
    /// Every artifact of a run, by task, try and name.
    pub async fn run_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE run_id = ? \
                     ORDER BY task_id, try_number, name"
                ),
                vec![run_id.into()],
            ))
            .await?;
        rows.iter().map(artifact_from_row).collect()
    }

    /// The latest successful try's artifacts of each task of a run: what downstream tasks
    /// and users read.
    pub async fn latest_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRecord>> {
        let all = self.run_artifacts(run_id).await?;
        let mut latest: HashMap<&str, u32> = HashMap::new();
        for a in &all {
            let entry = latest.entry(a.task_id.as_str()).or_default();
            *entry = (*entry).max(a.try_number);
        }
        let latest: HashMap<String, u32> =
            latest.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Ok(all
            .into_iter()
            .filter(|a| latest.get(&a.task_id) == Some(&a.try_number))
            .collect())
    }

    /// How many bytes a run's artifacts hold, for the per-run limit.
    pub async fn run_artifact_bytes(&self, run_id: &str) -> Result<u64> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                // PostgreSQL sums BIGINT into NUMERIC; the cast keeps one type on both.
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM artifacts \
                 WHERE run_id = ?",
                vec![run_id.into()],
            ))
            .await?;
        let total: i64 = match row {
            Some(row) => get(&row, "total")?,
            None => 0,
        };
        Ok(total.max(0) as u64)
    }

    /// Deletes runs that ended before `cutoff` with their task instances, logs and artifact
    /// rows, a batch of runs per transaction. Runs still going are never touched.
    pub async fn clean_runs_ended_before(&self, cutoff: DateTime<Utc>) -> Result<CleanedRuns> {
        let finished: Vec<Value> = [RunState::Success, RunState::Failed, RunState::Cancelled]
            .iter()
            .map(|s| s.as_str().into())
            .collect();
        let mut cleaned = CleanedRuns::default();
        let mut released = BTreeSet::new();
        loop {
            let mut values = vec![Value::from(cutoff)];
            values.extend(finished.iter().cloned());
            values.push((CHUNK as i64).into());
            let ids: Vec<String> = self
                .db()
                .query_all_raw(self.stmt(
                    &format!(
                        "SELECT id FROM runs WHERE ended_at < ? AND state IN ({}) \
                         ORDER BY ended_at LIMIT ?",
                        marks(finished.len())
                    ),
                    values,
                ))
                .await?
                .iter()
                .map(|r| get(r, "id"))
                .collect::<Result<_>>()?;
            if ids.is_empty() {
                break;
            }
            let list = marks(ids.len());
            let id_values: Vec<Value> = ids.iter().map(|id| id.as_str().into()).collect();
            let txn = self.db().begin().await?;
            for row in txn
                .query_all_raw(self.stmt(
                    &format!("SELECT DISTINCT sha256 FROM artifacts WHERE run_id IN ({list})"),
                    id_values.clone(),
                ))
                .await?
            {
                released.insert(get::<String>(&row, "sha256")?);
            }
            for table in ["artifacts", "task_logs", "task_instances"] {
                txn.execute_raw(self.stmt(
                    &format!("DELETE FROM {table} WHERE run_id IN ({list})"),
                    id_values.clone(),
                ))
                .await?;
            }
            let deleted = txn
                .execute_raw(
                    self.stmt(&format!("DELETE FROM runs WHERE id IN ({list})"), id_values),
                )
                .await?;
            txn.commit().await?;
            cleaned.runs += deleted.rows_affected();
        }
        cleaned.unreferenced = self.unreferenced(released).await?;
        Ok(cleaned)
    }

    /// Of `digests`, those no artifact row refers to.
    pub async fn unreferenced(&self, digests: BTreeSet<String>) -> Result<BTreeSet<String>> {
        let mut unreferenced = digests.clone();
        let digests: Vec<String> = digests.into_iter().collect();
        for chunk in digests.chunks(CHUNK) {
            for row in self
                .db()
                .query_all_raw(self.stmt(
                    &format!(
                        "SELECT DISTINCT sha256 FROM artifacts WHERE sha256 IN ({})",
                        marks(chunk.len())
                    ),
                    chunk.iter().map(|d| d.as_str().into()).collect(),
                ))
                .await?
            {
                unreferenced.remove(&get::<String>(&row, "sha256")?);
            }
        }
        Ok(unreferenced)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::store::NewLogLine;
    use crate::store::conformance::{claim_one, queued_run, success};

    on_every_backend! {
        artifacts_are_recorded_with_the_completion_and_a_stale_try_keeps_none => fenced,
        retention_deletes_old_runs_and_says_which_blobs_are_free => retention,
    }

    fn artifact(try_id: i64, name: &str, sha: &str, size: u64) -> NewArtifact {
        NewArtifact {
            try_id,
            name: name.into(),
            size,
            sha256: sha.into(),
            media_type: "text/plain".into(),
        }
    }

    async fn fenced(store: Store) {
        queued_run(&store, "r1").await;
        let claimed = claim_one(&store).await;
        let done = success(&claimed);
        let kept = [
            artifact(claimed.id, "results.jsonl", &"a".repeat(64), 10),
            artifact(claimed.id, "plots/x.png", &"b".repeat(64), 20),
        ];
        let accepted = store
            .complete_with_artifacts(&[], std::slice::from_ref(&done), &kept)
            .await
            .expect("complete");
        assert_eq!(accepted, [claimed.id]);
        let rows = store.run_artifacts("r1").await.expect("list");
        let names: Vec<_> = rows.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["plots/x.png", "results.jsonl"]);
        assert_eq!((rows[1].task_id.as_str(), rows[1].try_number), ("a", 1));
        assert_eq!(store.run_artifact_bytes("r1").await.expect("sum"), 30);
        // The same try completing again (a stale worker) is refused, and so are its files.
        let again = store
            .complete_with_artifacts(
                &[NewLogLine {
                    run_id: "r1".into(),
                    task_id: "a".into(),
                    try_number: 1,
                    stream: "stdout",
                    line: "late".into(),
                    logged_at: Utc::now(),
                }],
                &[done],
                &[artifact(claimed.id, "late.txt", &"c".repeat(64), 5)],
            )
            .await
            .expect("complete");
        assert!(again.is_empty());
        assert_eq!(store.run_artifacts("r1").await.expect("list").len(), 2);
    }

    async fn retention(store: Store) {
        for id in ["old", "new"] {
            queued_run(&store, id).await;
            let claimed = claim_one(&store).await;
            let shared = "d".repeat(64);
            let own = format!("{:0>64}", id);
            store
                .complete_with_artifacts(
                    &[],
                    &[success(&claimed)],
                    &[
                        artifact(claimed.id, "shared.txt", &shared, 1),
                        artifact(claimed.id, "own.txt", &own, 1),
                    ],
                )
                .await
                .expect("complete");
            assert!(
                store
                    .set_run_state(id, RunState::Running, RunState::Success, None)
                    .await
                    .expect("end the run")
            );
        }
        // Only the old run ended before the cutoff.
        store
            .db()
            .execute_raw(store.stmt(
                "UPDATE runs SET ended_at = ? WHERE id = ?",
                vec![(Utc::now() - Duration::days(100)).into(), "old".into()],
            ))
            .await
            .expect("age the old run");
        let cleaned = store
            .clean_runs_ended_before(Utc::now() - Duration::days(90))
            .await
            .expect("clean");
        assert_eq!(cleaned.runs, 1);
        // The shared blob is still the new run's; the old run's own blob is free.
        assert_eq!(
            cleaned.unreferenced,
            BTreeSet::from([format!("{:0>64}", "old")])
        );
        assert!(store.run("old").await.expect("read").is_none());
        assert!(store.task_instances("old").await.expect("read").is_empty());
        assert!(store.run_artifacts("old").await.expect("read").is_empty());
        assert_eq!(store.run_artifacts("new").await.expect("read").len(), 2);
        let again = store
            .clean_runs_ended_before(Utc::now() - Duration::days(90))
            .await
            .expect("clean");
        assert_eq!(again, CleanedRuns::default());
    }
}
