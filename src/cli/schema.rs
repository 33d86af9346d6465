//! `sluice schema`

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn execute(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
