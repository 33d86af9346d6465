//! `track`: logs a tracking run in an experiment — params, metrics (a map, or a list with
//! steps), tags and files — and optionally registers a model version from a file or folder
//! (a prompt, a config, a model card). Lineage is recorded without being asked: the workflow,
//! its version hash, the run, task and try, and the SHA-256 of every file in `inputs`.
//! Works the same on the built-in backend and on MLflow (`[tracking]`, or the task's own
//! `tracking`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::config::{TrackingBackend, TrackingConfig};
use crate::secrets::Secrets;
use crate::tracking::{
    Builtin, InputFile, Lineage, LogBatch, MetricPoint, NewTrackingRun, SourceFile, Tracking,
    TrackingError, TrackingStatus, VersionRequest,
};

/// The most a registered source or a kept file may hold in all: sources are prompts,
/// configs and model cards, read into memory.
const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;

/// `track`'s settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// The experiment the tracking run belongs to, created when new:
    /// `"eval-{{ params.model }}"`.
    pub experiment: String,
    /// The tracking run's name. Default: the task's id.
    #[serde(default)]
    pub run_name: Option<String>,
    /// Continue this tracking run (an earlier task's `tracking_run_id`) instead of starting
    /// one.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Params, by name; numbers and booleans are kept as text, as MLflow keeps them.
    #[serde(default)]
    pub params: IndexMap<String, Value>,
    /// Metrics: a map of names to numbers (step 0), such as
    /// `"{{ tasks.evaluate.outputs.metrics }}"`, or a list of `{key, value, step}`. Entries
    /// of a map that are not numbers are skipped with a warning.
    #[serde(default)]
    pub metrics: Metrics,
    /// Tags, by name.
    #[serde(default)]
    pub tags: IndexMap<String, Value>,
    /// Files to keep with the tracking run, relative to the workflow's folder (kept under that
    /// path), or an upstream artifact (`{{ tasks.x.artifacts["name"] }}`, kept under its file name).
    #[serde(default)]
    pub files: Vec<String>,
    /// Files the result depends on (datasets, prompts, configs), relative to the workflow's
    /// folder: their SHA-256 is recorded as the run's lineage.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Registers a model version from a file or folder.
    #[serde(default)]
    pub register: Option<Register>,
    /// Where this task tracks, instead of `[tracking]`: `{backend: mlflow, uri: …,
    /// token_secret: NAME}`.
    #[serde(default)]
    pub tracking: Option<TaskTracking>,
}

/// `tracking` as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingWith {
    /// `mlflow` or `builtin`.
    pub backend: TrackingBackend,
    /// The MLflow server (`http://127.0.0.1:5000`); only with `backend: mlflow`.
    #[serde(default)]
    pub uri: Option<String>,
    /// The secret (`SLUICE_SECRET_<NAME>`) holding the MLflow bearer token, if it needs one.
    #[serde(default)]
    pub token_secret: Option<String>,
}

/// A task's own tracking backend, checked as `[tracking]` is.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "TrackingWith")]
pub struct TaskTracking {
    pub backend: TrackingBackend,
    pub uri: Option<String>,
    pub token_secret: Option<String>,
}

impl TryFrom<TrackingWith> for TaskTracking {
    type Error = String;

    fn try_from(with: TrackingWith) -> std::result::Result<Self, String> {
        let checked = TrackingConfig::checked(with.backend, with.uri, with.token_secret)?;
        Ok(TaskTracking {
            backend: checked.backend,
            uri: checked.uri,
            token_secret: checked.token_secret,
        })
    }
}

