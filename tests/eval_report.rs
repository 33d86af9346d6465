//! The eval report end to end: a `serve` sandbox runs `eval` → `gate` → `track` three times
//! against a golden set, the first run's version becomes the champion, and the report page and
//! its JSON twin show the metrics against the gate and the champion, failures first, and
//! exactly the examples that regressed.

mod common;

use std::time::Duration;

use common::Sandbox;
use common::server::{Server, get_text, ui_cookie, write_workflow};
use serde_json::{Value, json};

const GOLDEN: &str = r#"{"id": "q1", "input": "Capital of France?", "expected": "Paris"}
{"id": "q2", "input": "2 + 2?", "expected": "4"}
{"id": "q3", "input": "Colour of the sky?", "expected": "blue"}
{"id": "q4", "input": "Is water wet?", "expected": "yes"}
{"id": "q5", "input": "Is fire cold?", "expected": "no"}
{"id": "q6", "input": "The answer?", "expected": "42"}
{"id": "q7", "input": "Say ok after this long preamble. LONG", "expected": "ok"}
"#;

/// The champion: q1–q4 and q7 pass, q5 is wrong, q6 got no answer.
const V1: &str = r#"{"id": "q1", "output": "Paris"}
{"id": "q2", "output": "4"}
{"id": "q3", "output": "blue"}
{"id": "q4", "output": "yes"}
{"id": "q5", "output": "maybe"}
{"id": "q6", "error": "timed out"}
{"id": "q7", "output": "ok"}
"#;

/// The challenger: q2 and q3 regress (q2 answers with markup), q5 is fixed, q6 still fails.
const V2: &str = r#"{"id": "q1", "output": "Paris"}
{"id": "q2", "output": "<script>alert(1)</script>"}
{"id": "q3", "output": "red"}
{"id": "q4", "output": "yes"}
{"id": "q5", "output": "no"}
{"id": "q6", "error": "timed out"}
{"id": "q7", "output": "ok"}
"#;

/// Nothing answered: the gate's fail-severity `error_rate` bound fails the run.
const V3: &str = r#"{"id": "q1", "error": "down"}
{"id": "q2", "error": "down"}
{"id": "q3", "error": "down"}
{"id": "q4", "error": "down"}
{"id": "q5", "error": "down"}
{"id": "q6", "error": "down"}
{"id": "q7", "error": "down"}
"#;

const WORKFLOW: &str = r#"
params:
  predictions: { type: string, default: data/v1.jsonl }
tasks:
  evaluate:
    operator: eval
    with:
      dataset: data/golden.jsonl
      target: { predictions: "{{ params.predictions }}" }
      metrics: [exact_match]
  gate:
    operator: gate
    needs: [evaluate]
    with:
      metrics: "{{ tasks.evaluate.outputs.metrics }}"
      thresholds:
        exact_match: { min: 0.6, severity: warn }
        error_rate: { max: 0.5 }
      baseline:
        model: assistant
        alias: champion
        max_regression: { exact_match: { max: 0.05, severity: warn } }
  register:
    operator: track
    needs: [gate]
    with:
      experiment: assistant
      metrics: "{{ tasks.evaluate.outputs.metrics }}"
      register: { model: assistant, source: model.txt }
"#;

async fn run_with(server: &Server, predictions: &str, state: &str) -> String {
    let run_id = server
        .start_run("quality", json!({ "predictions": predictions }))
        .await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], state, "{run}\n{}", server.logs());
    run_id
}

fn ids(rows: &Value) -> Vec<&str> {
    rows.as_array()
        .map(|rows| rows.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default()
}

fn metric<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["metrics"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["metric"] == name))
        .unwrap_or_else(|| panic!("no row for {name} in {report}"))
}

