//! The built-in tracking backend: rows in Sluice's own database (`store::tracking`), files in
//! the artifact store under their SHA-256, so a prompt registered twice is kept once.

use chrono::Utc;

use super::{
    AliasMove, ExperimentRecord, ExperimentSummary, LogBatch, MetricPoint, ModelVersionRecord,
    NewTrackingRun, RegisteredModelRecord, Result, RunPage, RunQuery, SourceFile, TrackedFile,
    TrackingError, TrackingRunDetail, TrackingRunRecord, TrackingStatus, VersionRequest,
};
use crate::artifacts::Artifacts;
use crate::store::Store;
use crate::store::tracking::NewModelVersion;

/// The process's store and artifact store.
#[derive(Debug, Clone)]
pub struct Builtin {
    store: Store,
    artifacts: Artifacts,
}

impl Builtin {
    pub fn new(store: Store, artifacts: Artifacts) -> Builtin {
        Builtin { store, artifacts }
    }

    pub(super) async fn experiment(&self, name: &str) -> Result<ExperimentRecord> {
        Ok(self.store.tracking_experiment(name).await?)
    }

    pub(super) async fn experiment_by_id(&self, id: &str) -> Result<Option<ExperimentRecord>> {
        Ok(self.store.tracking_experiment_by_id(id).await?)
    }

    pub(super) async fn experiments(&self) -> Result<Vec<ExperimentRecord>> {
        Ok(self.store.tracking_experiments().await?)
    }

    pub(super) async fn start_run(&self, new: &NewTrackingRun) -> Result<TrackingRunRecord> {
        Ok(self.store.start_tracking_run(new).await?)
    }

    pub(super) async fn log_batch(&self, run_id: &str, batch: &LogBatch) -> Result<()> {
        self.known_run(run_id).await?;
        Ok(self.store.log_tracking_batch(run_id, batch).await?)
    }

    pub(super) async fn log_file(&self, run_id: &str, file: SourceFile) -> Result<TrackedFile> {
        self.known_run(run_id).await?;
        let blob = self.artifacts.put_bytes(file.bytes).await?;
        let tracked = TrackedFile {
            name: file.name,
            sha256: blob.sha256,
            size: blob.size,
        };
        self.store.add_tracking_file(run_id, &tracked).await?;
        Ok(tracked)
    }

    pub(super) async fn end_run(&self, run_id: &str, status: TrackingStatus) -> Result<()> {
        self.known_run(run_id).await?;
        self.store
            .end_tracking_run(run_id, status, Utc::now())
            .await?;
        Ok(())
    }

    async fn known_run(&self, run_id: &str) -> Result<()> {
        match self.store.tracking_run_record(run_id).await? {
            Some(_) => Ok(()),
            None => Err(TrackingError::UnknownRun(run_id.to_owned())),
        }
    }

    pub(super) async fn run(&self, run_id: &str) -> Result<Option<TrackingRunDetail>> {
        Ok(self.store.tracking_run(run_id).await?)
    }

    pub(super) async fn experiment_summaries(&self) -> Result<Vec<ExperimentSummary>> {
        Ok(self.store.tracking_experiment_summaries().await?)
    }

    /// Pages are offsets into the sorted result; the token is the next page's offset.
    pub(super) async fn search_runs(
        &self,
        experiment_id: &str,
        query: &RunQuery,
    ) -> Result<RunPage> {
        let offset = match query.page_token.as_deref() {
            None | Some("") => 0,
            Some(token) => token.parse::<u64>().map_err(|_| {
                TrackingError::Invalid(format!(
                    "the page token `{token}` is damaged or from another search"
                ))
            })?,
        };
        let (runs, more, total) = self
            .store
            .search_tracking_runs(
                experiment_id,
                &query.conditions,
                query.order.as_ref(),
                query.max_results,
                offset,
            )
            .await?;
        let next_page_token = more.then(|| (offset + runs.len() as u64).to_string());
        Ok(RunPage {
            runs,
            next_page_token,
            total: Some(total),
        })
    }

