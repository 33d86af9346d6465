//! The commit status service: a run started by a GitHub delivery reports `pending` on the
//! delivery's commit when it starts, then `success`, `failure` or `error` when it ends, with a
//! link to its page. Posting happens beside the run, never in its way: a GitHub outage delays
//! statuses (retried by the shared `retry` policy), it never fails a run, and every failure is
//! logged.
//!
//! `status_for(run, state)` is the whole decision; `run` listens for runs changing state and posts
//! each run's statuses in order on a lane of its own, the latest state winning over a post
//! still being retried.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::catalog::live::Catalog;
use crate::lifecycle::RunState;
use crate::lifecycle::TaskState;
use crate::operators::support::shorten;
use crate::retry::{Failure, Jitter, RetryAfter, RetryError, RetryPolicy, Retrying, SystemClock};
use crate::secrets::Masker;
use crate::store::{RunRecord, Store, StoreEvent, TaskInstanceRecord};

/// GitHub shows at most this many characters of a status description.
const MAX_DESCRIPTION: usize = 140;
/// How many ended runs are remembered, so that a late event does not post a run's final
/// status twice.
const REMEMBERED_RUNS: usize = 10_000;

/// Settings of the status service.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The REST API base, like `https://api.github.com`, without a trailing slash.
    pub api_url: String,
    /// The base of run page links (`Config::base_url`), without a trailing slash.
    pub base_url: String,
    /// The token statuses are posted with (`secrets.GITHUB_TOKEN`); `None`: nothing is
    /// posted, and each run that would report says so in the log.
    pub token: Option<String>,
    /// Tries per status before it is given up (logged as an error). Default 6.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles each time. Default 1s.
    pub first_backoff: Duration,
    /// The longest wait between tries. Default 60s.
    pub max_backoff: Duration,
    /// How long one request may take. Default 10s.
    pub request_timeout: Duration,
    /// How long posts still in flight may finish when the service stops. Default 5s.
    pub shutdown_grace: Duration,
}

impl StatusConfig {
    pub fn new(api_url: &str, base_url: &str, token: Option<String>) -> StatusConfig {
        StatusConfig {
            api_url: api_url.trim_end_matches('/').to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            max_attempts: 6,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// The shared retry policy with these settings; a `Retry-After` waits at most
    /// `max_backoff`.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            first_backoff: self.first_backoff,
            max_backoff: self.max_backoff,
            max_retry_after: self.max_backoff,
            jitter: Jitter::None,
        }
    }
}

/// One status to post.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPost {
    pub run_id: String,
    /// `owner/name`.
    pub repository: String,
    pub sha: String,
    /// The request body: `state`, `target_url`, `description`, `context`.
    pub body: Value,
    /// Whether this is the run's last status.
    pub last: bool,
}

impl StatusPost {
    fn url(&self, api_url: &str) -> String {
        format!("{api_url}/repos/{}/statuses/{}", self.repository, self.sha)
    }
}

/// The status `run` reports on entering `state`, if it reports one: it was started by a
/// GitHub delivery whose trigger reports a status (`trigger_details.status`) on a known
/// commit, and `state` is `running` or final. A final state's description is the `summary` of
/// the task that decided the run (see [`deciding_summary`]) when it has one, else the run's
/// error.
pub fn status_for(
    run: &RunRecord,
    state: RunState,
    summary: Option<&str>,
    base_url: &str,
    masker: &Masker,
) -> Option<StatusPost> {
    if run.trigger != "github" {
        return None;
    }
    let details = run.trigger_details.as_ref()?;
    let target = details.get("status").filter(|s| s.is_object())?;
    let context = target.get("context").and_then(Value::as_str)?;
    let repository = details.get("repository").and_then(Value::as_str)?;
    let sha = details.get("sha").and_then(Value::as_str)?;
    let (github_state, what) = match state {
        RunState::Queued => return None,
        RunState::Running => ("pending", "running".to_owned()),
        RunState::Success => (
            "success",
            match summary {
                Some(summary) => format!("succeeded: {}", masker.mask(summary)),
                None => "succeeded".to_owned(),
            },
        ),
        RunState::Failed => (
            "failure",
            match summary.or(run.error.as_deref()) {
                Some(e) => format!("failed: {}", masker.mask(e)),
                None => "failed".to_owned(),
            },
        ),
        RunState::Cancelled => ("error", "cancelled".to_owned()),
    };
    let description = match target.get("description").and_then(Value::as_str) {
        Some(prefix) => format!("{prefix}: {what}"),
        None => format!("Sluice run {what}"),
    };
    Some(StatusPost {
        run_id: run.id.clone(),
        repository: repository.to_owned(),
        sha: sha.to_owned(),
        body: json!({
            "state": github_state,
            "target_url": format!("{base_url}/runs/{}", run.id),
            "description": shorten(&description, MAX_DESCRIPTION),
            "context": context,
        }),
        last: state.is_final(),
    })
}

