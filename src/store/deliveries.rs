//! GitHub webhook deliveries: each `X-GitHub-Delivery` id is recorded once, together with the
//! runs it started, in one transaction. The table's unique key decides which of two
//! concurrent copies of a delivery counts, so a redelivery never starts a run twice.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait, Value};

use super::listing::BadCursor;
use super::runs::{RunOrigin, insert_run};
use super::tasks::NewTaskInstance;
use super::{NewRun, Result, Store, StoreError, StoreEvent, get};
use crate::lifecycle::RunState;

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// It started at least one run.
    Started,
    /// It was authentic and well formed but started nothing (no trigger matched, a ping, …).
    Ignored,
    /// It was authentic but unusable (a body that is not JSON, …).
    Rejected,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Started => "started",
            DeliveryOutcome::Ignored => "ignored",
            DeliveryOutcome::Rejected => "rejected",
        }
    }

    fn parse(text: &str) -> Result<DeliveryOutcome> {
        match text {
            "started" => Ok(DeliveryOutcome::Started),
            "ignored" => Ok(DeliveryOutcome::Ignored),
            "rejected" => Ok(DeliveryOutcome::Rejected),
            other => Err(StoreError::Corrupt(format!(
                "`{other}` is not a delivery outcome"
            ))),
        }
    }
}

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub repository: Option<String>,
    /// The branch and the tag the event concerns, if any (see `github::EventFacts`).
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The commit the event concerns, if any.
    pub sha: Option<String>,
    pub sender: Option<String>,
    pub outcome: DeliveryOutcome,
    /// Why nothing started (or why some matching workflows did not start).
    pub reason: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A run a delivery starts, ready to insert (see `catalog::launch::prepare`).
#[derive(Debug, Clone)]
pub struct DeliveryRun {
    pub run: NewRun,
    pub tasks: Vec<NewTaskInstance>,
    pub origin: RunOrigin,
}

/// A delivery as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub sha: Option<String>,
    pub sender: Option<String>,
    pub outcome: DeliveryOutcome,
    pub reason: Option<String>,
    /// The runs it started, in the order they were created.
    pub run_ids: Vec<String>,
    pub received_at: DateTime<Utc>,
}

/// What `record_delivery` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The delivery is new: it is recorded and its runs are created.
    New(DeliveryRecord),
    /// The id was recorded before: nothing was created; this is the first record.
    Known(DeliveryRecord),
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "id, event, action, repository, branch, tag, sha, sender, outcome, reason, \
                       run_ids, received_at";

fn from_row(row: &QueryResult) -> Result<DeliveryRecord> {
    let run_ids: String = get(row, "run_ids")?;
    Ok(DeliveryRecord {
        id: get(row, "id")?,
        event: get(row, "event")?,
        action: get(row, "action")?,
        repository: get(row, "repository")?,
        branch: get(row, "branch")?,
        tag: get(row, "tag")?,
        sha: get(row, "sha")?,
        sender: get(row, "sender")?,
        outcome: DeliveryOutcome::parse(&get::<String>(row, "outcome")?)?,
        reason: get(row, "reason")?,
        run_ids: serde_json::from_str(&run_ids)?,
        received_at: get(row, "received_at")?,
    })
}

/// A position in the (received_at, id) descending order, handed out as opaque hex.
fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    hex::encode(format!("{}|{id}", at.to_rfc3339()))
}

fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, String), BadCursor> {
    let bad = || BadCursor(text.chars().take(80).collect());
    let raw = String::from_utf8(hex::decode(text).map_err(|_| bad())?).map_err(|_| bad())?;
    let (at, id) = raw.split_once('|').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((at.with_timezone(&Utc), id.to_owned()))
}

