//! The shipped LLMOps workflows end to end, through a real `sluice serve` on a fresh database
//! and copies of the files in `workflows/` exactly as shipped: drift on the shipped production
//! data starts retraining, whose challenger passes eval_pipeline's gate and becomes champion by
//! canary, with lineage back to the drift run; a worse candidate fails the gate and the
//! champion stays; a pull request gets the gate's result as a commit status and deploys
//! nothing; with an OpenAI-compatible endpoint in `[vars]`, the same file evaluates and judges
//! that model. The shipped local model is Python 3 with its standard library only.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Sandbox;
use common::github::{FakeGithub, HEAD, SECRET, deliver, fixture};
use common::server::Server;
use serde_json::{Value, json};
use sluice::store::{Store, StoreConfig};

const SHIPPED: [&str; 3] = ["drift_check", "retraining_trigger", "eval_pipeline"];
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Copies `workflows/` (the files and their data) into the sandbox.
fn copy_shipped(sb: &Sandbox) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create folder");
        for entry in std::fs::read_dir(from).expect("read folder") {
            let entry = entry.expect("entry");
            let name = entry.file_name();
            if name == "__pycache__" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                copy(&path, &to.join(&name));
            } else {
                std::fs::copy(&path, to.join(&name)).expect("copy file");
            }
        }
    }
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"),
        &sb.path().join("workflows"),
    );
}

/// The shipped schedules start the latest interval when a server first sees them; pausing
/// them in the fresh database first keeps every run of a test one the test started.
async fn pause_schedules(sb: &Sandbox, ids: &[&str]) {
    let store = Store::open(&StoreConfig::new(sb.db()))
        .await
        .expect("open the sandbox database");
    for id in ids {
        store.set_paused(id, true).await.expect("pause");
    }
}

async fn start(sb: &Sandbox, env: &[(&str, &str)]) -> Server {
    start_paused(sb, env, &SHIPPED).await
}

async fn start_paused(sb: &Sandbox, env: &[(&str, &str)], paused: &[&str]) -> Server {
    copy_shipped(sb);
    pause_schedules(sb, paused).await;
    let server = Server::start_with(sb, &[], env);
    for id in SHIPPED {
        let (status, body) = server.get(&format!("/api/v1/workflows/{id}")).await;
        assert_eq!(status, 200, "{id} is loaded: {body}\n{}", server.logs());
    }
    server
}

fn task<'a>(run: &'a Value, id: &str) -> &'a Value {
    &run["tasks"][id]
}

fn outputs<'a>(run: &'a Value, id: &str) -> &'a Value {
    &task(run, id)["outputs"]
}

/// Waits for a run to end and asserts it ended in `state`.
async fn ended(server: &Server, run_id: &str, state: &str) -> Value {
    let run = server.wait_run(run_id, RUN_LIMIT).await;
    assert_eq!(run["state"], state, "{run:#}\n{}", server.logs());
    run
}

/// The run a `trigger` task started.
fn started_by(run: &Value, task_id: &str) -> String {
    outputs(run, task_id)["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{task_id} started a run: {run:#}"))
        .to_owned()
}

async fn champion(server: &Server) -> Option<u64> {
    let (status, body) = server
        .get("/api/v1/models/assistant/aliases/champion")
        .await;
    match status {
        200 => body["version"].as_u64(),
        404 => None,
        _ => panic!("champion: {status} {body}"),
    }
}

