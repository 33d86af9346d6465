//! Experiment tracking and the model registry behind one interface, [`Tracking`], over two
//! backends: the built-in one (Sluice's own database through `store::tracking`, files in the
//! artifact store) and MLflow (its REST API, `mlflow`). Operators reach it through the
//! services handle; the API and `sluice registry` read through it too. `diff` compares two
//! versions' files (a line diff for text, a key-level diff for YAML and JSON); `compare` a
//! tracking run's lineage with a run started to reproduce it.
//!
//! Aliases move only through [`Tracking::set_alias`] and [`Tracking::delete_alias`], and every
//! move is recorded with who made it (`run:<run id>/<task>` or `user:<name>`).

use std::collections::BTreeMap;

pub mod builtin;
pub mod compare;
pub mod diff;
pub mod mlflow;
pub mod query;

pub use crate::store::tracking::{
    AliasMove, Comparison, Condition, ExperimentRecord, ExperimentSummary, FilterValue, InputFile,
    Lineage, LogBatch, MetricPoint, ModelVersionRecord, NewTrackingRun, RegisteredModelRecord,
    RunField, RunOrder, RunPage, RunQuery, TrackedFile, TrackingRunDetail, TrackingRunRecord,
    TrackingStatus,
};
pub use builtin::Builtin;
pub use mlflow::Mlflow;

/// Why a tracking call failed. Messages are sentences a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Artifacts(#[from] crate::artifacts::ArtifactError),
    #[error("the MLflow server at {uri} failed on `{call}`: {message}")]
    Mlflow {
        uri: String,
        call: String,
        message: String,
    },
    #[error("model `{model}` has no version {version}")]
    UnknownVersion { model: String, version: u32 },
    #[error("there is no tracking run with id `{0}`")]
    UnknownRun(String),
    #[error("version {version} of model `{model}` has no file `{path}`")]
    UnknownFile {
        model: String,
        version: u32,
        path: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = TrackingError> = std::result::Result<T, E>;

/// A file of a model version's source, or one to keep with a tracking run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Its path inside the source (`prompts/assistant.yaml`), with `/` separators.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A model version to register.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionRequest {
    pub model: String,
    /// The tracking run that produced it.
    pub tracking_run_id: Option<String>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub files: Vec<SourceFile>,
}

/// The most runs one page of a search holds (MLflow's own limit is higher).
pub const MAX_PAGE: u32 = 1_000;

/// The tracking interface: one of the two backends.
#[derive(Debug)]
pub enum Tracking {
    Builtin(Builtin),
    Mlflow(Mlflow),
}

/// Calls the same method on whichever backend this is.
macro_rules! each {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Tracking::Builtin(b) => b.$method($($arg),*).await,
            Tracking::Mlflow(m) => m.$method($($arg),*).await,
        }
    };
}

impl Tracking {
    /// An MLflow backend at `uri`, sending the value of the secret `token_secret` names (if
    /// any) as a bearer token: how `[tracking]` and a `track` task's own `tracking` build one.
    pub fn mlflow(
        http: reqwest::Client,
        uri: &str,
        token_secret: Option<&str>,
        secrets: &crate::secrets::Secrets,
    ) -> Result<Tracking> {
        let token = match token_secret {
            None => None,
            Some(name) => Some(
                secrets
                    .get(name)
                    .ok_or_else(|| {
                        TrackingError::Invalid(format!(
                            "`token_secret` names the secret `{name}`, which is not set; set \
                             {}{name}",
                            crate::secrets::ENV_PREFIX
                        ))
                    })?
                    .to_owned(),
            ),
        };
        Ok(Tracking::Mlflow(Mlflow::new(http, uri, token)))
    }

