//! The process configuration: `sluice.toml`, read and merged with what flags and environment
//! variables gave, in that order of precedence: flags > environment > file > built-in defaults.
//! The CLI resolves flags against environment variables (clap's `env`) and hands the result
//! here as `Overrides`; this module reads the file and applies the defaults. No other IO.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use crate::duration::HumanDuration;

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_FILE: &str = "sluice.toml";
/// The database used when nothing names one: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sluice.db";
/// The workflows folder used when nothing names one.
pub const DEFAULT_WORKFLOWS: &str = "workflows";
/// Where commit statuses are posted unless `[github] api_url` says otherwise.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";
/// The UI/API address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// A configuration that cannot be used. Messages name the file and, where the TOML parser
/// knows it, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration file {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("`concurrency` must be at least 1")]
    ZeroConcurrency,
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// How diagnostics are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "`{other}` is not a log format; use `human` or `json`"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// The merged configuration every command runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// A SQLite file path, `sqlite://…`, `sqlite::memory:` or `postgres://…`.
    pub database: String,
    /// The folder of workflow files.
    pub workflows: PathBuf,
    /// Where `sluice serve` listens for the UI and API.
    pub bind: SocketAddr,
    /// How many task instances run at once in one process; `None` lets the worker decide.
    pub concurrency: Option<usize>,
    /// Bearer tokens accepted by `/api/v1`.
    pub api_tokens: Vec<String>,
    /// Named pools and their slot counts.
    pub pools: BTreeMap<String, u32>,
    pub log_format: LogFormat,
    /// `vars` in templates.
    pub variables: serde_json::Map<String, Value>,
    /// The address people and other services reach the UI at, for links in alerts and
    /// commit statuses; `None` means `http://<bind>`.
    pub public_url: Option<String>,
    /// GitHub webhooks and commit statuses.
    pub github: GithubConfig,
    /// The SMTP server alert mail goes through (`[smtp]`); `None`: no mail without a
    /// per-task `smtp`.
    pub smtp: Option<SmtpConfig>,
    /// Alerts sent without writing hooks (`[alerts]`).
    pub alerts: AlertsConfig,
    /// The argon2 hash (PHC string) of the web UI's `admin` password, from `[ui]`.
    pub admin_password_hash: Option<String>,
    /// How long a web UI login lasts.
    pub session_lifetime: std::time::Duration,
    /// The user `shell` tasks run as (`run_as`); `None`: the user Sluice runs as.
    pub run_as: Option<String>,
    /// `[artifacts]`: where tries keep files, and how much.
    pub artifacts: ArtifactsConfig,
    /// `[retention]`: how long `serve` keeps ended runs.
    pub retention: RetentionConfig,
    /// `[worker]`: limits on what a try may return.
    pub worker: WorkerLimits,
    /// `[eval]`: model prices for the `eval` operator's cost metrics.
    pub eval: EvalConfig,
    /// `[tracking]`: where experiments and the model registry live.
    pub tracking: TrackingConfig,
}

/// `[github]`: the webhook secret deliveries are signed with, and the API statuses go to.
#[derive(Debug, Clone, PartialEq)]
pub struct GithubConfig {
    /// The secret set on the GitHub hook; without one, `/hooks/github` accepts nothing.
    pub webhook_secret: Option<WebhookSecret>,
    /// The REST API base URL, without a trailing slash (GitHub Enterprise:
    /// `https://HOST/api/v3`).
    pub api_url: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            webhook_secret: None,
            api_url: DEFAULT_GITHUB_API_URL.to_owned(),
        }
    }
}

/// How a connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465).
    Tls,
    /// No encryption at all: only for a relay on the same machine or in tests.
    None,
}

impl SmtpTls {
    /// The usual port for this kind of connection.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// A webhook secret. `Debug` never shows the value, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(value: impl Into<String>) -> Self {
        WebhookSecret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

fn default_smtp_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

/// `[smtp]`: the server alert mail is sent through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name or address.
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// The sender address, like `sluice@example.com` or `Sluice <sluice@example.com>`.
    pub from: String,
    /// The login, when the server wants one.
    pub username: Option<String>,
    /// The name of the secret (`SLUICE_SECRET_<NAME>`) holding the password; the password
    /// itself never goes into the file.
    pub password_secret: Option<String>,
    /// How long connecting and each SMTP command may take.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: HumanDuration,
    /// A PEM file of extra root certificates to trust for the server's certificate (a private
    /// CA), besides the public ones. Relative to the configuration file's folder.
    pub ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// `[alerts]`: alerts that need no hooks in the workflow files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Addresses that get a standard mail for every failed run (through `[smtp]`).
    #[serde(default)]
    pub email_on_failure: Vec<String>,
    /// Addresses that get a standard mail for every failed try that will be tried again.
    #[serde(default)]
    pub email_on_retry: Vec<String>,
}

/// How long a web UI login lasts when the file does not say.
pub const DEFAULT_SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DEFAULT_DATABASE.to_owned(),
            workflows: PathBuf::from(DEFAULT_WORKFLOWS),
            bind: DEFAULT_BIND,
            concurrency: None,
            api_tokens: Vec::new(),
            pools: BTreeMap::new(),
            log_format: LogFormat::Human,
            variables: serde_json::Map::new(),
            public_url: None,
            github: GithubConfig::default(),
            smtp: None,
            alerts: AlertsConfig::default(),
            admin_password_hash: None,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            run_as: None,
            artifacts: ArtifactsConfig::default(),
            retention: RetentionConfig::default(),
            worker: WorkerLimits::default(),
            eval: EvalConfig::default(),
            tracking: TrackingConfig::default(),
        }
    }
}

