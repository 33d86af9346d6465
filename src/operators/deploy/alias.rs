//! Registry aliases as the deploy operator sees them: who holds one, whether a version ever
//! held one, and moving one. Until the registry of `tracking` is reachable from operators,
//! the rollout rows are the record: a succeeded rollout gave its version the alias (from the
//! previous version, at its time, by its run), a rolled-back one never did. This module is the
//! one place that changes when aliases move through the registry instead.

use chrono::{DateTime, Utc};

use crate::operators::{OpContext, OperatorError, Result};
use crate::store::Store;

/// The version holding `alias` of `model`, if any.
pub async fn holder(store: &Store, model: &str, alias: &str) -> Result<Option<String>> {
    store
        .alias_holder(model, alias)
        .await
        .map_err(|e| OperatorError::failed(format!("cannot read who holds `{alias}`: {e}")))
}

/// Whether `version` of `model` has ever held `alias`.
pub async fn has_held(store: &Store, model: &str, version: &str, alias: &str) -> Result<bool> {
    store
        .has_held_alias(model, version, alias)
        .await
        .map_err(|e| OperatorError::failed(format!("cannot read the history of `{alias}`: {e}")))
}

/// A move of an alias.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    pub model: &'a str,
    pub alias: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Moves the alias. The rollout row saved right after this call records the move (its
/// state, version, previous version, run and time); this logs it for the task's log.
pub async fn move_alias(ctx: &OpContext, change: &Move<'_>) -> Result<()> {
    ctx.log.system(format!(
        "Alias `{}` of model `{}` moves from {} to {} (run {}, {}).",
        change.alias,
        change.model,
        change
            .from
            .map_or("nothing".to_owned(), |v| format!("version {v}")),
        change
            .to
            .map_or("nothing".to_owned(), |v| format!("version {v}")),
        ctx.run_id,
        change.at.to_rfc3339()
    ));
    Ok(())
}