/// The backend a task's own `tracking` names: MLflow (its token from the secrets), or the
/// built-in one over this process's database and artifact store.
fn task_tracking(ctx: &OpContext, own: &TaskTracking) -> Result<Tracking> {
    match (own.backend, &own.uri) {
        (TrackingBackend::Mlflow, Some(uri)) => Tracking::mlflow(
            ctx.http.clone(),
            uri,
            own.token_secret.as_deref(),
            &Secrets::from_env(),
        )
        .map_err(failed),
        (TrackingBackend::Mlflow, None) => Err(OperatorError::rejected(
            "`tracking.backend: mlflow` needs `tracking.uri`",
        )),
        (TrackingBackend::Builtin, _) => {
            let (Some(store), Some(artifacts)) = (&ctx.services.store, &ctx.services.artifacts)
            else {
                return Err(OperatorError::failed(
                    "`tracking.backend: builtin` needs the database and artifact store of \
                     `sluice serve`, `sluice worker` or `sluice run`",
                ));
            };
            Ok(Tracking::Builtin(Builtin::new(
                store.clone(),
                artifacts.clone(),
            )))
        }
    }
}

/// Metrics as a map or as a list with steps.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum Metrics {
    /// Points with their steps: `[{key: loss, value: 0.3, step: 1}, …]`.
    Points(Vec<MetricEntry>),
    /// Names to values, at step 0.
    Map(IndexMap<String, Value>),
}

/// By the JSON type, not serde's `untagged` (which buffers the whole value and, refusing a
/// template's text, would not quote it for `sluice validate`).
impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected};
        match Value::deserialize(deserializer)? {
            Value::Array(items) => serde_json::from_value(Value::Array(items))
                .map(Metrics::Points)
                .map_err(D::Error::custom),
            Value::Object(map) => Ok(Metrics::Map(map.into_iter().collect())),
            Value::String(text) => Err(D::Error::invalid_type(
                Unexpected::Str(&text),
                &"a map of metrics or a list of {key, value, step}",
            )),
            _ => Err(D::Error::custom(
                "`metrics` must be a map of metrics or a list of {key, value, step}",
            )),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::Points(Vec::new())
    }
}

/// One metric point.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricEntry {
    pub key: String,
    pub value: f64,
    /// The step (an epoch, a batch). Default 0.
    #[serde(default)]
    pub step: i64,
}

/// A model version to register.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The registered model, created when new.
    pub model: String,
    /// A file or folder, relative to the workflow's folder; its content is kept, so any two
    /// versions can be compared (`sluice registry diff`).
    pub source: String,
    /// What this version is.
    #[serde(default)]
    pub description: String,
    /// Points this alias (`challenger`, `staging`) at the new version; the move is recorded.
    #[serde(default)]
    pub alias: Option<String>,
}

fn failed(error: TrackingError) -> OperatorError {
    match error {
        TrackingError::Invalid(message) => OperatorError::rejected(message),
        other => OperatorError::failed(other.to_string()),
    }
}

/// A value as a param or tag: text as it is, anything else as JSON.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The metric points to log, and a warning for each map entry that is not a number.
fn metric_points(metrics: &Metrics, now_ms: i64) -> (Vec<MetricPoint>, Vec<String>) {
    let mut warnings = Vec::new();
    let points = match metrics {
        Metrics::Points(entries) => entries
            .iter()
            .map(|e| MetricPoint {
                key: e.key.clone(),
                value: e.value,
                step: e.step,
                timestamp_ms: now_ms,
            })
            .collect(),
        Metrics::Map(map) => map
            .iter()
            .filter_map(|(key, value)| {
                let number = match value {
                    Value::Number(n) => n.as_f64(),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                };
                if number.is_none() {
                    warnings.push(format!("metric `{key}` is not a number; it was not logged"));
                }
                number.map(|value| MetricPoint {
                    key: key.clone(),
                    value,
                    step: 0,
                    timestamp_ms: now_ms,
                })
            })
            .collect(),
    };
    (points, warnings)
}

/// The SHA-256 of a file, read off the async threads.
async fn sha256_of(path: PathBuf) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok::<_, String>(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| OperatorError::failed(format!("hashing an input failed: {e}")))?
    .map_err(OperatorError::rejected)
}

