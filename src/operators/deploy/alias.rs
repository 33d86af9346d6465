//! Registry aliases as the deploy operator sees them: who holds one, whether a version ever
//! held one, and moving one — all through the model registry (`services.tracking`), where every
//! move is recorded with its from, to, time and the run/task that made it. The one place the
//! operator touches aliases, and where a rollback by hand from the UI moves one
//! ([`roll_back`], recorded as made by `user:<name>`).

use chrono::{DateTime, Utc};

use super::strategy::{Mode, Route};
use crate::operators::support::{self, registry_error, version_number};
use crate::operators::{OpContext, OperatorError, Result};
use crate::store::Store;
use crate::store::rollouts::RolloutRecord;
use crate::tracking::{AliasMove, ModelVersionRecord, Tracking};

fn registry(ctx: &OpContext) -> Result<&Tracking> {
    support::registry(ctx, "deploy")
}

/// The version as the registry has it (with its tags); refuses a version it does not have.
pub async fn ensure_registered(
    ctx: &OpContext,
    model: &str,
    version: &str,
) -> Result<ModelVersionRecord> {
    let number = version_number(model, version)?;
    let found = registry(ctx)?
        .model_version(model, number)
        .await
        .map_err(|e| registry_error(&format!("cannot read version {number} of `{model}`"), e))?;
    found.ok_or_else(|| {
        OperatorError::rejected(format!(
            "deploy refused: model `{model}` has no registered version {number}"
        ))
    })
}

/// The version holding `alias` of `model`, if any.
pub async fn holder(ctx: &OpContext, model: &str, alias: &str) -> Result<Option<String>> {
    let found = registry(ctx)?
        .get_alias(model, alias)
        .await
        .map_err(|e| registry_error(&format!("cannot read who holds `{alias}`"), e))?;
    Ok(found.map(|v| v.version.to_string()))
}

/// Whether `version` of `model` has ever held `alias`.
pub async fn has_held(ctx: &OpContext, model: &str, version: &str, alias: &str) -> Result<bool> {
    let number = version_number(model, version)?;
    let moves = registry(ctx)?
        .alias_history(model)
        .await
        .map_err(|e| registry_error(&format!("cannot read the history of `{alias}`"), e))?;
    Ok(moves
        .iter()
        .any(|m| m.alias == alias && m.to == Some(number)))
}

/// A move of an alias.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    pub model: &'a str,
    pub alias: &'a str,
    pub from: Option<&'a str>,
    /// `None` removes the alias (a rollback of a model's first deploy).
    pub to: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Moves the alias in the registry, which records the move as made by this run's task.
pub async fn move_alias(ctx: &OpContext, change: &Move<'_>) -> Result<()> {
    let registry = registry(ctx)?;
    let moved_by = format!("run:{}/{}", ctx.run_id, ctx.task);
    let what = format!("cannot move `{}` of `{}`", change.alias, change.model);
    match change.to {
        Some(version) => {
            let number = version_number(change.model, version)?;
            registry
                .set_alias(change.model, change.alias, number, &moved_by)
                .await
                .map_err(|e| registry_error(&what, e))?;
        }
        None => {
            registry
                .delete_alias(change.model, change.alias, &moved_by)
                .await
                .map_err(|e| registry_error(&what, e))?;
        }
    }
    ctx.log.system(format!(
        "Alias `{}` of model `{}` moved from {} to {} ({}).",
        change.alias,
        change.model,
        change
            .from
            .map_or("nothing".to_owned(), |v| format!("version {v}")),
        change
            .to
            .map_or("nothing".to_owned(), |v| format!("version {v}")),
        change.at.to_rfc3339()
    ));
    Ok(())
}

/// Why a rollback by hand cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// Nothing to go back to, or the alias moved since the page was shown.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Tracking(#[from] crate::tracking::TrackingError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Where a rollback of `alias` would go: the version it holds now, and the one it held before
/// its latest move. `None` when it is not set or was never set before (nothing to go back to).
pub fn rollback_target(history: &[AliasMove], alias: &str) -> Option<(u32, u32)> {
    let latest = history.iter().rev().find(|m| m.alias == alias)?;
    Some((latest.to?, latest.from?))
}

/// Rolls `alias` of `model` back by hand: moves it to the version it held before its latest
/// move (recorded as made by `user:<name>`), provided it still holds `expected` (the version
/// the confirmation showed), and records the routing that gives the restored version all
/// traffic, for serving layers. Returns the move.
pub async fn roll_back(
    tracking: &Tracking,
    store: &Store,
    model: &str,
    alias: &str,
    expected: u32,
    user: &str,
) -> std::result::Result<AliasMove, RollbackError> {
    let history = tracking.alias_history(model).await?;
    let Some((current, target)) = rollback_target(&history, alias) else {
        return Err(RollbackError::Refused(format!(
            "`{alias}` of `{model}` has no earlier version to go back to"
        )));
    };
    if current != expected {
        return Err(RollbackError::Refused(format!(
            "`{alias}` of `{model}` has moved to version {current} since the page was shown; \
             look again before rolling back"
        )));
    }
    let moved_by = format!("user:{user}");
    let moved = tracking.set_alias(model, alias, target, &moved_by).await?;
    let now = Utc::now();
    let route = Route {
        version: target.to_string(),
        weight: 100,
        mode: Mode::Live,
    };
    let record = RolloutRecord {
        // A rollback by hand belongs to no run: the row is keyed by who made it.
        run_id: moved_by.clone(),
        task_id: format!("rollback-{}", uuid::Uuid::now_v7().simple()),
        try_number: 0,
        model: model.to_owned(),
        version: target.to_string(),
        previous_version: Some(current.to_string()),
        alias: alias.to_owned(),
        strategy: MANUAL_ROLLBACK.to_owned(),
        step: 0,
        state: "rolled_back".to_owned(),
        routing: serde_json::json!([route]),
        detail: serde_json::json!({}),
        checks: serde_json::json!([]),
        rollback_reason: Some(format!(
            "rolled back by {moved_by} from version {current} to version {target}"
        )),
        started_at: now,
        updated_at: now,
    };
    store.save_rollout(&record).await?;
    Ok(moved)
}

/// The strategy name of a rollback made by hand, in the deployment history.
pub const MANUAL_ROLLBACK: &str = "rollback";
