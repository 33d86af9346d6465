//! Persistence: the only module that speaks SQL and knows which database it is on. Every state
//! transition is written here, guarded on the expected current state, before anyone acts on
//! it; after each commit the store tells in-process subscribers what changed (`StoreEvent`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement, Value,
};
use sluice_migrations::{Migrator, MigratorTrait};
use tokio::sync::mpsc;

mod leader;
mod listing;
mod logs;
mod notify;
mod pages;
mod runs;
mod schedules;
mod tasks;
mod users;

pub use alerts::{
    TaskFailure, ThrottleClaim, ThrottleDecision, ThrottleState, Throttled,
    decide as decide_throttle,
};
pub use artifacts::{ArtifactRecord, CleanedRuns, NewArtifact};
pub use deliveries::{
    DeliveryOutcome, DeliveryPage, DeliveryRecord, DeliveryRun, NewDelivery, Recorded,
};
pub use history::PastOutputs;
pub use leader::Leadership;
pub use listing::{BadCursor, ClearOutcome, RunFilter, RunPage};
pub use logs::{LogRecord, LogTailLine, NewLogLine};
pub use reproductions::Reproduces;
pub use runs::{NewRun, RunOrigin, RunRecord};
pub use task_marks::{MarkOutcome, MarkedState, RunAfterMark, TaskMark};
pub use tasks::{
    Claim, ClaimedTask, DecisionBatch, NewTaskInstance, OrphanedTry, TaskCompletion,
    TaskInstanceRecord, TaskSlotRecord, TaskStateChange,
};
pub use users::{Role, SessionRecord, UnknownRole, UserRecord, UserSummary};

use crate::lifecycle::{InvalidTransition, UnknownName};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database `{url}`: {source}")]
    Connect { url: String, source: DbErr },
    #[error(
        "`{0}` is not a supported database URL; use sqlite://PATH, sqlite::memory: or postgres://…"
    )]
    UnsupportedUrl(String),
    #[error("applying database migrations failed: {0}")]
    Migrate(DbErr),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("the database holds an invalid value: {0}")]
    Corrupt(String),
    #[error("workflow `{workflow_id}` already has a scheduled run for {logical_date}")]
    AlreadyScheduled {
        workflow_id: String,
        logical_date: chrono::DateTime<chrono::Utc>,
    },
    #[error("cannot take a lock on the database: {0}")]
    Lock(sea_orm::sqlx::Error),
    #[error("no run with id `{0}`")]
    RunNotFound(String),
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error("{0} kept changing under concurrent writers; try again")]
    Contended(String),
}

impl From<UnknownName> for StoreError {
    fn from(e: UnknownName) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What changed, told to subscribers after the change was committed.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// Task instances changed state (one event per committed batch).
    TaskStates {
        run_id: String,
        changes: Arc<[TaskStateChange]>,
    },
    /// A run changed state.
    RunState {
        run_id: String,
        state: crate::lifecycle::RunState,
    },
    /// There are queued task instances to claim.
    WorkQueued,
    /// A run was asked to stop: workers kill its running tasks.
    RunCancelRequested { run_id: String },
    /// A workflow was paused or unpaused.
    Paused { workflow_id: String, paused: bool },
    /// Changes made by other processes may have gone unheard (the connection that hears them
    /// was re-established): whoever keeps state from events should re-read it.
    Missed,
}

/// Which events a subscriber hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Every event.
    All,
    /// Everything but `TaskStates`: what a worker needs (new work, cancellations, runs that
    /// ended). Task state changes are most of the traffic, and on PostgreSQL a process whose
    /// subscribers all want only this does not even receive them.
    Control,
}

impl Interest {
    fn wants(self, event: &StoreEvent) -> bool {
        self == Interest::All || !matches!(event, StoreEvent::TaskStates { .. })
    }
}

struct Subscriber {
    tx: mpsc::UnboundedSender<StoreEvent>,
    interest: Interest,
}

/// Settings for opening a database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created if missing), `sqlite::memory:` or `postgres://…`.
    pub url: String,
    /// How long SQLite waits for a lock before giving up.
    pub busy_timeout: Duration,
    /// On PostgreSQL: how many connections to open right after start-up, in the background,
    /// for a long-running process (`serve`, `worker`); one-off commands need one.
    pub warm_connections: u32,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            busy_timeout: Duration::from_secs(10),
            warm_connections: 1,
        }
    }

    /// The same, with `n` connections opened ahead of need on PostgreSQL.
    pub fn warm(self, n: u32) -> Self {
        StoreConfig {
            warm_connections: n,
            ..self
        }
    }
}

