//! The command line: argument parsing, wiring of the layers, exit codes. The only place that
//! uses `anyhow`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};
use std::sync::Arc;

use crate::catalog::versions::Versions;
use crate::operators::RunLauncher;
use crate::operators::alert::{Mailer, SmtpSettings};
use crate::operators::services::Services;
use crate::scheduler::SchedulerDeps;
use crate::secrets::{Masker, Secrets};
use crate::store::{Store, StoreConfig};
use crate::template::Templates;
use crate::worker::WorkerDeps;

pub mod backfill;
mod client;
pub mod completions;
pub mod db;
pub mod doctor;
pub mod logs;
pub mod migrate;
pub mod registry;
pub mod run;
pub mod runs;
pub mod schema;
pub mod serve;
pub mod trigger;
pub mod user;
pub mod validate;
pub mod worker;

/// Exit code for invalid input (bad arguments, invalid workflow file, invalid params).
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "Workflow orchestration for LLMOps.")]
struct Cli {
    /// The configuration file (default: `./sluice.toml` when it exists).
    #[arg(long, global = true, env = "SLUICE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler, workers, the web UI and the HTTP API until stopped.
    Serve(serve::ServeArgs),
    /// Run tasks from a shared PostgreSQL database (beside `serve --no-workers`).
    Worker(worker::WorkerArgs),
    /// Check workflow files and report every problem with file:line:col.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of the workflow format, every operator's `with` included.
    Schema(schema::SchemaArgs),
    /// Run a workflow once, in the foreground, with live progress.
    Run(run::RunArgs),
    /// Print the stored logs of a run.
    Logs(logs::LogsArgs),
    /// Apply pending database migrations (every command does so on start, too).
    Migrate(migrate::MigrateArgs),
    /// Start a run through the API of a running server.
    Trigger(trigger::TriggerArgs),
    /// List recent runs through the API of a running server.
    Runs(runs::RunsArgs),
    /// Create (or cancel) the scheduled runs of a date range through the API.
    Backfill(backfill::BackfillArgs),
    /// Manage web UI users.
    User(user::UserArgs),
    /// Check the configuration, the database, the workflows folder and SMTP, and say what
    /// to fix.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), of `sluice` or of one of its commands.
    Man(completions::ManArgs),
    /// Maintain the database: `db clean --older-than 90d` deletes old runs.
    Db(db::DbArgs),
    /// The model registry: diff two versions, list versions, move and trace aliases.
    Registry(registry::RegistryArgs),
}

/// Where the database is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created if missing), `sqlite::memory:`, `postgres://…` or a plain file
    /// path [default: sluice.db]
    #[arg(long = "database", env = "SLUICE_DATABASE_URL", value_name = "URL")]
    pub url: Option<String>,
}

impl DatabaseArgs {
    /// The settings of a command whose only setting flag is `--database`.
    pub fn settings(&self, config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
        Settings::load(
            config,
            Overrides {
                database: self.url.clone(),
                ..Overrides::default()
            },
        )
    }
}

/// The settings of one command: its flags and environment over the configuration file.
pub struct Settings {
    pub config: Config,
}

impl Settings {
    pub fn load(
        config_path: Option<&std::path::Path>,
        overrides: Overrides,
    ) -> anyhow::Result<Self> {
        Ok(Settings {
            config: Config::load(config_path, overrides)?,
        })
    }

    pub fn store(&self) -> StoreConfig {
        StoreConfig::new(&self.config.database)
    }

    /// The database of a long-running process, with `n` connections opened ahead of need.
    pub fn warm_store(&self, n: u32) -> StoreConfig {
        self.store().warm(n)
    }
}

/// What the scheduler and the workers of one process share: compiled workflow versions,
/// templates, secrets and their masker, configured variables, the mailer and run links.
pub struct Shared {
    pub versions: Arc<Versions>,
    pub templates: Arc<Templates>,
    pub secrets: Arc<Secrets>,
    pub masker: Arc<Masker>,
    pub vars: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The mailer for `[smtp]`, built once: its connection pool serves every alert.
    pub mailer: Option<Mailer>,
    /// The base of links to run pages.
    pub base_url: String,
    /// The artifact store (`[artifacts]`).
    pub artifacts: crate::artifacts::Artifacts,
    /// `[eval]`, for the `eval` operator.
    pub eval: crate::config::EvalConfig,
    /// The MLflow client of `[tracking] backend = "mlflow"`, built once; `None` for the
    /// built-in backend, which is made over each store (`Shared::tracking`).
    pub mlflow: Option<Arc<crate::tracking::Tracking>>,
}