/// The regular files under `root` (itself, when it is a file), with their paths relative to
/// it (`/`-separated; a lone file keeps its own name), sorted. Symbolic links are not
/// followed.
async fn source_files(root: PathBuf) -> Result<Vec<(String, PathBuf)>> {
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::symlink_metadata(&root)
            .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
        if meta.is_file() {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(vec![(name, root)]);
        }
        let mut found = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            let entries = std::fs::read_dir(&folder)
                .map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("cannot read {}: {e}", folder.display()))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
                let path = entry.path();
                if kind.is_dir() {
                    folders.push(path);
                } else if kind.is_file() {
                    let relative = path
                        .strip_prefix(&root)
                        .map(|p| {
                            p.components()
                                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                        .unwrap_or_default();
                    found.push((relative, path));
                }
            }
        }
        found.sort();
        Ok::<_, String>(found)
    })
    .await
    .map_err(|e| OperatorError::failed(format!("listing a source failed: {e}")))?
    .map_err(OperatorError::rejected)
}

/// Reads files with tokio, refusing more than `MAX_SOURCE_BYTES` in all.
async fn read_all(files: Vec<(String, PathBuf)>, what: &str) -> Result<Vec<SourceFile>> {
    let mut total = 0u64;
    let mut read = Vec::with_capacity(files.len());
    for (name, path) in files {
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| OperatorError::rejected(format!("cannot read {}: {e}", path.display())))?
            .len();
        total = total.saturating_add(size);
        if total > MAX_SOURCE_BYTES {
            return Err(OperatorError::rejected(format!(
                "{what} holds more than {MAX_SOURCE_BYTES} bytes; keep large files as artifacts"
            )));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| OperatorError::rejected(format!("cannot read {}: {e}", path.display())))?;
        read.push(SourceFile { name, bytes });
    }
    Ok(read)
}

/// The name a kept file goes by: its path as written, except that an absolute path (an
/// upstream artifact, which templates resolve to a path in this run's cache) keeps only its
/// file name, as the cache's path means nothing later and MLflow refuses it as a key.
fn kept_name(written: &str) -> String {
    let path = Path::new(written);
    match path.file_name() {
        Some(name) if path.is_absolute() => name.to_string_lossy().into_owned(),
        _ => written.to_owned(),
    }
}

fn resolve(base: &Path, relative: &str) -> PathBuf {
    base.join(relative)
}

pub async fn run(ctx: &OpContext, config: TrackConfig) -> Result<Completion> {
    let tracking = match &config.tracking {
        Some(own) => {
            let tracking = task_tracking(ctx, own)?;
            ctx.log.system(format!(
                "Tracking on {} (this task's own `tracking`).",
                own.uri.as_deref().unwrap_or("the built-in backend")
            ));
            Arc::new(tracking)
        }
        None => ctx.services.tracking.clone().ok_or_else(|| {
            OperatorError::failed(
                "this process has no tracking backend; `track` runs under `sluice serve`, \
                 `sluice worker` or `sluice run`",
            )
        })?,
    };
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(OperatorError::Cancelled),
        done = track(ctx, &tracking, config) => done,
    }
}

