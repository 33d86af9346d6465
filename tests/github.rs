//! GitHub webhooks end to end, through a real `sluice serve`: deliveries with real-shaped
//! payloads (tests/fixtures/github) signed by the test, the runs they start and their params,
//! what abuse gets (nothing stored, nothing started), redeliveries, 200 concurrent deliveries,
//! and commit statuses posted to a fake GitHub API that records what it receives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Sandbox;
use common::github::{FakeGithub, HEAD, SECRET, deliver, deliver_raw, fixture};
use common::server::{Server, write_workflow};
use serde_json::{Value, json};
use sluice::github::signature::sign;

fn start(sb: &Sandbox, extra_env: &[(&str, &str)]) -> Server {
    let mut env = vec![("SLUICE_GITHUB_WEBHOOK_SECRET", SECRET)];
    env.extend_from_slice(extra_env);
    Server::start_with(sb, &[], &env)
}

async fn all_runs(server: &Server) -> Vec<Value> {
    let (status, list) = server.get("/api/v1/runs?limit=500").await;
    assert_eq!(status, 200, "{list}");
    list["runs"].as_array().cloned().unwrap_or_default()
}

async fn deliveries(server: &Server) -> Vec<Value> {
    let (status, list) = server.get("/api/v1/github/deliveries?limit=500").await;
    assert_eq!(status, 200, "{list}");
    list["deliveries"].as_array().cloned().unwrap_or_default()
}

/// The one run a `201` answer started, read back through the API.
async fn started_run(server: &Server, answer: &Value) -> Value {
    let runs = answer["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{answer}");
    let id = runs[0].as_str().expect("run id");
    let (status, run) = server.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, 200, "{run}");
    run
}

const PR_EVALS: &str = r#"
params:
  pr: { type: integer }
  sha: { type: string }
triggers:
  - github:
      events: [pull_request]
      actions: [opened, synchronize, reopened]
      branches: [main]
      params:
        pr: "{{ event.number }}"
        sha: "{{ event.pull_request.head.sha }}"
tasks:
  report:
    operator: shell
    with: { command: "echo head={{ event.pull_request.head.ref }} >> $SLUICE_OUTPUT" }
"#;

const PROMPTS: &str = r#"
params:
  ref: { type: string }
triggers:
  - github:
      events: [push]
      branches: [main, "release/**", "!release/old/**"]
      paths: ["prompts/**", "!prompts/drafts/**"]
      params: { ref: "{{ event.ref }}" }
tasks:
  t: { operator: noop }
"#;

const RELEASE: &str = r#"
params:
  tag: { type: string }
triggers:
  - github:
      events: [release]
      actions: [published]
      tags: ["v1.*"]
      params: { tag: "{{ event.release.tag_name }}" }
tasks:
  t: { operator: noop }
"#;

const AFTER_CI: &str = r#"
params:
  conclusion: { type: string }
triggers:
  - github:
      events: [workflow_run]
      actions: [completed]
      repositories: [acme/evals]
      params: { conclusion: "{{ event.workflow_run.conclusion }}" }