impl Shared {
    pub fn new(config: &Config) -> anyhow::Result<Shared> {
        let secrets = Arc::new(Secrets::from_env());
        let artifacts = open_artifacts(config, &secrets)?;
        let mailer = match &config.smtp {
            Some(smtp) => Some(Mailer::new(&SmtpSettings::from_config(smtp, &secrets)?)?),
            None => None,
        };
        let mlflow = open_mlflow(config, &secrets)?.map(Arc::new);
        Ok(Shared {
            mlflow,
            versions: Arc::new(Versions::new()),
            templates: Arc::new(Templates::new()),
            masker: Arc::new(secrets.masker()),
            secrets,
            vars: Arc::new(config.variables.clone()),
            mailer,
            base_url: config.base_url(),
            artifacts,
            eval: config.eval.clone(),
        })
    }

    /// The default failure mail service, when `[alerts] email_on_failure` asks for one.
    pub fn failure_mail(
        &self,
        config: &Config,
        store: &Store,
    ) -> Option<crate::scheduler::failure_mail::FailureMailService> {
        use crate::scheduler::failure_mail::FailureMailService;
        use crate::scheduler::standard_mail::StandardMailConfig;
        let mailer = self.mailer.clone()?;
        if config.alerts.email_on_failure.is_empty() {
            return None;
        }
        Some(FailureMailService::new(
            store.clone(),
            mailer,
            StandardMailConfig::new(
                config.alerts.email_on_failure.clone(),
                self.base_url.clone(),
            ),
            self.masker.clone(),
        ))
    }

    /// The default retry notice service, when `[alerts] email_on_retry` asks for one.
    pub fn retry_mail(
        &self,
        config: &Config,
        store: &Store,
    ) -> Option<crate::scheduler::retry_mail::RetryMailService> {
        use crate::scheduler::retry_mail::RetryMailService;
        use crate::scheduler::standard_mail::StandardMailConfig;
        let mailer = self.mailer.clone()?;
        if config.alerts.email_on_retry.is_empty() {
            return None;
        }
        Some(RetryMailService::new(
            store.clone(),
            mailer,
            StandardMailConfig::new(config.alerts.email_on_retry.clone(), self.base_url.clone()),
            self.masker.clone(),
            self.versions.clone(),
        ))
    }

    /// What operators share, over `store`; `runs` starts other workflows for `trigger`.
    pub fn services(&self, store: &Store, runs: Option<Arc<dyn RunLauncher>>) -> Arc<Services> {
        Arc::new(Services {
            store: Some(store.clone()),
            mailer: self.mailer.clone(),
            artifacts: Some(self.artifacts.clone()),
            runs,
            base_url: self.base_url.clone(),
            eval: self.eval.clone(),
            tracking: Some(self.tracking(store)),
        })
    }

    /// The tracking backend `[tracking]` names: MLflow, or the built-in one over `store`.
    pub fn tracking(&self, store: &Store) -> Arc<crate::tracking::Tracking> {
        match &self.mlflow {
            Some(mlflow) => mlflow.clone(),
            None => Arc::new(crate::tracking::Tracking::Builtin(
                crate::tracking::Builtin::new(store.clone(), self.artifacts.clone()),
            )),
        }
    }

    pub fn scheduler_deps(&self) -> SchedulerDeps {
        SchedulerDeps {
            versions: self.versions.clone(),
            templates: self.templates.clone(),
            secrets: self.secrets.clone(),
            vars: self.vars.clone(),
            base_url: self.base_url.clone(),
        }
    }

    /// `runs` starts other workflows for the `trigger` operator; `None` where there is no
    /// catalog of them.
    pub fn worker_deps(
        &self,
        store: &Store,
        runs: Option<Arc<dyn RunLauncher>>,
    ) -> anyhow::Result<WorkerDeps> {
        Ok(WorkerDeps {
            services: self.services(store, runs),
            versions: self.versions.clone(),
            templates: self.templates.clone(),
            secrets: self.secrets.clone(),
            masker: self.masker.clone(),
            vars: self.vars.clone(),
            http: http_client()?,
            artifacts: self.artifacts.clone(),
        })
    }
}

