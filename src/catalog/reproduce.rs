//! Reproducing a tracking run or a model version: the tracking run's lineage names the
//! workflow run that produced it, whose workflow starts again with that run's params (the
//! re-run request, `RunRequest::again`), and the new run records what it reproduces. Its
//! `report` compares the two: the workflow version the new run pinned with the original's,
//! and each input file's SHA-256 once the new run's own `track` task has recorded them.

use serde::Serialize;

use super::launch::{LaunchError, RunRequest, prepare};
use super::live::{Catalog, Entry};
use crate::store::{Reproduces, RunRecord, Store, StoreError};
use crate::tracking::compare::{Comparison, compare};
use crate::tracking::{Tracking, TrackingError};

/// What to reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Original {
    TrackingRun(String),
    /// A model version: the tracking run that registered it.
    ModelVersion {
        model: String,
        version: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    /// No such tracking run or model version.
    #[error("{0}")]
    NotFound(String),
    /// The lineage cannot lead to a run: it names no workflow run.
    #[error("{0}")]
    NoWorkflowRun(String),
    /// The workflow run or its workflow is gone.
    #[error("{0}")]
    Gone(String),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Tracking(TrackingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TrackingError> for ReproduceError {
    fn from(error: TrackingError) -> Self {
        match error {
            TrackingError::UnknownRun(_) | TrackingError::UnknownVersion { .. } => {
                ReproduceError::NotFound(error.to_string())
            }
            TrackingError::Store(e) => ReproduceError::Store(e),
            other => ReproduceError::Tracking(other),
        }
    }
}

/// An original found, ready to start again.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub tracking_run_id: String,
    /// The workflow run the tracking run's lineage names.
    pub run: RunRecord,
    /// Its workflow as loaded now.
    pub entry: Entry,
}

/// Follows `original` to the workflow run and the workflow to start again.
pub async fn resolve(
    store: &Store,
    catalog: &Catalog,
    tracking: &Tracking,
    original: &Original,
) -> Result<Resolved, ReproduceError> {
    let tracking_run_id = match original {
        Original::TrackingRun(id) => id.clone(),
        Original::ModelVersion { model, version } => {
            let found = tracking
                .model_version(model, *version)
                .await?
                .ok_or_else(|| TrackingError::UnknownVersion {
                    model: model.clone(),
                    version: *version,
                })?;
            found.tracking_run_id.ok_or_else(|| {
                ReproduceError::NoWorkflowRun(format!(
                    "version {version} of model `{model}` names no tracking run, so there is \
                     no run to reproduce"
                ))
            })?
        }
    };
    let detail = tracking
        .run(&tracking_run_id)
        .await?
        .ok_or_else(|| TrackingError::UnknownRun(tracking_run_id.clone()))?;
    let lineage = detail.run.lineage;
    let Some(run_id) = lineage.run_id else {
        return Err(ReproduceError::NoWorkflowRun(format!(
            "tracking run `{tracking_run_id}` records no workflow run (it was not logged by a \
             `track` task), so there is nothing to start again"
        )));
    };
    let run = store.run(&run_id).await?.ok_or_else(|| {
        ReproduceError::Gone(format!(
            "run `{run_id}`, which logged tracking run `{tracking_run_id}`, is no longer in the \
             database, so its params are unknown"
        ))
    })?;
    let entry = catalog.get(&run.workflow_id).ok_or_else(|| {
        ReproduceError::Gone(format!(
            "workflow `{}`, which logged tracking run `{tracking_run_id}`, is no longer loaded; \
             restore its file to reproduce the run",
            run.workflow_id
        ))
    })?;
    Ok(Resolved {
        tracking_run_id,
        run,
        entry,
    })
}

/// Starts a run of the resolved workflow with the original run's params, recording what it
/// reproduces; returns its id.
pub async fn start(
    store: &Store,
    resolved: &Resolved,
    trigger: &str,
    triggered_by: Option<String>,
) -> Result<String, ReproduceError> {
    let request = RunRequest::again(
        &resolved.entry.workflow,
        &resolved.run,
        Default::default(),
        trigger,
        triggered_by,
    );
    let path = resolved.entry.path.display().to_string();
    let prepared = prepare(store, &resolved.entry.workflow, &path, request).await?;
    let reproduces = Reproduces {
        run_id: resolved.run.id.clone(),
        tracking_run_id: resolved.tracking_run_id.clone(),
    };
    store
        .create_reproduction(&prepared.run, &prepared.tasks, &reproduces)
        .await?;
    Ok(prepared.run.id)
}

/// What a reproduction's page and `GET /api/v1/runs/{id}` say about it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The original workflow run.
    pub run_id: String,
    /// The original tracking run.
    pub tracking_run_id: String,
    /// The tracking run this run's own `track` task logged, once it has.
    pub reproduced_tracking_run_id: Option<String>,
    /// `None` when the original's lineage cannot be read (see `problem`).
    pub comparison: Option<Comparison>,
    /// Why there is no comparison, or why the inputs are not compared yet.
    pub problem: Option<String>,
}

