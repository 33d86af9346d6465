//! `sluice db clean`: deletes old runs with their logs and artifacts, as Airflow's `db clean`
//! does (the same pass `[retention]` runs under `serve`).

use std::process::ExitCode;

use super::DatabaseArgs;
use crate::artifacts::retention;
use crate::duration::HumanDuration;
use crate::secrets::Secrets;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Delete runs that ended longer ago than `--older-than`, with their task instances, logs
    /// and artifacts. Runs still going are kept.
    Clean(CleanArgs),
}

#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// How old an ended run must be to go: `90d`, `12h`, `2w`.
    #[arg(long, value_name = "DURATION")]
    pub older_than: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn execute(config: Option<&std::path::Path>, args: DbArgs) -> anyhow::Result<ExitCode> {
    let DbCommand::Clean(args) = args.command;
    let older_than = HumanDuration::parse(&args.older_than)
        .map_err(|e| anyhow::anyhow!("`--older-than`: {e}"))?
        .0;
    if older_than.is_zero() {
        anyhow::bail!("`--older-than` must be longer than zero");
    }
    let settings = args.database.settings(config)?;
    let store = Store::open(&settings.store()).await?;
    let artifacts = super::open_artifacts(&settings.config, &Secrets::from_env())?;
    let cleaned = retention::clean(&store, &artifacts, older_than, chrono::Utc::now()).await?;
    println!(
        "Deleted {} runs ended more than {} ago, and {} artifact blobs no run refers to.",
        cleaned.runs, args.older_than, cleaned.blobs
    );
    Ok(ExitCode::SUCCESS)
}