/// The summary of the task that decided a run that ended in `state`, from its tries: for a
/// failed run, that of the first task whose latest try failed (the failure that ended the
/// run); for a successful one, that of the last task to end with a summary. `None` when the
/// deciding task has none.
pub fn deciding_summary(state: RunState, tries: &[TaskInstanceRecord]) -> Option<String> {
    let mut latest: HashMap<&str, &TaskInstanceRecord> = HashMap::new();
    for t in tries {
        let newer = latest
            .get(t.task_id.as_str())
            .is_none_or(|seen| seen.try_number < t.try_number);
        if newer {
            latest.insert(&t.task_id, t);
        }
    }
    match state {
        RunState::Failed => latest
            .values()
            .filter(|t| t.state == TaskState::Failed)
            .min_by_key(|t| (t.ended_at, t.id))
            .and_then(|t| t.summary.clone()),
        RunState::Success => latest
            .values()
            .filter(|t| t.summary.is_some())
            .max_by_key(|t| (t.ended_at, t.id))
            .and_then(|t| t.summary.clone()),
        _ => None,
    }
}

pub struct GithubStatusService {
    store: Store,
    catalog: Arc<Catalog>,
    client: reqwest::Client,
    config: Arc<StatusConfig>,
    masker: Masker,
}

/// Which runs have a lane, and which have posted their last status: run id → the run's
/// `rerun_started_at` when it ended (a run whose tasks are cleared later runs again, and
/// reports again).
#[derive(Default)]
struct Lanes {
    open: HashMap<String, mpsc::UnboundedSender<StatusPost>>,
    ended: HashMap<String, Option<DateTime<Utc>>>,
    ended_order: VecDeque<String>,
}