async fn track(ctx: &OpContext, tracking: &Tracking, config: TrackConfig) -> Result<Completion> {
    let now_ms = Utc::now().timestamp_millis();
    let (metrics, warnings) = metric_points(&config.metrics, now_ms);
    let mut inputs = Vec::with_capacity(config.inputs.len());
    for path in &config.inputs {
        inputs.push(InputFile {
            path: path.clone(),
            sha256: sha256_of(resolve(&ctx.base_dir, path)).await?,
        });
    }
    let mut kept = Vec::new();
    for name in &config.files {
        let path = resolve(&ctx.base_dir, name);
        let mut files = read_all(vec![(kept_name(name), path)], &format!("file `{name}`")).await?;
        kept.append(&mut files);
    }
    let source = match &config.register {
        Some(register) => {
            let files = source_files(resolve(&ctx.base_dir, &register.source)).await?;
            if files.is_empty() {
                return Err(OperatorError::rejected(format!(
                    "`register.source` `{}` holds no file",
                    register.source
                )));
            }
            Some(read_all(files, &format!("`register.source` `{}`", register.source)).await?)
        }
        None => None,
    };
    let version_hash = match &ctx.services.store {
        Some(store) => store
            .run(&ctx.run_id)
            .await
            .map_err(|e| OperatorError::failed(e.to_string()))?
            .map(|run| run.version_hash),
        None => None,
    };

    let experiment = tracking
        .experiment(&config.experiment)
        .await
        .map_err(failed)?;
    let run_id = match &config.run_id {
        Some(id) => {
            tracking
                .run(id)
                .await
                .map_err(failed)?
                .ok_or_else(|| {
                    OperatorError::rejected(format!("there is no tracking run with id `{id}`"))
                })?
                .run
                .id
        }
        None => {
            tracking
                .start_run(&NewTrackingRun {
                    experiment_id: experiment.id.clone(),
                    name: config.run_name.clone().unwrap_or_else(|| ctx.task.clone()),
                    lineage: Lineage {
                        workflow_id: Some(ctx.workflow.clone()),
                        version_hash,
                        run_id: Some(ctx.run_id.clone()),
                        task_id: Some(ctx.task.clone()),
                        try_number: Some(ctx.try_number),
                        inputs,
                    },
                    started_at: Utc::now(),
                })
                .await
                .map_err(failed)?
                .id
        }
    };
    let logged = log_everything(ctx, tracking, &run_id, &config, metrics, kept, source).await;
    let status = if logged.is_ok() {
        TrackingStatus::Finished
    } else {
        TrackingStatus::Failed
    };
    let ended = tracking.end_run(&run_id, status).await;
    let (model_version, latest) = logged?;
    ended.map_err(failed)?;

    let mut outputs = Outputs::new();
    outputs.insert("tracking_run_id".into(), json!(run_id));
    outputs.insert("experiment_id".into(), json!(experiment.id));
    outputs.insert("backend".into(), json!(tracking.backend_name()));
    outputs.insert("metrics".into(), Value::Object(latest));
    outputs.insert("model_version".into(), json!(model_version));
    ctx.log.system(format!(
        "Tracked run {run_id} in experiment `{}` ({}).",
        experiment.name,
        tracking.backend_name()
    ));
    Ok(Completion {
        outputs,
        warnings,
        ..Completion::default()
    })
}

