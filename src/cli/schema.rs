//! `sluice schema`: prints the JSON Schema of the workflow format (every operator's `with`
//! included) for editors. A copy is committed at `schema/workflow.schema.json`.

use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn execute(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let text = serde_json::to_string_pretty(crate::catalog::workflow_schema())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(ExitCode::SUCCESS)
}
