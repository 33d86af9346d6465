//! `sluice serve`: the scheduler, the cron service, in-process workers and the HTTP API in one
//! process, until SIGTERM or Ctrl-C. They share nothing but the store (and the catalog they
//! read), so each could run in a process of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{DatabaseArgs, Settings, Shared, init_tracing_with};
use crate::catalog::live::Catalog;
use crate::catalog::runs::CatalogRuns;
use crate::config::{Config, LogFormat, Overrides};
use crate::duration::HumanDuration;
use crate::scheduler::cron::{CronConfig, CronService};
use crate::scheduler::github_status::{GithubStatusService, StatusConfig};
use crate::scheduler::recovery::{self, Orphans};
use crate::scheduler::triggers::WorkflowTriggerService;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::secrets::Masker;
use crate::server::{self, AppState};
use crate::store::{Interest, Store};
use crate::web::UiSettings;
use crate::worker::{Worker, WorkerConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The folder of workflow files [default: workflows]
    #[arg(long, env = "SLUICE_WORKFLOWS", value_name = "DIR")]
    pub workflows: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The address the web UI and the HTTP API listen on: IP:PORT, or HOST:PORT with the
    /// host name resolved at start [default: 127.0.0.1:8080]
    #[arg(long, env = "SLUICE_BIND", value_name = "ADDR", value_parser = super::bind_address)]
    pub bind: Option<SocketAddr>,
    /// How many tasks run at once in this process (default: 16 per CPU, at least 32).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// `human` or `json` log lines on stderr [default: human]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub tasks: TaskRunnerArgs,
    /// Bearer tokens the API accepts, comma-separated.
    #[arg(
        long = "api-token",
        env = "SLUICE_API_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Option<Vec<String>>,
    /// The URL people reach this server at, for links in alerts and commit statuses
    /// [default: http://<bind>]
    #[arg(long, env = "SLUICE_PUBLIC_URL", value_name = "URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// Run no tasks in this process: scheduler, cron and API only (tasks run in `sluice
    /// worker` processes).
    #[arg(long)]
    pub no_workers: bool,
    /// The queues this process's worker serves, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_name = "QUEUES", value_parser = queue_name)]
    pub queues: Option<Vec<String>>,
    /// The secret GitHub signs webhook deliveries with; without one `/hooks/github` accepts
    /// nothing. Prefer the environment variable: arguments are visible to other users.
    #[arg(
        long,
        env = "SLUICE_GITHUB_WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub github_webhook_secret: Option<String>,
}

/// How a process that runs tasks (`serve`, `worker`) holds and gives them up.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskRunnerArgs {
    /// How long a running task's claim holds without a heartbeat; a worker that stops
    /// renewing it (a crash) has its tasks retried after this long.
    #[arg(
        long,
        env = "SLUICE_LEASE",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub lease: HumanDuration,
    /// How long running tasks may take to finish on shutdown before they are stopped and
    /// handed back to the queue.
    #[arg(
        long,
        env = "SLUICE_SHUTDOWN_GRACE",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub shutdown_grace: HumanDuration,
}

/// Queue names follow the rules of the workflow format.
pub(super) fn queue_name(value: &str) -> Result<String, String> {
    if crate::dag::is_valid_id(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not a queue name (lowercase letters, digits, `_` and `-`)"
        ))
    }
}

fn public_url(value: &str) -> Result<String, String> {
    crate::config::checked_public_url(value)
}

/// How often the workflows folder is checked for changed files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// On PostgreSQL, how often workers look for work without being told, in case a notification
/// was lost.
pub(super) const POLL_FALLBACK: Duration = Duration::from_secs(2);

/// On PostgreSQL, how often the scheduler re-reads its runs, for the same reason.
const RELOAD_FALLBACK: Duration = Duration::from_secs(5);

