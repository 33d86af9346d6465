//! Server-sent events that keep pages live: a run page hears its tasks' states, the run's
//! state, times and error, and new log lines; a workflow page hears the states of its recent
//! runs and their tasks (the page fetches the runs section again when a run it lacks appears).
//!
//! Each stream re-reads the database when the store announces a change (or every second, for
//! changes made by other processes that this one does not hear of) and sends only what
//! differs from what it sent before, so a missed event costs a little delay, never a wrong page.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::warn;

use super::pages::{GRID_PAGE, find_workflow, symbol};
use super::{Result, WebState, auth::Session, human_duration, iso};
use crate::lifecycle::{RunState, TaskState};
use crate::store::{RunFilter, StoreError, StoreEvent};

/// How long a stream waits for a store event before looking at the database anyway.
const POLL: Duration = Duration::from_secs(1);
/// Log lines read per query.
const LOG_BATCH: usize = 500;

fn event(name: &str, data: serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// Waits until an event arrives for which `relevant` holds, or the poll interval passes.
async fn wait(events: &mut UnboundedReceiver<StoreEvent>, relevant: impl Fn(&StoreEvent) -> bool) {
    let deadline = tokio::time::sleep(POLL);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            received = events.recv() => match received {
                Some(e) if relevant(&e) => return,
                Some(_) => {}
                None => {
                    deadline.await;
                    return;
                }
            },
        }
    }
}

