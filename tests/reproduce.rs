//! Reproducing a tracking run or a model version through a real `sluice serve` on the
//! built-in backend: the new run has the original's params and compares its workflow version
//! and input files with the original's lineage.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::Sandbox;
use common::server::Server;
use common::tracked::{WORKFLOW, reproduced, tracked_run, write_tracked};

/// Waits until the server has loaded the workflow with `description`.
async fn wait_for_description(server: &Server, description: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, wf) = server.get(&format!("/api/v1/workflows/{WORKFLOW}")).await;
        if wf["description"] == description {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the catalog never loaded `{description}`: {wf}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn input_status(run: &Value, path: &str) -> String {
    run["reproduces"]["comparison"]["inputs"]
        .as_array()
        .and_then(|inputs| inputs.iter().find(|i| i["path"] == path))
        .and_then(|i| i["status"].as_str())
        .unwrap_or_else(|| panic!("no input `{path}` in {run}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reproduction_has_the_same_params_and_says_what_differs() {
    let sb = Sandbox::new();
    write_tracked(&sb, "first", "{\"q\": 1}\n");
    let server = Server::start(&sb);
    let (original, tracking_run) = tracked_run(&server, json!({"model": "large"})).await;

    // Nothing changed: identical.
    let (status, started) = server
        .post(
            &format!("/api/v1/tracking/runs/{tracking_run}/reproduce"),
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["reproduces_run_id"], original.as_str());
    assert_eq!(started["tracking_run_id"], tracking_run.as_str());
    let again = reproduced(&server, started["run_id"].as_str().expect("id")).await;
    assert_eq!(again["params"], json!({"model": "large"}));
    let report = &again["reproduces"];
    assert_eq!(report["run_id"], original.as_str());
    assert_eq!(report["tracking_run_id"], tracking_run.as_str());
    assert_ne!(report["reproduced_tracking_run_id"], tracking_run.as_str());
    assert_eq!(report["comparison"]["identical"], true, "{report}");
    assert_eq!(input_status(&again, "data/golden.jsonl"), "same");
    let (_, plain) = server.get(&format!("/api/v1/runs/{original}")).await;
    assert!(plain.get("reproduces").is_none(), "{plain}");

    // From the model version the original registered: the same tracking run.
    let (status, by_version) = server
        .post("/api/v1/models/assistant/versions/1/reproduce", json!({}))
        .await;
    assert_eq!(status, 201, "{by_version}");
    assert_eq!(by_version["tracking_run_id"], tracking_run.as_str());
    reproduced(&server, by_version["run_id"].as_str().expect("id")).await;

    // A changed input file and a changed workflow file are both named.
    write_tracked(&sb, "second", "{\"q\": 2}\n");
    wait_for_description(&server, "second").await;
    let (status, started) = server
        .post(
            &format!("/api/v1/tracking/runs/{tracking_run}/reproduce"),
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let changed = reproduced(&server, started["run_id"].as_str().expect("id")).await;
    let comparison = &changed["reproduces"]["comparison"];
    assert_eq!(comparison["identical"], false, "{comparison}");
    assert_eq!(comparison["same_version"], false, "{comparison}");
    assert_eq!(input_status(&changed, "data/golden.jsonl"), "changed");
    assert_eq!(input_status(&changed, "prompts/assistant.yaml"), "same");
    let differences: Vec<&str> = comparison["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(differences[0].contains("workflow version differs"));
    assert!(differences[1].contains("`data/golden.jsonl` changed"));

    // Unknown originals are 404s; a workflow no longer loaded is a 409 that says so.
    for path in [
        "/api/v1/tracking/runs/no-such-run/reproduce",
        "/api/v1/models/no-such-model/versions/1/reproduce",
        "/api/v1/models/assistant/versions/99/reproduce",
    ] {
        let (status, body) = server.post(path, json!({})).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    std::fs::remove_file(sb.path().join(format!("workflows/{WORKFLOW}.yaml"))).expect("rm");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.get(&format!("/api/v1/workflows/{WORKFLOW}")).await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "still loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = server
        .post(
            &format!("/api/v1/tracking/runs/{tracking_run}/reproduce"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no longer loaded")),
        "{body}"
    );
}
