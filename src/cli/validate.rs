//! `sluice validate PATH...`

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Workflow files, or directories searched recursively for `*.yaml` and `*.yml`.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn execute(_args: ValidateArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