    /// `builtin` or `mlflow`, for pages and logs.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Tracking::Builtin(_) => "builtin",
            Tracking::Mlflow(_) => "mlflow",
        }
    }

    /// The experiment called `name`, created when there is none.
    pub async fn experiment(&self, name: &str) -> Result<ExperimentRecord> {
        check_name("experiment", name)?;
        each!(self.experiment(name))
    }

    /// The experiment with id `id`.
    pub async fn experiment_by_id(&self, id: &str) -> Result<Option<ExperimentRecord>> {
        each!(self.experiment_by_id(id))
    }

    /// Every experiment, by name.
    pub async fn experiments(&self) -> Result<Vec<ExperimentRecord>> {
        each!(self.experiments())
    }

    /// Starts a tracking run in an experiment, with its lineage.
    pub async fn start_run(&self, new: &NewTrackingRun) -> Result<TrackingRunRecord> {
        each!(self.start_run(new))
    }

    /// Logs params, metric points and tags.
    pub async fn log_batch(&self, run_id: &str, batch: &LogBatch) -> Result<()> {
        // Neither backend can keep NaN or infinity (JSON has no form for them).
        if let Some(bad) = batch.metrics.iter().find(|p| !p.value.is_finite()) {
            return Err(TrackingError::Invalid(format!(
                "metric `{}` has the value {}; only finite numbers can be logged",
                bad.key, bad.value
            )));
        }
        each!(self.log_batch(run_id, batch))
    }

    /// Keeps a file with a tracking run.
    pub async fn log_file(&self, run_id: &str, file: SourceFile) -> Result<TrackedFile> {
        each!(self.log_file(run_id, file))
    }

    /// Ends a tracking run.
    pub async fn end_run(&self, run_id: &str, status: TrackingStatus) -> Result<()> {
        each!(self.end_run(run_id, status))
    }

    /// A tracking run with its params, tags, latest metrics, files and lineage.
    pub async fn run(&self, run_id: &str) -> Result<Option<TrackingRunDetail>> {
        each!(self.run(run_id))
    }

    /// Every experiment with its number of runs (when the backend counts them cheaply) and
    /// its latest run's start, by name.
    pub async fn experiment_summaries(&self) -> Result<Vec<ExperimentSummary>> {
        each!(self.experiment_summaries())
    }

    /// One page of an experiment's tracking runs matching the query, filtered, sorted and
    /// paged by the backend (the database, or MLflow's `runs/search`).
    pub async fn search_runs(&self, experiment_id: &str, query: &RunQuery) -> Result<RunPage> {
        if query.max_results == 0 || query.max_results > MAX_PAGE {
            return Err(TrackingError::Invalid(format!(
                "a page holds 1 to {MAX_PAGE} runs, not {}",
                query.max_results
            )));
        }
        each!(self.search_runs(experiment_id, query))
    }

    /// Every tracking run of an experiment, newest first.
    pub async fn all_runs(&self, experiment_id: &str) -> Result<Vec<TrackingRunDetail>> {
        let mut query = RunQuery {
            max_results: MAX_PAGE,
            ..RunQuery::default()
        };
        let mut runs = Vec::new();
        loop {
            let page = self.search_runs(experiment_id, &query).await?;
            runs.extend(page.runs);
            match page.next_page_token {
                Some(token) => query.page_token = Some(token),
                None => return Ok(runs),
            }
        }
    }

    /// The content of a file kept with a tracking run.
    pub async fn run_file(&self, run_id: &str, name: &str) -> Result<Vec<u8>> {
        let run = self
            .run(run_id)
            .await?
            .ok_or_else(|| TrackingError::UnknownRun(run_id.to_owned()))?;
        let Some(file) = run.files.iter().find(|f| f.name == name) else {
            return Err(TrackingError::Invalid(format!(
                "tracking run `{run_id}` kept no file `{name}`"
            )));
        };
        match self {
            Tracking::Builtin(b) => b.run_file(file).await,
            Tracking::Mlflow(m) => m.run_file(run_id, file).await,
        }
    }

    /// Every point of one metric of a tracking run, in step order.
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        each!(self.metric_history(run_id, key))
    }

    /// The registered model called `name`, created when there is none.
    pub async fn create_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModelRecord> {
        check_name("model", name)?;
        each!(self.create_model(name, description))
    }

    pub async fn get_model(&self, name: &str) -> Result<Option<RegisteredModelRecord>> {
        each!(self.get_model(name))
    }

    /// Every registered model, by name.
    pub async fn models(&self) -> Result<Vec<RegisteredModelRecord>> {
        each!(self.models())
    }

    /// Registers the next version of a model (creating the model when new).
    pub async fn create_model_version(
        &self,
        request: VersionRequest,
    ) -> Result<ModelVersionRecord> {
        check_name("model", &request.model)?;
        each!(self.create_model_version(request))
    }

    pub async fn model_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ModelVersionRecord>> {
        each!(self.model_version(model, version))
    }

    /// Every version of a model, newest first.
    pub async fn model_versions(&self, model: &str) -> Result<Vec<ModelVersionRecord>> {
        each!(self.model_versions(model))
    }

    /// Sets one tag of a model version (a gate's result, `sluice.gate`), replacing its value.
    pub async fn set_version_tag(
        &self,
        model: &str,
        version: u32,
        key: &str,
        value: &str,
    ) -> Result<()> {
        if key.trim().is_empty() || key.len() > 250 || key.chars().any(char::is_control) {
            return Err(TrackingError::Invalid(format!(
                "the tag name `{}` must be 1 to 250 characters without control characters",
                key.escape_debug()
            )));
        }
        each!(self.set_version_tag(model, version, key, value))
    }

    /// The content of one file of a version's source.
    pub async fn version_file(&self, model: &str, version: u32, path: &str) -> Result<Vec<u8>> {
        each!(self.version_file(model, version, path))
    }

    /// Points `alias` at `version` and records the move.
    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: u32,
        moved_by: &str,
    ) -> Result<AliasMove> {
        check_name("alias", alias)?;
        each!(self.set_alias(model, alias, version, moved_by))
    }

    /// The version `alias` points at; `None` when it is not set ("no champion yet").
    pub async fn get_alias(&self, model: &str, alias: &str) -> Result<Option<ModelVersionRecord>> {
        each!(self.get_alias(model, alias))
    }

    /// Removes `alias` and records the move; `None` when it was not set.
    pub async fn delete_alias(
        &self,
        model: &str,
        alias: &str,
        moved_by: &str,
    ) -> Result<Option<AliasMove>> {
        each!(self.delete_alias(model, alias, moved_by))
    }

    /// Every move of every alias of `model`, oldest first.
    pub async fn alias_history(&self, model: &str) -> Result<Vec<AliasMove>> {
        each!(self.alias_history(model))
    }

    /// A line or key-level diff of the files two versions share by name (and those only one
    /// has).
    pub async fn diff_versions(
        &self,
        model: &str,
        old: u32,
        new: u32,
    ) -> Result<Vec<diff::FileDiff>> {
        let versions = [old, new];
        let mut records = Vec::with_capacity(2);
        for version in versions {
            records.push(self.model_version(model, version).await?.ok_or_else(|| {
                TrackingError::UnknownVersion {
                    model: model.to_owned(),
                    version,
                }
            })?);
        }
        let mut names: Vec<&str> = records
            .iter()
            .flat_map(|r| r.files.iter().map(|f| f.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut diffs = Vec::with_capacity(names.len());
        for name in names {
            let mut contents = Vec::with_capacity(2);
            for record in &records {
                let file = record.files.iter().find(|f| f.name == name);
                contents.push(match file {
                    Some(_) => Some(self.version_file(model, record.version, name).await?),
                    None => None,
                });
            }
            let new_content = contents.pop().flatten();
            let old_content = contents.pop().flatten();
            diffs.push(diff::diff_file(
                name,
                old_content.as_deref(),
                new_content.as_deref(),
            ));
        }
        Ok(diffs)
    }
}

/// Names of experiments, models and aliases: not empty, no control characters, and short
/// enough for MLflow's limits.
fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(TrackingError::Invalid(format!("the {kind} name is empty")));
    }
    if name.len() > 250 || name.chars().any(char::is_control) {
        return Err(TrackingError::Invalid(format!(
            "the {kind} name `{}` must be under 250 characters without control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}