/// drift_check → retraining_trigger → eval_pipeline, as a fresh `serve` runs them.
async fn drift_to_champion(server: &Server) -> (Value, Value, Value) {
    let drift_id = server.start_run("drift_check", json!({})).await;
    let drift = ended(server, &drift_id, "success").await;
    let retrain_id = started_by(&drift, "retrain");
    let retrain = ended(server, &retrain_id, "success").await;
    let eval_id = started_by(&retrain, "evaluate");
    let eval = ended(server, &eval_id, "success").await;
    (drift, retrain, eval)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_retrains_and_the_challenger_becomes_champion_by_canary() {
    let sb = Sandbox::new();
    let server = start(&sb, &[]).await;
    assert_eq!(champion(&server).await, None, "a fresh database has none");
    let (drift, retrain, eval) = drift_to_champion(&server).await;

    // The drift operator finds the columns the shipped production data moved, and not the
    // ones it left alone; 40 rows older than a day are outside the window.
    let detect = outputs(&drift, "detect");
    assert_eq!(detect["drift_detected"], true, "{detect:#}");
    let drifted: Vec<&str> = detect["drifted_columns"]
        .as_array()
        .expect("drifted columns")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for column in ["topic", "latency_ms", "refused"] {
        assert!(drifted.contains(&column), "{column} drifted: {detect:#}");
    }
    for column in ["answer_length", "pii"] {
        assert!(
            !drifted.contains(&column),
            "{column} did not drift: {detect:#}"
        );
    }
    // No SMTP and no address configured: the alert went to the log, with a warning.
    assert_eq!(task(&drift, "alert")["state"], "skipped");
    assert_eq!(task(&drift, "alert_log")["state"], "success");
    let (_, log) = server
        .get(&format!(
            "/api/v1/runs/{}/tasks/alert_log/logs",
            drift["run_id"].as_str().expect("id")
        ))
        .await;
    let log = log.to_string();
    assert!(log.contains("no alert address is configured"), "{log}");

    // Retraining was handed the drifted columns and learned from real failures.
    assert_eq!(retrain["trigger"], "workflow");
    assert_eq!(retrain["params"]["drift_run"], drift["run_id"]);
    assert_eq!(
        retrain["params"]["drifted_columns"],
        drifted.join(","),
        "{retrain:#}"
    );
    assert!(outputs(&retrain, "collect")["eval_failures"].as_u64() > Some(0));
    assert!(outputs(&retrain, "train")["added_examples"].as_u64() > Some(0));
    let version = outputs(&retrain, "register")["model_version"]
        .as_u64()
        .expect("a registered version");

    // The eval of that version passed the gate and the canary moved the champion to it.
    assert_eq!(eval["params"]["version"], version.to_string());
    let gate = outputs(&eval, "gate");
    assert_eq!(gate["passed"], true, "{gate:#}");
    let metrics = outputs(&eval, "track")["metrics"].clone();
    assert!(metrics["faithfulness"].as_f64() >= Some(0.9), "{metrics:#}");
    assert!(metrics["contains"].as_f64() >= Some(0.9), "{metrics:#}");
    let deploy = outputs(&eval, "deploy");
    assert_eq!(deploy["strategy"], "canary");
    assert_eq!(deploy["version"], version.to_string(), "{deploy:#}");
    assert_eq!(champion(&server).await, Some(version));
    let (_, model) = server.get("/api/v1/models/assistant").await;
    let moves: Vec<&Value> = model["alias_history"]
        .as_array()
        .expect("alias history")
        .iter()
        .filter(|m| m["alias"] == "champion")
        .collect();
    assert_eq!(moves.len(), 1, "{model:#}");
    assert_eq!(
        moves[0]["moved_by"],
        format!("run:{}/deploy", eval["run_id"].as_str().expect("id"))
    );

    // Lineage: champion → the tracking run that registered it → the retraining run → the
    // drift run that started it.
    let (_, registered) = server
        .get(&format!("/api/v1/models/assistant/versions/{version}"))
        .await;
    let tracking_run = registered["tracking_run_id"]
        .as_str()
        .expect("tracking run");
    let (status, tracked) = server
        .get(&format!("/api/v1/tracking/runs/{tracking_run}"))
        .await;
    assert_eq!(status, 200, "{tracked}");
    let lineage = &tracked["lineage"];
    assert_eq!(lineage["run_id"], retrain["run_id"], "{tracked:#}");
    assert_eq!(lineage["workflow_id"], "retraining_trigger");
    // The eval logged its metrics in that same tracking run: the gate's baseline for the next.
    assert_eq!(tracked["metrics"]["contains"]["value"], metrics["contains"]);
    let triggered_by = retrain["triggered_by"].as_str().expect("triggered by");
    assert!(
        triggered_by.starts_with(&format!(
            "drift_check/{}/",
            drift["run_id"].as_str().expect("id")
        )),
        "{triggered_by}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_candidate_fails_the_gate_and_the_champion_stays() {
    let sb = Sandbox::new();
    let server = start(&sb, &[]).await;
    let (_, retrain, _) = drift_to_champion(&server).await;
    let champion_version = outputs(&retrain, "register")["model_version"]
        .as_u64()
        .expect("version");
    assert_eq!(champion(&server).await, Some(champion_version));

    // The shipped config, evaluated by hand, answers fewer questions than the champion.
    let run_id = server.start_run("eval_pipeline", json!({})).await;
    let run = ended(&server, &run_id, "failed").await;
    assert_eq!(task(&run, "gate")["state"], "failed");
    let summary = task(&run, "gate")["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("contains"), "{summary}");
    assert_eq!(task(&run, "deploy")["state"], "upstream_failed");
    let registered = outputs(&run, "track")["model_version"]
        .as_u64()
        .expect("the candidate is registered all the same");
    assert!(registered > champion_version);
    assert_eq!(
        champion(&server).await,
        Some(champion_version),
        "the champion stays"
    );
    assert_eq!(task(&run, "alert_log")["state"], "success", "{run:#}");

    // The eval report compares with the champion's own examples, kept with its tracking run
    // (the retraining run that registered it has no eval task): the questions the retrained
    // config answers and the shipped one misses are the regressions.
    let (status, report) = server
        .get(&format!("/api/v1/runs/{run_id}/tasks/evaluate/eval"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["champion"]["status"], "found", "{report:#}");
    // The failed gate's verdicts are worked out again from what it read: track's metrics,
    // with the judge's faithfulness (0.95, above its 0.90 but 0.05 below the champion's 1.0).
    let row = |metric: &str| {
        report["metrics"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["metric"] == metric))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(row("faithfulness")["value"], json!(0.95), "{report:#}");
    assert_eq!(row("faithfulness")["status"], "fail", "{report:#}");
    assert_eq!(row("contains")["status"], "fail", "{report:#}");
    assert_eq!(row("latency_p95_ms")["status"], "pass", "{report:#}");
    assert!(report["champion"]["problem"].is_null(), "{report:#}");
    let regressions = report["regressions_total"].as_u64().expect("a count");
    assert!(regressions >= 1, "{report:#}");
    assert_eq!(
        report["regressions"].as_array().map(Vec::len),
        Some(regressions as usize),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_gets_the_gate_as_a_commit_status_and_deploys_nothing() {
    let (fake, address) = FakeGithub::spawn().await;
    let sb = Sandbox::new();
    sb.write(
        "sluice.toml",
        &format!("public_url = \"https://sluice.example.com\"\n\n[github]\napi_url = \"http://{address}/\"\n"),
    );
    // A paused workflow takes no deliveries: eval_pipeline's schedule runs once at start-up,
    // evaluating the shipped config and making it champion, before the pull request comes.
    let server = start_paused(
        &sb,
        &[
            ("SLUICE_GITHUB_WEBHOOK_SECRET", SECRET),
            ("SLUICE_SECRET_GITHUB_TOKEN", "ghp_test_token"),
        ],
        &["drift_check", "retraining_trigger"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    let scheduled = loop {
        let (_, list) = server.get("/api/v1/runs?workflow=eval_pipeline").await;
        if let Some(id) = list["runs"]
            .as_array()
            .and_then(|runs| runs.first())
            .and_then(|run| run["run_id"].as_str())
        {
            break id.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled run: {list}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let scheduled = ended(&server, &scheduled, "success").await;
    assert_eq!(scheduled["trigger"], "schedule");
    let shipped = outputs(&scheduled, "track")["model_version"]
        .as_u64()
        .expect("version");
    assert_eq!(champion(&server).await, Some(shipped));
    let (status, answer) = deliver(
        &server,
        "pull_request",
        "pr-1",
        &fixture("pull_request_opened"),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let runs = answer["runs"].as_array().expect("runs");
    assert_eq!(
        runs.len(),
        1,
        "only eval_pipeline takes pull requests: {answer}"
    );
    let run_id = runs[0].as_str().expect("run id");
    let run = ended(&server, run_id, "success").await;
    assert_eq!(run["workflow"], "eval_pipeline");
    assert_eq!(run["trigger"], "github");
    // Gated against the champion, which it equals, and deployed nothing: the champion alias
    // moved once, by the scheduled run.
    let gate = outputs(&run, "gate");
    assert_eq!(gate["passed"], true, "{gate:#}");
    assert!(
        gate["table"]
            .as_array()
            .expect("table")
            .iter()
            .any(|row| row["metric"] == "contains" && row["delta"] == 0.0),
        "{gate:#}"
    );
    assert_eq!(task(&run, "deploy")["state"], "skipped", "{run:#}");
    assert_eq!(
        champion(&server).await,
        Some(shipped),
        "nothing was deployed"
    );
    let (_, model) = server.get("/api/v1/models/assistant").await;
    let moves = model["alias_history"].as_array().expect("alias history");
    assert_eq!(moves.len(), 1, "{model:#}");
    assert_eq!(
        moves[0]["moved_by"],
        format!("run:{}/deploy", scheduled["run_id"].as_str().expect("id"))
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let last = loop {
        let accepted: Vec<_> = fake
            .recorded()
            .into_iter()
            .filter(|r| r.answered == 201 && r.body["context"] == "sluice/eval-gate")
            .collect();
        if let Some(last) = accepted.iter().find(|r| r.body["state"] != "pending") {
            assert_eq!(accepted[0].body["state"], "pending");
            break last.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses seen: {:#?}\n{}",
            fake.recorded(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last.repository, "acme/evals");
    assert_eq!(last.sha, HEAD);
    assert_eq!(last.body["state"], "success");
    assert_eq!(
        last.body["target_url"],
        format!("https://sluice.example.com/runs/{run_id}")
    );
    let description = last.body["description"].as_str().unwrap_or_default();
    assert!(description.starts_with("Eval gate"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_openai_endpoint_the_same_file_evaluates_and_judges_that_model() {
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/data/golden_set.jsonl"),
    )
    .expect("golden set");
    let mut script = common::openai::Script::default();
    for line in golden.lines().filter(|l| !l.trim().is_empty()) {
        let example: Value = serde_json::from_str(line).expect("example");
        script.answers.insert(
            example["input"].as_str().expect("input").to_owned(),
            format!(
                "See the help centre: {}.",
                example["expected"].as_str().expect("expected")
            ),
        );
    }
    // Everything else it is asked is a judge's prompt.
    script.when_contains.push((
        String::new(),
        r#"{"score": 0.96, "reason": "supported"}"#.to_owned(),
    ));
    let llm = common::openai::FakeLlm::start(script).await;
    let sb = Sandbox::new();
    sb.write(
        "sluice.toml",
        &format!(
            "[vars]\nopenai = {{ base_url = \"{}\" }}\n\n[eval.prices.\"fake-model\"]\ninput_per_1k = 0.001\noutput_per_1k = 0.002\n",
            llm.base_url
        ),
    );
    let server = start(&sb, &[]).await;
    let run_id = server
        .start_run("eval_pipeline", json!({"model": "fake-model"}))
        .await;
    let run = ended(&server, &run_id, "success").await;
    assert_eq!(
        task(&run, "judge")["state"],
        "skipped",
        "the model's endpoint judges"
    );
    let metrics = &outputs(&run, "track")["metrics"];
    assert_eq!(metrics["contains"], 1.0, "{metrics:#}");
    let faithfulness = metrics["faithfulness"].as_f64().expect("faithfulness");
    assert!((faithfulness - 0.96).abs() < 1e-9, "{metrics:#}");
    assert!(metrics["cost_per_1k"].as_f64() > Some(0.0), "{metrics:#}");
    assert_eq!(outputs(&run, "gate")["passed"], true);
    let requests = llm.requests();
    let asked = requests
        .iter()
        .filter(|r| r["model"] == "fake-model" && r["messages"][0]["role"] == "system")
        .filter(|r| {
            r["messages"][0]["content"]
                .as_str()
                .is_some_and(|s| s.starts_with("You are the Nimbus help-centre assistant."))
        })
        .count();
    assert_eq!(
        asked, 20,
        "each question once, with the config's instructions"
    );
}
