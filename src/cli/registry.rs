//! `sluice registry`: the model registry from the command line — a version's files, a diff of
//! two versions (key-level for YAML and JSON, line by line for text), aliases and their
//! history. It reads `[tracking]`, so it works the same on the built-in backend and on MLflow.

use std::process::ExitCode;
use std::sync::Arc;

use super::{DatabaseArgs, EXIT_USAGE};
use crate::secrets::Secrets;
use crate::store::Store;
use crate::tracking::{Builtin, Tracking, TrackingError, diff};

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// What changed between two versions of a model: which keys of its YAML and JSON files
    /// were added, removed or changed, and a line diff of other text.
    Diff {
        model: String,
        old: u32,
        new: u32,
        /// Print the diff as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A model's versions, newest first, with their aliases and files.
    Versions { model: String },
    /// Point an alias (`champion`, `production`) at a version; the move is recorded as made
    /// by `--by`.
    Alias {
        model: String,
        alias: String,
        version: u32,
        /// Who moves it (recorded as `user:<name>`).
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
    },
    /// Every move of a model's aliases, oldest first.
    History { model: String },
}

/// The tracking backend `[tracking]` names.
async fn open(
    config: Option<&std::path::Path>,
    database: &DatabaseArgs,
) -> anyhow::Result<Arc<Tracking>> {
    let settings = database.settings(config)?;
    let secrets = Secrets::from_env();
    if let Some(mlflow) = super::open_mlflow(&settings.config, &secrets)? {
        return Ok(Arc::new(mlflow));
    }
    let store = Store::open(&settings.store()).await?;
    let artifacts = super::open_artifacts(&settings.config, &secrets)?;
    Ok(Arc::new(Tracking::Builtin(Builtin::new(store, artifacts))))
}

pub async fn execute(
    config: Option<&std::path::Path>,
    args: RegistryArgs,
) -> anyhow::Result<ExitCode> {
    let tracking = open(config, &args.database).await?;
    let refused = |error: TrackingError| -> anyhow::Result<ExitCode> {
        match error {
            TrackingError::UnknownVersion { .. }
            | TrackingError::UnknownFile { .. }
            | TrackingError::Invalid(_) => {
                eprintln!("error: {error}");
                Ok(ExitCode::from(EXIT_USAGE))
            }
            other => Err(other.into()),
        }
    };
    match args.command {
        RegistryCommand::Diff {
            model,
            old,
            new,
            json,
        } => {
            let diffs = match tracking.diff_versions(&model, old, new).await {
                Ok(diffs) => diffs,
                Err(e) => return refused(e),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&diffs)?);
            } else {
                print!(
                    "{}",
                    diff::render(&diffs, &format!("version {old}"), &format!("version {new}"))
                );
            }
        }
        RegistryCommand::Versions { model } => {
            let versions = tracking.model_versions(&model).await?;
            if versions.is_empty() {
                eprintln!("error: model `{model}` has no versions");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
            for v in versions {
                let aliases = if v.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", v.aliases.join(", "))
                };
                let files: Vec<&str> = v.files.iter().map(|f| f.name.as_str()).collect();
                println!(
                    "{}{aliases}  {}  {}",
                    v.version,
                    files.join(" "),
                    v.description
                );
            }
        }
        RegistryCommand::Alias {
            model,
            alias,
            version,
            by,
        } => match tracking
            .set_alias(&model, &alias, version, &format!("user:{by}"))
            .await
        {
            Ok(moved) => match moved.from {
                Some(from) => {
                    println!("Moved `{alias}` of `{model}` from version {from} to {version}.")
                }
                None => println!("Set `{alias}` of `{model}` to version {version}."),
            },
            Err(e) => return refused(e),
        },
        RegistryCommand::History { model } => {
            for m in tracking.alias_history(&model).await? {
                let show = |v: Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
                println!(
                    "{}  {}  {} -> {}  by {}",
                    m.moved_at.to_rfc3339(),
                    m.alias,
                    show(m.from),
                    show(m.to),
                    m.moved_by
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