/// Database connections opened at start-up on PostgreSQL: enough for the API, the scheduler,
/// notifications and the leader's services to work at once without waiting for a new one.
const SERVE_CONNECTIONS: u32 = 8;

/// How `serve` runs, beyond the configuration.
struct ServeOptions {
    shutdown_grace: Duration,
    lease: Duration,
    workers: bool,
    queues: Vec<String>,
    /// The argon2 hash of `SLUICE_ADMIN_PASSWORD`, when it was set.
    admin_password_hash: Option<String>,
}

pub fn execute(config: Option<&Path>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let options = ServeOptions {
        shutdown_grace: args.tasks.shutdown_grace.0,
        lease: args.tasks.lease.0,
        workers: !args.no_workers,
        queues: args.queues.unwrap_or_default(),
        admin_password_hash: take_admin_password()?,
    };
    let overrides = Overrides {
        database: args.database.url,
        workflows: args.workflows,
        bind: args.bind,
        concurrency: args.concurrency,
        api_tokens: args.api_tokens.map(|tokens| {
            tokens
                .into_iter()
                .filter(|t| !t.trim().is_empty())
                .collect()
        }),
        log_format: args.log_format,
        public_url: args.public_url,
        github_webhook_secret: args.github_webhook_secret,
    };
    let settings = Settings::load(config, overrides)?;
    init_tracing_with(settings.config.log_format, "info");
    super::install_task_user(&settings.config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(settings, options))
}