fn sse<S>(batches: S) -> Response
where
    S: futures_util::Stream<Item = Vec<Event>> + Send + 'static,
{
    let stream = batches.flat_map(|batch| {
        futures_util::stream::iter(batch.into_iter().map(Ok::<Event, Infallible>))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct RunEventsQuery {
    /// The id of the last log line the page already shows.
    #[serde(default)]
    after: i64,
}

/// What a run page's stream has sent so far.
struct RunFeed {
    state: WebState,
    events: UnboundedReceiver<StoreEvent>,
    run_id: String,
    after: i64,
    tasks: HashMap<String, (u32, TaskState)>,
    run: Option<RunFacts>,
    finished: bool,
}

/// What the run page shows of the run itself; a `run` event is sent when it changes.
#[derive(Debug, Clone, PartialEq)]
struct RunFacts {
    state: RunState,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl RunFacts {
    /// The `run` event: the state, the times as ISO text, the duration in words and in
    /// milliseconds (up to `now` while the run goes on, so the page can keep counting).
    fn event(&self, now: DateTime<Utc>) -> Event {
        let elapsed = self
            .started_at
            .map(|start| self.ended_at.unwrap_or(now) - start);
        event(
            "run",
            json!({ "state": self.state.as_str(), "symbol": symbol(self.state.as_str()),
                    "final": self.state.is_final(),
                    "started_at": self.started_at.map(iso), "ended_at": self.ended_at.map(iso),
                    "duration": elapsed.map(human_duration),
                    "elapsed_ms": elapsed.map(|d| d.num_milliseconds().max(0)),
                    "error": self.error }),
        )
    }
}

impl RunFeed {
    /// The next events to send; `None` once the run has ended and everything was sent.
    async fn next_batch(&mut self) -> Option<Vec<Event>> {
        if self.finished {
            return None;
        }
        loop {
            match self.changes().await {
                Ok((batch, ended)) if batch.is_empty() && ended => {
                    self.finished = true;
                    return Some(vec![event("end", json!({}))]);
                }
                Ok((batch, _)) if !batch.is_empty() => return Some(batch),
                Ok(_) => {
                    let run_id = self.run_id.clone();
                    wait(&mut self.events, |e| match e {
                        StoreEvent::TaskStates { run_id: r, .. }
                        | StoreEvent::RunState { run_id: r, .. } => *r == run_id,
                        StoreEvent::Missed => true,
                        _ => false,
                    })
                    .await;
                }
                Err(e) => {
                    warn!(run_id = %self.run_id, error = %e, "A live run page stopped on a database error.");
                    return None;
                }
            }
        }
    }

    /// What changed since the last batch, and whether the run has ended with every log line
    /// sent.
    async fn changes(&mut self) -> Result<(Vec<Event>, bool), StoreError> {
        let store = &self.state.store;
        // The state is read before the logs: workers write a try's logs before its end, so
        // when an ended run's logs read short, none are missing.
        let Some(run) = store.run(&self.run_id).await? else {
            return Ok((Vec::new(), true));
        };
        let mut batch = Vec::new();
        let mut latest: HashMap<String, (u32, TaskState)> = HashMap::new();
        for slot in store.task_states(&self.run_id).await? {
            let entry = latest
                .entry(slot.task_id)
                .or_insert((slot.try_number, slot.state));
            if slot.try_number >= entry.0 {
                *entry = (slot.try_number, slot.state);
            }
        }
        for (task, (try_number, state)) in latest {
            if self.tasks.get(&task) != Some(&(try_number, state)) {
                batch.push(event(
                    "task",
                    json!({ "task_id": task, "try_number": try_number,
                            "state": state.as_str(), "symbol": symbol(state.as_str()) }),
                ));
                self.tasks.insert(task, (try_number, state));
            }
        }
        let lines = store
            .run_logs_after(&self.run_id, self.after, LOG_BATCH)
            .await?;
        let drained = lines.len() < LOG_BATCH;
        let masker = &self.state.settings.masker;
        for line in lines {
            self.after = line.id;
            batch.push(event(
                "log",
                json!({ "id": line.id, "task_id": line.task_id, "try_number": line.try_number,
                        "stream": line.stream, "line": masker.mask(&line.line),
                        "at": super::logs::clock_time(line.logged_at),
                        "logged_at": super::iso(line.logged_at) }),
            ));
        }
        let facts = RunFacts {
            state: run.state,
            started_at: run.started_at,
            ended_at: run.ended_at,
            error: run.error.as_deref().map(|e| masker.mask(e).into_owned()),
        };
        if self.run.as_ref() != Some(&facts) {
            batch.push(facts.event(Utc::now()));
            self.run = Some(facts);
        }
        Ok((batch, run.state.is_final() && drained))
    }
}

/// `GET /runs/{run_id}/events`.
pub async fn run_events(
    State(state): State<WebState>,
    _session: Session,
    Path(run_id): Path<String>,
    Query(query): Query<RunEventsQuery>,
) -> Result<Response> {
    super::pages::find_run(&state, &run_id).await?;
    let feed = RunFeed {
        events: state.store.subscribe(),
        state,
        run_id,
        after: query.after,
        tasks: HashMap::new(),
        run: None,
        finished: false,
    };
    Ok(sse(futures_util::stream::unfold(
        feed,
        |mut feed| async move {
            let batch = feed.next_batch().await?;
            Some((batch, feed))
        },
    )))
}

/// What a workflow page's stream has sent so far: the states of the newest runs' tasks.
struct WorkflowFeed {
    state: WebState,
    events: UnboundedReceiver<StoreEvent>,
    workflow_id: String,
    cells: HashMap<(String, String), TaskState>,
    runs: HashMap<String, RunState>,
    pending: VecDeque<Event>,
    first: bool,
}

impl WorkflowFeed {
    async fn next_batch(&mut self) -> Option<Vec<Event>> {
        loop {
            if !self.first {
                wait(&mut self.events, |e| {
                    matches!(
                        e,
                        StoreEvent::TaskStates { .. }
                            | StoreEvent::RunState { .. }
                            | StoreEvent::Missed
                    )
                })
                .await;
            }
            self.first = false;
            match self.changes().await {
                Ok(()) if self.pending.is_empty() => {}
                Ok(()) => return Some(self.pending.drain(..).collect()),
                Err(e) => {
                    warn!(workflow = %self.workflow_id, error = %e, "A live workflow page stopped on a database error.");
                    return None;
                }
            }
        }
    }

    async fn changes(&mut self) -> Result<(), StoreError> {
        let filter = RunFilter {
            workflow: Some(self.workflow_id.clone()),
            ..RunFilter::default()
        };
        let page = match self.state.store.list_runs(&filter, GRID_PAGE, None).await? {
            Ok(page) => page,
            Err(_) => return Ok(()),
        };
        let ids: Vec<String> = page.runs.iter().map(|r| r.id.clone()).collect();
        for run in &page.runs {
            if self.runs.get(&run.id) != Some(&run.state) {
                self.runs.insert(run.id.clone(), run.state);
                self.pending.push_back(event(
                    "run",
                    json!({ "run_id": run.id, "state": run.state.as_str(),
                            "symbol": symbol(run.state.as_str()) }),
                ));
            }
        }
        for (run_id, tasks) in self.state.store.latest_task_states(&ids).await? {
            for (task_id, state) in tasks {
                let key = (run_id.clone(), task_id.clone());
                if self.cells.get(&key) != Some(&state) {
                    self.cells.insert(key, state);
                    self.pending.push_back(event(
                        "cell",
                        json!({ "run_id": run_id, "task_id": task_id, "state": state.as_str(),
                                "symbol": symbol(state.as_str()) }),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `GET /workflows/{id}/events`.
pub async fn workflow_events(
    State(state): State<WebState>,
    _session: Session,
    Path(id): Path<String>,
) -> Result<Response> {
    find_workflow(&state, &id)?;
    let feed = WorkflowFeed {
        events: state.store.subscribe(),
        state,
        workflow_id: id,
        cells: HashMap::new(),
        runs: HashMap::new(),
        pending: VecDeque::new(),
        first: true,
    };
    Ok(sse(futures_util::stream::unfold(
        feed,
        |mut feed| async move {
            let batch = feed.next_batch().await?;
            Some((batch, feed))
        },
    )))
}
