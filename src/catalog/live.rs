//! The live catalog of a workflows folder, as `serve` keeps it: the current good version of
//! each workflow, the files that do not validate (import errors), and reloads when files
//! change. A file that stops validating keeps its last good version in service.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Loaded, collect_files, load_all};
use crate::dag::Workflow;
use crate::diagnostic::Diagnostic;

/// A workflow in service and the file it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    pub workflow: Arc<Workflow>,
    pub path: PathBuf,
    /// The file no longer validates; this is its last good version.
    pub stale: bool,
}

/// A file that does not validate.
#[derive(Debug, Clone)]
pub struct ImportError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

/// What the catalog holds at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub workflows: BTreeMap<String, Entry>,
    pub import_errors: Vec<ImportError>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Workflows added or whose content changed.
    pub updated: Vec<String>,
    /// Workflows whose file was removed.
    pub removed: Vec<String>,
    /// Files that do not validate.
    pub failed: Vec<PathBuf>,
}

impl ReloadReport {
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The workflows of one folder, reloaded when its files change.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    fingerprint: RwLock<Fingerprint>,
}

impl Catalog {
    /// Loads every workflow file under `dir`. A missing folder is an empty catalog with one
    /// import error, so `serve` still starts and says why nothing is there.
    pub fn open(dir: &Path) -> Catalog {
        let catalog = Catalog {
            dir: dir.to_path_buf(),
            snapshot: RwLock::new(Arc::default()),
            fingerprint: RwLock::new(Vec::new()),
        };
        catalog.reload();
        catalog
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current state; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<Entry> {
        self.snapshot().workflows.get(id).cloned()
    }

    /// Reads the folder again and swaps in the result.
    pub fn reload(&self) -> ReloadReport {
        let (files, mut import_errors) = match collect_files(std::slice::from_ref(&self.dir)) {
            Ok(files) => (files, Vec::new()),
            Err(e) => (
                Vec::new(),
                vec![ImportError {
                    path: self.dir.clone(),
                    diagnostics: vec![Diagnostic::new(&self.dir, 0, 0, e.to_string())],
                }],
            ),
        };
        *self.fingerprint.write().unwrap_or_else(|p| p.into_inner()) = fingerprint(&files);
        let previous = self.snapshot();
        let previous_by_path: HashMap<&Path, &Entry> = previous
            .workflows
            .values()
            .map(|e| (e.path.as_path(), e))
            .collect();
        let mut workflows = BTreeMap::new();
        let mut report = ReloadReport::default();
        for Loaded { path, result } in load_all(&files) {
            match result {
                Ok(workflow) => {
                    let changed = previous
                        .workflows
                        .get(&workflow.id)
                        .is_none_or(|old| old.workflow.source_hash != workflow.source_hash);
                    if changed {
                        report.updated.push(workflow.id.clone());
                    }
                    let entry = Entry {
                        workflow: Arc::new(workflow),
                        path,
                        stale: false,
                    };
                    workflows.insert(entry.workflow.id.clone(), entry);
                }
                Err(diagnostics) => {
                    // Keep serving the last good version of this file, if there was one.
                    if let Some(old) = previous_by_path.get(path.as_path()) {
                        let kept = Entry {
                            stale: true,
                            ..(*old).clone()
                        };
                        workflows.entry(kept.workflow.id.clone()).or_insert(kept);
                    }
                    report.failed.push(path.clone());
                    import_errors.push(ImportError { path, diagnostics });
                }
            }
        }
        report.removed = previous
            .workflows
            .keys()
            .filter(|id| !workflows.contains_key(*id))
            .cloned()
            .collect();
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot {
            workflows,
            import_errors,
        });
        report
    }

    /// Whether any workflow file was added, removed or modified since the last reload.
    pub fn has_changed(&self) -> bool {
        let files = collect_files(std::slice::from_ref(&self.dir)).unwrap_or_default();
        *self.fingerprint.read().unwrap_or_else(|p| p.into_inner()) != fingerprint(&files)
    }

    /// Checks the folder every `interval` and reloads it when a file changed, calling
    /// `on_reload` with what changed, until `shutdown` fires.
    ///
    /// A stat of each file is cheap, and unlike inotify it also sees changes on network file
    /// systems and editors' rename-into-place saves.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
        on_reload: impl Fn(&ReloadReport) + Send,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let catalog = self.clone();
            let report = tokio::task::spawn_blocking(move || {
                catalog.has_changed().then(|| catalog.reload())
            })
            .await;
            match report {
                Ok(Some(report)) if !report.is_empty() => {
                    info!(
                        updated = ?report.updated,
                        removed = ?report.removed,
                        failed = report.failed.len(),
                        "Workflows reloaded."
                    );
                    on_reload(&report);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "Reloading the workflows folder failed."),
            }
        }
    }
}

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            (path.clone(), modified, meta.map_or(0, |m| m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "tasks:\n  a: { operator: noop }\n";
    const GOOD_V2: &str = "tasks:\n  a: { operator: noop }\n  b: { operator: noop }\n";
    const BROKEN: &str = "tasks:\n  a: { operator: nope }\n";

    #[test]
    fn a_broken_edit_keeps_the_last_good_version_until_fixed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("wf.yaml");
        std::fs::write(&file, GOOD).expect("write");
        std::fs::write(dir.path().join("other.yaml"), GOOD).expect("write");
        let catalog = Catalog::open(dir.path());
        let first = catalog.get("wf").expect("loaded");
        assert_eq!(first.workflow.tasks.len(), 1);
        assert!(catalog.snapshot().import_errors.is_empty());

        std::fs::write(&file, GOOD_V2).expect("write");
        let report = catalog.reload();
        assert_eq!(report.updated, ["wf"]);
        assert_eq!(
            catalog.get("wf").expect("still there").workflow.tasks.len(),
            2
        );

        std::fs::write(&file, BROKEN).expect("write");
        let report = catalog.reload();
        assert_eq!(report.failed, std::slice::from_ref(&file));
        let kept = catalog.get("wf").expect("last good version kept");
        assert!(kept.stale);
        assert_eq!(kept.workflow.tasks.len(), 2);
        let snapshot = catalog.snapshot();
        assert_eq!(snapshot.import_errors.len(), 1);
        assert!(
            snapshot.import_errors[0].diagnostics[0]
                .message
                .contains("nope")
        );
        assert!(
            catalog.get("other").is_some(),
            "one broken file never stops the others"
        );

        std::fs::write(&file, GOOD).expect("write");
        catalog.reload();
        let fixed = catalog.get("wf").expect("fixed");
        assert!(!fixed.stale);
        assert_eq!(fixed.workflow.tasks.len(), 1);
        assert!(catalog.snapshot().import_errors.is_empty());

        std::fs::remove_file(&file).expect("remove");
        assert!(catalog.has_changed());
        assert_eq!(catalog.reload().removed, ["wf"]);
        assert!(catalog.get("wf").is_none());
    }

    #[test]
    fn a_missing_folder_is_an_import_error_not_a_crash() {
        let catalog = Catalog::open(Path::new("/nonexistent/sluice/workflows"));
        let snapshot = catalog.snapshot();
        assert!(snapshot.workflows.is_empty());
        assert_eq!(snapshot.import_errors.len(), 1);
    }
}