async fn serve(settings: Settings, options: ServeOptions) -> anyhow::Result<ExitCode> {
    let config = settings.config.clone();
    let metrics = server::metrics::install();
    let store = Store::open(&settings.warm_store(SERVE_CONNECTIONS)).await?;
    let dir = config.workflows.clone();
    let catalog = Arc::new(
        tokio::task::spawn_blocking(move || Catalog::open(&dir))
            .await
            .context("loading the workflows folder stopped unexpectedly")?,
    );
    let snapshot = catalog.snapshot();
    info!(
        folder = %config.workflows.display(),
        workflows = snapshot.workflows.len(),
        import_errors = snapshot.import_errors.len(),
        "Workflows loaded."
    );
    for import_error in &snapshot.import_errors {
        for diagnostic in &import_error.diagnostics {
            warn!("{diagnostic}");
        }
    }

    let shared = Shared::new(&config)?;
    // Other processes share a PostgreSQL database; SQLite has this one only.
    let shared_database = store.backend() == sea_orm::DbBackend::Postgres;
    if !shared_database {
        // Whatever was running when this process last stopped was cut off: recover it now
        // instead of waiting for leases to expire.
        let recovered = recovery::recover(&store, &shared.versions, Orphans::AllRunning).await?;
        if recovered > 0 {
            info!(
                recovered,
                "Recovered tries that were running when Sluice last stopped."
            );
        }
    }

    let shutdown = CancellationToken::new();
    let catalog_changed = Arc::new(Notify::new());

    let leader = Leader {
        store: store.clone(),
        catalog: catalog.clone(),
        scheduler_deps: shared.scheduler_deps(),
        versions: shared.versions.clone(),
        templates: shared.templates.clone(),
        catalog_changed: catalog_changed.clone(),
        lease: options.lease,
        shared_database,
        http: super::http_client()?,
        status_config: StatusConfig::new(
            &config.github.api_url,
            &config.base_url(),
            shared.secrets.get("GITHUB_TOKEN").map(str::to_owned),
        ),
        masker: (*shared.masker).clone(),
        failure_mail: shared.failure_mail(&config, &store),
        retry_mail: shared.retry_mail(&config, &store),
    };
    let leader_task = tokio::spawn(leader.run(shutdown.clone()));

    let watch_task = {
        let changed = catalog_changed.clone();
        tokio::spawn(
            catalog
                .clone()
                .watch(WATCH_INTERVAL, shutdown.clone(), move |_| {
                    changed.notify_one()
                }),
        )
    };

    let stop_worker = CancellationToken::new();
    let worker_task = if options.workers {
        let worker = Worker::new(
            store.clone(),
            WorkerConfig {
                name: worker_name(),
                concurrency: config
                    .concurrency
                    .unwrap_or_else(WorkerConfig::default_concurrency),
                lease: options.lease,
                scratch_root: std::env::temp_dir()
                    .join(format!("sluice-serve-{}", std::process::id())),
                shutdown_grace: options.shutdown_grace,
                pools: config.pools.clone(),
                queues: options.queues.clone(),
                only_run: None,
                poll: shared_database.then_some(POLL_FALLBACK),
            },
            shared.worker_deps(
                &store,
                Some(Arc::new(CatalogRuns {
                    store: store.clone(),
                    catalog: catalog.clone(),
                })),
            )?,
        );
        Some(tokio::spawn(worker.run(
            store.subscribe_to(Interest::Control),
            stop_worker.clone(),
        )))
    } else {
        None
    };

    let state = AppState::new(
        store.clone(),
        catalog.clone(),
        &config.api_tokens,
        Some(metrics),
    )
    .with_webhook_secret(config.github.webhook_secret.clone())
    .with_ui(ui_settings(
        &config,
        options.admin_password_hash.clone(),
        shared.masker.clone(),
    ))
    .with_artifacts(shared.artifacts.clone())
    .with_tracking(shared.tracking(&store));
    // Deleting is idempotent, so every process on a shared database may run it.
    let retention_task = config.retention.older_than.map(|older_than| {
        tokio::spawn(crate::artifacts::retention::run(
            store.clone(),
            shared.artifacts.clone(),
            older_than,
            config.retention.every,
            shutdown.clone(),
        ))
    });
    if config.github.webhook_secret.is_none() {
        info!("No GitHub webhook secret is set: /hooks/github refuses deliveries.");
    }
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let address = listener.local_addr()?;
    info!(%address, "Sluice is serving on http://{address}");
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        // The peer address feeds the UI's per-address login limit.
        axum::serve(
            listener,
            server::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
        .await
    });

    wait_for_signal().await;
    info!("Shutting down: finishing what is running.");
    shutdown.cancel();
    let mut clean = true;
    if let Err(e) = http_task
        .await
        .context("the HTTP server stopped unexpectedly")?
    {
        error!(error = %e, "The HTTP server failed.");
        clean = false;
    }
    clean &= leader_task
        .await
        .context("the scheduler stopped unexpectedly")?;
    let _ = watch_task.await;
    if let Some(retention_task) = retention_task {
        let _ = retention_task.await;
    }
    // Workers stop last: tries finish within the grace period or go back to the queue.
    stop_worker.cancel();
    if let Some(worker_task) = worker_task {
        worker_task
            .await
            .context("the worker stopped unexpectedly")??;
    }
    info!("Sluice stopped.");
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What only one process on a database may run at a time: the scheduler, the cron service,
/// the workflow trigger service, commit statuses, the failure mail and lease recovery. Every `serve` process competes for
/// leadership; the others stand by and take over when the leader goes away.
struct Leader {
    store: Store,
    catalog: Arc<Catalog>,
    scheduler_deps: crate::scheduler::SchedulerDeps,
    versions: Arc<crate::catalog::versions::Versions>,
    templates: Arc<crate::template::Templates>,
    catalog_changed: Arc<Notify>,
    lease: Duration,
    shared_database: bool,
    /// For commit statuses: the HTTP client, where to post and the masker for what is logged.
    http: reqwest::Client,
    status_config: StatusConfig,
    masker: crate::secrets::Masker,
    /// The standard mail for failed runs (`[alerts] email_on_failure`), when configured.
    failure_mail: Option<crate::scheduler::failure_mail::FailureMailService>,
    /// The standard notice of failed tries that are retried (`[alerts] email_on_retry`).
    retry_mail: Option<crate::scheduler::retry_mail::RetryMailService>,
}

