//! `sluice run` end to end: outputs through templates, trigger rules, retries and backoff,
//! timeouts, secrets, params, cancellation and `sluice logs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Sandbox, process_alive, wait_for};

#[test]
fn outputs_flow_downstream_as_native_values() {
    let sb = Sandbox::new();
    let file = sb.write(
        "flow.yaml",
        r#"
params:
  n: { type: integer, default: 2 }
tasks:
  produce:
    operator: shell
    with:
      command: |
        echo '{"count": 41, "items": [1, 2, 3], "name": "golden"}' > "$SLUICE_OUTPUT"
  consume:
    operator: shell
    needs: [produce]
    env:
      TOTAL: "{{ tasks.produce.outputs.count + params.n }}"
    with:
      command: |
        echo "total=$TOTAL" >> "$SLUICE_OUTPUT"
        echo "items={{ tasks.produce.outputs.items | length }}" >> "$SLUICE_OUTPUT"
        echo "run={{ run.workflow }}" >> "$SLUICE_OUTPUT"
"#,
    );
    let out = sb.run_json(&file, &["-p", "n=1"]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    let json = out.json();
    assert_eq!(json["state"], "success");
    assert_eq!(json["workflow"], "flow");
    assert_eq!(
        json["tasks"]["produce"]["outputs"]["items"],
        serde_json::json!([1, 2, 3])
    );
    let consume = &json["tasks"]["consume"];
    assert_eq!(consume["outputs"]["total"], "42");
    assert_eq!(consume["outputs"]["items"], "3");
    assert_eq!(consume["outputs"]["run"], "flow");
    assert_eq!(consume["try_number"], 1);
    assert!(consume["duration_ms"].as_i64().is_some());
}

#[test]
fn trigger_rules_and_skips_follow_upstream_outcomes() {
    let sb = Sandbox::new();
    let file = sb.write(
        "rules.yaml",
        r#"
params:
  deploy: { type: boolean, default: false }
tasks:
  ok: { operator: noop }
  boom: { operator: shell, with: { command: "exit 3" } }
  needs_both: { operator: noop, needs: [ok, boom] }
  cleanup: { operator: noop, needs: [ok, boom], trigger_rule: all_done }
  on_error: { operator: noop, needs: [boom], trigger_rule: one_failed }
  any_ok: { operator: noop, needs: [ok, boom], trigger_rule: one_success }
  after_failed: { operator: noop, needs: [needs_both] }
  gated: { operator: noop, needs: [ok], if: "{{ params.deploy }}" }
  after_gated: { operator: noop, needs: [gated] }
  after_gated_none_failed: { operator: noop, needs: [gated], trigger_rule: none_failed }
"#,
    );
    let out = sb.run_json(&file, &[]);
    assert_eq!(
        out.code, 1,
        "a run with a failed task exits 1; stderr:\n{}",
        out.stderr
    );
    let json = out.json();
    assert_eq!(json["state"], "failed");
    let state = |t: &str| {
        json["tasks"][t]["state"]
            .as_str()
            .unwrap_or("missing")
            .to_owned()
    };
    assert_eq!(state("ok"), "success");
    assert_eq!(state("boom"), "failed");
    assert_eq!(state("needs_both"), "upstream_failed");
    assert_eq!(state("cleanup"), "success");
    assert_eq!(state("on_error"), "success");
    assert_eq!(state("any_ok"), "success");
    assert_eq!(state("after_failed"), "upstream_failed");
    assert_eq!(state("gated"), "skipped");
    assert_eq!(
        state("after_gated"),
        "skipped",
        "a skip propagates under all_success"
    );
    assert_eq!(state("after_gated_none_failed"), "success");
    assert!(
        json["tasks"]["boom"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("3")
    );
}

#[test]
fn retries_back_off_exponentially_then_fail() {
    let sb = Sandbox::new();
    let stamps = sb.path().join("stamps");
    let file = sb.write(
        "retry.yaml",
        &format!(
            r#"
tasks:
  flaky:
    operator: shell
    retries: 2
    retry_delay: 200ms
    retry_backoff: exponential
    with:
      command: "date +%s%N >> {stamps}; echo try $SLUICE_TRY_NUMBER; exit 1"
"#,
            stamps = stamps.display()
        ),
    );
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    let json = out.json();
    assert_eq!(json["tasks"]["flaky"]["state"], "failed");
    assert_eq!(json["tasks"]["flaky"]["try_number"], 3);
    let times: Vec<u128> = std::fs::read_to_string(&stamps)
        .expect("stamps")
        .lines()
        .map(|l| l.trim().parse().expect("nanoseconds"))
        .collect();
    assert_eq!(times.len(), 3, "one stamp per try");
    let first_gap_ms = (times[1] - times[0]) / 1_000_000;
    let second_gap_ms = (times[2] - times[1]) / 1_000_000;
    assert!(
        first_gap_ms >= 200,
        "first retry waited {first_gap_ms} ms, less than 200 ms"
    );
    assert!(
        second_gap_ms >= 400,
        "second retry waited {second_gap_ms} ms, less than 400 ms"
    );

    let run_id = json["run_id"].as_str().expect("run id");
    let logs = sb.sluice(&["logs", run_id, "flaky"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    for n in 1..=3 {
        assert!(
            logs.stdout.contains(&format!("flaky#{n} stdout: try {n}")),
            "logs:\n{}",
            logs.stdout
        );
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let sb = Sandbox::new();
    let pidfile = sb.path().join("grandchild.pid");
    let file = sb.write(
        "timeout.yaml",
        &format!(
            r#"
tasks:
  slow:
    operator: shell
    timeout: 1s
    with:
      command: "sleep 60 & echo $! > {pid}; wait"
"#,
            pid = pidfile.display()
        ),
    );
    let started = std::time::Instant::now();
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout did not stop the task"
    );
    let json = out.json();
    assert_eq!(json["tasks"]["slow"]["state"], "failed");
    let error = json["tasks"]["slow"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out after 1s"), "error: {error}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    wait_for(
        "the grandchild `sleep` to be killed",
        Duration::from_secs(5),
        || !process_alive(pid),
    );
}

#[test]
fn secrets_are_masked_in_logs_outputs_and_errors() {
    let sb = Sandbox::new();
    let file = sb.write(
        "secret.yaml",
        r#"
tasks:
  leak:
    operator: shell
    env:
      TOKEN: "{{ secrets.API_TOKEN }}"
    with:
      command: |
        echo "token is {{ secrets.API_TOKEN }}"
        echo "env token is $TOKEN"
        echo "inherited: ${SLUICE_API_TOKEN:-none} ${SLUICE_GITHUB_WEBHOOK_SECRET:-none} ${SLUICE_DATABASE_URL:-none}"
        echo "token={{ secrets.API_TOKEN }}" >> "$SLUICE_OUTPUT"
  fail:
    operator: shell
    needs: [leak]
    env:
      TOKEN: "{{ secrets.API_TOKEN }}"
    with:
      command: "echo \"bad token $TOKEN\" >&2; exit 1"
"#,
    );
    let out = sb
        .command()
        .env("SLUICE_SECRET_API_TOKEN", "hunter2-very-secret")
        // The server's own credentials never reach a task either.
        .env("SLUICE_API_TOKEN", "hunter2-api")
        .env("SLUICE_GITHUB_WEBHOOK_SECRET", "hunter2-hook")
        .args(["run", file.to_str().expect("utf-8 path"), "--json"])
        .output()
        .expect("run");
    let out: common::Finished = out.into();
    assert_eq!(out.code, 1, "stderr:\n{}", out.stderr);
    assert!(
        !out.stdout.contains("hunter2"),
        "stdout leaked the secret:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("hunter2"),
        "stderr leaked the secret:\n{}",
        out.stderr
    );
    let json = out.json();
    assert_eq!(json["tasks"]["leak"]["outputs"]["token"], "***");
    let run_id = json["run_id"].as_str().expect("run id");
    let logs = sb.sluice(&["logs", run_id]);
    assert!(
        !logs.stdout.contains("hunter2"),
        "logs leaked the secret:\n{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("token is ***"),
        "logs:\n{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("env token is ***"),
        "logs:\n{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("bad token ***"),
        "logs:\n{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("inherited: none none none"),
        "the server's credentials reached a task:\n{}",
        logs.stdout
    );
}

#[test]
fn params_are_checked_before_the_run_starts() {
    let sb = Sandbox::new();
    let file = sb.write(
        "params.yaml",
        r#"
params:
  samples: { type: integer, default: 10, minimum: 1 }
  model: { type: string, enum: [small, large] }
tasks:
  show:
    operator: shell
    with: { command: "echo 'n={{ params.samples }}' >> $SLUICE_OUTPUT" }
"#,
    );
    let unknown = sb.run_json(&file, &["-p", "model=small", "-p", "sampels=3"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("sampels"), "{}", unknown.stderr);
    let wrong_type = sb.run_json(&file, &["-p", "model=small", "-p", "samples=many"]);
    assert_eq!(wrong_type.code, 2);
    assert!(
        wrong_type.stderr.contains("samples"),
        "{}",
        wrong_type.stderr
    );
    let missing = sb.run_json(&file, &[]);
    assert_eq!(missing.code, 2, "a param without default is required");
    assert!(missing.stderr.contains("model"), "{}", missing.stderr);
    let not_allowed = sb.run_json(&file, &["-p", "model=huge"]);
    assert_eq!(not_allowed.code, 2);
    let ok = sb.run_json(&file, &["-p", "model=large", "-p", "samples=7"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.json()["tasks"]["show"]["outputs"]["n"], "7");
}

#[test]
fn an_invalid_workflow_file_exits_2_with_its_diagnostics() {
    let sb = Sandbox::new();
    let file = sb.write("broken.yaml", "tasks:\n  a: { operator: nope }\n");
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("broken.yaml:2:"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

#[test]
fn ctrl_c_cancels_the_run_and_kills_running_tasks() {
    let sb = Sandbox::new();
    let pidfile = sb.path().join("sleeper.pid");
    let file = sb.write(
        "long.yaml",
        &format!(
            r#"
tasks:
  long:
    operator: shell
    with: {{ command: "echo $$ > {pid}; exec sleep 60" }}
  after: {{ operator: noop, needs: [long] }}
"#,
            pid = pidfile.display()
        ),
    );
    let mut child = sb
        .command()
        .args(["run", file.to_str().expect("utf-8 path"), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    wait_for("the task to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.trim().is_empty())
    });
    let sleeper: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let stderr: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr:\n{}",
        stderr.join("\n")
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["state"], "cancelled");
    assert_eq!(json["tasks"]["long"]["state"], "cancelled");
    assert_eq!(json["tasks"]["after"]["state"], "cancelled");
    wait_for(
        "the task's process to be killed",
        Duration::from_secs(5),
        || !process_alive(sleeper),
    );
}

#[test]
fn on_failure_hooks_run_after_a_failure_and_only_then() {
    let sb = Sandbox::new();
    let marker = sb.path().join("hook-ran");
    let file = sb.write(
        "hooks.yaml",
        &format!(
            r#"
params:
  fail: {{ type: boolean, default: true }}
tasks:
  work:
    operator: shell
    with: {{ command: "test '{{{{ params.fail }}}}' = false" }}
on_failure:
  notify:
    operator: shell
    with: {{ command: "echo ran > {marker}" }}
  after_notify: {{ operator: noop, needs: [notify] }}
"#,
            marker = marker.display()
        ),
    );
    let ok = sb.run_json(&file, &["-p", "fail=false"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(!marker.exists(), "on_failure ran for a successful run");
    assert!(ok.json()["tasks"].get("notify").is_none());

    let failed = sb.run_json(&file, &[]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let json = failed.json();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["tasks"]["notify"]["state"], "success");
    assert_eq!(json["tasks"]["after_notify"]["state"], "success");
    assert_eq!(
        std::fs::read_to_string(&marker)
            .expect("hook marker")
            .trim(),
        "ran"
    );
}

#[test]
fn pool_slots_limit_how_many_of_its_tasks_run_at_once() {
    let sb = Sandbox::new();
    sb.write("sluice.toml", "[pools]\ngpu = 1\n");
    let spans = sb.path().join("spans");
    let mut workflow = String::from("tasks:\n");
    for i in 1..=4 {
        workflow.push_str(&format!(
            "  g{i}: {{ operator: shell, pool: gpu, with: {{ command: \"s=$(date +%s%N); sleep 0.1; echo $s $(date +%s%N) >> {spans}\" }} }}\n",
            spans = spans.display()
        ));
    }
    let file = sb.write("pools.yaml", &workflow);
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut intervals: Vec<(u128, u128)> = std::fs::read_to_string(&spans)
        .expect("spans")
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace().map(|n| n.parse::<u128>().expect("ns"));
            (parts.next().expect("start"), parts.next().expect("end"))
        })
        .collect();
    intervals.sort();
    assert_eq!(intervals.len(), 4);
    for pair in intervals.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two gpu tasks overlapped: {intervals:?}"
        );
    }
}

#[test]
fn configured_vars_reach_templates() {
    let sb = Sandbox::new();
    sb.write(
        "sluice.toml",
        "[vars]\nregion = \"eu-west\"\nreplicas = 3\n",
    );
    let file = sb.write(
        "vars.yaml",
        "tasks:\n  show:\n    operator: shell\n    if: \"{{ vars.replicas > 2 }}\"\n    with: { command: \"echo region={{ vars.region }} >> $SLUICE_OUTPUT\" }\n",
    );
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["tasks"]["show"]["outputs"]["region"], "eu-west");
}
