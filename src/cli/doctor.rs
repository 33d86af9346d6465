//! `sluice doctor`: checks what `sluice serve` would start with — the configuration, the
//! database, the workflows folder, the SMTP server, the API tokens and the UI's admin
//! password — and says, for each problem, what to do about it. Exit 1 when something must be
//! fixed; warnings alone do not fail.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{DatabaseArgs, Settings};
use crate::catalog;
use crate::config::{Config, DEFAULT_FILE, Overrides};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The folder of workflow files [default: workflows]
    #[arg(long, env = "SLUICE_WORKFLOWS", value_name = "DIR")]
    pub workflows: Option<PathBuf>,
    /// The API tokens `serve` would accept (read from the environment like `serve` does).
    #[arg(
        long = "api-token",
        env = "SLUICE_API_TOKEN",
        value_delimiter = ',',
        hide = true
    )]
    pub api_tokens: Option<Vec<String>>,
}

/// How long a database or SMTP server may take to answer before it counts as unreachable.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The verdict on one thing checked.
enum Verdict {
    Ok(String),
    /// Works, but probably not as meant; the second part says what to do.
    Warn(String, String),
    /// Must be fixed; the second part says how.
    Fail(String, String),
}

struct Report {
    failed: bool,
}

impl Report {
    fn print(&mut self, what: &str, verdict: Verdict) {
        match verdict {
            Verdict::Ok(detail) => println!("ok    {what}: {detail}"),
            Verdict::Warn(detail, fix) => println!("warn  {what}: {detail}\n      fix: {fix}"),
            Verdict::Fail(detail, fix) => {
                self.failed = true;
                println!("FAIL  {what}: {detail}\n      fix: {fix}");
            }
        }
    }
}

pub async fn execute(config_path: Option<&Path>, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report { failed: false };
    let overrides = Overrides {
        database: args.database.url.clone(),
        workflows: args.workflows.clone(),
        api_tokens: args.api_tokens.clone().map(|tokens| {
            tokens
                .into_iter()
                .filter(|t| !t.trim().is_empty())
                .collect()
        }),
        ..Overrides::default()
    };
    let settings = match Settings::load(config_path, overrides) {
        Ok(settings) => {
            report.print("config", Verdict::Ok(config_source(config_path)));
            settings
        }
        Err(e) => {
            report.print(
                "config",
                Verdict::Fail(
                    format!("{e:#}"),
                    "correct the file; every key is in docs/configuration.md".into(),
                ),
            );
            println!("Fix the configuration first: the other checks depend on it.");
            return Ok(ExitCode::FAILURE);
        }
    };
    let config = &settings.config;
    report.print("database", database(&settings).await);
    report.print("workflows", workflows(&config.workflows).await);
    report.print("smtp", smtp(config).await);
    report.print("api", api_tokens(config));
    report.print("web ui", admin_password(config));
    Ok(if report.failed {
        println!("Some checks failed: fix them and run `sluice doctor` again.");
        ExitCode::FAILURE
    } else {
        println!("Everything `sluice serve` needs is in place.");
        ExitCode::SUCCESS
    })
}

fn config_source(config_path: Option<&Path>) -> String {
    match config_path {
        Some(path) => format!("{} is valid", path.display()),
        None if Path::new(DEFAULT_FILE).is_file() => format!("./{DEFAULT_FILE} is valid"),
        None => format!("no ./{DEFAULT_FILE}; the defaults and SLUICE_… variables apply"),
    }
}

async fn database(settings: &Settings) -> Verdict {
    let url = &settings.config.database;
    match tokio::time::timeout(REACH_TIMEOUT, Store::open(&settings.store())).await {
        Ok(Ok(store)) => match store.applied_migrations().await {
            Ok(applied) => {
                Verdict::Ok(format!("{url} opens, {} migrations applied", applied.len()))
            }
            Err(e) => Verdict::Fail(
                format!("{url} opens but its migrations cannot be read: {e}"),
                "check that this database belongs to Sluice".into(),
            ),
        },
        Ok(Err(e)) => Verdict::Fail(
            format!("{e}"),
            "check `--database`, SLUICE_DATABASE_URL or `database` in sluice.toml, and that \
             the server is up and the file's folder writable"
                .into(),
        ),
        Err(_) => Verdict::Fail(
            format!("{url} did not answer within {}s", REACH_TIMEOUT.as_secs()),
            "check that the database server is up and reachable from here".into(),
        ),
    }
}

