//! Artifacts end to end: files a task keeps, read by a later task and through the API; on
//! SQLite with the local folder, and between two `sluice worker` processes over PostgreSQL
//! and S3 (moto); escapes, limits, a store outage and retention.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::postgres::{TestDatabase, WorkerProcess};
use common::server::{Server, TOKEN, client, write_workflow};
use common::{Sandbox, wait_for};
use serde_json::{Value, json};

/// `score` keeps two files through `$SLUICE_ARTIFACTS` and one through an `artifacts:` glob;
/// `report` counts the lines of one of them through the template path.
const FLOW: &str = r#"
tasks:
  score:
    operator: shell
    with:
      command: |
        printf '{"q":1}\n{"q":2}\n{"q":3}\n' > "$SLUICE_ARTIFACTS/results.jsonl"
        mkdir -p "$SLUICE_ARTIFACTS/report" out
        echo '{"f1": 0.9}' > "$SLUICE_ARTIFACTS/report/summary.json"
        printf 'a,b\n1,2\n' > out/table.csv
    artifacts: ["out/*.csv"]
  report:
    operator: shell
    needs: [score]
    with:
      command: |
        echo "lines=$(wc -l < '{{ tasks.score.artifacts["results.jsonl"] }}')" >> "$SLUICE_OUTPUT"
        echo "csv=$(head -1 '{{ tasks.score.artifacts["out/table.csv"] }}')" >> "$SLUICE_OUTPUT"
"#;

