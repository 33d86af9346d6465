//! The default retry notice (`[alerts] email_on_retry`): when a try fails and another is
//! scheduled, a short standard mail with the task, the try that failed out of how many, its
//! error, when the next try runs and a link to the run. Sent once per failed try, however
//! many processes listen (`Store::claim_once`). `notify` is the whole job for one try;
//! `run` listens for tries that go up for retry, and `catch_up` covers a whole run (what
//! `sluice run` calls at the end, in case the listener had not got to the last one).
//! Under `serve`, `catch_up_since` covers the last hour's retries of running runs when a new
//! leader starts or events may have been missed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Result;
use super::standard_mail::{self, CATCH_UP, StandardMailConfig};
use crate::catalog::versions::Versions;
use crate::lifecycle::TaskState;
use crate::operators::alert::{Headline, Mailer, Severity, escape_html};
use crate::secrets::Masker;
use crate::store::{Store, StoreEvent};

/// What a retry notice says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    pub workflow_id: String,
    pub run_id: String,
    pub task_id: String,
    /// The try that failed.
    pub try_number: u32,
    /// Its number counted from the task's last clear (`Store::attempt_of`): a cleared task
    /// gets all its tries again, so "try 1 of 3" follows "try 3 of 3" after a clear.
    pub attempt: u32,
    /// How many tries the task has in all; `None` when its workflow version cannot be read.
    pub total_tries: Option<u32>,
    pub error: String,
    /// When the next try may start.
    pub next_try_at: Option<DateTime<Utc>>,
    pub url: String,
}

impl RetryNotice {
    fn tries(&self) -> String {
        let count = match self.total_tries {
            Some(total) => format!("try {} of {total}", self.attempt),
            None => format!("try {}", self.attempt),
        };
        if self.attempt == self.try_number {
            count
        } else {
            format!("{count} since the task was cleared")
        }
    }

    pub fn subject(&self) -> String {
        format!(
            "[warning] Task {}.{} failed {}, retrying (run {})",
            self.workflow_id,
            self.task_id,
            self.tries(),
            self.run_id
        )
    }

    pub fn text(&self) -> String {
        let next = self
            .next_try_at
            .map_or_else(|| "soon".to_owned(), |at| at.to_rfc3339());
        format!(
            "Task {task} of workflow {workflow} failed ({tries}) and will be tried again.\n\n\
             Run: {run}\nTask: {task}\nTry: {tries}\nError: {error}\nNext try: {next}\n\n{url}\n",
            task = self.task_id,
            workflow = self.workflow_id,
            tries = self.tries(),
            run = self.run_id,
            error = self.error,
            url = self.url,
        )
    }

    pub fn html(&self) -> String {
        let next = self
            .next_try_at
            .map_or_else(|| "soon".to_owned(), |at| at.to_rfc3339());
        format!(
            "<!DOCTYPE html>\n<html><body>\n<p><strong style=\"color:#d97706\">WARNING</strong>: \
             task <strong>{task}</strong> of workflow <strong>{workflow}</strong> failed \
             ({tries}) and will be tried again.</p>\n<ul>\n<li>Run: {run}</li>\n\
             <li>Error: <code>{error}</code></li>\n<li>Next try: {next}</li>\n</ul>\n\
             <p><a href=\"{url}\">Open the run</a></p>\n</body></html>\n",
            task = escape_html(&self.task_id),
            workflow = escape_html(&self.workflow_id),
            tries = escape_html(&self.tries()),
            run = escape_html(&self.run_id),
            error = escape_html(&self.error),
            next = escape_html(&next),
            url = escape_html(&self.url),
        )
    }
}

#[derive(Clone)]
pub struct RetryMailService {
    store: Store,
    mailer: Mailer,
    config: StandardMailConfig,
    masker: Arc<Masker>,
    versions: Arc<Versions>,
}

impl RetryMailService {
    pub fn new(
        store: Store,
        mailer: Mailer,
        config: StandardMailConfig,
        masker: Arc<Masker>,
        versions: Arc<Versions>,
    ) -> Self {
        RetryMailService {
            store,
            mailer,
            config,
            masker,
            versions,
        }
    }

