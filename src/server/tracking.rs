//! The read API of experiment tracking and the model registry: experiments, their tracking
//! runs (params, latest metrics, lineage), metric histories, models, versions, aliases (the
//! endpoint a serving layer polls) with their history, and the diff of two versions. Reads go
//! through `tracking::Tracking`, so they answer the same on the built-in backend and MLflow.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Error, ErrorBody, Json, Path, Query, Result};
use crate::tracking::{AliasMove, ModelVersionRecord, Tracking, TrackingError, TrackingRunDetail};

impl From<TrackingError> for Error {
    fn from(error: TrackingError) -> Self {
        match error {
            TrackingError::Store(e) => Error::Store(e),
            TrackingError::UnknownVersion { .. }
            | TrackingError::UnknownRun(_)
            | TrackingError::UnknownFile { .. } => Error::NotFound(error.to_string()),
            TrackingError::Invalid(message) => Error::BadRequest(message),
            other => Error::Internal(other.to_string()),
        }
    }
}

pub(super) fn tracking(state: &AppState) -> Result<&Tracking> {
    state.tracking.as_deref().ok_or_else(|| Error::Rejected {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: "this server has no tracking backend".into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentView {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentList {
    /// `builtin` or `mlflow`.
    pub backend: String,
    pub experiments: Vec<ExperimentView>,
}

/// A metric's latest point.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricView {
    pub value: f64,
    pub step: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InputView {
    pub path: String,
    pub sha256: String,
}

/// What produced a tracking run.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineageView {
    pub workflow_id: Option<String>,
    /// The workflow version (content hash) the run ran.
    pub version_hash: Option<String>,
    /// The workflow run, task and try.
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    pub try_number: Option<u32>,
    /// Each input file's SHA-256.
    pub inputs: Vec<InputView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackingRunView {
    pub id: String,
    pub experiment_id: String,
    pub name: String,
    /// `RUNNING`, `FINISHED`, `FAILED` or `KILLED`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, MetricView>,
    pub files: Vec<FileView>,
    pub lineage: LineageView,
}

impl From<TrackingRunDetail> for TrackingRunView {
    fn from(d: TrackingRunDetail) -> Self {
        let lineage = d.run.lineage;
        TrackingRunView {
            id: d.run.id,
            experiment_id: d.run.experiment_id,
            name: d.run.name,
            status: d.run.status.as_str().to_owned(),
            started_at: d.run.started_at,
            ended_at: d.run.ended_at,
            params: d.params,
            tags: d.tags,
            metrics: d
                .metrics
                .into_iter()
                .map(|(key, p)| {
                    (
                        key,
                        MetricView {
                            value: p.value,
                            step: p.step,
                            timestamp_ms: p.timestamp_ms,
                        },
                    )
                })
                .collect(),
            files: d
                .files
                .into_iter()
                .map(|f| FileView {
                    name: f.name,
                    sha256: f.sha256,
                    size: f.size,
                })
                .collect(),
            lineage: LineageView {
                workflow_id: lineage.workflow_id,
                version_hash: lineage.version_hash,
                run_id: lineage.run_id,
                task_id: lineage.task_id,
                try_number: lineage.try_number,
                inputs: lineage
                    .inputs
                    .into_iter()
                    .map(|i| InputView {
                        path: i.path,
                        sha256: i.sha256,
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackingRunList {
    pub runs: Vec<TrackingRunView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointView {
    pub value: f64,
    pub step: i64,
    pub timestamp_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricHistory {
    pub key: String,
    /// Every point, in step order.
    pub points: Vec<PointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelVersionView {
    pub model: String,
    pub version: u32,
    /// The tracking run that produced it.
    pub tracking_run_id: Option<String>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// The source's files, by content.
    pub files: Vec<FileView>,
    /// The aliases pointing at it now.
    pub aliases: Vec<String>,
}

impl From<ModelVersionRecord> for ModelVersionView {
    fn from(v: ModelVersionRecord) -> Self {
        ModelVersionView {
            model: v.model,
            version: v.version,
            tracking_run_id: v.tracking_run_id,
            description: v.description,
            tags: v.tags,
            files: v
                .files
                .into_iter()
                .map(|f| FileView {
                    name: f.name,
                    sha256: f.sha256,
                    size: f.size,
                })
                .collect(),
            aliases: v.aliases,
        }
    }
}

/// One move of an alias: set (`from` empty), moved, or deleted (`to` empty).
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasMoveView {
    pub alias: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub moved_at: DateTime<Utc>,
    /// `run:<run id>/<task>` or `user:<name>`.
    pub moved_by: String,
}

impl From<AliasMove> for AliasMoveView {
    fn from(m: AliasMove) -> Self {
        AliasMoveView {
            alias: m.alias,
            from: m.from,
            to: m.to,
            moved_at: m.moved_at,
            moved_by: m.moved_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDetail {
    pub name: String,
    pub description: String,
    /// Newest first.
    pub versions: Vec<ModelVersionView>,
    /// Alias → the version it points at.
    pub aliases: BTreeMap<String, u32>,
    /// Every move of every alias, oldest first.
    pub alias_history: Vec<AliasMoveView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older version.
    pub from: u32,
    /// The newer version.
    pub to: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDiff {
    pub model: String,
    pub from: u32,
    pub to: u32,
    /// Per file: `{name, change: {kind: unchanged | keys | lines | binary, …}}`; `keys` lists
    /// `{path, kind: added | removed | changed, old, new}`, `lines` lists
    /// `{kind: same | added | removed, text}`.
    #[schema(value_type = Vec<Object>)]
    pub files: Vec<serde_json::Value>,
}

/// Lists experiments.
#[utoipa::path(get, path = "/api/v1/tracking/experiments", tag = "tracking",
    responses((status = 200, body = ExperimentList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_experiments(
    State(state): State<AppState>,
) -> Result<Json<ExperimentList>> {
    let tracking = tracking(&state)?;
    let experiments = tracking.experiments().await?;
    Ok(Json(ExperimentList {
        backend: tracking.backend_name().to_owned(),
        experiments: experiments
            .into_iter()
            .map(|e| ExperimentView {
                id: e.id,
                name: e.name,
            })
            .collect(),
    }))
}

/// An experiment's tracking runs, newest first, with params and latest metrics.
#[utoipa::path(get, path = "/api/v1/tracking/experiments/{id}/runs", tag = "tracking",
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, body = TrackingRunList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn experiment_runs(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TrackingRunList>> {
    let tracking = tracking(&state)?;
    if tracking.experiment_by_id(&id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "there is no experiment with id `{id}`"
        )));
    }
    let runs = tracking.all_runs(&id).await?;
    Ok(Json(TrackingRunList {
        runs: runs.into_iter().map(TrackingRunView::from).collect(),
    }))
}

/// A tracking run: params, tags, latest metrics, files and lineage.
#[utoipa::path(get, path = "/api/v1/tracking/runs/{id}", tag = "tracking",
    params(("id" = String, Path, description = "Tracking run id")),
    responses((status = 200, body = TrackingRunView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_tracking_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TrackingRunView>> {
    let run = tracking(&state)?
        .run(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("there is no tracking run with id `{id}`")))?;
    Ok(Json(run.into()))
}

/// Every point of one metric of a tracking run.
#[utoipa::path(get, path = "/api/v1/tracking/runs/{id}/metrics/{key}", tag = "tracking",
    params(("id" = String, Path, description = "Tracking run id"), ("key" = String, Path, description = "Metric name")),
    responses((status = 200, body = MetricHistory), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn metric_history(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<MetricHistory>> {
    let tracking = tracking(&state)?;
    if tracking.run(&id).await?.is_none() {
        return Err(Error::NotFound(format!(
            "there is no tracking run with id `{id}`"
        )));
    }
    let points = tracking.metric_history(&id, &key).await?;
    Ok(Json(MetricHistory {
        key,
        points: points
            .into_iter()
            .map(|p| PointView {
                value: p.value,
                step: p.step,
                timestamp_ms: p.timestamp_ms,
            })
            .collect(),
    }))
}

/// Lists registered models.
#[utoipa::path(get, path = "/api/v1/models", tag = "registry",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>> {
    let models = tracking(&state)?.models().await?;
    Ok(Json(ModelList {
        models: models
            .into_iter()
            .map(|m| ModelView {
                name: m.name,
                description: m.description,
            })
            .collect(),
    }))
}

/// A registered model with its versions, aliases and alias history.
#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "registry",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelDetail>> {
    let tracking = tracking(&state)?;
    let model = tracking
        .get_model(&name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("there is no registered model `{name}`")))?;
    let versions = tracking.model_versions(&name).await?;
    let aliases = versions
        .iter()
        .flat_map(|v| v.aliases.iter().map(|a| (a.clone(), v.version)))
        .collect();
    let alias_history = tracking
        .alias_history(&name)
        .await?
        .into_iter()
        .map(AliasMoveView::from)
        .collect();
    Ok(Json(ModelDetail {
        name: model.name,
        description: model.description,
        versions: versions.into_iter().map(ModelVersionView::from).collect(),
        aliases,
        alias_history,
    }))
}

/// One version of a model.
#[utoipa::path(get, path = "/api/v1/models/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number")),
    responses((status = 200, body = ModelVersionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_model_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<Json<ModelVersionView>> {
    let found = tracking(&state)?
        .model_version(&name, version)
        .await?
        .ok_or(TrackingError::UnknownVersion {
            model: name,
            version,
        })?;
    Ok(Json(found.into()))
}

/// The version an alias points at: what a serving layer polls to route traffic. 404 with a
/// clear error while the alias is not set.
#[utoipa::path(get, path = "/api/v1/models/{name}/aliases/{alias}", tag = "registry",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias, e.g. champion")),
    responses((status = 200, body = ModelVersionView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<ModelVersionView>> {
    let found = tracking(&state)?
        .get_alias(&name, &alias)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "model `{name}` has no alias `{alias}`; no version has been given it yet"
            ))
        })?;
    Ok(Json(found.into()))
}

/// What changed between two versions: a key-level diff of YAML and JSON files, a line diff
/// of other text.
#[utoipa::path(get, path = "/api/v1/models/{name}/diff", tag = "registry",
    params(("name" = String, Path, description = "Model name"), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn diff_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<VersionDiff>> {
    let diffs = tracking(&state)?
        .diff_versions(&name, query.from, query.to)
        .await?;
    let files = diffs
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Json(VersionDiff {
        model: name,
        from: query.from,
        to: query.to,
        files,
    }))
}
