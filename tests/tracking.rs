//! Experiment tracking and the model registry: one conformance suite over the `Tracking`
//! interface, run on the built-in backend over SQLite and PostgreSQL and on a real MLflow
//! server; the `track` operator's budget for 10,000 metric points; the read API; and
//! `sluice registry diff`.
//!
//! One MLflow server serves every test of this file (a start takes 30–90 s): the first test
//! that needs it starts it on a free port (`SLUICE_TEST_MLFLOW`, the `mlflow` program), and
//! each test uses names of its own. With `CI` set, a missing MLflow fails the tests.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sluice::artifacts::{Artifacts, Limits, Location};
use sluice::operators::services::Services;
use sluice::operators::{LogSink, OpContext, Operator};
use sluice::store::{Store, StoreConfig};
use sluice::tracking::{
    Builtin, Lineage, LogBatch, MetricPoint, Mlflow, NewTrackingRun, RunOrder, RunPage, RunQuery,
    SourceFile, Tracking, TrackingError, TrackingStatus, VersionRequest, diff, query,
};
use tower::ServiceExt;

use common::Sandbox;
use common::postgres::TestDatabase;

// ---------------------------------------------------------------------------------------------
// The MLflow server

/// The MLflow server of this test binary. Statics are never dropped, so the server is tied
/// to this process another way: it runs under a small shell that waits on a pipe only this
/// process holds, and stops the server (SIGTERM, which stops its workers too) when the pipe
/// closes — when this process exits, however it exits — and then removes its folder.
struct MlflowServer {
    uri: String,
    child: Mutex<Child>,
    _keepalive: Mutex<ChildStdin>,
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether `GET /health` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = String::new();
    let _ = std::io::BufReader::new(stream).read_line(&mut head);
    head.contains(" 200")
}

fn start_mlflow() -> Option<MlflowServer> {
    let program = std::env::var("SLUICE_TEST_MLFLOW").unwrap_or_else(|_| "mlflow".into());
    // Kept past this function: the shell around the server removes it when the server stops.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let port = free_port();
    let db = format!("sqlite:///{}/mlflow.db", dir.display());
    let artifacts = dir.join("mlartifacts");
    // `read` returns when this process's end of the pipe closes; then the server is stopped.
    let script = r#""$0" server --backend-store-uri "$1" --artifacts-destination "$2" \
        --host 127.0.0.1 --port "$3" --workers 1 & pid=$!; read _; kill -TERM $pid; wait $pid; \
        rm -rf "$4""#;
    let spawned = Command::new("sh")
        .args(["-c", script, &program, &db])
        .arg(&artifacts)
        .arg(port.to_string())
        .arg(&dir)
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("server.log")).expect("log file"),
        ))
        .spawn();
    let mut child = spawned.expect("sh starts");
    let keepalive = child.stdin.take().expect("a pipe");
    let up = Instant::now();
    let deadline = Duration::from_secs(180);
    while !healthy(port) {
        let exited = child.try_wait().ok().flatten().is_some();
        if exited || up.elapsed() > deadline {
            let mut log = String::new();
            let _ = std::fs::File::open(dir.join("server.log"))
                .and_then(|mut f| f.read_to_string(&mut log));
            let tail: String = log
                .chars()
                .rev()
                .take(2000)
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            let problem = format!("MLflow ({program}) did not become healthy: {tail}");
            if std::env::var_os("CI").is_some() {
                panic!("{problem}");
            }
            eprintln!("skipped: {problem}");
            drop(keepalive);
            let _ = child.wait();
            return None;
        }
        // The first start byte-compiles and migrates for up to 90 s: poll gently.
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("MLflow answered on port {port} after {:?}.", up.elapsed());
    Some(MlflowServer {
        uri: format!("http://127.0.0.1:{port}"),
        child: Mutex::new(child),
        _keepalive: Mutex::new(keepalive),
    })
}

/// The shared server; `None` outside CI when MLflow cannot run here.
fn mlflow_server() -> Option<&'static MlflowServer> {
    static SERVER: OnceLock<Option<MlflowServer>> = OnceLock::new();
    SERVER.get_or_init(start_mlflow).as_ref()
}