async fn get_text(server: &Server, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{}{path}", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Checks what `FLOW` left behind: the downstream outputs and the API's list and downloads.
async fn assert_flow_kept(server: &Server, run: &Value) {
    assert_eq!(run["state"], "success", "{run}\n{}", server.logs());
    let run_id = run["run_id"].as_str().expect("run id");
    assert_eq!(
        run["tasks"]["report"]["outputs"],
        json!({"lines": "3", "csv": "a,b", "exit_code": 0}),
        "{run}"
    );
    let (status, list) = server
        .get(&format!("/api/v1/runs/{run_id}/artifacts"))
        .await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["artifacts"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["out/table.csv", "report/summary.json", "results.jsonl"]
    );
    let results = &list["artifacts"][2];
    assert_eq!(results["task"], "score");
    assert_eq!(results["size"], 24);
    assert_eq!(results["media_type"], "application/x-ndjson");
    let (status, body) = get_text(
        server,
        &format!("/api/v1/runs/{run_id}/artifacts/report%2Fsummary.json"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{\"f1\": 0.9}\n"));
    let (status, body) = get_text(
        server,
        &format!("/api/v1/runs/{run_id}/artifacts/missing.txt"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("has no artifact `missing.txt`"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_flow_to_a_later_task_and_are_listed_and_served_by_the_api() {
    let sb = Sandbox::new();
    write_workflow(&sb, "flow", FLOW);
    let server = Server::start(&sb);
    let run_id = server.start_run("flow", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_flow_kept(&server, &run).await;
    // The default store is the folder `artifacts` beside the SQLite database.
    let blobs = files_under(&sb.path().join("artifacts/sha256"));
    assert_eq!(blobs.len(), 3, "{blobs:?}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The error of the latest try of `task`.
fn task_error(run: &Value, task: &str) -> String {
    run["tasks"][task]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_leave_their_folder_fail_the_task_with_a_clear_error() {
    let sb = Sandbox::new();
    sb.write("secret.txt", "do not keep me");
    write_workflow(
        &sb,
        "escape",
        &format!(
            r#"
tasks:
  link_out:
    operator: shell
    with: {{ command: 'ln -s "{}" "$SLUICE_ARTIFACTS/leak"' }}
"#,
            sb.path().join("secret.txt").display()
        ),
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("escape", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "failed", "{run}");
    // Globs that leave the folder (`..`, absolute paths) never get this far: the workflow is
    // refused when it is read (tests/fixtures/invalid/artifact_globs.yaml).
    assert_eq!(run["tasks"]["link_out"]["state"], "failed", "{run}");
    let error = task_error(&run, "link_out");
    assert!(
        error.contains("artifact `leak` is a symbolic link to"),
        "{error}"
    );
    let (_, list) = server
        .get(&format!("/api/v1/runs/{run_id}/artifacts"))
        .await;
    assert_eq!(list["artifacts"], json!([]), "nothing was kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_over_a_limit_fail_the_task_naming_the_file_and_the_limit() {
    let sb = Sandbox::new();
    sb.write(
        "sluice.toml",
        "[artifacts]\nmax_artifact_size = \"1KB\"\nmax_run_size = \"1500B\"\n",
    );
    write_workflow(
        &sb,
        "big",
        r#"
tasks:
  too_big:
    operator: shell
    with: { command: 'head -c 2000 /dev/zero > "$SLUICE_ARTIFACTS/big.bin"' }
  first:
    operator: shell
    with: { command: 'head -c 900 /dev/zero > "$SLUICE_ARTIFACTS/a.bin"' }
  second:
    operator: shell
    needs: [first]
    with: { command: 'head -c 900 /dev/zero > "$SLUICE_ARTIFACTS/b.bin"' }
"#,
    );
    let server = Server::start(&sb);
    let run_id = server.start_run("big", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(
        task_error(&run, "too_big"),
        "cannot keep the task's artifacts: artifact `big.bin` is 2000 bytes, over the limit of \
         1000 bytes per artifact"
    );
    assert_eq!(run["tasks"]["first"]["state"], "success", "{run}");
    assert_eq!(
        task_error(&run, "second"),
        "cannot keep the task's artifacts: artifact `b.bin` would bring the run's artifacts to \
         1800 bytes, over the limit of 1500 bytes per run"
    );
}

/// A moto S3 server on a free port, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    /// `None` when moto is not installed, outside CI; with `CI` set that is a failure.
    fn start_on(port: u16) -> Option<S3Server> {
        let program = std::env::var("SLUICE_TEST_MOTO_SERVER").unwrap_or("moto_server".into());
        let child = match Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("moto_server ({program}) is needed in CI: {e}")
            }
            Err(e) => {
                eprintln!("skipped: cannot start moto_server ({program}): {e}");
                return None;
            }
        };
        let server = S3Server { child, port };
        wait_for("moto to listen", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(server)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto takes unsigned requests).
    async fn create_bucket(&self, bucket: &str) {
        let response = client()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(response.status().is_success(), "{response:?}");
    }

    /// The keys under `prefix` in `bucket`.
    async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let body = client()
            .get(format!(
                "{}/{bucket}?list-type=2&prefix={prefix}",
                self.endpoint()
            ))
            .send()
            .await
            .expect("list")
            .text()
            .await
            .expect("list body");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Every process of the test reads this `sluice.toml`: artifacts in moto's `bucket`.
fn s3_config(sb: &Sandbox, s3: &S3Server) {
    sb.write(
        "sluice.toml",
        &format!(
            "[artifacts]\nroot = \"s3://bucket/sluice\"\nendpoint = \"{}\"\n\
             access_key_id_secret = \"S3_KEY\"\nsecret_access_key_secret = \"S3_SECRET\"\n",
            s3.endpoint()
        ),
    );
}

const S3_ENV: [(&str, &str); 2] = [
    ("SLUICE_SECRET_S3_KEY", "test"),
    ("SLUICE_SECRET_S3_SECRET", "test"),
];

fn worker(sb: &Sandbox, db: &TestDatabase, name: &str, queue: &str) -> WorkerProcess {
    WorkerProcess::start_with_env(
        sb,
        &db.url,
        name,
        &["--queues", queue, "--lease", "5s"],
        &S3_ENV,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_pass_between_two_workers_over_postgres_and_s3() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let Some(s3) = S3Server::start_on(free_port()) else {
        return;
    };
    s3.create_bucket("bucket").await;
    let sb = Sandbox::new();
    s3_config(&sb, &s3);
    // Each task waits in its own queue, so each runs on its own worker process.
    let flow = FLOW
        .replace(
            "    artifacts: [\"out/*.csv\"]",
            "    artifacts: [\"out/*.csv\"]\n    queue: producer",
        )
        .replace(
            "    needs: [score]",
            "    needs: [score]\n    queue: consumer",
        );
    write_workflow(&sb, "flow", &flow);
    let mut env = vec![("SLUICE_DATABASE_URL", db.url.as_str())];
    env.extend(S3_ENV);
    let server = Server::start_with(&sb, &["--no-workers"], &env);
    let producer = worker(&sb, &db, "producer", "producer");
    let consumer = worker(&sb, &db, "consumer", "consumer");
    let run_id = server.start_run("flow", json!({})).await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(
        run["state"],
        "success",
        "{run}\n{}\n{}",
        producer.logs(),
        consumer.logs()
    );
    assert_flow_kept(&server, &run).await;
    let workers = db
        .rows(&format!(
            "SELECT task_id, worker FROM task_instances WHERE run_id = '{run_id}' ORDER BY task_id"
        ))
        .await;
    assert_eq!(
        workers,
        [
            json!({"task_id": "report", "worker": "consumer"}),
            json!({"task_id": "score", "worker": "producer"})
        ]
    );
    // The blobs are in the bucket, under the prefix, by digest.
    let keys = s3.keys("bucket", "sluice/sha256/").await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let rows = db
        .rows(&format!(
            "SELECT sha256 FROM artifacts WHERE run_id = '{run_id}' ORDER BY name"
        ))
        .await;
    for row in rows {
        let sha = row["sha256"].as_str().expect("digest");
        assert!(keys.iter().any(|k| k.ends_with(sha)), "{sha} in {keys:?}");
    }
    drop(server);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_fails_the_try_with_the_stores_error_and_the_retry_keeps_the_files() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let port = free_port();
    let Some(s3) = S3Server::start_on(port) else {
        return;
    };
    s3.create_bucket("bucket").await;
    let sb = Sandbox::new();
    s3_config(&sb, &s3);
    let gate = sb.path().join("gate");
    write_workflow(
        &sb,
        "outage",
        &format!(
            r#"
tasks:
  keep:
    operator: shell
    retries: 2
    retry_delay: 2s
    with:
      command: |
        while [ ! -e "{}" ]; do sleep 0.05; done
        echo "try $SLUICE_TRY_NUMBER" > "$SLUICE_ARTIFACTS/note.txt"
"#,
            gate.display()
        ),
    );
    let mut env = vec![("SLUICE_DATABASE_URL", db.url.as_str())];
    env.extend(S3_ENV);
    let server = Server::start_with(&sb, &["--no-workers"], &env);
    let _worker = worker(&sb, &db, "w", "default");
    let run_id = server.start_run("outage", json!({})).await;
    let started = || async {
        db.count(&format!(
            "SELECT count(*) FROM task_instances WHERE run_id = '{run_id}' AND state = 'running'"
        ))
        .await
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while started().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the try never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The store goes down while the task runs; the task then finishes.
    s3.stop();
    std::fs::write(&gate, "go").expect("open the gate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let first = loop {
        let rows = db
            .rows(&format!(
                "SELECT state, error FROM task_instances WHERE run_id = '{run_id}' \
                 AND try_number = 1"
            ))
            .await;
        if rows[0]["state"] != "running" {
            break rows[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "try 1 never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first["state"], "up_for_retry", "{first}");
    let error = first["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot keep artifact `note.txt`")
            && error.contains("the artifact store (s3://bucket/sluice) failed"),
        "{error}"
    );
    // Back up (empty, as a restarted moto is): the retry keeps its file.
    let s3 = S3Server::start_on(port).expect("moto again");
    s3.create_bucket("bucket").await;
    let run = server.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["state"], "success", "{run}");
    assert_eq!(run["tasks"]["keep"]["try_number"], 2);
    let (status, body) = get_text(
        &server,
        &format!("/api/v1/runs/{run_id}/artifacts/note.txt"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "try 2\n"));
    let kept = db
        .count(&format!(
            "SELECT count(*) FROM artifacts WHERE run_id = '{run_id}'"
        ))
        .await;
    assert_eq!(kept, 1, "the failed try kept nothing");
    drop(server);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn db_clean_deletes_old_runs_with_their_logs_and_unshared_blobs() {
    let sb = Sandbox::new();
    write_workflow(
        &sb,
        "keep",
        r#"
params:
  text: { type: string }
tasks:
  write:
    operator: shell
    with:
      command: |
        echo "shared" > "$SLUICE_ARTIFACTS/shared.txt"
        echo "{{ params.text }}" > "$SLUICE_ARTIFACTS/own.txt"
"#,
    );
    let server = Server::start(&sb);
    let old = server.start_run("keep", json!({"text": "old"})).await;
    server.wait_run(&old, Duration::from_secs(60)).await;
    let new = server.start_run("keep", json!({"text": "new"})).await;
    server.wait_run(&new, Duration::from_secs(60)).await;
    assert_eq!(server.terminate(), Some(0));
    let blobs = files_under(&sb.path().join("artifacts/sha256"));
    assert_eq!(blobs.len(), 3, "shared once, plus one per run: {blobs:?}");
    // The old run ended 100 days ago, and its blobs were written then.
    let db = sea_orm::Database::connect(format!("sqlite://{}", sb.db()))
        .await
        .expect("open the database");
    let long_ago = chrono::Utc::now() - chrono::Duration::days(100);
    sea_orm::ConnectionTrait::execute_raw(
        &db,
        sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "UPDATE runs SET ended_at = ? WHERE id = ?",
            [long_ago.into(), old.as_str().into()],
        ),
    )
    .await
    .expect("age the old run");
    db.close().await.expect("close");
    let hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for blob in &blobs {
        std::fs::File::options()
            .write(true)
            .open(blob)
            .and_then(|f| f.set_modified(hours_ago))
            .expect("age the blob");
    }
    let cleaned = sb.sluice(&["db", "clean", "--older-than", "90d"]);
    assert_eq!(cleaned.code, 0, "{}", cleaned.stderr);
    assert!(
        cleaned
            .stdout
            .contains("Deleted 1 runs ended more than 90d ago, and 1 artifact blobs"),
        "{}",
        cleaned.stdout
    );
    let left = files_under(&sb.path().join("artifacts/sha256"));
    assert_eq!(left.len(), 2, "{left:?}");
    let server = Server::start(&sb);
    let (status, _) = server.get(&format!("/api/v1/runs/{old}")).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .get(&format!("/api/v1/runs/{old}/tasks/write/logs"))
        .await;
    assert_eq!(status, 404);
    let (status, body) = get_text(&server, &format!("/api/v1/runs/{new}/artifacts/own.txt")).await;
    assert_eq!((status, body.as_str()), (200, "new\n"));
    let (status, body) =
        get_text(&server, &format!("/api/v1/runs/{new}/artifacts/shared.txt")).await;
    assert_eq!((status, body.as_str()), (200, "shared\n"));
}
