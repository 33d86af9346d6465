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