// ---------------------------------------------------------------------------------------------
// Backends

struct Backend {
    name: &'static str,
    tracking: Arc<Tracking>,
    postgres: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

fn client() -> reqwest::Client {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    reqwest::Client::builder().build().expect("an HTTP client")
}

async fn builtin_over(url: &str, dir: &std::path::Path) -> Arc<Tracking> {
    let store = Store::open(&StoreConfig::new(url)).await.expect("store");
    let artifacts =
        Artifacts::open(&Location::Folder(dir.join("blobs")), Limits::default()).expect("blobs");
    Arc::new(Tracking::Builtin(Builtin::new(store, artifacts)))
}

/// Built-in over SQLite always; built-in over PostgreSQL and MLflow when they are here (in
/// CI they must be).
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all = vec![Backend {
        name: "builtin/sqlite",
        tracking: builtin_over("sqlite::memory:", dir.path()).await,
        postgres: None,
        _dir: dir,
    }];
    if let Some(db) = TestDatabase::create().await {
        let dir = tempfile::tempdir().expect("temp dir");
        all.push(Backend {
            name: "builtin/postgres",
            tracking: builtin_over(&db.url, dir.path()).await,
            postgres: Some(db),
            _dir: dir,
        });
    }
    let server = tokio::task::spawn_blocking(mlflow_server)
        .await
        .expect("the server starts or is skipped");
    if let Some(server) = server {
        all.push(Backend {
            name: "mlflow",
            tracking: Arc::new(Tracking::Mlflow(Mlflow::new(client(), &server.uri, None))),
            postgres: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        });
    }
    all
}

async fn finish(backend: Backend) {
    if let Some(db) = backend.postgres {
        db.finish().await;
    }
}

/// A name no other test (or earlier run against the shared server) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

macro_rules! on_every_backend {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                for backend in backends().await {
                    eprintln!("{}: on {}", stringify!($name), backend.name);
                    $body(backend.tracking.clone()).await;
                    finish(backend).await;
                }
            }
        )*
    };
}

on_every_backend! {
    experiments_runs_params_metrics_and_lineage_round_trip => runs_round_trip,
    model_versions_keep_their_files_and_compare_key_by_key => versions_and_diff,
    aliases_move_with_their_history_and_an_unset_alias_is_none => aliases,
    a_version_tag_is_set_replaced_and_read_with_the_version => version_tags,
    searches_filter_sort_and_page_in_the_backend => search_filters,
}

fn point(key: &str, value: f64, step: i64) -> MetricPoint {
    MetricPoint {
        key: key.into(),
        value,
        step,
        timestamp_ms: 1_765_000_000_000 + step,
    }
}