impl GithubStatusService {
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        client: reqwest::Client,
        config: StatusConfig,
        masker: Masker,
    ) -> Self {
        GithubStatusService {
            store,
            catalog,
            client,
            config: Arc::new(config),
            masker,
        }
    }

    /// Whether any loaded workflow has a `github` trigger.
    fn any_github_trigger(&self) -> bool {
        self.catalog.snapshot().workflows.values().any(|entry| {
            entry
                .workflow
                .triggers
                .iter()
                .any(|t| t.get("github").is_some())
        })
    }

    /// Posts statuses as runs start and end, until `shutdown`; then gives posts in flight
    /// `shutdown_grace` to finish.
    pub async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        shutdown: CancellationToken,
    ) {
        if self.config.token.is_none() {
            info!(
                "The secret GITHUB_TOKEN is not set: runs started by GitHub report no commit status."
            );
        }
        let mut lanes = Lanes::default();
        let mut posting = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Some(StoreEvent::RunState { run_id, state })
                        if state == RunState::Running || state.is_final() =>
                    {
                        self.on_run_state(&run_id, state, &mut lanes, &mut posting).await;
                    }
                    Some(_) => {}
                    None => break,
                },
                Some(joined) = posting.join_next(), if !posting.is_empty() => {
                    if let Err(e) = joined {
                        error!(error = %e, "A commit status lane stopped unexpectedly.");
                    }
                }
            }
        }
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        while !posting.is_empty() {
            tokio::select! {
                _ = &mut grace => {
                    warn!(pending = posting.len(), "Stopping with commit statuses not yet posted.");
                    posting.abort_all();
                    break;
                }
                _ = posting.join_next() => {}
            }
        }
    }

    async fn on_run_state(
        &self,
        run_id: &str,
        state: RunState,
        lanes: &mut Lanes,
        posting: &mut JoinSet<()>,
    ) {
        // Events from other writers may arrive out of order: once a run's last status is
        // posted, a late `running` posts nothing. A `running` read after the run already
        // ended still posts `pending`, right before the final status on the same lane.
        if !state.is_final() && lanes.open.contains_key(run_id) {
            return;
        }
        let ended = lanes.ended.get(run_id).copied();
        // Most installations have no `github` triggers: their runs are not read at all.
        if ended.is_none() && !lanes.open.contains_key(run_id) && !self.any_github_trigger() {
            return;
        }
        let run = match self.store.run(run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => return,
            Err(e) => {
                error!(run_id, error = %e, "Cannot read a run to report its commit status.");
                return;
            }
        };
        if let Some(rerun_at_end) = ended {
            // A late event of the end already reported posts nothing; a run that has started
            // again since (tasks of it were cleared) reports its re-run afresh.
            if run.rerun_started_at == rerun_at_end {
                return;
            }
            lanes.ended.remove(run_id);
        }
        // A final status follows the stored state, which a late event cannot move back.
        let state = if state.is_final() { run.state } else { state };
        let summary = if state.is_final() {
            match self.store.task_instances(run_id).await {
                Ok(tries) => deciding_summary(state, &tries),
                Err(e) => {
                    // The status still goes out, described by the run's error.
                    warn!(run_id, error = %e, "Cannot read a run's tasks for its commit status.");
                    None
                }
            }
        } else {
            None
        };
        let Some(post) = status_for(
            &run,
            state,
            summary.as_deref(),
            &self.config.base_url,
            &self.masker,
        ) else {
            return;
        };
        let Some(token) = self.config.token.clone() else {
            if post.last {
                warn!(run_id, context = %post.body["context"], "A GitHub-triggered run ended but its commit status is not posted: the secret GITHUB_TOKEN is not set.");
                remember_ended(lanes, run_id, run.rerun_started_at);
            }
            return;
        };
        let last = post.last;
        let lane = lanes.open.entry(run_id.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            posting.spawn(deliver(
                self.client.clone(),
                self.config.clone(),
                token,
                self.masker.clone(),
                rx,
            ));
            tx
        });
        // A closed lane means its task ended; the post is lost only if the process is
        // stopping, which aborts lanes anyway.
        let _ = lane.send(post);
        if last {
            lanes.open.remove(run_id);
            remember_ended(lanes, run_id, run.rerun_started_at);
        }
    }
}

fn remember_ended(lanes: &mut Lanes, run_id: &str, rerun_started_at: Option<DateTime<Utc>>) {
    if lanes
        .ended
        .insert(run_id.to_owned(), rerun_started_at)
        .is_none()
    {
        lanes.ended_order.push_back(run_id.to_owned());
    }
    while lanes.ended_order.len() > REMEMBERED_RUNS {
        if let Some(old) = lanes.ended_order.pop_front() {
            lanes.ended.remove(&old);
        }
    }
}

