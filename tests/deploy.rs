//! The `deploy` operator end to end: direct and canary rollouts through `sluice run`, a
//! rollback on a failed check with the router hook's calls recorded in order, the refusal of a
//! version whose gate failed, a check on the version's tracking metrics, significance
//! that waits for samples, a check against a real Prometheus, the routing endpoint, and a
//! canary that survives `kill -9` of `serve` in the middle of its bake.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use common::server::{Server, client, write_workflow};
use common::{Sandbox, wait_for};
use serde_json::{Value, json};

/// A local router stand-in: records every hook body in order, and serves the metrics and arm
/// counts the checks read (changeable while a rollout runs).
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Value>>>,
    metrics: Arc<Mutex<Value>>,
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Fake {
    fn calls(&self) -> Vec<Value> {
        self.calls.lock().expect("calls").clone()
    }

    fn set(&self, metrics: Value) {
        *self.metrics.lock().expect("metrics") = metrics;
    }

    async fn start(&self) -> SocketAddr {
        async fn record(State(fake): State<Fake>, Json(body): Json<Value>) -> &'static str {
            fake.calls.lock().expect("calls").push(body);
            "ok"
        }
        async fn metrics(State(fake): State<Fake>) -> Json<Value> {
            let metrics = fake.metrics.lock().expect("metrics").clone();
            fake.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Json(metrics)
        }
        let app = axum::Router::new()
            .route("/weights", post(record))
            .route("/metrics.json", get(metrics))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }
}

/// `sluice run` of `workflow` off the async threads, so the fake router keeps answering.
async fn run(sb: &Arc<Sandbox>, name: &str, workflow: String) -> (i32, Value, String) {
    let sb = sb.clone();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        // Each run registers a version from this file.
        sb.write("model.txt", &format!("the model as of {name}\n"));
        let file = sb.write(&format!("{name}.yaml"), &workflow);
        let out = sb.run_json(&file, &[]);
        (out.code, out.json(), out.stderr)
    })
    .await
    .expect("run")
}

/// A workflow that registers a new version of `assistant` (from `model.txt` beside it) and
/// deploys it.
fn deploy(with: &str) -> String {
    format!(
        "tasks:\n  register:\n    operator: track\n    with: {{ experiment: assistant, register: {{ model: assistant, source: model.txt }} }}\n  promote:\n    operator: deploy\n    needs: [register]\n    retries: 2\n    with:\n      model: assistant\n      version: \"{{{{ tasks.register.outputs.model_version }}}}\"\n{with}"
    )
}

/// A workflow that deploys `version`, registered earlier.
fn deploy_version(version: u32, with: &str) -> String {
    format!(
        "tasks:\n  promote:\n    operator: deploy\n    retries: 2\n    with:\n      model: assistant\n      version: \"{version}\"\n{with}"
    )
}

fn hook(address: SocketAddr) -> String {
    // The older spelling: `raw` keeps the task's own render off the step's templates.
    format!(
        "      hook: {{ url: \"http://{address}/weights\", json: {{ weights: \"{{% raw %}}{{{{ step.weights }}}}{{% endraw %}}\", mode: \"{{% raw %}}{{{{ step.mode }}}}{{% endraw %}}\" }} }}\n"
    )
}

/// A hook whose body is the step's weights, written as a plain template: the hook's body is
/// the operator's to render.
fn weights_hook(address: SocketAddr) -> String {
    format!(
        "      hook: {{ url: \"http://{address}/weights\", json: \"{{{{ step.weights }}}}\" }}\n"
    )
}

