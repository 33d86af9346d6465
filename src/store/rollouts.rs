//! Rollouts of the `deploy` operator (`rollouts`): one row per deploy task of a run, written
//! after every move of the rollout, so a later try of the task — rescheduled, retried after a
//! failure, or recovered after a crash — resumes at its step. The rows are also the model's
//! deployment history and the routing a serving layer reads (aliases live in the registry,
//! `tracking`). Writes are fenced on the try:
//! an older try never overwrites a newer one's row.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult};
use serde_json::Value;

use super::{Result, Store, get};

/// One rollout as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    pub run_id: String,
    pub task_id: String,
    /// The try that wrote the row last.
    pub try_number: u32,
    pub model: String,
    pub version: String,
    /// The version the alias held before, which a rollback returns to.
    pub previous_version: Option<String>,
    pub alias: String,
    /// `direct`, `canary` or `shadow`.
    pub strategy: String,
    /// The current step, from 0.
    pub step: u32,
    /// The phase: `route`, `bake`, `rolling_back`, `succeeded` or `rolled_back`.
    pub state: String,
    /// The routing as last set: `[{version, weight, mode}]`.
    pub routing: Value,
    /// The operator's whole resumable state.
    pub detail: Value,
    /// Every check evaluation so far.
    pub checks: Value,
    pub rollback_reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "run_id, task_id, try_number, model, version, previous_version, alias, \
                       strategy, step, state, routing, detail, checks, rollback_reason, \
                       started_at, updated_at";

