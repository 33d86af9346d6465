//! Compiled workflow versions by content hash: what a run pinned when it started. Runs look
//! their workflow up here, never in the live files, so editing a file never changes a run in
//! flight.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::dag::Workflow;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("workflow version `{0}` is not in the database")]
    Missing(String),
    #[error("stored workflow version `{hash}` no longer compiles: {message}")]
    Invalid { hash: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cache of compiled workflow versions, filled from the store on a miss.
#[derive(Debug, Default)]
pub struct Versions {
    compiled: RwLock<HashMap<String, Arc<Workflow>>>,
}

impl Versions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a workflow compiled elsewhere (the run command compiles before it starts a run).
    pub fn insert(&self, workflow: Arc<Workflow>) {
        self.write().insert(workflow.source_hash.clone(), workflow);
    }

    /// The compiled workflow for a version hash, compiling the stored source on a miss.
    pub async fn get(&self, store: &Store, hash: &str) -> Result<Arc<Workflow>, VersionError> {
        if let Some(found) = self.read().get(hash) {
            return Ok(found.clone());
        }
        let (path, source) = store
            .workflow_version(hash)
            .await?
            .ok_or_else(|| VersionError::Missing(hash.to_owned()))?;
        let workflow =
            super::compile_source(std::path::Path::new(&path), &source).map_err(|diagnostics| {
                VersionError::Invalid {
                    hash: hash.to_owned(),
                    message: diagnostics
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            })?;
        let workflow = Arc::new(workflow);
        self.write().insert(hash.to_owned(), workflow.clone());
        Ok(workflow)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Workflow>>> {
        self.compiled.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Workflow>>> {
        self.compiled.write().unwrap_or_else(|p| p.into_inner())
    }
}
