//! The command line: argument parsing, wiring of the layers, exit codes. The only place that
//! uses `anyhow`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::store::StoreConfig;

pub mod logs;
pub mod run;
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
    /// Run a workflow once, in the foreground, with live progress.
    Run(run::RunArgs),
    /// Print the stored logs of a run.
    Logs(logs::LogsArgs),
}

/// Where the database is.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created if missing), `sqlite::memory:` or a plain file path.
    #[arg(
        long = "database",
        env = "SLUICE_DATABASE_URL",
        default_value = "sluice.db",
        value_name = "URL"
    )]
    pub url: String,
}

impl DatabaseArgs {
    pub fn config(&self) -> StoreConfig {
        StoreConfig::new(&self.url)
    }
}

/// The HTTP client operators share.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // reqwest is built without a default TLS provider; without this it panics on first use.
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    init_tracing();
    let result = match cli.command {
        Command::Validate(args) => validate::execute(args),
        Command::Schema(args) => schema::execute(args),
        Command::Run(args) => block_on(run::execute(args)),
        Command::Logs(args) => block_on(logs::execute(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(future: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Diagnostics go to stderr; quiet unless `SLUICE_LOG` (an env-filter) asks for more.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
