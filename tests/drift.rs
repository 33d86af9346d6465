//! The `drift` operator end to end: real workflows over generated CSV and JSONL files, run by
//! `sluice run` and by a `serve` sandbox (backfilled logical dates, the histograms artifact
//! through the API, the report page with its charts after two runs).

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::Sandbox;
use common::server::{Server, get_text, ui_cookie, write_workflow};
use serde_json::{Value, json};
use sluice_drift::rng::SeededRng;

fn normal(rng: &mut SeededRng, n: usize, mean: f64, sd: f64) -> Vec<f64> {
    (0..n).map(|_| mean + sd * rng.normal()).collect()
}

/// `n` topics: mostly `a` and `b` as usual, mostly `c` once shifted.
fn topics(rng: &mut SeededRng, n: usize, shifted: bool) -> Vec<&'static str> {
    (0..n)
        .map(|_| {
            let u = rng.next_f64();
            match (shifted, u) {
                (false, u) if u < 0.5 => "a",
                (false, u) if u < 0.8 => "b",
                (false, _) => "c",
                (true, u) if u < 0.2 => "a",
                (true, u) if u < 0.3 => "b",
                (true, _) => "c",
            }
        })
        .collect()
}

fn reference_csv(rng: &mut SeededRng) -> String {
    let latency = normal(rng, 400, 100.0, 10.0);
    let topic = topics(rng, 400, false);
    let mut csv = String::from("latency_ms,topic\n");
    for (l, t) in latency.iter().zip(&topic) {
        let _ = writeln!(csv, "{l:.3},{t}");
    }
    csv
}

/// Five days of production rows, 300 a day from 2026-11-01: the day of 2026-11-03 looks like
/// the reference, every other day is shifted.
fn production_jsonl(rng: &mut SeededRng) -> String {
    let mut jsonl = String::new();
    for day in 1..=5 {
        let shifted = day != 3;
        let mean = if shifted { 130.0 } else { 100.0 };
        let latency = normal(rng, 300, mean, 10.0);
        let topic = topics(rng, 300, shifted);
        for (i, (l, t)) in latency.iter().zip(&topic).enumerate() {
            // Spread over the day, the last row exactly at its end (the window is (start, end]).
            let seconds = (i as i64 + 1) * 288;
            let ts = chrono::NaiveDate::from_ymd_opt(2026, 11, day)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc() + chrono::TimeDelta::seconds(seconds))
                .expect("a date");
            let row = json!({"ts": ts.to_rfc3339(), "latency_ms": (l * 1000.0).round() / 1000.0,
                             "topic": t, "request_id": format!("{day}-{i}")});
            let _ = writeln!(jsonl, "{row}");
        }
    }
    jsonl
}

const DAILY: &str = r#"
schedule: "@daily"
timezone: UTC
start_date: 2026-11-01
catchup: false
tasks:
  detect:
    operator: drift
    with:
      reference: data/reference.csv
      current: data/production.jsonl
      window: { column: ts, last: 24h }
      columns: { latency_ms: numeric, topic: categorical }
      method: { latency_ms: ks }
"#;

async fn backfill(server: &Server, day: &str) -> Value {
    let (status, body) = server
        .post(
            "/api/v1/workflows/daily/backfill",
            json!({"from": day, "to": day}),
        )
        .await;
    assert_eq!(status, 201, "{body}\n{}", server.logs());
    let run_id = body["run_ids"][0]
        .as_str()
        .unwrap_or_else(|| panic!("a run in {body}"))
        .to_owned();
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    run
}

