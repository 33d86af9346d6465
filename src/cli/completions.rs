//! `sluice completions SHELL` and `sluice man [COMMAND]`: shell completion scripts and roff
//! man pages, generated from the same clap definition that parses the arguments, so they can
//! never fall behind it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// A command whose own page to print (e.g. `run`, or `user add`) [default: the page of
    /// `sluice` itself, listing every command].
    pub command: Vec<String>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(cli: &mut clap::Command, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let name = cli.get_name().to_owned();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, cli, name, &mut out);
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page of `sluice`, or of the command named by `args.command`, on stdout.
pub fn man(cli: clap::Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    let mut cli = cli;
    // Building fills in each subcommand's full name for its synopsis (`sluice user add`).
    cli.build();
    let mut page = cli;
    let mut path = vec![page.get_name().to_owned()];
    for word in &args.command {
        let Some(sub) = page.find_subcommand(word).cloned() else {
            eprintln!(
                "error: `{}` has no command `{word}`; see `{} --help`",
                path.join(" "),
                path.join(" ")
            );
            return Ok(ExitCode::from(super::EXIT_USAGE));
        };
        path.push(word.clone());
        page = sub;
    }
    let mut out = std::io::stdout().lock();
    // A command's page is titled as man pages of subcommands are: `sluice-user-add`.
    clap_mangen::Man::new(page)
        .title(path.join("-"))
        .source(concat!("sluice ", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .context("cannot write the man page")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
