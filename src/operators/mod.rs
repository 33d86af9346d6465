//! The closed registry of built-in operators and the context they run in. One file per
//! operator: a config struct (`Deserialize` + `JsonSchema`, `deny_unknown_fields`, a doc comment
//! on every field) and `async fn run(ctx, config)`. Adding an operator touches its file and the
//! `registry!` list below.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::secrets::Masker;

pub mod alert;
pub mod deploy;
pub mod drift;
pub mod eval;
pub mod gate;
pub mod http;
pub mod noop;
pub mod services;
pub mod shell;
pub mod support;
pub mod track;
pub mod trigger;
pub mod wait;

/// What an operator returns: a JSON object, stored with the task instance and readable
/// downstream as `tasks.<id>.outputs`.
pub type Outputs = serde_json::Map<String, Value>;

/// A successful operator run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Completion {
    pub outputs: Outputs,
    /// The exit status of the process the operator ran, when there was one.
    pub exit_code: Option<i32>,
    /// Sentences about a success that still needs a look (a warn-severity threshold breached,
    /// rows skipped): the task succeeds, marked with them on the run page and in the API.
    pub warnings: Vec<String>,
    /// One line that says what the try found (`faithfulness 0.87 < 0.90`), for the run page and
    /// the GitHub commit status when this task decides the run.
    pub summary: Option<String>,
}

impl From<Outputs> for Completion {
    fn from(outputs: Outputs) -> Self {
        Completion {
            outputs,
            ..Completion::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// `with` does not fit the operator's config (after templates were rendered).
    #[error("invalid `with` for operator `{operator}`: {message}")]
    Config {
        operator: &'static str,
        message: String,
    },
    /// The operator ran and failed; `message` says why in a sentence.
    #[error("{message}")]
    Failed {
        message: String,
        exit_code: Option<i32>,
    },
    /// The operator ran and failed for a reason another try cannot change (a gate breached,
    /// input data that is invalid): the task fails at once, without its retries. `message`
    /// is the one-line summary too.
    #[error("{message}")]
    Rejected { message: String },
    /// The cancellation token fired (run cancelled or task timed out); everything the operator
    /// started has been stopped.
    #[error("the task was stopped before it finished")]
    Cancelled,
    /// Not done yet: run this try again after `after`, without holding a worker slot in
    /// between (a sensor waiting, Airflow's "reschedule" mode). Same try, same `started_at`.
    #[error("the task is not done yet; it runs again in {after:?}")]
    Reschedule { after: Duration },
}

impl OperatorError {
    pub fn failed(message: impl Into<String>) -> Self {
        OperatorError::Failed {
            message: message.into(),
            exit_code: None,
        }
    }

    /// A failure no retry can change: see [`OperatorError::Rejected`].
    pub fn rejected(message: impl Into<String>) -> Self {
        OperatorError::Rejected {
            message: message.into(),
        }
    }
}

pub type Result<T, E = OperatorError> = std::result::Result<T, E>;

/// A boxed future, as the object-safe [`RunLauncher`] returns them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a run of another workflow ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The run's final state: `success`, `failed` or `cancelled`.
    pub state: String,
    /// Task id → that task's outputs (its latest try).
    pub outputs: serde_json::Map<String, Value>,
}

/// Starting and watching runs of other workflows, for the `trigger` operator. Operators sit
/// below the catalog and the runtime, so they get this capability as a trait object; the
/// implementation lives in `catalog::runs`. Errors are sentences for the task's error.
pub trait RunLauncher: Send + Sync + std::fmt::Debug {
    /// Starts a run of `workflow` with `params` and returns its id. `triggered_by` names the
    /// try that asks (`<workflow>/<run id>/<task>/<try>`); asking twice with the same value
    /// returns the run already started.
    fn trigger(
        &self,
        workflow: &str,
        params: serde_json::Map<String, Value>,
        triggered_by: String,
    ) -> BoxFuture<'_, Result<String, String>>;

    /// The run started for `triggered_by`, if there is one.
    fn find_triggered(&self, triggered_by: &str) -> BoxFuture<'_, Result<Option<String>, String>>;

