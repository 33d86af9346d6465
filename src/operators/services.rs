//! What operators use beyond their own try, built once per process and shared by every try:
//! the database, the mailer, the artifact store, tracking, run links and the launcher of other
//! runs.
//! Operators sit below the catalog and the runtime, so what lives above them (starting runs)
//! reaches them as a trait object ([`RunLauncher`]), and everything else as a handle of a layer
//! below. A service a process does not have is `None`, and the operator that needs it says so.

use std::sync::Arc;

use super::RunLauncher;
use super::alert::Mailer;
use crate::artifacts::Artifacts;
use crate::store::Store;

#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The database: alert dedup state, and what later operators keep there. `None` only
    /// outside a runtime (unit tests).
    pub store: Option<Store>,
    /// The mailer for `[smtp]`; `None` when `sluice.toml` has no `[smtp]`.
    pub mailer: Option<Mailer>,
    /// The blob store of artifacts, for operators that read or keep files beyond their own
    /// try's folder. `None` outside a runtime.
    pub artifacts: Option<Artifacts>,
    /// Starting and watching other runs (`trigger`); `None` where there is no catalog
    /// (`sluice run`).
    pub runs: Option<Arc<dyn RunLauncher>>,
    /// The base of links to run pages (`Config::base_url`).
    pub base_url: String,
    /// Experiment tracking and the model registry (`[tracking]`: built in or MLflow), for
    /// `track` and `deploy`. `None` outside a runtime.
    pub tracking: Option<Arc<crate::tracking::Tracking>>,
}

impl Services {
    /// The link to a run's page.
    pub fn run_url(&self, run_id: &str) -> String {
        crate::config::run_url(&self.base_url, run_id)
    }
}
