//! Alerts end to end, through the real binary: mail over a real SMTP server (aiosmtpd with
//! `scripts/smtp_capture.py`, one per test on a free port, with and without AUTH, with STARTTLS
//! or TLS under a private CA made by `openssl`), webhooks to a local receiver, hooks, dedup
//! across processes, the default failure and retry mails and deadlines.
//!
//! The SMTP server runs on the Python of `SLUICE_TEST_SMTP_PYTHON` (set by `scripts/test`).
//! Without it these tests are skipped locally, and fail when `CI` is set.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use common::Sandbox;
use common::server::{Server, write_workflow};

const SMTP_PASSWORD: &str = "hunter2-smtp-pass";
const API_KEY: &str = "sk-live-4b1d0c";

/// The Python that runs the SMTP server, or `None` (skip) outside CI when there is none.
fn smtp_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("SLUICE_TEST_SMTP_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let cache = std::env::var_os("SLUICE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice")));
    let python = cache.map(|c| c.join("venv-smtp/bin/python"));
    match python {
        Some(python) if python.exists() => Some(python),
        _ if std::env::var_os("CI").is_some() => {
            panic!("the SMTP test server is needed in CI: run the tests with scripts/test")
        }
        _ => {
            eprintln!("No SMTP test server (SLUICE_TEST_SMTP_PYTHON); run scripts/test. Skipped.");
            None
        }
    }
}