async fn runs_round_trip(tracking: Arc<Tracking>) {
    let name = unique("eval");
    let experiment = tracking.experiment(&name).await.expect("experiment");
    assert_eq!(
        tracking.experiment(&name).await.expect("again").id,
        experiment.id,
        "get-or-create finds the same experiment"
    );
    assert!(
        tracking
            .experiments()
            .await
            .expect("list")
            .iter()
            .any(|e| e.name == name)
    );
    let lineage = Lineage {
        workflow_id: Some("eval_pipeline".into()),
        version_hash: Some("abc123".into()),
        run_id: Some("run-7".into()),
        task_id: Some("track".into()),
        try_number: Some(2),
        inputs: vec![sluice::tracking::InputFile {
            path: "data/golden.jsonl".into(),
            sha256: "ff".repeat(32),
        }],
    };
    let run = tracking
        .start_run(&NewTrackingRun {
            experiment_id: experiment.id.clone(),
            name: "track".into(),
            lineage: lineage.clone(),
            started_at: chrono::Utc::now(),
        })
        .await
        .expect("run");
    let mut metrics: Vec<MetricPoint> = (0..5)
        .map(|s| point("loss", 1.0 / (s + 1) as f64, s))
        .collect();
    metrics.push(point("accuracy", 0.93, 0));
    tracking
        .log_batch(
            &run.id,
            &LogBatch {
                params: vec![
                    ("model".into(), "gpt-4o-mini".into()),
                    ("n".into(), "200".into()),
                ],
                metrics,
                tags: vec![("team".into(), "search".into())],
            },
        )
        .await
        .expect("log");
    let kept = tracking
        .log_file(
            &run.id,
            SourceFile {
                name: "report.json".into(),
                bytes: br#"{"ok":true}"#.to_vec(),
            },
        )
        .await
        .expect("file");
    tracking
        .end_run(&run.id, TrackingStatus::Finished)
        .await
        .expect("end");

    let detail = tracking.run(&run.id).await.expect("read").expect("found");
    assert_eq!(detail.run.status, TrackingStatus::Finished);
    assert_eq!(detail.run.name, "track");
    assert_eq!(detail.run.lineage, lineage);
    assert_eq!(detail.params["model"], "gpt-4o-mini");
    assert_eq!(detail.params.len(), 2);
    assert_eq!(
        detail.tags.get("team").map(String::as_str),
        Some("search"),
        "{:?}",
        detail.tags
    );
    assert_eq!(
        detail.tags.len(),
        1,
        "internal tags stay out: {:?}",
        detail.tags
    );
    assert_eq!(
        detail.metrics["loss"].step, 4,
        "the latest point is the last step"
    );
    assert_eq!(detail.metrics["accuracy"].value, 0.93);
    assert_eq!(detail.files, vec![kept.clone()]);
    assert_eq!(kept.size, 11);

    let history = tracking
        .metric_history(&run.id, "loss")
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(|p| p.step).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(history[1].value, 0.5);

    let found = tracking.all_runs(&experiment.id).await.expect("search");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].run.id, run.id);
    assert_eq!(found[0].metrics["loss"].step, 4);
    assert!(
        tracking
            .run("0123456789abcdef0123456789abcdef")
            .await
            .expect("read")
            .is_none()
    );
}

/// The names of a page's runs, in order.
fn names(page: &RunPage) -> Vec<&str> {
    page.runs.iter().map(|r| r.run.name.as_str()).collect()
}

async fn search(
    tracking: &Tracking,
    experiment: &str,
    filter: &str,
    sort: Option<(&str, bool)>,
    size: u32,
    token: Option<String>,
) -> RunPage {
    let query = RunQuery {
        conditions: query::parse_filter(filter).expect("a valid filter"),
        order: sort.map(|(field, descending)| RunOrder {
            field: query::parse_field(field).expect("a field"),
            descending,
        }),
        max_results: size,
        page_token: token,
    };
    tracking
        .search_runs(experiment, &query)
        .await
        .expect("search")
}