impl Leader {
    /// Leads whenever it can until `shutdown`; returns whether every part ended cleanly.
    async fn run(self, shutdown: CancellationToken) -> bool {
        // A standby notices a vanished leader within a fraction of the lease.
        let check_every = (self.lease / 4).max(Duration::from_millis(100));
        let mut clean = true;
        loop {
            let mut leadership = loop {
                match self.store.try_lead().await {
                    Ok(Some(leadership)) => break leadership,
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "Cannot take part in leader election; retrying."),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return clean,
                    _ = tokio::time::sleep(check_every) => {}
                }
            };
            if self.shared_database {
                info!("This process leads: it runs the scheduler, cron and recovery.");
            }
            let term = shutdown.child_token();
            let mut parts = match self.start(&term).await {
                Ok(parts) => parts,
                Err(e) => {
                    error!(error = %e, "Cannot start the scheduler; retrying.");
                    clean = false;
                    drop(leadership);
                    tokio::select! {
                        _ = shutdown.cancelled() => return clean,
                        _ = tokio::time::sleep(check_every) => continue,
                    }
                }
            };
            let ended_cleanly = tokio::select! {
                _ = leadership.lost(check_every) => {
                    warn!("Lost leadership (the database connection holding it failed); standing by.");
                    true
                }
                ended = parts.join_next() => {
                    // Parts run until their token is cancelled: one that ends earlier failed.
                    let ended_cleanly = report(ended);
                    if term.is_cancelled() {
                        ended_cleanly
                    } else {
                        error!("A scheduler part ended by itself; restarting the scheduler.");
                        false
                    }
                }
                _ = term.cancelled() => true,
            };
            term.cancel();
            while let Some(ended) = parts.join_next().await {
                clean &= report(Some(ended));
            }
            clean &= ended_cleanly;
            drop(leadership);
            if shutdown.is_cancelled() {
                return clean;
            }
            if !ended_cleanly {
                // Whatever failed (the database, most likely) gets a moment before the retry.
                tokio::select! {
                    _ = shutdown.cancelled() => return clean,
                    _ = tokio::time::sleep(check_every) => {}
                }
            }
        }
    }

    async fn start(
        &self,
        term: &CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>> {
        let mut parts = tokio::task::JoinSet::new();
        if self.shared_database {
            // Tries whose worker stopped renewing its lease (a crash, a partition) are ended
            // and retried; the workers on other machines cannot be asked.
            let store = self.store.clone();
            let versions = self.versions.clone();
            let every = (self.lease / 4).max(Duration::from_millis(100));
            let term = term.clone();
            parts.spawn(async move {
                let result = reap_expired_leases(store, versions, every, term).await;
                ("lease recovery", result)
            });
        }
        let mut scheduler = Scheduler::new(
            self.store.clone(),
            self.scheduler_deps.clone(),
            SchedulerConfig {
                adopt_new_runs: true,
                exit_when_idle: false,
                reload_every: self.shared_database.then_some(RELOAD_FALLBACK),
            },
        );
        let scheduler_events = self.store.subscribe();
        scheduler.resume().await?;
        let token = term.clone();
        parts.spawn(async move {
            let result = scheduler.run(scheduler_events, token).await;
            ("scheduler", result.map_err(anyhow::Error::from))
        });

        let cron = CronService::new(
            self.store.clone(),
            self.catalog.clone(),
            CronConfig::default(),
        );
        // Only the scheduler needs task state changes; the rest react to runs and pauses.
        let (changed, events, token) = (
            self.catalog_changed.clone(),
            self.store.subscribe_to(Interest::Control),
            term.clone(),
        );
        parts.spawn(async move {
            let result = cron.run(changed, events, token).await;
            ("cron service", result.map_err(anyhow::Error::from))
        });

        let triggers = WorkflowTriggerService::new(
            self.store.clone(),
            self.catalog.clone(),
            self.templates.clone(),
        );
        let (events, token) = (self.store.subscribe_to(Interest::Control), term.clone());
        parts.spawn(async move {
            let result = triggers.run(events, token).await;
            (
                "workflow trigger service",
                result.map_err(anyhow::Error::from),
            )
        });
        let statuses = GithubStatusService::new(
            self.store.clone(),
            self.catalog.clone(),
            self.http.clone(),
            self.status_config.clone(),
            self.masker.clone(),
        );
        let (events, token) = (self.store.subscribe_to(Interest::Control), term.clone());
        parts.spawn(async move {
            statuses.run(events, token).await;
            ("commit status service", Ok(()))
        });

        if let Some(failure_mail) = self.failure_mail.clone() {
            let (events, token) = (self.store.subscribe_to(Interest::Control), term.clone());
            parts.spawn(async move {
                let result = failure_mail.run(events, token).await;
                ("failure mail service", result.map_err(anyhow::Error::from))
            });
        }
        if let Some(retry_mail) = self.retry_mail.clone() {
            // Tries going up for retry are task state changes: this listener needs them all.
            let (events, token) = (self.store.subscribe_to(Interest::All), term.clone());
            parts.spawn(async move {
                let result = retry_mail.run(events, None, token).await;
                ("retry notice service", result.map_err(anyhow::Error::from))
            });
        }
        Ok(parts)
    }
}

