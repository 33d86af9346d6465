//! Alert mail: the shared SMTP `Mailer` (built once from `[smtp]`, or per task), the message
//! (a text part, an HTML part, attachments) and sending it with retries on transient failures.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use tokio_util::sync::CancellationToken;

use super::{Severity, escape_html};
use crate::config::{SmtpConfig, SmtpTls};
use crate::duration::HumanDuration;
use crate::operators::support::{Retry, error_chain};
use crate::operators::{LogSink, OpContext, OperatorError, Outputs, Result};
use crate::retry::{Failure, RetryError, Retrying, Succeeded, SystemClock};
use crate::secrets::Secrets;

/// One attachment may be at most this large; mail servers refuse far smaller messages anyway.
const MAX_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;

/// A mailer that cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("`{field}` is not a valid email address: `{value}` ({reason})")]
    Address {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "the SMTP password secret `{0}` is not set; set the environment variable `SLUICE_SECRET_{0}`"
    )]
    MissingSecret(String),
    #[error("cannot set up TLS for the SMTP server `{host}`: {reason}")]
    Tls { host: String, reason: String },
    #[error("cannot use `{path}` as the SMTP server's CA certificates (`smtp.ca_file`): {reason}")]
    CaFile { path: PathBuf, reason: String },
}

/// A resolved SMTP server: where, how, as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    /// Login and password.
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
    /// Extra root certificates (PEM) to trust for the server's certificate.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("from", &self.from)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl SmtpSettings {
    /// `[smtp]` with its password read from the named secret.
    pub fn from_config(
        config: &SmtpConfig,
        secrets: &Secrets,
    ) -> std::result::Result<Self, MailerError> {
        let password = match &config.password_secret {
            Some(name) => Some(
                secrets
                    .get(name)
                    .ok_or_else(|| MailerError::MissingSecret(name.clone()))?
                    .to_owned(),
            ),
            None => None,
        };
        Ok(SmtpSettings {
            host: config.host.clone(),
            port: config.port(),
            tls: config.tls,
            from: config.from.clone(),
            credentials: config
                .username
                .clone()
                .map(|user| (user, password.unwrap_or_default())),
            timeout: config.timeout.0,
            ca_file: config.ca_file.clone(),
        })
    }

    fn describe(&self) -> String {
        let tls = match self.tls {
            SmtpTls::Starttls => "STARTTLS",
            SmtpTls::Tls => "TLS",
            SmtpTls::None => "no TLS",
        };
        format!("{}:{} ({tls})", self.host, self.port)
    }
}

/// The certificates of a PEM file, to trust besides the public roots.
fn read_ca_file(path: &Path) -> std::result::Result<Certificate, MailerError> {
    let failed = |reason: String| MailerError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    // lettre reads a file without certificates as an empty list; that would trust nothing new.
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(failed("it holds no PEM certificate".to_owned()));
    }
    Certificate::from_pem(&pem).map_err(|e| failed(e.to_string()))
}