/// A handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: DbBackend,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    /// On PostgreSQL: how events reach the other processes on the database.
    cluster: Option<Arc<notify::Cluster>>,
    /// When this process last pruned `alert_throttle` (Unix seconds; see `store::alerts`).
    alerts_pruned_at: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Opens `n` pool connections at once (in parallel, so in about the time of one) and puts
/// them back, idle, for the first requests to find.
async fn warm_up(db: DatabaseConnection, n: u32) {
    let pool = db.get_postgres_connection_pool();
    let held = futures_util::future::join_all(
        (0..n.min(POSTGRES_MAX_CONNECTIONS)).map(|_| pool.acquire()),
    )
    .await;
    if let Some(Err(error)) = held.iter().find(|c| c.is_err()) {
        tracing::warn!(%error, "Could not open database connections ahead of need.");
    }
}

/// Turns what users type (`./sluice.db`, `sqlite://x.db`, `postgres://…`) into a URL sqlx
/// accepts, with SQLite files created when missing.
pub fn normalize_url(url: &str) -> Result<String> {
    if url == "sqlite::memory:"
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        return Ok(url.to_owned());
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if !url.contains("://") {
        url
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut normalized = format!("sqlite://{path}?mode=rwc");
    if !query.is_empty() {
        normalized.push('&');
        normalized.push_str(query);
    }
    Ok(normalized)
}

impl Store {
    /// Opens the database and applies pending migrations.
    pub async fn open(config: &StoreConfig) -> Result<Store> {
        let url = normalize_url(&config.url)?;
        let mut options = ConnectOptions::new(url.clone());
        options.sqlx_logging(false);
        if url.starts_with("sqlite:") {
            let busy_timeout = config.busy_timeout;
            // One connection: SQLite has one writer anyway, and a single connection avoids
            // lock-upgrade failures between concurrent deferred transactions. WAL keeps
            // readers in other processes unblocked; synchronous=NORMAL is durable in WAL mode
            // against process crashes (only an OS crash can lose the last commits).
            // The single connection is kept for the life of the pool: an in-memory database
            // lives exactly as long as its connection.
            options.idle_timeout(None).max_lifetime(None);
            // No ping before each statement: the connection is an in-process library handle
            // that cannot go stale, and a ping is one more round trip to its thread per
            // statement (about a tenth of a chain step's engine time).
            options.test_before_acquire(false);
            options
                .max_connections(1)
                .min_connections(1)
                .map_sqlx_sqlite_opts(move |o| {
                    o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(busy_timeout)
                        .foreign_keys(true)
                        .pragma("temp_store", "memory")
                        .statement_cache_capacity(256)
                });
        } else {
            // Connections are kept once open: opening a TLS connection takes sqlx about 90 ms
            // even on loopback (it waits on delayed TCP acknowledgements), which a trigger
            // should never wait for; an idle connection costs the server a few megabytes.
            options
                .max_connections(POSTGRES_MAX_CONNECTIONS)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let db = Database::connect(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let backend = db.get_database_backend();
        // sea-orm's migrator logs each step at INFO (the command line turns that down); one
        // line here says what changed.
        let migrate = async {
            let pending = Migrator::get_pending_migrations(&db).await?.len();
            Migrator::up(&db, None).await?;
            Ok::<usize, sea_orm::DbErr>(pending)
        };
        let applied = if backend == DbBackend::Postgres {
            // Processes starting together (a fleet of workers) must not apply the same
            // migration twice: one at a time, the others then find nothing pending.
            leader::with_migration_lock(&url, migrate)
                .await?
                .map_err(StoreError::Migrate)?
        } else {
            migrate.await.map_err(StoreError::Migrate)?
        };
        if applied > 0 {
            tracing::info!(
                migrations = applied,
                "Applied the pending database migrations."
            );
        }
        let cluster = match backend {
            DbBackend::Postgres => Some(Arc::new(notify::Cluster::new(&db, &url).await?)),
            _ => None,
        };
        if backend == DbBackend::Postgres && config.warm_connections > 1 {
            tokio::spawn(warm_up(db.clone(), config.warm_connections));
        }
        Ok(Store {
            db,
            backend,
            subscribers: Arc::default(),
            cluster,
            alerts_pruned_at: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        })
    }

    /// The names of the migrations applied to this database, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<String>> {
        let applied = Migrator::get_applied_migrations(&self.db)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(applied.iter().map(|m| m.name().to_owned()).collect())
    }

    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Receives every event committed from now on, until the receiver is dropped: this
    /// process's own and, on PostgreSQL, those of the other processes on the database.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<StoreEvent> {
        self.subscribe_to(Interest::All)
    }

    /// Receives the events `interest` names, as `subscribe` does.
    pub fn subscribe_to(&self, interest: Interest) -> mpsc::UnboundedReceiver<StoreEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_subscribers().push(Subscriber { tx, interest });
        if let Some(cluster) = &self.cluster {
            cluster.start_listening(self, interest);
        }
        rx
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // A panic while holding this lock cannot leave the list inconsistent.
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a subscriber is left for the events of `channel`.
    fn has_subscribers(&self, channel: notify::Channel) -> bool {
        self.lock_subscribers().iter().any(|s| {
            !s.tx.is_closed()
                && match channel {
                    notify::Channel::Control => true,
                    notify::Channel::TaskStates => s.interest == Interest::All,
                }
        })
    }

    /// Tells subscribers in this process and, on PostgreSQL, the other processes (after the
    /// change committed; the caller publishes only then).
    pub(crate) fn publish(&self, event: StoreEvent) {
        if let Some(cluster) = &self.cluster {
            let outbox = cluster.outbox.get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(notify::forward(self.clone(), rx));
                tx
            });
            let _ = outbox.send(event.clone());
        }
        self.publish_local(event);
    }

    /// Tells this process's subscribers only.
    fn publish_local(&self, event: StoreEvent) {
        self.lock_subscribers()
            .retain(|s| !s.interest.wants(&event) || s.tx.send(event.clone()).is_ok());
    }

    /// A statement with `?` placeholders, rewritten to `$1, $2, …` on PostgreSQL.
    pub(crate) fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(self.backend, placeholders(self.backend, sql), values)
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}

fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `?, ?, ?` for an `IN (…)` list of `n` items.
pub(crate) fn marks(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

pub(crate) fn get<T: sea_orm::TryGetable>(row: &QueryResult, column: &str) -> Result<T> {
    Ok(row.try_get::<T>("", column)?)
}

/// Rows per multi-row statement: SQLite allows 32,766 bound values per statement.
pub(crate) const CHUNK: usize = 500;

/// Connections per process on PostgreSQL, at most.
const POSTGRES_MAX_CONNECTIONS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_people_type_are_normalized() {
        assert_eq!(
            normalize_url("sluice.db").unwrap(),
            "sqlite://sluice.db?mode=rwc"
        );
        assert_eq!(
            normalize_url("./x/y.db").unwrap(),
            "sqlite://./x/y.db?mode=rwc"
        );
        assert_eq!(
            normalize_url("sqlite://a.db").unwrap(),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            normalize_url("sqlite:a.db").unwrap(),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(normalize_url("sqlite::memory:").unwrap(), "sqlite::memory:");
        assert_eq!(normalize_url("postgres://h/db").unwrap(), "postgres://h/db");
        assert!(matches!(
            normalize_url("mysql://h/db"),
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            placeholders(DbBackend::Postgres, "a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(placeholders(DbBackend::Sqlite, "a = ?"), "a = ?");
    }
}

/// The backends store tests run on: SQLite always; PostgreSQL when it is reachable at
/// `SLUICE_TEST_POSTGRES_URL` (default: the local server's `test` database), each test in a
/// schema of its own. With `CI` set, an unreachable PostgreSQL fails the test instead of
/// being skipped.
#[cfg(test)]
pub(crate) mod conformance {
    use chrono::Utc;

    use super::*;
    use crate::lifecycle::{RunState, TaskState};

    /// A store to test, and what to clean up after the test.
    pub(crate) struct Backend {
        pub name: &'static str,
        pub store: Store,
        schema: Option<(String, String)>,
    }

    impl Backend {
        /// Drops a PostgreSQL test's schema (a failed test leaves it for inspection).
        pub async fn finish(self) {
            let Some((url, schema)) = self.schema else {
                return;
            };
            drop(self.store);
            if let Ok(admin) = Database::connect(&url).await {
                let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                let _ = sea_orm::ConnectionTrait::execute_unprepared(&admin, &sql).await;
                let _ = admin.close().await;
            }
        }
    }

    /// A manual run of workflow `wf` at version `h1`, logical date now.
    pub(crate) fn new_run(id: &str) -> NewRun {
        let now = chrono::Utc::now();
        NewRun {
            id: id.into(),
            workflow_id: "wf".into(),
            version_hash: "h1".into(),
            trigger: "manual".into(),
            triggered_by: None,
            params: serde_json::Map::new(),
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
        }
    }

    /// The first try of task `id`, in the default queue, no pool.
    pub(crate) fn task(id: &str) -> NewTaskInstance {
        NewTaskInstance {
            task_id: id.into(),
            try_number: 1,
            priority: 0,
            pool: None,
            queue: "default".into(),
            not_before: None,
        }
    }

    /// Claims the one queued try there is.
    pub(crate) async fn claim_one(store: &Store) -> ClaimedTask {
        let claimed = store
            .claim(&Claim {
                worker: "w",
                limit: 1,
                lease: std::time::Duration::from_secs(30),
                pools: &Default::default(),
                queues: &[],
                run_id: None,
            })
            .await
            .expect("claim");
        claimed.into_iter().next().expect("a queued try")
    }

    /// The successful end of a claimed try, with nothing to say.
    pub(crate) fn success(claimed: &ClaimedTask) -> TaskCompletion {
        TaskCompletion {
            id: claimed.id,
            run_id: claimed.run_id.clone(),
            task_id: claimed.task_id.clone(),
            try_number: claimed.try_number,
            state: TaskState::Success,
            exit_code: Some(0),
            error: None,
            outputs: None,
            warnings: Vec::new(),
            summary: None,
            ended_at: Utc::now(),
            retry: None,
        }
    }

    /// A run `id` of one task `a`, running, with its try queued.
    pub(crate) async fn queued_run(store: &Store, id: &str) {
        queued(store, &new_run(id)).await;
    }

    /// `run` with one task `a`, running, with its try queued.
    pub(crate) async fn queued(store: &Store, run: &NewRun) {
        let id = run.id.as_str();
        store.create_run(run, &[task("a")]).await.expect("run");
        assert!(
            store
                .set_run_state(id, RunState::Queued, RunState::Running, None)
                .await
                .expect("start")
        );
        let tis = store.task_instances(id).await.expect("read");
        let mut batch = DecisionBatch::default();
        batch.push(tis[0].id, "a", 1, TaskState::Pending, TaskState::Queued);
        store.apply_decisions(id, &batch).await.expect("queue");
    }

    pub(crate) async fn backends() -> Vec<Backend> {
        let sqlite = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("SQLite store");
        let mut backends = vec![Backend {
            name: "sqlite",
            store: sqlite,
            schema: None,
        }];
        let url = std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        match postgres(&url).await {
            Ok((store, schema)) => backends.push(Backend {
                name: "postgres",
                store,
                schema: Some((url, schema)),
            }),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL at {url} is needed in CI: {e}")
            }
            Err(_) => {}
        }
        backends
    }

    async fn postgres(url: &str) -> Result<(Store, String)> {
        let schema = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                url: url.to_owned(),
                source,
            })?;
        sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE SCHEMA {schema}"))
            .await?;
        admin.close().await?;
        let separator = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
        Ok((Store::open(&StoreConfig::new(scoped)).await?, schema))
    }
}

/// Runs a store test body once per backend.
#[cfg(test)]
macro_rules! on_every_backend {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                for backend in crate::store::conformance::backends().await {
                    eprintln!("{}: on {}", stringify!($name), backend.name);
                    $body(backend.store.clone()).await;
                    backend.finish().await;
                }
            }
        )*
    };
}

