//! Store events between processes. In one process, `Store::publish` hands each committed change
//! to the subscribers directly. On PostgreSQL other processes (workers, a second `serve`) share
//! the database, so every event is also sent with `pg_notify` after its commit, and a listener
//! connection turns the other processes' notifications back into local events. Task state
//! changes, most of the traffic, go on a channel of their own: a `sluice worker` needs only the
//! control events (new work, cancellations, ended runs), so it neither receives nor decodes
//! the rest. A lost notification is not lost work: subscribers also hear `StoreEvent::Missed`
//! whenever a listener had to reconnect, and re-read what they care about.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::ConnectionTrait;
use sea_orm::sqlx::postgres::PgListener;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Interest, Store, StoreEvent, TaskStateChange};
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

/// The two notification channels of a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Channel {
    /// Everything but task state changes.
    Control,
    /// `StoreEvent::TaskStates` only.
    TaskStates,
}

impl Channel {
    fn of(event: &StoreEvent) -> Channel {
        match event {
            StoreEvent::TaskStates { .. } => Channel::TaskStates,
            _ => Channel::Control,
        }
    }
}

/// The name of a schema's notification channel: schemas are separate Sluice installations
/// (the tests use one each), but notifications are per database.
pub(super) fn channel_name(schema: &str, channel: Channel) -> String {
    let mut name = String::from(match channel {
        Channel::Control => "sluice_",
        Channel::TaskStates => "sluice_tasks_",
    });
    name.extend(
        schema
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    // Identifiers are at most 63 bytes.
    name.truncate(63);
    name
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
    let Some(cluster) = store.cluster.clone() else {
        return;
    };
    let encoded = |event: &StoreEvent| {
        let channel = cluster.channel(Channel::of(event));
        encode(&cluster.origin, event)
            .into_iter()
            .map(move |payload| (channel, payload))
    };
    while let Some(first) = events.recv().await {
        let mut payloads: Vec<(&str, String)> = encoded(&first).collect();
        while payloads.len() < MAX_PER_STATEMENT {
            match events.try_recv() {
                Ok(event) => payloads.extend(encoded(&event)),
                Err(_) => break,
            }
        }
        for group in payloads.chunks(MAX_PER_STATEMENT) {
            let calls = vec!["pg_notify(?, ?)"; group.len()].join(", ");
            let mut values = Vec::with_capacity(group.len() * 2);
            for (channel, payload) in group {
                values.push(sea_orm::Value::from(*channel));
                values.push(sea_orm::Value::from(payload.as_str()));
            }
            // One statement, one round trip: a transaction that only notifies writes no WAL,
            // so its commit does not wait for the disk.
            let notify = store.stmt(&format!("SELECT {calls}"), values);
            if let Err(error) = store.db().execute_raw(notify).await {
                warn!(%error, "Could not notify other processes of a change; they will find it by polling.");
            }
        }
    }
}

/// Listens on `channel` for other processes' notifications and publishes them here while
/// anyone in this process subscribes to them; a later subscriber starts it again.
async fn listen(store: Store, channel: Channel) {
    let Some(cluster) = store.cluster.clone() else {
        return;
    };
    loop {
        listen_while_subscribed(&store, &cluster, channel).await;
        cluster.listening(channel).store(false, Ordering::SeqCst);
        // A subscriber that came while this listener was ending found it still marked as
        // listening and started none: carry on for it.
        if !store.has_subscribers(channel)
            || cluster.listening(channel).swap(true, Ordering::SeqCst)
        {
            return;
        }
    }
}

/// Publishes the notifications of `channel` locally, reconnecting when the connection drops
/// (and then publishing `Missed`), until no subscriber for that channel is left.
async fn listen_while_subscribed(store: &Store, cluster: &Cluster, channel: Channel) {
    loop {
        let mut listener = match PgListener::connect(&cluster.url).await {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, "Cannot listen for other processes' changes; retrying.");
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(cluster.channel(channel)).await {
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
            if !store.has_subscribers(channel) {
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
    /// The schema's notification channels.
    control_channel: String,
    task_channel: String,
    /// The connection URL, for the listeners' own connections.
    pub url: String,
    /// Sends events to `forward`; started with the first event.
    pub outbox: std::sync::OnceLock<mpsc::UnboundedSender<StoreEvent>>,
    /// Whether `listen` was started for each channel (with its first subscriber).
    listening_control: AtomicBool,
    listening_tasks: AtomicBool,
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
            control_channel: channel_name(&schema, Channel::Control),
            task_channel: channel_name(&schema, Channel::TaskStates),
            url: url.to_owned(),
            outbox: std::sync::OnceLock::new(),
            listening_control: AtomicBool::new(false),
            listening_tasks: AtomicBool::new(false),
        })
    }

    pub fn channel(&self, channel: Channel) -> &str {
        match channel {
            Channel::Control => &self.control_channel,
            Channel::TaskStates => &self.task_channel,
        }
    }

    fn listening(&self, channel: Channel) -> &AtomicBool {
        match channel {
            Channel::Control => &self.listening_control,
            Channel::TaskStates => &self.listening_tasks,
        }
    }

    /// Starts listening on the channels a new subscriber with `interest` needs, unless this
    /// process listens on them already.
    pub fn start_listening(&self, store: &Store, interest: Interest) {
        let mut channels = vec![Channel::Control];
        if interest == Interest::All {
            channels.push(Channel::TaskStates);
        }
        for channel in channels {
            if !self.listening(channel).swap(true, Ordering::SeqCst) {
                tokio::spawn(listen(store.clone(), channel));
            }
        }
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
        assert_eq!(channel_name("public", Channel::Control), "sluice_public");
        assert_eq!(
            channel_name("my-schema", Channel::Control),
            "sluice_my_schema"
        );
        assert_eq!(
            channel_name("public", Channel::TaskStates),
            "sluice_tasks_public"
        );
        assert!(channel_name(&"x".repeat(100), Channel::TaskStates).len() <= 63);
    }

    /// Creates run `run_id` with one task and queues the task: something on each channel
    /// (the run's state, the task's state, new work).
    async fn queue_one_task(store: &Store, run_id: &str) {
        use crate::store::DecisionBatch;
        use crate::store::conformance::{new_run, task};
        store
            .save_workflow_version("wf", "h1", "/wf.yaml", "tasks: {}")
            .await
            .expect("version");
        store
            .create_run(&new_run(run_id), &[task("t")])
            .await
            .expect("run");
        let row = store.task_states(run_id).await.expect("rows")[0].id;
        let mut batch = DecisionBatch::default();
        batch.push(row, "t", 1, TaskState::Pending, TaskState::Queued);
        store.apply_decisions(run_id, &batch).await.expect("queued");
    }

    /// Waits until `listeners` listeners announced themselves with `Missed`.
    async fn wait_listening(events: &mut mpsc::UnboundedReceiver<StoreEvent>, listeners: usize) {
        for _ in 0..listeners {
            let first = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("listening in time");
            assert!(matches!(first, Some(StoreEvent::Missed)), "{first:?}");
        }
    }

    /// Receives until the run's state and its task's state were both heard.
    async fn hear_run_and_task(events: &mut mpsc::UnboundedReceiver<StoreEvent>, run: &str) {
        let (mut run_heard, mut task_heard) = (false, false);
        while !(run_heard && task_heard) {
            let heard = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("notified in time");
            match heard {
                Some(StoreEvent::RunState { run_id, .. }) => {
                    assert_eq!(run_id, run);
                    run_heard = true;
                }
                Some(StoreEvent::TaskStates { run_id, changes }) => {
                    assert_eq!(run_id, run);
                    assert_eq!(changes[0].state, TaskState::Queued);
                    task_heard = true;
                }
                Some(StoreEvent::WorkQueued) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn another_process_hears_committed_changes() {
        use crate::store::StoreConfig;
        use crate::store::conformance::backends;
        for backend in backends().await {
            let Some(cluster) = backend.store.cluster.clone() else {
                backend.finish().await;
                continue;
            };
            let here = backend.store.clone();
            let config = StoreConfig::new(cluster.url.clone());
            let there = Store::open(&config)
                .await
                .expect("a second process's store");
            let worker = Store::open(&config)
                .await
                .expect("a worker process's store");
            let mut heard_there = there.subscribe();
            let mut heard_by_worker = worker.subscribe_to(Interest::Control);
            let mut heard_here = here.subscribe();
            // A subscriber of everything makes its process listen on both channels; a
            // worker's, on the control channel only.
            wait_listening(&mut heard_there, 2).await;
            wait_listening(&mut heard_by_worker, 1).await;
            queue_one_task(&here, "r-notify").await;
            // The two channels are heard apart, so their events may interleave either way.
            hear_run_and_task(&mut heard_there, "r-notify").await;
            // The worker hears the run and the new work, never the task states.
            let mut worker_saw = Vec::new();
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(500), heard_by_worker.recv()).await
            {
                worker_saw.push(format!("{event:?}"));
            }
            assert!(
                worker_saw.iter().any(|e| e.contains("WorkQueued")),
                "{worker_saw:?}"
            );
            assert!(
                worker_saw.iter().any(|e| e.contains("RunState")),
                "{worker_saw:?}"
            );
            assert!(
                !worker_saw.iter().any(|e| e.contains("TaskStates")),
                "{worker_saw:?}"
            );
            // Here, each event arrives once: directly, not again as an echo.
            let mut own = Vec::new();
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(300), heard_here.recv()).await
            {
                own.push(format!("{event:?}"));
            }
            assert_eq!(
                own.iter().filter(|e| e.contains("r-notify")).count(),
                2,
                "{own:?}"
            );
            backend.finish().await;
        }
    }

    /// Listening connections of this schema's channels, as PostgreSQL sees them.
    async fn listeners(store: &Store, cluster: &Cluster) -> i64 {
        let row = store
            .db()
            .query_one_raw(store.stmt(
                "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE query IN (?, ?)",
                vec![
                    format!("LISTEN \"{}\"", cluster.channel(Channel::Control)).into(),
                    format!("LISTEN \"{}\"", cluster.channel(Channel::TaskStates)).into(),
                ],
            ))
            .await
            .expect("pg_stat_activity")
            .expect("a count");
        row.try_get("", "n").expect("n")
    }

    #[tokio::test]
    async fn listening_ends_with_the_last_subscriber_and_starts_again_with_the_next() {
        use crate::store::StoreConfig;
        use crate::store::conformance::backends;
        for backend in backends().await {
            let Some(cluster) = backend.store.cluster.clone() else {
                backend.finish().await;
                continue;
            };
            let here = backend.store.clone();
            let there = Store::open(&StoreConfig::new(cluster.url.clone()))
                .await
                .expect("a second process's store");
            let mut first = there.subscribe();
            wait_listening(&mut first, 2).await;
            drop(first);
            // The listeners notice at their next notification that nobody listens any more.
            queue_one_task(&here, "r-unheard").await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while listeners(&here, &cluster).await > 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the listeners never stopped"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut second = there.subscribe();
            wait_listening(&mut second, 2).await;
            queue_one_task(&here, "r-heard").await;
            hear_run_and_task(&mut second, "r-heard").await;
            drop(there);
            backend.finish().await;
        }
    }

    #[test]
    fn unreadable_payloads_are_ignored() {
        assert!(decode("me", "not json").is_none());
        assert!(decode("me", r#"{"o":"x","k":"run","run":"r","state":"exploded"}"#).is_none());
    }
}
