//! The default failure mail (`[alerts] email_on_failure`): when a run ends failed, a standard
//! mail to the configured addresses with the run, its failed tasks and their errors, and a
//! link to its page — no hooks needed in the workflow files. Sent once per end of a run (a
//! run whose tasks were cleared and that fails again mails again), however many processes
//! listen (`Store::claim_once`). `run_once(run_id)` is the whole job; `run` listens
//! for runs ending, and catches up on the last hour's when it starts (a new leader) or may have
//! missed events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Result;
use super::standard_mail::{self, CATCH_UP, StandardMailConfig};
use crate::lifecycle::RunState;
use crate::operators::alert::{Headline, Mailer, Severity, escape_html};
use crate::secrets::Masker;
use crate::store::{RunRecord, Store, StoreEvent};

/// The once-only key of a run's failure mail: one per end of the run, so a re-run (tasks
/// cleared after it ended) that fails again has a mail of its own. `:` cannot appear in a
/// workflow id, so this never meets an alert's default key.
fn failure_mail_key(run: &RunRecord) -> String {
    match run.rerun_started_at {
        None => format!("once:failure-mail:{}", run.id),
        Some(rerun) => format!(
            "once:failure-mail:{}:rerun:{}",
            run.id,
            rerun.timestamp_micros()
        ),
    }
}

#[derive(Clone)]
pub struct FailureMailService {
    store: Store,
    mailer: Mailer,
    config: StandardMailConfig,
    masker: Arc<Masker>,
}

impl FailureMailService {
    pub fn new(
        store: Store,
        mailer: Mailer,
        config: StandardMailConfig,
        masker: Arc<Masker>,
    ) -> Self {
        FailureMailService {
            store,
            mailer,
            config,
            masker,
        }
    }

    /// Sends the failure mail of `run_id` if the run ended failed and no process has sent it
    /// yet; returns whether this call sent it. A send that fails is logged and left to a
    /// later call.
    pub async fn run_once(&self, run_id: &str) -> Result<bool> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(false);
        };
        if run.state != RunState::Failed || self.config.recipients.is_empty() {
            return Ok(false);
        }
        let once = failure_mail_key(&run);
        if !self.store.claim_once(&once, chrono::Utc::now()).await? {
            return Ok(false);
        }
        let failures = self.store.task_failures(run_id).await?;
        let url = crate::config::run_url(&self.config.base_url, run_id);
        let subject = format!(
            "[critical] Workflow {} failed (run {run_id})",
            run.workflow_id
        );
        let mut text = format!(
            "Workflow {} failed.\n\nRun: {run_id}\nTrigger: {}\nLogical date: {}\n",
            run.workflow_id,
            run.trigger,
            run.logical_date.to_rfc3339()
        );
        if let (Some(started), Some(ended)) = (run.started_at, run.ended_at) {
            text.push_str(&format!(
                "Started: {}\nEnded: {}\n",
                started.to_rfc3339(),
                ended.to_rfc3339()
            ));
        }
        let mut rows = String::new();
        if !failures.is_empty() {
            text.push_str("\nFailed tasks:\n");
            for failure in &failures {
                text.push_str(&format!(
                    "- {} (try {}): {}\n",
                    failure.task_id, failure.try_number, failure.error
                ));
                rows.push_str(&format!(
                    "<li><strong>{}</strong> (try {}): <code>{}</code></li>\n",
                    escape_html(&failure.task_id),
                    failure.try_number,
                    escape_html(&failure.error)
                ));
            }
        }
        if let Some(error) = &run.error {
            text.push_str(&format!("\nRun error: {error}\n"));
        }
        text.push_str(&format!("\n{url}\n"));
        let html = format!(
            "<!DOCTYPE html>\n<html><body>\n<p><strong style=\"color:#dc2626\">CRITICAL</strong>: \
             workflow <strong>{workflow}</strong> failed (run {run}).</p>\n<ul>\n{rows}</ul>\n\
             <p>{error}</p>\n<p><a href=\"{url}\">Open the run</a></p>\n</body></html>\n",
            workflow = escape_html(&run.workflow_id),
            run = escape_html(run_id),
            error = escape_html(run.error.as_deref().unwrap_or("")),
            url = escape_html(&url),
        );
        let headline = Headline {
            subject: &subject,
            severity: Severity::Critical,
        };
        let sent = standard_mail::send(
            &self.mailer,
            &self.masker,
            &self.config,
            "alerts.email_on_failure",
            &headline,
            &text,
            &html,
        )
        .await;
        match sent {
            Ok((message_id, reply)) => {
                info!(run_id, %message_id, %reply, "Failure mail sent.");
                Ok(true)
            }
            Err(error) => {
                warn!(run_id, %error, "The failure mail could not be sent.");
                self.store.forget_once(&once).await?;
                Ok(false)
            }
        }
    }

    /// Sends the failure mails of runs that ended failed since `since` and have none yet
    /// (they ended while leadership changed hands, or while no `serve` ran); returns how many
    /// this call sent.
    pub async fn catch_up(&self, since: DateTime<Utc>) -> Result<usize> {
        let mut sent = 0;
        for run_id in self.store.runs_failed_since(since).await? {
            if self.run_once(&run_id).await? {
                sent += 1;
            }
        }
        info!(sent, "Checked for failure mails not sent yet.");
        Ok(sent)
    }

    /// Sends the failure mail of every run that ends failed, until `shutdown`; first, and
    /// whenever events may have been missed, those of the last hour that nobody sent.
    pub async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        self.catch_up(Utc::now() - CATCH_UP).await?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = events.recv() => match event {
                    Some(StoreEvent::RunState { run_id, state: RunState::Failed }) => {
                        self.run_once(&run_id).await?;
                    }
                    Some(StoreEvent::Missed) => {
                        self.catch_up(Utc::now() - CATCH_UP).await?;
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::TaskState;
    use crate::store::StoreConfig;
    use crate::store::conformance::{new_run, task};

    #[tokio::test]
    async fn each_end_of_a_cleared_run_has_its_own_failure_mail_key() {
        let store = Store::open(&StoreConfig::new("sqlite::memory:"))
            .await
            .expect("store");
        store
            .create_run(&new_run("r1"), &[task("a")])
            .await
            .expect("run");
        let end = |store: &Store| {
            let store = store.clone();
            async move {
                store
                    .set_run_state("r1", RunState::Queued, RunState::Running, None)
                    .await
                    .expect("start");
                store
                    .set_run_state("r1", RunState::Running, RunState::Failed, Some("no"))
                    .await
                    .expect("end");
                failure_mail_key(&store.run("r1").await.expect("read").expect("run"))
            }
        };
        // Only a task that has ended can be cleared.
        let a = store.task_instances("r1").await.expect("tries").remove(0);
        let mut batch = crate::store::DecisionBatch::default();
        batch.push(a.id, "a", 1, TaskState::Pending, TaskState::Skipped);
        store.apply_decisions("r1", &batch).await.expect("decide");
        let first = end(&store).await;
        assert_eq!(first, "once:failure-mail:r1");
        store
            .clear_tasks("r1", &["a".to_owned()])
            .await
            .expect("clear");
        let second = end(&store).await;
        assert_ne!(second, first, "the re-run's end mails again");
        assert_eq!(
            failure_mail_key(&store.run("r1").await.expect("read").expect("run")),
            second,
            "the same end keeps its key"
        );
    }
}