async fn search_filters(tracking: Arc<Tracking>) {
    let experiment = tracking
        .experiment(&unique("search"))
        .await
        .expect("experiment")
        .id;
    let start = chrono::Utc::now() - chrono::TimeDelta::minutes(10);
    for i in 0..5_i64 {
        let run = tracking
            .start_run(&NewTrackingRun {
                experiment_id: experiment.clone(),
                name: format!("r{i}"),
                lineage: Lineage::default(),
                started_at: start + chrono::TimeDelta::seconds(i),
            })
            .await
            .expect("run");
        let model = if i % 2 == 0 { "gpt" } else { "llama" };
        tracking
            .log_batch(
                &run.id,
                &LogBatch {
                    params: vec![("model".into(), model.into())],
                    // An early point with another value: searches read the latest.
                    metrics: vec![
                        point("exact_match", 9.0, 0),
                        point("exact_match", i as f64 * 0.25, 1),
                    ],
                    tags: vec![("team".into(), "search".into())],
                },
            )
            .await
            .expect("log");
        if i < 4 {
            tracking
                .end_run(&run.id, TrackingStatus::Finished)
                .await
                .expect("end");
        }
    }
    let all = search(&tracking, &experiment, "", None, 10, None).await;
    assert_eq!(names(&all), ["r4", "r3", "r2", "r1", "r0"], "newest first");
    assert_eq!(all.next_page_token, None);
    let found = search(
        &tracking,
        &experiment,
        "metric.exact_match >= 0.5 and param.model = gpt",
        Some(("metric.exact_match", true)),
        10,
        None,
    )
    .await;
    assert_eq!(names(&found), ["r4", "r2"]);
    if let Some(total) = found.total {
        assert_eq!(total, 2, "the count follows the filter");
    }
    let found = search(
        &tracking,
        &experiment,
        "params.model != 'gpt'",
        None,
        10,
        None,
    )
    .await;
    assert_eq!(names(&found), ["r3", "r1"]);
    let found = search(
        &tracking,
        &experiment,
        "status = FINISHED and metric.exact_match < 0.5",
        None,
        10,
        None,
    )
    .await;
    assert_eq!(names(&found), ["r1", "r0"]);
    let found = search(
        &tracking,
        &experiment,
        "tag.team = search and metric.exact_match > 5",
        None,
        10,
        None,
    )
    .await;
    assert_eq!(
        names(&found),
        Vec::<&str>::new(),
        "the latest point decides, not an earlier one"
    );

    // Sorted lowest first, two a page, through the page tokens.
    let mut seen = Vec::new();
    let mut token = None;
    for _ in 0..3 {
        let page = search(
            &tracking,
            &experiment,
            "",
            Some(("metric.exact_match", false)),
            2,
            token,
        )
        .await;
        seen.extend(names(&page).into_iter().map(str::to_owned));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(token, None, "the last page has no next one");
    let by_param = search(
        &tracking,
        &experiment,
        "",
        Some(("param.model", false)),
        10,
        None,
    )
    .await;
    assert_eq!(
        names(&by_param),
        ["r4", "r2", "r0", "r3", "r1"],
        "ties go to the newest"
    );
}

const PROMPT_V1: &str = "model: gpt-4o-mini\nparams:\n  temperature: 0.2\n  top_p: 0.9\n\
                         system: You answer from the context.\n";
const PROMPT_V2: &str = "model: gpt-4o-mini\nparams:\n  temperature: 0.7\n\
                         system: You answer from the context.\nstop: [\"\\n\\n\"]\n";

/// A tracking run to hang versions on (MLflow keeps a version's files with a run).
async fn some_run(tracking: &Tracking) -> String {
    let experiment = tracking
        .experiment(&unique("registry"))
        .await
        .expect("experiment");
    tracking
        .start_run(&NewTrackingRun {
            experiment_id: experiment.id,
            name: "register".into(),
            lineage: Lineage::default(),
            started_at: chrono::Utc::now(),
        })
        .await
        .expect("run")
        .id
}

async fn register(tracking: &Tracking, model: &str, run: &str, prompt: &str, notes: &str) -> u32 {
    tracking
        .create_model_version(VersionRequest {
            model: model.into(),
            tracking_run_id: Some(run.into()),
            description: format!("prompt {notes}"),
            tags: [("owner".to_owned(), "ml".to_owned())].into(),
            files: vec![
                SourceFile {
                    name: "assistant.yaml".into(),
                    bytes: prompt.as_bytes().to_vec(),
                },
                SourceFile {
                    name: "notes/README.txt".into(),
                    bytes: notes.as_bytes().to_vec(),
                },
            ],
        })
        .await
        .expect("version")
        .version
}

async fn versions_and_diff(tracking: Arc<Tracking>) {
    let model = unique("assistant");
    let run = some_run(&tracking).await;
    assert_eq!(
        register(&tracking, &model, &run, PROMPT_V1, "first\nline\n").await,
        1
    );
    assert_eq!(
        register(&tracking, &model, &run, PROMPT_V2, "first\nsecond\n").await,
        2
    );

    let v1 = tracking
        .model_version(&model, 1)
        .await
        .expect("read")
        .expect("v1");
    assert_eq!(v1.tracking_run_id.as_deref(), Some(run.as_str()));
    assert_eq!(v1.description, "prompt first\nline\n");
    assert_eq!(v1.tags.get("owner").map(String::as_str), Some("ml"));
    let names: Vec<&str> = v1.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["assistant.yaml", "notes/README.txt"]);
    assert_eq!(
        tracking
            .version_file(&model, 1, "assistant.yaml")
            .await
            .expect("content"),
        PROMPT_V1.as_bytes()
    );
    assert!(matches!(
        tracking.version_file(&model, 1, "nope.yaml").await,
        Err(TrackingError::UnknownFile { .. })
    ));
    let all: Vec<u32> = tracking
        .model_versions(&model)
        .await
        .expect("versions")
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(all, vec![2, 1]);
    assert!(tracking.get_model(&model).await.expect("model").is_some());
    assert!(
        tracking
            .models()
            .await
            .expect("models")
            .iter()
            .any(|m| m.name == model)
    );
    assert!(
        tracking
            .model_version(&model, 9)
            .await
            .expect("read")
            .is_none()
    );

    let diffs = tracking.diff_versions(&model, 1, 2).await.expect("diff");
    let rendered = diff::render(&diffs, "v1", "v2");
    assert!(
        rendered.contains("~ params.temperature: 0.2 -> 0.7"),
        "{rendered}"
    );
    assert!(rendered.contains("- params.top_p: 0.9"), "{rendered}");
    assert!(rendered.contains("+ stop: [\"\\n\\n\"]"), "{rendered}");
    assert!(rendered.contains("-line\n+second\n"), "{rendered}");
    assert!(matches!(
        tracking.diff_versions(&model, 1, 5).await,
        Err(TrackingError::UnknownVersion { version: 5, .. })
    ));
}

