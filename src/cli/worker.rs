//! `sluice worker`: a process that only runs tasks, claimed from a shared PostgreSQL database,
//! beside one or more `sluice serve --no-workers` processes that schedule them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tracing::info;

use super::serve::{POLL_FALLBACK, TaskRunnerArgs, queue_name, wait_for_signal, worker_name};
use super::{DatabaseArgs, Settings, Shared, init_tracing_with};
use crate::catalog::live::Catalog;
use crate::catalog::runs::CatalogRuns;
use crate::config::{LogFormat, Overrides};
use crate::dag::DEFAULT_QUEUE;
use crate::operators::RunLauncher;
use crate::server;
use crate::store::{Interest, Store};
use crate::worker::{Worker, WorkerConfig};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The queues to take tasks from, comma-separated [default: default]
    #[arg(long, value_delimiter = ',', value_name = "QUEUES", value_parser = queue_name)]
    pub queues: Option<Vec<String>>,
    /// How many tasks run at once in this process (default: 16 per CPU, at least 32).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// This worker's name, shown as the holder of the tasks it runs [default: HOST:PID]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The folder of workflow files, for tasks that start other workflows (`trigger`)
    /// [default: workflows, when it exists]
    #[arg(long, env = "SLUICE_WORKFLOWS", value_name = "DIR")]
    pub workflows: Option<PathBuf>,
    /// Serve `/healthz` and `/metrics` on this address, e.g. 127.0.0.1:9464 [default: none]
    #[arg(
        long,
        env = "SLUICE_WORKER_BIND",
        value_name = "ADDR",
        value_parser = super::bind_address
    )]
    pub bind: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub tasks: TaskRunnerArgs,
    /// `human` or `json` log lines on stderr [default: human]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Database connections opened at start-up: claims and completions, heartbeats, notifications
/// and the odd operator's query at once.
const WORKER_CONNECTIONS: u32 = 4;

pub fn execute(config: Option<&Path>, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(
        config,
        Overrides {
            database: args.database.url.clone(),
            workflows: args.workflows.clone(),
            concurrency: args.concurrency,
            log_format: args.log_format,
            ..Overrides::default()
        },
    )?;
    init_tracing_with(settings.config.log_format, "info");
    super::install_task_user(&settings.config)?;
    if settings.config.concurrency == Some(0) {
        anyhow::bail!("--concurrency must be at least 1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(work(settings, args))
}

async fn work(settings: Settings, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let config = &settings.config;
    let store = Store::open(&settings.warm_store(WORKER_CONNECTIONS)).await?;
    if store.backend() != sea_orm::DbBackend::Postgres {
        // A SQLite database belongs to one process, which is `serve` (or `run`).
        anyhow::bail!(
            "`sluice worker` needs a PostgreSQL database shared with `sluice serve` \
             (--database postgres://…); with SQLite, `sluice serve` runs the tasks itself"
        );
    }
    let shared = Shared::new(config)?;
    // Without the workflow files, everything but `trigger` still runs: tasks read their
    // workflow from the version pinned in the database.
    let runs: Option<Arc<dyn RunLauncher>> = if config.workflows.is_dir() {
        let dir = config.workflows.clone();
        let catalog = Arc::new(tokio::task::spawn_blocking(move || Catalog::open(&dir)).await?);
        Some(Arc::new(CatalogRuns {
            store: store.clone(),
            catalog,
        }))
    } else {
        None
    };
    let queues = args
        .queues
        .unwrap_or_else(|| vec![DEFAULT_QUEUE.to_owned()]);
    let name = args.name.unwrap_or_else(worker_name);
    let worker = Worker::new(
        store.clone(),
        WorkerConfig {
            name: name.clone(),
            concurrency: config
                .concurrency
                .unwrap_or_else(WorkerConfig::default_concurrency),
            lease: args.tasks.lease.0,
            scratch_root: std::env::temp_dir()
                .join(format!("sluice-worker-{}", std::process::id())),
            shutdown_grace: args.tasks.shutdown_grace.0,
            pools: config.pools.clone(),
            max_output_bytes: config.worker.max_output_bytes,
            queues: queues.clone(),
            only_run: None,
            poll: Some(POLL_FALLBACK),
        },
        shared.worker_deps(&store, runs)?,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(address) = args.bind {
        serve_operations(address, &store, stop.clone()).await?;
    }
    let mut task = tokio::spawn(worker.run(store.subscribe_to(Interest::Control), stop.clone()));
    info!(name, queues = %queues.join(","), "Worker started.");
    tokio::select! {
        _ = wait_for_signal() => {
            info!("Shutting down: finishing what is running.");
            stop.cancel();
            task.await??;
        }
        // The worker ends by itself only when the database fails it; its leases then run
        // out and the leader retries its tasks.
        ended = &mut task => {
            ended??;
        }
    }
    info!("Worker stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Serves `/healthz` and `/metrics` until `stop` fires, so a worker can be monitored like
/// `serve`: the same database gauges, and this process's own task and claim metrics.
async fn serve_operations(
    address: std::net::SocketAddr,
    store: &Store,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let address = listener.local_addr()?;
    let router = server::ops_only_router(server::OpsState {
        store: store.clone(),
        metrics: Some(server::metrics::install()),
    });
    info!(%address, "Serving /healthz and /metrics on http://{address}");
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "The operations endpoints stopped.");
        }
    });
    Ok(())
}