/// What flags and environment variables gave; `None` leaves the file's value (or the default).
/// Pools and variables have no flags: they only come from the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub database: Option<String>,
    pub workflows: Option<PathBuf>,
    pub bind: Option<SocketAddr>,
    pub concurrency: Option<usize>,
    /// Replaces the file's list rather than adding to it, so a token can be revoked by
    /// environment alone.
    pub api_tokens: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    pub public_url: Option<String>,
    /// `SLUICE_GITHUB_WEBHOOK_SECRET`.
    pub github_webhook_secret: Option<String>,
}

/// `sluice.toml` exactly as written. Unknown keys are errors so that a typo (`concurency`)
/// is reported instead of silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database: Option<String>,
    workflows: Option<PathBuf>,
    bind: Option<SocketAddr>,
    concurrency: Option<usize>,
    log_format: Option<LogFormat>,
    public_url: Option<String>,
    api: Option<ApiSection>,
    github: Option<GithubSection>,
    ui: Option<UiSection>,
    #[serde(default)]
    pools: BTreeMap<String, u32>,
    #[serde(default)]
    vars: serde_json::Map<String, Value>,
    smtp: Option<SmtpConfig>,
    alerts: Option<AlertsConfig>,
    run_as: Option<String>,
    artifacts: Option<ArtifactsSection>,
    retention: Option<RetentionSection>,
    worker: Option<WorkerSection>,
    eval: Option<EvalConfig>,
    tracking: Option<TrackingSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackingSection {
    backend: Option<TrackingBackend>,
    uri: Option<String>,
    token_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerSection {
    max_output_bytes: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactsSection {
    root: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id_secret: Option<String>,
    secret_access_key_secret: Option<String>,
    max_artifact_size: Option<ByteSize>,
    max_run_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    older_than: Option<HumanDuration>,
    every: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GithubSection {
    webhook_secret: Option<String>,
    api_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    tokens: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UiSection {
    admin_password_hash: Option<String>,
    session_lifetime: Option<String>,
}

impl Config {
    /// Reads the configuration file and applies `overrides` on top of it. With `path` `None`,
    /// `./sluice.toml` is read when it exists and defaults are used otherwise; a path given
    /// explicitly must exist.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Config> {
        let file = match path {
            Some(path) => Some(read(path)?),
            None => {
                let default = Path::new(DEFAULT_FILE);
                if default.is_file() {
                    Some(read(default)?)
                } else {
                    None
                }
            }
        };
        let mut config = Config::default();
        if let Some((path, file)) = file {
            config.apply_file(&path, file)?;
        }
        config.apply_overrides(overrides);
        if config.concurrency == Some(0) {
            return Err(ConfigError::ZeroConcurrency);
        }
        Ok(config)
    }

    /// Parses `text` as the content of the file at `path` (which is used for messages and to
    /// resolve relative paths) and applies `overrides`. `load` without the reading.
    pub fn from_toml(text: &str, path: &Path, overrides: Overrides) -> Result<Config> {
        let file = parse(text, path)?;
        let mut config = Config::default();
        config.apply_file(path, file)?;
        config.apply_overrides(overrides);
        if config.concurrency == Some(0) {
            return Err(ConfigError::ZeroConcurrency);
        }
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path, file: FileConfig) -> Result<()> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        // Relative paths in the file mean "next to the file", so a project's sluice.toml works
        // from any working directory.
        let folder = path.parent().unwrap_or(Path::new(""));
        if let Some(database) = file.database {
            self.database = resolve_database(&database, folder);
        }
        if let Some(workflows) = file.workflows {
            self.workflows = folder.join(workflows);
        }
        if let Some(bind) = file.bind {
            self.bind = bind;
        }
        if file.concurrency.is_some() {
            self.concurrency = file.concurrency;
        }
        if let Some(format) = file.log_format {
            self.log_format = format;
        }
        if let Some(url) = file.public_url {
            self.public_url = Some(checked_public_url(&url).map_err(invalid)?);
        }
        if let Some(tokens) = file.api.and_then(|api| api.tokens) {
            // An empty token would let an empty `Authorization: Bearer ` header in.
            if tokens.iter().any(|t| t.trim().is_empty()) {
                return Err(invalid("`api.tokens` contains an empty token".to_owned()));
            }
            self.api_tokens = tokens;
        }
        if let Some(github) = file.github {
            if let Some(secret) = github.webhook_secret {
                // An empty secret would make every signature computable by anyone.
                if secret.trim().is_empty() {
                    return Err(invalid("`github.webhook_secret` is empty".to_owned()));
                }
                self.github.webhook_secret = Some(WebhookSecret::new(secret));
            }
            if let Some(url) = github.api_url {
                self.github.api_url = checked_api_url(&url).map_err(invalid)?;
            }
        }
        if let Some(ui) = file.ui {
            if let Some(hash) = ui.admin_password_hash {
                // Only the hash belongs in a file; a plain password here would be a leak.
                if !hash.starts_with("$argon2") {
                    return Err(invalid(
                        "`ui.admin_password_hash` must be an argon2 hash (`$argon2id$…`); \
                         make one with `sluice user hash`"
                            .to_owned(),
                    ));
                }
                self.admin_password_hash = Some(hash);
            }
            if let Some(lifetime) = ui.session_lifetime {
                let lifetime = humantime::parse_duration(&lifetime).map_err(|e| {
                    invalid(format!(
                        "`ui.session_lifetime` `{lifetime}` is not a duration ({e}); write e.g. `12h`"
                    ))
                })?;
                if lifetime.is_zero() {
                    return Err(invalid(
                        "`ui.session_lifetime` must be longer than 0s".to_owned(),
                    ));
                }
                self.session_lifetime = lifetime;
            }
        }
        if let Some((name, _)) = file.pools.iter().find(|(_, slots)| **slots == 0) {
            return Err(invalid(format!(
                "pool `{name}` has 0 slots; a pool needs at least 1 (remove it to not limit)"
            )));
        }
        self.pools = file.pools;
        let mut smtp = file.smtp;
        if let Some(smtp) = &mut smtp {
            check_smtp(smtp).map_err(invalid)?;
            if let Some(ca_file) = &smtp.ca_file {
                smtp.ca_file = Some(folder.join(ca_file));
            }
        }
        self.smtp = smtp;
        if let Some(alerts) = file.alerts {
            for (field, addresses) in [
                ("email_on_failure", &alerts.email_on_failure),
                ("email_on_retry", &alerts.email_on_retry),
            ] {
                if !addresses.is_empty() && self.smtp.is_none() {
                    return Err(invalid(format!(
                        "`alerts.{field}` needs an `[smtp]` section to send through"
                    )));
                }
                if let Some(bad) = addresses.iter().find(|a| !a.contains('@')) {
                    return Err(invalid(format!(
                        "`alerts.{field}` holds `{bad}`, which is not an email address"
                    )));
                }
            }
            self.alerts = alerts;
        }
        if let Some(user) = file.run_as {
            if user.trim().is_empty() || user.contains('\0') {
                return Err(invalid(
                    "`run_as` must name a user of this machine, e.g. `sluice-tasks`".to_owned(),
                ));
            }
            self.run_as = Some(user);
        }
        if let Some(artifacts) = file.artifacts {
            self.artifacts.apply(artifacts).map_err(invalid)?;
        }
        if let Some(retention) = file.retention {
            if let Some(older_than) = retention.older_than {
                if older_than.0.is_zero() {
                    return Err(invalid(
                        "`retention.older_than` must be longer than zero".to_owned(),
                    ));
                }
                self.retention.older_than = Some(older_than.0);
            }
            if let Some(every) = retention.every {
                if every.0.is_zero() {
                    return Err(invalid(
                        "`retention.every` must be longer than zero".to_owned(),
                    ));
                }
                self.retention.every = every.0;
            }
        }
        if let Some(max_output_bytes) = file.worker.and_then(|w| w.max_output_bytes) {
            if max_output_bytes.0 == 0 {
                return Err(invalid(
                    "`worker.max_output_bytes` must be at least 1 byte".to_owned(),
                ));
            }
            self.worker.max_output_bytes = max_output_bytes.0;
        }
        if let Some(eval) = file.eval {
            eval.check().map_err(invalid)?;
            self.eval = eval;
        }
        if let Some(tracking) = file.tracking {
            self.tracking.apply(tracking).map_err(invalid)?;
        }
        self.variables = file.vars;
        for value in self.variables.values_mut() {
            plain_datetimes(value);
        }
        Ok(())
    }

    fn apply_overrides(&mut self, overrides: Overrides) {
        if let Some(database) = overrides.database {
            self.database = database;
        }
        if let Some(workflows) = overrides.workflows {
            self.workflows = workflows;
        }
        if let Some(bind) = overrides.bind {
            self.bind = bind;
        }
        if overrides.concurrency.is_some() {
            self.concurrency = overrides.concurrency;
        }
        if let Some(tokens) = overrides.api_tokens {
            // `SLUICE_API_TOKEN=a,b,` splits into an empty last entry: ignore it rather than
            // accept an empty token.
            self.api_tokens = tokens
                .into_iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect();
        }
        if let Some(format) = overrides.log_format {
            self.log_format = format;
        }
        if overrides.public_url.is_some() {
            self.public_url = overrides.public_url;
        }
        // An empty variable is treated as unset rather than as an empty secret.
        if let Some(secret) = overrides
            .github_webhook_secret
            .filter(|s| !s.trim().is_empty())
        {
            self.github.webhook_secret = Some(WebhookSecret::new(secret));
        }
    }

    /// The base URL of the UI without a trailing slash: `public_url`, or `http://<bind>`.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.bind),
        }
    }

    /// The UI page of a run, for links in alerts and commit statuses.
    pub fn run_url(&self, run_id: &str) -> String {
        run_url(&self.base_url(), run_id)
    }

    /// Where artifacts are kept: `[artifacts] root` (a relative folder is taken from the
    /// SQLite database's folder), by default the folder `artifacts` beside the database. For
    /// PostgreSQL and in-memory databases the base is the working directory.
    pub fn artifact_root(&self) -> ArtifactRoot {
        let base = sqlite_folder(&self.database);
        match &self.artifacts.root {
            Some(ArtifactRoot::Folder(folder)) => ArtifactRoot::Folder(base.join(folder)),
            Some(s3) => s3.clone(),
            None => ArtifactRoot::Folder(base.join("artifacts")),
        }
    }
}

