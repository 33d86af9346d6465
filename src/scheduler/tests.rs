//! Scheduler tests with the time as a parameter: deadlines fire once, and never again after
//! a restart; clearing tasks runs a run again until its tasks have ended again; and a
//! seeded random walk over claims, completions, retries, clears, cancels and restarts that
//! checks the scheduler's bookkeeping after every step.

use std::path::Path;
use std::sync::Arc;

use chrono::Duration;

use super::*;
use crate::catalog::launch::{RunRequest, launch};
use crate::secrets::Secrets;
use crate::store::StoreConfig;

async fn setup(source: &str) -> (Store, SchedulerDeps, String) {
    let store = Store::open(&StoreConfig::new("sqlite::memory:"))
        .await
        .expect("store");
    let workflow = Arc::new(
        crate::catalog::compile_source(Path::new("slow.yaml"), source).expect("a valid workflow"),
    );
    let versions = Arc::new(Versions::new());
    versions.insert(workflow.clone());
    let run_id = launch(
        &store,
        &workflow,
        "slow.yaml",
        RunRequest::now("manual", Default::default()),
    )
    .await
    .expect("launch");
    let deps = SchedulerDeps {
        versions,
        templates: Arc::new(Templates::new()),
        secrets: Arc::new(Secrets::from_pairs([])),
        vars: Arc::default(),
        base_url: "http://127.0.0.1:8080".into(),
    };
    (store, deps, run_id)
}

async fn hook_tries(store: &Store, run_id: &str, task: &str) -> usize {
    store
        .task_instances(run_id)
        .await
        .expect("task instances")
        .iter()
        .filter(|t| t.task_id == task)
        .count()
}

const SLOW: &str = "id: slow\ndeadline: { after: 2h }\non_deadline:\n  late: { operator: noop }\n\
                    tasks:\n  work: { operator: noop }\n";

#[tokio::test]
async fn a_deadline_fires_once_when_it_passes_and_not_again_after_a_restart() {
    let (store, deps, run_id) = setup(SLOW).await;
    let mut scheduler = Scheduler::new(store.clone(), deps.clone(), SchedulerConfig::default());
    scheduler.adopt(&run_id).await.expect("adopt");
    let started = store
        .run(&run_id)
        .await
        .expect("read")
        .and_then(|r| r.started_at)
        .expect("started");
    let due = scheduler.next_deadline().expect("a deadline");
    assert!(
        (due - (started + Duration::hours(2))).num_seconds().abs() <= 1,
        "due two hours after the start: {due} vs {started}"
    );

    assert!(
        scheduler
            .fire_deadlines(due - Duration::seconds(1))
            .await
            .expect("before")
            .is_empty()
    );
    assert_eq!(hook_tries(&store, &run_id, "late").await, 0);
    assert_eq!(
        scheduler.fire_deadlines(due).await.expect("due"),
        vec![run_id.clone()]
    );
    assert_eq!(hook_tries(&store, &run_id, "late").await, 1);
    let late = store
        .task_instances(&run_id)
        .await
        .expect("tis")
        .into_iter()
        .find(|t| t.task_id == "late")
        .expect("late");
    assert_eq!(
        late.state,
        TaskState::Queued,
        "a hook with no needs runs at once"
    );
    assert!(
        scheduler
            .fire_deadlines(due + Duration::hours(1))
            .await
            .expect("later")
            .is_empty(),
        "once per run"
    );
    assert_eq!(scheduler.next_deadline(), None);

    // A restarted scheduler reads the fired deadline from the database.
    let mut restarted = Scheduler::new(store.clone(), deps, SchedulerConfig::default());
    restarted.adopt(&run_id).await.expect("adopt again");
    assert_eq!(restarted.next_deadline(), None);
    assert!(
        restarted
            .fire_deadlines(due + Duration::hours(2))
            .await
            .expect("after restart")
            .is_empty()
    );
    assert_eq!(hook_tries(&store, &run_id, "late").await, 1);
    let run = store.run(&run_id).await.expect("read").expect("run");
    assert_eq!(run.state, RunState::Running, "the run carries on");
}