#[tokio::test]
async fn the_report_shows_verdicts_failures_first_and_the_regressions_against_the_champion() {
    let sb = Sandbox::new();
    sb.write(
        "workflows/data/golden.jsonl",
        &GOLDEN.replace("LONG", &"blah ".repeat(100)),
    );
    sb.write("workflows/data/v1.jsonl", V1);
    sb.write("workflows/data/v2.jsonl", V2);
    sb.write("workflows/data/v3.jsonl", V3);
    sb.write("workflows/model.txt", "system: answer briefly\n");
    write_workflow(&sb, "quality", WORKFLOW);
    let server = Server::start(&sb);
    let cookie = ui_cookie(&sb).await;

    // The first run: nothing holds the alias yet.
    let first = run_with(&server, "data/v1.jsonl", "success").await;
    let (status, report) = server
        .get(&format!("/api/v1/runs/{first}/tasks/evaluate/eval"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["champion"],
        json!({"status": "none", "model": "assistant", "alias": "champion"})
    );
    assert_eq!(report["regressions_total"], Value::Null);
    let (status, page) = get_text(
        &server,
        &format!("/runs/{first}/tasks/evaluate/eval"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("no champion yet"), "{page}");

    // Its version becomes the champion.
    let out = sb.sluice(&["registry", "alias", "assistant", "champion", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The second run regresses on q2 and q3.
    let second = run_with(&server, "data/v2.jsonl", "success").await;
    let (status, report) = server
        .get(&format!("/api/v1/runs/{second}/tasks/evaluate/eval"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["champion"]["status"], "found", "{report}");
    assert_eq!(report["champion"]["version"], 1);
    assert_eq!(report["champion"]["run_id"], first.as_str());
    assert_eq!(report["champion"]["problem"], Value::Null, "{report}");
    assert_eq!(report["count"], 7);
    assert_eq!(report["examples_total"], 7);
    assert_eq!(report["examples_failed"], 3);
    assert_eq!(
        ids(&report["examples"]),
        ["q2", "q3", "q6", "q1", "q4", "q5", "q7"],
        "failures first, each group in file order"
    );
    assert_eq!(ids(&report["regressions"]), ["q2", "q3"]);
    assert_eq!(report["regressions_total"], 2);
    assert_eq!(report["gate"]["task"], "gate");
    assert_eq!(report["gate"]["recomputed"], false);
    let exact = metric(&report, "exact_match");
    let value = exact["value"].as_f64().expect("a value");
    assert!((value - 4.0 / 7.0).abs() < 1e-9, "{exact}");
    assert_eq!(exact["threshold"], ">= 0.60");
    assert_eq!(exact["status"], "warn");
    let champion = exact["champion"].as_f64().expect("the champion's value");
    assert!((champion - 5.0 / 7.0).abs() < 1e-9, "{exact}");
    let delta = exact["delta"].as_f64().expect("a delta");
    assert!((delta - (4.0 / 7.0 - 5.0 / 7.0)).abs() < 1e-9, "{exact}");
    let errors = metric(&report, "error_rate");
    assert_eq!(errors["threshold"], "<= 0.50");
    assert_eq!(errors["status"], "pass");

    let (status, page) = get_text(
        &server,
        &format!("/runs/{second}/tasks/evaluate/eval"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("2 examples passed under the champion and fail now"),
        "{page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert(1)"), "{page}");
    // Long text is cut, the whole of it one click away.
    assert!(page.contains("show all (533 characters)"), "{page}");
    let examples = page.split("id=\"examples\"").nth(1).expect("the examples");
    let at = |id: &str| {
        examples
            .find(&format!("<code>{id}</code>"))
            .unwrap_or_else(|| panic!("{id} in {examples}"))
    };
    assert!(at("q6") < at("q1"), "failures first: {examples}");
    let regressions = page
        .split("id=\"regressions\"")
        .nth(1)
        .and_then(|rest| rest.split("id=\"examples\"").next())
        .expect("the regressions");
    assert!(regressions.contains("<code>q2</code>") && regressions.contains("<code>q3</code>"));
    assert!(!regressions.contains("<code>q6</code>"), "{regressions}");
    let row = page
        .split("data-metric=\"exact_match\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the exact_match row");
    assert!(
        row.contains("&gt;= 0.60") && row.contains("warn") && row.contains("-0.14"),
        "{row}"
    );
    // The run page links to the report.
    let (status, run_page) = get_text(&server, &format!("/runs/{second}"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(run_page.contains(&format!("/runs/{second}/tasks/evaluate/eval")));

    // A failed gate kept no table: its thresholds are applied again.
    let third = run_with(&server, "data/v3.jsonl", "failed").await;
    let (status, report) = server
        .get(&format!("/api/v1/runs/{third}/tasks/evaluate/eval"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["gate"]["recomputed"], true, "{report}");
    assert_eq!(report["gate"]["state"], "failed");
    assert_eq!(metric(&report, "error_rate")["status"], "fail");
    assert_eq!(ids(&report["regressions"]), ["q1", "q2", "q3", "q4", "q7"]);

    // Another champion by name; a name that cannot be one is refused.
    let (status, report) = server
        .get(&format!(
            "/api/v1/runs/{second}/tasks/evaluate/eval?champion=assistant@nobody"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["champion"]["status"], "none");
    let (status, _) = server
        .get(&format!(
            "/api/v1/runs/{second}/tasks/evaluate/eval?champion=@x"
        ))
        .await;
    assert_eq!(status, 400);

    // Not an eval task, or no such run.
    for path in [
        format!("/api/v1/runs/{second}/tasks/gate/eval"),
        "/api/v1/runs/no-such-run/tasks/evaluate/eval".to_owned(),
    ] {
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = get_text(
        &server,
        &format!("/runs/{second}/tasks/gate/eval"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 404);

    // A results file gone from the artifact store is a sentence on the page, not an error.
    let (status, listed) = server
        .get(&format!("/api/v1/runs/{second}/artifacts"))
        .await;
    assert_eq!(status, 200, "{listed}");
    let sha = listed["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "eval/results.jsonl"))
        .and_then(|a| a["sha256"].as_str())
        .expect("the results artifact")
        .to_owned();
    let blob = sb
        .path()
        .join("artifacts/sha256")
        .join(&sha[..2])
        .join(&sha);
    std::fs::remove_file(&blob).unwrap_or_else(|e| panic!("remove {}: {e}", blob.display()));
    let (status, page) = get_text(
        &server,
        &format!("/runs/{second}/tasks/evaluate/eval"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"results-problem\""), "{page}");
    let (status, report) = server
        .get(&format!("/api/v1/runs/{second}/tasks/evaluate/eval"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["results_problem"]
            .as_str()
            .is_some_and(|p| p.contains("cannot be read")),
        "{report}"
    );
    assert_eq!(report["metrics"].as_array().map(Vec::len), Some(2));
}