/// The folder of a SQLite database file; `.` for other databases.
fn sqlite_folder(database: &str) -> PathBuf {
    if database == "sqlite::memory:" || database.contains("://") && !database.starts_with("sqlite")
    {
        return PathBuf::from(".");
    }
    let rest = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))
        .unwrap_or(database);
    let file = rest.split_once('?').map_or(rest, |(file, _)| file);
    match Path::new(file).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Where artifacts are kept, as configured (`[artifacts] root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRoot {
    /// A folder; relative paths are resolved by [`Config::artifact_root`].
    Folder(PathBuf),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

/// `[artifacts]`: the store of the files tries keep, and the limits on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsConfig {
    /// `None`: the folder `artifacts` beside the SQLite database (see `Config::artifact_root`).
    pub root: Option<ArtifactRoot>,
    /// For S3-compatible services: their URL (`http://minio:9000`).
    pub endpoint: Option<String>,
    pub region: String,
    /// The names of the secrets (`SLUICE_SECRET_<NAME>`) holding the S3 credentials.
    pub access_key_id_secret: Option<String>,
    pub secret_access_key_secret: Option<String>,
    /// The largest artifact, in bytes.
    pub max_artifact_size: u64,
    /// The most a run's artifacts may hold together, in bytes.
    pub max_run_size: u64,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            root: None,
            endpoint: None,
            region: "us-east-1".to_owned(),
            access_key_id_secret: None,
            secret_access_key_secret: None,
            max_artifact_size: 1 << 30,
            max_run_size: 10 << 30,
        }
    }
}

