//! Limits that keep a workflow file from freezing or crashing a process, through the real
//! binary: templates that loop for ever fail their task (under `run` and under `serve`, where
//! the server keeps answering) or refuse a GitHub delivery's trigger, and durations too long
//! to compute with are refused.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::server::{Server, client, write_workflow};
use common::{Finished, Sandbox, wait_for};
use serde_json::json;

/// The loop from the bug report: 10^10 iterations, which `sluice run` never finished.
const RUNAWAY_COMMAND: &str = "echo {% for i in range(100000) %}{% for j in range(100000) %}\
                               {% endfor %}{% endfor %}done";

/// Runs `sluice run FILE --json` and kills it if it has not ended within `limit`, so a
/// regression fails this test instead of hanging it.
fn run_with_limit(sb: &Sandbox, file: &std::path::Path, limit: Duration) -> Finished {
    let mut child = sb
        .command()
        .arg("run")
        .arg(file)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice run");
    let pid = child.id();
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "`sluice run` (pid {pid}) did not end within {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output").into()
}

#[test]
fn a_runaway_template_fails_its_task_instead_of_freezing_sluice_run() {
    let sb = Sandbox::new();
    let file = sb.write(
        "runaway.yaml",
        &format!(
            r#"
tasks:
  loop:
    operator: shell
    timeout: 20s
    with:
      command: "{RUNAWAY_COMMAND}"
  after: {{ operator: noop, needs: [loop] }}
  fine:
    operator: shell
    env:
      LOOPY: "{{% for i in range(100000) %}}{{% for j in range(100000) %}}x{{% endfor %}}{{% endfor %}}"
    with: {{ command: "echo never" }}
"#
        ),
    );
    let started = Instant::now();
    let out = run_with_limit(&sb, &file, Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert!(took < Duration::from_secs(20), "the run took {took:?}");
    let json = out.json();
    assert_eq!(json["tasks"]["loop"]["state"], "failed", "{json}");
    let error = json["tasks"]["loop"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`with.command`") && error.contains("more work than one render may do"),
        "error: {error}"
    );
    assert_eq!(json["tasks"]["after"]["state"], "upstream_failed", "{json}");
    let error = json["tasks"]["fine"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`env.LOOPY`") && error.contains("more work"),
        "error: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_template_under_serve_leaves_the_server_answering() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "runaway",
        r#"
params:
  n: { type: integer, default: 3 }
tasks:
  deep:
    operator: shell
    timeout: 20s
    with:
      command: "echo {% for i in range(params.n) %}{% for j in range(params.n) %}{% for k in range(params.n) %}{% endfor %}{% endfor %}{% endfor %}done"
  gated:
    operator: noop
    if: "{% for i in range(params.n) %}{% for j in range(params.n) %}{% for k in range(params.n) %}{% endfor %}{% endfor %}{% endfor %}true"
"#,
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("runaway", json!({ "n": 5000 })).await;

    // While the templates burn their budget, every other request is answered promptly.
    let health = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let asked = Instant::now();
        let response = health
            .get(format!("{}/healthz", server.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/healthz did not answer: {e}\n{}", server.logs()));
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "/healthz took {:?}",
            asked.elapsed()
        );
        let (_, run) = server.get(&format!("/api/v1/runs/{run_id}")).await;
        if run["state"] == "failed" {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not fail: {run}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["tasks"]["deep"]["state"], "failed", "{run}");
    let error = run["tasks"]["deep"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`with.command`") && error.contains("more work"),
        "error: {error}"
    );
    // The `if` fails without holding up the scheduler (its reason is in the log).
    assert_eq!(run["tasks"]["gated"]["state"], "upstream_failed", "{run}");
    wait_for(
        "the `if` failure to be logged",
        Duration::from_secs(10),
        || server.logs().contains("`if`: "),
    );
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_github_params_mapping_refuses_and_the_delivery_is_answered() {
    const SECRET: &str = "budget-test-secret";
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "looping",
        r#"
triggers:
  - github:
      events: [push]
      params:
        branch: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ event.ref }}"
params:
  branch: { type: string }
tasks:
  t: { operator: noop }
"#,
    );
    write_workflow(
        &sb,
        "plain",
        r#"
triggers:
  - github: { events: [push], params: { branch: "{{ event.ref }}" } }
params:
  branch: { type: string }
tasks:
  t: { operator: noop }
"#,
    );
    let server = Server::start_with(&sb, &[], &[("SLUICE_GITHUB_WEBHOOK_SECRET", SECRET)]);
    let payload = json!({
        "ref": "refs/heads/main", "after": "9049f1265b7d61be4a8904a9a27120d2064dab3b",
        "repository": {"full_name": "acme/evals"}, "sender": {"login": "octocat"}, "commits": []
    });
    let body = serde_json::to_vec(&payload).expect("serialize");
    let signature = sluice::github::signature::sign(SECRET.as_bytes(), &body);
    let response = client()
        .post(format!("{}/hooks/github", server.base))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "budget-1")
        .header("X-Hub-Signature-256", signature)
        .timeout(Duration::from_secs(30))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the delivery was not answered: {e}\n{}", server.logs()));
    assert_eq!(response.status().as_u16(), 201);
    let answer: serde_json::Value = response.json().await.expect("JSON answer");
    assert_eq!(answer["runs"].as_array().map(Vec::len), Some(1), "{answer}");
    let reason = answer["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("looping: ") && reason.contains("more work than one render may do"),
        "{answer}"
    );
    assert_eq!(server.terminate(), Some(0));
}

/// Regression: `retry_delay: 10000000000000s` passed `validate`, then overflowed the next
/// try's date when the task failed, killing the try unreported and hanging the run.
#[test]
fn durations_longer_than_a_year_are_refused_before_the_run() {
    let sb = Sandbox::new();
    let file = sb.write(
        "huge.yaml",
        r#"
tasks:
  a:
    operator: shell
    retries: 1
    retry_delay: 10000000000000s
    with: { command: "exit 1" }
"#,
    );
    let out = run_with_limit(&sb, &file, Duration::from_secs(60));
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("huge.yaml:6:18: error") && out.stderr.contains("longer than 365 days"),
        "{}",
        out.stderr
    );
}