/// The artifact store `[artifacts]` describes, with S3 credentials read from secrets.
pub fn open_artifacts(
    config: &Config,
    secrets: &Secrets,
) -> anyhow::Result<crate::artifacts::Artifacts> {
    use crate::artifacts::{Artifacts, Limits, Location, S3Location};
    use crate::config::ArtifactRoot;
    let secret = |name: &Option<String>| -> anyhow::Result<Option<String>> {
        match name {
            None => Ok(None),
            Some(name) => match secrets.get(name) {
                Some(value) => Ok(Some(value.to_owned())),
                None => anyhow::bail!(
                    "`[artifacts]` names the secret `{name}`, which is not set; set \
                     {}{name}",
                    crate::secrets::ENV_PREFIX
                ),
            },
        }
    };
    let settings = &config.artifacts;
    let location = match config.artifact_root() {
        ArtifactRoot::Folder(folder) => Location::Folder(folder),
        ArtifactRoot::S3 { bucket, prefix } => Location::S3(S3Location {
            bucket,
            prefix,
            endpoint: settings.endpoint.clone(),
            region: settings.region.clone(),
            access_key_id: secret(&settings.access_key_id_secret)?,
            secret_access_key: secret(&settings.secret_access_key_secret)?,
        }),
    };
    let limits = Limits {
        per_artifact: settings.max_artifact_size,
        per_run: settings.max_run_size,
    };
    Ok(Artifacts::open(&location, limits)?)
}

