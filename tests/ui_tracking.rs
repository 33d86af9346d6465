//! The tracking pages in a real browser (`common::browser`): tracking runs and two versions
//! of a YAML prompt are made by `track` tasks through a real `sluice serve`; then log in, open
//! the experiment, choose its columns, pick two runs and compare them (the differing rows are
//! highlighted, with their values), and open the diff of the two versions (the changed key
//! with its old and new values). Screenshots go to `docs/screenshots/` with
//! `SLUICE_UPDATE_SCREENSHOTS=1`.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::Sandbox;
use common::browser::{
    browser, log_in, no_sideways_scroll, save_screenshot, start_driver, wait_until,
};
use common::server::{Server, write_workflow};
use fantoccini::Locator;
use futures_util::FutureExt;
use serde_json::json;

const PASSWORD: &str = "tracking-browser-password";

const PROMPT_V1: &str = "model: gpt-4o-mini\nparams:\n  temperature: 0.2\n  top_p: 0.9\nsystem: You answer from the context.\n";
const PROMPT_V2: &str = "model: gpt-4o-mini\nparams:\n  temperature: 0.7\n  top_p: 0.9\nsystem: You answer from the context.\n";

/// Tracks one evaluation: its model and score as a param and a metric,
/// and registers the prompt as the next version of `assistant`.
fn workflow(prompt: &std::path::Path) -> String {
    format!(
        r#"description: Score a prompt and track the result.
params:
  model: {{ type: string, default: gpt-4o-mini }}
  score: {{ type: number, default: 0.5 }}
tasks:
  track:
    operator: track
    with:
      experiment: prompt-eval
      params: {{ model: "{{{{ params.model }}}}", temperature: "0.2" }}
      metrics: {{ exact_match: "{{{{ params.score }}}}", latency_ms: 120 }}
      register: {{ model: assistant, source: "{}", alias: champion }}
"#,
        prompt.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_two_runs_and_diff_two_prompt_versions_in_a_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let sb = Sandbox::new();
    let prompt = sb.write("prompts/assistant.yaml", PROMPT_V1);
    write_workflow(&sb, "prompt_eval", &workflow(&prompt));
    let server = Server::start_with(&sb, &[], &[("SLUICE_ADMIN_PASSWORD", PASSWORD)]);
    let first = server
        .start_run("prompt_eval", json!({"model": "gpt-4o-mini", "score": 0.5}))
        .await;
    assert_eq!(
        server.wait_run(&first, Duration::from_secs(60)).await["state"],
        "success"
    );
    sb.write("prompts/assistant.yaml", PROMPT_V2);
    let second = server
        .start_run("prompt_eval", json!({"model": "llama-3-8b", "score": 0.75}))
        .await;
    assert_eq!(
        server.wait_run(&second, Duration::from_secs(60)).await["state"],
        "success"
    );

    let profile = tempfile::tempdir().expect("a fresh profile folder");
    let c = browser(&driver, profile.path()).await;
    let flow = AssertUnwindSafe(async {
        log_in(&c, &server.base, PASSWORD).await;
        c.goto(&format!("{}/experiments", server.base)).await.expect("experiments");
        c.find(Locator::LinkText("prompt-eval")).await.expect("the experiment").click().await.expect("open it");
        c.wait().for_element(Locator::Id("tracking-runs")).await.expect("the runs table");
        let count = c.find(Locator::Id("run-count")).await.expect("count").text().await.expect("text");
        assert_eq!(count, "2 matching runs");

        // Choose the columns: the model param and exact_match only, sorted by it.
        c.execute(
            "for (const box of document.querySelectorAll('input[name=col]')) { \
               box.checked = box.value === 'param.model' || box.value === 'metric.exact_match'; } \
             document.getElementById('f-sort').value = 'metric.exact_match'; return true;",
            vec![],
        )
        .await
        .expect("pick the columns");
        c.find(Locator::Id("apply")).await.expect("apply").click().await.expect("apply");
        wait_until(&c, "the chosen columns", "location.search.includes('col=') && document.querySelectorAll('#tracking-runs thead th[data-column]').length === 2", Duration::from_secs(10)).await;
        let headers = c
            .execute("return [...document.querySelectorAll('#tracking-runs thead th[data-column]')].map(h => h.dataset.column);", vec![])
            .await
            .expect("headers");
        assert_eq!(headers, json!(["param.model", "metric.exact_match"]));
        let first_row = c
            .execute("return [...document.querySelectorAll('#tracking-runs tbody tr:first-child td.num')].map(td => td.textContent);", vec![])
            .await
            .expect("cells");
        assert_eq!(first_row, json!(["llama-3-8b", "0.75"]), "highest exact_match first");
        save_screenshot(&c, "experiment.png").await;

        // Pick both runs and compare them.
        for box_ in c.find_all(Locator::Css("#tracking-runs input[name=run]")).await.expect("checkboxes") {
            box_.click().await.expect("select the run");
        }
        c.find(Locator::Id("compare-button")).await.expect("compare").click().await.expect("compare");
        c.wait().for_element(Locator::Id("compare-metrics")).await.expect("the comparison");
        // Each row as [class, header, cells…]: the runs in the table's order, llama-3-8b first.
        let row = |table: &str, key: &str| {
            format!(
                "const r = document.querySelector('#{table} tr[data-key={key}]'); \
                 return [r.className, ...[...r.querySelectorAll('td')].map(td => td.textContent.trim())];"
            )
        };
        let model = c.execute(&row("compare-params", "model"), vec![]).await.expect("the model row");
        assert_eq!(model, json!(["differs", "llama-3-8b", "gpt-4o-mini"]));
        let same = c.execute(&row("compare-params", "temperature"), vec![]).await.expect("the temperature row");
        assert_eq!(same, json!(["", "0.2", "0.2"]), "equal values are not highlighted");
        let exact = c.execute(&row("compare-metrics", "exact_match"), vec![]).await.expect("exact_match");
        assert_eq!(exact, json!(["differs", "0.75", "0.5 (-0.25)"]));
        let lines = c
            .execute("return document.querySelectorAll('[data-chart=exact_match] polyline').length;", vec![])
            .await
            .expect("chart");
        assert_eq!(lines, json!(2), "one line per run");
        save_screenshot(&c, "tracking-compare.png").await;

        // The registry: the model page's form opens the diff of the two versions.
        c.goto(&format!("{}/models/assistant", server.base)).await.expect("the model");
        let history = c.find(Locator::Id("alias-history")).await.expect("alias history").text().await.expect("text");
        assert!(history.contains(&format!("run:{second}/track")), "{history}");
        c.find(Locator::Css("form[action='/models/assistant/diff'] button")).await.expect("compare versions").click().await.expect("open the diff");
        c.wait().for_element(Locator::Css("tr[data-key='params.temperature']")).await.expect("the changed key");
        let row = c
            .execute("const r = document.querySelector(\"tr[data-key='params.temperature']\"); return [r.className, r.querySelector('.old').textContent, r.querySelector('.new').textContent];", vec![])
            .await
            .expect("row");
        assert_eq!(row, json!(["key-changed", "0.2", "0.7"]));
        let keys = c
            .execute("return document.querySelectorAll('table.key-diff tbody tr').length;", vec![])
            .await
            .expect("rows");
        assert_eq!(keys, json!(1), "only the changed key is listed");
        save_screenshot(&c, "model-diff.png").await;

        // Every tracking page at a phone's width: nothing scrolls sideways.
        let diff = c.current_url().await.expect("url");
        c.set_window_size(390, 844).await.expect("phone width");
        let (_, experiments) = server.get("/api/v1/tracking/experiments").await;
        let experiment = experiments["experiments"][0]["id"].as_str().expect("an experiment").to_owned();
        let (_, runs) = server.get(&format!("/api/v1/tracking/experiments/{experiment}/runs")).await;
        let ids: Vec<&str> = runs["runs"].as_array().expect("runs").iter().filter_map(|r| r["id"].as_str()).collect();
        for path in [
            "/experiments".to_owned(),
            format!("/experiments/{experiment}"),
            format!("/tracking/runs/{}", ids[0]),
            format!("/tracking/compare?runs={},{}", ids[0], ids[1]),
            "/models".to_owned(),
            "/models/assistant".to_owned(),
            "/models/assistant/versions/2".to_owned(),
            format!("{}?{}", diff.path(), diff.query().unwrap_or_default()),
        ] {
            no_sideways_scroll(&c, &server.base, &path).await;
        }
    })
    .catch_unwind()
    .await;
    let closed = c.close().await;
    drop(driver);
    if let Err(panic) = flow {
        std::panic::resume_unwind(panic);
    }
    closed.expect("the browser session closes");
}
