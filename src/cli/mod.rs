//! The command line: argument parsing, wiring of the layers, exit codes. The only place that
//! uses `anyhow`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod schema;
pub mod validate;

/// Exit code for invalid input (bad arguments, invalid workflow file, invalid params).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "Workflow orchestration for LLMOps.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow files and report every problem with file:line:col.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of the workflow format, every operator's `with` included.
    Schema(schema::SchemaArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Validate(args) => validate::execute(args),
        Command::Schema(args) => schema::execute(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
