//! Store events between processes. In one process, `Store::publish` hands each committed change
//! to the subscribers directly. On PostgreSQL other processes (workers, a second `serve`) share
//! the database, so every event is also sent with `pg_notify` after its commit, and a listener
//! connection turns the other processes' notifications back into local events. A lost
//! notification is not lost work: subscribers also hear `StoreEvent::Missed` whenever the
//! listener had to reconnect, and re-read what they care about.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::ConnectionTrait;
use sea_orm::sqlx::postgres::PgListener;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Store, StoreEvent, TaskStateChange};
use crate::lifecycle::{RunState, TaskState};

/// PostgreSQL refuses payloads of 8,000 bytes or more; stay well below.
const MAX_PAYLOAD: usize = 7_000;

/// Events sent in one `SELECT pg_notify(…), …` statement at most.
const MAX_PER_STATEMENT: usize = 64;

/// How long the listener waits before reconnecting after an error.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// One notification: the sending process and what happened.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The sending store's origin id, so a process ignores its own echoes.
    o: String,
    #[serde(flatten)]
    event: WireEvent,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum WireEvent {
    /// `(task_id, try_number, state)` per change.
    Tasks {
        run: String,
        changes: Vec<(String, u32, String)>,
    },
    Run {
        run: String,
        state: String,
    },
    Work,
    Cancel {
        run: String,
    },
    Paused {
        workflow: String,
        paused: bool,
    },
}