async fn workflows(folder: &Path) -> Verdict {
    let folder = folder.to_owned();
    // Reading and compiling every file is blocking work.
    let outcome = tokio::task::spawn_blocking(move || {
        let files = catalog::collect_files(std::slice::from_ref(&folder))?;
        Ok::<_, catalog::CatalogError>((folder, catalog::load_all(&files)))
    })
    .await;
    let create_it = "create the folder, or point `--workflows`, SLUICE_WORKFLOWS or `workflows` \
                     in sluice.toml at yours";
    let (folder, loaded) = match outcome {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Verdict::Fail(e.to_string(), create_it.into()),
        Err(e) => {
            return Verdict::Fail(format!("checking the files stopped: {e}"), create_it.into());
        }
    };
    if loaded.is_empty() {
        return Verdict::Fail(
            super::no_workflow_files(std::slice::from_ref(&folder)),
            "add a workflow file (the README's \"A workflow\" shows one)".into(),
        );
    }
    let broken: Vec<String> = loaded
        .iter()
        .filter_map(|item| item.result.as_ref().err())
        .flat_map(|diagnostics| diagnostics.iter().map(ToString::to_string))
        .collect();
    if broken.is_empty() {
        return Verdict::Ok(format!(
            "{} valid workflow files in {}",
            loaded.len(),
            folder.display()
        ));
    }
    let files_with_errors = loaded.iter().filter(|item| item.result.is_err()).count();
    Verdict::Fail(
        format!(
            "{files_with_errors} of {} files in {} do not validate:\n      {}",
            loaded.len(),
            folder.display(),
            broken.join("\n      ")
        ),
        format!(
            "correct them; `sluice validate {}` lists the same",
            folder.display()
        ),
    )
}

async fn smtp(config: &Config) -> Verdict {
    let Some(smtp) = &config.smtp else {
        return Verdict::Ok("not configured; `alert` email needs `[smtp]` in sluice.toml".into());
    };
    let port = smtp.port();
    let address = format!("{}:{port}", smtp.host);
    match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Verdict::Ok(format!("{address} accepts connections")),
        Ok(Err(e)) => Verdict::Fail(
            format!("cannot connect to {address}: {e}"),
            "check `host` and `port` under `[smtp]` and that the server is up".into(),
        ),
        Err(_) => Verdict::Fail(
            format!(
                "{address} did not answer within {}s",
                REACH_TIMEOUT.as_secs()
            ),
            "check `host` and `port` under `[smtp]`, and any firewall on the way".into(),
        ),
    }
}

fn api_tokens(config: &Config) -> Verdict {
    if config.api_tokens.is_empty() {
        Verdict::Warn(
            "no API token configured: the API is open for reading and accepts no changes \
             (`sluice trigger` and POST requests are refused)"
                .into(),
            "set SLUICE_API_TOKEN (or `tokens` under `[api]` in sluice.toml) for `sluice serve` \
             and the commands that talk to it"
                .into(),
        )
    } else {
        Verdict::Ok(format!(
            "{} token(s) configured; every request needs one",
            config.api_tokens.len()
        ))
    }
}

fn admin_password(config: &Config) -> Verdict {
    let from_env = std::env::var_os("SLUICE_ADMIN_PASSWORD").is_some_and(|p| !p.is_empty());
    if from_env || config.admin_password_hash.is_some() {
        Verdict::Ok("the `admin` user has a password".into())
    } else {
        Verdict::Warn(
            "no `admin` password: only users added with `sluice user add` can log in".into(),
            "set SLUICE_ADMIN_PASSWORD for `sluice serve`, or `admin_password_hash` under \
             `[ui]` (from `sluice user hash`)"
                .into(),
        )
    }
}