impl ArtifactsConfig {
    fn apply(&mut self, section: ArtifactsSection) -> Result<(), String> {
        if let Some(root) = section.root {
            self.root = Some(parse_artifact_root(&root)?);
        }
        if let Some(endpoint) = section.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!(
                    "`artifacts.endpoint` must start with http:// or https://, got `{endpoint}`"
                ));
            }
            self.endpoint = Some(endpoint.trim_end_matches('/').to_owned());
        }
        if let Some(region) = section.region {
            self.region = region;
        }
        self.access_key_id_secret = section.access_key_id_secret;
        self.secret_access_key_secret = section.secret_access_key_secret;
        if self.access_key_id_secret.is_some() != self.secret_access_key_secret.is_some() {
            return Err(
                "`artifacts.access_key_id_secret` and `artifacts.secret_access_key_secret` go \
                 together; set both or neither"
                    .to_owned(),
            );
        }
        let is_s3 = matches!(self.root, Some(ArtifactRoot::S3 { .. }));
        if !is_s3 && (self.endpoint.is_some() || self.access_key_id_secret.is_some()) {
            return Err(
                "`artifacts.endpoint` and the credentials apply to an `s3://` root only".to_owned(),
            );
        }
        if let Some(size) = section.max_artifact_size {
            self.max_artifact_size = size.0;
        }
        if let Some(size) = section.max_run_size {
            self.max_run_size = size.0;
        }
        if self.max_artifact_size == 0 || self.max_run_size == 0 {
            return Err("artifact size limits must be above zero".to_owned());
        }
        Ok(())
    }
}

/// `s3://bucket/prefix` or a folder (kept as written; see `Config::artifact_root`).
fn parse_artifact_root(root: &str) -> Result<ArtifactRoot, String> {
    if let Some(rest) = root.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`artifacts.root` `{root}` names no bucket"));
        }
        return Ok(ArtifactRoot::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    if root.contains("://") {
        return Err(format!(
            "`artifacts.root` `{root}` is neither a folder nor an `s3://bucket/prefix` URL"
        ));
    }
    if root.trim().is_empty() {
        return Err("`artifacts.root` is empty".to_owned());
    }
    Ok(ArtifactRoot::Folder(PathBuf::from(root)))
}

/// `[retention]`: ended runs older than `older_than` are deleted (with their logs and
/// artifacts) by `serve` every `every`; `None` keeps everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    pub older_than: Option<std::time::Duration>,
    pub every: std::time::Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            older_than: None,
            every: std::time::Duration::from_secs(3600),
        }
    }
}

/// `[worker]`: what one try may hand back to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// The largest outputs object (as JSON) a try may return; a larger one fails the try.
    /// Outputs are read by every downstream render and page, so files belong in artifacts.
    pub max_output_bytes: u64,
}

/// 1 MiB: far above any sensible outputs object, far below what slows a page or a render.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits {
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// `[eval]`: what the `eval` operator's cost metrics charge, per model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// `[eval.prices."<model>"]`: dollars per 1,000 input and output tokens, by the model name
    /// the target sends (or a `predictions` target's `model`).
    #[serde(default)]
    pub prices: BTreeMap<String, ModelPrice>,
}

/// The price of one model, in dollars per 1,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_1k: f64,
    pub output_per_1k: f64,
}

impl EvalConfig {
    fn check(&self) -> Result<(), String> {
        for (model, price) in &self.prices {
            for (name, value) in [
                ("input_per_1k", price.input_per_1k),
                ("output_per_1k", price.output_per_1k),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "`eval.prices.\"{model}\".{name}` must be a price of 0 or more, not {value}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Which tracking backend keeps experiments and the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrackingBackend {
    /// Tables in Sluice's own database, files in the artifact store.
    #[default]
    Builtin,
    /// An MLflow tracking server, over its REST API.
    Mlflow,
}

/// `[tracking]`: the backend of experiment tracking and the model registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackingConfig {
    pub backend: TrackingBackend,
    /// The MLflow server (`http://127.0.0.1:5000`); only with `backend = "mlflow"`.
    pub uri: Option<String>,
    /// The secret (`SLUICE_SECRET_<NAME>`) holding the MLflow bearer token, if it needs one.
    pub token_secret: Option<String>,
}

impl TrackingConfig {
    fn apply(&mut self, section: TrackingSection) -> Result<(), String> {
        let uri = section.uri.or_else(|| self.uri.clone());
        *self = TrackingConfig::checked(
            section.backend.unwrap_or(self.backend),
            uri,
            section.token_secret,
        )?;
        Ok(())
    }

    /// A backend with its settings, checked: the URI an http(s) URL (a trailing `/` dropped),
    /// MLflow with a URI, the built-in backend with neither URI nor token. `[tracking]` and a
    /// `track` task's own `tracking` are checked alike.
    pub fn checked(
        backend: TrackingBackend,
        uri: Option<String>,
        token_secret: Option<String>,
    ) -> Result<TrackingConfig, String> {
        let uri = match uri {
            Some(uri) if !(uri.starts_with("http://") || uri.starts_with("https://")) => {
                return Err(format!(
                    "`tracking.uri` must start with http:// or https://, got `{uri}`"
                ));
            }
            uri => uri.map(|u| u.trim_end_matches('/').to_owned()),
        };
        match backend {
            TrackingBackend::Mlflow if uri.is_none() => Err(
                "`tracking.backend = \"mlflow\"` needs `tracking.uri`, the MLflow server's URL"
                    .to_owned(),
            ),
            TrackingBackend::Builtin if uri.is_some() || token_secret.is_some() => Err(
                "`tracking.uri` and `tracking.token_secret` apply to `backend = \"mlflow\"` \
                     only"
                    .to_owned(),
            ),
            _ => Ok(TrackingConfig {
                backend,
                uri,
                token_secret,
            }),
        }
    }
}

/// A size in bytes as people write it: `1048576`, `100KB`, `512MiB`, `1 GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size; write e.g. `100MB` or `1GiB`"))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "`{other}` in `{text}` is not a size unit; use B, KB, MB, GB, KiB, MiB or GiB"
                ));
            }
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(n) => Ok(ByteSize(n)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The UI page of a run under a base URL (see [`Config::base_url`]).
pub fn run_url(base_url: &str, run_id: &str) -> String {
    format!("{base_url}/runs/{run_id}")
}

/// Mistakes in `[smtp]` that would otherwise only show when the first alert is sent.
fn check_smtp(smtp: &SmtpConfig) -> Result<(), String> {
    if smtp.host.trim().is_empty() {
        return Err("`smtp.host` is empty".to_owned());
    }
    if smtp.port == Some(0) {
        return Err("`smtp.port` must be between 1 and 65535".to_owned());
    }
    if !smtp.from.contains('@') {
        return Err(format!(
            "`smtp.from` must be an email address, like `sluice@example.com`; found `{}`",
            smtp.from
        ));
    }
    if smtp.password_secret.is_some() && smtp.username.is_none() {
        return Err("`smtp.password_secret` is set but `smtp.username` is not".to_owned());
    }
    if smtp.timeout.0.is_zero() {
        return Err("`smtp.timeout` must be longer than zero".to_owned());
    }
    if smtp.ca_file.is_some() && smtp.tls == SmtpTls::None {
        return Err(
            "`smtp.ca_file` is set but `smtp.tls` is `none`; use `starttls` or `tls`".to_owned(),
        );
    }
    Ok(())
}

/// `public_url` must be an absolute http(s) URL, because it ends up in links sent elsewhere.
pub fn checked_public_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim();
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        Ok(trimmed.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "`public_url` must start with http:// or https://, got `{trimmed}`"
        ))
    }
}