/// A connection pool to one SMTP server and the sender address. Cheap to clone; built once per
/// process from `[smtp]` and shared by every alert. Built inside a Tokio runtime: the pool
/// runs a task of its own.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> std::result::Result<Mailer, MailerError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| MailerError::Address {
                field: "from",
                value: settings.from.clone(),
                reason: e.to_string(),
            })?;
        let tls_parameters = || {
            let mut builder = TlsParameters::builder(settings.host.clone());
            if let Some(path) = &settings.ca_file {
                builder = builder.add_root_certificate(read_ca_file(path)?);
            }
            builder.build_rustls().map_err(|e| MailerError::Tls {
                host: settings.host.clone(),
                reason: e.to_string(),
            })
        };
        let tls = match settings.tls {
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            server: settings.describe(),
        })
    }

    /// The sender address.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Sends a message, trying again after transient failures (4xx replies, lost
    /// connections, timeouts), until `cancel` fires. Returns the server's final reply; retries
    /// are written to `log`.
    pub async fn send(
        &self,
        message: Message,
        retry: Retry,
        cancel: &CancellationToken,
        log: &LogSink,
    ) -> Result<String> {
        let attempt = |_| {
            let sending = self.transport.send(message.clone());
            async move {
                sending.await.map_err(|error| {
                    if is_transient(&error) {
                        Failure::transient(error)
                    } else {
                        Failure::Permanent(error)
                    }
                })
            }
        };
        let announce = |retrying: &Retrying<'_, lettre::transport::smtp::Error>| {
            log.system(format!(
                "Sending the email through {} failed ({}); trying again in {}.",
                self.server,
                error_chain(retrying.error),
                HumanDuration(retrying.wait)
            ));
        };
        match retry
            .policy()
            .run(&SystemClock, cancel, attempt, announce)
            .await
        {
            Ok(Succeeded {
                value: response, ..
            }) => {
                let reply = format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                );
                Ok(reply.trim().to_owned())
            }
            Err(
                RetryError::Refused { error, attempts } | RetryError::Exhausted { error, attempts },
            ) => {
                let tries = if attempts > 1 {
                    format!(" after {attempts} attempts")
                } else {
                    String::new()
                };
                Err(OperatorError::failed(format!(
                    "sending the email through {} failed{tries}: {}",
                    self.server,
                    error_chain(&error)
                )))
            }
            Err(RetryError::Cancelled) => Err(OperatorError::Cancelled),
            Err(RetryError::Interrupted(never)) => match never {},
        }
    }
}

/// 4xx replies and failures to reach or talk to the server may pass; 5xx replies and local
/// mistakes (a bad address, TLS refused, a certificate not trusted) will not.
fn is_transient(error: &lettre::transport::smtp::Error) -> bool {
    if error.is_transient() || error.is_timeout() {
        return true;
    }
    !(error.is_permanent()
        || error.is_client()
        || error.is_tls()
        || error.is_response()
        || failed_tls_handshake(error))
}

/// Whether a TLS handshake failed (an untrusted or mismatched certificate, no common
/// protocol). lettre reports it as a connection error, with the rustls error inside the I/O
/// error, where `source()` does not lead (an I/O error's source skips its payload).
fn failed_tls_handshake(error: &lettre::transport::smtp::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = cause {
        if current.is::<rustls::Error>() {
            return true;
        }
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    false
}

/// One or more addresses: a list, or one string with addresses separated by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipients {
    #[default]
    #[serde(skip)]
    None,
    /// `a@example.com` or `a@example.com, b@example.com`.
    One(String),
    /// `[a@example.com, b@example.com]`.
    Many(Vec<String>),
}

