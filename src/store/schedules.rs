//! Queries the schedulers use to decide what to start: the latest scheduled logical date of a
//! workflow, and runs by workflow and state for `max_active_runs`.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::{Result, Store, get};
use crate::lifecycle::RunState;

impl Store {
    /// The logical date of the latest run of `workflow_id` started by `trigger`.
    pub async fn last_logical_date(
        &self,
        workflow_id: &str,
        trigger: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT logical_date FROM runs WHERE workflow_id = ? AND trigger = ? \
                 ORDER BY logical_date DESC LIMIT 1",
                vec![workflow_id.into(), trigger.into()],
            ))
            .await?;
        row.map(|r| get(&r, "logical_date")).transpose()
    }

    /// Whether a run of `workflow_id` for this logical date exists already.
    pub async fn run_exists_for(
        &self,
        workflow_id: &str,
        logical_date: DateTime<Utc>,
    ) -> Result<bool> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                "SELECT id FROM runs WHERE workflow_id = ? AND logical_date = ? \
                 AND trigger IN ('schedule', 'backfill') LIMIT 1",
                vec![workflow_id.into(), logical_date.into()],
            ))
            .await?;
        Ok(row.is_some())
    }

    /// The ids of a workflow's runs in a state, oldest first (all workflows with `None`).
    pub async fn run_ids_in_state(
        &self,
        workflow_id: Option<&str>,
        state: RunState,
    ) -> Result<Vec<(String, String)>> {
        let rows = match workflow_id {
            Some(id) => {
                self.db()
                    .query_all_raw(self.stmt(
                        "SELECT id, workflow_id FROM runs WHERE workflow_id = ? AND state = ? \
                         ORDER BY created_at, id",
                        vec![id.into(), state.as_str().into()],
                    ))
                    .await?
            }
            None => {
                self.db()
                    .query_all_raw(self.stmt(
                        "SELECT id, workflow_id FROM runs WHERE state = ? ORDER BY created_at, id",
                        vec![state.as_str().into()],
                    ))
                    .await?
            }
        };
        rows.iter()
            .map(|r| Ok((get(r, "id")?, get(r, "workflow_id")?)))
            .collect()
    }
}
