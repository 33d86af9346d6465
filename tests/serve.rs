//! `sluice serve` end to end: the real binary on a free port, driven over HTTP. Triggers,
//! reloads of edited and broken files, cron, crash recovery after `kill -9`, and shutdown.

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::{Server, TOKEN, write_workflow};
use common::{Sandbox, wait_for};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_through_the_api_and_follow_the_run() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "greet",
        r#"
params:
  name: { type: string, default: world }
tasks:
  hello:
    operator: shell
    with: { command: "echo \"greeting=hello {{ params.name }}\" >> $SLUICE_OUTPUT" }
  done: { operator: noop, needs: [hello] }
"#,
    );
    let server = Server::start(&sb);
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, 200, "{health}");

    let (status, created) = server
        .post(
            "/api/v1/workflows/greet/runs",
            json!({"params": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let run_id = created["run_id"].as_str().expect("run id").to_owned();
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}");
    assert_eq!(run["tasks"]["hello"]["outputs"]["greeting"], "hello Ada");
    assert_eq!(run["params"]["name"], "Ada");

    let (status, problems) = server
        .post(
            "/api/v1/workflows/greet/runs",
            json!({"params": {"nmae": "x"}}),
        )
        .await;
    assert_eq!(status, 422, "{problems}");
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_broken_and_fixed_files_reload_without_a_restart() {
    let sb = Sandbox::new();
    let v1 = "tasks:\n  one: { operator: noop }\n";
    let v2 = "tasks:\n  one: { operator: noop }\n  two: { operator: noop, needs: [one] }\n";
    let broken = "tasks:\n  one: { operator: noop, needs: [missing] }\n";
    write_workflow(&sb, "flow", v1);
    let server = Server::start(&sb);
    let tasks = |wf: &Value| wf["task_count"].as_u64().unwrap_or(0);

    let (_, wf) = server.get("/api/v1/workflows/flow").await;
    assert_eq!(tasks(&wf), 1, "{wf}");

    write_workflow(&sb, "flow", v2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, wf) = server.get("/api/v1/workflows/flow").await;
        if tasks(&wf) == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit was not picked up: {wf}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    write_workflow(&sb, "flow", broken);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, errors) = server.get("/api/v1/import-errors").await;
        if errors.to_string().contains("missing") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no import error: {errors}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last good version keeps running.
    let (_, wf) = server.get("/api/v1/workflows/flow").await;
    assert_eq!(tasks(&wf), 2, "{wf}");
    let (status, created) = server.post("/api/v1/workflows/flow/runs", json!({})).await;
    assert_eq!(status, 201, "{created}");
    let run = server
        .wait_run(
            created["run_id"].as_str().expect("id"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(run["state"], "success");

    write_workflow(&sb, "flow", v1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, errors) = server.get("/api/v1/import-errors").await;
        let (_, wf) = server.get("/api/v1/workflows/flow").await;
        if !errors.to_string().contains("missing") && tasks(&wf) == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fix was not picked up: {errors}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_creates_scheduled_runs() {
    let sb = Sandbox::new();
    // Six fields: every second.
    write_workflow(
        &sb,
        "tick",
        "schedule: \"* * * * * *\"\ntasks:\n  t: { operator: noop }\n",
    );
    let server = Server::start(&sb);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, runs) = server.get("/api/v1/runs?workflow=tick&state=success").await;
        let list = runs["runs"].as_array().cloned().unwrap_or_default();
        if list.len() >= 2 {
            assert!(list.iter().all(|r| r["trigger"] == "schedule"), "{runs}");
            let dates: std::collections::HashSet<&str> = list
                .iter()
                .filter_map(|r| r["logical_date"].as_str())
                .collect();
            assert_eq!(
                dates.len(),
                list.len(),
                "each logical date runs once: {runs}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled runs: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// kill -9 while a task runs: after a restart, finished tasks are not run again, the
/// interrupted one is retried, and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_finishes_the_run() {
    let sb = Sandbox::new();
    let marks = sb.path().join("marks");
    let gate = sb.path().join("gate");
    write_workflow(
        &sb,
        "crash",
        &format!(
            r#"
tasks:
  first:
    operator: shell
    with: {{ command: "echo first >> {marks}" }}
  slow:
    operator: shell
    needs: [first]
    retries: 1
    retry_delay: 0s
    with: {{ command: "echo slow $SLUICE_TRY_NUMBER >> {marks}; while [ ! -e {gate} ]; do sleep 0.05; done" }}
  last:
    operator: shell
    needs: [slow]
    with: {{ command: "echo last >> {marks}" }}
"#,
            marks = marks.display(),
            gate = gate.display()
        ),
    );
    let server = Server::start(&sb);
    let (status, created) = server.post("/api/v1/workflows/crash/runs", json!({})).await;
    assert_eq!(status, 201, "{created}");
    let run_id = created["run_id"].as_str().expect("id").to_owned();
    wait_for("the slow task to start", Duration::from_secs(20), || {
        count_lines(&marks) >= 2
    });
    server.kill9();

    // The gate opens before the restart, so the retried try finishes at once.
    std::fs::write(&gate, "open").expect("gate");
    let server = Server::start(&sb);
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    assert_eq!(run["tasks"]["slow"]["try_number"], 2);
    let lines = std::fs::read_to_string(&marks).expect("marks");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(
        lines,
        ["first", "slow 1", "slow 2", "last"],
        "every task ran once, the interrupted one twice"
    );
}

/// With no retries left, the interrupted task fails with a clear error and the run fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_without_retries_fails_the_interrupted_task_clearly() {
    let sb = Sandbox::new();
    let started = sb.path().join("started");
    write_workflow(
        &sb,
        "fragile",
        &format!(
            "tasks:\n  stuck:\n    operator: shell\n    with: {{ command: \"echo $$ > {}; while true; do sleep 0.05; done\" }}\n",
            started.display()
        ),
    );
    let server = Server::start(&sb);
    let (_, created) = server
        .post("/api/v1/workflows/fragile/runs", json!({}))
        .await;
    let run_id = created["run_id"].as_str().expect("id").to_owned();
    wait_for("the task to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&started).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: u32 = std::fs::read_to_string(&started)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    server.kill9();
    // The try's processes die with the process that ran them.
    wait_for(
        "the cut-off try's process to die with serve",
        Duration::from_secs(10),
        || !common::process_alive(pid),
    );
    let server = Server::start(&sb);
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "failed", "{run}");
    let (_, detail) = server.get(&format!("/api/v1/runs/{run_id}")).await;
    let text = detail.to_string();
    assert!(text.contains("stopped before it finished"), "{text}");
}

fn sluice_client(sb: &Sandbox, server: &Server, args: &[&str]) -> common::Finished {
    let mut cmd = sb.command();
    cmd.args(args)
        .env("SLUICE_SERVER", &server.base)
        .env("SLUICE_API_TOKEN", TOKEN);
    cmd.output().expect("run sluice").into()
}

/// `sluice trigger`, `sluice runs` and `sluice backfill` against a live server; backfilled
/// runs of a `max_active_runs: 1` workflow never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_clients_and_max_active_runs() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "daily",
        r#"
schedule: "@daily"
start_date: 2026-01-01
max_active_runs: 1
params:
  note: { type: string, default: none }
  n: { type: integer, default: 1 }
tasks:
  work:
    operator: shell
    with: { command: "echo day={{ ds }} n={{ params.n }} >> $SLUICE_OUTPUT; sleep 0.1" }
"#,
    );
    // Paused, so the cron service leaves the backfill's dates to the backfill.
    let server = Server::start(&sb);
    let (status, _) = server
        .post("/api/v1/workflows/daily/pause", json!({}))
        .await;
    assert_eq!(status, 200);

    let triggered = sluice_client(&sb, &server, &["trigger", "daily", "-p", "n=7", "--wait"]);
    assert_eq!(triggered.code, 0, "{}", triggered.stderr);
    let run_id = triggered.stdout.trim().to_owned();
    let (_, run) = server.get(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(
        run["params"]["n"], 7,
        "-p values are typed by the workflow's params: {run}"
    );

    let listed = sluice_client(&sb, &server, &["runs", "--workflow", "daily", "--json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains(&run_id), "{}", listed.stdout);

    let backfill = sluice_client(
        &sb,
        &server,
        &[
            "backfill",
            "daily",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-04",
        ],
    );
    assert_eq!(backfill.code, 0, "{}", backfill.stderr);
    assert!(
        backfill.stdout.contains("created 4 runs"),
        "{}",
        backfill.stdout
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let (_, page) = server
            .get("/api/v1/runs?workflow=daily&state=success&limit=10")
            .await;
        let runs: Vec<Value> = page["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["trigger"] == "backfill")
            .cloned()
            .collect();
        if runs.len() == 4 {
            break runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backfill did not finish: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut spans: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["started_at"].as_str().unwrap_or_default().to_owned(),
                r["ended_at"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "runs overlapped under max_active_runs 1: {spans:?}"
        );
    }
    let days: std::collections::BTreeSet<String> = runs
        .iter()
        .filter_map(|r| r["logical_date"].as_str().map(|d| d[..10].to_owned()))
        .collect();
    assert_eq!(
        days.into_iter().collect::<Vec<_>>(),
        ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    );
}

/// SIGTERM while a task runs: the task is stopped after the grace period and handed back;
/// the next start runs it again (same try) and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_tasks_back() {
    let sb = Sandbox::new();
    let marks = sb.path().join("marks");
    let gate = sb.path().join("gate");
    write_workflow(
        &sb,
        "long",
        &format!(
            "tasks:\n  wait_gate:\n    operator: shell\n    with: {{ command: \"echo start >> {marks}; while [ ! -e {gate} ]; do sleep 0.05; done\" }}\n",
            marks = marks.display(),
            gate = gate.display()
        ),
    );
    let server = Server::start_with(&sb, &[], &[("SLUICE_SHUTDOWN_GRACE", "1s")]);
    let (_, created) = server.post("/api/v1/workflows/long/runs", json!({})).await;
    let run_id = created["run_id"].as_str().expect("id").to_owned();
    wait_for("the task to start", Duration::from_secs(20), || {
        count_lines(&marks) >= 1
    });
    let started = std::time::Instant::now();
    assert_eq!(server.terminate(), Some(0), "a clean shutdown exits 0");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "shutdown took {:?}",
        started.elapsed()
    );

    std::fs::write(&gate, "open").expect("gate");
    let server = Server::start(&sb);
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}");
    assert_eq!(
        run["tasks"]["wait_gate"]["try_number"], 1,
        "a handed-back try runs again as the same try"
    );
    assert_eq!(
        count_lines(&marks),
        2,
        "the task started again after the restart"
    );
}

/// kill -9 at several points of a chain: after each restart, every task that had finished is
/// not run again, an interrupted one runs again, and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_never_reruns_finished_tasks() {
    let sb = Sandbox::new();
    let marks = sb.path().join("marks");
    let mut tasks = String::from("defaults: { retries: 3, retry_delay: 0s }\ntasks:\n");
    for i in 1..=6 {
        let needs = if i > 1 {
            format!(", needs: [t{}]", i - 1)
        } else {
            String::new()
        };
        // Each task marks its start, dawdles, then marks its end.
        tasks.push_str(&format!(
            "  t{i}: {{ operator: shell{needs}, with: {{ command: \"echo start t{i} >> {m}; sleep 1; echo end t{i} >> {m}\" }} }}\n",
            m = marks.display()
        ));
    }
    write_workflow(&sb, "chain", &tasks);
    let mut server = Server::start(&sb);
    let (_, created) = server.post("/api/v1/workflows/chain/runs", json!({})).await;
    let run_id = created["run_id"].as_str().expect("id").to_owned();
    for kill_at in [2, 5, 8] {
        // Kill while a task is between its start and end marks.
        wait_for("the chain to progress", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&marks).unwrap_or_default();
            text.lines().count() >= kill_at
                && text.lines().last().is_some_and(|l| l.starts_with("start"))
        });
        server.kill9();
        server = Server::start(&sb);
    }
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}");
    let text = std::fs::read_to_string(&marks).expect("marks");
    for i in 1..=6 {
        let ends = text.lines().filter(|l| *l == format!("end t{i}")).count();
        assert_eq!(ends, 1, "t{i} finished exactly once:\n{text}");
    }
}