impl Recipients {
    fn addresses(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            Recipients::None => Vec::new(),
            Recipients::One(text) => text.split(',').collect(),
            Recipients::Many(items) => items.iter().map(String::as_str).collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A file attached to the mail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AttachmentSpec {
    /// A file path, relative to the workflow file's folder.
    Path(String),
    /// A file, or text made by the workflow (like a task's output), with a name.
    Detailed(AttachmentDetails),
}

/// An attachment with its details.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentDetails {
    /// A file to attach, relative to the workflow file's folder. Not together with `content`.
    #[serde(default)]
    pub path: Option<String>,
    /// Text to attach, like `{{ tasks.report.outputs.csv }}`. Needs `name`.
    #[serde(default)]
    pub content: Option<String>,
    /// The file name the reader sees. Default: the file's own name.
    #[serde(default)]
    pub name: Option<String>,
    /// The MIME type, like `text/csv`. Default: guessed from the name's extension.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// An SMTP server for this task only, instead of `[smtp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpOverride {
    /// The server's host name or address.
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The sender address. Default: `[smtp]`'s `from`.
    #[serde(default)]
    pub from: Option<String>,
    /// The login, when the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// The password, from a secret: `{{ secrets.SMTP_PASSWORD }}`.
    #[serde(default)]
    pub password: Option<String>,
    /// How long connecting and each SMTP command may take. Default `30s`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// The `email` of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// Recipients.
    #[serde(default)]
    pub to: Recipients,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Recipients,
    /// Hidden recipients: they get the mail, but no header names them.
    #[serde(default)]
    pub bcc: Recipients,
    /// The subject line. The severity is put in front: `[critical] …`.
    pub subject: String,
    /// The text of the mail (the plain-text part).
    #[serde(default)]
    pub body: String,
    /// The HTML part. Default: `body`, escaped, with the severity and a link to the run.
    #[serde(default)]
    pub html: Option<String>,
    /// Files or texts to attach.
    #[serde(default)]
    pub attachments: Vec<AttachmentSpec>,
    /// An SMTP server for this task instead of `[smtp]` in `sluice.toml`.
    #[serde(default)]
    pub smtp: Option<SmtpOverride>,
}

impl EmailSpec {
    /// Problems visible before templates are rendered.
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        if matches!(self.to, Recipients::None)
            && matches!(self.cc, Recipients::None)
            && matches!(self.bcc, Recipients::None)
        {
            return Err("`email` needs at least one recipient in `to`, `cc` or `bcc`".into());
        }
        for (i, attachment) in self.attachments.iter().enumerate() {
            if let AttachmentSpec::Detailed(d) = attachment {
                match (&d.path, &d.content) {
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "`email.attachments[{i}]` has both `path` and `content`; give one"
                        ));
                    }
                    (None, None) => {
                        return Err(format!(
                            "`email.attachments[{i}]` needs `path` or `content`"
                        ));
                    }
                    (None, Some(_)) if d.name.is_none() => {
                        return Err(format!(
                            "`email.attachments[{i}]` has `content` but no `name`"
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// What the mail says besides the spec: the severity, the held-back count, the run's link.
pub(super) struct Framing<'a> {
    pub severity: Severity,
    pub note: Option<&'a str>,
    pub run_line: &'a str,
    pub run_url: &'a str,
}

/// Sends the alert's email; returns its outputs.
pub(super) async fn send(
    ctx: &OpContext,
    spec: &EmailSpec,
    framing: &Framing<'_>,
    retry: Retry,
) -> Result<Outputs> {
    let own_mailer;
    let mailer = match (&spec.smtp, &ctx.services.mailer) {
        (Some(task_smtp), shared) => {
            let from = task_smtp
                .from
                .clone()
                .or_else(|| shared.as_ref().map(|m| m.from().to_string()))
                .ok_or_else(|| {
                    invalid("`email.smtp` needs `from` when `sluice.toml` has no `[smtp]`")
                })?;
            let settings = SmtpSettings {
                host: task_smtp.host.clone(),
                port: task_smtp
                    .port
                    .unwrap_or_else(|| task_smtp.tls.default_port()),
                tls: task_smtp.tls,
                from,
                credentials: task_smtp
                    .username
                    .clone()
                    .map(|u| (u, task_smtp.password.clone().unwrap_or_default())),
                timeout: task_smtp.timeout.map_or(Duration::from_secs(30), |t| t.0),
                ca_file: None,
            };
            own_mailer = Mailer::new(&settings).map_err(|e| invalid(e.to_string()))?;
            &own_mailer
        }
        (None, Some(shared)) => shared,
        (None, None) => {
            return Err(invalid(
                "there is no SMTP server to send the email through: add `[smtp]` to \
                 sluice.toml or `smtp` to this task's `email`",
            ));
        }
    };
    let envelope = Envelope {
        to: parse_all("email.to", &spec.to)?,
        cc: parse_all("email.cc", &spec.cc)?,
        bcc: parse_all("email.bcc", &spec.bcc)?,
    };
    let (to, cc, bcc) = (&envelope.to, &envelope.cc, &envelope.bcc);
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(invalid(
            "`email` has no recipients once rendered; `to`, `cc` and `bcc` are empty",
        ));
    }
    let text = text_part(&spec.body, framing);
    let html = match &spec.html {
        Some(html) => html.clone(),
        None => html_part(&spec.body, framing),
    };
    let mut names = Vec::new();
    let mut parts = Vec::new();
    for (i, attachment) in spec.attachments.iter().enumerate() {
        let (name, part) = attachment_part(&ctx.base_dir, i, attachment).await?;
        names.push(name);
        parts.push(part);
    }
    let subject = format!("[{}] {}", framing.severity, spec.subject.trim());
    let headline = Headline {
        subject: &subject,
        severity: framing.severity,
    };
    let (message, message_id) =
        compose(mailer.from(), &envelope, &headline, text, html, parts).map_err(invalid)?;
    let reply = mailer.send(message, retry, &ctx.cancel, &ctx.log).await?;
    ctx.log.system(format!(
        "Email {message_id} sent to {} recipient(s): {reply}",
        to.len() + cc.len() + bcc.len()
    ));
    let list = |boxes: &[Mailbox]| -> Value {
        Value::Array(
            boxes
                .iter()
                .map(|m| Value::String(m.email.to_string()))
                .collect(),
        )
    };
    let mut outputs = Outputs::new();
    outputs.insert("message_id".into(), json!(message_id));
    outputs.insert("to".into(), list(to));
    outputs.insert("cc".into(), list(cc));
    outputs.insert("bcc".into(), list(bcc));
    outputs.insert("attachments".into(), json!(names));
    outputs.insert("reply".into(), json!(reply));
    Ok(outputs)
}

/// Who gets a mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
}

/// What a mail says besides its parts.
pub struct Headline<'a> {
    pub subject: &'a str,
    /// Sent as `X-Sluice-Severity` for mail filters; `critical` is also marked important.
    pub severity: Severity,
}

/// A header whose value is plain text.
macro_rules! text_header {
    ($(#[$doc:meta])* $name:ident => $header:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        struct $name(String);

        impl Header for $name {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($header)
            }

            fn parse(
                text: &str,
            ) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($name(text.to_owned()))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(
    /// `X-Sluice-Severity`, for mail filters.
    SeverityHeader => "X-Sluice-Severity"
);
text_header!(
    /// `Importance`, which mail clients show as a flag.
    ImportanceHeader => "Importance"
);

/// A mail with a text part, an HTML part and attachments; returns it with its Message-ID.
pub fn compose(
    from: &Mailbox,
    envelope: &Envelope,
    headline: &Headline<'_>,
    text: String,
    html: String,
    attachments: Vec<SinglePart>,
) -> std::result::Result<(Message, String), String> {
    let domain = from.email.domain().to_owned();
    let message_id = format!("<{}@{domain}>", uuid::Uuid::new_v4().simple());
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(headline.subject)
        .message_id(Some(message_id.clone()))
        .header(SeverityHeader(headline.severity.as_str().to_owned()));
    if headline.severity == Severity::Critical {
        builder = builder.header(ImportanceHeader("high".to_owned()));
    }
    for mailbox in &envelope.to {
        builder = builder.to(mailbox.clone());
    }
    for mailbox in &envelope.cc {
        builder = builder.cc(mailbox.clone());
    }
    for mailbox in &envelope.bcc {
        builder = builder.bcc(mailbox.clone());
    }
    let alternative = MultiPart::alternative_plain_html(text, html);
    let body = if attachments.is_empty() {
        alternative
    } else {
        attachments
            .into_iter()
            .fold(MultiPart::mixed().multipart(alternative), |mixed, part| {
                mixed.singlepart(part)
            })
    };
    let message = builder
        .multipart(body)
        .map_err(|e| format!("cannot build the email: {e}"))?;
    Ok((message, message_id))
}

/// Parses addresses (`a@example.com` or `Name <a@example.com>`); `field` names them in errors.
pub fn parse_addresses(
    field: &str,
    addresses: &[String],
) -> std::result::Result<Vec<Mailbox>, String> {
    addresses
        .iter()
        .map(|address| {
            address.trim().parse::<Mailbox>().map_err(|e| {
                format!("`{field}` holds `{address}`, which is not an email address ({e})")
            })
        })
        .collect()
}

fn invalid(message: impl Into<String>) -> OperatorError {
    OperatorError::Config {
        operator: "alert",
        message: message.into(),
    }
}

fn parse_all(field: &str, recipients: &Recipients) -> Result<Vec<Mailbox>> {
    parse_addresses(field, &recipients.addresses()).map_err(invalid)
}

fn text_part(body: &str, framing: &Framing<'_>) -> String {
    let mut text = body.trim_end().to_owned();
    if let Some(note) = framing.note {
        text.push_str("\n\n");
        text.push_str(note);
    }
    text.push_str(&format!(
        "\n\n--\n{}\n{}\n",
        framing.run_line, framing.run_url
    ));
    text
}

fn html_part(body: &str, framing: &Framing<'_>) -> String {
    let color = match framing.severity {
        Severity::Info => "#2563eb",
        Severity::Warning => "#d97706",
        Severity::Critical => "#dc2626",
    };
    let note = framing
        .note
        .map(|n| format!("<p><em>{}</em></p>\n", escape_html(n)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html><body>\n\
         <p><strong style=\"color:{color}\">{severity}</strong></p>\n\
         <pre style=\"white-space:pre-wrap;font-family:inherit\">{body}</pre>\n\
         {note}<p><a href=\"{url}\">{run_line}</a></p>\n</body></html>\n",
        severity = framing.severity.as_str().to_uppercase(),
        body = escape_html(body.trim_end()),
        url = escape_html(framing.run_url),
        run_line = escape_html(framing.run_line),
    )
}

async fn attachment_part(
    base_dir: &Path,
    index: usize,
    spec: &AttachmentSpec,
) -> Result<(String, SinglePart)> {
    let (path, content, name, content_type) = match spec {
        AttachmentSpec::Path(path) => (Some(path.as_str()), None, None, None),
        AttachmentSpec::Detailed(d) => (
            d.path.as_deref(),
            d.content.as_deref(),
            d.name.as_deref(),
            d.content_type.as_deref(),
        ),
    };
    let (name, bytes) = match (path, content) {
        (Some(path), _) => {
            let full = base_dir.join(path);
            let size = tokio::fs::metadata(&full)
                .await
                .map_err(|e| {
                    OperatorError::failed(format!(
                        "cannot attach `{path}` (resolved to {}): {e}",
                        full.display()
                    ))
                })?
                .len();
            if size > MAX_ATTACHMENT_BYTES {
                return Err(OperatorError::failed(format!(
                    "cannot attach `{path}`: it has {size} bytes, more than the {MAX_ATTACHMENT_BYTES} an attachment may have"
                )));
            }
            let bytes = tokio::fs::read(&full).await.map_err(|e| {
                OperatorError::failed(format!("cannot read the attachment `{path}`: {e}"))
            })?;
            let default_name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("attachment-{}", index + 1));
            (name.map(str::to_owned).unwrap_or(default_name), bytes)
        }
        (None, Some(content)) => (
            name.map(str::to_owned)
                .unwrap_or_else(|| format!("attachment-{}.txt", index + 1)),
            content.as_bytes().to_vec(),
        ),
        (None, None) => {
            return Err(invalid(format!(
                "`email.attachments[{index}]` needs `path` or `content`"
            )));
        }
    };
    let content_type = content_type
        .map(str::to_owned)
        .unwrap_or_else(|| guess_content_type(&name).to_owned());
    let content_type = ContentType::parse(&content_type).map_err(|e| {
        invalid(format!(
            "`email.attachments[{index}].content_type` `{content_type}` is not a MIME type ({e})"
        ))
    })?;
    let part = Attachment::new(name.clone()).body(bytes, content_type);
    Ok((name, part))
}

/// The MIME type of common report files by extension; anything else is plain bytes.
fn guess_content_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "json" => "application/json",
        "jsonl" => "application/jsonl",
        "html" | "htm" => "text/html; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_come_as_a_list_or_comma_separated() {
        let one: Recipients = serde_json::from_value(json!("a@x.org, b@x.org,")).expect("one");
        assert_eq!(one.addresses(), ["a@x.org", "b@x.org"]);
        let many: Recipients = serde_json::from_value(json!(["a@x.org"])).expect("many");
        assert_eq!(many.addresses(), ["a@x.org"]);
        assert!(parse_all("email.to", &Recipients::One("not an address".into())).is_err());
    }

    #[test]
    fn content_types_are_guessed_from_the_name() {
        assert_eq!(guess_content_type("report.CSV"), "text/csv; charset=utf-8");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn the_default_html_part_escapes_the_body() {
        let framing = Framing {
            severity: Severity::Critical,
            note: Some("3 similar alerts were held back"),
            run_line: "Run wf/r1 failed",
            run_url: "http://x/runs/r1?a=1&b=2",
        };
        let html = html_part("<script>x</script>", &framing);
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(html.contains("CRITICAL"), "{html}");
        assert!(
            html.contains("href=\"http://x/runs/r1?a=1&amp;b=2\""),
            "{html}"
        );
        assert!(html.contains("3 similar alerts were held back"), "{html}");
        let text = text_part("body\n", &framing);
        assert!(text.starts_with("body\n\n3 similar"), "{text}");
        assert!(text.ends_with("http://x/runs/r1?a=1&b=2\n"), "{text}");
    }

    // The connection pool starts a task of its own: a mailer is built inside a runtime.
    #[tokio::test]
    async fn settings_from_config_read_the_password_secret() {
        let config = SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(1025),
            tls: SmtpTls::None,
            from: "sluice@example.com".into(),
            username: Some("bot".into()),
            password_secret: Some("SMTP_PASSWORD".into()),
            timeout: HumanDuration(Duration::from_secs(5)),
            ca_file: None,
        };
        let missing =
            SmtpSettings::from_config(&config, &Secrets::from_pairs([])).expect_err("no secret");
        assert!(
            missing.to_string().contains("SLUICE_SECRET_SMTP_PASSWORD"),
            "{missing}"
        );
        let secrets = Secrets::from_pairs([("SMTP_PASSWORD".to_owned(), "hunter2".to_owned())]);
        let settings = SmtpSettings::from_config(&config, &secrets).expect("settings");
        assert_eq!(
            settings.credentials,
            Some(("bot".to_owned(), "hunter2".to_owned()))
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
        let mailer = Mailer::new(&settings).expect("mailer");
        assert_eq!(mailer.from().to_string(), "sluice@example.com");
        let bad = SmtpSettings {
            from: "nobody".into(),
            ..settings
        };
        assert!(Mailer::new(&bad).is_err());
    }

    #[tokio::test]
    async fn a_ca_file_that_cannot_be_used_is_an_error_at_start() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let settings = |ca_file: PathBuf| SmtpSettings {
            host: "relay.internal".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            from: "sluice@example.com".into(),
            credentials: None,
            timeout: Duration::from_secs(5),
            ca_file: Some(ca_file),
        };
        let missing = dir.path().join("missing.pem");
        let error = Mailer::new(&settings(missing.clone())).expect_err("no such file");
        assert!(
            error
                .to_string()
                .contains(&format!("cannot use `{}`", missing.display())),
            "{error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = Mailer::new(&settings(empty)).expect_err("no certificate");
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(Mailer::new(&settings(broken)).is_err());
    }
}