/// `github.api_url` must be an absolute http(s) URL; it is kept without its trailing slash.
fn checked_api_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim();
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        Ok(trimmed.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "`github.api_url` must start with http:// or https://, got `{trimmed}`"
        ))
    }
}

fn read(path: &Path) -> Result<(PathBuf, FileConfig)> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::Missing {
                path: path.to_owned(),
            }
        } else {
            ConfigError::Read {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    Ok((path.to_owned(), parse(&text, path)?))
}

fn parse(text: &str, path: &Path) -> Result<FileConfig> {
    toml::from_str(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: error.message().trim_end().to_owned(),
        }
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A database setting from the file with a relative SQLite path made relative to `folder`.
/// Server URLs and the in-memory database are left alone.
fn resolve_database(database: &str, folder: &Path) -> String {
    if database == "sqlite::memory:" || database.starts_with("postgres") {
        return database.to_owned();
    }
    let (scheme, rest) = if let Some(rest) = database.strip_prefix("sqlite://") {
        ("sqlite://", rest)
    } else if let Some(rest) = database.strip_prefix("sqlite:") {
        ("sqlite:", rest)
    } else if database.contains("://") {
        // Not ours to interpret; `store` reports unsupported URLs.
        return database.to_owned();
    } else {
        ("", database)
    };
    let (file, query) = match rest.split_once('?') {
        Some((file, query)) => (file, Some(query)),
        None => (rest, None),
    };
    if file.is_empty() || Path::new(file).is_absolute() {
        return database.to_owned();
    }
    let mut resolved = format!("{scheme}{}", folder.join(file).display());
    if let Some(query) = query {
        resolved.push('?');
        resolved.push_str(query);
    }
    resolved
}

/// TOML dates and times arrive through serde as a one-key map with the toml crate's private
/// marker key; templates should see the text as written instead (`2026-11-01`).
fn plain_datetimes(value: &mut Value) {
    const MARKER: &str = "$__toml_private_datetime";
    match value {
        Value::Object(map) => {
            if map.len() == 1
                && let Some(Value::String(text)) = map.get(MARKER)
            {
                *value = Value::String(text.clone());
                return;
            }
            map.values_mut().for_each(plain_datetimes);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_datetimes),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FULL: &str = r#"
database = "state/sluice.db"
workflows = "flows"
bind = "0.0.0.0:9000"
concurrency = 4
log_format = "json"
public_url = "https://ci.example.com/sluice/"

[api]
tokens = ["file-token"]

[pools]
gpu = 2
openai = 8

[vars]
region = "eu"
limits = { daily = 100 }
since = 2026-11-01
"#;

    fn from_toml(text: &str, overrides: Overrides) -> Result<Config> {
        Config::from_toml(text, Path::new("/etc/sluice/sluice.toml"), overrides)
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // An empty file is the same as none. Defaults are not moved next to the file: only
        // paths written in it are.
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "").expect("write");
        let config = Config::load(Some(&path), Overrides::default()).expect("loads");
        assert_eq!(config, Config::default());
        let config = Config::default();
        assert_eq!(config.database, "sluice.db");
        assert_eq!(config.workflows, PathBuf::from("workflows"));
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.log_format, LogFormat::Human);
        assert_eq!(config.concurrency, None);
        assert_eq!(config.run_url("r1"), "http://127.0.0.1:8080/runs/r1");
    }

    #[test]
    fn the_file_beats_defaults() {
        let config = from_toml(FULL, Overrides::default()).expect("valid");
        assert_eq!(config.database, "/etc/sluice/state/sluice.db");
        assert_eq!(config.workflows, PathBuf::from("/etc/sluice/flows"));
        assert_eq!(config.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(config.concurrency, Some(4));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.api_tokens, ["file-token"]);
        assert_eq!(config.base_url(), "https://ci.example.com/sluice");
        assert_eq!(config.pools.get("gpu"), Some(&2));
        assert_eq!(config.pools.get("openai"), Some(&8));
        assert_eq!(
            Value::Object(config.variables),
            json!({ "region": "eu", "limits": { "daily": 100 }, "since": "2026-11-01" })
        );
    }

    #[test]
    fn flags_and_environment_beat_the_file() {
        let overrides = Overrides {
            database: Some("postgres://db/sluice".to_owned()),
            workflows: Some(PathBuf::from("elsewhere")),
            bind: Some("127.0.0.1:9999".parse().expect("an address")),
            concurrency: Some(32),
            api_tokens: Some(vec![
                "env-a".to_owned(),
                " env-b ".to_owned(),
                String::new(),
            ]),
            log_format: Some(LogFormat::Human),
            public_url: Some("https://sluice.example.com".to_owned()),
            github_webhook_secret: None,
        };
        let config = from_toml(FULL, overrides).expect("valid");
        assert_eq!(config.database, "postgres://db/sluice");
        // Values from flags are relative to the working directory, as users expect on a
        // command line; only the file's own paths are resolved against its folder.
        assert_eq!(config.workflows, PathBuf::from("elsewhere"));
        assert_eq!(config.bind.to_string(), "127.0.0.1:9999");
        assert_eq!(config.concurrency, Some(32));
        assert_eq!(config.api_tokens, ["env-a", "env-b"]);
        assert_eq!(config.log_format, LogFormat::Human);
        assert_eq!(config.run_url("r1"), "https://sluice.example.com/runs/r1");
        // What has no flag still comes from the file.
        assert_eq!(config.pools.get("gpu"), Some(&2));
        // An override left empty keeps the file's value.
        let config = from_toml(
            FULL,
            Overrides {
                concurrency: Some(2),
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(config.concurrency, Some(2));
        assert_eq!(config.bind.to_string(), "0.0.0.0:9000");
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_file_and_position() {
        let error = from_toml(
            "database = \"x.db\"\nconcurency = 4\n",
            Overrides::default(),
        )
        .expect_err("a typo");
        let message = error.to_string();
        assert!(
            message.starts_with("/etc/sluice/sluice.toml:2:1: unknown field `concurency`"),
            "{message}"
        );
        assert!(message.contains("`concurrency`"), "{message}");
        let error = from_toml("[api]\ntoken = [\"t\"]\n", Overrides::default())
            .expect_err("a typo in a table");
        let message = error.to_string();
        assert!(
            message.starts_with("/etc/sluice/sluice.toml:2:1: unknown field `token`"),
            "{message}"
        );
    }

    #[test]
    fn github_settings_come_from_the_file_and_the_environment_wins() {
        assert_eq!(Config::default().github.api_url, "https://api.github.com");
        assert_eq!(Config::default().github.webhook_secret, None);
        let text = "[github]\nwebhook_secret = \"from-file\"\napi_url = \"https://ghe.example.com/api/v3/\"\n";
        let config = from_toml(text, Overrides::default()).expect("valid");
        assert_eq!(config.github.api_url, "https://ghe.example.com/api/v3");
        let secret = config.github.webhook_secret.expect("a secret");
        assert_eq!(secret.expose(), "from-file");
        assert_eq!(
            format!("{secret:?}"),
            "WebhookSecret(***)",
            "Debug hides the value"
        );
        let env = Overrides {
            github_webhook_secret: Some("from-env".to_owned()),
            ..Overrides::default()
        };
        let config = from_toml(text, env).expect("valid");
        assert_eq!(
            config.github.webhook_secret.map(|s| s.expose().to_owned()),
            Some("from-env".into())
        );
        let blank = Overrides {
            github_webhook_secret: Some("  ".to_owned()),
            ..Overrides::default()
        };
        assert_eq!(
            from_toml("", blank).expect("valid").github.webhook_secret,
            None
        );
    }

    #[test]
    fn bad_github_settings_are_rejected() {
        let empty = from_toml("[github]\nwebhook_secret = \"\"\n", Overrides::default())
            .expect_err("empty secret");
        assert!(
            empty
                .to_string()
                .contains("`github.webhook_secret` is empty"),
            "{empty}"
        );
        let url = from_toml(
            "[github]\napi_url = \"api.github.com\"\n",
            Overrides::default(),
        )
        .expect_err("no scheme");
        assert!(
            url.to_string().contains("`github.api_url` must start with"),
            "{url}"
        );
        let typo = from_toml("[github]\nsecret = \"x\"\n", Overrides::default()).expect_err("typo");
        assert!(
            typo.to_string().contains("unknown field `secret`"),
            "{typo}"
        );
    }

    #[test]
    fn an_explicit_file_that_is_missing_is_an_error() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("nope.toml");
        let error = Config::load(Some(&path), Overrides::default()).expect_err("missing");
        assert!(matches!(error, ConfigError::Missing { .. }));
        assert_eq!(
            error.to_string(),
            format!("the configuration file {} does not exist", path.display())
        );
    }

    #[test]
    fn a_public_url_without_a_scheme_is_rejected() {
        let error = from_toml(
            "public_url = \"sluice.example.com\"\n",
            Overrides::default(),
        )
        .expect_err("no scheme");
        assert!(
            error
                .to_string()
                .contains("must start with http:// or https://"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_bind_address_is_reported_where_it_is() {
        let error = from_toml("\nbind = \"localhost\"\n", Overrides::default())
            .expect_err("not an IP address and port");
        let message = error.to_string();
        assert!(
            message.starts_with("/etc/sluice/sluice.toml:2:8: invalid socket address"),
            "{message}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_files_folder() {
        let folder = Path::new("/srv/project");
        assert_eq!(
            resolve_database("sluice.db", folder),
            "/srv/project/sluice.db"
        );
        assert_eq!(
            resolve_database("sqlite://data/s.db?mode=ro", folder),
            "sqlite:///srv/project/data/s.db?mode=ro"
        );
        assert_eq!(
            resolve_database("sqlite:s.db", folder),
            "sqlite:/srv/project/s.db"
        );
        for unchanged in [
            "/var/lib/sluice.db",
            "sqlite:///var/lib/sluice.db",
            "sqlite::memory:",
            "postgres://user@db/sluice",
        ] {
            assert_eq!(resolve_database(unchanged, folder), unchanged);
        }
        // Through load: a file in a sub-folder, read from elsewhere.
        let dir = tempfile::tempdir().expect("a temp dir");
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("sluice.toml");
        std::fs::write(&path, "workflows = \"../flows\"\ndatabase = \"s.db\"\n").expect("write");
        let config = Config::load(Some(&path), Overrides::default()).expect("loads");
        assert_eq!(config.workflows, sub.join("../flows"));
        assert_eq!(config.database, sub.join("s.db").display().to_string());
        // Absolute paths are kept as written.
        let config = from_toml("workflows = \"/opt/flows\"\n", Overrides::default()).expect("ok");
        assert_eq!(config.workflows, PathBuf::from("/opt/flows"));
    }

    #[test]
    fn smtp_and_alerts_sections_are_read_and_checked() {
        let config = from_toml(
            "[smtp]\nhost = \"127.0.0.1\"\nport = 1025\ntls = \"none\"\nfrom = \"sluice@example.com\"\n\
             username = \"bot\"\npassword_secret = \"SMTP_PASSWORD\"\ntimeout = \"5s\"\n\
             [alerts]\nemail_on_failure = [\"team@example.com\"]\n\
             email_on_retry = [\"Ops <ops@example.com>\"]\n",
            Overrides::default(),
        )
        .expect("valid");
        let smtp = config.smtp.expect("smtp");
        assert_eq!(
            (smtp.host.as_str(), smtp.port(), smtp.tls),
            ("127.0.0.1", 1025, SmtpTls::None)
        );
        assert_eq!(smtp.password_secret.as_deref(), Some("SMTP_PASSWORD"));
        assert_eq!(smtp.timeout.0, std::time::Duration::from_secs(5));
        assert_eq!(config.alerts.email_on_failure, ["team@example.com"]);
        assert_eq!(config.alerts.email_on_retry, ["Ops <ops@example.com>"]);
        let defaults = from_toml(
            "[smtp]\nhost = \"mail\"\nfrom = \"a@b.c\"\n",
            Overrides::default(),
        )
        .expect("valid")
        .smtp
        .expect("smtp");
        assert_eq!((defaults.tls, defaults.port()), (SmtpTls::Starttls, 587));
        assert_eq!(defaults.ca_file, None);
        let private_ca = Config::from_toml(
            "[smtp]\nhost = \"relay.internal\"\nfrom = \"a@b.c\"\nca_file = \"certs/ca.pem\"\n",
            Path::new("/srv/project/sluice.toml"),
            Overrides::default(),
        )
        .expect("valid")
        .smtp
        .expect("smtp");
        assert_eq!(
            private_ca.ca_file,
            Some(PathBuf::from("/srv/project/certs/ca.pem")),
            "relative to the file's folder"
        );

        let bad = |text: &str| {
            from_toml(text, Overrides::default())
                .expect_err(text)
                .to_string()
        };
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"nobody\"\n")
                .contains("`smtp.from` must be an email address")
        );
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"a@b\"\npassword = \"x\"\n")
                .contains("unknown field `password`")
        );
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"a@b\"\npassword_secret = \"P\"\n")
                .contains("`smtp.username` is not")
        );
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"a@b\"\ntls = \"ssl\"\n")
                .contains("unknown variant `ssl`")
        );
        assert!(
            bad("[alerts]\nemail_on_failure = [\"a@b\"]\n").contains("needs an `[smtp]` section")
        );
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"a@b\"\n[alerts]\nemail_on_failure = [\"team\"]\n")
                .contains("not an email address")
        );
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"a@b\"\ntls = \"none\"\nca_file = \"ca.pem\"\n")
                .contains("`smtp.ca_file` is set but `smtp.tls` is `none`")
        );
        assert!(
            bad("[alerts]\nemail_on_retry = [\"a@b\"]\n")
                .contains("`alerts.email_on_retry` needs an `[smtp]` section")
        );
        assert!(
            bad("[smtp]\nhost = \"m\"\nfrom = \"a@b\"\n[alerts]\nemail_on_retry = [\"ops\"]\n")
                .contains("`alerts.email_on_retry` holds `ops`, which is not an email address")
        );
    }

    #[test]
    fn values_that_cannot_work_are_rejected() {
        let zero = from_toml("concurrency = 0\n", Overrides::default()).expect_err("zero");
        assert!(matches!(zero, ConfigError::ZeroConcurrency));
        let pool = from_toml("[pools]\ngpu = 0\n", Overrides::default()).expect_err("empty pool");
        assert!(
            pool.to_string().contains("pool `gpu` has 0 slots"),
            "{pool}"
        );
        let token = from_toml("[api]\ntokens = [\"\"]\n", Overrides::default()).expect_err("empty");
        assert!(token.to_string().contains("empty token"), "{token}");
        let format = from_toml("log_format = \"xml\"\n", Overrides::default()).expect_err("xml");
        assert!(
            format.to_string().contains("unknown variant `xml`"),
            "{format}"
        );
        let syntax = from_toml("bind = \n", Overrides::default()).expect_err("no value");
        assert!(
            syntax.to_string().starts_with("/etc/sluice/sluice.toml:1:"),
            "{syntax}"
        );
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn run_as_names_a_user() {
        let config = from_toml("run_as = \"sluice-tasks\"\n", Overrides::default()).expect("valid");
        assert_eq!(config.run_as.as_deref(), Some("sluice-tasks"));
        assert_eq!(Config::default().run_as, None);
        let err = from_toml("run_as = \" \"\n", Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("`run_as` must name a user"),
            "{err}"
        );
    }

    #[test]
    fn the_ui_section_takes_a_hash_and_a_lifetime() {
        let config = from_toml(
            "[ui]\nadmin_password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\"\n\
             session_lifetime = \"2h\"\n",
            Overrides::default(),
        )
        .expect("valid");
        assert!(
            config
                .admin_password_hash
                .as_deref()
                .is_some_and(|h| h.starts_with("$argon2id$"))
        );
        assert_eq!(
            config.session_lifetime,
            std::time::Duration::from_secs(7200)
        );
        assert_eq!(Config::default().session_lifetime, DEFAULT_SESSION_LIFETIME);
        for (text, expected) in [
            (
                "[ui]\nadmin_password_hash = \"hunter2\"\n",
                "must be an argon2 hash",
            ),
            ("[ui]\nsession_lifetime = \"soon\"\n", "is not a duration"),
            ("[ui]\nsession_lifetime = \"0s\"\n", "longer than 0s"),
            (
                "[ui]\nadmin_password = \"x\"\n",
                "unknown field `admin_password`",
            ),
        ] {
            let error = from_toml(text, Overrides::default()).expect_err(text);
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn artifacts_default_beside_the_sqlite_database_and_take_s3_roots() {
        let config = Config::from_toml(
            "database = \"data/sluice.db\"\n",
            Path::new("/srv/sluice.toml"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.artifact_root(),
            ArtifactRoot::Folder(PathBuf::from("/srv/data/artifacts"))
        );
        let config = Config::from_toml(
            "database = \"data/sluice.db\"\n[artifacts]\nroot = \"blobs\"\n\
             max_artifact_size = \"100MB\"\nmax_run_size = \"2GiB\"\n",
            Path::new("/srv/sluice.toml"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.artifact_root(),
            ArtifactRoot::Folder(PathBuf::from("/srv/data/blobs"))
        );
        assert_eq!(config.artifacts.max_artifact_size, 100_000_000);
        assert_eq!(config.artifacts.max_run_size, 2 << 30);
        let config = Config::from_toml(
            "database = \"postgres://db/sluice\"\n[artifacts]\nroot = \"s3://bucket/runs/\"\n\
             endpoint = \"http://127.0.0.1:9000/\"\naccess_key_id_secret = \"S3_KEY\"\n\
             secret_access_key_secret = \"S3_SECRET\"\n[retention]\nolder_than = \"90d\"\n",
            Path::new("/srv/sluice.toml"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.artifact_root(),
            ArtifactRoot::S3 {
                bucket: "bucket".into(),
                prefix: "runs".into()
            }
        );
        assert_eq!(
            config.artifacts.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            config.retention.older_than,
            Some(std::time::Duration::from_secs(90 * 86400))
        );
    }

    #[test]
    fn bad_artifact_settings_are_reported() {
        for (text, says) in [
            (
                "[artifacts]\nmax_artifact_size = \"12 parsecs\"\n",
                "not a size unit",
            ),
            ("[artifacts]\nroot = \"gs://bucket\"\n", "neither a folder"),
            (
                "[artifacts]\nendpoint = \"http://x\"\n",
                "`s3://` root only",
            ),
            (
                "[artifacts]\nroot = \"s3://b\"\naccess_key_id_secret = \"K\"\n",
                "set both or neither",
            ),
            ("[retention]\nolder_than = \"0s\"\n", "longer than zero"),
            ("[worker]\nmax_output_bytes = 0\n", "at least 1 byte"),
        ] {
            let error = Config::from_toml(text, Path::new("sluice.toml"), Overrides::default())
                .expect_err(text)
                .to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn output_limit_defaults_to_one_mebibyte_and_reads_sizes() {
        let config = from_toml("", Overrides::default()).expect("valid");
        assert_eq!(config.worker.max_output_bytes, 1024 * 1024);
        let config = from_toml(
            "[worker]\nmax_output_bytes = \"64KiB\"\n",
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(config.worker.max_output_bytes, 64 * 1024);
    }

    #[test]
    fn eval_prices_are_read_per_model_and_checked() {
        let config = from_toml(
            "[eval.prices.\"gpt-4o-mini\"]\ninput_per_1k = 0.00015\noutput_per_1k = 0.0006\n",
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.eval.prices.get("gpt-4o-mini"),
            Some(&ModelPrice {
                input_per_1k: 0.00015,
                output_per_1k: 0.0006
            })
        );
        let negative = from_toml(
            "[eval.prices.m]\ninput_per_1k = -1\noutput_per_1k = 0\n",
            Overrides::default(),
        )
        .expect_err("a negative price")
        .to_string();
        assert!(
            negative.contains("`eval.prices.\"m\".input_per_1k`"),
            "{negative}"
        );
        let missing = from_toml("[eval.prices.m]\ninput_per_1k = 1\n", Overrides::default())
            .expect_err("both prices are needed")
            .to_string();
        assert!(missing.contains("output_per_1k"), "{missing}");
    }

    #[test]
    fn tracking_defaults_to_builtin_and_mlflow_needs_a_uri() {
        let config =
            Config::from_toml("", Path::new("sluice.toml"), Overrides::default()).expect("valid");
        assert_eq!(config.tracking.backend, TrackingBackend::Builtin);
        let config = Config::from_toml(
            "[tracking]\nbackend = \"mlflow\"\nuri = \"http://127.0.0.1:5000/\"\n\
             token_secret = \"MLFLOW_TOKEN\"\n",
            Path::new("sluice.toml"),
            Overrides::default(),
        )
        .expect("valid");
        assert_eq!(
            config.tracking.uri.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            config.tracking.token_secret.as_deref(),
            Some("MLFLOW_TOKEN")
        );
        for (text, says) in [
            ("[tracking]\nbackend = \"mlflow\"\n", "needs `tracking.uri`"),
            ("[tracking]\nuri = \"http://x\"\n", "only"),
            (
                "[tracking]\nbackend = \"mlflow\"\nuri = \"x:5000\"\n",
                "must start with http",
            ),
            ("[tracking]\nbackend = \"wandb\"\n", "unknown variant"),
        ] {
            let error = Config::from_toml(text, Path::new("sluice.toml"), Overrides::default())
                .expect_err(text)
                .to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