/// Logs the batch and files and registers the version; the version's number and each
/// metric's latest value logged here.
async fn log_everything(
    ctx: &OpContext,
    tracking: &Tracking,
    run_id: &str,
    config: &TrackConfig,
    metrics: Vec<MetricPoint>,
    kept: Vec<SourceFile>,
    source: Option<Vec<SourceFile>>,
) -> Result<(Option<u32>, serde_json::Map<String, Value>)> {
    let mut latest: IndexMap<&str, &MetricPoint> = IndexMap::new();
    for point in &metrics {
        match latest.get(point.key.as_str()) {
            Some(seen) if seen.step > point.step => {}
            _ => {
                latest.insert(point.key.as_str(), point);
            }
        }
    }
    let latest: serde_json::Map<String, Value> = latest
        .into_iter()
        .map(|(key, point)| (key.to_owned(), json!(point.value)))
        .collect();
    let batch = LogBatch {
        params: config
            .params
            .iter()
            .map(|(k, v)| (k.clone(), as_text(v)))
            .collect(),
        tags: config
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), as_text(v)))
            .collect(),
        metrics,
    };
    tracking.log_batch(run_id, &batch).await.map_err(failed)?;
    for file in kept {
        tracking.log_file(run_id, file).await.map_err(failed)?;
    }
    let mut version = None;
    if let (Some(register), Some(files)) = (&config.register, source) {
        let created = tracking
            .create_model_version(VersionRequest {
                model: register.model.clone(),
                tracking_run_id: Some(run_id.to_owned()),
                description: register.description.clone(),
                tags: Default::default(),
                files,
            })
            .await
            .map_err(failed)?;
        ctx.log.system(format!(
            "Registered version {} of model `{}`.",
            created.version, created.model
        ));
        if let Some(alias) = &register.alias {
            let moved_by = format!("run:{}/{}", ctx.run_id, ctx.task);
            tracking
                .set_alias(&created.model, alias, created.version, &moved_by)
                .await
                .map_err(failed)?;
            ctx.log.system(format!(
                "Alias `{alias}` of model `{}` now points at version {}.",
                created.model, created.version
            ));
        }
        version = Some(created.version);
    }
    Ok((version, latest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::services::Services;
    use crate::operators::support::test_support::{builtin_tracking as builtin, context};

    fn config(with: Value) -> TrackConfig {
        serde_json::from_value(with).expect("a valid config")
    }

    #[test]
    fn metrics_take_a_map_or_a_list_with_steps() {
        let map = config(json!({"experiment": "e", "metrics": {"f1": 0.5, "name": "x"}}));
        let (points, warnings) = metric_points(&map.metrics, 7);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].timestamp_ms, 7);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`name`"));
        let list = config(json!({"experiment": "e",
            "metrics": [{"key": "loss", "value": 1.0, "step": 3}]}));
        let (points, warnings) = metric_points(&list.metrics, 0);
        assert_eq!((points[0].step, warnings.len()), (3, 0));
        let bad = serde_json::from_value::<TrackConfig>(json!({"experiment": "e", "colour": 1}));
        assert!(bad.is_err(), "unknown keys are refused");
        // `sluice validate` leaves metrics from a template to run time.
        let templated = json!({"experiment": "e", "metrics": "{{ tasks.a.outputs.metrics }}"});
        assert!(
            super::super::Operator::Track
                .check_static(&templated)
                .is_ok()
        );
        let scalar = json!({"experiment": "e", "metrics": 3});
        assert!(super::super::Operator::Track.check_static(&scalar).is_err());
    }

    #[test]
    fn a_task_s_own_tracking_is_checked_as_the_configuration_s() {
        let check = |tracking: Value| {
            super::super::Operator::Track
                .check_static(&json!({"experiment": "e", "tracking": tracking}))
                .map_err(|e| e.to_string())
        };
        let unknown = check(json!({"backend": "wandb"})).expect_err("no such backend");
        assert!(unknown.contains("wandb"), "{unknown}");
        let no_uri = check(json!({"backend": "mlflow"})).expect_err("MLflow needs its URL");
        assert!(no_uri.contains("needs `tracking.uri`"), "{no_uri}");
        let token = check(json!({"backend": "builtin", "token_secret": "T"}));
        assert!(token.is_err_and(|e| e.contains("only")));
        let ftp = check(json!({"backend": "mlflow", "uri": "ftp://x"}));
        assert!(ftp.is_err_and(|e| e.contains("http://")));
        check(json!({"backend": "mlflow", "uri": "http://127.0.0.1:5000/", "token_secret": "T"}))
            .expect("a full MLflow override");
        let parsed = config(json!({"experiment": "e",
            "tracking": {"backend": "mlflow", "uri": "http://127.0.0.1:5000/"}}));
        let own = parsed.tracking.expect("the override");
        assert_eq!(own.uri.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn a_kept_file_is_named_as_written_unless_its_path_is_absolute() {
        assert_eq!(kept_name("data/golden.jsonl"), "data/golden.jsonl");
        assert_eq!(
            kept_name("/var/cache/sluice/run-1/sha256/ab/eval/results.jsonl"),
            "results.jsonl"
        );
    }

    #[tokio::test]
    async fn an_override_whose_token_secret_is_not_set_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _log) = context(dir.path());
        ctx.services = Arc::new(Services {
            tracking: Some(builtin(dir.path()).await),
            ..Services::default()
        });
        let error = run(
            &ctx,
            config(json!({"experiment": "e", "tracking": {"backend": "mlflow",
                "uri": "http://127.0.0.1:9", "token_secret": "SLUICE_TEST_NEVER_SET_TOKEN"}})),
        )
        .await
        .expect_err("the secret is not set");
        assert!(matches!(error, OperatorError::Rejected { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("SLUICE_SECRET_SLUICE_TEST_NEVER_SET_TOKEN"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn track_logs_lineage_and_registers_a_version_with_an_alias() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("prompts")).expect("mkdir");
        std::fs::write(dir.path().join("prompts/p.yaml"), "temperature: 0.2\n").expect("write");
        std::fs::write(dir.path().join("golden.jsonl"), "{}\n").expect("write");
        let tracking = builtin(dir.path()).await;
        let (mut ctx, _log) = context(dir.path());
        ctx.services = Arc::new(Services {
            tracking: Some(tracking.clone()),
            ..Services::default()
        });
        let done = run(
            &ctx,
            config(json!({
                "experiment": "eval-a",
                "params": {"model": "a", "n": 3},
                "metrics": [{"key": "loss", "value": 0.9, "step": 1},
                            {"key": "loss", "value": 0.4, "step": 2}],
                "inputs": ["golden.jsonl"],
                "register": {"model": "assistant", "source": "prompts", "alias": "challenger"}
            })),
        )
        .await
        .expect("tracked");
        assert_eq!(done.outputs["metrics"], json!({"loss": 0.4}));
        assert_eq!(done.outputs["model_version"], json!(1));
        let run_id = done.outputs["tracking_run_id"].as_str().expect("an id");
        let detail = tracking.run(run_id).await.unwrap().expect("the run");
        assert_eq!(detail.params["n"], "3");
        assert_eq!(detail.run.status, TrackingStatus::Finished);
        assert_eq!(detail.run.lineage.task_id.as_deref(), Some("t"));
        assert_eq!(
            detail.run.lineage.inputs[0].sha256,
            hex::encode(Sha256::digest(b"{}\n"))
        );
        let champion = tracking
            .get_alias("assistant", "challenger")
            .await
            .unwrap()
            .expect("the alias");
        assert_eq!(champion.files[0].name, "p.yaml");
        let history = tracking.alias_history("assistant").await.unwrap();
        assert_eq!(history[0].moved_by, "run:run-1/t");
    }

    #[tokio::test]
    async fn a_missing_source_fails_at_once_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ctx, _log) = context(dir.path());
        ctx.services = Arc::new(Services {
            tracking: Some(builtin(dir.path()).await),
            ..Services::default()
        });
        let error = run(
            &ctx,
            config(json!({"experiment": "e", "register": {"model": "m", "source": "nope.yaml"}})),
        )
        .await
        .expect_err("no such file");
        assert!(matches!(error, OperatorError::Rejected { .. }), "{error}");
        assert!(error.to_string().contains("nope.yaml"), "{error}");
    }

    /// The gate's `{model, alias}` baseline is the metrics of the tracking run that registered
    /// the version holding the alias; with no version holding it, thresholds alone decide.
    #[tokio::test]
    async fn a_gate_measures_regression_against_the_champion_track_registered() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("prompt.txt"), "Answer briefly.\n").expect("write");
        let (mut ctx, _log) = context(dir.path());
        ctx.services = Arc::new(Services {
            tracking: Some(builtin(dir.path()).await),
            ..Services::default()
        });
        let gate = |exact_match: f64| {
            json!({
                "metrics": {"exact_match": exact_match},
                "thresholds": {"exact_match": {"min": 0.5}},
                "baseline": {"model": "assistant", "alias": "champion",
                             "max_regression": {"exact_match": 0.02}},
            })
        };
        let first = crate::operators::Operator::Gate
            .run(&ctx, gate(0.6))
            .await
            .expect("no champion yet: thresholds alone");
        assert_eq!(first.outputs["passed"], json!(true));
        assert!(
            first.warnings.iter().any(|w| w.contains("champion")),
            "{:?}",
            first.warnings
        );
        run(
            &ctx,
            config(json!({
                "experiment": "eval-assistant",
                "metrics": {"exact_match": 0.9},
                "register": {"model": "assistant", "source": "prompt.txt", "alias": "champion"}
            })),
        )
        .await
        .expect("tracked");
        let behind = crate::operators::Operator::Gate
            .run(&ctx, gate(0.85))
            .await
            .expect_err("0.05 behind the champion's 0.9");
        assert!(matches!(behind, OperatorError::Rejected { .. }), "{behind}");
        assert!(behind.to_string().contains("exact_match"), "{behind}");
        let level = crate::operators::Operator::Gate
            .run(&ctx, gate(0.89))
            .await
            .expect("within 0.02 of the champion");
        assert_eq!(level.outputs["passed"], json!(true));
    }
}