    /// How the run ended; `None` while it has not ended.
    fn run_outcome(&self, run_id: &str) -> BoxFuture<'_, Result<Option<RunOutcome>, String>>;
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines Sluice itself writes about the task (retries, timeouts, the rendered command).
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

/// One line of a task's log, not yet masked.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

/// Where an operator writes its log. Lines are masked and stored by the worker; sending never
/// blocks the operator.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<LogLine>,
}

impl LogSink {
    pub fn new(tx: mpsc::UnboundedSender<LogLine>) -> Self {
        LogSink { tx }
    }

    /// A sink that drops everything (for tests and operators run outside a worker).
    pub fn discard() -> Self {
        let (tx, _rx) = mpsc::unbounded_channel();
        LogSink { tx }
    }

    pub fn write(&self, stream: LogStream, text: impl Into<String>) {
        // The receiver is gone only when the worker gave up on the task; dropping is right then.
        let _ = self.tx.send(LogLine {
            stream,
            text: text.into(),
        });
    }

    pub fn system(&self, text: impl Into<String>) {
        self.write(LogStream::System, text);
    }
}

/// Everything an operator may use while it runs. Built by the worker for each try.
#[derive(Debug, Clone)]
pub struct OpContext {
    pub run_id: String,
    pub workflow: String,
    pub task: String,
    pub try_number: u32,
    /// The task's rendered `env`, added to the environment of any process it starts.
    pub env: Vec<(String, String)>,
    /// The directory relative paths (scripts, `cwd`, files) are resolved against: the folder
    /// of the workflow file.
    pub base_dir: PathBuf,
    /// A scratch folder for this try (created on demand by operators that need one).
    pub scratch_dir: PathBuf,
    pub log: LogSink,
    /// The shared HTTP client (connection pool, rustls with ring).
    pub http: reqwest::Client,
    /// Fired when the run is cancelled or the task's timeout passes. Operators stop what they
    /// started (kill process groups, drop requests) and return `OperatorError::Cancelled`.
    pub cancel: CancellationToken,
    pub masker: Arc<Masker>,
    /// When this try first started. A rescheduled try keeps it, so sensors measure their
    /// timeout across executions.
    pub first_started_at: DateTime<Utc>,
    /// The process's shared services: the database, mailer, artifact store, run links and
    /// the launcher of other runs.
    pub services: Arc<services::Services>,
    /// Set once the operator asks for its artifacts folder (`artifacts()`): only then does
    /// the worker look in it, so tries that keep nothing cost nothing.
    pub artifacts_requested: Arc<std::sync::atomic::AtomicBool>,
}

impl OpContext {
    /// Where this try keeps artifacts (`$SLUICE_ARTIFACTS` for processes), with `prepare`
    /// (an empty folder: call it before handing the folder to a process), `put` and
    /// `put_file`. Whatever the folder holds when the try succeeds is kept with the run; later
    /// tasks read it as `{{ tasks.<id>.artifacts["name"] }}`.
    pub fn artifacts(&self) -> crate::artifacts::Outbox {
        self.artifacts_requested
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::artifacts::Outbox::for_try(&self.scratch_dir, &self.task, self.try_number)
    }
}

fn parse_config<C: DeserializeOwned>(operator: &'static str, with: Value) -> Result<C> {
    // `with` absent means an empty map, so operators whose fields all have defaults need none.
    let with = if with.is_null() {
        Value::Object(Default::default())
    } else {
        with
    };
    serde_json::from_value(with).map_err(|e| OperatorError::Config {
        operator,
        message: e.to_string(),
    })
}

/// Runs `check` (the run-time check of a config) on the parts of `with` that hold no
/// template. A template stands in a text field as its own text, so most configs check as
/// written. A failure that quotes a template's text came from a field the template fills at
/// run time: that field is left out (its default stands in) and the rest is checked again. A
/// failure that names a field left out says nothing certain before run time, so it passes.
fn check_unrendered(with: &Value, check: impl Fn(Value) -> Result<()>) -> Result<()> {
    if with
        .as_str()
        .is_some_and(crate::template::contains_template)
    {
        // All of `with` comes from a template: nothing is known before it renders.
        return Ok(());
    }
    let mut known = with.clone();
    let mut left_out: Vec<String> = Vec::new();
    loop {
        let Err(error) = check(known.clone()) else {
            return Ok(());
        };
        let message = error.to_string();
        // serde lists every field it knows after "expected": only what comes before names one.
        let about = message.split(", expected").next().unwrap_or(&message);
        if left_out
            .iter()
            .any(|key| about.contains(&format!("`{key}`")))
        {
            return Ok(());
        }
        let removed = remove_templated(&mut known, &message)
            .or_else(|| remove_unmatched_templated(&mut known, &message, &check));
        match removed {
            Some(key) => left_out.push(key),
            None => return Err(error),
        }
    }
}

/// For serde's error of an untagged enum ("did not match any variant"), which quotes no value:
/// removes the first top-level field a template fills whose removal changes the error, and
/// returns its key.
fn remove_unmatched_templated(
    value: &mut Value,
    message: &str,
    check: &impl Fn(Value) -> Result<()>,
) -> Option<String> {
    if !message.contains("did not match any variant") {
        return None;
    }
    let Value::Object(map) = value else {
        return None;
    };
    let templated: Vec<String> = map
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(crate::template::contains_template))
        .map(|(k, _)| k.clone())
        .collect();
    for key in templated {
        let mut without = map.clone();
        without.shift_remove(&key);
        let changed = match check(Value::Object(without)) {
            Ok(()) => true,
            Err(other) => other.to_string() != message,
        };
        if changed {
            map.shift_remove(&key);
            return Some(key);
        }
    }
    None
}
/// Removes the first templated string in `value` whose text `message` quotes; returns the
/// key of the map it was in.
fn remove_templated(value: &mut Value, message: &str) -> Option<String> {
    let quoted = |v: &Value| {
        v.as_str().is_some_and(|text| {
            // serde quotes a value it rejects in Rust's debug form, escapes included.
            crate::template::contains_template(text)
                && (message.contains(text.trim()) || message.contains(&format!("{text:?}")))
        })
    };
    match value {
        Value::Object(map) => {
            if let Some(key) = map.iter().find(|(_, v)| quoted(v)).map(|(k, _)| k.clone()) {
                map.shift_remove(&key);
                return Some(key);
            }
            for (key, item) in map.iter_mut() {
                if let Some(found) = remove_templated(item, message) {
                    // An item of a list has no key of its own: name the list.
                    return Some(if item.is_array() { key.clone() } else { found });
                }
            }
            None
        }
        Value::Array(items) => {
            if let Some(at) = items.iter().position(quoted) {
                items.remove(at);
                return Some(String::new());
            }
            items
                .iter_mut()
                .find_map(|item| remove_templated(item, message))
        }
        _ => None,
    }
}