/// A real SMTP server writing every message it accepts to a Maildir, killed when dropped.
struct Smtp {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    fn start(sb: &Sandbox, args: &[&str]) -> Option<Smtp> {
        let python = smtp_python()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let maildir = sb.path().join(format!("maildir-{port}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smtp_capture.py");
        let mut child = Command::new(&python)
            .args(["-W", "ignore"])
            .arg(script)
            .args(["--port", &port.to_string(), "--maildir"])
            .arg(&maildir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let smtp = Smtp {
            child,
            port,
            maildir,
        };
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the SMTP server did not start");
        Some(smtp)
    }

    /// Every message received so far, decoded (see scripts/smtp_capture.py).
    fn mails(&self) -> Vec<Value> {
        std::fs::read_to_string(self.maildir.join("messages.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Every byte received so far, raw messages and their decoded forms.
    fn everything(&self) -> String {
        let mut all =
            std::fs::read_to_string(self.maildir.join("messages.jsonl")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) {
            for entry in entries.flatten() {
                all.push_str(&String::from_utf8_lossy(
                    &std::fs::read(entry.path()).expect("a message file"),
                ));
            }
        }
        all
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "public_url = \"https://sluice.example.com\"\n[smtp]\nhost = \"127.0.0.1\"\n\
             port = {}\ntls = \"none\"\nfrom = \"Sluice <sluice@example.com>\"\ntimeout = \"10s\"\n{extra}",
            self.port
        )
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(sb: &Sandbox, file: &Path) -> common::Finished {
    sb.command()
        .env("SLUICE_SECRET_SMTP_PASSWORD", SMTP_PASSWORD)
        .env("SLUICE_SECRET_API_KEY", API_KEY)
        .args(["run", file.to_str().expect("utf-8 path"), "--json"])
        .output()
        .expect("run sluice")
        .into()
}

fn text(mail: &Value) -> &str {
    mail["text"].as_str().unwrap_or_default()
}

#[test]
fn an_alert_mail_arrives_over_smtp_with_auth_with_both_parts_and_attachments() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &["--auth", &format!("bot:{SMTP_PASSWORD}")]) else {
        return;
    };
    sb.write(
        "sluice.toml",
        &smtp.config("username = \"bot\"\npassword_secret = \"SMTP_PASSWORD\"\n"),
    );
    sb.write("data/report.csv", "column,psi\nprompt_length,0.31\n");
    let file = sb.write(
        "drift.yaml",
        r#"
tasks:
  report:
    operator: shell
    with: { command: "echo 'summary=3 columns drifted' > $SLUICE_OUTPUT" }
  page:
    operator: alert
    needs: [report]
    with:
      severity: critical
      email:
        to: [oncall@example.com]
        cc: "lead@example.com"
        bcc: [audit@example.com]
        subject: "Drift in {{ run.workflow }}"
        body: "{{ tasks.report.outputs.summary }}; the key was {{ secrets.API_KEY }}"
        attachments:
          - data/report.csv
          - { content: "{{ tasks.report.outputs.summary }}", name: summary.txt }
"#,
    );
    let done = run(&sb, &file);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    let json = done.json();
    let run_id = json["run_id"].as_str().expect("run id");

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(
        mail["auth_user"],
        json!("bot"),
        "sent with the configured login"
    );
    assert_eq!(mail["mail_from"], json!("sluice@example.com"));
    assert_eq!(
        mail["rcpt_tos"],
        json!([
            "oncall@example.com",
            "lead@example.com",
            "audit@example.com"
        ])
    );
    let headers = &mail["headers"];
    assert_eq!(headers["subject"], json!("[critical] Drift in drift"));
    assert_eq!(headers["to"], json!("oncall@example.com"));
    assert_eq!(headers["cc"], json!("lead@example.com"));
    assert!(
        headers.get("bcc").is_none(),
        "Bcc stays out of the headers: {headers}"
    );
    assert_eq!(headers["x-sluice-severity"], json!("critical"));
    assert_eq!(headers["importance"], json!("high"));
    assert_eq!(
        headers["message-id"],
        json["tasks"]["page"]["outputs"]["email"]["message_id"]
    );

    let body = text(mail);
    assert!(
        body.contains("3 columns drifted; the key was ***"),
        "{body}"
    );
    assert!(
        body.contains(&format!("https://sluice.example.com/runs/{run_id}")),
        "{body}"
    );
    let html = mail["html"].as_str().expect("an HTML part");
    assert!(html.contains("CRITICAL"), "{html}");
    assert!(html.contains("3 columns drifted"), "{html}");
    assert!(
        html.contains(&format!(
            "href=\"https://sluice.example.com/runs/{run_id}\""
        )),
        "{html}"
    );
    assert_eq!(
        mail["attachments"],
        json!([
            {"name": "report.csv", "content_type": "text/csv",
             "content": "column,psi\nprompt_length,0.31\n"},
            {"name": "summary.txt", "content_type": "text/plain", "content": "3 columns drifted"}
        ])
    );

    let outputs = &json["tasks"]["page"]["outputs"];
    assert_eq!(outputs["email"]["to"], json!(["oncall@example.com"]));
    assert_eq!(outputs["email"]["bcc"], json!(["audit@example.com"]));
    assert_eq!(
        outputs["email"]["attachments"],
        json!(["report.csv", "summary.txt"])
    );
    assert!(
        outputs["email"]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("250")),
        "{outputs}"
    );

    let logs = sb.sluice(&["logs", run_id]);
    for place in [
        smtp.everything(),
        done.stdout.clone(),
        done.stderr.clone(),
        logs.stdout,
    ] {
        assert!(
            !place.contains(SMTP_PASSWORD),
            "the SMTP password leaked: {place}"
        );
        assert!(!place.contains(API_KEY), "a secret leaked: {place}");
    }
}

#[test]
fn hooks_name_the_failed_tasks_and_email_on_failure_sends_the_standard_mail() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write(
        "sluice.toml",
        &smtp.config("[alerts]\nemail_on_failure = [\"team@example.com\"]\n"),
    );
    let file = sb.write(
        "etl.yaml",
        r#"
tasks:
  extract:
    operator: shell
    env: { TOKEN: "{{ secrets.API_KEY }}" }
    with: { command: "echo \"token $TOKEN rejected\" >&2; exit 3" }
on_failure:
  page:
    operator: alert
    with:
      email:
        to: oncall@example.com
        subject: "{{ run.workflow }} failed"
        body: "{% for f in failed_tasks %}{{ f.id }} (try {{ f.try_number }}): {{ f.error }}{% endfor %}"
"#,
    );
    let done = run(&sb, &file);
    assert_eq!(done.code, 1, "{}\n{}", done.stdout, done.stderr);
    let json = done.json();
    let run_id = json["run_id"].as_str().expect("run id");
    assert_eq!(json["tasks"]["page"]["state"], json!("success"), "{json}");

    let mails = smtp.mails();
    assert_eq!(
        mails.len(),
        2,
        "the hook's mail and the standard one: {mails:?}"
    );
    let hook = mails
        .iter()
        .find(|m| m["rcpt_tos"] == json!(["oncall@example.com"]))
        .expect("the hook's mail");
    assert_eq!(hook["headers"]["subject"], json!("[warning] etl failed"));
    assert_eq!(hook["headers"]["x-sluice-severity"], json!("warning"));
    assert!(hook["headers"].get("importance").is_none());
    assert!(
        text(hook).contains("extract (try 1): the command exited with code 3"),
        "{}",
        text(hook)
    );
    assert!(text(hook).contains("token *** rejected"), "{}", text(hook));

    let standard = mails
        .iter()
        .find(|m| m["rcpt_tos"] == json!(["team@example.com"]))
        .expect("the standard failure mail");
    assert_eq!(
        standard["headers"]["subject"],
        json!(format!("[critical] Workflow etl failed (run {run_id})"))
    );
    assert_eq!(standard["headers"]["importance"], json!("high"));
    let body = text(standard);
    assert!(
        body.contains("- extract (try 1): the command exited with code 3"),
        "{body}"
    );
    assert!(
        body.contains(&format!("https://sluice.example.com/runs/{run_id}")),
        "{body}"
    );
    assert!(
        standard["html"]
            .as_str()
            .is_some_and(|h| h.contains("<strong>extract</strong>"))
    );
    assert!(
        !smtp.everything().contains(API_KEY),
        "a secret leaked into a mail"
    );

    // A successful run sends neither.
    sb.write("ok.yaml", "tasks:\n  a: { operator: noop }\n");
    let ok = run(&sb, &sb.path().join("ok.yaml"));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(smtp.mails().len(), 2);
}

#[test]
fn repeated_failures_send_one_alert_per_window_across_processes() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write("sluice.toml", &smtp.config(""));
    let file = sb.write(
        "flaky.yaml",
        r#"
tasks:
  call_model:
    operator: shell
    with: { command: "echo 'HTTP 503 from the model' >&2; exit 1" }
on_failure:
  page:
    operator: alert
    with:
      window: 1h
      email: { to: oncall@example.com, subject: "{{ run.workflow }} failed", body: "Run {{ run.id }}" }
"#,
    );
    for attempt in 0..3u64 {
        let done = run(&sb, &file);
        assert_eq!(done.code, 1, "{}", done.stderr);
        let outputs = &done.json()["tasks"]["page"]["outputs"];
        assert_eq!(outputs["suppressed"], json!(attempt > 0), "{outputs}");
        if attempt > 0 {
            assert_eq!(outputs["suppressed_count"], json!(attempt), "{outputs}");
        }
        assert_eq!(
            outputs["key"],
            json!(
                "flaky/page | call_model: the command exited with code #; \
                 the last lines of stderr were:"
            ),
            "the first line of the error, digits ignored"
        );
    }
    assert_eq!(
        smtp.mails().len(),
        1,
        "one mail for three runs failing the same way"
    );
}

#[test]
fn a_refused_recipient_fails_the_task_with_the_reply_and_a_4xx_is_tried_again() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(
        &sb,
        &["--reject-rcpt", "nobody@example.com", "--tempfail", "1"],
    ) else {
        return;
    };
    sb.write("sluice.toml", &smtp.config(""));
    let file = sb.write(
        "mail.yaml",
        r#"
tasks:
  to_nobody:
    operator: alert
    with: { email: { to: nobody@example.com, subject: s, body: b } }
  to_oncall:
    operator: alert
    with:
      backoff: 50ms
      email: { to: oncall@example.com, subject: s, body: b }
"#,
    );
    let done = run(&sb, &file);
    assert_eq!(done.code, 1, "{}", done.stderr);
    let json = done.json();
    assert_eq!(json["tasks"]["to_nobody"]["state"], json!("failed"));
    let error = json["tasks"]["to_nobody"]["error"]
        .as_str()
        .expect("an error");
    assert!(error.contains("550"), "{error}");
    assert!(error.contains("No such user here"), "{error}");
    assert!(
        !error.contains("after"),
        "a permanent refusal is not retried: {error}"
    );
    assert_eq!(
        json["tasks"]["to_oncall"]["state"],
        json!("success"),
        "{json}"
    );
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["rcpt_tos"], json!(["oncall@example.com"]));
}