/// The notification channel of a database schema: schemas are separate Sluice installations
/// (the tests use one each), but notifications are per database.
pub(super) fn channel_for(schema: &str) -> String {
    let mut channel = String::from("sluice_");
    channel.extend(
        schema
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    // Identifiers are at most 63 bytes.
    channel.truncate(63);
    channel
}

/// The payloads that carry `event`: one, or several when a batch of task changes is too big
/// for one notification; none for `Missed`, which only means something where it happens.
fn encode(origin: &str, event: &StoreEvent) -> Vec<String> {
    let wire = |event: WireEvent| {
        serde_json::to_string(&Wire {
            o: origin.to_owned(),
            event,
        })
        .unwrap_or_default()
    };
    match event {
        StoreEvent::TaskStates { run_id, changes } => {
            let mut payloads = Vec::new();
            let mut batch = Vec::new();
            let mut size = 0;
            for change in changes.iter() {
                let entry = (
                    change.task_id.clone(),
                    change.try_number,
                    change.state.as_str().to_owned(),
                );
                // Each entry costs its id plus a little JSON; the state names are short.
                let cost = entry.0.len() + 32;
                if !batch.is_empty() && size + cost > MAX_PAYLOAD - run_id.len() - 64 {
                    payloads.push(wire(WireEvent::Tasks {
                        run: run_id.clone(),
                        changes: std::mem::take(&mut batch),
                    }));
                    size = 0;
                }
                size += cost;
                batch.push(entry);
            }
            if !batch.is_empty() {
                payloads.push(wire(WireEvent::Tasks {
                    run: run_id.clone(),
                    changes: batch,
                }));
            }
            payloads
        }
        StoreEvent::RunState { run_id, state } => vec![wire(WireEvent::Run {
            run: run_id.clone(),
            state: state.as_str().to_owned(),
        })],
        StoreEvent::WorkQueued => vec![wire(WireEvent::Work)],
        StoreEvent::RunCancelRequested { run_id } => vec![wire(WireEvent::Cancel {
            run: run_id.clone(),
        })],
        StoreEvent::Paused {
            workflow_id,
            paused,
        } => vec![wire(WireEvent::Paused {
            workflow: workflow_id.clone(),
            paused: *paused,
        })],
        StoreEvent::Missed => Vec::new(),
    }
}

/// The event in a notification from another process; `None` for this process's own echoes
/// and for payloads it cannot read (a newer version's events during an upgrade).
fn decode(own_origin: &str, payload: &str) -> Option<StoreEvent> {
    let wire: Wire = match serde_json::from_str(payload) {
        Ok(wire) => wire,
        Err(error) => {
            debug!(%error, "Ignored a notification this version cannot read.");
            return None;
        }
    };
    if wire.o == own_origin {
        return None;
    }
    Some(match wire.event {
        WireEvent::Tasks { run, changes } => {
            let changes: Option<Vec<TaskStateChange>> = changes
                .into_iter()
                .map(|(task_id, try_number, state)| {
                    Some(TaskStateChange {
                        task_id,
                        try_number,
                        state: state.parse::<TaskState>().ok()?,
                    })
                })
                .collect();
            StoreEvent::TaskStates {
                run_id: run,
                changes: Arc::from(changes?),
            }
        }
        WireEvent::Run { run, state } => StoreEvent::RunState {
            run_id: run,
            state: state.parse::<RunState>().ok()?,
        },
        WireEvent::Work => StoreEvent::WorkQueued,
        WireEvent::Cancel { run } => StoreEvent::RunCancelRequested { run_id: run },
        WireEvent::Paused { workflow, paused } => StoreEvent::Paused {
            workflow_id: workflow,
            paused,
        },
    })
}

/// Sends what `events` yields as notifications, as many per statement as are waiting, until
/// every sender is gone. A failed send is logged and dropped: the receivers' polling covers it.
pub(super) async fn forward(store: Store, mut events: mpsc::UnboundedReceiver<StoreEvent>) {
    let (origin, channel) = match store.cluster.as_deref() {
        Some(cluster) => (cluster.origin.clone(), cluster.channel.clone()),
        None => return,
    };
    while let Some(first) = events.recv().await {
        let mut payloads = encode(&origin, &first);
        while payloads.len() < MAX_PER_STATEMENT {
            match events.try_recv() {
                Ok(event) => payloads.extend(encode(&origin, &event)),
                Err(_) => break,
            }
        }
        for group in payloads.chunks(MAX_PER_STATEMENT) {
            let calls = vec!["pg_notify(?, ?)"; group.len()].join(", ");
            let mut values = Vec::with_capacity(group.len() * 2);
            for payload in group {
                values.push(sea_orm::Value::from(channel.as_str()));
                values.push(sea_orm::Value::from(payload.as_str()));
            }
            let sql = format!("SELECT {calls}");
            if let Err(error) = send(&store, store.stmt(&sql, values)).await {
                warn!(%error, "Could not notify other processes of a change; they will find it by polling.");
            }
        }
    }
}

/// Sends notifications in a transaction of their own that does not wait for its commit to
/// reach the disk: a notification is delivered at commit either way, and the change it tells
/// of was made durable by its own commit already. Waiting would add a disk flush (milliseconds)
/// to every wake-up.
async fn send(store: &Store, notify: sea_orm::Statement) -> Result<(), sea_orm::DbErr> {
    use sea_orm::TransactionTrait;
    let txn = store.db().begin().await?;
    txn.execute_unprepared("SET LOCAL synchronous_commit TO OFF")
        .await?;
    txn.execute_raw(notify).await?;
    txn.commit().await
}

/// Listens for other processes' notifications and publishes them here, reconnecting when the
/// connection drops (and then publishing `Missed`), until the store has no subscriber left.
pub(super) async fn listen(store: Store, url: String) {
    let Some(cluster) = store.cluster.clone() else {
        return;
    };
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, "Cannot listen for other processes' changes; retrying.");
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&cluster.channel).await {
            warn!(%error, "Cannot listen for other processes' changes; retrying.");
            tokio::time::sleep(RECONNECT_DELAY).await;
            continue;
        }
        // Whatever happened while not listening is unknown: tell subscribers to look.
        store.publish_local(StoreEvent::Missed);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(event) = decode(&cluster.origin, notification.payload()) {
                        store.publish_local(event);
                    }
                }
                Ok(None) => {
                    warn!("The connection for other processes' changes dropped; reconnecting.");
                    break;
                }
                Err(error) => {
                    warn!(%error, "Listening for other processes' changes failed; reconnecting.");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    break;
                }
            }
            if store.lock_subscribers().is_empty() {
                return;
            }
        }
    }
}

/// What a PostgreSQL store needs to talk to the other processes on its database.
#[derive(Debug)]
pub(super) struct Cluster {
    /// This store's id in notifications.
    pub origin: String,
    /// The schema's notification channel.
    pub channel: String,
    /// The connection URL, for the listener's own connection.
    pub url: String,
    /// Sends events to `forward`; started with the first event.
    pub outbox: std::sync::OnceLock<mpsc::UnboundedSender<StoreEvent>>,
    /// Whether `listen` was started (with the first subscriber).
    pub listening: std::sync::atomic::AtomicBool,
}