impl Store {
    /// Records a delivery and creates its runs in one transaction, unless its id is already
    /// recorded: then nothing is written and the first record is returned.
    pub async fn record_delivery(
        &self,
        delivery: &NewDelivery,
        runs: &[DeliveryRun],
    ) -> Result<Recorded> {
        let run_ids: Vec<&str> = runs.iter().map(|r| r.run.id.as_str()).collect();
        let txn = self.db().begin().await?;
        // The unique key decides: of concurrent copies, exactly one inserts; the others wait
        // for it to commit (PostgreSQL) or run after it (SQLite) and insert nothing.
        let inserted = txn
            .execute_raw(self.stmt(
                &format!(
                    "INSERT INTO github_deliveries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                vec![
                    delivery.id.as_str().into(),
                    delivery.event.as_str().into(),
                    delivery.action.clone().into(),
                    delivery.repository.clone().into(),
                    delivery.branch.clone().into(),
                    delivery.tag.clone().into(),
                    delivery.sha.clone().into(),
                    delivery.sender.clone().into(),
                    delivery.outcome.as_str().into(),
                    delivery.reason.clone().into(),
                    serde_json::to_string(&run_ids)?.into(),
                    delivery.received_at.into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1;
        if !inserted {
            txn.rollback().await?;
            let known = self.delivery(&delivery.id).await?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "delivery `{}` conflicted but cannot be read",
                    delivery.id
                ))
            })?;
            return Ok(Recorded::Known(known));
        }
        let now = Utc::now();
        for r in runs {
            insert_run(self, &txn, &r.run, Some(&r.origin), &r.tasks, now).await?;
        }
        txn.commit().await?;
        for id in &run_ids {
            self.publish(StoreEvent::RunState {
                run_id: (*id).to_owned(),
                state: RunState::Queued,
            });
        }
        Ok(Recorded::New(DeliveryRecord {
            id: delivery.id.clone(),
            event: delivery.event.clone(),
            action: delivery.action.clone(),
            repository: delivery.repository.clone(),
            branch: delivery.branch.clone(),
            tag: delivery.tag.clone(),
            sha: delivery.sha.clone(),
            sender: delivery.sender.clone(),
            outcome: delivery.outcome,
            reason: delivery.reason.clone(),
            run_ids: run_ids.iter().map(|id| (*id).to_owned()).collect(),
            received_at: delivery.received_at,
        }))
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRecord>> {
        let row = self
            .db()
            .query_one_raw(self.stmt(
                &format!("SELECT {COLUMNS} FROM github_deliveries WHERE id = ?"),
                vec![id.into()],
            ))
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// One page of deliveries, newest first; `cursor` is the previous page's `next_cursor`.
    pub async fn list_deliveries(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<std::result::Result<DeliveryPage, BadCursor>> {
        let cursor = match cursor.map(decode_cursor).transpose() {
            Ok(cursor) => cursor,
            Err(bad) => return Ok(Err(bad)),
        };
        let mut values: Vec<Value> = Vec::new();
        let mut where_sql = "";
        if let Some((at, id)) = &cursor {
            where_sql = "WHERE (received_at < ? OR (received_at = ? AND id < ?))";
            values.extend([Value::from(*at), (*at).into(), id.as_str().into()]);
        }
        // One row more than asked tells whether another page follows.
        values.push(
            i64::try_from(limit.saturating_add(1))
                .unwrap_or(i64::MAX)
                .into(),
        );
        let rows = self
            .db()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT {COLUMNS} FROM github_deliveries {where_sql} \
                     ORDER BY received_at DESC, id DESC LIMIT ?"
                ),
                values,
            ))
            .await?;
        let mut deliveries = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if deliveries.len() > limit {
            deliveries.truncate(limit);
            deliveries
                .last()
                .map(|last| encode_cursor(last.received_at, &last.id))
        } else {
            None
        };
        Ok(Ok(DeliveryPage {
            deliveries,
            next_cursor,
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    on_every_backend! {
        a_delivery_is_recorded_once_with_its_runs => recorded_once,
        concurrent_copies_of_a_delivery_create_its_runs_once => concurrent_copies,
        deliveries_are_listed_newest_first_in_pages => listed_in_pages,
    }

    fn delivery(id: &str, at: DateTime<Utc>) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            event: "push".into(),
            action: None,
            repository: Some("acme/evals".into()),
            branch: Some("main".into()),
            tag: None,
            sha: Some("9049f1265b7d61be4a8904a9a27120d2064dab3b".into()),
            sender: Some("octocat".into()),
            outcome: DeliveryOutcome::Started,
            reason: None,
            received_at: at,
        }
    }

    fn run(id: &str) -> DeliveryRun {
        let now = Utc::now();
        DeliveryRun {
            run: NewRun {
                id: id.into(),
                workflow_id: "wf".into(),
                version_hash: "h".into(),
                trigger: "github".into(),
                triggered_by: Some("github:d".into()),
                params: serde_json::Map::new(),
                logical_date: now,
                data_interval_start: now,
                data_interval_end: now,
            },
            tasks: vec![NewTaskInstance {
                task_id: "a".into(),
                try_number: 1,
                priority: 0,
                pool: None,
                queue: "default".into(),
                not_before: None,
            }],
            origin: RunOrigin {
                details: json!({"event": "push", "delivery": "d", "sha": "abc"}),
                event: json!({"ref": "refs/heads/main"}),
            },
        }
    }

    async fn recorded_once(store: Store) {
        let mut events = store.subscribe();
        let first = store
            .record_delivery(&delivery("d1", Utc::now()), &[run("r1"), run("r2")])
            .await
            .expect("record");
        let record = match first {
            Recorded::New(record) => record,
            known => panic!("the first copy is new: {known:?}"),
        };
        assert_eq!(record.run_ids, ["r1", "r2"]);
        let again = store
            .record_delivery(&delivery("d1", Utc::now()), &[run("r3")])
            .await
            .expect("record again");
        let known = match again {
            Recorded::Known(known) => known,
            new => panic!("the second copy is known: {new:?}"),
        };
        assert_eq!(known.run_ids, ["r1", "r2"]);
        assert_eq!(known.outcome, DeliveryOutcome::Started);
        assert!(
            store.run("r3").await.expect("read").is_none(),
            "nothing new is created"
        );
        let r1 = store.run("r1").await.expect("read").expect("r1 exists");
        assert_eq!(r1.trigger, "github");
        assert_eq!(
            r1.trigger_details,
            Some(json!({"event": "push", "delivery": "d", "sha": "abc"}))
        );
        assert_eq!(r1.event, json!({"ref": "refs/heads/main"}));
        assert_eq!(store.task_instances("r1").await.expect("tis").len(), 1);
        let mut queued = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let StoreEvent::RunState {
                run_id,
                state: RunState::Queued,
            } = event
            {
                queued.push(run_id);
            }
        }
        assert_eq!(queued, ["r1", "r2"]);
    }