async fn version_tags(tracking: Arc<Tracking>) {
    let model = unique("tagged");
    let run = some_run(&tracking).await;
    let version = register(&tracking, &model, &run, PROMPT_V1, "a").await;
    for (key, value) in [
        ("sluice.gate", "failed"),
        ("sluice.gate.summary", "faithfulness 0.80 < 0.85"),
        ("sluice.gate", "passed"),
    ] {
        tracking
            .set_version_tag(&model, version, key, value)
            .await
            .expect("set tag");
    }
    let read = tracking
        .model_version(&model, version)
        .await
        .expect("read")
        .expect("version");
    assert_eq!(
        read.tags.get("sluice.gate").map(String::as_str),
        Some("passed")
    );
    assert_eq!(
        read.tags.get("sluice.gate.summary").map(String::as_str),
        Some("faithfulness 0.80 < 0.85")
    );
    assert_eq!(
        read.tags.get("owner").map(String::as_str),
        Some("ml"),
        "its tags stay"
    );
    assert!(!read.files.is_empty(), "the files are still the version's");
    let listed = tracking.model_versions(&model).await.expect("list");
    assert_eq!(
        listed[0].tags.get("sluice.gate").map(String::as_str),
        Some("passed")
    );
    let missing = tracking
        .set_version_tag(&model, version + 5, "sluice.gate", "passed")
        .await
        .expect_err("an unknown version");
    assert!(missing.to_string().contains("has no version"), "{missing}");
}