impl Cluster {
    pub async fn new<C: ConnectionTrait>(db: &C, url: &str) -> Result<Cluster, sea_orm::DbErr> {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT current_schema() AS schema",
            ))
            .await?;
        let schema: String = match row {
            Some(row) => row.try_get("", "schema")?,
            None => "public".to_owned(),
        };
        Ok(Cluster {
            origin: uuid::Uuid::new_v4().simple().to_string(),
            channel: channel_for(&schema),
            url: url.to_owned(),
            outbox: std::sync::OnceLock::new(),
            listening: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_trip_and_echoes_are_dropped() {
        let events = [
            StoreEvent::TaskStates {
                run_id: "r1".into(),
                changes: Arc::from(vec![TaskStateChange {
                    task_id: "a".into(),
                    try_number: 2,
                    state: TaskState::Success,
                }]),
            },
            StoreEvent::RunState {
                run_id: "r1".into(),
                state: RunState::Failed,
            },
            StoreEvent::WorkQueued,
            StoreEvent::RunCancelRequested {
                run_id: "r2".into(),
            },
            StoreEvent::Paused {
                workflow_id: "w".into(),
                paused: true,
            },
        ];
        for event in &events {
            let payloads = encode("me", event);
            assert_eq!(payloads.len(), 1);
            assert!(decode("me", &payloads[0]).is_none(), "own echo");
            let back = decode("other", &payloads[0]).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{event:?}"));
        }
        assert!(encode("me", &StoreEvent::Missed).is_empty());
    }

    #[test]
    fn big_batches_are_split_below_the_payload_limit() {
        let changes: Vec<TaskStateChange> = (0..2_000)
            .map(|i| TaskStateChange {
                task_id: format!("task_with_a_long_name_{i:05}"),
                try_number: 1,
                state: TaskState::Queued,
            })
            .collect();
        let event = StoreEvent::TaskStates {
            run_id: "r".into(),
            changes: Arc::from(changes),
        };
        let payloads = encode("me", &event);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < 8_000), "under the limit");
        let total: usize = payloads
            .iter()
            .map(|p| match decode("other", p) {
                Some(StoreEvent::TaskStates { changes, .. }) => changes.len(),
                other => panic!("unexpected {other:?}"),
            })
            .sum();
        assert_eq!(total, 2_000);
    }

    #[test]
    fn channels_are_identifiers_per_schema() {
        assert_eq!(channel_for("public"), "sluice_public");
        assert_eq!(channel_for("my-schema"), "sluice_my_schema");
        assert!(channel_for(&"x".repeat(100)).len() <= 63);
    }

    #[tokio::test]
    async fn another_process_hears_committed_changes() {
        use crate::store::conformance::backends;
        use crate::store::{NewRun, StoreConfig};
        for backend in backends().await {
            let Some(cluster) = backend.store.cluster.clone() else {
                backend.finish().await;
                continue;
            };
            let here = backend.store.clone();
            let there = Store::open(&StoreConfig::new(cluster.url.clone()))
                .await
                .expect("a second process's store");
            let mut heard_there = there.subscribe();
            let mut heard_here = here.subscribe();
            // The listener announces itself with `Missed` once it listens.
            let first = tokio::time::timeout(Duration::from_secs(10), heard_there.recv())
                .await
                .expect("listening in time");
            assert!(matches!(first, Some(StoreEvent::Missed)), "{first:?}");
            here.save_workflow_version("wf", "h", "/wf.yaml", "tasks: {}")
                .await
                .expect("version");
            let now = chrono::Utc::now();
            here.create_run(
                &NewRun {
                    id: "r-notify".into(),
                    workflow_id: "wf".into(),
                    version_hash: "h".into(),
                    trigger: "manual".into(),
                    triggered_by: None,
                    params: Default::default(),
                    logical_date: now,
                    data_interval_start: now,
                    data_interval_end: now,
                },
                &[],
            )
            .await
            .expect("run");
            let heard = tokio::time::timeout(Duration::from_secs(10), heard_there.recv())
                .await
                .expect("notified in time");
            assert!(
                matches!(&heard, Some(StoreEvent::RunState { run_id, state: RunState::Queued }) if run_id == "r-notify"),
                "{heard:?}"
            );
            // Here, the event arrives once: directly, not again as an echo.
            let mut own = Vec::new();
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(300), heard_here.recv()).await
            {
                own.push(format!("{event:?}"));
            }
            assert_eq!(
                own.iter().filter(|e| e.contains("r-notify")).count(),
                1,
                "{own:?}"
            );
            backend.finish().await;
        }
    }

    #[test]
    fn unreadable_payloads_are_ignored() {
        assert!(decode("me", "not json").is_none());
        assert!(decode("me", r#"{"o":"x","k":"run","run":"r","state":"exploded"}"#).is_none());
    }
}
