//! A workflow whose `track` task records input files as lineage and registers a model
//! version, for tests of reproducing tracked runs.

use std::time::Duration;

use serde_json::Value;

use super::Sandbox;
use super::server::{Server, write_workflow};

/// The workflow's id.
pub const WORKFLOW: &str = "tracked";

/// Writes the workflow (with `description`, so a test can change its version) and its two
/// input files.
pub fn write_tracked(sb: &Sandbox, description: &str, golden: &str) {
    sb.write("workflows/data/golden.jsonl", golden);
    sb.write("workflows/prompts/assistant.yaml", "temperature: 0.2\n");
    write_workflow(
        sb,
        WORKFLOW,
        &format!(
            "description: {description}\n\
             params:\n  model: {{ type: string, default: small }}\n\
             tasks:\n  track:\n    operator: track\n    with:\n\
             \x20     experiment: reproduce\n\
             \x20     params: {{ model: \"{{{{ params.model }}}}\" }}\n\
             \x20     inputs: [data/golden.jsonl, prompts/assistant.yaml]\n\
             \x20     register: {{ model: assistant, source: prompts/assistant.yaml }}\n"
        ),
    );
}

/// Runs the workflow to its end with `params`; its run id and the tracking run it logged.
pub async fn tracked_run(server: &Server, params: Value) -> (String, String) {
    let run_id = server.start_run(WORKFLOW, params).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    let tracking_run = run["tasks"]["track"]["outputs"]["tracking_run_id"]
        .as_str()
        .expect("a tracking run id")
        .to_owned();
    (run_id, tracking_run)
}

/// Polls the run started to reproduce something until it has ended, and returns it with its
/// `reproduces` object.
pub async fn reproduced(server: &Server, run_id: &str) -> Value {
    let run = server.wait_run(run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    assert!(run["reproduces"].is_object(), "{run}");
    run
}