fn record(row: &QueryResult) -> Result<RolloutRecord> {
    let json = |column: &str| -> Result<Value> {
        let text: String = get(row, column)?;
        Ok(serde_json::from_str(&text)?)
    };
    let try_number: i32 = get(row, "try_number")?;
    let step: i32 = get(row, "step")?;
    Ok(RolloutRecord {
        run_id: get(row, "run_id")?,
        task_id: get(row, "task_id")?,
        try_number: u32::try_from(try_number).unwrap_or_default(),
        model: get(row, "model")?,
        version: get(row, "version")?,
        previous_version: get(row, "previous_version")?,
        alias: get(row, "alias")?,
        strategy: get(row, "strategy")?,
        step: u32::try_from(step).unwrap_or_default(),
        state: get(row, "state")?,
        routing: json("routing")?,
        detail: json("detail")?,
        checks: json("checks")?,
        rollback_reason: get(row, "rollback_reason")?,
        started_at: get(row, "started_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

impl Store {
    /// The rollout of task `task_id` in run `run_id`, if one started.
    pub async fn rollout_for_task(
        &self,
        run_id: &str,
        task_id: &str,
    ) -> Result<Option<RolloutRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                &format!("SELECT {COLUMNS} FROM rollouts WHERE run_id = ? AND task_id = ?"),
                vec![run_id.into(), task_id.into()],
            ))
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Writes `rollout` (inserting its row or updating it). Returns `false`, writing nothing,
    /// when a newer try of the task already owns the row.
    pub async fn save_rollout(&self, rollout: &RolloutRecord) -> Result<bool> {
        let values = |with_key_last: bool| {
            let mut values: Vec<sea_orm::Value> = vec![
                i32::try_from(rollout.try_number).unwrap_or(i32::MAX).into(),
                rollout.model.clone().into(),
                rollout.version.clone().into(),
                rollout.previous_version.clone().into(),
                rollout.alias.clone().into(),
                rollout.strategy.clone().into(),
                i32::try_from(rollout.step).unwrap_or(i32::MAX).into(),
                rollout.state.clone().into(),
                rollout.routing.to_string().into(),
                rollout.detail.to_string().into(),
                rollout.checks.to_string().into(),
                rollout.rollback_reason.clone().into(),
                rollout.started_at.into(),
                rollout.updated_at.into(),
            ];
            let key: [sea_orm::Value; 2] = [
                rollout.run_id.clone().into(),
                rollout.task_id.clone().into(),
            ];
            if with_key_last {
                values.extend(key);
            } else {
                values.splice(0..0, key);
            }
            values
        };
        let mut update = values(true);
        update.push(i32::try_from(rollout.try_number).unwrap_or(i32::MAX).into());
        let updated = self
            .db()
            .execute_raw(self.stmt(
                "UPDATE rollouts SET try_number = ?, model = ?, version = ?, \
                 previous_version = ?, alias = ?, strategy = ?, step = ?, state = ?, \
                 routing = ?, detail = ?, checks = ?, rollback_reason = ?, started_at = ?, \
                 updated_at = ? WHERE run_id = ? AND task_id = ? AND try_number <= ?",
                update,
            ))
            .await?
            .rows_affected();
        if updated == 1 {
            return Ok(true);
        }
        if self
            .rollout_for_task(&rollout.run_id, &rollout.task_id)
            .await?
            .is_some()
        {
            // The row exists and a newer try owns it.
            return Ok(false);
        }
        self.db()
            .execute_raw(self.stmt(
                &format!(
                    "INSERT INTO rollouts ({COLUMNS}) VALUES \
                     (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                values(false),
            ))
            .await?;
        Ok(true)
    }

    /// `model`'s rollouts, newest first, at most `limit`.
    pub async fn rollouts_of_model(&self, model: &str, limit: u64) -> Result<Vec<RolloutRecord>> {
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {COLUMNS} FROM rollouts WHERE model = ? \
                     ORDER BY updated_at DESC, id DESC LIMIT ?"
                ),
                vec![
                    model.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await?;
        rows.iter().map(record).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    on_every_backend! {
        a_rollout_is_saved_resumed_and_fenced_on_its_try => saved_and_fenced,
        a_models_rollouts_are_listed_newest_first => listed_newest_first,
    }

    fn rollout(run: &str, version: &str, state: &str, at: DateTime<Utc>) -> RolloutRecord {
        RolloutRecord {
            run_id: run.into(),
            task_id: "promote".into(),
            try_number: 1,
            model: "assistant".into(),
            version: version.into(),
            previous_version: None,
            alias: "champion".into(),
            strategy: "canary".into(),
            step: 0,
            state: state.into(),
            routing: json!([{"version": version, "weight": 5, "mode": "live"}]),
            detail: json!({"step": 0}),
            checks: json!([]),
            rollback_reason: None,
            started_at: at,
            updated_at: at,
        }
    }

    async fn saved_and_fenced(store: Store) {
        // PostgreSQL keeps microseconds.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let mut first = rollout("r1", "2", "bake", now);
        assert!(store.save_rollout(&first).await.expect("insert"));
        first.step = 1;
        first.routing = json!([{"version": "2", "weight": 25, "mode": "live"}]);
        assert!(store.save_rollout(&first).await.expect("update"));
        let read = store
            .rollout_for_task("r1", "promote")
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(read, first, "the row reads back as written");

        let newer = RolloutRecord {
            try_number: 2,
            step: 2,
            ..first.clone()
        };
        assert!(store.save_rollout(&newer).await.expect("newer try"));
        let stale = RolloutRecord {
            step: 9,
            ..first.clone()
        };
        assert!(
            !store.save_rollout(&stale).await.expect("older try"),
            "an older try cannot overwrite a newer one"
        );
        let read = store
            .rollout_for_task("r1", "promote")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(read.step, 2);
        assert!(
            store
                .rollout_for_task("r1", "other")
                .await
                .expect("read")
                .is_none()
        );
    }

    async fn listed_newest_first(store: Store) {
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let later = now + chrono::Duration::seconds(1);
        store
            .save_rollout(&rollout("r1", "1", "succeeded", now))
            .await
            .expect("save");
        store
            .save_rollout(&rollout("r2", "2", "rolled_back", later))
            .await
            .expect("save");
        let history = store
            .rollouts_of_model("assistant", 10)
            .await
            .expect("list");
        assert_eq!(
            history
                .iter()
                .map(|r| r.run_id.as_str())
                .collect::<Vec<_>>(),
            ["r2", "r1"],
            "newest first"
        );
    }
}