// Declared after `on_every_backend!` so their conformance tests can use the macro.
mod alerts;
mod artifacts;
mod deliveries;
mod eval_cache;
mod history;
mod logins;
mod reproductions;
pub mod rollouts;
mod task_marks;
pub mod tracking;

#[cfg(test)]
mod store_tests {
    use chrono::Utc;

    use super::conformance::{new_run, task};
    use super::*;
    use crate::lifecycle::{RunState, TaskState};

    on_every_backend! {
        run_lifecycle_claim_and_fenced_completion => lifecycle_claim_and_fenced_completion,
        cancel_stops_what_has_not_started => cancel_before_start,
        claims_follow_priority_then_age => priority_then_age,
        logs_round_trip_in_order => logs_in_order,
        a_handed_back_try_is_queued_again_and_keeps_its_start => hand_back_keeps_start,
        one_scheduled_run_per_logical_date => one_scheduled_run_per_date,
        workers_claim_only_their_queues => claims_by_queue,
    }

    async fn one_scheduled_run_per_date(store: Store) {
        let date = Utc::now();
        let scheduled = |id: &str, trigger: &str| NewRun {
            trigger: trigger.into(),
            logical_date: date,
            ..new_run(id)
        };
        store
            .create_run(&scheduled("s1", "schedule"), &[task("a")])
            .await
            .expect("first");
        let second = store
            .create_run(&scheduled("s2", "schedule"), &[task("a")])
            .await;
        assert!(
            matches!(second, Err(StoreError::AlreadyScheduled { .. })),
            "{second:?}"
        );
        assert!(
            store.run("s2").await.expect("read").is_none(),
            "nothing left behind"
        );
        // Other triggers may share the date.
        store
            .create_run(&scheduled("m1", "manual"), &[task("a")])
            .await
            .expect("manual");
        store
            .create_run(&scheduled("b1", "backfill"), &[task("a")])
            .await
            .expect("backfill");
    }

