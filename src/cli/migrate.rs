//! `sluice migrate`: applies pending database migrations and lists what is applied. Every
//! other command applies them too when it opens the database; this one does nothing else, so
//! upgrades can migrate first and start processes afterwards.

use std::process::ExitCode;

use super::DatabaseArgs;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn execute(
    config: Option<&std::path::Path>,
    args: MigrateArgs,
) -> anyhow::Result<ExitCode> {
    let settings = args.database.settings(config)?;
    let store = Store::open(&settings.store()).await?;
    let applied = store.applied_migrations().await?;
    for name in &applied {
        println!("{name}");
    }
    eprintln!(
        "The database is up to date ({} migrations applied).",
        applied.len()
    );
    Ok(ExitCode::SUCCESS)
}