#[tokio::test]
async fn the_window_ends_at_the_backfilled_date_and_only_shifted_days_drift() {
    let sb = Sandbox::new();
    let mut rng = SeededRng::new(16);
    sb.write("workflows/data/reference.csv", &reference_csv(&mut rng));
    sb.write(
        "workflows/data/production.jsonl",
        &production_jsonl(&mut rng),
    );
    write_workflow(&sb, "daily", DAILY);
    let server = Server::start(&sb);

    // The run of 2026-11-03 covers the day up to its data-interval end, 2026-11-04 00:00:
    // the unshifted day.
    let calm = backfill(&server, "2026-11-03").await;
    let outputs = &calm["tasks"]["detect"]["outputs"];
    assert_eq!(outputs["drift_detected"], false, "{calm}");
    assert_eq!(outputs["drifted_columns"], json!([]), "{calm}");
    let latency = &outputs["columns"]["latency_ms"];
    assert_eq!(latency["method"], "ks");
    assert_eq!(latency["threshold"], 0.05);
    assert!(
        latency["p_value"].as_f64().is_some_and(|p| p > 0.05),
        "{calm}"
    );
    assert_eq!(outputs["columns"]["topic"]["method"], "chisquare");

    // The run of 2026-11-05 covers a shifted day.
    let shifted = backfill(&server, "2026-11-05").await;
    let outputs = &shifted["tasks"]["detect"]["outputs"];
    assert_eq!(outputs["drift_detected"], true, "{shifted}");
    assert_eq!(outputs["drift_share"], 1.0);
    assert_eq!(outputs["drifted_columns"], json!(["latency_ms", "topic"]));
    let latency = &outputs["columns"]["latency_ms"];
    assert!(
        latency["p_value"].as_f64().is_some_and(|p| p < 1e-6),
        "{shifted}"
    );
    assert!(
        latency["statistic"].as_f64().is_some_and(|d| d > 0.5),
        "{shifted}"
    );
    assert_eq!(latency["drifted"], true);

    // The histograms artifact: exactly the 300 rows of the window were checked, of 1,500.
    let run_id = shifted["run_id"].as_str().expect("run id");
    let (status, body) = get_text(
        &server,
        &format!("/api/v1/runs/{run_id}/artifacts/drift%2Fhistograms.json"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let histograms: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(histograms["current_rows"], 300);
    assert_eq!(histograms["current_rows_read"], 1500);
    assert_eq!(histograms["reference_rows"], 400);
    assert_eq!(histograms["window"]["end"], "2026-11-06T00:00:00Z");
    let topic = &histograms["columns"]["topic"];
    assert_eq!(topic["labels"], json!(["a", "b", "c"]));
    let shares: f64 = topic["current"]
        .as_array()
        .expect("shares")
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{topic}");
    assert!(
        histograms["columns"]["latency_ms"]["edges"]
            .as_array()
            .is_some_and(|e| e.len() > 2)
    );

    // The API's twin of the report.
    let (status, report) = server
        .get(&format!("/api/v1/runs/{run_id}/tasks/detect/drift"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outputs"], *outputs);
    assert_eq!(report["histograms"]["current_rows"], 300);
    let history: Vec<&Value> = report["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| &h["columns"]["latency_ms"]["drifted"])
        .collect();
    assert_eq!(history, [&json!(false), &json!(true)], "{report}");
    let (status, _) = server
        .get(&format!("/api/v1/runs/{run_id}/tasks/nope/drift"))
        .await;
    assert_eq!(status, 404);

    // The report page: the table, both histograms as SVG, and a history line of two runs.
    let cookie = ui_cookie(&sb).await;
    let (status, page) = get_text(
        &server,
        &format!("/runs/{run_id}/tasks/detect/drift"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<strong>drift detected</strong>"), "{page}");
    assert_eq!(
        page.matches("class=\"drift-histogram\"").count(),
        2,
        "{page}"
    );
    assert_eq!(page.matches("class=\"drift-history\"").count(), 2, "{page}");
    let line = page
        .split("<polyline")
        .nth(1)
        .and_then(|rest| rest.split("points=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("a history line");
    assert_eq!(
        line.split_whitespace().count(),
        2,
        "one point per run: {line}"
    );
    assert!(page.contains("2 past successful runs"), "{page}");
    // The run page links to the report.
    let (status, run_page) = get_text(&server, &format!("/runs/{run_id}"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(run_page.contains(&format!("/runs/{run_id}/tasks/detect/drift")));
    // A task that is not a drift task has no report.
    let (status, _) = get_text(
        &server,
        &format!("/runs/{run_id}/tasks/nope/drift"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, 404);
}

/// `sluice run` of one drift task over `with`, in a fresh sandbox holding `files`.
fn run_drift(files: &[(&str, &str)], with: &str) -> Value {
    let sb = Sandbox::new();
    for (name, content) in files {
        sb.write(name, content);
    }
    let flow = sb.write(
        "flow.yaml",
        &format!("tasks:\n  detect:\n    operator: drift\n    retries: 2\n    with: {with}\n"),
    );
    let out = sb.run_json(&flow, &[]);
    let json = out.json();
    assert_eq!(
        out.code,
        if json["state"] == "success" { 0 } else { 1 },
        "{}",
        out.stderr
    );
    json
}

/// The task's error, after checking that it failed at once (bad data is never retried).
fn rejection(run: &Value) -> String {
    let task = &run["tasks"]["detect"];
    assert_eq!(task["state"], "failed", "{run}");
    assert_eq!(task["try_number"], 1, "no retry for bad data: {run}");
    task["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn bad_data_fails_at_once_with_a_clear_error() {
    let reference = "latency_ms,topic\n1.5,a\n2.5,b\n3.5,a\n";
    let bad_row = "latency_ms,topic\n1.0,a\n2.0,b\noops,a\n4.0,b\n";
    let missing_column = run_drift(
        &[("r.csv", reference), ("c.csv", reference)],
        "{ reference: r.csv, current: c.csv, columns: { latency_ms: numeric, answer: text } }",
    );
    let error = rejection(&missing_column);
    assert!(
        error.contains("Column `answer` is missing from the reference data"),
        "{error}"
    );

    let not_numeric = run_drift(
        &[("r.csv", reference), ("c.csv", bad_row)],
        "{ reference: r.csv, current: c.csv, columns: { latency_ms: numeric } }",
    );
    let error = rejection(&not_numeric);
    assert!(
        error.contains("row 3 of the current data holds `oops`, which is not a number"),
        "{error}"
    );

    let no_file = run_drift(
        &[("r.csv", reference)],
        "{ reference: r.csv, current: data/missing.jsonl }",
    );
    let error = rejection(&no_file);
    assert!(
        error.contains("The current file") && error.contains("does not exist"),
        "{error}"
    );

    let empty = run_drift(
        &[("r.csv", reference), ("c.csv", "latency_ms,topic\n")],
        "{ reference: r.csv, current: c.csv }",
    );
    assert!(rejection(&empty).contains("no rows"), "{empty}");
}

#[test]
fn rows_from_upstream_outputs_are_data_too_and_skipped_columns_are_warned_about() {
    let sb = Sandbox::new();
    let flow = sb.write(
        "flow.yaml",
        r#"
tasks:
  produce:
    operator: shell
    with:
      command: |
        echo '{"rows": [{"x": 1, "only_here": 1}, {"x": 2, "only_here": 1}, {"x": 3, "only_here": 2}]}' > "$SLUICE_OUTPUT"
  detect:
    operator: drift
    needs: [produce]
    with:
      reference: "{{ tasks.produce.outputs.rows }}"
      current: [{"x": 1}, {"x": 2}, {"x": 2}]
"#,
    );
    let out = sb.run_json(&flow, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = out.json();
    let task = &run["tasks"]["detect"];
    assert_eq!(task["state"], "success", "{run}");
    let x = &task["outputs"]["columns"]["x"];
    // Three integer values: a categorical column, and chi-square is Evidently's choice.
    assert_eq!(x["method"], "chisquare", "{run}");
    assert!(x["p_value"].as_f64().is_some(), "{run}");
    assert_eq!(
        task["outputs"]["columns"]
            .as_object()
            .map(|c| c.len())
            .unwrap_or_default(),
        1,
        "`only_here` is not in the current data: {run}"
    );
}

/// The operator computes with the crate whose numbers `drift/tests/reference.rs` compares with
/// scipy; this checks the path between them: a sample of the committed reference fixture,
/// generated again the same way, gives the fixture's KS statistic and p-value.
#[test]
fn a_fixture_sample_gives_scipys_ks_numbers_through_the_operator() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("drift/tests/fixtures/reference.json"),
        )
        .expect("the fixture"),
    )
    .expect("JSON");
    let case = &fixture["samples"]["normal_shift_1000_800"];
    // drift/tests/reference.rs: the first case drawn from SeededRng::new(20261206).
    let mut rng = SeededRng::new(20261206);
    let reference = normal(&mut rng, 1000, 0.0, 1.0);
    let current = normal(&mut rng, 800, 0.3, 1.2);
    let csv = |values: &[f64]| {
        let mut text = String::from("x\n");
        for v in values {
            let _ = writeln!(text, "{v:?}");
        }
        text
    };
    let run = run_drift(
        &[("r.csv", &csv(&reference)), ("c.csv", &csv(&current))],
        "{ reference: r.csv, current: c.csv, method: { x: ks } }",
    );
    let x = &run["tasks"]["detect"]["outputs"]["columns"]["x"];
    let close = |a: &Value, b: &Value| {
        let (a, b) = (a.as_f64().expect("a number"), b.as_f64().expect("a number"));
        (a - b).abs() <= 1e-9 * b.abs().max(f64::MIN_POSITIVE)
    };
    assert!(close(&x["statistic"], &case["ks"][0]), "{x} vs {case}");
    assert!(close(&x["p_value"], &case["ks"][1]), "{x} vs {case}");
    // Without an override the method is the one Evidently chooses.
    let run = run_drift(
        &[("r.csv", &csv(&reference)), ("c.csv", &csv(&current))],
        "{ reference: r.csv, current: c.csv }",
    );
    let x = &run["tasks"]["detect"]["outputs"]["columns"]["x"];
    assert_eq!(x["method"], case["default"], "{run}");
    let default = case["default"].as_str().expect("a method");
    // Tests with a p-value keep `[statistic, p_value]`, distances the distance alone.
    let expected = match &case[default] {
        Value::Array(pair) => pair[0].clone(),
        distance => distance.clone(),
    };
    assert!(close(&x["statistic"], &expected), "{x} vs {case}");
    assert_eq!(
        run["tasks"]["detect"]["outputs"].as_object().map(|o| {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            keys.into_iter().cloned().collect::<Vec<_>>()
        }),
        Some(vec![
            "columns".to_owned(),
            "drift_detected".to_owned(),
            "drift_share".to_owned(),
            "drifted_columns".to_owned()
        ])
    );
}