    async fn claims_by_queue(store: Store) {
        let in_queue = |id: &str, queue: &str| NewTaskInstance {
            queue: queue.into(),
            ..task(id)
        };
        store
            .create_run(
                &new_run("rq"),
                &[
                    in_queue("cpu1", "default"),
                    in_queue("gpu1", "gpu"),
                    in_queue("gpu2", "gpu"),
                ],
            )
            .await
            .expect("run");
        let mut batch = DecisionBatch::default();
        for ti in store.task_instances("rq").await.expect("tis") {
            batch.push(ti.id, &ti.task_id, 1, TaskState::Pending, TaskState::Queued);
        }
        store.apply_decisions("rq", &batch).await.expect("queue");
        let claim = |queues: &'static [String]| Claim {
            worker: "w",
            limit: 10,
            lease: Duration::from_secs(30),
            pools: &EMPTY_POOLS,
            queues,
            run_id: None,
        };
        static GPU: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["gpu".into()]);
        let gpu = store.claim(&claim(&GPU)).await.expect("claim");
        let mut ids: Vec<&str> = gpu.iter().map(|c| c.task_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["gpu1", "gpu2"]);
        let rest = store.claim(&claim(&[])).await.expect("claim");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].task_id, "cpu1");
    }

    async fn hand_back_keeps_start(store: Store) {
        store
            .create_run(&new_run("r5"), &[task("a")])
            .await
            .expect("run");
        let ti = store.task_instances("r5").await.expect("tis").remove(0);
        let mut batch = DecisionBatch::default();
        batch.push(ti.id, "a", 1, TaskState::Pending, TaskState::Queued);
        store.apply_decisions("r5", &batch).await.expect("queue");
        let claim = Claim {
            worker: "w",
            limit: 1,
            lease: std::time::Duration::from_secs(30),
            pools: &Default::default(),
            queues: &[],
            run_id: None,
        };
        let claimed = store.claim(&claim).await.expect("claim").remove(0);
        assert_eq!(store.hand_back(&[claimed.id]).await.expect("hand back"), 1);
        assert_eq!(
            store.hand_back(&[claimed.id]).await.expect("again"),
            0,
            "only running rows move"
        );
        let back = store.task_instances("r5").await.expect("tis").remove(0);
        assert_eq!(
            (back.state, back.try_number, back.worker),
            (TaskState::Queued, 1, None)
        );
        let again = store.claim(&claim).await.expect("claim again").remove(0);
        assert_eq!(
            again.started_at, claimed.started_at,
            "the try keeps its first start"
        );
    }

    static EMPTY_POOLS: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();

    async fn lifecycle_claim_and_fenced_completion(store: Store) {
        let mut events = store.subscribe();
        store
            .save_workflow_version("wf", "h1", "/x/wf.yaml", "tasks: {}")
            .await
            .unwrap();
        store
            .create_run(&new_run("r1"), &[task("a"), task("b")])
            .await
            .unwrap();
        assert!(
            store
                .set_run_state("r1", RunState::Queued, RunState::Running, None)
                .await
                .unwrap()
        );
        // A guarded move from the wrong state does nothing.
        assert!(
            !store
                .set_run_state("r1", RunState::Queued, RunState::Running, None)
                .await
                .unwrap()
        );

        let tis = store.task_instances("r1").await.unwrap();
        assert_eq!(tis.len(), 2);
        assert!(
            tis.iter()
                .all(|t| t.state == TaskState::Pending && t.try_number == 1)
        );

        let mut batch = DecisionBatch::default();
        batch.push(tis[0].id, "a", 1, TaskState::Pending, TaskState::Queued);
        batch.push(tis[1].id, "b", 1, TaskState::Pending, TaskState::Skipped);
        let applied = store.apply_decisions("r1", &batch).await.unwrap();
        assert_eq!(applied.len(), 2);

        let claim = Claim {
            worker: "w1",
            limit: 10,
            pools: &Default::default(),
            queues: &[],
            run_id: None,
            lease: std::time::Duration::from_secs(30),
        };
        let claimed = store.claim(&claim).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].task_id, "a");
        assert!(
            store.claim(&claim).await.unwrap().is_empty(),
            "a claimed row is not claimed twice"
        );

        let retry = TaskCompletion {
            id: claimed[0].id,
            run_id: "r1".into(),
            task_id: "a".into(),
            try_number: 1,
            state: TaskState::UpForRetry,
            exit_code: Some(3),
            error: Some("boom".into()),
            outputs: None,
            warnings: Vec::new(),
            summary: None,
            ended_at: Utc::now(),
            retry: Some(NewTaskInstance {
                try_number: 2,
                queue: "default".into(),
                not_before: Some(Utc::now()),
                ..task("a")
            }),
        };
        assert_eq!(
            store
                .complete(&[], std::slice::from_ref(&retry))
                .await
                .unwrap(),
            vec![claimed[0].id]
        );
        // The same try completing again (a late, fenced-off attempt) is rejected.
        let late = TaskCompletion {
            state: TaskState::Success,
            retry: None,
            ..retry.clone()
        };
        assert!(store.complete(&[], &[late]).await.unwrap().is_empty());

        let due = store.next_due().await.unwrap();
        assert!(due.is_some());
        let queued = store
            .queue_due(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1.try_number, 2);
        let claimed = store.claim(&claim).await.unwrap();
        assert_eq!(
            (claimed[0].task_id.as_str(), claimed[0].try_number),
            ("a", 2)
        );
        let mut outputs = serde_json::Map::new();
        outputs.insert("x".into(), serde_json::json!(1));
        let done = TaskCompletion {
            id: claimed[0].id,
            try_number: 2,
            state: TaskState::Success,
            exit_code: Some(0),
            error: None,
            outputs: Some(outputs),
            warnings: vec!["3 rows skipped".into(), "cost 0.61 > 0.50".into()],
            summary: Some("scored 200 samples".into()),
            retry: None,
            ..retry
        };
        store.complete(&[], &[done]).await.unwrap();
        // A try's outcome is stored with it: warnings in order, the summary; none for others.
        let tries = store.task_instances("r1").await.unwrap();
        let second = tries
            .iter()
            .find(|t| t.task_id == "a" && t.try_number == 2)
            .expect("try 2");
        assert_eq!(second.warnings, ["3 rows skipped", "cost 0.61 > 0.50"]);
        assert_eq!(second.summary.as_deref(), Some("scored 200 samples"));
        let first = tries
            .iter()
            .find(|t| t.task_id == "a" && t.try_number == 1)
            .expect("try 1");
        assert!(
            first.warnings.is_empty() && first.summary.is_none(),
            "{first:?}"
        );

        let results = store.task_results("r1").await.unwrap();
        assert_eq!(results["a"]["outputs"]["x"], 1);
        assert_eq!(results["a"]["state"], "success");
        assert_eq!(results["b"]["state"], "skipped");

        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let StoreEvent::TaskStates { changes, .. } = event {
                seen.extend(
                    changes
                        .iter()
                        .map(|c| (c.task_id.clone(), c.try_number, c.state)),
                );
            }
        }
        assert!(seen.contains(&("a".into(), 2, TaskState::Scheduled)));
        assert!(seen.contains(&("a".into(), 2, TaskState::Success)));
    }

    async fn cancel_before_start(store: Store) {
        store
            .create_run(&new_run("r2"), &[task("a"), task("b")])
            .await
            .unwrap();
        assert!(store.cancel_run("r2", "stop").await.unwrap());
        let run = store.run("r2").await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Cancelled);
        assert_eq!(run.error.as_deref(), Some("stop"));
        assert!(
            store
                .task_instances("r2")
                .await
                .unwrap()
                .iter()
                .all(|t| t.state == TaskState::Cancelled)
        );
        assert!(
            !store.cancel_run("r2", "again").await.unwrap(),
            "an ended run is not cancelled twice"
        );
    }

    async fn priority_then_age(store: Store) {
        let tasks = [
            NewTaskInstance {
                priority: 1,
                ..task("low")
            },
            NewTaskInstance {
                priority: 5,
                ..task("high")
            },
            NewTaskInstance {
                priority: 1,
                ..task("low2")
            },
        ];
        store.create_run(&new_run("r3"), &tasks).await.unwrap();
        let mut batch = DecisionBatch::default();
        for ti in store.task_instances("r3").await.unwrap() {
            batch.push(ti.id, &ti.task_id, 1, TaskState::Pending, TaskState::Queued);
        }
        store.apply_decisions("r3", &batch).await.unwrap();
        let claim = Claim {
            worker: "w",
            limit: 1,
            pools: &Default::default(),
            queues: &[],
            run_id: None,
            lease: std::time::Duration::from_secs(5),
        };
        let order: Vec<String> = [
            store.claim(&claim).await.unwrap(),
            store.claim(&claim).await.unwrap(),
            store.claim(&claim).await.unwrap(),
        ]
        .into_iter()
        .flatten()
        .map(|c| c.task_id)
        .collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    async fn logs_in_order(store: Store) {
        let line = |n: usize| NewLogLine {
            run_id: "r".into(),
            task_id: if n.is_multiple_of(2) {
                "a".into()
            } else {
                "b".into()
            },
            try_number: 1,
            stream: "stdout",
            line: format!("line {n}"),
            logged_at: Utc::now(),
        };
        let lines: Vec<NewLogLine> = (0..1200).map(line).collect();
        store.append_logs(&lines).await.unwrap();
        let a = store.logs("r", Some("a")).await.unwrap();
        assert_eq!(a.len(), 600);
        assert_eq!(a[1].line, "line 2");
        assert_eq!(store.logs("r", None).await.unwrap().len(), 1200);
    }
}

