//! `sluice logs RUN_ID [TASK]`: prints the stored logs of a run, masked.

use std::io::Write;
use std::process::ExitCode;

use super::DatabaseArgs;
use crate::secrets::Secrets;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run whose logs to print.
    pub run_id: String,
    /// Only this task's logs.
    pub task: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn execute(config: Option<&std::path::Path>, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let settings = args.database.settings(config)?;
    let store = Store::open(&settings.store()).await?;
    // The same words as the API and the web UI use for the same problems.
    if store.run(&args.run_id).await?.is_none() {
        eprintln!("error: there is no run with id `{}`", args.run_id);
        return Ok(ExitCode::FAILURE);
    }
    if let Some(task) = &args.task {
        let instances = store.task_instances(&args.run_id).await?;
        if !instances.iter().any(|ti| &ti.task_id == task) {
            let mut tasks: Vec<&str> = Vec::new();
            for ti in &instances {
                if !tasks.contains(&ti.task_id.as_str()) {
                    tasks.push(&ti.task_id);
                }
            }
            eprintln!(
                "error: run `{}` has no task `{task}`; its tasks: {}",
                args.run_id,
                tasks.join(", ")
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    // Lines were masked when written; masking again covers secrets added since.
    let masker = Secrets::from_env().masker();
    let lines = store.logs(&args.run_id, args.task.as_deref()).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for l in &lines {
        writeln!(
            out,
            "{} {}#{} {}: {}",
            l.logged_at.format("%H:%M:%S%.3f"),
            l.task_id,
            l.try_number,
            l.stream,
            masker.mask(&l.line)
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
