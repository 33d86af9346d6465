//! Cross-workflow triggers and sensors end to end, through `sluice serve`: `workflow`
//! triggers with an `if` over upstream outputs, the `trigger` operator waiting for its run,
//! and `wait` sensors that give their worker slot back between checks.

mod common;

use std::time::Duration;

use common::Sandbox;
use common::server::{Server, write_workflow};
use serde_json::{Value, json};

/// Polls until `workflow` has at least `count` runs, and returns them, oldest first.
async fn wait_runs_of(server: &Server, workflow: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = server
            .get(&format!("/api/v1/runs?workflow={workflow}"))
            .await;
        let mut runs = list["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= count {
            runs.reverse();
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workflow} has {} runs, not {count}\n{}",
            runs.len(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_trigger_starts_a_run_only_when_its_if_holds() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "a",
        r#"
params:
  drift: { type: string }
tasks:
  check:
    operator: shell
    with: { command: "echo drift={{ params.drift }} >> $SLUICE_OUTPUT" }
"#,
    );
    write_workflow(
        &sb,
        "b",
        r#"
params:
  reason: { type: string }
triggers:
  - workflow:
      id: a
      states: [success]
      if: "{{ upstream.outputs.check.drift == 'yes' }}"
      params: { reason: "{{ upstream.outputs.check.drift }}" }
tasks:
  react: { operator: noop }
"#,
    );
    let server = Server::start_with(&sb, &[], &[]);
    let yes = server.start_run("a", json!({"drift": "yes"})).await;
    let b_runs = wait_runs_of(&server, "b", 1).await;
    assert_eq!(b_runs[0]["params"]["reason"], "yes");
    assert_eq!(b_runs[0]["trigger"], "workflow");
    assert_eq!(b_runs[0]["triggered_by"], format!("a/{yes}"));
    let first_b = b_runs[0]["run_id"].as_str().expect("id").to_owned();
    assert_eq!(
        server.wait_run(&first_b, Duration::from_secs(30)).await["state"],
        "success"
    );

    // A run whose output differs starts nothing: the next matching run is the second `b`.
    let no = server.start_run("a", json!({"drift": "no"})).await;
    assert_eq!(
        server.wait_run(&no, Duration::from_secs(30)).await["state"],
        "success"
    );
    let again = server.start_run("a", json!({"drift": "yes"})).await;
    let b_runs = wait_runs_of(&server, "b", 2).await;
    assert_eq!(b_runs.len(), 2, "{b_runs:?}");
    assert_eq!(b_runs[1]["triggered_by"], format!("a/{again}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_task_that_waits_takes_the_childs_state_and_outputs() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "child",
        r#"
params:
  n: { type: integer }
tasks:
  calc:
    operator: shell
    with: { command: "echo '{\"value\": {{ params.n * 2 }}}' > $SLUICE_OUTPUT" }
"#,
    );
    write_workflow(
        &sb,
        "parent",
        r#"
tasks:
  start:
    operator: trigger
    with: { workflow: child, params: { n: 21 }, wait: true, poll_interval: 1s }
  use:
    operator: shell
    needs: [start]
    with: { command: "echo got={{ tasks.start.outputs.outputs.calc.value }} >> $SLUICE_OUTPUT" }
  bad:
    operator: trigger
    with: { workflow: nowhere }
"#,
    );
    let server = Server::start_with(&sb, &[], &[]);
    let parent = server.start_run("parent", json!({})).await;
    let run = server.wait_run(&parent, Duration::from_secs(60)).await;
    let start = &run["tasks"]["start"];
    assert_eq!(start["state"], "success", "{run}");
    assert_eq!(start["outputs"]["state"], "success");
    assert_eq!(start["outputs"]["outputs"]["calc"]["value"], 42);
    let got = &run["tasks"]["use"]["outputs"]["got"];
    assert!(*got == json!(42) || *got == json!("42"), "{run}");
    // The child ran once, however often the parent checked on it.
    let children = wait_runs_of(&server, "child", 1).await;
    assert_eq!(children.len(), 1);
    assert_eq!(
        start["outputs"]["run_id"], children[0]["run_id"],
        "{children:?}"
    );
    let error = run["tasks"]["bad"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no workflow `nowhere`"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_sensor_gives_its_slot_to_other_tasks() {
    let sb = Sandbox::new();
    let flag = sb.path().join("flag.txt");
    // One slot: the sensor is claimed first (higher priority); the file it waits for is made
    // by a task that can only run in that same slot while the sensor is not holding it.
    write_workflow(
        &sb,
        "sensing",
        &format!(
            r#"
tasks:
  sensor:
    operator: wait
    priority: 10
    with: {{ file: "{flag}", interval: 1s, timeout: 60s }}
  maker:
    operator: shell
    with: {{ command: "sleep 1.5 && touch '{flag}'" }}
  after: {{ operator: noop, needs: [sensor] }}
"#,
            flag = flag.display()
        ),
    );
    let server = Server::start_with(&sb, &["--concurrency", "1"], &[]);
    let run_id = server.start_run("sensing", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}");
    let sensor = &run["tasks"]["sensor"];
    // Rescheduled, not retried: still the first try.
    assert_eq!(sensor["try_number"], 1, "{run}");
    assert!(
        sensor["outputs"]["waited_seconds"].as_u64().is_some(),
        "{run}"
    );
    let maker = &run["tasks"]["maker"];
    let time = |task: &Value| {
        chrono::DateTime::parse_from_rfc3339(task["started_at"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("no start time ({e}): {run}"))
    };
    assert!(
        time(sensor) < time(maker),
        "the sensor started first: {run}"
    );
    assert!(reschedules(&server, &run_id).await >= 1);
}

/// How often a run's `sensor` task was rescheduled, from its log.
async fn reschedules(server: &Server, run_id: &str) -> usize {
    let (_, logs) = server
        .get(&format!("/api/v1/runs/{run_id}/tasks/sensor/logs"))
        .await;
    logs["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter(|l| {
                    l["line"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("next check in")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_rescheduled_twice_then_succeeding_completes_its_run() {
    let sb = Sandbox::new();
    let flag = sb.path().join("later.txt");
    write_workflow(
        &sb,
        "later",
        &format!(
            r#"
tasks:
  sensor:
    operator: wait
    with: {{ file: "{flag}", interval: 1s, timeout: 60s }}
  maker:
    operator: shell
    with: {{ command: "sleep 2.5 && touch '{flag}'" }}
  after: {{ operator: noop, needs: [sensor] }}
"#,
            flag = flag.display()
        ),
    );
    let server = Server::start_with(&sb, &["--concurrency", "2"], &[]);
    let run_id = server.start_run("later", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}");
    assert_eq!(run["tasks"]["after"]["state"], "success", "{run}");
    assert_eq!(run["tasks"]["sensor"]["try_number"], 1, "{run}");
    let count = reschedules(&server, &run_id).await;
    assert!(count >= 2, "the sensor rescheduled {count} times: {run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_that_times_out_fails_saying_what_it_waited_for() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "never",
        r#"
params:
  ready: { type: boolean, default: false }
tasks:
  sensor:
    operator: wait
    with: { condition: "{{ params.ready }}", interval: 1s, timeout: 2s }
"#,
    );
    let server = Server::start_with(&sb, &[], &[]);
    let run_id = server.start_run("never", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["tasks"]["sensor"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("gave up waiting for the condition to be true")
            && error.contains("timeout 2s"),
        "{run}"
    );
}
