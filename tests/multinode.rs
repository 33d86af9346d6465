//! Several processes on one PostgreSQL database: `serve --no-workers` schedulers and `sluice
//! worker` processes, killed and stalled on purpose. Each test has a schema of its own.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::postgres::{TestDatabase, WorkerProcess};
use common::server::{Server, write_workflow};
use common::{Sandbox, process_alive, wait_for};
use serde_json::json;

/// Short leases so that recovery happens within the test's patience.
const LEASE: &str = "2s";

fn scheduler(sb: &Sandbox, db: &TestDatabase) -> Server {
    Server::start_with(
        sb,
        &["--no-workers", "--lease", LEASE],
        &[("SLUICE_DATABASE_URL", &db.url)],
    )
}

/// A one-task workflow whose shell `script` runs with `$MARKS` naming the marks file, retried
/// once at once.
fn shell_workflow(sb: &Sandbox, name: &str, script: &str) -> std::path::PathBuf {
    let marks = sb.path().join("marks");
    let mut source = String::from(
        "defaults: { retries: 1, retry_delay: 0s }\ntasks:\n  work:\n    operator: shell\n    \
         with:\n      command: |\n",
    );
    for line in script.lines() {
        source.push_str(&format!("        {line}\n"));
    }
    source.push_str(&format!(
        "      env: {{ MARKS: \"{}\" }}\n",
        marks.display()
    ));
    write_workflow(sb, name, &source);
    marks
}

/// How long a try's processes may outlive the killed process that ran them: a moment, with
/// room for a loaded test machine.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(2);

/// The pid the first try of a task wrote to its marks as `sleeping PID`, once it has.
fn sleeper(marks: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(marks)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("sleeping ")?.trim().parse().ok())
}

