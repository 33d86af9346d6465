//! The web UI in a real browser: Debian's headless `chromium` driven over WebDriver
//! (`chromedriver`, which this test starts on a free port). Log in, open the workflows page,
//! watch a run started through the API appear on its workflow's page, trigger a run through the
//! form with a param, watch its tasks, state, times and Gantt chart follow without a reload
//! (server-sent events), open a task's log, and save screenshots (to `docs/screenshots/` with
//! `SLUICE_UPDATE_SCREENSHOTS=1`).
//!
//! Without chromium the test is skipped, except in CI (`CI` set), where it fails:
//! `scripts/test` installs `chromium` and `chromium-driver` when they are missing.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use common::Sandbox;
use common::browser::{
    browser, browser_with, log_in, no_sideways_scroll, save_screenshot, start_driver, wait_until,
};
use common::server::{Server, write_workflow};
use fantoccini::Locator;
use futures_util::FutureExt;
use serde_json::json;

const PASSWORD: &str = "browser-test-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_trigger_watch_live_and_read_a_log() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let sb = Sandbox::new();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"))
        .expect("shipped workflows")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            sb.write(
                &format!("workflows/{name}"),
                &std::fs::read_to_string(&path).expect("read"),
            );
        }
    }
    let flag = sb.path().join("release.flag");
    write_workflow(
        &sb,
        "release",
        &format!(
            r#"description: Evaluate a model, wait for the release flag, then publish it.
tags: [llmops, demo]
params:
  model: {{ type: string, default: gpt-4o-mini, description: Model under test }}
  samples: {{ type: integer, default: 200, minimum: 1, description: Golden-set rows to score }}
  region: {{ type: string, enum: [eu, us], default: eu, description: Where to deploy }}
  dry_run: {{ type: boolean, default: false, description: Skip the publish step }}
tasks:
  prepare:
    operator: shell
    with: {{ command: "echo preparing {{{{ params.model }}}} on {{{{ params.samples }}}} samples" }}
  evaluate:
    operator: shell
    needs: [prepare]
    with:
      command: |
        echo "scoring {{{{ params.model }}}}"
        echo "faithfulness=0.93" >> "$SLUICE_OUTPUT"
  approval:
    operator: shell
    needs: [prepare]
    with: {{ command: "while [ ! -e '{flag}' ]; do sleep 0.05; done; echo approved" }}
  publish:
    operator: shell
    needs: [evaluate, approval]
    with: {{ command: "echo publishing {{{{ params.model }}}} to {{{{ params.region }}}}" }}
"#,
            flag = flag.display()
        ),
    );
    let server = Server::start_with(&sb, &[], &[("SLUICE_ADMIN_PASSWORD", PASSWORD)]);
    let profile = tempfile::tempdir().expect("a fresh profile folder");
    let c = browser(&driver, profile.path()).await;

    let flow = AssertUnwindSafe(async {
        // Anonymous: the UI sends us to the login page.
        c.goto(&server.base).await.expect("open the UI");
        let url = c.current_url().await.expect("url");
        assert_eq!(url.path(), "/login", "{url}");
        save_screenshot(&c, "login.png").await;
        c.find(Locator::Id("name")).await.expect("name").send_keys("admin").await.expect("type");
        c.find(Locator::Id("password")).await.expect("password").send_keys(PASSWORD).await.expect("type");
        c.find(Locator::Css("form button[type=submit]")).await.expect("button").click().await.expect("log in");

        // The workflows page. Wait for something only it has: the login page has a heading
        // too, which goes stale while the login is answered.
        c.wait().for_element(Locator::Css("a[href='/workflows/hello']")).await.expect("hello is listed");
        let heading = c.find(Locator::Css("main h1")).await.expect("heading");
        assert_eq!(heading.text().await.expect("text"), "Workflows");
        // Run hello once so the list and its page have history to show.
        let hello = server.start_run("hello", json!({"name": "screenshots"})).await;
        server.wait_run(&hello, Duration::from_secs(60)).await;
        c.refresh().await.expect("reload");
        save_screenshot(&c, "workflows.png").await;

        // A workflow page shows a run started elsewhere (here through the API) at the head of
        // its grid, and its squares turning green, without a reload.
        c.goto(&format!("{}/workflows/hello", server.base)).await.expect("hello's page");
        c.wait().for_element(Locator::Css(&format!("[data-run-head='{hello}']"))).await.expect("the first run");
        c.execute("window.stillTheSamePage = true; return true;", vec![]).await.expect("mark");
        let second = server.start_run("hello", json!({"name": "live"})).await;
        wait_until(
            &c,
            "the new run at the head of the grid",
            &format!("document.querySelector('#runs thead th:nth-child(2) [data-run-head=\"{second}\"]')"),
            Duration::from_secs(30),
        )
        .await;
        wait_until(
            &c,
            "the new run's squares to turn green",
            &format!(
                "document.querySelector('[data-run-head=\"{second}\"].s-success') && \
                 document.querySelector('[data-cell=\"{second}|done\"].s-success')"
            ),
            Duration::from_secs(60),
        )
        .await;
        let shown = c
            .execute("return [window.stillTheSamePage === true, document.querySelectorAll('#runs [data-run-head]').length];", vec![])
            .await
            .expect("check");
        assert_eq!(shown, json!([true, 2]), "the page was not reloaded and shows both runs");
        c.goto(&server.base).await.expect("back to the workflows");

        // Trigger `release` through its form, with a param.
        c.find(Locator::Css("a[href='/workflows/release']")).await.expect("link").click().await.expect("open");
        c.wait().for_element(Locator::Id("trigger-link")).await.expect("trigger button").click().await.expect("open form");
        let model = c.wait().for_element(Locator::Id("param-model")).await.expect("model field");
        assert_eq!(model.prop("value").await.expect("value").as_deref(), Some("gpt-4o-mini"), "the default is filled in");
        c.find(Locator::Id("param-region")).await.expect("region is a select");
        save_screenshot(&c, "trigger.png").await;
        model.clear().await.expect("clear");
        model.send_keys("llama-3-8b").await.expect("type");
        c.find(Locator::Id("trigger-submit")).await.expect("submit").click().await.expect("start");

        // The run page: the gated task waits, so the page starts with work in progress.
        wait_until(&c, "the run page", "location.pathname.startsWith('/runs/')", Duration::from_secs(20)).await;
        let run_id = c.current_url().await.expect("url").path().trim_start_matches("/runs/").to_owned();
        wait_until(
            &c,
            "the approval task to run",
            "document.querySelector('section[data-task=approval] [data-task-state] .badge.s-running')",
            Duration::from_secs(30),
        )
        .await;
        // A marker that a reload would wipe out.
        c.execute("window.stillTheSamePage = true; return true;", vec![]).await.expect("mark");
        // While the run goes on, its duration counts on.
        wait_until(&c, "the run to have started", "document.querySelector('#run-started time')", Duration::from_secs(10)).await;
        let duration = c
            .execute("return document.getElementById('run-duration').textContent;", vec![])
            .await
            .expect("duration");
        wait_until(
            &c,
            "the duration to count on",
            &format!("document.getElementById('run-duration').textContent !== {duration}"),
            Duration::from_secs(10),
        )
        .await;
        std::fs::write(&flag, "go").expect("release the gate");
        wait_until(
            &c,
            "every task to turn green",
            "[...document.querySelectorAll('[data-task-state] .badge')].every(b => b.classList.contains('s-success'))",
            Duration::from_secs(60),
        )
        .await;
        wait_until(&c, "the run to succeed", "document.querySelector('#run-state .badge.s-success')", Duration::from_secs(30)).await;
        // The run's times and its Gantt chart follow without a reload.
        wait_until(&c, "the run's end time", "document.querySelector('#run-ended time')", Duration::from_secs(10)).await;
        wait_until(
            &c,
            "a green Gantt bar per task",
            "document.querySelectorAll('svg.gantt rect.bar.s-success').length === 4",
            Duration::from_secs(10),
        )
        .await;
        let same = c.execute("return window.stillTheSamePage === true;", vec![]).await.expect("check");
        assert_eq!(same, json!(true), "the page was not reloaded");

        // Open a task's log: the line streamed in while the page was open.
        let summary = c
            .find(Locator::Css("section[data-task=publish] details summary"))
            .await
            .expect("publish's try");
        let open = c
            .execute("return document.querySelector('section[data-task=publish] details').open;", vec![])
            .await
            .expect("open?");
        if open != json!(true) {
            summary.click().await.expect("open the try");
        }
        let log = c
            .find(Locator::Css("section[data-task=publish] pre.log"))
            .await
            .expect("the log");
        wait_until(
            &c,
            "publish's log line",
            "document.querySelector('section[data-task=publish] pre.log').textContent.includes('publishing llama-3-8b to eu')",
            Duration::from_secs(20),
        )
        .await;
        assert!(log.text().await.expect("text").contains("publishing llama-3-8b to eu"));
        save_screenshot(&c, "run.png").await;
        c.execute(
            "document.querySelector('section[data-task=evaluate] details').open = true; \
             document.getElementById('tasks-title').scrollIntoView(); return true;",
            vec![],
        )
        .await
        .expect("show the tasks");
        save_screenshot(&c, "run-tasks.png").await;
        let run = server.wait_run(&run_id, Duration::from_secs(10)).await;
        assert_eq!(run["params"]["model"], "llama-3-8b", "{run}");
        assert_eq!(run["state"], "success", "{run}");

        // The workflow page: graph coloured by the run, grid of runs.
        c.goto(&format!("{}/workflows/release", server.base)).await.expect("workflow page");
        c.wait().for_element(Locator::Css("svg.dag g.node.s-success")).await.expect("a green node");
        save_screenshot(&c, "workflow.png").await;

        // Hostile text is shown as text, and nothing in it runs. (Added last, so the
        // screenshots above show only the demo workflows; the catalog picks it up within a
        // second.)
        write_workflow(
            &sb,
            "hostile",
            "description: \"<img src=x onerror=\\\"window.pwned=1\\\"><script>window.pwned=2</script>\"\n\
             tasks:\n  a: { operator: noop }\n",
        );
        c.goto(&format!("{}/workflows/hostile", server.base)).await.expect("hostile page");
        wait_until(&c, "the hostile workflow to load", "document.querySelector('p.desc') || (location.reload(), false)", Duration::from_secs(15)).await;
        let description = c.wait().for_element(Locator::Css("p.desc")).await.expect("description");
        assert_eq!(
            description.text().await.expect("text"),
            "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>"
        );
        let pwned = c.execute("return window.pwned === undefined;", vec![]).await.expect("check");
        assert_eq!(pwned, json!(true), "an injected script ran");

        // The same run page at a phone's width.
        c.set_window_size(390, 844).await.expect("phone width");
        c.goto(&format!("{}/runs/{run_id}", server.base)).await.expect("run page");
        c.wait().for_element(Locator::Css("#run-state .badge.s-success")).await.expect("state");
        let overflow = c
            .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", vec![])
            .await
            .expect("width");
        assert_eq!(overflow, json!(true), "no sideways scrolling at 390 px");
        save_screenshot(&c, "run-phone.png").await;
    })
    .catch_unwind()
    .await;
    // Always end the session, so chromium exits whatever happened above.
    let closed = c.close().await;
    drop(driver);
    if let Err(panic) = flow {
        std::panic::resume_unwind(panic);
    }
    closed.expect("the browser session closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_success_from_the_page_read_a_long_log_and_every_page_fits_a_phone() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "chain",
        r#"description: Prepare, check and publish; the check fails until someone looks at it.
params:
  model: { type: string, default: small, description: Model under test }
  samples: { type: integer, default: 10, minimum: 1, maximum: 500 }
tasks:
  prepare: { operator: shell, with: { command: "echo preparing" } }
  check:
    operator: shell
    needs: [prepare]
    with: { command: "echo the check needs a person; exit 1" }
  publish: { operator: shell, needs: [check], with: { command: "echo published" } }
on_failure:
  tell: { operator: noop }
"#,
    );
    write_workflow(
        &sb,
        "chatty",
        "description: Writes a long log.\ntasks:\n  talk: { operator: shell, with: { command: \"seq 1 3000 | sed 's/^/line number /'\" } }\n",
    );
    let server = Server::start_with(&sb, &[], &[("SLUICE_ADMIN_PASSWORD", PASSWORD)]);
    let profile = tempfile::tempdir().expect("a fresh profile folder");
    let c = browser(&driver, profile.path()).await;

    let flow = AssertUnwindSafe(async {
        log_in(&c, &server.base, PASSWORD).await;
        let run_id = server.start_run("chain", json!({"model": "large"})).await;
        let failed = server.wait_run(&run_id, Duration::from_secs(60)).await;
        assert_eq!(failed["state"], "failed", "{failed}");

        // Mark the failed check success: a confirmation lists what it lets run, then the run
        // page says what was done and follows the run to its success.
        c.goto(&format!("{}/runs/{run_id}", server.base)).await.expect("run page");
        let heading = c.find(Locator::Css("main h1")).await.expect("heading").text().await.expect("text");
        assert!(heading.starts_with("Run started through the API"), "{heading}");
        save_screenshot(&c, "run-failed.png").await;
        c.find(Locator::Css("section[data-task=check] [data-action=mark-success]"))
            .await
            .expect("mark success is offered")
            .click()
            .await
            .expect("open the confirmation");
        c.wait().for_element(Locator::Id("affected")).await.expect("the affected tasks");
        let affected = c
            .execute("return [...document.querySelectorAll('[data-affected]')].map(r => r.dataset.affected);", vec![])
            .await
            .expect("rows");
        assert_eq!(affected, json!(["check", "publish"]));
        save_screenshot(&c, "confirm-mark.png").await;
        c.find(Locator::Id("confirm")).await.expect("confirm").click().await.expect("mark");
        let flash = c.wait().for_element(Locator::Id("flash")).await.expect("the message");
        assert_eq!(
            flash.text().await.expect("text"),
            "Marked check success. Decided again downstream: publish. The run is queued again."
        );
        wait_until(&c, "the run to succeed", "document.querySelector('#run-state .badge.s-success')", Duration::from_secs(60)).await;
        wait_until(
            &c,
            "publish to turn green",
            "document.querySelector('section[data-task=publish] [data-task-state] .badge.s-success')",
            Duration::from_secs(30),
        )
        .await;
        // The graph colours the run's tasks and links to them.
        let node = c
            .execute("return document.querySelector('svg.dag a[href=\"#task-publish\"] g.node').classList.contains('s-success');", vec![])
            .await
            .expect("node");
        assert_eq!(node, json!(true));

        // A long log: its tail, numbered; search narrows it to the matching lines.
        let chatty = server.start_run("chatty", json!({})).await;
        server.wait_run(&chatty, Duration::from_secs(60)).await;
        c.goto(&format!("{}/runs/{chatty}", server.base)).await.expect("chatty's page");
        c.execute("document.querySelector('section[data-task=talk] details.task-body').open = true; return true;", vec![])
            .await
            .expect("open the task");
        let note = c.find(Locator::Css("[data-log-truncated]")).await.expect("the tail note");
        assert_eq!(note.text().await.expect("text"), "Showing the last 500 of 3001 lines. Show all");
        let search = c.find(Locator::Css("section[data-task=talk] [data-log-search]")).await.expect("search box");
        search.send_keys("number 2999").await.expect("type");
        wait_until(
            &c,
            "one matching line",
            "[...document.querySelectorAll('section[data-task=talk] pre.log > span')].filter(s => !s.hidden).length === 1",
            Duration::from_secs(10),
        )
        .await;
        let shown = c
            .execute("return [...document.querySelectorAll('section[data-task=talk] pre.log > span')].find(s => !s.hidden).dataset.n;", vec![])
            .await
            .expect("line");
        // Line 1 of the log says what runs, so output line 2999 is log line 3000.
        assert_eq!(shown, json!("3000"));
        save_screenshot(&c, "log-viewer.png").await;

        // Every page at a phone's width: nothing scrolls sideways.
        c.set_window_size(390, 844).await.expect("phone width");
        for path in [
            "/".to_owned(),
            "/runs".to_owned(),
            "/workflows/chain".to_owned(),
            "/workflows/chatty".to_owned(),
            "/workflows/chain/trigger".to_owned(),
            format!("/runs/{run_id}"),
            format!("/runs/{chatty}"),
            format!("/runs/{run_id}/tasks/check/clear"),
            format!("/runs/{run_id}/tasks/check/mark?state=failed"),
            format!("/runs/{run_id}/rerun"),
            "/github/deliveries".to_owned(),
            "/no/such/page".to_owned(),
        ] {
            no_sideways_scroll(&c, &server.base, &path).await;
        }
        c.goto(&format!("{}/runs/{run_id}", server.base)).await.expect("run page");
        save_screenshot(&c, "run-marked-phone.png").await;

        // The dark scheme, as a browser set to dark shows it.
        let dark_profile = tempfile::tempdir().expect("a fresh profile folder");
        let dark = browser_with(&driver, dark_profile.path(), &["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]).await;
        let shots = AssertUnwindSafe(async {
            log_in(&dark, &server.base, PASSWORD).await;
            let scheme = dark
                .execute("return matchMedia('(prefers-color-scheme: dark)').matches;", vec![])
                .await
                .expect("scheme");
            assert_eq!(scheme, json!(true), "the browser asks for the dark scheme");
            for (path, name) in [
                ("/".to_owned(), "workflows-dark.png"),
                ("/workflows/chain".to_owned(), "workflow-dark.png"),
                (format!("/runs/{run_id}"), "run-dark.png"),
                (format!("/runs/{chatty}"), "log-viewer-dark.png"),
            ] {
                dark.goto(&format!("{}{path}", server.base)).await.expect("open");
                dark.wait().for_element(Locator::Css("main")).await.expect("a page");
                if name == "log-viewer-dark.png" {
                    dark.execute("document.querySelector('details.task-body').open = true; document.getElementById('tasks-title').scrollIntoView(); return true;", vec![])
                        .await
                        .expect("open the log");
                }
                save_screenshot(&dark, name).await;
            }
        })
        .catch_unwind()
        .await;
        dark.close().await.expect("the dark session closes");
        if let Err(panic) = shots {
            std::panic::resume_unwind(panic);
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