/// Logs how a leader part ended; returns whether it ended cleanly.
fn report(
    ended: Option<Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>>,
) -> bool {
    match ended {
        None | Some(Ok((_, Ok(())))) => true,
        Some(Ok((name, Err(e)))) => {
            error!(error = %e, "The {name} failed.");
            false
        }
        Some(Err(e)) => {
            error!(error = %e, "A scheduler part stopped unexpectedly.");
            false
        }
    }
}

/// Recovers tries with an expired lease every `every`, until `term`.
async fn reap_expired_leases(
    store: Store,
    versions: Arc<crate::catalog::versions::Versions>,
    every: Duration,
    term: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let recovered = recovery::recover(
            &store,
            &versions,
            Orphans::LeaseExpiredBefore(chrono::Utc::now()),
        )
        .await?;
        if recovered > 0 {
            info!(
                recovered,
                "Recovered tries whose worker stopped renewing its lease."
            );
        }
        tokio::select! {
            _ = term.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Hashes `SLUICE_ADMIN_PASSWORD`, which start-up took out of the environment
/// (`secrets::seal_process`) so that the tasks this process starts never see it.
fn take_admin_password() -> anyhow::Result<Option<String>> {
    let Some(password) = crate::secrets::credential("SLUICE_ADMIN_PASSWORD") else {
        return Ok(None);
    };
    let password = password
        .into_string()
        .map_err(|_| anyhow::anyhow!("SLUICE_ADMIN_PASSWORD is not valid UTF-8"))?;
    if password.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::web::auth::hash_password(&password)?))
}

/// The web UI's settings: the `admin` password from `SLUICE_ADMIN_PASSWORD` (already hashed)
/// or else the hash in `sluice.toml`.
fn ui_settings(config: &Config, from_env: Option<String>, masker: Arc<Masker>) -> UiSettings {
    let admin_password_hash = from_env.or_else(|| config.admin_password_hash.clone());
    if admin_password_hash.is_none() {
        info!(
            "No admin password is set (SLUICE_ADMIN_PASSWORD or ui.admin_password_hash): \
             only users added with `sluice user add` can log in to the UI."
        );
    }
    UiSettings {
        admin_password_hash,
        session_lifetime: config.session_lifetime,
        secure_cookies: config.base_url().starts_with("https://"),
        masker,
    }
}

pub(super) fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Ctrl-C or SIGTERM, whichever comes first.
pub(super) async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops Sluice.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