/// Posts one run's statuses in order. A newer status replaces one waiting to be retried (a
/// post in flight is finished first, so GitHub never sees an older state after a newer one).
async fn deliver(
    client: reqwest::Client,
    config: Arc<StatusConfig>,
    token: String,
    masker: Masker,
    mut lane: mpsc::UnboundedReceiver<StatusPost>,
) {
    let policy = config.retry_policy();
    // Lanes end by being aborted after the shutdown grace, not by cancellation.
    let never_cancelled = CancellationToken::new();
    let mut next = lane.recv().await;
    while let Some(post) = next.take() {
        // A closed lane only means no status comes after this one.
        let newer = async {
            match lane.recv().await {
                Some(newer) => newer,
                None => std::future::pending().await,
            }
        };
        let outcome = policy
            .run_until(
                &SystemClock,
                &never_cancelled,
                newer,
                |_| send(&client, &config, &token, &post),
                |retrying: &Retrying<'_, String>| {
                    warn!(run_id = %post.run_id, attempt = retrying.attempt, retry_in = ?retrying.wait, reason = %masker.mask(retrying.error), "Posting a commit status failed; retrying.");
                },
            )
            .await;
        match outcome {
            Ok(_) => {
                debug!(run_id = %post.run_id, state = %post.body["state"], "Commit status posted.");
            }
            Err(RetryError::Refused { error, .. }) => {
                error!(run_id = %post.run_id, repository = %post.repository, sha = %post.sha, reason = %masker.mask(&error), "GitHub refused a commit status; it is not retried.");
            }
            Err(RetryError::Exhausted { error, attempts }) => {
                error!(run_id = %post.run_id, repository = %post.repository, sha = %post.sha, attempts, reason = %masker.mask(&error), "A commit status could not be posted; giving up.");
            }
            Err(RetryError::Interrupted(newer)) => {
                next = Some(newer);
                continue;
            }
            Err(RetryError::Cancelled) => return,
        }
        next = lane.recv().await;
    }
}