#[cfg(test)]
mod pool_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lifecycle::TaskState;

    on_every_backend! {
        claims_respect_pool_slots_and_leave_other_work_claimable => pool_slots,
    }

    async fn pool_slots(store: Store) {
        let now = chrono::Utc::now();
        let run = NewRun {
            id: "r".into(),
            workflow_id: "wf".into(),
            version_hash: "h".into(),
            trigger: "manual".into(),
            triggered_by: None,
            params: serde_json::Map::new(),
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
        };
        let task = |id: &str, pool: Option<&str>, priority: i32| NewTaskInstance {
            task_id: id.into(),
            try_number: 1,
            priority,
            pool: pool.map(str::to_owned),
            queue: "default".into(),
            not_before: None,
        };
        let tasks = [
            task("gpu1", Some("gpu"), 9),
            task("gpu2", Some("gpu"), 9),
            task("gpu3", Some("gpu"), 9),
            task("cpu", None, 1),
            task("other_pool", Some("unlisted"), 1),
        ];
        store.create_run(&run, &tasks).await.expect("run");
        let mut batch = DecisionBatch::default();
        for ti in store.task_instances("r").await.expect("tis") {
            batch.push(ti.id, &ti.task_id, 1, TaskState::Pending, TaskState::Queued);
        }
        store.apply_decisions("r", &batch).await.expect("queue");
        let pools = BTreeMap::from([("gpu".to_owned(), 2)]);
        let claim = Claim {
            worker: "w",
            limit: 10,
            lease: Duration::from_secs(30),
            pools: &pools,
            queues: &[],
            run_id: None,
        };
        let first: Vec<String> = store
            .claim(&claim)
            .await
            .expect("claim")
            .into_iter()
            .map(|c| c.task_id)
            .collect();
        assert_eq!(
            first.iter().filter(|t| t.starts_with("gpu")).count(),
            2,
            "{first:?}"
        );
        assert!(first.contains(&"cpu".to_owned()) && first.contains(&"other_pool".to_owned()));
        assert!(
            store.claim(&claim).await.expect("claim").is_empty(),
            "the pool is full"
        );
    }
}