    async fn concurrent_copies(store: Store) {
        let mut tasks = Vec::new();
        for copy in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record_delivery(&delivery("same", Utc::now()), &[run(&format!("run{copy}"))])
                    .await
                    .expect("record")
            }));
        }
        let mut new = Vec::new();
        for task in tasks {
            if let Recorded::New(record) = task.await.expect("join") {
                new.push(record);
            }
        }
        assert_eq!(new.len(), 1, "exactly one copy is new");
        let created = store
            .list_runs(&Default::default(), 100, None)
            .await
            .expect("list")
            .expect("page");
        assert_eq!(created.runs.len(), 1, "one run, created once");
        assert_eq!(created.runs[0].id, new[0].run_ids[0]);
    }

    async fn listed_in_pages(store: Store) {
        let start = Utc::now();
        for i in 0..5 {
            let mut d = delivery(&format!("d{i}"), start + chrono::Duration::seconds(i));
            d.outcome = DeliveryOutcome::Ignored;
            d.reason = Some(format!("reason {i}"));
            store.record_delivery(&d, &[]).await.expect("record");
        }
        let first = store
            .list_deliveries(2, None)
            .await
            .expect("list")
            .expect("page");
        let ids: Vec<&str> = first.deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d4", "d3"]);
        assert_eq!(first.deliveries[0].reason.as_deref(), Some("reason 4"));
        assert_eq!(first.deliveries[0].branch.as_deref(), Some("main"));
        assert_eq!(
            first.deliveries[0].sha.as_deref(),
            Some("9049f1265b7d61be4a8904a9a27120d2064dab3b")
        );
        let cursor = first.next_cursor.expect("more pages");
        let second = store
            .list_deliveries(10, Some(&cursor))
            .await
            .expect("list")
            .expect("page");
        let ids: Vec<&str> = second.deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["d2", "d1", "d0"]);
        assert_eq!(second.next_cursor, None);
        assert!(
            store
                .list_deliveries(2, Some("zz"))
                .await
                .expect("list")
                .is_err()
        );
    }
}