async fn aliases(tracking: Arc<Tracking>) {
    let model = unique("ranker");
    let run = some_run(&tracking).await;
    assert!(
        tracking
            .get_alias(&model, "champion")
            .await
            .expect("read")
            .is_none(),
        "no model yet: no champion"
    );
    register(&tracking, &model, &run, PROMPT_V1, "a").await;
    register(&tracking, &model, &run, PROMPT_V2, "b").await;
    assert!(
        tracking
            .get_alias(&model, "champion")
            .await
            .expect("read")
            .is_none(),
        "no champion yet is not an error"
    );
    let set = tracking
        .set_alias(&model, "champion", 1, "user:ana")
        .await
        .expect("set");
    assert_eq!((set.from, set.to), (None, Some(1)));
    let moved = tracking
        .set_alias(&model, "champion", 2, "run:r-1/promote")
        .await
        .expect("move");
    assert_eq!((moved.from, moved.to), (Some(1), Some(2)));
    let champion = tracking
        .get_alias(&model, "champion")
        .await
        .expect("read")
        .expect("set");
    assert_eq!(champion.version, 2);
    assert_eq!(champion.aliases, vec!["champion"]);
    assert!(matches!(
        tracking.set_alias(&model, "champion", 7, "user:ana").await,
        Err(TrackingError::UnknownVersion { version: 7, .. })
    ));
    let deleted = tracking
        .delete_alias(&model, "champion", "user:bo")
        .await
        .expect("delete")
        .expect("it was set");
    assert_eq!(deleted.from, Some(2));
    assert!(
        tracking
            .get_alias(&model, "champion")
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        tracking
            .delete_alias(&model, "champion", "user:bo")
            .await
            .expect("delete again")
            .is_none()
    );
    let history: Vec<(Option<u32>, Option<u32>, String)> = tracking
        .alias_history(&model)
        .await
        .expect("history")
        .into_iter()
        .map(|m| (m.from, m.to, m.moved_by))
        .collect();
    assert_eq!(
        history,
        vec![
            (None, Some(1), "user:ana".to_owned()),
            (Some(1), Some(2), "run:r-1/promote".to_owned()),
            (Some(2), None, "user:bo".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The `track` operator's budget

fn op_context(dir: &std::path::Path, tracking: Arc<Tracking>) -> OpContext {
    OpContext {
        run_id: "run-1".into(),
        workflow: "eval_pipeline".into(),
        task: "track".into(),
        try_number: 1,
        env: Vec::new(),
        base_dir: dir.to_path_buf(),
        scratch_dir: dir.join("scratch"),
        log: LogSink::discard(),
        http: client(),
        cancel: tokio_util::sync::CancellationToken::new(),
        masker: Arc::default(),
        first_started_at: chrono::Utc::now(),
        services: Arc::new(Services {
            tracking: Some(tracking),
            ..Services::default()
        }),
        artifacts_requested: Arc::default(),
    }
}

/// `track` with 10,000 metric points (4 metrics × 2,500 steps), three params and a tag.
fn ten_thousand_points(experiment: &str) -> Value {
    let points: Vec<Value> = (0..2_500)
        .flat_map(|step| {
            ["loss", "accuracy", "latency_ms", "cost"]
                .into_iter()
                .map(move |key| json!({"key": key, "value": step as f64 / 7.0, "step": step}))
        })
        .collect();
    json!({
        "experiment": experiment,
        "params": {"model": "gpt-4o-mini", "samples": 200, "prompt_version": "3"},
        "tags": {"team": "search"},
        "metrics": points,
    })
}

#[tokio::test]
async fn track_logs_10000_metric_points_within_200ms_on_builtin_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/sluice.db?mode=rwc", dir.path().display());
    let tracking = builtin_over(&db, dir.path()).await;
    let ctx = op_context(dir.path(), tracking.clone());
    // One warm-up task (connections, statement cache), then the median of nine: this machine
    // is shared, and single runs vary by 2x.
    let mut times = Vec::new();
    for i in 0..10 {
        let with = ten_thousand_points(&format!("bench-{i}"));
        let started = Instant::now();
        let done = Operator::Track.run(&ctx, with).await.expect("tracked");
        times.push(started.elapsed());
        let run_id = done.outputs["tracking_run_id"]
            .as_str()
            .expect("id")
            .to_owned();
        let history = tracking
            .metric_history(&run_id, "loss")
            .await
            .expect("history");
        assert_eq!(history.len(), 2_500);
    }
    let mut measured = times[1..].to_vec();
    measured.sort();
    let median = measured[measured.len() / 2];
    eprintln!("track, 10,000 points, builtin/sqlite: median {median:?} of {measured:?}");
    assert!(
        median <= Duration::from_millis(200),
        "a track task logging 10,000 points took {median:?} (median), over 200 ms"
    );
}

#[tokio::test]
async fn track_logs_10000_metric_points_in_at_most_11_log_calls_on_mlflow() {
    let Some(server) = tokio::task::spawn_blocking(mlflow_server)
        .await
        .expect("the server starts or is skipped")
    else {
        return;
    };
    let mlflow = Mlflow::new(client(), &server.uri, None);
    let tracking = Arc::new(Tracking::Mlflow(mlflow));
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = op_context(dir.path(), tracking.clone());
    let experiment = unique("bench");
    let calls = |t: &Tracking| match t {
        Tracking::Mlflow(m) => m.calls(),
        Tracking::Builtin(_) => 0,
    };
    // The experiment is looked up once per process and remembered.
    tracking.experiment(&experiment).await.expect("experiment");
    let before = calls(&tracking);
    let started = Instant::now();
    let done = Operator::Track
        .run(&ctx, ten_thousand_points(&experiment))
        .await
        .expect("tracked");
    let elapsed = started.elapsed();
    let used = calls(&tracking) - before;
    eprintln!("track, 10,000 points, MLflow: {used} calls in {elapsed:?}");
    // 10,003 entries at 1,000 a call is 11 log-batch calls, plus creating and ending the run.
    assert!(used <= 13, "{used} MLflow calls");
    assert!(used - 2 <= 11, "{} log-batch calls", used - 2);
    let run_id = done.outputs["tracking_run_id"].as_str().expect("id");
    let history = tracking
        .metric_history(run_id, "cost")
        .await
        .expect("history");
    assert_eq!(history.len(), 2_500);
    let detail = tracking.run(run_id).await.expect("read").expect("found");
    assert_eq!(detail.params["samples"], "200");
    assert_eq!(detail.run.lineage.task_id.as_deref(), Some("track"));
}

// ---------------------------------------------------------------------------------------------
// The read API and the CLI

async fn api_get(router: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_api_reads_experiments_runs_models_aliases_and_diffs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&StoreConfig::new("sqlite::memory:"))
        .await
        .expect("store");
    let artifacts = Artifacts::open(
        &Location::Folder(dir.path().join("blobs")),
        Limits::default(),
    )
    .expect("blobs");
    let tracking = Arc::new(Tracking::Builtin(Builtin::new(store.clone(), artifacts)));
    let ctx = op_context(dir.path(), tracking.clone());
    std::fs::write(dir.path().join("assistant.yaml"), PROMPT_V1).expect("write");
    std::fs::write(dir.path().join("golden.jsonl"), "{\"q\":1}\n").expect("write");
    let with = json!({"experiment": "eval-small", "params": {"model": "small"},
        "metrics": {"faithfulness": 0.91}, "inputs": ["golden.jsonl"],
        "register": {"model": "assistant", "source": "assistant.yaml", "alias": "champion"}});
    let first = Operator::Track
        .run(&ctx, with.clone())
        .await
        .expect("tracked");
    std::fs::write(dir.path().join("assistant.yaml"), PROMPT_V2).expect("write");
    Operator::Track
        .run(&ctx, with)
        .await
        .expect("tracked again");

    let catalog = Arc::new(sluice::catalog::live::Catalog::open(dir.path()));
    let state =
        sluice::server::AppState::new(store, catalog, &[], None).with_tracking(tracking.clone());
    let router = sluice::server::router(state);

    let (status, body) = api_get(&router, "/api/v1/tracking/experiments").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["backend"], "builtin");
    let experiment = body["experiments"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, body) = api_get(
        &router,
        &format!("/api/v1/tracking/experiments/{experiment}/runs"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(2));
    let run_id = first.outputs["tracking_run_id"].as_str().expect("id");
    let (status, body) = api_get(&router, &format!("/api/v1/tracking/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metrics"]["faithfulness"]["value"], json!(0.91));
    assert_eq!(body["params"]["model"], "small");
    assert_eq!(body["lineage"]["workflow_id"], "eval_pipeline");
    assert_eq!(body["lineage"]["inputs"][0]["path"], "golden.jsonl");
    let (status, body) = api_get(
        &router,
        &format!("/api/v1/tracking/runs/{run_id}/metrics/faithfulness"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["points"].as_array().map(Vec::len), Some(1));

    let (status, body) = api_get(&router, "/api/v1/models").await;
    assert_eq!(
        (status, &body["models"][0]["name"]),
        (StatusCode::OK, &json!("assistant"))
    );
    let (status, body) = api_get(&router, "/api/v1/models/assistant").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aliases"]["champion"], 2);
    assert_eq!(body["alias_history"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["alias_history"][1]["moved_by"], "run:run-1/track");
    let (status, body) = api_get(&router, "/api/v1/models/assistant/versions/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["files"][0]["name"], "assistant.yaml");
    let (status, body) = api_get(&router, "/api/v1/models/assistant/aliases/champion").await;
    assert_eq!((status, &body["version"]), (StatusCode::OK, &json!(2)));
    let (status, body) = api_get(&router, "/api/v1/models/assistant/aliases/production").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("has no alias `production`")),
        "{body}"
    );
    let (status, body) = api_get(&router, "/api/v1/models/assistant/diff?from=1&to=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changes = &body["files"][0]["change"];
    assert_eq!(changes["kind"], "keys");
    assert_eq!(changes["changes"][0]["path"], "params.temperature");
    assert_eq!(changes["changes"][0]["old"], json!(0.2));
    let (status, _) = api_get(&router, "/api/v1/models/assistant/versions/9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, doc) = api_get(&router, "/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/models/{name}/aliases/{alias}"].is_object());
}

#[tokio::test]
async fn registry_diff_prints_changed_keys_and_refuses_unknown_versions() {
    let sb = Sandbox::new();
    let url = format!("sqlite://{}?mode=rwc", sb.db());
    // `artifacts` beside the database is where the CLI looks for blobs by default.
    let store = Store::open(&StoreConfig::new(&url)).await.expect("store");
    let artifacts = Artifacts::open(
        &Location::Folder(sb.path().join("artifacts")),
        Limits::default(),
    )
    .expect("blobs");
    let tracking = Tracking::Builtin(Builtin::new(store, artifacts));
    let run = some_run(&tracking).await;
    register(&tracking, "assistant", &run, PROMPT_V1, "a").await;
    register(&tracking, "assistant", &run, PROMPT_V2, "b").await;

    let out = sb.sluice(&["registry", "diff", "assistant", "1", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("--- assistant.yaml (version 1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("~ params.temperature: 0.2 -> 0.7"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("- params.top_p: 0.9"), "{}", out.stdout);
    let out = sb.sluice(&["registry", "diff", "assistant", "1", "2", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()[0]["change"]["kind"], "keys");
    let out = sb.sluice(&["registry", "diff", "assistant", "1", "3"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("has no version 3"), "{}", out.stderr);
}

/// A `track` task's own `tracking` sends that task to MLflow (its token from a secret) while
/// the process's default stays the built-in backend; an unknown backend fails validation.
#[tokio::test]
async fn a_task_s_own_tracking_goes_to_mlflow_while_the_default_stays_built_in() {
    let sb = Sandbox::new();
    let bad = sb.write(
        "bad.yaml",
        "tasks:\n  t:\n    operator: track\n    with: { experiment: e, tracking: { backend: wandb } }\n",
    );
    let refused = sb.sluice(&["validate", bad.to_str().expect("utf-8")]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("wandb"),
        "{} {}",
        refused.stdout,
        refused.stderr
    );

    let Some(server) = tokio::task::spawn_blocking(mlflow_server)
        .await
        .expect("the server starts or is skipped")
    else {
        return;
    };
    let experiment = unique("own");
    let file = sb.write(
        "own.yaml",
        &format!(
            "tasks:\n\
             \x20 own:\n    operator: track\n    with:\n\
             \x20     experiment: {experiment}\n      params: {{ where: mlflow }}\n\
             \x20     tracking: {{ backend: mlflow, uri: \"{}/\", token_secret: MLFLOW_TOKEN }}\n\
             \x20 default:\n    operator: track\n    with: {{ experiment: {experiment} }}\n",
            server.uri
        ),
    );
    let out: common::Finished = sb
        .command()
        .env("SLUICE_SECRET_MLFLOW_TOKEN", "token-for-tests")
        .args(["run", file.to_str().expect("utf-8"), "--json"])
        .output()
        .expect("run sluice")
        .into();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json = out.json();
    let tasks = &json["tasks"];
    assert_eq!(tasks["own"]["outputs"]["backend"], "mlflow", "{json}");
    assert_eq!(tasks["default"]["outputs"]["backend"], "builtin", "{json}");
    let mlflow = Tracking::Mlflow(Mlflow::new(client(), &server.uri, None));
    let own_id = tasks["own"]["outputs"]["tracking_run_id"]
        .as_str()
        .expect("an id");
    let on_mlflow = mlflow.run(own_id).await.expect("read").expect("on MLflow");
    assert_eq!(on_mlflow.params["where"], "mlflow");
    assert_eq!(on_mlflow.run.lineage.task_id.as_deref(), Some("own"));
    assert!(!out.stdout.contains("token-for-tests") && !out.stderr.contains("token-for-tests"));
}
