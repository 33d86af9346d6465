//! Scheduler tests with the time as a parameter: deadlines fire once, and never again after
//! a restart.

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
