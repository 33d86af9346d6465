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
use crate::config::{LogFormat, Overrides};
use crate::duration::HumanDuration;
use crate::scheduler::cron::{CronConfig, CronService};
use crate::scheduler::recovery::{self, Orphans};
use crate::scheduler::triggers::WorkflowTriggerService;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::server::{self, AppState};
use crate::store::Store;
use crate::worker::{Worker, WorkerConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The folder of workflow files [default: workflows]
    #[arg(long, env = "SLUICE_WORKFLOWS", value_name = "DIR")]
    pub workflows: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The address the HTTP API listens on [default: 127.0.0.1:8080]
    #[arg(long, env = "SLUICE_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// How many tasks run at once in this process (default: 16 per CPU, at least 32).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// `human` or `json` log lines on stderr [default: human]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// How long running tasks may take to finish on shutdown before they are stopped and
    /// handed back to the queue.
    #[arg(
        long,
        env = "SLUICE_SHUTDOWN_GRACE",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub shutdown_grace: HumanDuration,
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
}

fn public_url(value: &str) -> Result<String, String> {
    crate::config::checked_public_url(value)
}

/// How often the workflows folder is checked for changed files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub fn execute(config: Option<&Path>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown_grace = args.shutdown_grace.0;
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
    };
    let settings = Settings::load(config, overrides)?;
    init_tracing_with(settings.config.log_format, "info");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(settings, shutdown_grace))
}

async fn serve(settings: Settings, shutdown_grace: Duration) -> anyhow::Result<ExitCode> {
    let config = settings.config.clone();
    let metrics = server::metrics::install();
    let store = Store::open(&settings.store()).await?;
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

    // SQLite has one process, this one: whatever was running when it last stopped was cut
    // off, so it is recovered now instead of waiting for leases to expire.
    let recovered = recovery::recover(&store, &shared.versions, Orphans::AllRunning).await?;
    if recovered > 0 {
        info!(
            recovered,
            "Recovered tries that were running when Sluice last stopped."
        );
    }

    let shutdown = CancellationToken::new();
    let catalog_changed = Arc::new(Notify::new());

    let mut scheduler = Scheduler::new(
        store.clone(),
        shared.scheduler_deps(),
        SchedulerConfig {
            adopt_new_runs: true,
            exit_when_idle: false,
        },
    );
    let scheduler_events = store.subscribe();
    scheduler.resume().await?;
    let scheduler_task = tokio::spawn(scheduler.run(scheduler_events, shutdown.clone()));

    let cron = CronService::new(store.clone(), catalog.clone(), CronConfig::default());
    let cron_task =
        tokio::spawn(cron.run(catalog_changed.clone(), store.subscribe(), shutdown.clone()));

    // Subscribed before anything runs, so no run's end is missed.
    let triggers =
        WorkflowTriggerService::new(store.clone(), catalog.clone(), shared.templates.clone());
    let triggers_task = tokio::spawn(triggers.run(store.subscribe(), shutdown.clone()));
    let failure_mail_task = shared
        .failure_mail(&config, &store)
        .map(|service| tokio::spawn(service.run(store.subscribe(), shutdown.clone())));

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
    let worker = Worker::new(
        store.clone(),
        WorkerConfig {
            name: worker_name(),
            concurrency: config
                .concurrency
                .unwrap_or_else(WorkerConfig::default_concurrency),
            lease: Duration::from_secs(60),
            scratch_root: std::env::temp_dir().join(format!("sluice-serve-{}", std::process::id())),
            shutdown_grace,
            pools: config.pools.clone(),
        },
        shared.worker_deps(
            &store,
            Some(Arc::new(CatalogRuns {
                store: store.clone(),
                catalog: catalog.clone(),
            })),
        )?,
    );
    let worker_task = tokio::spawn(worker.run(store.subscribe(), stop_worker.clone()));

    let state = AppState::new(
        store.clone(),
        catalog.clone(),
        &config.api_tokens,
        Some(metrics),
    );
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let address = listener.local_addr()?;
    info!(%address, "Sluice is serving on http://{address}");
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(listener, server::router(state))
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
    for (name, result) in [
        (
            "scheduler",
            scheduler_task.await.map(|r| r.map_err(anyhow::Error::from)),
        ),
        (
            "cron service",
            cron_task.await.map(|r| r.map_err(anyhow::Error::from)),
        ),
        (
            "workflow trigger service",
            triggers_task.await.map(|r| r.map_err(anyhow::Error::from)),
        ),
    ] {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "The {name} failed.");
                clean = false;
            }
            Err(e) => {
                error!(error = %e, "The {name} stopped unexpectedly.");
                clean = false;
            }
        }
    }
    if let Some(task) = failure_mail_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "The failure mail service failed.");
                clean = false;
            }
            Err(e) => {
                error!(error = %e, "The failure mail service stopped unexpectedly.");
                clean = false;
            }
        }
    }
    let _ = watch_task.await;
    // Workers stop last: tries finish within the grace period or go back to the queue.
    stop_worker.cancel();
    worker_task
        .await
        .context("the worker stopped unexpectedly")??;
    info!("Sluice stopped.");
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn wait_for_signal() {
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
