//! What the standard mails of `[alerts]` (`email_on_failure`, `email_on_retry`) share: who
//! gets them, the base of their links, and sending one through the process's `Mailer`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::operators::LogSink;
use crate::operators::alert::{Envelope, Headline, Mailer, compose, parse_addresses};
use crate::operators::support::Retry;
use crate::secrets::Masker;

/// How far back a process that starts sending standard mails (a new leader) or that may have
/// missed events (a reconnect) looks for mails nobody sent: a takeover takes seconds, a
/// restart of every `serve` minutes; older failures are history, not news.
pub const CATCH_UP: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// How a standard mail is sent.
#[derive(Debug, Clone)]
pub struct StandardMailConfig {
    /// Who gets it.
    pub recipients: Vec<String>,
    /// The base of links to run pages.
    pub base_url: String,
    /// Attempts and backoff for transient SMTP failures. Default: 4 attempts from 1s.
    pub retry: Retry,
}

impl StandardMailConfig {
    pub fn new(recipients: Vec<String>, base_url: String) -> Self {
        StandardMailConfig {
            recipients,
            base_url,
            retry: Retry {
                attempts: 4,
                backoff: Duration::from_secs(1),
            },
        }
    }
}

/// Sends one standard mail to the configured recipients (`field` names their setting in
/// errors). Text and HTML are masked first: errors were masked when stored, masking again
/// costs little and guards the rest. Returns the message id and the server's reply, or why
/// it could not be sent (masked).
pub async fn send(
    mailer: &Mailer,
    masker: &Masker,
    config: &StandardMailConfig,
    field: &str,
    headline: &Headline<'_>,
    text: &str,
    html: &str,
) -> Result<(String, String), String> {
    let text = masker.mask(text).into_owned();
    let html = masker.mask(html).into_owned();
    let sent = async {
        let envelope = Envelope {
            to: parse_addresses(field, &config.recipients)?,
            ..Envelope::default()
        };
        let (message, message_id) =
            compose(mailer.from(), &envelope, headline, text, html, Vec::new())?;
        let reply = mailer
            .send(
                message,
                config.retry,
                &CancellationToken::new(),
                &LogSink::discard(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((message_id, reply))
    }
    .await;
    sent.map_err(|error| masker.mask(&error).into_owned())
}