tasks:
  t: { operator: noop }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_start_exactly_the_matching_runs_with_their_params() {
    let sb = Sandbox::new();
    write_workflow(&sb, "pr-evals", PR_EVALS);
    write_workflow(&sb, "prompts", PROMPTS);
    write_workflow(&sb, "release", RELEASE);
    write_workflow(&sb, "after-ci", AFTER_CI);
    let server = start(&sb, &[]);

    let (status, answer) = deliver(&server, "ping", "d-ping", &fixture("ping")).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "{answer}"
    );

    // pull_request opened: one run of pr-evals, with params and the trigger recorded.
    let (status, answer) = deliver(
        &server,
        "pull_request",
        "d-opened",
        &fixture("pull_request_opened"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["outcome"], "started");
    let run = started_run(&server, &answer).await;
    assert_eq!(run["workflow"], "pr-evals");
    assert_eq!(run["params"], json!({ "pr": 42, "sha": HEAD }));
    assert_eq!(run["trigger"], "github");
    assert_eq!(run["triggered_by"], "github:d-opened");
    let details = &run["trigger_details"];
    assert_eq!(details["event"], "pull_request");
    assert_eq!(details["action"], "opened");
    assert_eq!(details["delivery"], "d-opened");
    assert_eq!(details["repository"], "acme/evals");
    assert_eq!(details["sha"], HEAD);
    assert_eq!(details["sender"], "octocat");
    // The payload reaches the task's templates as `event`.
    let id = run["run_id"].as_str().expect("id");
    let ended = server.wait_run(id, Duration::from_secs(30)).await;
    assert_eq!(ended["state"], "success", "{ended}");
    assert_eq!(ended["tasks"]["report"]["outputs"]["head"], "grader-v2");

    let (status, answer) = deliver(
        &server,
        "pull_request",
        "d-sync",
        &fixture("pull_request_synchronize"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(started_run(&server, &answer).await["workflow"], "pr-evals");

    // A closed pull request matches no action: 202 with the reason.
    let (status, answer) = deliver(
        &server,
        "pull_request",
        "d-closed",
        &fixture("pull_request_closed"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["outcome"], "ignored");
    assert!(answer["runs"].as_array().is_some_and(Vec::is_empty));
    let reason = answer["reason"].as_str().expect("reason");
    assert!(
        reason.contains("pr-evals") && reason.contains("action `closed`"),
        "{reason}"
    );

    // Pushes: branch and path filters with exclusions.
    let push = fixture("push");
    let (status, answer) = deliver(&server, "push", "d-push", &push).await;
    assert_eq!(status, 201, "{answer}");
    let run = started_run(&server, &answer).await;
    assert_eq!(run["workflow"], "prompts");
    assert_eq!(run["params"]["ref"], "refs/heads/main");

    let mut drafts = push.clone();
    drafts["commits"] = json!([{ "id": HEAD, "added": ["prompts/drafts/new.txt"], "modified": ["README.md"], "removed": [] }]);
    let (status, answer) = deliver(&server, "push", "d-drafts", &drafts).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("changed files")),
        "{answer}"
    );

    let mut old_release = push.clone();
    old_release["ref"] = json!("refs/heads/release/old/1");
    let (status, answer) = deliver(&server, "push", "d-old", &old_release).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("release/old/1")),
        "{answer}"
    );

    let mut new_release = push.clone();
    new_release["ref"] = json!("refs/heads/release/2/rc");
    let (status, answer) = deliver(&server, "push", "d-new", &new_release).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        started_run(&server, &answer).await["params"]["ref"],
        "refs/heads/release/2/rc"
    );

    let (status, answer) = deliver(
        &server,
        "release",
        "d-release",
        &fixture("release_published"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let run = started_run(&server, &answer).await;
    assert_eq!(
        (run["workflow"].as_str(), &run["params"]["tag"]),
        (Some("release"), &json!("v1.4.0"))
    );

    let (status, answer) = deliver(
        &server,
        "workflow_run",
        "d-ci",
        &fixture("workflow_run_completed"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let run = started_run(&server, &answer).await;
    assert_eq!(run["workflow"], "after-ci");
    assert_eq!(run["params"]["conclusion"], "success");
    assert_eq!(run["trigger_details"]["sha"], HEAD);

    // An event nobody listens for.
    let (status, answer) = deliver(
        &server,
        "issues",
        "d-issue",
        &json!({"action": "opened", "issue": {"number": 1}}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no workflow")),
        "{answer}"
    );

    // Exactly the matching runs exist, and every delivery is listed, newest first.
    let runs = all_runs(&server).await;
    let mut by_workflow: Vec<&str> = runs.iter().filter_map(|r| r["workflow"].as_str()).collect();
    by_workflow.sort_unstable();
    assert_eq!(
        by_workflow,
        [
            "after-ci", "pr-evals", "pr-evals", "prompts", "prompts", "release"
        ]
    );
    let listed = deliveries(&server).await;
    let ids: Vec<&str> = listed
        .iter()
        .filter_map(|d| d["delivery"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "d-issue",
            "d-ci",
            "d-release",
            "d-new",
            "d-old",
            "d-drafts",
            "d-push",
            "d-closed",
            "d-sync",
            "d-opened",
            "d-ping"
        ]
    );
    assert_eq!(listed[7]["outcome"], "ignored");
    assert_eq!(listed[7]["action"], "closed");
    assert_eq!(listed[7]["repository"], "acme/evals");
    assert_eq!(listed[9]["runs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_is_refused_and_starts_nothing() {
    let sb = Sandbox::new();
    write_workflow(&sb, "pr-evals", PR_EVALS);
    let server = start(&sb, &[]);
    let body = serde_json::to_vec(&fixture("pull_request_opened")).expect("serialize");
    let event = Some("pull_request");

    let (status, answer) = deliver_raw(
        &server,
        event,
        Some("a1"),
        body.clone(),
        None,
        "application/json",
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("X-Hub-Signature-256"))
    );
    let forged = sign(b"not the secret", &body);
    let (status, _) = deliver_raw(
        &server,
        event,
        Some("a2"),
        body.clone(),
        Some(forged),
        "application/json",
    )
    .await;
    assert_eq!(status, 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _) = deliver_raw(
        &server,
        event,
        Some("a3"),
        tampered,
        Some(sign(SECRET.as_bytes(), &body)),
        "application/json",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = deliver_raw(
        &server,
        event,
        Some("a4"),
        body.clone(),
        Some("sha256=xyz".into()),
        "application/json",
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        deliveries(&server).await.is_empty(),
        "refused deliveries are not stored"
    );

    // Signed but not usable: recorded as rejected, nothing started.
    let broken = b"{\"action\": \"opened\", ".to_vec();
    let signature = sign(SECRET.as_bytes(), &broken);
    let (status, answer) = deliver_raw(
        &server,
        event,
        Some("a5"),
        broken,
        Some(signature),
        "application/json",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{answer}"
    );
    let form = b"payload=%7B%7D".to_vec();
    let signature = sign(SECRET.as_bytes(), &form);
    let (status, answer) = deliver_raw(
        &server,
        event,
        Some("a6"),
        form,
        Some(signature),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("application/json")),
        "{answer}"
    );
    let signature = sign(SECRET.as_bytes(), &body);
    let (status, answer) = deliver_raw(
        &server,
        None,
        Some("a7"),
        body.clone(),
        Some(signature),
        "application/json",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("X-GitHub-Event"))
    );

    let signature = sign(SECRET.as_bytes(), &body);
    let (status, answer) = deliver_raw(
        &server,
        event,
        None,
        body.clone(),
        Some(signature.clone()),
        "application/json",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("X-GitHub-Delivery"))
    );
    let long_id = "x".repeat(101);
    let (status, _) = deliver_raw(
        &server,
        event,
        Some(&long_id),
        body.clone(),
        Some(signature),
        "application/json",
    )
    .await;
    assert_eq!(status, 400);
    let list = b"[1, 2]".to_vec();
    let signature = sign(SECRET.as_bytes(), &list);
    let (status, answer) = deliver_raw(
        &server,
        event,
        Some("a9"),
        list,
        Some(signature),
        "application/json",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("not an object")),
        "{answer}"
    );

    // Over 25 MB.
    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    let signature = sign(SECRET.as_bytes(), &huge);
    let (status, _) = deliver_raw(
        &server,
        event,
        Some("a8"),
        huge,
        Some(signature),
        "application/json",
    )
    .await;
    assert_eq!(status, 413);

    let listed = deliveries(&server).await;
    let outcomes: Vec<(&str, &str)> = listed
        .iter()
        .map(|d| {
            (
                d["delivery"].as_str().unwrap_or(""),
                d["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("a9", "rejected"), ("a6", "rejected"), ("a5", "rejected")]
    );
    let (status, answer) = server.get("/api/v1/github/deliveries?limit=0").await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = server.get("/api/v1/github/deliveries?cursor=nope").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("cursor")),
        "{answer}"
    );
    let (status, page) = server.get("/api/v1/github/deliveries?limit=2").await;
    assert_eq!(status, 200);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = server
        .get(&format!("/api/v1/github/deliveries?cursor={cursor}"))
        .await;
    assert_eq!(rest["deliveries"][0]["delivery"], "a5");
    assert!(all_runs(&server).await.is_empty(), "abuse started runs");

    // Without a secret, nothing is accepted, however it is signed.
    let unconfigured = Sandbox::new();
    write_workflow(&unconfigured, "pr-evals", PR_EVALS);
    // An empty variable counts as unset, so a secret in the caller's environment cannot leak in.
    let bare = Server::start_with(&unconfigured, &[], &[("SLUICE_GITHUB_WEBHOOK_SECRET", "")]);
    let signature = sign(SECRET.as_bytes(), &body);
    let (status, answer) = deliver_raw(
        &bare,
        event,
        Some("b1"),
        body,
        Some(signature),
        "application/json",
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("SLUICE_GITHUB_WEBHOOK_SECRET"))
    );
    assert!(all_runs(&bare).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_starts_nothing_new_and_answers_with_the_first_runs() {
    let sb = Sandbox::new();
    write_workflow(&sb, "pr-evals", PR_EVALS);
    let server = start(&sb, &[]);
    let payload = fixture("pull_request_opened");
    let (status, first) = deliver(&server, "pull_request", "r1", &payload).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["redelivery"], false);
    let (status, again) = deliver(&server, "pull_request", "r1", &payload).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["redelivery"], true);
    assert_eq!(again["runs"], first["runs"]);
    assert_eq!(again["outcome"], "started");
    assert_eq!(all_runs(&server).await.len(), 1);
    assert_eq!(deliveries(&server).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_deliveries_are_all_answered_and_start_each_run_once() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "on-push",
        "triggers:\n  - github: { events: [push] }\ntasks:\n  t: { operator: noop }\n",
    );
    let server = Arc::new(start(&sb, &[]));
    let payload = Arc::new(fixture("push"));
    // 100 delivery ids, each sent twice at the same time (GitHub's redelivery racing the
    // original): 200 requests in flight together.
    let mut requests = Vec::new();
    for copy in 0..2 {
        for n in 0..100 {
            let server = server.clone();
            let payload = payload.clone();
            requests.push(tokio::spawn(async move {
                let sent = std::time::Instant::now();
                let (status, answer) = deliver(&server, "push", &format!("c-{n}"), &payload).await;
                (copy, n, status, answer, sent.elapsed())
            }));
        }
    }
    let mut runs_by_delivery: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for request in requests {
        let (_, n, status, answer, took) = request.await.expect("join");
        // GitHub gives up on a delivery after 10 seconds.
        assert!(
            took < Duration::from_secs(10),
            "delivery c-{n} took {took:?}"
        );
        assert!(
            (200..300).contains(&status),
            "delivery c-{n}: {status} {answer}"
        );
        let runs: Vec<String> = answer["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        assert_eq!(runs.len(), 1, "{answer}");
        // Both copies name the same run.
        let known = runs_by_delivery.entry(n).or_insert_with(|| runs.clone());
        assert_eq!(*known, runs, "delivery c-{n} named two different runs");
    }
    let runs = all_runs(&server).await;
    assert_eq!(runs.len(), 100, "each run created exactly once");
    assert_eq!(deliveries(&server).await.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_report_pending_then_their_result_as_commit_statuses() {
    let (fake, address) = FakeGithub::spawn().await;

    let sb = Sandbox::new();
    sb.write(
        "sluice.toml",
        &format!("public_url = \"https://sluice.example.com\"\n\n[github]\napi_url = \"http://{address}/\"\n"),
    );
    write_workflow(
        &sb,
        "gate-pass",
        "triggers:\n  - github: { events: [pull_request] }\ntasks:\n  t: { operator: noop }\n",
    );
    write_workflow(
        &sb,
        "gate-fail",
        r#"
triggers:
  - github:
      events: [pull_request]
      status: { context: evals/quality, description: Eval gate }
tasks:
  score:
    operator: shell
    with: { command: "echo score too low; exit 1" }
"#,
    );
    write_workflow(
        &sb,
        "quiet",
        "triggers:\n  - github: { events: [pull_request], status: false }\ntasks:\n  t: { operator: noop }\n",
    );
    let server = start(&sb, &[("SLUICE_SECRET_GITHUB_TOKEN", "ghp_test_token")]);
    let (status, answer) = deliver(
        &server,
        "pull_request",
        "s1",
        &fixture("pull_request_opened"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["runs"].as_array().map(Vec::len), Some(3));
    let run_of = |workflow: &str| {
        let workflow = workflow.to_owned();
        let server = &server;
        async move {
            all_runs(server)
                .await
                .into_iter()
                .find(|r| r["workflow"] == workflow.as_str())
                .and_then(|r| r["run_id"].as_str().map(str::to_owned))
                .expect("a run of the workflow")
        }
    };
    let pass = run_of("gate-pass").await;
    let fail = run_of("gate-fail").await;
    let quiet = run_of("quiet").await;
    for id in [&pass, &fail, &quiet] {
        server.wait_run(id, Duration::from_secs(30)).await;
    }

    // Each reporting run ends with a final status that GitHub accepted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let requests = loop {
        let requests = fake.requests.lock().expect("lock").clone();
        let accepted_finals = requests
            .iter()
            .filter(|r| r.answered == 201 && r.body["state"] != "pending")
            .count();
        if accepted_finals >= 2 {
            break requests;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses seen: {requests:#?}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for r in &requests {
        assert_eq!(r.repository, "acme/evals");
        assert_eq!(r.sha, HEAD);
        assert_eq!(r.authorization, "Bearer ghp_test_token");
    }
    let states_of = |context: &str| -> Vec<(String, u16)> {
        requests
            .iter()
            .filter(|r| r.body["context"] == context)
            .map(|r| {
                (
                    r.body["state"].as_str().unwrap_or("").to_owned(),
                    r.answered,
                )
            })
            .collect()
    };
    let pass_states = states_of("sluice/gate-pass");
    let fail_states = states_of("evals/quality");
    // Pending first, then the result; the one answered 500 was tried again.
    let accepted = |states: &[(String, u16)]| -> Vec<String> {
        states
            .iter()
            .filter(|(_, code)| *code == 201)
            .map(|(s, _)| s.clone())
            .collect()
    };
    assert_eq!(
        accepted(&pass_states),
        ["pending", "success"],
        "{pass_states:?}"
    );
    assert_eq!(
        accepted(&fail_states),
        ["pending", "failure"],
        "{fail_states:?}"
    );
    let retried = pass_states
        .iter()
        .chain(&fail_states)
        .filter(|(_, code)| *code == 500)
        .count();
    assert_eq!(retried, 1, "the 500 was followed by a retry");
    assert_eq!(pass_states.len() + fail_states.len(), 5);
    for (context, run) in [("sluice/gate-pass", &pass), ("evals/quality", &fail)] {
        for r in requests.iter().filter(|r| r.body["context"] == context) {
            assert_eq!(
                r.body["target_url"],
                format!("https://sluice.example.com/runs/{run}")
            );
        }
    }
    let failure = requests
        .iter()
        .find(|r| r.body["state"] == "failure")
        .expect("a failure status");
    assert!(
        failure.body["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Eval gate: failed")),
        "{failure:?}"
    );
    assert!(
        requests.iter().all(|r| r.body["context"] != "sluice/quiet"),
        "`status: false` reports nothing"
    );
}