macro_rules! registry {
    ($($variant:ident => $module:ident :: $config:ident),* $(,)?) => {
        /// The built-in operators. YAML name = module name = variant.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operator {
            $($variant),*
        }

        impl Operator {
            pub const ALL: &'static [Operator] = &[$(Operator::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(Operator::$variant => stringify!($module)),* }
            }

            pub fn from_name(name: &str) -> Option<Operator> {
                match name {
                    $(stringify!($module) => Some(Operator::$variant),)*
                    _ => None,
                }
            }

            /// The JSON Schema of this operator's `with`.
            pub fn config_schema(self, generator: &mut SchemaGenerator) -> Schema {
                match self { $(Operator::$variant => $module::$config::json_schema(generator)),* }
            }

            /// Checks `with` (already rendered) against the config type without running.
            pub fn check_config(self, with: Value) -> Result<()> {
                match self {
                    $(Operator::$variant => parse_config::<$module::$config>(self.name(), with).map(drop)),*
                }
            }

            /// Checks `with` as written, before templates are rendered (`sluice validate`): see
            /// [`check_unrendered`].
            pub fn check_static(self, with: &Value) -> Result<()> {
                check_unrendered(with, |known| self.check_config(known))
            }

            /// Runs the operator with its rendered `with`.
            pub async fn run(self, ctx: &OpContext, with: Value) -> Result<Completion> {
                match self {
                    $(Operator::$variant => {
                        let config = parse_config::<$module::$config>(self.name(), with)?;
                        $module::run(ctx, config).await
                    })*
                }
            }
        }
    };
}

