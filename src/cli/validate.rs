//! `sluice validate PATH...`: checks workflow files and prints every problem as
//! `PATH:LINE:COL: error: MESSAGE` (plus `  help: …`) to stderr, warnings likewise as
//! `warning:`, then a summary line. Exit 0 when every file is valid (warnings or not), 1 when
//! any is not, 2 when a path does not exist or the paths hold no workflow file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::catalog;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Workflow files, or directories searched recursively for `*.yaml` and `*.yml`.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn execute(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let files = match catalog::collect_files(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    // A wrong path in CI must not pass as "all valid".
    if files.is_empty() {
        eprintln!("error: {}", super::no_workflow_files(&args.paths));
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let loaded = catalog::check_all(&files);
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::new(stderr.lock());
    let mut broken = 0;
    for item in &loaded {
        let mut diagnostics = item.warnings.clone();
        if let Err(errors) = &item.loaded.result {
            broken += 1;
            diagnostics.extend(errors.iter().cloned());
        }
        crate::diagnostic::Diagnostic::sort(&mut diagnostics);
        for d in &diagnostics {
            writeln!(out, "{d}")?;
        }
    }
    let noun = if loaded.len() == 1 { "file" } else { "files" };
    if broken == 0 {
        writeln!(out, "{} {noun}, all valid", loaded.len())?;
    } else {
        writeln!(out, "{} {noun}, {broken} with errors", loaded.len())?;
    }
    out.flush()?;
    Ok(if broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