/// The tries of a run's task, oldest first: (try, state, worker, error).
async fn tries(db: &TestDatabase, run_id: &str, task: &str) -> Vec<serde_json::Value> {
    db.rows(&format!(
        "SELECT try_number, state, worker, error FROM task_instances \
         WHERE run_id = '{run_id}' AND task_id = '{task}' ORDER BY try_number"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_task_is_retried_after_its_lease_and_completes() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let sb = Sandbox::new();
    // The first try's `sleep` is a grandchild of the worker, in the try's process group.
    let marks = shell_workflow(
        &sb,
        "slow",
        "echo \"start $SLUICE_TRY_NUMBER\" >> \"$MARKS\"\n\
         if [ \"$SLUICE_TRY_NUMBER\" = 1 ]; then\n\
           sleep 30 &\n\
           echo \"sleeping $!\" >> \"$MARKS\"\n\
           wait\n\
         fi",
    );
    let server = scheduler(&sb, &db);
    let first = WorkerProcess::start(&sb, &db.url, "first", &["--lease", LEASE]);
    let run_id = server.start_run("slow", json!({})).await;
    wait_for("the first try to start", Duration::from_secs(20), || {
        sleeper(&marks).is_some()
    });
    let sleeping = sleeper(&marks).expect("the first try's sleep");
    assert!(process_alive(sleeping));
    first.kill9();
    // The try's processes die with the worker, long before the lease hands the task on.
    wait_for(
        "the killed worker's task processes to end",
        ORPHAN_DEADLINE,
        || !process_alive(sleeping),
    );
    let second = WorkerProcess::start(&sb, &db.url, "second", &["--lease", LEASE]);
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", second.logs());
    let tries = tries(&db, &run_id, "work").await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0]["state"], "up_for_retry");
    assert_eq!(tries[0]["worker"], "first");
    assert!(
        tries[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("`first`") && e.contains("lease")),
        "{tries:?}"
    );
    assert_eq!(tries[1]["state"], "success");
    assert_eq!(tries[1]["worker"], "second");
    drop(server);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_workers_late_completion_is_refused() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let sb = Sandbox::new();
    // The first try outlives its lease while its worker is frozen, and would then succeed.
    let marks = shell_workflow(
        &sb,
        "stall",
        "echo \"start $SLUICE_TRY_NUMBER\" >> \"$MARKS\"\n\
         if [ \"$SLUICE_TRY_NUMBER\" = 1 ]; then\n\
           sleep 30 &\n\
           echo \"sleeping $!\" >> \"$MARKS\"\n\
           wait\n\
         fi\n\
         echo \"end $SLUICE_TRY_NUMBER\" >> \"$MARKS\"",
    );
    let server = scheduler(&sb, &db);
    let stalled = WorkerProcess::start(&sb, &db.url, "stalled", &["--lease", LEASE]);
    let run_id = server.start_run("stall", json!({})).await;
    wait_for("the first try to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&marks).is_ok_and(|m| m.contains("start 1"))
    });
    stalled.signal(libc::SIGSTOP);
    let healthy = WorkerProcess::start(&sb, &db.url, "healthy", &["--lease", LEASE]);
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}");
    // The retry, on the same machine, ended what was left of the first try before it
    // started: the two never ran side by side, and the first never got to its end.
    let sleeping = sleeper(&marks).expect("the first try's sleep");
    assert!(!process_alive(sleeping), "the first try still runs");
    let text = std::fs::read_to_string(&marks).expect("marks");
    assert!(text.contains("end 2") && !text.contains("end 1"), "{text}");
    // The frozen worker wakes up after its child was killed: its completion must change
    // nothing.
    stalled.signal(libc::SIGCONT);
    wait_for(
        "the stalled worker to give up the try",
        Duration::from_secs(20),
        || {
            // Whichever comes first: the heartbeat finding the lease gone, or the completion.
            stalled.logs().contains("Lost the lease")
                || stalled.logs().contains("Completions were rejected")
        },
    );
    let tries = tries(&db, &run_id, "work").await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(
        tries[0]["state"],
        "up_for_retry",
        "{tries:?}\n{}",
        stalled.logs()
    );
    assert_eq!(tries[1]["state"], "success");
    assert_eq!(tries[1]["worker"], "healthy");
    drop((server, healthy, stalled));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_servers_task_processes_die_with_it_and_never_overlap_the_retry() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let sb = Sandbox::new();
    let marks = shell_workflow(
        &sb,
        "orphan",
        "echo \"start $SLUICE_TRY_NUMBER\" >> \"$MARKS\"\n\
         if [ \"$SLUICE_TRY_NUMBER\" = 1 ]; then\n\
           sleep 93 &\n\
           echo \"sleeping $!\" >> \"$MARKS\"\n\
           wait\n\
         fi",
    );
    // `serve` with its own worker, as one machine of a PostgreSQL deployment runs it.
    let start = || {
        Server::start_with(
            &sb,
            &["--lease", LEASE],
            &[("SLUICE_DATABASE_URL", &db.url)],
        )
    };
    let server = start();
    let run_id = server.start_run("orphan", json!({})).await;
    wait_for("the first try to start", Duration::from_secs(20), || {
        sleeper(&marks).is_some()
    });
    let sleeping = sleeper(&marks).expect("the first try's sleep");
    assert!(process_alive(sleeping));
    server.kill9();
    wait_for(
        "the killed server's task processes to end",
        ORPHAN_DEADLINE,
        || !process_alive(sleeping),
    );
    // Restarted, the server retries the task once its lease has run out.
    let server = start();
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    let tries = tries(&db, &run_id, "work").await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0]["state"], "up_for_retry");
    assert_eq!(tries[1]["state"], "success");
    let text = std::fs::read_to_string(&marks).expect("marks");
    assert!(text.contains("start 2"), "{text}");
    assert!(!process_alive(sleeping));
    drop(server);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standby_fires_the_next_cron_tick_when_the_leader_dies() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let sb = Sandbox::new();
    // Every second (6 fields: seconds first).
    write_workflow(
        &sb,
        "tick",
        "schedule: \"* * * * * *\"\ntasks:\n  a: { operator: noop }\n",
    );
    let leader = scheduler(&sb, &db);
    wait_for("the first server to lead", Duration::from_secs(20), || {
        leader.logs().contains("This process leads")
    });
    let standby = scheduler(&sb, &db);
    let scheduled = "SELECT COUNT(*) FROM runs WHERE trigger = 'schedule'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while db.count(scheduled).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no ticks fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!standby.logs().contains("This process leads"));
    leader.kill9();
    let killed_at = chrono::Utc::now();
    let after_kill = format!(
        "SELECT COUNT(*) FROM runs WHERE trigger = 'schedule' AND created_at > '{}'",
        killed_at.to_rfc3339()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while db.count(&after_kill).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby fired nothing:\n{}",
            standby.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(standby.logs().contains("This process leads"));
    let duplicates = db
        .count(
            "SELECT COUNT(*) FROM (SELECT logical_date FROM runs WHERE trigger = 'schedule' \
             GROUP BY workflow_id, logical_date HAVING COUNT(*) > 1) d",
        )
        .await;
    assert_eq!(duplicates, 0, "a logical date fired twice");
    drop(standby);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn four_workers_two_killed_midway_every_task_runs_once_at_a_time() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    const TASKS: usize = 5_000;
    let sb = Sandbox::new();
    let marks = sb.path().join("marks");
    let mut source = String::from("defaults: { retries: 3, retry_delay: 0s }\ntasks:\n");
    for i in 0..TASKS {
        source.push_str(&format!("  t{i}: {{ operator: noop }}\n"));
    }
    // One task in each hundred leaves a trace of each try, with its times, so overlapping
    // tries of one task would show.
    let mut traced = Vec::new();
    for i in (0..TASKS).step_by(100) {
        traced.push(format!("t{i}"));
    }
    let mut source_lines: Vec<String> = source.lines().map(str::to_owned).collect();
    for task in &traced {
        let index = source_lines
            .iter()
            .position(|l| l.starts_with(&format!("  {task}:")))
            .expect("task line");
        source_lines[index] = format!(
            "  {task}:\n    operator: shell\n    with:\n      shell: bash\n      command: \
             echo \"$SLUICE_TASK_ID $SLUICE_TRY_NUMBER start $EPOCHREALTIME\" >> {m}; sleep 0.2; \
             echo \"$SLUICE_TASK_ID $SLUICE_TRY_NUMBER end $EPOCHREALTIME\" >> {m}",
            m = marks.display()
        );
    }
    write_workflow(&sb, "many", &(source_lines.join("\n") + "\n"));
    let server = scheduler(&sb, &db);
    let mut workers: Vec<WorkerProcess> = (0..4)
        .map(|i| {
            WorkerProcess::start(
                &sb,
                &db.url,
                &format!("w{i}"),
                &["--lease", LEASE, "--concurrency", "16"],
            )
        })
        .collect();
    let run_id = server.start_run("many", json!({})).await;
    let done = format!(
        "SELECT COUNT(*) FROM task_instances WHERE run_id = '{run_id}' AND state = 'success'"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db.count(&done).await < (TASKS / 4) as i64 {
        assert!(tokio::time::Instant::now() < deadline, "too slow to start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.pop().expect("w3").kill9();
    workers.pop().expect("w2").kill9();
    let done_at_kill = db.count(&done).await;
    assert!(
        done_at_kill < TASKS as i64,
        "the kills came after the work was done"
    );
    let run = server.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["state"], "success", "{run}");
    let succeeded = db.count(&done).await;
    assert_eq!(succeeded, TASKS as i64);
    // Every traced task ran, and no two of its tries overlapped.
    let text = std::fs::read_to_string(&marks).expect("marks");
    let mut spans: HashMap<(String, String), (f64, f64)> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [task, try_number, kind, at] = parts[..] else {
            panic!("bad mark line {line:?}");
        };
        let at: f64 = at.parse().expect("time");
        let span = spans
            .entry((task.to_owned(), try_number.to_owned()))
            .or_insert((f64::NAN, f64::NAN));
        match kind {
            "start" => span.0 = at,
            _ => span.1 = at,
        }
    }
    for task in &traced {
        let mut mine: Vec<(f64, f64)> = spans
            .iter()
            .filter(|((t, _), _)| t == task)
            .map(|(_, span)| *span)
            .collect();
        assert!(!mine.is_empty(), "{task} never ran");
        mine.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in mine.windows(2) {
            // A try cut off by a kill has no end; the next one must start after its lease.
            let first_end = if pair[0].1.is_nan() {
                pair[0].0
            } else {
                pair[0].1
            };
            assert!(pair[1].0 >= first_end, "{task}: tries overlapped: {mine:?}");
        }
    }
    // Completed tries of any task never overlap either: at most one success per task.
    let doubled = db
        .count(&format!(
            "SELECT COUNT(*) FROM (SELECT task_id FROM task_instances WHERE run_id = '{run_id}' \
             AND state = 'success' GROUP BY task_id HAVING COUNT(*) > 1) d"
        ))
        .await;
    assert_eq!(doubled, 0);
    drop((server, workers));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_serves_its_health_and_metrics() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "three",
        "tasks:\n  a: { operator: noop }\n  b: { operator: noop }\n  c: { operator: noop }\n",
    );
    let server = scheduler(&sb, &db);
    let worker = WorkerProcess::start(&sb, &db.url, "watched", &["--bind", "127.0.0.1:0"]);
    let logs = worker.logs();
    let base = logs
        .split("and /metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_end_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no address in the worker's log:\n{logs}"));
    let run_id = server.start_run("three", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(30)).await;
    assert_eq!(run["state"], "success", "{run}");

    let client = common::server::client();
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.expect("health JSON");
    assert_eq!(health["status"], "ok");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "sluice_worker_claimed_total 3",
        "sluice_worker_tries_running 0",
        "sluice_task_duration_seconds_count{operator=\"noop\"} 3",
        "sluice_task_instances{state=\"success\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    let other = client
        .get(format!("{base}/api/v1/runs"))
        .send()
        .await
        .expect("other route");
    assert_eq!(other.status(), 404);
    // A second worker cannot take the same address: it says so and exits.
    let address = base.trim_start_matches("http://");
    let taken: common::Finished = sb
        .command()
        .args(["worker", "--name", "second", "--bind", address])
        .env("SLUICE_DATABASE_URL", &db.url)
        .output()
        .expect("run sluice worker")
        .into();
    assert_eq!(taken.code, 1, "{}", taken.stderr);
    assert!(
        taken
            .stderr
            .contains(&format!("cannot listen on {address}")),
        "{}",
        taken.stderr
    );
    drop(worker);
    drop(server);
    db.finish().await;
}

#[test]
fn a_worker_needs_a_shared_database_and_valid_queue_names() {
    let sb = Sandbox::new();
    let out = sb.sluice(&["worker"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("needs a PostgreSQL database"),
        "{}",
        out.stderr
    );
    let out = sb.sluice(&["worker", "--bind", "localhost"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--bind"), "{}", out.stderr);
    let out = sb.sluice(&["worker", "--queues", "gpu,Big Box"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`Big Box` is not a queue name"),
        "{}",
        out.stderr
    );
}