    /// Sends the retry notice of try `try_number` of `task_id` if that try is up for retry
    /// and no process has sent its notice yet; returns whether this call sent it. A send that
    /// fails is logged and left to a later call.
    pub async fn notify(&self, run_id: &str, task_id: &str, try_number: u32) -> Result<bool> {
        if self.config.recipients.is_empty() {
            return Ok(false);
        }
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(false);
        };
        let tries = self.store.task_instances(run_id).await?;
        let Some(failed) = tries.iter().find(|ti| {
            ti.task_id == task_id
                && ti.try_number == try_number
                && ti.state == TaskState::UpForRetry
        }) else {
            return Ok(false);
        };
        // `:` cannot appear in a workflow id, so this never meets an alert's default key;
        // run ids and task ids hold no `/`.
        let once = format!("once:retry-mail:{run_id}/{task_id}/{try_number}");
        if !self.store.claim_once(&once, Utc::now()).await? {
            return Ok(false);
        }
        let attempt = self.store.attempt_of(failed.id, try_number).await?;
        let next_try_at = tries
            .iter()
            .find(|ti| ti.task_id == task_id && ti.try_number == try_number + 1)
            .and_then(|ti| ti.not_before);
        let total_tries = match self.versions.get(&self.store, &run.version_hash).await {
            Ok(workflow) => workflow
                .all_tasks()
                .find(|task| task.id == task_id)
                .map(|task| task.retries.saturating_add(1)),
            Err(error) => {
                warn!(run_id, %error, "The retry notice leaves out the number of tries.");
                None
            }
        };
        let notice = RetryNotice {
            workflow_id: run.workflow_id,
            run_id: run_id.to_owned(),
            task_id: task_id.to_owned(),
            try_number,
            attempt,
            total_tries,
            error: failed.error.clone().unwrap_or_default(),
            next_try_at,
            url: crate::config::run_url(&self.config.base_url, run_id),
        };
        let subject = notice.subject();
        let headline = Headline {
            subject: &subject,
            severity: Severity::Warning,
        };
        let sent = standard_mail::send(
            &self.mailer,
            &self.masker,
            &self.config,
            "alerts.email_on_retry",
            &headline,
            &notice.text(),
            &notice.html(),
        )
        .await;
        match sent {
            Ok((message_id, reply)) => {
                info!(run_id, task_id, try_number, %message_id, %reply, "Retry notice sent.");
                Ok(true)
            }
            Err(error) => {
                warn!(run_id, task_id, try_number, %error, "The retry notice could not be sent.");
                self.store.forget_once(&once).await?;
                Ok(false)
            }
        }
    }

    /// Sends the notices of every try of `run_id` that is up for retry and has none yet;
    /// returns how many this call sent.
    pub async fn catch_up(&self, run_id: &str) -> Result<usize> {
        let mut sent = 0;
        for ti in self.store.task_instances(run_id).await? {
            if ti.state == TaskState::UpForRetry
                && self.notify(run_id, &ti.task_id, ti.try_number).await?
            {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Sends the notices of tries that went up for retry since `since` in runs still running
    /// and have none yet (they failed while leadership changed hands, or while no `serve`
    /// ran); returns how many this call sent.
    pub async fn catch_up_since(&self, since: DateTime<Utc>) -> Result<usize> {
        let mut sent = 0;
        for (run_id, task_id, try_number) in self.store.retries_since(since).await? {
            if self.notify(&run_id, &task_id, try_number).await? {
                sent += 1;
            }
        }
        info!(sent, "Checked for retry notices not sent yet.");
        Ok(sent)
    }

    /// Sends the notice of every try that goes up for retry (only in `only_run`, when given),
    /// until `shutdown`. A notice being sent when `shutdown` fires is finished first. Without
    /// `only_run` (a leader), it first catches up on the last hour's, and again whenever
    /// events may have been missed.
    pub async fn run(
        self,
        mut events: mpsc::UnboundedReceiver<StoreEvent>,
        only_run: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        if only_run.is_none() {
            self.catch_up_since(Utc::now() - CATCH_UP).await?;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = events.recv() => match event {
                    Some(StoreEvent::Missed) if only_run.is_none() => {
                        self.catch_up_since(Utc::now() - CATCH_UP).await?;
                    }
                    Some(StoreEvent::TaskStates { run_id, changes })
                        if only_run.as_ref().is_none_or(|only| *only == run_id) =>
                    {
                        for change in changes.iter().filter(|c| c.state == TaskState::UpForRetry) {
                            self.notify(&run_id, &change.task_id, change.try_number).await?;
                        }
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

    fn notice() -> RetryNotice {
        RetryNotice {
            workflow_id: "etl".into(),
            run_id: "r1".into(),
            task_id: "load".into(),
            try_number: 1,
            attempt: 1,
            total_tries: Some(3),
            error: "the command exited with code 3 <stderr>".into(),
            next_try_at: Some(
                DateTime::parse_from_rfc3339("2026-11-27T10:00:30Z")
                    .expect("a time")
                    .with_timezone(&Utc),
            ),
            url: "https://sluice.example.com/runs/r1".into(),
        }
    }

    #[test]
    fn the_notice_names_the_try_the_error_and_the_next_try() {
        let notice = notice();
        assert_eq!(
            notice.subject(),
            "[warning] Task etl.load failed try 1 of 3, retrying (run r1)"
        );
        let text = notice.text();
        for part in [
            "Try: try 1 of 3",
            "Error: the command exited with code 3 <stderr>",
            "Next try: 2026-11-27T10:00:30+00:00",
            "https://sluice.example.com/runs/r1",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let html = notice.html();
        assert!(html.contains("code 3 &lt;stderr&gt;"), "{html}");
        assert!(!html.contains("<stderr>"), "{html}");
    }

    #[test]
    fn without_the_workflow_the_notice_leaves_out_the_total() {
        let notice = RetryNotice {
            total_tries: None,
            next_try_at: None,
            ..notice()
        };
        assert!(notice.subject().contains("failed try 1, retrying"));
        assert!(notice.text().contains("Next try: soon"));
    }

    /// Regression: after a clear, the notice said "try 5 of 4": it counted tries from the
    /// first, while the cleared task's retries count from the clear.
    #[test]
    fn after_a_clear_the_notice_counts_from_the_clear() {
        let notice = RetryNotice {
            try_number: 5,
            attempt: 1,
            total_tries: Some(4),
            ..notice()
        };
        assert_eq!(
            notice.subject(),
            "[warning] Task etl.load failed try 1 of 4 since the task was cleared, retrying (run r1)"
        );
        assert!(
            notice
                .text()
                .contains("Try: try 1 of 4 since the task was cleared")
        );
    }
}
