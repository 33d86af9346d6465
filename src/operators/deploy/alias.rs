//! Registry aliases as the deploy operator sees them: who holds one, whether a version ever
//! held one, and moving one — all through the model registry (`services.tracking`), where every
//! move is recorded with its from, to, time and the run/task that made it. The one place the
//! operator touches aliases.

use chrono::{DateTime, Utc};

use crate::operators::{OpContext, OperatorError, Result};
use crate::tracking::{Tracking, TrackingError};

fn registry(ctx: &OpContext) -> Result<&Tracking> {
    ctx.services.tracking.as_deref().ok_or_else(|| {
        OperatorError::failed("`deploy` needs the model registry, which this process does not have")
    })
}

fn registry_error(what: &str, error: TrackingError) -> OperatorError {
    match error {
        // The registry answered: asking again cannot change it.
        TrackingError::UnknownVersion { .. } | TrackingError::Invalid(_) => {
            OperatorError::rejected(format!("{what}: {error}"))
        }
        _ => OperatorError::failed(format!("{what}: {error}")),
    }
}

/// A version as the registry numbers it.
pub fn version_number(model: &str, version: &str) -> Result<u32> {
    version.trim().parse().map_err(|_| {
        OperatorError::rejected(format!(
            "`{version}` is not a version of `{model}`; registry versions are numbers (1, 2, …)"
        ))
    })
}

/// Refuses a version the registry does not have.
pub async fn ensure_registered(ctx: &OpContext, model: &str, version: &str) -> Result<()> {
    let number = version_number(model, version)?;
    let found = registry(ctx)?
        .model_version(model, number)
        .await
        .map_err(|e| registry_error(&format!("cannot read version {number} of `{model}`"), e))?;
    match found {
        Some(_) => Ok(()),
        None => Err(OperatorError::rejected(format!(
            "deploy refused: model `{model}` has no registered version {number}"
        ))),
    }
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