#[tokio::test]
async fn a_run_that_ended_has_no_deadline() {
    let (store, deps, run_id) = setup(SLOW).await;
    let mut scheduler = Scheduler::new(store.clone(), deps, SchedulerConfig::default());
    scheduler.adopt(&run_id).await.expect("adopt");
    assert!(scheduler.next_deadline().is_some());
    store.cancel_run(&run_id, "stop").await.expect("cancel");
    scheduler
        .handle(&StoreEvent::RunState {
            run_id: run_id.clone(),
            state: RunState::Cancelled,
        })
        .await
        .expect("handle");
    assert_eq!(scheduler.next_deadline(), None);
    assert!(
        scheduler
            .fire_deadlines(chrono::Utc::now() + Duration::days(1))
            .await
            .expect("fire")
            .is_empty()
    );
}

#[tokio::test]
async fn conditions_see_the_run_page() {
    let (store, deps, run_id) = setup(
        "id: linked\ntasks:\n  a: { operator: noop, if: \"{{ run.url == 'http://127.0.0.1:8080/runs/' ~ run.id }}\" }\n",
    )
    .await;
    let mut scheduler = Scheduler::new(store.clone(), deps, SchedulerConfig::default());
    scheduler.adopt(&run_id).await.expect("adopt");
    let a = store.task_instances(&run_id).await.expect("tis").remove(0);
    assert_eq!(a.state, TaskState::Queued, "the condition held");
}

// ---------------------------------------------------------------------------------------------
// Clearing tasks

/// Plays the worker's part without running anything: claims a run's queued tries and ends
/// them as told, deciding retries the way the worker does (from the try's attempt, so a
/// cleared task gets all its retries again). Retries are due at once.
struct FakeWorker {
    store: Store,
    workflow: Arc<Workflow>,
    run_id: String,
}

impl FakeWorker {
    async fn claim(&self, limit: usize) -> Vec<crate::store::ClaimedTask> {
        let pools = std::collections::BTreeMap::new();
        let claim = crate::store::Claim {
            worker: "fake",
            limit,
            lease: std::time::Duration::from_secs(60),
            pools: &pools,
            queues: &[],
            run_id: Some(&self.run_id),
        };
        self.store.claim(&claim).await.expect("claim")
    }

    async fn finish(&self, claimed: &crate::store::ClaimedTask, succeed: bool) {
        let task = self
            .workflow
            .all_tasks()
            .find(|t| t.id == claimed.task_id)
            .expect("a task of the workflow");
        let retry = !succeed && claimed.attempt <= task.retries;
        let completion = crate::store::TaskCompletion {
            id: claimed.id,
            run_id: claimed.run_id.clone(),
            task_id: claimed.task_id.clone(),
            try_number: claimed.try_number,
            state: match (succeed, retry) {
                (true, _) => TaskState::Success,
                (false, true) => TaskState::UpForRetry,
                (false, false) => TaskState::Failed,
            },
            exit_code: Some(if succeed { 0 } else { 1 }),
            error: (!succeed).then(|| "exit code 1".to_owned()),
            outputs: succeed.then(serde_json::Map::new),
            warnings: Vec::new(),
            summary: None,
            ended_at: Utc::now(),
            retry: retry
                .then(|| NewTaskInstance::next_try(task, claimed.try_number + 1, Utc::now())),
        };
        self.store
            .complete(&[], &[completion])
            .await
            .expect("complete");
    }

    /// Claims the one queued try of `task` and ends it.
    async fn run_task(&self, task: &str, succeed: bool) -> crate::store::ClaimedTask {
        let claimed = self.claim(10).await;
        assert_eq!(
            claimed
                .iter()
                .map(|c| c.task_id.as_str())
                .collect::<Vec<_>>(),
            [task],
            "only {task} is queued"
        );
        self.finish(&claimed[0], succeed).await;
        claimed[0].clone()
    }
}

/// Hands the scheduler every event published so far, and queues retries that are due, as its
/// loop does.
async fn pump(
    scheduler: &mut Scheduler,
    store: &Store,
    events: &mut mpsc::UnboundedReceiver<StoreEvent>,
) {
    loop {
        while let Ok(event) = events.try_recv() {
            scheduler.handle(&event).await.expect("handle");
        }
        if store
            .queue_due(Utc::now() + Duration::hours(1))
            .await
            .expect("queue due")
            .is_empty()
        {
            return;
        }
    }
}

