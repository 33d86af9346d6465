//! Cross-workflow triggers and sensors end to end, through `sluice serve`: `workflow`
//! triggers with an `if` over upstream outputs, the `trigger` operator waiting for its run,
//! and `wait` sensors that give their worker slot back between checks.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::Sandbox;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";

/// A running `sluice serve` and the address it listens on.
struct Server {
    child: Child,
    base: String,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(sb: &Sandbox, extra: &[&str]) -> Server {
        let mut child = sb
            .command()
            .args(["serve", "--workflows", "workflows", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env("SLUICE_API_TOKEN", TOKEN)
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sluice serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("serving on http://").nth(1) {
                        let address = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send(address.trim_end_matches('"').to_owned());
                    }
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let address = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start:\n{}", lines.lock().unwrap().join("\n"));
            }
        };
        Server {
            child,
            base: format!("http://{address}"),
            stderr: lines,
        }
    }

    fn logs(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    reqwest::Client::new()
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn start_run(base: &str, workflow: &str, params: Value) -> String {
    let response = client()
        .post(format!("{base}/api/v1/workflows/{workflow}/runs"))
        .bearer_auth(TOKEN)
        .json(&json!({ "params": params }))
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}");
    body["run_id"].as_str().expect("run id").to_owned()
}

/// Polls a run until it has ended, and returns it.
async fn wait_run(server: &Server, run_id: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, run) = get(&server.base, &format!("/api/v1/runs/{run_id}")).await;
        if status == 200
            && matches!(
                run["state"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
        {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not end: {run}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `workflow` has at least `count` runs, and returns them, oldest first.
async fn wait_runs_of(server: &Server, workflow: &str, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = get(&server.base, &format!("/api/v1/runs?workflow={workflow}")).await;
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

fn write_workflow(sb: &Sandbox, name: &str, content: &str) {
    sb.write(&format!("workflows/{name}.yaml"), content);
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
    let server = Server::start(&sb, &[]);
    let yes = start_run(&server.base, "a", json!({"drift": "yes"})).await;
    let b_runs = wait_runs_of(&server, "b", 1).await;
    assert_eq!(b_runs[0]["params"]["reason"], "yes");
    assert_eq!(b_runs[0]["trigger"], "workflow");
    assert_eq!(b_runs[0]["triggered_by"], format!("a/{yes}"));
    let first_b = b_runs[0]["run_id"].as_str().expect("id").to_owned();
    assert_eq!(
        wait_run(&server, &first_b, Duration::from_secs(30)).await["state"],
        "success"
    );

    // A run whose output differs starts nothing: the next matching run is the second `b`.
    let no = start_run(&server.base, "a", json!({"drift": "no"})).await;
    assert_eq!(
        wait_run(&server, &no, Duration::from_secs(30)).await["state"],
        "success"
    );
    let again = start_run(&server.base, "a", json!({"drift": "yes"})).await;
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
    let server = Server::start(&sb, &[]);
    let parent = start_run(&server.base, "parent", json!({})).await;
    let run = wait_run(&server, &parent, Duration::from_secs(60)).await;
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
    let server = Server::start(&sb, &["--concurrency", "1"]);
    let run_id = start_run(&server.base, "sensing", json!({})).await;
    let run = wait_run(&server, &run_id, Duration::from_secs(60)).await;
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
    let (_, logs) = get(
        &server.base,
        &format!("/api/v1/runs/{run_id}/tasks/sensor/logs"),
    )
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
    let server = Server::start(&sb, &["--concurrency", "2"]);
    let run_id = start_run(&server.base, "later", json!({})).await;
    let run = wait_run(&server, &run_id, Duration::from_secs(60)).await;
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
    let server = Server::start(&sb, &[]);
    let run_id = start_run(&server.base, "never", json!({})).await;
    let run = wait_run(&server, &run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "failed", "{run}");
    let error = run["tasks"]["sensor"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("gave up waiting for the condition to be true")
            && error.contains("timeout 2s"),
        "{run}"
    );
}