/// The MLflow client `[tracking]` describes (its token read from a secret); `None` for the
/// built-in backend.
pub fn open_mlflow(
    config: &Config,
    secrets: &Secrets,
) -> anyhow::Result<Option<crate::tracking::Tracking>> {
    use crate::config::TrackingBackend;
    let settings = &config.tracking;
    let (TrackingBackend::Mlflow, Some(uri)) = (settings.backend, &settings.uri) else {
        return Ok(None);
    };
    let tracking = crate::tracking::Tracking::mlflow(
        http_client()?,
        uri,
        settings.token_secret.as_deref(),
        secrets,
    )
    .map_err(|e| anyhow::anyhow!("`[tracking]`: {e}"))?;
    Ok(Some(tracking))
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
    if matches!(
        cli.command,
        Command::Serve(_) | Command::Worker(_) | Command::Run(_)
    ) && let Err(e) = prepare_task_runner()
    {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    // reqwest is built without a default TLS provider; without this it panics on first use.
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Serve(args) => serve::execute(config, args),
        Command::Worker(args) => worker::execute(config, args),
        Command::Validate(args) => {
            init_tracing(LogFormat::Human);
            validate::execute(args)
        }
        Command::Schema(args) => schema::execute(args),
        Command::Run(args) => {
            init_tracing(LogFormat::Human);
            one_thread(run::execute(config, args))
        }
        Command::Logs(args) => {
            init_tracing(LogFormat::Human);
            one_thread(logs::execute(config, args))
        }
        Command::Migrate(args) => {
            init_tracing(LogFormat::Human);
            one_thread(migrate::execute(config, args))
        }
        Command::Trigger(args) => one_thread(trigger::execute(config, args)),
        Command::Runs(args) => one_thread(runs::execute(config, args)),
        Command::Backfill(args) => one_thread(backfill::execute(config, args)),
        Command::User(args) => {
            init_tracing(LogFormat::Human);
            one_thread(user::execute(config, args))
        }
        Command::Doctor(args) => {
            init_tracing(LogFormat::Human);
            one_thread(doctor::execute(config, args))
        }
        Command::Completions(args) => completions::completions(&mut Cli::command(), args),
        Command::Man(args) => completions::man(Cli::command(), args),
        Command::Db(args) => {
            init_tracing(LogFormat::Human);
            one_thread(db::execute(config, args))
        }
        Command::Registry(args) => one_thread(registry::execute(config, args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // The server refusing what was asked for (an unknown workflow, a param out of
            // range) is invalid input, as it is for `sluice run`.
            let invalid_input = e
                .downcast_ref::<client::ApiError>()
                .is_some_and(client::ApiError::is_invalid_input);
            if invalid_input {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Readies a process that runs tasks, while it still has one thread: its secrets and
/// credentials leave its environment and it becomes unreadable to its tasks
/// (`secrets::seal_process`), and the reaper that kills its tasks' processes if it dies
/// starts (`shell::reaper`).
fn prepare_task_runner() -> anyhow::Result<()> {
    // SAFETY: called from `main` before any runtime or thread exists, and before anything
    // but argument parsing has read the environment.
    unsafe { crate::secrets::seal_process()? };
    // SAFETY: as above, still a single thread.
    unsafe { crate::operators::shell::reaper::start()? };
    Ok(())
}

/// Makes `run_as`, when configured, the account of every `shell` task of this process. Reads
/// the user database: call it before the runtime starts or off its threads.
pub fn install_task_user(config: &Config) -> anyhow::Result<()> {
    if let Some(name) = &config.run_as {
        crate::operators::shell::user::TaskUser::lookup(name)?.install()?;
    }
    Ok(())
}

/// One-off commands run on one thread: they mostly wait on the database and child
/// processes, and staying on one thread avoids cross-thread wake-ups on every event.
fn one_thread<F: Future<Output = anyhow::Result<ExitCode>>>(future: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Diagnostics go to stderr; quiet unless `SLUICE_LOG` (an env-filter) asks for more.
pub(crate) fn init_tracing(format: LogFormat) {
    init_tracing_with(format, "warn");
}

pub(crate) fn init_tracing_with(format: LogFormat, default_filter: &str) {
    // sea-orm's migrator logs every step of every migration at INFO: a first start would
    // open with a page of them. The store says in one line what it applied.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_filter},sea_orm_migration=warn"))
    });
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A run's state as the end of a sentence about it: "Run 01… succeeded."
pub(crate) fn run_outcome(state: crate::lifecycle::RunState) -> &'static str {
    use crate::lifecycle::RunState;
    match state {
        RunState::Queued => "is queued",
        RunState::Running => "is running",
        RunState::Success => "succeeded",
        RunState::Failed => "failed",
        RunState::Cancelled => "was cancelled",
    }
}

/// `text` as one word for a POSIX shell, for commands printed for people to copy: quoted
/// only when it holds anything beyond a conservative set of safe characters.
pub(crate) fn shell_word(text: &str) -> std::borrow::Cow<'_, str> {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if safe {
        text.into()
    } else {
        format!("'{}'", text.replace('\'', "'\\''")).into()
    }
}

/// What `validate` and `doctor` say when the paths they were given hold no workflow file.
pub(crate) fn no_workflow_files(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
    format!("no workflow files (*.yaml, *.yml) in {}", names.join(", "))
}

/// `--bind` values: `IP:PORT`, or `HOST:PORT` with the host name resolved now (the first
/// address it resolves to), so `localhost:8080` works as people expect.
pub(crate) fn bind_address(value: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = value.parse() {
        return Ok(address);
    }
    let hint = "write HOST:PORT or IP:PORT, e.g. 127.0.0.1:8080, localhost:8080 or [::1]:8080";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("`{value}` has no port; {hint}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "`{port}` is not a port number (0 to 65535); {hint}"
        ));
    }
    // Resolving happens while the arguments are parsed, before any async runtime exists.
    let mut addresses = value
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}` ({e}); {hint}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address; {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("sqlite:///tmp/s.db"), "sqlite:///tmp/s.db");
        assert_eq!(shell_word("my db"), "'my db'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn bind_addresses_take_ips_and_host_names() {
        assert_eq!(
            bind_address("127.0.0.1:8080"),
            Ok("127.0.0.1:8080".parse().expect("an address"))
        );
        let local = bind_address("localhost:9000").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 9000, "{local}");
        assert!(
            bind_address("localhost")
                .unwrap_err()
                .contains("has no port")
        );
        assert!(
            bind_address("localhost:http")
                .unwrap_err()
                .contains("is not a port number")
        );
        assert!(
            bind_address("no-such-host.invalid:80")
                .unwrap_err()
                .contains("cannot resolve `no-such-host.invalid`")
        );
    }
}
