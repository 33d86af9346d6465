//! How runs end, end to end through `sluice serve`: clearing a task of an ended run runs the
//! run again until every task has ended again (with all its retries), keeps its first start,
//! and fires `workflow` triggers on each real end only; a task whose `if` cannot be evaluated
//! says why in the run's JSON.

mod common;

use std::time::Duration;

use common::Sandbox;
use common::server::{Server, write_workflow};
use serde_json::{Value, json};

/// Polls until `workflow` has at least `count` runs, and returns them, newest first.
async fn wait_runs_of(server: &Server, workflow: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = server
            .get(&format!("/api/v1/runs?workflow={workflow}"))
            .await;
        let runs = list["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= count {
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

/// Follows a run until it has ended, checking at every look that an ended run has no
/// unfinished task; returns the ended run and every state it was seen in.
async fn follow_run(server: &Server, run_id: &str) -> (Value, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (status, run) = server.get(&format!("/api/v1/runs/{run_id}")).await;
        assert_eq!(status, 200, "{run}");
        let state = run["state"].as_str().expect("a state").to_owned();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if matches!(state.as_str(), "success" | "failed" | "cancelled") {
            let unfinished: Vec<&String> = run["tasks"]
                .as_object()
                .expect("tasks")
                .iter()
                .filter(|(_, t)| {
                    matches!(
                        t["state"].as_str(),
                        Some("pending" | "scheduled" | "queued" | "running")
                    )
                })
                .map(|(id, _)| id)
                .collect();
            assert!(
                unfinished.is_empty(),
                "the run is {state} while {unfinished:?} have not ended: {run}"
            );
            return (run, seen);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not end (seen {seen:?}): {run}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_failed_gate_runs_the_run_again_and_triggers_fire_on_real_ends_only() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "gated",
        r#"
tasks:
  a: { operator: shell, with: { command: "true" } }
  b:
    operator: shell
    needs: [a]
    retries: 1
    retry_delay: 0s
    with: { command: "echo try $SLUICE_TRY_NUMBER; sleep 1; exit 1" }
  c: { operator: shell, needs: [b], with: { command: "true" } }
"#,
    );
    write_workflow(
        &sb,
        "promote",
        "triggers:\n  - workflow: { id: gated, states: [success] }\ntasks:\n  go: { operator: noop }\n",
    );
    write_workflow(
        &sb,
        "page",
        "triggers:\n  - workflow: { id: gated, states: [failed] }\ntasks:\n  go: { operator: noop }\n",
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("gated", json!({})).await;
    let (failed, _) = follow_run(&server, &run_id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["tasks"]["b"]["state"], "failed");
    assert_eq!(failed["tasks"]["b"]["try_number"], 2, "b had its retry");
    assert_eq!(failed["tasks"]["c"]["state"], "upstream_failed");
    assert_eq!(failed["rerun_started_at"], Value::Null);
    wait_runs_of(&server, "page", 1).await;

    let (status, body) = server
        .post(&format!("/api/v1/runs/{run_id}/tasks/b/clear"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cleared"], json!(["b", "c"]));
    assert_eq!(body["run_requeued"], true);

    let (ended, seen) = follow_run(&server, &run_id).await;
    assert!(
        seen.iter().any(|s| s == "running"),
        "the cleared run ran again: {seen:?}"
    );
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(
        ended["tasks"]["b"]["try_number"], 4,
        "the cleared task had its retry again: {ended}"
    );
    assert_eq!(ended["tasks"]["b"]["state"], "failed");
    assert_eq!(ended["tasks"]["c"]["try_number"], 2);
    assert_eq!(ended["tasks"]["c"]["state"], "upstream_failed");
    assert_eq!(
        ended["started_at"], failed["started_at"],
        "the run keeps its first start"
    );
    let time = |value: &Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time")).expect("RFC 3339")
    };
    assert!(
        time(&ended["rerun_started_at"]) >= time(&failed["ended_at"]),
        "the re-run started after the first end: {ended}"
    );

    // Each real end fired the failure trigger once; the promotion never fired.
    let pages = wait_runs_of(&server, "page", 2).await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    let (_, promotions) = server.get("/api/v1/runs?workflow=promote").await;
    assert_eq!(promotions["runs"], json!([]), "{promotions}");

    // The document describes the new field.
    let (_, openapi) = server.get("/api/v1/openapi.json").await;
    assert!(
        openapi["components"]["schemas"]["RunView"]["properties"]
            .get("rerun_started_at")
            .is_some(),
        "{}",
        openapi["components"]["schemas"]["RunView"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_if_cannot_be_evaluated_says_why_in_the_run() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "guarded",
        r#"
tasks:
  probe: { operator: shell, with: { command: "true" } }
  deploy:
    operator: shell
    needs: [probe]
    if: "{{ tasks.probe.outputs.ready }}"
    with: { command: "true" }
"#,
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("guarded", json!({})).await;
    let (run, _) = follow_run(&server, &run_id).await;
    assert_eq!(run["state"], "failed", "{run}");
    let deploy = &run["tasks"]["deploy"];
    assert_eq!(deploy["state"], "upstream_failed", "{run}");
    let error = deploy["error"].as_str().expect("a reason");
    assert!(
        error.starts_with("the task's `if` could not be evaluated: ") && error.contains("ready"),
        "{error}"
    );
}

/// A failure no retry can change fails its task at once: outputs over
/// `[worker] max_output_bytes` are rejected after one try although the task has `retries: 3`,
/// with an error that names the size and the limit, which is also the try's summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_try_fails_its_task_at_once_despite_retries() {
    let sb = Sandbox::new();
    sb.write("sluice.toml", "[worker]\nmax_output_bytes = 100\n");
    write_workflow(
        &sb,
        "oversized",
        r#"
tasks:
  produce:
    operator: shell
    retries: 3
    retry_delay: 0s
    with:
      command: |
        echo "blob=$(head -c 300 /dev/zero | tr '\0' x)" > "$SLUICE_OUTPUT"
  small:
    operator: shell
    with:
      command: echo "n=1" > "$SLUICE_OUTPUT"
"#,
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("oversized", json!({})).await;
    let (run, _) = follow_run(&server, &run_id).await;
    assert_eq!(run["state"], "failed", "{run}");
    let produce = &run["tasks"]["produce"];
    assert_eq!(produce["state"], "failed", "{run}");
    assert_eq!(produce["try_number"], 1, "no retry was made: {run}");
    let error = produce["error"].as_str().expect("an error");
    assert!(
        error.contains("bytes of JSON, more than the limit of 100 bytes")
            && error.contains("`[worker] max_output_bytes`"),
        "{error}"
    );
    assert_eq!(produce["summary"], produce["error"], "{run}");
    // Outputs under the limit pass.
    assert_eq!(run["tasks"]["small"]["state"], "success", "{run}");
    assert_eq!(run["tasks"]["small"]["outputs"]["n"], "1", "{run}");
}