registry! {
    Noop => noop::NoopConfig,
    Shell => shell::ShellConfig,
    Http => http::HttpConfig,
    Trigger => trigger::TriggerConfig,
    Wait => wait::WaitConfig,
    Alert => alert::AlertConfig,
    Drift => drift::DriftConfig,
    Eval => eval::EvalConfig,
    Gate => gate::GateConfig,
    Track => track::TrackConfig,
    Deploy => deploy::DeployConfig,
}

impl Operator {
    /// The fields of `with` this operator renders itself, with context the worker does not
    /// have (see [`crate::template::Deferred`]): `deploy`'s hook body, rendered for each step.
    pub fn deferred_fields(self) -> &'static [crate::template::Deferred] {
        match self {
            Operator::Deploy => deploy::hook::DEFERRED,
            _ => &[],
        }
    }
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn static_error(operator: Operator, with: Value) -> Option<String> {
        operator.check_static(&with).err().map(|e| e.to_string())
    }

    #[test]
    fn static_checks_report_what_needs_no_rendering() {
        let both =
            json!({"url": "{{ vars.base }}/x", "json": {"a": "{{ params.a }}"}, "body": "b"});
        assert!(static_error(Operator::Http, both).is_some_and(|e| e.contains("not both")));
        let zero = json!({"url": "http://x", "timeout": "0s"});
        assert!(static_error(Operator::Http, zero).is_some_and(|e| e.contains("longer than zero")));
        let silent = json!({"severity": "info"});
        assert!(static_error(Operator::Alert, silent).is_some_and(|e| e.contains("`webhook`")));
        let never = json!({"attempts": 0, "webhook": {"url": "{{ secrets.HOOK }}", "text": "{{ run.id }}"}});
        assert!(static_error(Operator::Alert, never).is_some_and(|e| e.contains("at least 1")));
        // What is written still counts beside a field a template fills.
        let beside = json!({"url": "http://x", "timeout": "{{ params.t }}", "expect_status": [99]});
        assert!(static_error(Operator::Http, beside).is_some_and(|e| e.contains("not an HTTP")));
    }

    #[test]
    fn static_checks_leave_templated_fields_to_run_time() {
        let typed = json!({"url": "{{ params.u }}", "timeout": "{{ params.t }}", "method": "{{ params.m }}"});
        assert_eq!(static_error(Operator::Http, typed), None);
        let quotes = json!({"url": "http://x", "timeout": "{{ params[\"t\"] }}"});
        assert_eq!(static_error(Operator::Http, quotes), None);
        let count = json!({"attempts": "{{ params.n }}", "webhook": {"url": "u", "text": "t"}});
        assert_eq!(static_error(Operator::Alert, count), None);
        let listed = json!({"url": "http://x", "expect_status": [200, "{{ params.s }}"]});
        assert_eq!(static_error(Operator::Http, listed), None);
        // A whole field from a template: that it is missing proves nothing.
        let whole = json!({"email": "{{ params.mail }}"});
        assert_eq!(static_error(Operator::Alert, whole), None);
        assert_eq!(static_error(Operator::Noop, Value::Null), None);
        assert_eq!(
            static_error(Operator::Http, json!("{{ params.request }}")),
            None
        );
        // An untagged enum's error quotes nothing: the templated field is still left out,
        // and what is written beside it is still checked.
        let columns =
            json!({"reference": "r.csv", "current": "c.csv", "columns": "{{ params.cols }}"});
        assert_eq!(static_error(Operator::Drift, columns), None);
        let beside = json!({"reference": "r.csv", "current": "c.csv",
                            "columns": "{{ params.cols }}", "sharee": 0.5});
        assert!(static_error(Operator::Drift, beside).is_some_and(|e| e.contains("sharee")));
    }
}