/// A webhook receiver answering with `statuses` in turn, then 200.
async fn receiver(statuses: &[u16]) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(VecDeque::from(statuses.to_vec())));
    let app = axum::Router::new().route(
        "/services/T000/B000/XXXX",
        axum::routing::post({
            let seen = seen.clone();
            move |body: axum::Json<Value>| {
                let seen = seen.clone();
                let answers = answers.clone();
                async move {
                    seen.lock().expect("lock").push(body.0);
                    let status = answers.lock().expect("lock").pop_front().unwrap_or(200);
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        "ok",
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/services/T000/B000/XXXX"), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_on_success_webhook_is_retried_after_429_and_500() {
    let sb = Sandbox::new();
    let (url, seen) = receiver(&[429, 500]).await;
    let file = sb.write(
        "nightly.yaml",
        r#"
tasks:
  work: { operator: noop }
on_success:
  tell:
    operator: alert
    with:
      severity: info
      backoff: 20ms
      webhook: { url: "{{ secrets.SLACK_WEBHOOK_URL }}", text: "{{ run.workflow }} is done" }
"#,
    );
    let mut cmd = sb.command();
    cmd.env("SLUICE_SECRET_SLACK_WEBHOOK_URL", &url).args([
        "run",
        file.to_str().expect("path"),
        "--json",
    ]);
    let done: common::Finished = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run")
        .into();
    assert_eq!(done.code, 0, "{}", done.stderr);
    let json = done.json();
    assert_eq!(json["state"], json!("success"));
    assert_eq!(
        json["tasks"]["tell"]["outputs"]["webhook"],
        json!({"status": 200, "attempts": 3})
    );
    let bodies = seen.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 3);
    let text = bodies[2]["text"].as_str().expect("text");
    assert!(text.starts_with("[info] nightly is done\n"), "{text}");
    assert!(!done.stdout.contains("XXXX"), "the webhook URL is a secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_deadline_fires_on_deadline_once_and_carries_on() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write("sluice.toml", &smtp.config(""));
    write_workflow(
        &sb,
        "slow",
        r#"
deadline: { after: 1s }
on_deadline:
  late:
    operator: alert
    with:
      email: { to: oncall@example.com, subject: "{{ run.workflow }} is late", body: "Still running: {{ run.url }}" }
tasks:
  work:
    operator: shell
    with: { command: "sleep 2" }
"#,
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("slow", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], json!("success"), "the run carries on: {run}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0]["headers"]["subject"],
        json!("[warning] slow is late")
    );
    assert!(
        text(&mails[0]).contains(&format!("/runs/{run_id}")),
        "{}",
        text(&mails[0])
    );
    assert_eq!(run["tasks"]["late"]["state"], json!("success"), "{run}");
    assert_eq!(run["tasks"]["late"]["try_number"], json!(1), "{run}");
    assert!(
        server
            .logs()
            .contains("Run passed its deadline; running its on_deadline tasks."),
        "{}",
        server.logs()
    );
}

#[test]
fn a_task_can_mail_through_its_own_smtp_server() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &["--auth", &format!("ops:{SMTP_PASSWORD}")]) else {
        return;
    };
    // No `[smtp]` in sluice.toml: the task brings its server, its password from a secret.
    let file = sb.write(
        "own.yaml",
        &format!(
            r#"
tasks:
  tell:
    operator: alert
    with:
      severity: info
      email:
        to: ops@example.com
        subject: own server
        body: hello
        smtp:
          host: 127.0.0.1
          port: {port}
          tls: none
          from: ops-bot@example.com
          username: ops
          password: "{{{{ secrets.SMTP_PASSWORD }}}}"
"#,
            port = smtp.port
        ),
    );
    let done = run(&sb, &file);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["auth_user"], json!("ops"));
    assert_eq!(mails[0]["mail_from"], json!("ops-bot@example.com"));
    assert_eq!(mails[0]["headers"]["subject"], json!("[info] own server"));
    assert!(!done.stdout.contains(SMTP_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_sends_the_failure_mail_once_per_failed_run() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write(
        "sluice.toml",
        &smtp.config(
            "[alerts]\nemail_on_failure = [\"team@example.com\", \"Lead <lead@example.com>\"]\n",
        ),
    );
    write_workflow(
        &sb,
        "broken",
        "tasks:\n  step:\n    operator: shell\n    with: { command: \"exit 7\" }\n",
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("broken", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], json!("failed"));
    wait_mails(&smtp, 1, &server).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0]["rcpt_tos"],
        json!(["team@example.com", "lead@example.com"])
    );
    assert!(
        text(&mails[0]).contains("- step (try 1): the command exited with code 7"),
        "{}",
        text(&mails[0])
    );
    // A second failed run gets its own mail.
    let second = server.start_run("broken", json!({})).await;
    server.wait_run(&second, Duration::from_secs(60)).await;
    wait_mails(&smtp, 2, &server).await;
    let subjects: Vec<Value> = smtp
        .mails()
        .iter()
        .map(|m| m["headers"]["subject"].clone())
        .collect();
    assert!(subjects.contains(&json!(format!(
        "[critical] Workflow broken failed (run {second})"
    ))));
}

#[test]
fn starttls_is_required_when_configured_so_mail_never_goes_out_in_clear() {
    let sb = Sandbox::new();
    // This server offers no STARTTLS.
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write(
        "sluice.toml",
        &smtp
            .config("")
            .replace("tls = \"none\"", "tls = \"starttls\""),
    );
    let file = sb.write(
        "mail.yaml",
        "tasks:\n  tell:\n    operator: alert\n    with: { backoff: 10ms, email: { to: a@example.com, subject: s } }\n",
    );
    let done = run(&sb, &file);
    assert_eq!(done.code, 1, "{}", done.stderr);
    let error = done.json()["tasks"]["tell"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("sending the email through 127.0.0.1:"),
        "{error}"
    );
    assert!(error.contains("(STARTTLS)"), "{error}");
    assert!(error.contains("STARTTLS is not supported"), "{error}");
    assert!(
        !error.contains("attempts"),
        "a refusal is not retried: {error}"
    );
    assert!(smtp.mails().is_empty(), "nothing was sent without TLS");
}

/// The mails whose subject starts with `prefix`.
fn with_subject(mails: &[Value], prefix: &str) -> Vec<Value> {
    mails
        .iter()
        .filter(|m| {
            m["headers"]["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with(prefix))
        })
        .cloned()
        .collect()
}

#[test]
fn email_on_retry_sends_one_notice_per_failed_try_and_no_failure_mail_when_the_retry_succeeds() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write(
        "sluice.toml",
        &smtp.config(
            "[alerts]\nemail_on_failure = [\"team@example.com\"]\n\
             email_on_retry = [\"ops@example.com\"]\n",
        ),
    );
    let file = sb.write(
        "flaky.yaml",
        r#"
tasks:
  call_model:
    operator: shell
    retries: 1
    retry_delay: 1s
    with:
      command: |
        if [ "$SLUICE_TRY_NUMBER" = 1 ]; then echo 'HTTP 429 quota exceeded' >&2; exit 4; fi
"#,
    );
    let done = run(&sb, &file);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    let run_id = done.json()["run_id"].as_str().expect("run id").to_owned();

    let mails = smtp.mails();
    assert_eq!(
        mails.len(),
        1,
        "one retry notice and nothing else: {mails:?}"
    );
    let notice = &mails[0];
    assert_eq!(notice["rcpt_tos"], json!(["ops@example.com"]));
    assert_eq!(
        notice["headers"]["subject"],
        json!(format!(
            "[warning] Task flaky.call_model failed try 1 of 2, retrying (run {run_id})"
        ))
    );
    assert_eq!(notice["headers"]["x-sluice-severity"], json!("warning"));
    let body = text(notice);
    for part in [
        "Try: try 1 of 2",
        "Error: the command exited with code 4",
        "HTTP 429 quota exceeded",
        "Next try: ",
        &format!("https://sluice.example.com/runs/{run_id}"),
    ] {
        assert!(body.contains(part), "`{part}` is missing from:\n{body}");
    }
}

/// Waits until `smtp` holds `n` mails.
async fn wait_mails(smtp: &Smtp, n: usize, server: &Server) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while smtp.mails().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} mails:\n{}",
            smtp.mails().len(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_sends_the_standard_mails_nobody_sent_once() {
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    // First without [alerts]: a run fails and another waits for its retry, and no mail goes.
    sb.write("sluice.toml", &smtp.config(""));
    write_workflow(
        &sb,
        "broken",
        "tasks:\n  step:\n    operator: shell\n    with: { command: \"exit 7\" }\n",
    );
    write_workflow(
        &sb,
        "waiting",
        "tasks:\n  step:\n    operator: shell\n    retries: 1\n    retry_delay: 1h\n    \
         with: { command: \"exit 3\" }\n",
    );
    let first = Server::start(&sb);
    let broken = first.start_run("broken", json!({})).await;
    let run = first.wait_run(&broken, Duration::from_secs(60)).await;
    assert_eq!(run["state"], json!("failed"));
    let waiting = first.start_run("waiting", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = first.get(&format!("/api/v1/runs/{waiting}")).await;
        if run["tasks"]["step"]["try_number"] == json!(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retry: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.terminate();
    assert!(smtp.mails().is_empty());

    // The next leader has [alerts]: it sends the failure mail and the retry notice it finds.
    sb.write(
        "sluice.toml",
        &smtp.config(
            "[alerts]\nemail_on_failure = [\"team@example.com\"]\n\
             email_on_retry = [\"ops@example.com\"]\n",
        ),
    );
    let second = Server::start(&sb);
    wait_mails(&smtp, 2, &second).await;
    let subjects: Vec<Value> = smtp
        .mails()
        .iter()
        .map(|m| m["headers"]["subject"].clone())
        .collect();
    assert!(
        subjects.contains(&json!(format!(
            "[critical] Workflow broken failed (run {broken})"
        ))),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&json!(format!(
            "[warning] Task waiting.step failed try 1 of 2, retrying (run {waiting})"
        ))),
        "{subjects:?}"
    );
    second.terminate();

    // A third leader finds both sent already.
    let third = Server::start(&sb);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(third
        .logs()
        .contains("Checked for failure mails not sent yet")
        && third
            .logs()
            .contains("Checked for retry notices not sent yet"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no catch-up:\n{}",
            third.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(smtp.mails().len(), 2, "{:?}", smtp.mails());
}

#[tokio::test(flavor = "multi_thread")]
async fn several_serve_processes_send_one_retry_notice_per_failed_try() {
    let Some(db) = common::postgres::TestDatabase::create().await else {
        return;
    };
    let sb = Sandbox::new();
    let Some(smtp) = Smtp::start(&sb, &[]) else {
        return;
    };
    sb.write(
        "sluice.toml",
        &smtp.config(
            "[alerts]\nemail_on_failure = [\"team@example.com\"]\n\
             email_on_retry = [\"ops@example.com\"]\n",
        ),
    );
    let mut flaky = String::from("defaults: { retries: 2, retry_delay: 0s }\ntasks:\n");
    for task in ["a", "b", "c"] {
        flaky.push_str(&format!(
            "  {task}:\n    operator: shell\n    with: {{ command: \"[ $SLUICE_TRY_NUMBER -ge 3 ] || exit 5\" }}\n"
        ));
    }
    write_workflow(&sb, "flaky", &flaky);
    write_workflow(
        &sb,
        "broken",
        "tasks:\n  step:\n    operator: shell\n    with: { command: \"exit 7\" }\n",
    );
    let env = [("SLUICE_DATABASE_URL", db.url.as_str())];
    let first = Server::start_with(&sb, &[], &env);
    let second = Server::start_with(&sb, &[], &env);
    let run_id = first.start_run("flaky", json!({})).await;
    let run = second.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], json!("success"), "{run}");
    // Then a failed run: its failure mail goes out after every notice of the first run had
    // its turn, so a duplicate notice would be there by the time it arrives.
    let broken = second.start_run("broken", json!({})).await;
    first.wait_run(&broken, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while with_subject(&smtp.mails(), "[critical]").is_empty()
        || with_subject(&smtp.mails(), "[warning]").len() < 6
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mails missing: {:?}\n{}\n{}",
            smtp.mails(),
            first.logs(),
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut subjects: Vec<String> = with_subject(&smtp.mails(), "[warning]")
        .iter()
        .map(|m| {
            m["headers"]["subject"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    subjects.sort();
    let mut expected = Vec::new();
    for task in ["a", "b", "c"] {
        for n in 1..=2 {
            expected.push(format!(
                "[warning] Task flaky.{task} failed try {n} of 3, retrying (run {run_id})"
            ));
        }
    }
    assert_eq!(subjects, expected, "one notice per failed try");
    assert_eq!(with_subject(&smtp.mails(), "[critical]").len(), 1);
    drop((first, second));
    db.finish().await;
}

/// A private certificate authority and a server certificate for 127.0.0.1 that it signed,
/// made with the `openssl` command under `tls/` in the sandbox: (CA, certificate, key).
fn private_ca(sb: &Sandbox) -> (PathBuf, PathBuf, PathBuf) {
    let dir = sb.path().join("tls");
    std::fs::create_dir_all(&dir).expect("a folder for the certificates");
    // Each command is written as one line; no argument holds a space.
    let openssl = |command: &str| {
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ca.key -out ca.pem \
         -subj /CN=sluice-test-ca -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    openssl("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions");
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.pem",
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// An SMTP server with a certificate from `private_ca`: STARTTLS required, or with `implicit`
/// TLS from the first byte.
fn tls_smtp(sb: &Sandbox, cert: &Path, key: &Path, implicit: bool) -> Option<Smtp> {
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let mut args = vec!["--tls-cert", cert, "--tls-key", key];
    if implicit {
        args.push("--implicit-tls");
    }
    Smtp::start(sb, &args)
}

const TLS_MAIL: &str = "tasks:\n  tell:\n    operator: alert\n    with: { backoff: 10ms, email: { to: a@example.com, subject: over tls } }\n";

/// Runs a one-mail workflow through `smtp` with `tls = mode` and the extra `[smtp]` lines.
fn mail_over_tls(sb: &Sandbox, smtp: &Smtp, mode: &str, extra: &str) -> common::Finished {
    sb.write(
        "sluice.toml",
        &smtp
            .config(extra)
            .replace("tls = \"none\"", &format!("tls = \"{mode}\"")),
    );
    let file = sb.write("mail.yaml", TLS_MAIL);
    run(sb, &file)
}

#[test]
fn starttls_and_tls_deliver_to_a_server_whose_certificate_a_private_ca_signed() {
    let sb = Sandbox::new();
    let (_, cert, key) = private_ca(&sb);
    for (mode, implicit) in [("starttls", false), ("tls", true)] {
        let Some(smtp) = tls_smtp(&sb, &cert, &key, implicit) else {
            return;
        };
        // Relative to the configuration file's folder.
        let done = mail_over_tls(&sb, &smtp, mode, "ca_file = \"tls/ca.pem\"\n");
        assert_eq!(done.code, 0, "{mode}: {}\n{}", done.stdout, done.stderr);
        let mails = smtp.mails();
        assert_eq!(mails.len(), 1, "{mode}: {mails:?}");
        assert_eq!(mails[0]["headers"]["subject"], json!("[warning] over tls"));
        assert_eq!(mails[0]["tls"], json!(true), "{mode}: sent encrypted");
    }
}

#[test]
fn without_ca_file_a_private_certificate_is_refused_and_nothing_goes_in_clear() {
    let sb = Sandbox::new();
    let (_, cert, key) = private_ca(&sb);
    for (mode, implicit) in [("starttls", false), ("tls", true)] {
        let Some(smtp) = tls_smtp(&sb, &cert, &key, implicit) else {
            return;
        };
        let done = mail_over_tls(&sb, &smtp, mode, "");
        assert_eq!(done.code, 1, "{mode}: {}", done.stderr);
        let error = done.json()["tasks"]["tell"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains("sending the email through 127.0.0.1:"),
            "{mode}: {error}"
        );
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer"),
            "{mode}: a certificate error: {error}"
        );
        assert!(
            !error.contains("attempts"),
            "{mode}: a certificate refused is not tried again: {error}"
        );
        assert!(smtp.mails().is_empty(), "{mode}: nothing was sent");
    }
}