/// Deploys version 1 directly, so later rollouts have a champion to share traffic with.
async fn first_champion(sb: &Arc<Sandbox>, address: SocketAddr) {
    let (code, json, stderr) = run(sb, "first", deploy(&hook(address))).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_deploy_takes_all_traffic_and_the_alias() {
    let sb = Arc::new(Sandbox::new());
    let fake = Fake::default();
    let address = fake.start().await;
    first_champion(&sb, address).await;
    let (code, json, stderr) = run(&sb, "second", deploy(&hook(address))).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    let outputs = &json["tasks"]["promote"]["outputs"];
    assert_eq!(outputs["alias"], "champion");
    assert_eq!(outputs["previous_version"], "1", "{outputs}");
    assert_eq!(
        outputs["routing"],
        json!([{"version": "2", "weight": 100, "mode": "live"}])
    );
    assert_eq!(
        fake.calls(),
        [
            json!({"weights": {"1": 100}, "mode": "live"}),
            json!({"weights": {"2": 100}, "mode": "live"}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_walks_its_steps_while_the_check_passes() {
    let sb = Arc::new(Sandbox::new());
    let fake = Fake::default();
    let address = fake.start().await;
    first_champion(&sb, address).await;
    fake.set(json!({"error_rate": 0.01}));
    let with = format!(
        "      strategy: canary\n      steps: [10, 50, 100]\n      bake: 1s\n{}      check: {{ http: {{ url: \"http://{address}/metrics.json\", pointer: /error_rate, max: 0.02 }} }}\n",
        weights_hook(address)
    );
    let (code, json, stderr) = run(&sb, "canary", deploy(&with)).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(
        fake.calls()[1..],
        [
            json!({"1": 90, "2": 10}),
            json!({"1": 50, "2": 50}),
            json!({"2": 100}),
        ],
        "`{{{{ step.weights }}}}` is each step's weights"
    );
    let checks = json["tasks"]["promote"]["outputs"]["checks"]
        .as_array()
        .expect("checks")
        .clone();
    assert_eq!(checks.len(), 3, "one check per step: {checks:?}");
    assert!(checks.iter().all(|c| c["outcome"] == "passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rolls_back_on_a_failed_check_without_retrying() {
    let sb = Arc::new(Sandbox::new());
    let fake = Fake::default();
    let address = fake.start().await;
    first_champion(&sb, address).await;
    fake.set(json!({"error_rate": 0.05}));
    let with = format!(
        "      strategy: canary\n      steps: [25, 100]\n      bake: 1s\n{}      check: {{ http: {{ url: \"http://{address}/metrics.json\", pointer: /error_rate, max: 0.02 }} }}\n",
        hook(address)
    );
    let (code, json, stderr) = run(&sb, "canary", deploy(&with)).await;
    assert_eq!(code, 1, "{json}\n{stderr}");
    let task = &json["tasks"]["promote"];
    assert_eq!(task["state"], "failed");
    assert_eq!(task["try_number"], 1, "a rollback is not retried: {task}");
    let error = task["error"].as_str().expect("error");
    assert!(
        error.contains("rolled back") && error.contains("/error_rate 0.05 > 0.02"),
        "{error}"
    );
    assert_eq!(
        fake.calls()[1..],
        [
            json!({"weights": {"1": 75, "2": 25}, "mode": "live"}),
            json!({"weights": {"1": 100}, "mode": "live"}),
        ],
        "the step, then the old weights"
    );
    // The champion is still version 1: the next deploy starts from it.
    let (code, json, stderr) = run(&sb, "again", deploy(&hook(address))).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["tasks"]["promote"]["outputs"]["previous_version"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_requires_staging_is_refused_without_it() {
    let sb = Arc::new(Sandbox::new());
    let fake = Fake::default();
    let address = fake.start().await;
    let with = "      alias: production\n      requires: { alias: staging }\n";
    let (code, json, _) = run(&sb, "prod", deploy(with)).await;
    assert_eq!(code, 1);
    let task = &json["tasks"]["promote"];
    assert_eq!(task["try_number"], 1, "a refusal is not retried");
    assert!(
        task["error"]
            .as_str()
            .is_some_and(|e| e.contains("never held `staging`")),
        "{task}"
    );
    let (code, json, _) = run(&sb, "unknown", deploy_version(9, "")).await;
    assert_eq!(code, 1);
    let error = json["tasks"]["promote"]["error"].to_string();
    assert!(error.contains("no registered version 9"), "{error}");
    let staging = format!("      alias: staging\n{}", hook(address));
    let (code, _, stderr) = run(&sb, "staging", deploy_version(1, &staging)).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, json, stderr) = run(&sb, "prod2", deploy_version(1, with)).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
}

/// Registers a version whose tracking run logged `accuracy` and gates it on `min`, recording
/// the result on the version.
fn gated(min: f64) -> String {
    format!(
        "tasks:\n  register:\n    operator: track\n    with: {{ experiment: assistant, metrics: {{ accuracy: 0.8 }}, register: {{ model: assistant, source: model.txt }} }}\n  gate:\n    operator: gate\n    needs: [register]\n    with:\n      metrics: \"{{{{ tasks.register.outputs.metrics }}}}\"\n      thresholds: {{ accuracy: {{ min: {min} }} }}\n      version: {{ model: assistant, version: \"{{{{ tasks.register.outputs.model_version }}}}\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_gate_failed_is_refused_unless_forced() {
    let sb = Arc::new(Sandbox::new());
    let (code, json, stderr) = run(&sb, "gate", gated(0.9)).await;
    assert_eq!(code, 1, "{json}\n{stderr}");
    assert_eq!(json["tasks"]["gate"]["state"], "failed", "{json}");
    let (code, json, stderr) = run(&sb, "promote", deploy_version(1, "")).await;
    assert_eq!(code, 1, "{json}\n{stderr}");
    let task = &json["tasks"]["promote"];
    assert_eq!(task["try_number"], 1, "a refusal is not retried: {task}");
    let error = task["error"].as_str().expect("error");
    assert!(
        error.contains("failed its gate") && error.contains("accuracy 0.80 < 0.90"),
        "{error}"
    );
    let (code, json, stderr) = run(&sb, "forced", deploy_version(1, "      force: true\n")).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["tasks"]["promote"]["outputs"]["version"], "1");
    // A version that passed its gate deploys.
    let (code, json, stderr) = run(&sb, "passing", gated(0.5)).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    let (code, json, stderr) = run(&sb, "promote2", deploy_version(2, "")).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_check_rolls_a_canary_back_on_the_versions_own_metric() {
    let sb = Arc::new(Sandbox::new());
    let fake = Fake::default();
    let address = fake.start().await;
    first_champion(&sb, address).await;
    let canary = |max: f64| {
        deploy(&format!(
            "      strategy: canary\n      steps: [50, 100]\n      bake: 0s\n{}      check: {{ tracking: {{ metric: error_rate, max: {max} }} }}\n",
            weights_hook(address)
        ))
        .replace("register: {", "metrics: { error_rate: 0.01 }, register: {")
    };
    let (code, json, stderr) = run(&sb, "worse", canary(0.005)).await;
    assert_eq!(code, 1, "{json}\n{stderr}");
    let error = json["tasks"]["promote"]["error"].as_str().expect("error");
    assert!(
        error.contains("rolled back") && error.contains("error_rate 0.01 > 0.005"),
        "{error}"
    );
    assert_eq!(
        fake.calls()[1..],
        [json!({"1": 50, "2": 50}), json!({"1": 100})],
        "the step, then the old weights"
    );
    let (code, json, stderr) = run(&sb, "fine", canary(0.02)).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    let details = json["tasks"]["promote"]["outputs"]["checks"][0]["details"].to_string();
    assert!(
        details.contains("error_rate 0.01 within thresholds"),
        "{details}"
    );
}

fn arms(champion: (u64, u64), challenger: (u64, u64)) -> Value {
    json!({
        "champion": {"successes": champion.0, "trials": champion.1},
        "challenger": {"successes": challenger.0, "trials": challenger.1},
    })
}

fn significance(address: SocketAddr) -> String {
    format!(
        "      strategy: shadow\n      bake: 1s\n      recheck: 1s\n      max_wait: 1m\n      check:\n        significance:\n          test: proportions\n          metric: thumbs_up_rate\n          min_samples: 1000\n          champion: {{ url: \"http://{address}/metrics.json\", pointer: /champion }}\n          challenger: {{ url: \"http://{address}/metrics.json\", pointer: /challenger }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn significance_waits_for_samples_then_passes_or_fails() {
    let sb = Arc::new(Sandbox::new());
    let fake = Fake::default();
    let address = fake.start().await;
    first_champion(&sb, address).await;

    // Too few samples: the check waits; then 52% against 48% at 1000 each is no evidence.
    fake.set(arms((52, 100), (4, 10)));
    let (runner, updater) = (sb.clone(), fake.clone());
    let rollout =
        tokio::spawn(async move { run(&runner, "shadow", deploy(&significance(address))).await });
    // The first check reads both arms, then the counts grow.
    let reads = fake.reads.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the first check", Duration::from_secs(60), || {
            reads.load(std::sync::atomic::Ordering::SeqCst) >= 2
        })
    })
    .await
    .expect("wait");
    updater.set(arms((520, 1000), (480, 1000)));
    let (code, json, stderr) = rollout.await.expect("run");
    assert_eq!(code, 0, "{json}\n{stderr}");
    let checks = json["tasks"]["promote"]["outputs"]["checks"]
        .as_array()
        .expect("checks")
        .clone();
    assert_eq!(
        checks.first().map(|c| c["outcome"].clone()),
        Some(json!("waiting")),
        "{checks:?}"
    );
    assert_eq!(
        checks.last().map(|c| c["outcome"].clone()),
        Some(json!("passed")),
        "{checks:?}"
    );

    // 64% against 70%: significantly worse, rolled back.
    fake.set(arms((700, 1000), (640, 1000)));
    let (code, json, _) = run(&sb, "worse", deploy(&significance(address))).await;
    assert_eq!(code, 1);
    let error = json["tasks"]["promote"]["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(error.contains("significantly worse"), "{error}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Prometheus server on a free port, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// `None` when prometheus is not installed, outside CI; with `CI` set that is a failure.
    fn start(sb: &Sandbox, exporter: SocketAddr) -> Option<Prometheus> {
        let config = sb.write(
            "prometheus.yml",
            &format!(
                "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{ targets: [\"{exporter}\"] }}]\n"
            ),
        );
        let port = free_port();
        let program = std::env::var("SLUICE_TEST_PROMETHEUS").unwrap_or("prometheus".into());
        let child = match Command::new(&program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                sb.path().join("prometheus").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("prometheus ({program}) is needed in CI: {e}")
            }
            Err(e) => {
                eprintln!("skipped: cannot start prometheus ({program}): {e}");
                return None;
            }
        };
        Some(Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Waits until the server is ready and has scraped the exporter once.
    async fn wait_scraped(&self, query: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let client = client();
        loop {
            let ready = client
                .get(format!("{}/-/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                let url = reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/query", self.base),
                    [("query", query)],
                )
                .expect("query URL");
                let answer: Value = match client.get(url).send().await {
                    Ok(response) => response.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                if answer["data"]["result"]
                    .as_array()
                    .is_some_and(|r| r.len() == 1)
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus never scraped the exporter"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_reads_a_real_prometheus() {
    let sb = Arc::new(Sandbox::new());
    let exporter = {
        let app = axum::Router::new().route(
            "/metrics",
            get(|| async { "# TYPE requests_total counter\nrequests_total 1000\n# TYPE errors_total counter\nerrors_total 7\n" }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    };
    let Some(prometheus) = Prometheus::start(&sb, exporter) else {
        return;
    };
    let query = "errors_total / requests_total";
    prometheus.wait_scraped(query).await;
    let check = |max: f64| {
        format!(
            "      check: {{ prometheus: {{ url: \"{}\", query: \"{query}\", max: {max} }} }}\n",
            prometheus.base
        )
    };
    let (code, json, stderr) = run(&sb, "pass", deploy(&check(0.02))).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    let details = json["tasks"]["promote"]["outputs"]["checks"][0]["details"].to_string();
    assert!(details.contains("0.007"), "{details}");
    let (code, json, _) = run(&sb, "fail", deploy(&check(0.005))).await;
    assert_eq!(code, 1);
    let error = json["tasks"]["promote"]["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(error.contains("0.007 > 0.005"), "{error}");
    // A query with no series is a clear error, not a pass.
    let missing = format!(
        "      check: {{ prometheus: {{ url: \"{}\", query: \"no_such_metric\", max: 1 }} }}\n",
        prometheus.base
    );
    let with_no_retry = deploy(&missing).replace("retries: 2", "retries: 0");
    let (code, json, _) = run(&sb, "missing", with_no_retry).await;
    assert_eq!(code, 1);
    let error = json["tasks"]["promote"]["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(error.contains("returned no series"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_resumes_at_its_step_after_kill_9_and_serves_its_routing() {
    let sb = Sandbox::new();
    let fake = Fake::default();
    let address = fake.start().await;
    fake.set(json!({"error_rate": 0.0}));
    let with = format!(
        "      strategy: canary\n      steps: [30, 100]\n      bake: 4s\n{}      check: {{ http: {{ url: \"http://{address}/metrics.json\", pointer: /error_rate, max: 0.02 }} }}\n",
        hook(address)
    );
    sb.write("workflows/model.txt", "the model\n");
    write_workflow(&sb, "first", &deploy(&hook(address)));
    write_workflow(&sb, "canary", &deploy(&with));
    let server = Server::start(&sb);
    let first = server.start_run("first", json!({})).await;
    let run = server.wait_run(&first, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}");

    let run_id = server.start_run("canary", json!({})).await;
    // The first step is routed and baking: its routing is what serving reads.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let routing = loop {
        let (status, routing) = server.get("/api/v1/models/assistant/routing").await;
        if status == 200 && routing["state"] == "bake" && routing["version"] == "2" {
            break routing;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bake: {routing}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        routing["routes"],
        json!([{"version": "1", "weight": 70, "mode": "live"}, {"version": "2", "weight": 30, "mode": "live"}])
    );
    server.kill9();

    let server = Server::start(&sb);
    let run = server.wait_run(&run_id, Duration::from_secs(90)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    assert_eq!(
        fake.calls()[1..],
        [
            json!({"weights": {"1": 70, "2": 30}, "mode": "live"}),
            json!({"weights": {"2": 100}, "mode": "live"}),
        ],
        "the first step is not routed again after the restart"
    );

    // The routing endpoint: an ETag, and 304 for a client that has it.
    let response = client()
        .get(format!("{}/api/v1/models/assistant/routing", server.base))
        .bearer_auth(common::server::TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["routes"],
        json!([{"version": "2", "weight": 100, "mode": "live"}])
    );
    assert_eq!(body["state"], "succeeded");
    let again = client()
        .get(format!("{}/api/v1/models/assistant/routing", server.base))
        .bearer_auth(common::server::TOKEN)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), 304);
    let (status, _) = server.get("/api/v1/models/nobody/routing").await;
    assert_eq!(status, 404);
    // The registry holds the alias, moved by the rollout's task.
    let (status, champion) = server
        .get("/api/v1/models/assistant/aliases/champion")
        .await;
    assert_eq!(status, 200, "{champion}");
    assert_eq!(champion["version"], 2, "{champion}");
}