/// Posts one status: a network failure, a timeout, 408, 429 or a 5xx other than 501 may pass;
/// any other refusal (bad token, unknown repository or commit) will not.
async fn send(
    client: &reqwest::Client,
    config: &StatusConfig,
    token: &str,
    post: &StatusPost,
) -> Result<(), Failure<String>> {
    let response = client
        .post(post.url(&config.api_url))
        .bearer_auth(token)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .timeout(config.request_timeout)
        .json(&post.body)
        .send()
        .await
        .map_err(|e| Failure::from_request_error(&e, e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = RetryAfter::from_headers(response.headers());
    let body = response.text().await.unwrap_or_default();
    let reason = format!(
        "HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    Err(Failure::from_status(status, retry_after, reason))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use chrono::Utc;

    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn run(state: RunState, details: Option<Value>) -> RunRecord {
        let now = Utc::now();
        RunRecord {
            id: "r1".into(),
            workflow_id: "evals".into(),
            version_hash: "h".into(),
            state,
            trigger: "github".into(),
            triggered_by: Some("github:d1".into()),
            params: Default::default(),
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
            error: Some("task `gate` failed: score 0.41 < 0.8 with key sk-123".into()),
            created_at: now,
            started_at: None,
            rerun_started_at: None,
            ended_at: None,
            trigger_details: details,
            event: Value::Null,
        }
    }

    fn details(status: Value) -> Option<Value> {
        Some(
            json!({"event": "pull_request", "repository": "acme/evals", "sha": SHA, "status": status}),
        )
    }

    #[test]
    fn running_and_ended_runs_report_their_state_with_a_link() {
        let masker = Masker::new(["sk-123".to_owned()]);
        let status = json!({"context": "sluice/evals", "description": null});
        assert_eq!(
            status_for(
                &run(RunState::Queued, details(status.clone())),
                RunState::Queued,
                None,
                "http://x",
                &masker
            ),
            None
        );
        let pending = status_for(
            &run(RunState::Running, details(status.clone())),
            RunState::Running,
            None,
            "http://x",
            &masker,
        )
        .expect("a pending status");
        assert_eq!(pending.body["state"], "pending");
        assert_eq!(pending.body["context"], "sluice/evals");
        assert_eq!(pending.body["target_url"], "http://x/runs/r1");
        assert_eq!(
            pending.url("https://api.github.com"),
            format!("https://api.github.com/repos/acme/evals/statuses/{SHA}")
        );
        assert!(!pending.last);
        let failed = status_for(
            &run(RunState::Failed, details(status.clone())),
            RunState::Failed,
            None,
            "http://x",
            &masker,
        )
        .expect("a final status");
        assert_eq!(failed.body["state"], "failure");
        let text = failed.body["description"].as_str().expect("text");
        assert!(
            text.contains("score 0.41") && !text.contains("sk-123"),
            "{text}"
        );
        assert!(failed.last);
        let states: Vec<Value> = [RunState::Success, RunState::Cancelled]
            .into_iter()
            .map(|s| {
                status_for(
                    &run(s, details(status.clone())),
                    s,
                    None,
                    "http://x",
                    &masker,
                )
                .expect("status")
                .body["state"]
                    .clone()
            })
            .collect();
        assert_eq!(states, [json!("success"), json!("error")]);
    }

    fn try_of(
        id: i64,
        task: &str,
        try_number: u32,
        state: TaskState,
        summary: Option<&str>,
    ) -> TaskInstanceRecord {
        let start = Utc::now();
        TaskInstanceRecord {
            id,
            run_id: "r1".into(),
            task_id: task.into(),
            try_number,
            state,
            priority: 0,
            pool: None,
            not_before: None,
            worker: None,
            exit_code: None,
            error: None,
            outputs: None,
            warnings: Vec::new(),
            summary: summary.map(str::to_owned),
            created_at: start,
            queued_at: None,
            started_at: Some(start),
            // Later ids end later.
            ended_at: Some(start + chrono::Duration::seconds(id)),
        }
    }

    #[test]
    fn the_task_that_decided_the_run_describes_its_status() {
        let failed_run = [
            try_of(
                1,
                "evaluate",
                1,
                TaskState::Success,
                Some("200 samples scored"),
            ),
            try_of(2, "gate", 1, TaskState::UpForRetry, Some("an older try")),
            try_of(
                3,
                "gate",
                2,
                TaskState::Failed,
                Some("faithfulness 0.87 < 0.90"),
            ),
            try_of(4, "report", 1, TaskState::Failed, Some("a later failure")),
            try_of(5, "promote", 1, TaskState::UpstreamFailed, None),
        ];
        assert_eq!(
            deciding_summary(RunState::Failed, &failed_run).as_deref(),
            Some("faithfulness 0.87 < 0.90")
        );
        let quiet_failure = [try_of(1, "gate", 1, TaskState::Failed, None)];
        assert_eq!(deciding_summary(RunState::Failed, &quiet_failure), None);
        let succeeded = [
            try_of(
                1,
                "evaluate",
                1,
                TaskState::Success,
                Some("200 samples scored"),
            ),
            try_of(
                2,
                "gate",
                1,
                TaskState::Success,
                Some("all 3 thresholds met"),
            ),
            try_of(3, "notify", 1, TaskState::Success, None),
        ];
        assert_eq!(
            deciding_summary(RunState::Success, &succeeded).as_deref(),
            Some("all 3 thresholds met")
        );

        let masker = Masker::new(["sk-123".to_owned()]);
        let target = json!({"context": "sluice/evals", "description": "Eval gate"});
        let summary = format!("faithfulness 0.87 < 0.90 (key sk-123) {}", "x".repeat(200));
        let failed = status_for(
            &run(RunState::Failed, details(target.clone())),
            RunState::Failed,
            Some(&summary),
            "http://x",
            &masker,
        )
        .expect("a final status");
        let text = failed.body["description"].as_str().expect("text");
        assert!(
            text.starts_with("Eval gate: failed: faithfulness 0.87 < 0.90 (key ***)"),
            "{text}"
        );
        // The summary wins over the run's error, and GitHub's cap holds.
        assert!(!text.contains("score 0.41"), "{text}");
        assert_eq!(text.chars().count(), MAX_DESCRIPTION);
        let passed = status_for(
            &run(RunState::Success, details(target)),
            RunState::Success,
            Some("all 3 thresholds met"),
            "http://x",
            &masker,
        )
        .expect("a final status");
        assert_eq!(
            passed.body["description"],
            "Eval gate: succeeded: all 3 thresholds met"
        );
    }

    #[test]
    fn runs_without_a_status_target_report_nothing() {
        let masker = Masker::default();
        assert_eq!(
            status_for(
                &run(RunState::Running, details(Value::Null)),
                RunState::Running,
                None,
                "http://x",
                &masker
            ),
            None
        );
        assert_eq!(
            status_for(
                &run(RunState::Running, None),
                RunState::Running,
                None,
                "http://x",
                &masker
            ),
            None
        );
        let mut manual = run(RunState::Running, details(json!({"context": "c"})));
        manual.trigger = "api".into();
        assert_eq!(
            status_for(&manual, RunState::Running, None, "http://x", &masker),
            None
        );
        let custom = status_for(
            &run(
                RunState::Success,
                details(json!({"context": "gate", "description": "x".repeat(200)})),
            ),
            RunState::Success,
            None,
            "http://x",
            &masker,
        )
        .expect("status");
        assert_eq!(
            custom.body["description"]
                .as_str()
                .map(|d| d.chars().count()),
            Some(MAX_DESCRIPTION)
        );
    }

    #[derive(Clone, Default)]
    struct Fake {
        seen: Arc<Mutex<Vec<(String, Value)>>>,
        failures_left: Arc<Mutex<u32>>,
        refused: Arc<Mutex<u32>>,
    }

    async fn unknown(State(fake): State<Fake>) -> StatusCode {
        *fake.refused.lock().expect("lock") += 1;
        StatusCode::NOT_FOUND
    }

    /// Serves `fake` as GitHub's status API on a free port; returns its address.
    async fn serve(fake: &Fake) -> std::net::SocketAddr {
        rustls::crypto::ring::default_provider()
            .install_default()
            .ok();
        let app = Router::new()
            .route("/repos/acme/evals/statuses/{sha}", post(record))
            .fallback(unknown)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    async fn record(
        State(fake): State<Fake>,
        headers: HeaderMap,
        body: axum::Json<Value>,
    ) -> StatusCode {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        fake.seen.lock().expect("lock").push((auth, body.0));
        let mut left = fake.failures_left.lock().expect("lock");
        if *left > 0 {
            *left -= 1;
            return StatusCode::BAD_GATEWAY;
        }
        StatusCode::CREATED
    }

    #[tokio::test]
    async fn a_failed_post_is_retried_and_a_refused_one_is_not() {
        let fake = Fake::default();
        *fake.failures_left.lock().expect("lock") = 2;
        let address = serve(&fake).await;
        let mut config = StatusConfig::new(
            &format!("http://{address}"),
            "http://sluice",
            Some("tok".into()),
        );
        config.first_backoff = Duration::from_millis(10);
        let (tx, rx) = mpsc::unbounded_channel();
        let post = status_for(
            &run(RunState::Success, details(json!({"context": "c"}))),
            RunState::Success,
            None,
            "http://sluice",
            &Masker::default(),
        )
        .expect("status");
        tx.send(post).expect("send");
        drop(tx);
        deliver(
            reqwest::Client::new(),
            Arc::new(config.clone()),
            "tok".into(),
            Masker::default(),
            rx,
        )
        .await;
        let seen = fake.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 3, "two failures, then success: {seen:?}");
        assert!(
            seen.iter()
                .all(|(auth, body)| auth == "Bearer tok" && body["state"] == "success")
        );

        // An unknown repository is a 404: refused for good after one try.
        let (tx, rx) = mpsc::unbounded_channel();
        let mut elsewhere = status_for(
            &run(RunState::Success, details(json!({"context": "c"}))),
            RunState::Success,
            None,
            "http://sluice",
            &Masker::default(),
        )
        .expect("status");
        elsewhere.repository = "acme/missing".into();
        tx.send(elsewhere).expect("send");
        drop(tx);
        deliver(
            reqwest::Client::new(),
            Arc::new(config),
            "tok".into(),
            Masker::default(),
            rx,
        )
        .await;
        assert_eq!(
            *fake.refused.lock().expect("lock"),
            1,
            "a 404 is not retried"
        );
        assert_eq!(fake.seen.lock().expect("lock").len(), 3);
    }

    /// Regression: a newer status waited out the whole backoff of the one it replaced.
    #[tokio::test]
    async fn a_newer_status_replaces_one_waiting_to_be_retried_at_once() {
        let fake = Fake::default();
        *fake.failures_left.lock().expect("lock") = 1;
        let address = serve(&fake).await;
        let mut config = StatusConfig::new(
            &format!("http://{address}"),
            "http://sluice",
            Some("tok".into()),
        );
        config.first_backoff = Duration::from_secs(3600);
        let (tx, rx) = mpsc::unbounded_channel();
        for state in [RunState::Running, RunState::Success] {
            let post = status_for(
                &run(state, details(json!({"context": "c"}))),
                state,
                None,
                "http://sluice",
                &Masker::default(),
            )
            .expect("status");
            tx.send(post).expect("send");
        }
        drop(tx);
        let delivered = tokio::time::timeout(
            Duration::from_secs(30),
            deliver(
                reqwest::Client::new(),
                Arc::new(config),
                "tok".into(),
                Masker::default(),
                rx,
            ),
        )
        .await;
        assert!(delivered.is_ok(), "the newer status waited for the backoff");
        let states: Vec<Value> = fake
            .seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, body)| body["state"].clone())
            .collect();
        assert_eq!(
            states,
            [json!("pending"), json!("success")],
            "the failed `pending` is replaced, not retried"
        );
    }

    #[tokio::test]
    async fn a_cleared_run_reports_its_rerun_after_its_first_end() {
        let fake = Fake::default();
        let address = serve(&fake).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("evals.yaml"),
            "triggers:\n  - github: { events: [push] }\ntasks:\n  a: { operator: noop }\n",
        )
        .expect("write");
        let store = Store::open(&crate::store::StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let now = Utc::now();
        let delivery = crate::store::NewDelivery {
            id: "d1".into(),
            event: "push".into(),
            action: None,
            repository: Some("acme/evals".into()),
            branch: Some("main".into()),
            tag: None,
            sha: Some(SHA.into()),
            sender: None,
            outcome: crate::store::DeliveryOutcome::Started,
            reason: None,
            received_at: now,
        };
        let started = crate::store::DeliveryRun {
            run: crate::store::NewRun {
                id: "r1".into(),
                workflow_id: "evals".into(),
                version_hash: "h".into(),
                trigger: "github".into(),
                triggered_by: Some("github:d1".into()),
                params: Default::default(),
                logical_date: now,
                data_interval_start: now,
                data_interval_end: now,
            },
            tasks: vec![crate::store::conformance::task("a")],
            origin: crate::store::RunOrigin {
                details: details(json!({"context": "sluice/evals"})).expect("details"),
                event: Value::Null,
            },
        };
        store
            .record_delivery(&delivery, &[started])
            .await
            .expect("record");
        let service = GithubStatusService::new(
            store.clone(),
            Arc::new(Catalog::open(dir.path())),
            reqwest::Client::new(),
            StatusConfig::new(
                &format!("http://{address}"),
                "http://sluice",
                Some("tok".into()),
            ),
            Masker::default(),
        );
        let mut lanes = Lanes::default();
        let mut posting = JoinSet::new();
        let moves = [
            (RunState::Queued, RunState::Running),
            (RunState::Running, RunState::Failed),
        ];
        for (from, to) in moves {
            store
                .set_run_state("r1", from, to, None)
                .await
                .expect("move");
            service
                .on_run_state("r1", to, &mut lanes, &mut posting)
                .await;
        }
        // A late `running` of the run that ended posts nothing.
        service
            .on_run_state("r1", RunState::Running, &mut lanes, &mut posting)
            .await;
        let a = store.task_instances("r1").await.expect("tries").remove(0);
        let mut batch = crate::store::DecisionBatch::default();
        batch.push(
            a.id,
            "a",
            1,
            crate::lifecycle::TaskState::Pending,
            crate::lifecycle::TaskState::Skipped,
        );
        store.apply_decisions("r1", &batch).await.expect("decide");
        store
            .clear_tasks("r1", &["a".to_owned()])
            .await
            .expect("clear");
        let moves = [
            (RunState::Queued, RunState::Running),
            (RunState::Running, RunState::Success),
        ];
        for (from, to) in moves {
            store
                .set_run_state("r1", from, to, None)
                .await
                .expect("move");
            service
                .on_run_state("r1", to, &mut lanes, &mut posting)
                .await;
        }
        while posting.join_next().await.is_some() {}
        let states: Vec<Value> = fake
            .seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, body)| body["state"].clone())
            .collect();
        assert_eq!(
            states,
            [
                json!("pending"),
                json!("failure"),
                json!("pending"),
                json!("success")
            ]
        );
    }
}