    pub(super) async fn run_file(&self, file: &TrackedFile) -> Result<Vec<u8>> {
        Ok(self
            .artifacts
            .read_head(&file.sha256, file.size, file.size)
            .await?)
    }

    pub(super) async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        Ok(self.store.tracking_metric_history(run_id, key).await?)
    }

    pub(super) async fn create_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModelRecord> {
        Ok(self.store.registered_model(name, description).await?)
    }

    pub(super) async fn get_model(&self, name: &str) -> Result<Option<RegisteredModelRecord>> {
        Ok(self.store.get_registered_model(name).await?)
    }

    pub(super) async fn models(&self) -> Result<Vec<RegisteredModelRecord>> {
        Ok(self.store.registered_models().await?)
    }

    pub(super) async fn create_model_version(
        &self,
        request: VersionRequest,
    ) -> Result<ModelVersionRecord> {
        let mut files = Vec::with_capacity(request.files.len());
        for file in request.files {
            let blob = self.artifacts.put_bytes(file.bytes).await?;
            files.push(TrackedFile {
                name: file.name,
                sha256: blob.sha256,
                size: blob.size,
            });
        }
        Ok(self
            .store
            .create_model_version(&NewModelVersion {
                model: request.model,
                tracking_run_id: request.tracking_run_id,
                description: request.description,
                tags: request.tags,
                files,
            })
            .await?)
    }

    pub(super) async fn model_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ModelVersionRecord>> {
        Ok(self.store.model_version(model, version).await?)
    }

    pub(super) async fn model_versions(&self, model: &str) -> Result<Vec<ModelVersionRecord>> {
        Ok(self.store.model_versions(model).await?)
    }

    pub(super) async fn set_version_tag(
        &self,
        model: &str,
        version: u32,
        key: &str,
        value: &str,
    ) -> Result<()> {
        if self
            .store
            .set_model_version_tag(model, version, key, value)
            .await?
        {
            Ok(())
        } else {
            Err(TrackingError::UnknownVersion {
                model: model.to_owned(),
                version,
            })
        }
    }

    pub(super) async fn version_file(
        &self,
        model: &str,
        version: u32,
        path: &str,
    ) -> Result<Vec<u8>> {
        let record = self.model_version(model, version).await?.ok_or_else(|| {
            TrackingError::UnknownVersion {
                model: model.to_owned(),
                version,
            }
        })?;
        let file = record
            .files
            .iter()
            .find(|f| f.name == path)
            .ok_or_else(|| TrackingError::UnknownFile {
                model: model.to_owned(),
                version,
                path: path.to_owned(),
            })?;
        Ok(self
            .artifacts
            .read_head(&file.sha256, file.size, file.size)
            .await?)
    }

    pub(super) async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: u32,
        moved_by: &str,
    ) -> Result<AliasMove> {
        self.store
            .set_model_alias(model, alias, version, moved_by)
            .await?
            .ok_or_else(|| TrackingError::UnknownVersion {
                model: model.to_owned(),
                version,
            })
    }

    pub(super) async fn get_alias(
        &self,
        model: &str,
        alias: &str,
    ) -> Result<Option<ModelVersionRecord>> {
        match self.store.model_alias(model, alias).await? {
            Some(version) => self.model_version(model, version).await,
            None => Ok(None),
        }
    }

    pub(super) async fn delete_alias(
        &self,
        model: &str,
        alias: &str,
        moved_by: &str,
    ) -> Result<Option<AliasMove>> {
        Ok(self
            .store
            .delete_model_alias(model, alias, moved_by)
            .await?)
    }

    pub(super) async fn alias_history(&self, model: &str) -> Result<Vec<AliasMove>> {
        Ok(self.store.alias_history(model).await?)
    }
}