/// The comparison of `run` with what it reproduces; `None` for a run started any other way.
pub async fn report(
    store: &Store,
    tracking: Option<&Tracking>,
    run: &RunRecord,
) -> Result<Option<Report>, StoreError> {
    let Some(reproduces) = store.reproduces(&run.id).await? else {
        return Ok(None);
    };
    let mut report = Report {
        run_id: reproduces.run_id,
        tracking_run_id: reproduces.tracking_run_id,
        reproduced_tracking_run_id: None,
        comparison: None,
        problem: None,
    };
    let Some(tracking) = tracking else {
        report.problem = Some("this server has no tracking backend to read lineage from".into());
        return Ok(Some(report));
    };
    let original = match tracking.run(&report.tracking_run_id).await {
        Ok(Some(detail)) => detail.run.lineage,
        Ok(None) => {
            report.problem = Some(format!(
                "the original tracking run `{}` no longer exists",
                report.tracking_run_id
            ));
            return Ok(Some(report));
        }
        Err(e) => {
            report.problem = Some(format!("the original's lineage cannot be read: {e}"));
            return Ok(Some(report));
        }
    };
    let task = original.task_id.clone().unwrap_or_default();
    report.reproduced_tracking_run_id = tracked_by(store, &run.id, &task).await?;
    let mut inputs = None;
    match &report.reproduced_tracking_run_id {
        None => {
            report.problem = Some(format!(
                "input files are compared once task `{task}` of this run has tracked them"
            ));
        }
        Some(id) => match tracking.run(id).await {
            Ok(Some(detail)) => inputs = Some(detail.run.lineage.inputs),
            Ok(None) => report.problem = Some(format!("tracking run `{id}` no longer exists")),
            Err(e) => report.problem = Some(format!("this run's lineage cannot be read: {e}")),
        },
    }
    report.comparison = Some(compare(&original, &run.version_hash, inputs.as_deref()));
    Ok(Some(report))
}

/// The tracking run that task `task` of run `run_id` logged: its latest successful try's
/// `tracking_run_id` output.
async fn tracked_by(store: &Store, run_id: &str, task: &str) -> Result<Option<String>, StoreError> {
    let tries = store.task_instances(run_id).await?;
    Ok(tries
        .iter()
        .filter(|t| t.task_id == task && t.state == crate::lifecycle::TaskState::Success)
        .max_by_key(|t| t.try_number)
        .and_then(|t| t.outputs.as_ref())
        .and_then(|o| o.get("tracking_run_id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::{Artifacts, Limits, Location};
    use crate::store::StoreConfig;
    use crate::tracking::{Builtin, Lineage, NewTrackingRun};

    /// A tracking run logged from outside a workflow names no run to start again, and one
    /// whose run is gone cannot give its params: both say so.
    #[tokio::test]
    async fn lineage_without_a_run_or_with_a_gone_run_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        let artifacts = Artifacts::open(
            &Location::Folder(dir.path().join("blobs")),
            Limits::default(),
        )
        .expect("blobs");
        let tracking = Tracking::Builtin(Builtin::new(store.clone(), artifacts));
        let catalog = Catalog::open(dir.path());
        let experiment = tracking.experiment("e").await.expect("experiment");
        let start = |lineage: Lineage| NewTrackingRun {
            experiment_id: experiment.id.clone(),
            name: "outside".into(),
            lineage,
            started_at: chrono::Utc::now(),
        };
        let outside = tracking
            .start_run(&start(Lineage::default()))
            .await
            .expect("run");
        let refused = resolve(
            &store,
            &catalog,
            &tracking,
            &Original::TrackingRun(outside.id),
        )
        .await
        .expect_err("no workflow run");
        assert!(
            matches!(refused, ReproduceError::NoWorkflowRun(_)),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("records no workflow run"),
            "{refused}"
        );
        let gone = tracking
            .start_run(&start(Lineage {
                run_id: Some("deleted-run".into()),
                ..Lineage::default()
            }))
            .await
            .expect("run");
        let refused = resolve(&store, &catalog, &tracking, &Original::TrackingRun(gone.id))
            .await
            .expect_err("the run is gone");
        assert!(matches!(refused, ReproduceError::Gone(_)), "{refused}");
        let unknown = resolve(
            &store,
            &catalog,
            &tracking,
            &Original::ModelVersion {
                model: "m".into(),
                version: 3,
            },
        )
        .await
        .expect_err("no such version");
        assert!(matches!(unknown, ReproduceError::NotFound(_)), "{unknown}");
    }
}