async fn latest_try(store: &Store, run_id: &str, task: &str) -> (u32, TaskState) {
    store
        .task_instances(run_id)
        .await
        .expect("tries")
        .iter()
        .filter(|t| t.task_id == task)
        .map(|t| (t.try_number, t.state))
        .max_by_key(|(n, _)| *n)
        .expect("a try")
}

async fn run_state(store: &Store, run_id: &str) -> RunRecord {
    store.run(run_id).await.expect("read").expect("the run")
}

const GATED: &str = "id: gated\ntasks:\n  a: { operator: noop }\n  \
                     b: { operator: noop, needs: [a], retries: 2 }\n  \
                     c: { operator: noop, needs: [b] }\n";

#[tokio::test]
async fn clearing_a_task_of_a_failed_run_runs_it_again_with_all_its_retries_before_it_ends() {
    let (store, deps, run_id) = setup(GATED).await;
    let workflow = crate::catalog::compile_source(Path::new("gated.yaml"), GATED).expect("valid");
    let worker = FakeWorker {
        store: store.clone(),
        workflow: Arc::new(workflow.clone()),
        run_id: run_id.clone(),
    };
    let mut events = store.subscribe();
    let config = SchedulerConfig {
        adopt_new_runs: true,
        ..SchedulerConfig::default()
    };
    let mut scheduler = Scheduler::new(store.clone(), deps, config);
    scheduler.adopt(&run_id).await.expect("adopt");
    pump(&mut scheduler, &store, &mut events).await;
    worker.run_task("a", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    for _ in 0..3 {
        worker.run_task("b", false).await;
        pump(&mut scheduler, &store, &mut events).await;
    }
    let failed = run_state(&store, &run_id).await;
    assert_eq!(failed.state, RunState::Failed);
    assert_eq!(
        latest_try(&store, &run_id, "c").await.1,
        TaskState::UpstreamFailed
    );
    let first_start = failed.started_at.expect("started");
    assert_eq!(failed.rerun_started_at, None);

    let tasks = workflow.with_downstream(workflow.task_index("b").expect("b"));
    let cleared = store.clear_tasks(&run_id, &tasks).await.expect("clear");
    assert!(
        matches!(
            cleared,
            crate::store::ClearOutcome::Cleared {
                run_requeued: true,
                ..
            }
        ),
        "{cleared:?}"
    );
    pump(&mut scheduler, &store, &mut events).await;
    let rerun = run_state(&store, &run_id).await;
    assert_eq!(rerun.state, RunState::Running, "a cleared run runs again");
    assert_eq!(
        rerun.started_at,
        Some(first_start),
        "it keeps its first start"
    );
    let rerun_start = rerun
        .rerun_started_at
        .expect("the re-run's start is recorded");
    assert!(rerun_start >= failed.ended_at.expect("ended"));
    assert_eq!(
        latest_try(&store, &run_id, "b").await,
        (4, TaskState::Queued)
    );
    assert_eq!(
        latest_try(&store, &run_id, "c").await,
        (2, TaskState::Pending)
    );

    // The cleared task has its two retries again: tries 4, 5 and 6, and the run runs on
    // until the last of them has failed.
    for try_number in 4..=6 {
        let claimed = worker.run_task("b", false).await;
        assert_eq!(
            (claimed.try_number, claimed.attempt),
            (try_number, try_number - 3)
        );
        // What the retry notice counts ("try 1 of 3", not "try 4 of 3") is the same number.
        assert_eq!(
            store
                .attempt_of(claimed.id, claimed.try_number)
                .await
                .expect("attempt"),
            try_number - 3
        );
        pump(&mut scheduler, &store, &mut events).await;
        let run = run_state(&store, &run_id).await;
        if try_number < 6 {
            assert_eq!(run.state, RunState::Running, "after try {try_number}");
            assert_eq!(run.ended_at, None);
        }
    }
    let ended = run_state(&store, &run_id).await;
    assert_eq!(ended.state, RunState::Failed);
    assert_eq!(
        latest_try(&store, &run_id, "b").await,
        (6, TaskState::Failed)
    );
    assert_eq!(
        latest_try(&store, &run_id, "c").await,
        (2, TaskState::UpstreamFailed)
    );

    // Cleared once more, `b` passes, so does `c`, and the run ends as they earned it.
    store.clear_tasks(&run_id, &tasks).await.expect("clear");
    pump(&mut scheduler, &store, &mut events).await;
    worker.run_task("b", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    assert_eq!(run_state(&store, &run_id).await.state, RunState::Running);
    worker.run_task("c", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    let ended = run_state(&store, &run_id).await;
    assert_eq!(ended.state, RunState::Success);
    assert_eq!(ended.error, None);
    assert_eq!(ended.started_at, Some(first_start));
    assert!(ended.rerun_started_at > Some(rerun_start));
    assert!(scheduler.is_idle());
}

#[tokio::test]
async fn a_run_does_not_end_while_a_task_cleared_behind_the_schedulers_back_is_unfinished() {
    let (store, deps, run_id) = setup(GATED).await;
    let workflow = crate::catalog::compile_source(Path::new("gated.yaml"), GATED).expect("valid");
    let worker = FakeWorker {
        store: store.clone(),
        workflow: Arc::new(workflow.clone()),
        run_id: run_id.clone(),
    };
    let mut events = store.subscribe();
    let mut scheduler = Scheduler::new(store.clone(), deps, SchedulerConfig::default());
    scheduler.adopt(&run_id).await.expect("adopt");
    pump(&mut scheduler, &store, &mut events).await;
    worker.run_task("a", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    worker.run_task("b", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    let c = worker.claim(1).await.remove(0);
    // `a` is cleared while `c` runs; the scheduler hears of `c`'s end before it hears of the
    // clear, so its own view says every task has ended.
    let cleared = store
        .clear_tasks(&run_id, &workflow.with_downstream(0)[..1])
        .await
        .expect("clear");
    assert!(matches!(
        cleared,
        crate::store::ClearOutcome::Cleared {
            run_requeued: false,
            ..
        }
    ));
    let clear_events: Vec<StoreEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    worker.finish(&c, true).await;
    while let Ok(event) = events.try_recv() {
        scheduler.handle(&event).await.expect("handle");
    }
    let run = run_state(&store, &run_id).await;
    assert_eq!(
        run.state,
        RunState::Running,
        "`a` has a new try that has not run"
    );
    assert_eq!(
        latest_try(&store, &run_id, "a").await,
        (2, TaskState::Queued)
    );
    for event in &clear_events {
        scheduler.handle(event).await.expect("handle");
    }
    pump(&mut scheduler, &store, &mut events).await;
    worker.run_task("a", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    assert_eq!(run_state(&store, &run_id).await.state, RunState::Success);
}

#[tokio::test]
async fn an_if_that_cannot_be_evaluated_leaves_its_reason_on_the_task() {
    // The output it reads is not there: only the run can tell.
    const BROKEN_IF: &str = "id: broken_if\ntasks:\n  a: { operator: noop }\n  \
                             b: { operator: noop, needs: [a], if: \"{{ tasks.a.outputs.flag }}\" }\n";
    let (store, deps, run_id) = setup(BROKEN_IF).await;
    let workflow =
        crate::catalog::compile_source(Path::new("broken_if.yaml"), BROKEN_IF).expect("valid");
    let worker = FakeWorker {
        store: store.clone(),
        workflow: Arc::new(workflow),
        run_id: run_id.clone(),
    };
    let mut events = store.subscribe();
    let mut scheduler = Scheduler::new(store.clone(), deps, SchedulerConfig::default());
    scheduler.adopt(&run_id).await.expect("adopt");
    pump(&mut scheduler, &store, &mut events).await;
    worker.run_task("a", true).await;
    pump(&mut scheduler, &store, &mut events).await;
    let b = store
        .task_instances(&run_id)
        .await
        .expect("tis")
        .into_iter()
        .find(|t| t.task_id == "b")
        .expect("b");
    assert_eq!(b.state, TaskState::UpstreamFailed);
    let error = b.error.expect("the reason is stored");
    assert!(
        error.starts_with("the task's `if` could not be evaluated: ") && error.contains("flag"),
        "{error}"
    );
    assert_eq!(run_state(&store, &run_id).await.state, RunState::Failed);
}

// ---------------------------------------------------------------------------------------------
// A random walk over the scheduler's bookkeeping

/// SplitMix64: a small seeded generator, so a failing walk replays exactly from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// Retries, several trigger rules, a fan-in and an `on_failure` hook.
const SHUFFLED: &str = "id: shuffled\non_failure:\n  report: { operator: noop }\ntasks:\n  \
                        a: { operator: noop, retries: 1 }\n  \
                        b: { operator: noop, needs: [a], retries: 2 }\n  \
                        c: { operator: noop, needs: [a] }\n  \
                        d: { operator: noop, needs: [b, c], trigger_rule: all_done }\n  \
                        e: { operator: noop, needs: [c], trigger_rule: one_failed }\n  \
                        f: { operator: noop, needs: [d, e], trigger_rule: none_failed_min_one_success }\n";

/// One walk's world: the store, the scheduler (replaced when it "restarts"), the events it
/// has not been given yet, and the tries the fake worker holds.
struct Walk {
    store: Store,
    deps: SchedulerDeps,
    workflow: Arc<Workflow>,
    scheduler: Scheduler,
    events: mpsc::UnboundedReceiver<StoreEvent>,
    undelivered: std::collections::VecDeque<StoreEvent>,
    held: Vec<crate::store::ClaimedTask>,
    rng: SplitMix,
    /// What happened so far in this walk, printed when a check fails.
    trail: Vec<String>,
}

fn scheduler_config() -> SchedulerConfig {
    SchedulerConfig {
        adopt_new_runs: true,
        ..SchedulerConfig::default()
    }
}

impl Walk {
    fn collect_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.undelivered.push_back(event);
        }
    }

    async fn deliver(&mut self, count: usize) {
        self.collect_events();
        for _ in 0..count {
            let Some(event) = self.undelivered.pop_front() else {
                return;
            };
            self.trail.push(format!("event {}", describe(&event)));
            self.scheduler.handle(&event).await.expect("handle");
        }
    }

    async fn finish_held(&mut self, index: usize, worker: &FakeWorker) {
        let claimed = self.held.swap_remove(index);
        let cancelled = run_state(&self.store, &claimed.run_id).await.state == RunState::Cancelled;
        if cancelled {
            // A worker told that its run was cancelled stops the try: it ends cancelled.
            let completion = crate::store::TaskCompletion {
                id: claimed.id,
                run_id: claimed.run_id.clone(),
                task_id: claimed.task_id.clone(),
                try_number: claimed.try_number,
                state: TaskState::Cancelled,
                exit_code: None,
                error: Some("cancelled".into()),
                outputs: None,
                warnings: Vec::new(),
                summary: None,
                ended_at: Utc::now(),
                retry: None,
            };
            self.store
                .complete(&[], &[completion])
                .await
                .expect("complete");
            self.trail.push(format!(
                "{} try {} cancelled",
                claimed.task_id, claimed.try_number
            ));
            return;
        }
        let succeed = self.rng.percent(60);
        self.trail.push(format!(
            "{} try {} (attempt {}) {}",
            claimed.task_id,
            claimed.try_number,
            claimed.attempt,
            if succeed { "succeeded" } else { "failed" }
        ));
        worker.finish(&claimed, succeed).await;
    }

    /// What must hold whenever anyone looks: an ended run has no unfinished task and its
    /// state is the one its tasks earn; the scheduler's count of ended tasks matches its slots.
    async fn check(&self, run_id: &str) {
        let run = run_state(&self.store, run_id).await;
        let latest = latest_tries(&self.store, run_id).await;
        if let Some(tracker) = self.scheduler.runs.get(run_id) {
            assert_eq!(
                tracker.main_done,
                tracker.main_done_recounted(),
                "the scheduler miscounted ended tasks after: {:#?}",
                self.trail
            );
        }
        if !matches!(run.state, RunState::Success | RunState::Failed) {
            return;
        }
        let unfinished: Vec<(&String, &(u32, TaskState))> = latest
            .iter()
            .filter(|(_, (_, state))| !state.is_final())
            .collect();
        assert!(
            unfinished.is_empty(),
            "the run ended {} while {unfinished:?} had not, after: {:#?}",
            run.state,
            self.trail
        );
        assert_eq!(
            run.state,
            earned_state(&self.workflow, &latest),
            "the run's end does not match its tasks {latest:?}, after: {:#?}",
            self.trail
        );
    }
}

/// An event as one line of a walk's trail.
fn describe(event: &StoreEvent) -> String {
    match event {
        StoreEvent::TaskStates { changes, .. } => changes
            .iter()
            .map(|c| format!("{} try {} {}", c.task_id, c.try_number, c.state))
            .collect::<Vec<_>>()
            .join(", "),
        StoreEvent::RunState { state, .. } => format!("run {state}"),
        other => format!("{other:?}"),
    }
}

/// The latest try of each task of a run: task id → (try number, state).
async fn latest_tries(
    store: &Store,
    run_id: &str,
) -> std::collections::BTreeMap<String, (u32, TaskState)> {
    let mut latest = std::collections::BTreeMap::new();
    for ti in store.task_instances(run_id).await.expect("tries") {
        let entry = latest
            .entry(ti.task_id)
            .or_insert((ti.try_number, ti.state));
        if ti.try_number >= entry.0 {
            *entry = (ti.try_number, ti.state);
        }
    }
    latest
}

/// The state a run's main tasks earn it: failed when one of them failed (or could not run
/// because one upstream did), success otherwise.
fn earned_state(
    workflow: &Workflow,
    latest: &std::collections::BTreeMap<String, (u32, TaskState)>,
) -> RunState {
    let failed = workflow.tasks.iter().any(|t| {
        latest.get(&t.id).is_some_and(|(_, state)| {
            matches!(
                state.outcome(),
                Some(crate::lifecycle::Outcome::Failed | crate::lifecycle::Outcome::UpstreamFailed)
            )
        })
    });
    if failed {
        RunState::Failed
    } else {
        RunState::Success
    }
}

/// Runs `walks` random walks of `steps` steps on `store`, each on a new run, then drives
/// every run to its end and checks it ended as its tasks earned, each failed task having
/// had all its retries since its last clear.
async fn random_walks(store: Store, seed: u64, walks: usize, steps: usize) {
    let workflow = Arc::new(
        crate::catalog::compile_source(Path::new("shuffled.yaml"), SHUFFLED).expect("valid"),
    );
    let versions = Arc::new(Versions::new());
    versions.insert(workflow.clone());
    let deps = SchedulerDeps {
        versions,
        templates: Arc::new(Templates::new()),
        secrets: Arc::new(Secrets::from_pairs([])),
        vars: Arc::default(),
        base_url: "http://127.0.0.1:8080".into(),
    };
    let events = store.subscribe();
    let mut walk = Walk {
        scheduler: Scheduler::new(store.clone(), deps.clone(), scheduler_config()),
        store: store.clone(),
        deps,
        workflow: workflow.clone(),
        events,
        undelivered: Default::default(),
        held: Vec::new(),
        rng: SplitMix(seed),
        trail: Vec::new(),
    };
    for number in 0..walks {
        let run_id = launch(
            &store,
            &workflow,
            "shuffled.yaml",
            RunRequest::now("manual", Default::default()),
        )
        .await
        .expect("launch");
        walk.trail = vec![format!("seed {seed}, walk {number}, run {run_id}")];
        let worker = FakeWorker {
            store: store.clone(),
            workflow: workflow.clone(),
            run_id: run_id.clone(),
        };
        // Where each task's retries count from: its try 1, or the try its last clear made.
        let mut round_start: HashMap<String, u32> = HashMap::new();
        for _ in 0..steps {
            match walk.rng.below(100) {
                0..=29 => {
                    let count = walk.rng.below(4) + 1;
                    walk.deliver(count).await;
                }
                30..=44 => {
                    let limit = walk.rng.below(3) + 1;
                    let claimed = worker.claim(limit).await;
                    for c in &claimed {
                        walk.trail
                            .push(format!("{} try {} claimed", c.task_id, c.try_number));
                    }
                    walk.held.extend(claimed);
                }
                45..=74 if !walk.held.is_empty() => {
                    let index = walk.rng.below(walk.held.len());
                    walk.finish_held(index, &worker).await;
                }
                75..=81 => {
                    let queued = store
                        .queue_due(Utc::now() + Duration::hours(1))
                        .await
                        .expect("queue due");
                    if !queued.is_empty() {
                        walk.trail.push(format!("{} retries queued", queued.len()));
                    }
                }
                82..=89 => {
                    let position = walk.rng.below(workflow.tasks.len());
                    let tasks = workflow.with_downstream(position);
                    match store.clear_tasks(&run_id, &tasks).await.expect("clear") {
                        crate::store::ClearOutcome::Cleared {
                            tries,
                            run_requeued,
                        } => {
                            for t in &tries {
                                round_start.insert(t.task_id.clone(), t.try_number);
                            }
                            walk.trail
                                .push(format!("cleared {tasks:?} (run requeued: {run_requeued})"));
                        }
                        crate::store::ClearOutcome::Refused(_) => {}
                    }
                }
                90..=92 => {
                    if store.cancel_run(&run_id, "random").await.expect("cancel") {
                        walk.trail.push("run cancelled".into());
                    }
                }
                93..=95 => {
                    walk.trail.push("scheduler restarted".into());
                    walk.scheduler =
                        Scheduler::new(store.clone(), walk.deps.clone(), scheduler_config());
                    walk.scheduler.resume().await.expect("resume");
                }
                _ => walk.deliver(usize::MAX).await,
            }
            walk.check(&run_id).await;
        }
        // Drive the run to its end: every event delivered, every retry queued, every try run.
        let mut rounds = 0;
        loop {
            walk.deliver(usize::MAX).await;
            store
                .queue_due(Utc::now() + Duration::hours(1))
                .await
                .expect("queue due");
            walk.held.extend(worker.claim(100).await);
            while !walk.held.is_empty() {
                walk.finish_held(0, &worker).await;
            }
            walk.collect_events();
            let run = run_state(&store, &run_id).await;
            if run.state.is_final() && walk.undelivered.is_empty() {
                break;
            }
            rounds += 1;
            assert!(
                rounds < 100,
                "the run never ended ({}; tasks {:?}) after: {:#?}",
                run.state,
                latest_tries(&store, &run_id).await,
                walk.trail
            );
            walk.check(&run_id).await;
        }
        walk.check(&run_id).await;
        let latest = latest_tries(&store, &run_id).await;
        assert!(
            latest.values().all(|(_, state)| state.is_final()),
            "{latest:?} after: {:#?}",
            walk.trail
        );
        for task in &workflow.tasks {
            let Some(&(latest_try, state)) = latest.get(&task.id) else {
                continue;
            };
            let start = round_start.get(&task.id).copied().unwrap_or(1);
            let tries = latest_try + 1 - start;
            assert!(
                tries <= task.retries + 1,
                "{} had {tries} tries since try {start}, after: {:#?}",
                task.id,
                walk.trail
            );
            if state == TaskState::Failed {
                assert_eq!(
                    tries,
                    task.retries + 1,
                    "{} failed for good before using all its retries since try {start}, after: {:#?}",
                    task.id,
                    walk.trail
                );
            }
        }
    }
}

/// The seed of the random walks: `SLUICE_TEST_SEED` to explore others, fixed otherwise so
/// that every run of the suite walks the same paths.
fn walk_seed() -> u64 {
    std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5_1ce)
}

#[tokio::test]
async fn random_clears_cancels_retries_and_failures_never_end_a_run_with_unfinished_tasks() {
    let seed = walk_seed();
    for backend in crate::store::conformance::backends().await {
        // PostgreSQL round trips are slower: fewer walks there, on the same paths.
        let walks = if backend.name == "sqlite" { 200 } else { 15 };
        let started = std::time::Instant::now();
        random_walks(backend.store.clone(), seed, walks, 60).await;
        eprintln!(
            "{walks} random walks on {} (seed {seed}) in {:.1?}",
            backend.name,
            started.elapsed()
        );
        backend.finish().await;
    }
}
