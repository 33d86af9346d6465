//! Templating with minijinja: the render context (params, run, tasks, event, secrets, …),
//! the native-value rule (a string that is exactly one `{{ expression }}` yields the value)
//! and the budget every render runs under (fuel, plus a wall-clock limit off the async threads).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::secrets::{self, Secrets};

/// A template that could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    /// The 1-based line inside the template source, when known.
    pub line: Option<u32>,
}

impl TemplateError {
    /// The same error, saying which field of the workflow held the template
    /// (`with.command`, `env.TOKEN`, `if`, `params.n`).
    pub fn in_field(self, field: &str) -> TemplateError {
        TemplateError {
            message: format!("`{field}`: {}", self.message),
            line: self.line,
        }
    }
}

/// How much one render may do, so a template that loops for ever (or builds gigabytes of
/// text) fails its task instead of freezing the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderBudget {
    /// minijinja's fuel for one template string: about one unit per instruction and one per
    /// 64 bytes of text or data the template creates, so it bounds both time and memory.
    pub fuel: u64,
    /// How long [`Templates::off_thread`] waits for a render (all the strings of one field)
    /// before it gives up; the fuel ends the abandoned render soon after.
    pub time: Duration,
}

impl RenderBudget {
    /// Far above what real templates use (rendering a 10,000-row list costs about 100,000;
    /// the budget allows about 128 MB of text), and small enough that a runaway loop fails
    /// within about a second.
    pub const DEFAULT: RenderBudget = RenderBudget {
        fuel: 2_000_000,
        time: Duration::from_secs(10),
    };
}

impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget::DEFAULT
    }
}

/// Whether a string contains template syntax at all (most strings do not: they are copied
/// as they are, without compiling anything).
pub fn contains_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// A field of a task's `with` that its operator renders itself, later, with context of its
/// own (a rollout's hook body, rendered for each step with `step`). The worker leaves the
/// templates there alone and `dag::compile` checks them against `roots`. A string there that
/// uses `{% raw %}` is still rendered by the worker first, as before the field was deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    /// The path below `with`: `hook.json`.
    pub path: &'static str,
    /// The context's top-level names when the operator renders it.
    pub roots: &'static [&'static str],
}

impl Deferred {
    /// Whether `path` (below `with`, as `hook.json.weights` or `hook.json[0]`) lies in the
    /// deferred field.
    pub fn covers(&self, path: &str) -> bool {
        path.strip_prefix(self.path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    }
}

/// Whether the deferred field that holds `source` is left to its operator: everything but
/// text that still uses `{% raw %}`, the older way to keep a template for the operator.
pub fn left_to_operator(source: &str) -> bool {
    !uses_raw(source)
}

/// Whether a template has a `{% raw %}` block.
fn uses_raw(source: &str) -> bool {
    source.match_indices("{%").any(|(at, _)| {
        let rest = source[at + 2..].trim_start_matches(['-', '+']).trim_start();
        rest.strip_prefix("raw")
            .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    })
}

/// Checks a template's syntax without rendering it (for `sluice validate`).
pub fn check_syntax(source: &str) -> Result<(), TemplateError> {
    if !contains_template(source) {
        return Ok(());
    }
    let env = minijinja::Environment::new();
    env.template_from_str(source)
        .map(drop)
        .map_err(|e| TemplateError {
            message: e.to_string(),
            line: e.line().map(|l| l as u32),
        })
}

/// The deferred fields a render leaves alone; paths are compared below the field rendered
/// (`prefix` is its length with the dot).
struct Skip<'a> {
    prefix: usize,
    deferred: &'a [Deferred],
}

impl Skip<'_> {
    const NOTHING: Skip<'static> = Skip {
        prefix: 0,
        deferred: &[],
    };

    fn leaves(&self, path: &str, source: &str) -> bool {
        !self.deferred.is_empty()
            && path
                .get(self.prefix..)
                .is_some_and(|below| self.deferred.iter().any(|d| d.covers(below)))
            && left_to_operator(source)
    }
}

/// The template engine: one minijinja environment shared by every render.
///
/// Undefined values are strict: `{{ params.typo }}` is an error naming `params.typo` rather
/// than an empty string that would silently reach a command line.
///
/// Every render is bounded by the engine's [`RenderBudget`]: fuel is set on the environment,
/// so no render can skip it, and [`Templates::off_thread`] adds the wall-clock limit for
/// callers on async threads.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    budget: RenderBudget,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        Self::with_budget(RenderBudget::DEFAULT)
    }

    /// An engine whose renders get `budget` instead of [`RenderBudget::DEFAULT`].
    pub fn with_budget(budget: RenderBudget) -> Self {
        // `Environment::new` already carries minijinja's built-in filters, tests and functions
        // (`tojson`, `default`, `join`, `length`, `lower`, `replace`, `range`, `dictsort`, …).
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Debug mode makes undefined-value errors name the expression (`params.typo` is
        // undefined). Its extra information is only used on errors, so renders cost the same.
        env.set_debug(true);
        // A template's text is kept exactly: minijinja would otherwise drop a final newline,
        // which matters for scripts and message bodies written as YAML block scalars.
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.keep_trailing_newline(true);
        if let Ok(syntax) = syntax.build() {
            env.set_syntax(syntax);
        }
        env.set_fuel(Some(budget.fuel));
        env.add_filter("fromjson", fromjson);
        env.add_filter("shell_quote", shell_quote);
        // Shell commands, URLs and JSON bodies expect `true`/`false`, as GitHub Actions
        // renders them, not Python's `True`/`False`.
        env.set_formatter(|out, state, value| {
            if value.kind() == minijinja::value::ValueKind::Bool {
                let text = if value.is_true() { "true" } else { "false" };
                return out.write_str(text).map_err(|_| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write output")
                });
            }
            minijinja::escape_formatter(out, state, value)
        });
        Templates { env, budget }
    }

    /// Runs `render` on tokio's blocking pool and waits at most the budget's time for it, so
    /// a slow template never holds an async thread (and with it timers, HTTP requests and
    /// signal handling). A render that runs out of time is abandoned: its fuel stops it.
    /// `field` names what is rendered in the time-out error; `render` names its own errors.
    pub async fn off_thread<T, F>(
        self: &Arc<Self>,
        field: &str,
        render: F,
    ) -> Result<T, TemplateError>
    where
        T: Send + 'static,
        F: FnOnce(&Templates) -> Result<T, TemplateError> + Send + 'static,
    {
        let templates = Arc::clone(self);
        let job = tokio::task::spawn_blocking(move || render(&templates));
        let failure = match tokio::time::timeout(self.budget.time, job).await {
            Ok(Ok(result)) => return result,
            Ok(Err(stopped)) => format!("the render stopped unexpectedly ({stopped})"),
            Err(_) => format!(
                "rendering took longer than {}, the limit for one field; the template does too \
                 much work",
                humantime::format_duration(self.budget.time)
            ),
        };
        Err(TemplateError {
            message: failure,
            line: None,
        }
        .in_field(field))
    }

    /// [`Templates::render_str`] for a field of the workflow (`env.TOKEN`): errors name it.
    pub fn render_str_field(
        &self,
        field: &str,
        source: &str,
        ctx: &minijinja::Value,
    ) -> Result<String, TemplateError> {
        self.render_str(source, ctx).map_err(|e| e.in_field(field))
    }

    /// [`Templates::eval_condition`] for a field of the workflow (`if`): errors name it.
    pub fn eval_condition_field(
        &self,
        field: &str,
        source: &str,
        ctx: &minijinja::Value,
    ) -> Result<bool, TemplateError> {
        self.eval_condition(source, ctx)
            .map_err(|e| e.in_field(field))
    }

    /// Renders every string inside a JSON value: map values and sequence items, at any depth
    /// (keys are not templates). A string that is exactly one `{{ expression }}` becomes the
    /// expression's native value; other strings with template syntax are rendered as text;
    /// strings without template syntax are copied untouched.
    pub fn render_value(
        &self,
        value: &Value,
        ctx: &minijinja::Value,
    ) -> Result<Value, TemplateError> {
        self.render_at(value, ctx, &mut String::new(), &Skip::NOTHING)
    }

    /// [`Templates::render_value`] for a field of the workflow: an error names the exact place
    /// that failed below `field` (`with.headers.Authorization`, `with.args[2]`).
    pub fn render_field(
        &self,
        field: &str,
        value: &Value,
        ctx: &minijinja::Value,
    ) -> Result<Value, TemplateError> {
        self.render_field_deferring(field, value, ctx, &[])
    }

    /// [`Templates::render_field`], leaving the strings of the `deferred` fields (paths below
    /// `field`) as they are, for their operator to render (see [`Deferred`]).
    pub fn render_field_deferring(
        &self,
        field: &str,
        value: &Value,
        ctx: &minijinja::Value,
        deferred: &[Deferred],
    ) -> Result<Value, TemplateError> {
        let mut path = field.to_owned();
        let skip = Skip {
            prefix: field.len() + 1,
            deferred,
        };
        self.render_at(value, ctx, &mut path, &skip)
            .map_err(|e| e.in_field(&path))
    }

    /// Renders `value`; on error `path` is left pointing at the string that failed.
    fn render_at(
        &self,
        value: &Value,
        ctx: &minijinja::Value,
        path: &mut String,
        skip: &Skip<'_>,
    ) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(source) if skip.leaves(path, source) => value.clone(),
            Value::String(source) => self.render_native(source, ctx)?,
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{index}]"));
                    out.push(self.render_at(item, ctx, path, skip)?);
                    path.truncate(len);
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (key, item) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    out.insert(key.clone(), self.render_at(item, ctx, path, skip)?);
                    path.truncate(len);
                }
                Value::Object(out)
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
        })
    }

    /// Renders one string by the native-value rule (see [`Templates::render_value`]).
    pub fn render_native(
        &self,
        source: &str,
        ctx: &minijinja::Value,
    ) -> Result<Value, TemplateError> {
        if !contains_template(source) {
            return Ok(Value::String(source.to_owned()));
        }
        match single_expression(source) {
            Some(expr) => {
                let value = self.eval_expression(source, expr, ctx)?;
                to_json(&value).map_err(|message| error_in(source, None, &message, ctx))
            }
            None => self.render_text(source, ctx).map(Value::String),
        }
    }

    /// Renders a template as text.
    pub fn render_str(
        &self,
        source: &str,
        ctx: &minijinja::Value,
    ) -> Result<String, TemplateError> {
        if !contains_template(source) {
            return Ok(source.to_owned());
        }
        self.render_text(source, ctx)
    }

    /// Evaluates a task's `if`. A single `{{ expression }}` decides by its value's truthiness;
    /// anything else is rendered and must read `true` or `false` (an empty result is false,
    /// so `{% if … %}true{% endif %}` works too).
    pub fn eval_condition(
        &self,
        source: &str,
        ctx: &minijinja::Value,
    ) -> Result<bool, TemplateError> {
        if let Some(expr) = single_expression(source) {
            let value = self.eval_expression(source, expr, ctx)?;
            return Ok(value.is_true());
        }
        let text = self.render_str(source, ctx)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            _ => Err(TemplateError {
                message: format!(
                    "the condition {} rendered to {:?}, which is neither true nor false; \
                     write it as one expression, like `{{{{ params.x > 3 }}}}`",
                    quote_source(source),
                    truncate(&mask_with(ctx, &text), 80)
                ),
                line: None,
            }),
        }
    }

    fn render_text(&self, source: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        self.env
            .render_str(source, ctx)
            .map_err(|e| self.failure(source, &e, ctx))
    }

    fn failure(
        &self,
        source: &str,
        err: &minijinja::Error,
        ctx: &minijinja::Value,
    ) -> TemplateError {
        if err.kind() == ErrorKind::OutOfFuel {
            let message = format!(
                "the template did more work than one render may do ({} steps): a loop runs \
                 too long or builds too much text",
                self.budget.fuel
            );
            return error_in(source, None, &message, ctx);
        }
        from_minijinja(source, err, ctx)
    }

    fn eval_expression(
        &self,
        source: &str,
        expr: &str,
        ctx: &minijinja::Value,
    ) -> Result<minijinja::Value, TemplateError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| self.failure(source, &e, ctx))?;
        let value = compiled
            .eval(ctx)
            .map_err(|e| self.failure(source, &e, ctx))?;
        if value.is_undefined() {
            // Strict mode rejects `params.typo` but lets a bare unknown name through as
            // undefined; that is just as much a mistake.
            let message = format!("undefined value (`{expr}` is undefined)");
            return Err(error_in(source, None, &message, ctx));
        }
        Ok(value)
    }
}

/// The expression inside a string that is exactly one `{{ expression }}` (surrounding
/// whitespace and whitespace-control markers allowed), or `None` for any other string.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    // `{{ a }} and {{ b }}` also starts and ends with braces; it is text, not one expression.
    if contains_template(inner) || inner.contains("}}") || inner.contains("%}") {
        return None;
    }
    Some(inner.trim())
}

/// `fromjson`: parses a JSON string (for instance a command's output) into a value.
fn fromjson(text: &str) -> Result<minijinja::Value, minijinja::Error> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("fromjson: invalid JSON ({e})"),
        )
    })?;
    Ok(from_json(&value))
}

/// `shell_quote`: the value as one POSIX shell word, in single quotes (`'` becomes `'\''`),
/// so `sh -c` reads it as text whatever it holds. A list becomes its items quoted one by one
/// and joined by spaces. Numbers and booleans are quoted as their text.
fn shell_quote(value: &minijinja::Value) -> Result<String, minijinja::Error> {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            let mut words = Vec::new();
            for item in value.try_iter()? {
                words.push(shell_quote(&item)?);
            }
            Ok(words.join(" "))
        }
        ValueKind::Map | ValueKind::Plain | ValueKind::Invalid => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "shell_quote: only text, numbers, booleans and lists of them can be quoted",
        )),
        ValueKind::Bool => Ok(quote_word(if value.is_true() { "true" } else { "false" })?),
        ValueKind::Bytes => quote_word(&String::from_utf8_lossy(
            value.as_bytes().unwrap_or_default(),
        )),
        _ => match value.as_str() {
            Some(text) => quote_word(text),
            None => quote_word(&value.to_string()),
        },
    }
}

/// One word in single quotes. A NUL byte cannot be part of a process argument at all, so it
/// is refused rather than silently cutting the command.
fn quote_word(text: &str) -> Result<String, minijinja::Error> {
    if text.contains('\0') {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "shell_quote: the text holds a NUL byte, which no shell argument can hold",
        ));
    }
    Ok(format!("'{}'", text.replace('\'', r"'\''")))
}

// ---------------------------------------------------------------------------------------------
// Errors

fn from_minijinja(source: &str, err: &minijinja::Error, ctx: &minijinja::Value) -> TemplateError {
    // `kind: detail` only: the alternate (debug) form would print the values of the variables
    // the template referenced, which can include secrets.
    let message = match err.detail() {
        Some(detail) => format!("{}: {}", err.kind(), detail),
        None => err.kind().to_string(),
    };
    let line = err.line().map(|l| l as u32);
    error_in(source, line, &message, ctx)
}

fn error_in(
    source: &str,
    line: Option<u32>,
    message: &str,
    ctx: &minijinja::Value,
) -> TemplateError {
    let place = match line {
        // A multi-line template: point at the line, not the whole text.
        Some(n) if source.trim().contains('\n') => {
            let text = source
                .lines()
                .nth((n as usize).saturating_sub(1))
                .unwrap_or("")
                .trim();
            format!("line {n} of the template (`{}`)", truncate(text, 80))
        }
        _ => quote_source(source),
    };
    TemplateError {
        message: mask_with(ctx, &format!("{place}: {message}")),
        line,
    }
}

fn quote_source(source: &str) -> String {
    let source = source.trim();
    match source.lines().next() {
        Some(first) if first.len() < source.len() => format!("`{}…`", truncate(first, 80)),
        _ => format!("`{}`", truncate(source, 80)),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Masks secret values in a message, using the secrets of the render context when it has any.
fn mask_with(ctx: &minijinja::Value, text: &str) -> String {
    let secrets = ctx.get_attr("secrets").ok();
    match secrets
        .as_ref()
        .and_then(|s| s.downcast_object_ref::<SecretsObject>())
    {
        Some(object) => object.masker.mask(text).into_owned(),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The render context

/// What a run is, as templates see it under `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub id: String,
    pub workflow: String,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// How the run started: `manual`, `schedule`, `github`, `workflow`, `backfill`, `api`.
    pub trigger: String,
    /// Who or what started it (a user, a webhook delivery, an upstream run), when known.
    pub triggered_by: Option<String>,
    pub try_number: u32,
    /// The run's page in the UI (`Config::run_url`), where the process knows it.
    pub url: Option<String>,
}

/// Everything a template can refer to.
#[derive(Debug, Clone)]
pub struct RenderContext {
    pub params: Map<String, Value>,
    pub run: RunInfo,
    /// Task id → `{"outputs": {…}, "state": "success"}` for the tasks that finished.
    pub tasks: Map<String, Value>,
    /// The trigger's payload (a GitHub event), or null.
    pub event: Value,
    /// The upstream run that triggered this one (workflow triggers), or null.
    pub upstream: Value,
    /// In hooks: the run's failed tasks, each `{"id", "error", "try_number"}`; empty elsewhere.
    pub failed_tasks: Vec<Value>,
    pub vars: Map<String, Value>,
    pub secrets: Arc<Secrets>,
}

impl RenderContext {
    /// The context as minijinja sees it: `params`, `run`, `ds`, `ts`, `tasks`, `event`,
    /// `upstream`, `failed_tasks`, `vars` and `secrets`.
    pub fn to_value(&self) -> minijinja::Value {
        self.to_value_with(&ArtifactPaths::default())
    }

    /// The context with `tasks.<id>.artifacts` taken from `artifacts`: each finished task gets
    /// a map of its artifact names to the local paths they are fetched to.
    pub fn to_value_with(&self, artifacts: &ArtifactPaths) -> minijinja::Value {
        let run = &self.run;
        let ts = rfc3339(&run.logical_date);
        let run_value = minijinja::Value::from_object(OrderedMap(IndexMap::from_iter([
            ("id".to_owned(), minijinja::Value::from(run.id.as_str())),
            (
                "workflow".to_owned(),
                minijinja::Value::from(run.workflow.as_str()),
            ),
            (
                "logical_date".to_owned(),
                minijinja::Value::from(ts.as_str()),
            ),
            (
                "data_interval_start".to_owned(),
                minijinja::Value::from(rfc3339(&run.data_interval_start)),
            ),
            (
                "data_interval_end".to_owned(),
                minijinja::Value::from(rfc3339(&run.data_interval_end)),
            ),
            (
                "trigger".to_owned(),
                minijinja::Value::from(run.trigger.as_str()),
            ),
            (
                "triggered_by".to_owned(),
                minijinja::Value::from(run.triggered_by.clone()),
            ),
            (
                "try_number".to_owned(),
                minijinja::Value::from(run.try_number),
            ),
            ("url".to_owned(), minijinja::Value::from(run.url.clone())),
        ])));
        let root: IndexMap<String, minijinja::Value> = [
            ("params", map_to_value(&self.params)),
            ("run", run_value),
            (
                "ds",
                minijinja::Value::from(run.logical_date.format("%Y-%m-%d").to_string()),
            ),
            ("ts", minijinja::Value::from(ts)),
            ("tasks", tasks_to_value(&self.tasks, artifacts)),
            ("event", from_json(&self.event)),
            ("upstream", from_json(&self.upstream)),
            (
                "failed_tasks",
                from_json(&Value::Array(self.failed_tasks.clone())),
            ),
            ("vars", map_to_value(&self.vars)),
            (
                "secrets",
                minijinja::Value::from_object(SecretsObject {
                    masker: self.secrets.masker(),
                    secrets: Arc::clone(&self.secrets),
                }),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        minijinja::Value::from_object(OrderedMap(root))
    }
}

/// `tasks`: each task's JSON (`outputs`, `state`) plus its `artifacts`.
fn tasks_to_value(tasks: &Map<String, Value>, artifacts: &ArtifactPaths) -> minijinja::Value {
    minijinja::Value::from_object(OrderedMap(
        tasks
            .iter()
            .map(|(id, task)| {
                let mut fields: IndexMap<String, minijinja::Value> = match task {
                    Value::Object(map) => {
                        map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()
                    }
                    _ => IndexMap::new(),
                };
                fields.insert(
                    "artifacts".to_owned(),
                    minijinja::Value::from_object(TaskArtifacts {
                        task: id.clone(),
                        paths: artifacts.by_task.get(id).cloned().unwrap_or_default(),
                        used: artifacts.used.clone(),
                    }),
                );
                (
                    id.clone(),
                    minijinja::Value::from_object(OrderedMap(fields)),
                )
            })
            .collect(),
    ))
}

/// `tasks.<id>.artifacts` for a render: per task, artifact name → the local path it is
/// fetched to. Reading a path records it, so only the artifacts a template uses are fetched
/// (by the worker, after rendering: the render itself does no IO).
#[derive(Debug, Clone, Default)]
pub struct ArtifactPaths {
    by_task: std::collections::BTreeMap<String, IndexMap<String, String>>,
    used: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl ArtifactPaths {
    pub fn insert(&mut self, task: &str, name: &str, local_path: String) {
        self.by_task
            .entry(task.to_owned())
            .or_default()
            .insert(name.to_owned(), local_path);
    }

    /// The local paths renders have read so far.
    pub fn used(&self) -> Vec<String> {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[derive(Debug)]
struct TaskArtifacts {
    task: String,
    paths: IndexMap<String, String>,
    used: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Object for TaskArtifacts {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let name = key.as_str()?;
        Some(match self.paths.get(name) {
            Some(path) => {
                self.used
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.clone());
                minijinja::Value::from(path.as_str())
            }
            // Strict undefined would only say "undefined value"; this names what exists.
            None => minijinja::Value::from(minijinja::Error::new(
                ErrorKind::UndefinedError,
                format!(
                    "task `{}` kept no artifact named `{name}`{}",
                    self.task,
                    if self.paths.is_empty() {
                        String::from(" (it kept none)")
                    } else {
                        format!(
                            "; it kept: {}",
                            self.paths.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                ),
            )),
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.paths
                .keys()
                .map(|k| minijinja::Value::from(k.as_str()))
                .collect(),
        )
    }
}

fn rfc3339(date: &DateTime<Utc>) -> String {
    date.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `secrets.NAME` in templates. Not enumerable and rendered as a placeholder, so
/// `{{ secrets }}` or `{{ secrets | tojson }}` cannot dump every secret at once.
struct SecretsObject {
    secrets: Arc<Secrets>,
    masker: secrets::Masker,
}

impl fmt::Debug for SecretsObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secrets>")
    }
}

impl Object for SecretsObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let name = key.as_str()?;
        Some(match self.secrets.get(name) {
            Some(value) => minijinja::Value::from(value),
            // An invalid value fails the render where it is used, with this message; returning
            // None would give only minijinja's generic "undefined value".
            None => minijinja::Value::from(minijinja::Error::new(
                ErrorKind::UndefinedError,
                format!(
                    "the secret `{name}` is not set; set the environment variable \
                     `{}{name}` for the server and workers",
                    secrets::ENV_PREFIX
                ),
            )),
        })
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secrets>")
    }
}

/// A JSON object as a minijinja map that keeps the JSON's key order (minijinja's own maps sort
/// their keys), so `{{ tasks.a.outputs }}` comes out in the order the task wrote it.
#[derive(Debug)]
struct OrderedMap(IndexMap<String, minijinja::Value>);

impl Object for OrderedMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.0.get(key.as_str()?).cloned()
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<minijinja::Value> {
        self.0.get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| {
            Box::new(this.0.keys().map(|k| minijinja::Value::from(k.as_str())))
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

fn map_to_value(map: &Map<String, Value>) -> minijinja::Value {
    minijinja::Value::from_object(OrderedMap(
        map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
    ))
}

/// A JSON value as a minijinja value.
pub fn from_json(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => {
            minijinja::Value::from(items.iter().map(from_json).collect::<Vec<_>>())
        }
        Value::Object(map) => map_to_value(map),
    }
}

/// A minijinja value as JSON (the native value of a single-expression string).
fn to_json(value: &minijinja::Value) -> Result<Value, String> {
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(value.clone()) {
                Value::from(i)
            } else if let Ok(u) = u64::try_from(value.clone()) {
                Value::from(u)
            } else {
                let f = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("the result {f} is not a number JSON can hold"))?
            }
        }
        ValueKind::String => Value::String(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::Bytes => {
            Value::String(String::from_utf8_lossy(value.as_bytes().unwrap_or_default()).into())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items = value.try_iter().map_err(|e| e.to_string())?;
            Value::Array(items.map(|item| to_json(&item)).collect::<Result<_, _>>()?)
        }
        ValueKind::Map => {
            let mut out = Map::new();
            for key in value.try_iter().map_err(|e| e.to_string())? {
                let item = value.get_item(&key).map_err(|e| e.to_string())?;
                let key = match key.as_str() {
                    Some(k) => k.to_owned(),
                    None => key.to_string(),
                };
                out.insert(key, to_json(&item)?);
            }
            Value::Object(out)
        }
        // Functions, macros and the secrets object have no JSON form; use their text.
        ValueKind::Plain => Value::String(value.to_string()),
        ValueKind::Invalid => {
            return Err(value.to_string());
        }
        _ => Value::String(value.to_string()),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading a template without rendering it (`sluice validate`)

/// The names under `run` in the render context (see [`RenderContext::to_value`]).
pub const RUN_FIELDS: &[&str] = &[
    "id",
    "workflow",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "trigger",
    "triggered_by",
    "try_number",
    "url",
];

/// What each entry of `tasks` holds (see [`RenderContext::tasks`]).
pub const TASK_RESULT_FIELDS: &[&str] = &["outputs", "state", "artifacts"];

/// What `upstream` holds in a `workflow` trigger's templates: the run that ended.
pub const UPSTREAM_FIELDS: &[&str] = &["workflow", "run_id", "state", "outputs"];

/// minijinja's built-in filters and tests and Sluice's own, as candidates for "did you mean";
/// each is offered only if the engine really has it.
const FILTER_CANDIDATES: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "fromjson",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "shell_quote",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
];
const TEST_CANDIDATES: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "int",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// What a template reads and applies, found without rendering it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The context values it reads, as dotted paths (`params.model`, `tasks.a.outputs.x`,
    /// `ds`), sorted. Names the template defines itself (loop variables, `{% set %}`) are not
    /// included; the engine's global functions (`range`, `namespace`, …) are.
    pub variables: Vec<Variable>,
    /// The filters it applies, in order of first use.
    pub filters: Vec<String>,
    /// The tests it applies (`is defined`, `is odd`), in order of first use.
    pub tests: Vec<String>,
    /// Its `{{ … }}` expressions, in order.
    pub interpolations: Vec<Interpolation>,
}

/// One context value a template reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub path: String,
    /// Somewhere it is read through `default` or tested with `is defined`, so the template
    /// itself handles its absence.
    pub guarded: bool,
}

/// One `{{ … }}` expression: what it reads and whether its text is shell-quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolation {
    /// The context values it reads, as dotted paths, sorted.
    pub variables: Vec<String>,
    /// Its last filter is `shell_quote`, so what it prints is one quoted shell word.
    pub shell_quoted: bool,
}

/// Reads a template without rendering it: the values, filters and tests it uses. A string
/// without template syntax uses nothing; a template that does not compile is an error (the
/// same one [`check_syntax`] gives).
pub fn analyze(source: &str) -> Result<Analysis, TemplateError> {
    if !contains_template(source) {
        return Ok(Analysis::default());
    }
    let env = Environment::new();
    let template = env.template_from_str(source).map_err(|e| TemplateError {
        message: e.to_string(),
        line: e.line().map(|l| l as u32),
    })?;
    let mut paths: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    paths.sort();
    let variables = paths
        .into_iter()
        .map(|path| Variable {
            guarded: is_guarded(source, &path),
            path,
        })
        .collect();
    let mut analysis = Analysis {
        variables,
        ..Analysis::default()
    };
    for block in blocks(source) {
        let tokens = &block.tokens;
        let add = |list: &mut Vec<String>, name: &str| {
            if !list.iter().any(|n| n == name) {
                list.push(name.to_owned());
            }
        };
        for (i, token) in tokens.iter().enumerate() {
            match (token, tokens.get(i + 1), tokens.get(i + 2)) {
                (Token::Pipe, Some(Token::Ident(name)), _) => add(&mut analysis.filters, name),
                (Token::Ident("is"), Some(Token::Ident("not")), Some(Token::Ident(name)))
                | (Token::Ident("is"), Some(Token::Ident(name)), _)
                    if i == 0 || tokens[i - 1] != Token::Punct('.') =>
                {
                    add(&mut analysis.tests, name);
                }
                _ => {}
            }
        }
        if block.statement {
            // `{% filter upper %}…{% endfilter %}` applies a filter by name.
            if let (Some(Token::Ident("filter")), Some(Token::Ident(name))) =
                (tokens.first(), tokens.get(1))
            {
                add(&mut analysis.filters, name);
            }
            continue;
        }
        let mut variables: Vec<String> = env
            .compile_expression(block.inner)
            .map(|e| e.undeclared_variables(true).into_iter().collect())
            .unwrap_or_default();
        variables.sort();
        analysis.interpolations.push(Interpolation {
            variables,
            shell_quoted: ends_with_shell_quote(tokens),
        });
    }
    Ok(analysis)
}

/// The tasks whose results (`tasks.<id>…`) the given templates read, so a render loads only
/// those; `None` when one reads `tasks` as a whole, or cannot be analysed (its render will
/// say why), and every task's result must be loaded.
pub fn tasks_read<'a>(
    sources: impl IntoIterator<Item = &'a str>,
) -> Option<std::collections::BTreeSet<String>> {
    let mut tasks = std::collections::BTreeSet::new();
    for source in sources {
        for variable in analyze(source).ok()?.variables {
            match variable.path.strip_prefix("tasks") {
                Some("") => return None,
                Some(rest) => {
                    let id = rest.strip_prefix('.')?.split('.').next()?;
                    tasks.insert(id.to_owned());
                }
                None => {}
            }
        }
    }
    Some(tasks)
}

/// Whether the engine has a filter of this name.
pub fn is_filter(name: &str) -> bool {
    engine_knows("name is filter", name)
}

/// Whether the engine has a test of this name.
pub fn is_test(name: &str) -> bool {
    engine_knows("name is test", name)
}

/// The names of the engine's filters, for suggestions.
pub fn filter_names() -> Vec<&'static str> {
    FILTER_CANDIDATES
        .iter()
        .copied()
        .filter(|n| is_filter(n))
        .collect()
}

/// The names of the engine's tests, for suggestions.
pub fn test_names() -> Vec<&'static str> {
    TEST_CANDIDATES
        .iter()
        .copied()
        .filter(|n| is_test(n))
        .collect()
}

/// The engine's global functions (`range`, `dict`, `namespace`, …), which every template can
/// call without them being in the context.
pub fn global_names() -> Vec<String> {
    engine().env.globals().map(|(n, _)| n.to_owned()).collect()
}

fn engine() -> &'static Templates {
    static ENGINE: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    ENGINE.get_or_init(Templates::new)
}

/// Asks the engine itself, through its `filter`/`test` tests, so the answer cannot drift from
/// what renders.
fn engine_knows(expression: &'static str, name: &str) -> bool {
    engine()
        .env
        .compile_expression(expression)
        .and_then(|e| e.eval(minijinja::context! { name }))
        .is_ok_and(|v| v.is_true())
}

/// Whether some use of `path` in `source` goes through `default`/`d` or is tested with
/// `is defined`/`is undefined`.
fn is_guarded(source: &str, path: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    source.match_indices(path).any(|(at, _)| {
        if source[..at]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == '.')
        {
            return false;
        }
        let after = &source[at + path.len()..];
        if after
            .chars()
            .next()
            .is_some_and(|c| is_ident(c) || c == '.')
        {
            return false;
        }
        let after = after.trim_start();
        if let Some(rest) = after.strip_prefix('|') {
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| is_ident(*c))
                .collect();
            return name == "default" || name == "d";
        }
        if let Some(rest) = after.strip_prefix("is") {
            let mut words = rest.split_whitespace();
            let word = match words.next() {
                Some("not") => words.next(),
                other => other,
            };
            let word: String = word
                .unwrap_or_default()
                .chars()
                .take_while(|c| is_ident(*c))
                .collect();
            return word == "defined" || word == "undefined";
        }
        false
    })
}

/// Whether an expression's last filter (outside brackets) is `shell_quote`, with nothing
/// after it but its arguments.
fn ends_with_shell_quote(tokens: &[Token<'_>]) -> bool {
    let mut depth = 0i32;
    let mut last_pipe = None;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') => depth -= 1,
            Token::Pipe if depth == 0 => last_pipe = Some(i),
            _ => {}
        }
    }
    let Some(pipe) = last_pipe else { return false };
    if tokens.get(pipe + 1) != Some(&Token::Ident("shell_quote")) {
        return false;
    }
    // What follows may only be the filter's own arguments and whitespace-control markers.
    let mut rest = tokens[pipe + 2..]
        .iter()
        .filter(|t| !matches!(t, Token::Punct('-' | '+')));
    match rest.next() {
        None => true,
        Some(Token::Punct('(')) => {
            let mut depth = 1;
            for token in rest.by_ref() {
                match token {
                    Token::Punct('(' | '[' | '{') => depth += 1,
                    Token::Punct(')' | ']' | '}') => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
            depth == 0 && rest.next().is_none()
        }
        Some(_) => false,
    }
}

/// A token of the expression language, as much of it as the analysis needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Pipe,
    /// A string or number literal.
    Literal,
    Punct(char),
}

/// One `{{ … }}` (an expression) or `{% … %}` (a statement), tokenized.
struct Block<'a> {
    statement: bool,
    /// The text between the delimiters, whitespace-control markers removed.
    inner: &'a str,
    tokens: Vec<Token<'a>>,
}

/// The expression and statement blocks of a template, skipping comments and `{% raw %}`.
fn blocks(source: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut in_raw = false;
    while let Some(offset) = source[at..].find('{') {
        let start = at + offset;
        let rest = &source[start..];
        if rest.starts_with("{#") {
            at = rest.find("#}").map_or(source.len(), |end| start + end + 2);
            continue;
        }
        let statement = match rest.as_bytes().get(1) {
            Some(b'{') => false,
            Some(b'%') => true,
            _ => {
                at = start + 1;
                continue;
            }
        };
        let close = if statement { "%}" } else { "}}" };
        let (tokens, inner_end) = tokenize(source, start + 2, close);
        at = (inner_end + close.len()).min(source.len());
        let first = tokens.first().copied();
        if in_raw {
            in_raw = !(statement && first == Some(Token::Ident("endraw")));
            continue;
        }
        if statement && first == Some(Token::Ident("raw")) {
            in_raw = true;
            continue;
        }
        let inner = source[start + 2..inner_end]
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+']);
        out.push(Block {
            statement,
            inner,
            tokens,
        });
    }
    out
}

/// Tokens from `from` up to the closing delimiter (outside string literals); also returns
/// where the delimiter starts (the end of the text when it is missing).
fn tokenize<'a>(source: &'a str, from: usize, close: &str) -> (Vec<Token<'a>>, usize) {
    let mut tokens = Vec::new();
    let bytes = source.as_bytes();
    let mut i = from;
    // A leading whitespace-control marker is not part of the expression.
    if matches!(bytes.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with(close) {
            // `-}}`: drop the marker that came just before.
            if matches!(tokens.last(), Some(Token::Punct('-' | '+')))
                && matches!(bytes.get(i - 1), Some(b'-' | b'+'))
            {
                tokens.pop();
            }
            return (tokens, i);
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
        } else if c == '"' || c == '\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != c as u8 {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
            tokens.push(Token::Literal);
        } else if c.is_alphabetic() || c == '_' {
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Ident(&rest[..len]));
            i += len;
        } else if c.is_ascii_digit() {
            let len = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Literal);
            i += len;
        } else if c == '|' {
            tokens.push(Token::Pipe);
            i += 1;
        } else {
            tokens.push(Token::Punct(c));
            i += c.len_utf8();
        }
    }
    (tokens, bytes.len())
}

#[cfg(test)]
mod tests {

    #[test]
    fn tasks_read_names_the_tasks_a_template_reads_or_none_for_all() {
        let read = tasks_read([
            "{{ tasks.a.outputs.x }} {{ params.n }}",
            "{% if tasks.b is defined %}b{% endif %}",
        ]);
        assert_eq!(
            read,
            Some(["a".to_owned(), "b".to_owned()].into_iter().collect())
        );
        assert_eq!(
            tasks_read(["no template", "{{ ds }}"]),
            Some(Default::default())
        );
        assert_eq!(tasks_read(["{{ tasks | tojson }}"]), None);
        assert_eq!(tasks_read(["{{ tasks[name].outputs }}"]), None);
    }
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn context() -> minijinja::Value {
        let date = Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap();
        RenderContext {
            params: json!({"model": "gpt-4o-mini", "samples": 200, "ratio": 0.5, "dry": false,
                           "tags": ["a", "b"], "cfg": {"z": 1, "a": 2}})
            .as_object()
            .cloned()
            .unwrap(),
            run: RunInfo {
                id: "run-1".into(),
                workflow: "eval_pipeline".into(),
                logical_date: date,
                data_interval_start: date - chrono::Duration::days(1),
                data_interval_end: date,
                trigger: "schedule".into(),
                triggered_by: None,
                try_number: 1,
                url: Some("https://sluice.example.com/runs/run-1".into()),
            },
            tasks: json!({"a": {"outputs": {"x": 42, "metrics": {"f1": 0.9}}, "state": "success"}})
                .as_object()
                .cloned()
                .unwrap(),
            event: json!({"pull_request": {"head": {"sha": "abc123"}}}),
            upstream: Value::Null,
            failed_tasks: vec![json!({"id": "a", "error": "exit code 3", "try_number": 2})],
            vars: json!({"region": "eu"}).as_object().cloned().unwrap(),
            secrets: Arc::new(Secrets::from_pairs([(
                "API_KEY".to_string(),
                "sk-very-secret".to_string(),
            )])),
        }
        .to_value()
    }

    fn render(source: &str) -> Result<Value, TemplateError> {
        Templates::new().render_value(&json!(source), &context())
    }

    #[test]
    fn hooks_see_the_run_link_and_the_failed_tasks() {
        assert_eq!(
            render("{{ run.url }}").unwrap(),
            json!("https://sluice.example.com/runs/run-1")
        );
        assert_eq!(
            render("{% for f in failed_tasks %}{{ f.id }}#{{ f.try_number }}: {{ f.error }}{% endfor %}")
                .unwrap(),
            json!("a#2: exit code 3")
        );
    }

    #[test]
    fn native_values() {
        assert_eq!(render("{{ params.samples }}"), Ok(json!(200)));
        assert_eq!(render("  {{ params.ratio }} "), Ok(json!(0.5)));
        assert_eq!(render("{{ params.dry }}"), Ok(json!(false)));
        assert_eq!(render("{{ params.samples > 3 }}"), Ok(json!(true)));
        assert_eq!(render("{{ params.tags }}"), Ok(json!(["a", "b"])));
        assert_eq!(render("{{ [1, 2] + [3] }}"), Ok(json!([1, 2, 3])));
        assert_eq!(render("{{ none }}"), Ok(Value::Null));
        assert_eq!(render("{{- params.model -}}"), Ok(json!("gpt-4o-mini")));
        // Maps keep the order they were written in.
        let cfg = render("{{ params.cfg }}").unwrap();
        assert_eq!(cfg, json!({"z": 1, "a": 2}));
        assert_eq!(
            cfg.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
        assert_eq!(render("{{ {'k': params.samples} }}"), Ok(json!({"k": 200})));
    }

    #[test]
    fn mixed_text_renders_as_text() {
        assert_eq!(render("n={{ params.samples }}"), Ok(json!("n=200")));
        assert_eq!(
            render("{{ params.samples }}{{ params.samples }}"),
            Ok(json!("200200"))
        );
        assert_eq!(render("{{ 'a' }} and {{ 'b' }}"), Ok(json!("a and b")));
        assert_eq!(
            render("{% if params.dry %}dry{% else %}wet{% endif %}"),
            Ok(json!("wet"))
        );
        assert_eq!(
            render("line\n{{ params.model }}\n"),
            Ok(json!("line\ngpt-4o-mini\n"))
        );
        assert_eq!(
            render("{{ params.tags | tojson }}!"),
            Ok(json!(r#"["a", "b"]!"#))
        );
    }

    #[test]
    fn plain_strings_are_copied() {
        assert_eq!(
            render("just text, with } and {"),
            Ok(json!("just text, with } and {"))
        );
    }

    #[test]
    fn nested_json_is_walked() {
        let templates = Templates::new();
        let with = json!({
            "target": {"openai": {"model": "{{ params.model }}"}},
            "list": ["{{ params.samples }}", 1, null, "x-{{ vars.region }}"],
            "{{ keys }}": "are not templates"
        });
        assert_eq!(
            templates.render_value(&with, &context()),
            Ok(json!({
                "target": {"openai": {"model": "gpt-4o-mini"}},
                "list": [200, 1, null, "x-eu"],
                "{{ keys }}": "are not templates"
            }))
        );
    }

    #[test]
    fn task_outputs_and_event() {
        assert_eq!(render("{{ tasks.a.outputs.x }}"), Ok(json!(42)));
        assert_eq!(
            render("{{ tasks.a.outputs.metrics }}"),
            Ok(json!({"f1": 0.9}))
        );
        assert_eq!(render("{{ tasks.a.state }}"), Ok(json!("success")));
        assert_eq!(
            render("{{ event.pull_request.head.sha }}"),
            Ok(json!("abc123"))
        );
        assert_eq!(render("{{ upstream }}"), Ok(Value::Null));
        assert_eq!(
            render("{{ '{\"k\": [1]}' | fromjson }}"),
            Ok(json!({"k": [1]}))
        );
    }

    #[test]
    fn strict_undefined_names_what_is_missing() {
        let err = render("{{ params.typo }}").unwrap_err();
        assert!(
            err.message.contains("`params.typo` is undefined"),
            "{}",
            err.message
        );
        assert!(
            err.message.starts_with("`{{ params.typo }}`"),
            "{}",
            err.message
        );
        let err = render("model: {{ tasks.b.outputs.x }}").unwrap_err();
        assert!(err.message.contains("tasks.b"), "{}", err.message);
        let err = render("{{ nosuchvar }}").unwrap_err();
        assert!(
            err.message.contains("`nosuchvar` is undefined"),
            "{}",
            err.message
        );
        let err = render("first\nsecond {{ params.nope }}\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.message.starts_with("line 2 of the template"),
            "{}",
            err.message
        );
        // Tests for definedness still work in strict mode.
        assert_eq!(render("{{ params.typo is defined }}"), Ok(json!(false)));
        assert_eq!(render("{{ params.typo | default(7) }}"), Ok(json!(7)));
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = render("{{ params.samples + }}").unwrap_err();
        assert!(err.message.contains("syntax error"), "{}", err.message);
        assert!(check_syntax("{% if x %}").is_err());
        assert!(check_syntax("plain").is_ok());
    }

    #[test]
    fn conditions() {
        let t = Templates::new();
        let ctx = context();
        assert_eq!(t.eval_condition("{{ params.samples > 3 }}", &ctx), Ok(true));
        assert_eq!(t.eval_condition("{{ params.dry }}", &ctx), Ok(false));
        assert_eq!(
            t.eval_condition("{{ run.trigger != 'github' }}", &ctx),
            Ok(true)
        );
        assert_eq!(t.eval_condition("{{ params.tags }}", &ctx), Ok(true));
        assert_eq!(t.eval_condition("true", &ctx), Ok(true));
        assert_eq!(t.eval_condition(" False ", &ctx), Ok(false));
        assert_eq!(
            t.eval_condition("{% if params.dry %}true{% endif %}", &ctx),
            Ok(false)
        );
        let err = t.eval_condition("maybe", &ctx).unwrap_err();
        assert!(
            err.message.contains("neither true nor false"),
            "{}",
            err.message
        );
        assert!(t.eval_condition("{{ params.nope > 1 }}", &ctx).is_err());
    }

    #[test]
    fn booleans_render_lowercase_in_text() {
        let t = Templates::new();
        let ctx = minijinja::context! { yes => true, no => false };
        assert_eq!(
            t.render_str("{{ yes }}/{{ no }}", &ctx).unwrap(),
            "true/false"
        );
        assert_eq!(
            t.render_native("{{ no }}", &ctx).unwrap(),
            Value::Bool(false)
        );
    }

    #[test]
    fn secrets_resolve_and_unknown_secret_says_how_to_set_it() {
        let t = Templates::new();
        let ctx = context();
        assert_eq!(render("{{ secrets.API_KEY }}"), Ok(json!("sk-very-secret")));
        assert_eq!(
            t.render_str("Bearer {{ secrets.API_KEY }}", &ctx),
            Ok("Bearer sk-very-secret".into())
        );
        let err = render("{{ secrets.MISSING }}").unwrap_err();
        assert!(
            err.message.contains("the secret `MISSING` is not set"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("SLUICE_SECRET_MISSING"),
            "{}",
            err.message
        );
        let err = t.render_str("x {{ secrets.MISSING }}", &ctx).unwrap_err();
        assert!(
            err.message.contains("SLUICE_SECRET_MISSING"),
            "{}",
            err.message
        );
        // Secrets cannot be listed or dumped.
        assert_eq!(render("{{ secrets }}"), Ok(json!("<secrets>")));
        assert!(
            !render("{{ secrets | tojson }}")
                .unwrap()
                .to_string()
                .contains("sk-very")
        );
    }

    #[test]
    fn error_messages_never_contain_secret_values() {
        let err = render("{{ secrets.API_KEY | int + undefined_thing }}").unwrap_err();
        assert!(!err.message.contains("sk-very-secret"), "{}", err.message);
        let err = Templates::new()
            .eval_condition("{{ secrets.API_KEY }} {{ 'x' }}", &context())
            .unwrap_err();
        assert!(!err.message.contains("sk-very-secret"), "{}", err.message);
        assert!(err.message.contains("***"), "{}", err.message);
    }

    #[test]
    fn run_dates_ds_and_ts() {
        assert_eq!(render("{{ ds }}"), Ok(json!("2026-11-27")));
        assert_eq!(render("{{ ts }}"), Ok(json!("2026-11-27T02:00:00Z")));
        assert_eq!(
            render("{{ run.logical_date }}"),
            Ok(json!("2026-11-27T02:00:00Z"))
        );
        assert_eq!(
            render("{{ run.data_interval_start }}"),
            Ok(json!("2026-11-26T02:00:00Z"))
        );
        assert_eq!(render("{{ run.triggered_by }}"), Ok(Value::Null));
        assert_eq!(render("{{ run.try_number }}"), Ok(json!(1)));
        assert_eq!(
            render("{{ run.workflow }}-{{ run.id }}"),
            Ok(json!("eval_pipeline-run-1"))
        );
    }

    /// The loop from the bug report: 10^10 iterations, which froze `sluice run` for good.
    const RUNAWAY: &str = "echo {% for i in range(100000) %}{% for j in range(100000) %}\
                           {% endfor %}{% endfor %}done";

    #[test]
    fn a_runaway_loop_runs_out_of_fuel_and_names_its_field() {
        let err = Templates::new()
            .render_field("with", &json!({"command": RUNAWAY}), &context())
            .unwrap_err();
        assert!(
            err.message.starts_with("`with.command`: `echo {% for i"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("more work than one render may do"),
            "{}",
            err.message
        );
    }

    #[test]
    fn huge_text_and_runaway_expressions_run_out_of_fuel() {
        let t = Templates::new();
        let ctx = context();
        // 500 MB of text, each piece well below minijinja's own size limit. On failure only
        // the length is printed.
        let err = t
            .render_str(
                "{% for i in range(100) %}{{ 'x' * 5000000 }}{% endfor %}",
                &ctx,
            )
            .map(|text| text.len())
            .unwrap_err();
        assert!(err.message.contains("more work"), "{}", err.message);
        let err = t
            .eval_condition(
                "{{ range(100000) | map('string') | join | length > 0 and \
                 ('y' * 90000000 + 'y' * 90000000) | length > 0 }}",
                &ctx,
            )
            .unwrap_err();
        assert!(err.message.contains("more work"), "{}", err.message);
        let nested = "{% for i in range(5000) %}{% for j in range(5000) %}{% for k in \
                      range(5000) %}{% endfor %}{% endfor %}{% endfor %}";
        assert!(t.render_native(nested, &ctx).map(|_| ()).is_err());
    }

    #[test]
    fn ordinary_templates_fit_the_budget() {
        let rows = render(
            "{% for i in range(10000) %}{{ i }},{{ params.model }};{% endfor %}{{ params.tags | tojson }}",
        )
        .unwrap();
        assert!(
            rows.as_str()
                .unwrap()
                .ends_with(r#"9999,gpt-4o-mini;["a", "b"]"#)
        );
    }

    #[test]
    fn a_smaller_budget_is_enforced() {
        let t = Templates::with_budget(RenderBudget {
            fuel: 1_000,
            time: Duration::from_secs(1),
        });
        let err = t
            .render_str("{% for i in range(1000) %}{{ i }}{% endfor %}", &context())
            .unwrap_err();
        assert!(err.message.contains("(1000 steps)"), "{}", err.message);
        assert_eq!(t.render_str("{{ 1 + 1 }}", &context()), Ok("2".into()));
    }

    #[test]
    fn field_errors_name_the_nested_place() {
        let with = json!({"target": {"args": ["ok", "{{ params.nope }}"]}});
        let err = Templates::new()
            .render_field("with", &with, &context())
            .unwrap_err();
        assert!(
            err.message.starts_with("`with.target.args[1]`: "),
            "{}",
            err.message
        );
        let err = Templates::new()
            .render_field("params.n", &json!("{{ nope }}"), &context())
            .unwrap_err();
        assert!(err.message.starts_with("`params.n`: "), "{}", err.message);
    }

    #[tokio::test]
    async fn off_thread_gives_up_after_the_time_limit() {
        let t = Arc::new(Templates::with_budget(RenderBudget {
            fuel: RenderBudget::DEFAULT.fuel,
            time: Duration::from_millis(1),
        }));
        let err = t
            .off_thread("with.command", |t| t.render_str(RUNAWAY, &context()))
            .await
            .unwrap_err();
        assert!(
            err.message
                .starts_with("`with.command`: rendering took longer than 1ms"),
            "{}",
            err.message
        );
        let t = Arc::new(Templates::new());
        let rendered = t
            .off_thread("x", |t| t.render_str("{{ params.samples }}", &context()))
            .await;
        assert_eq!(rendered, Ok("200".into()));
    }

    #[test]
    fn single_expression_detection() {
        assert_eq!(single_expression("{{ a.b }}"), Some("a.b"));
        assert_eq!(single_expression(" {{a}} "), Some("a"));
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("{{ a }}x"), None);
        assert_eq!(single_expression("{% if a %}{{ a }}{% endif %}"), None);
    }

    #[test]
    fn shell_quote_makes_one_word_of_anything() {
        let t = Templates::new();
        let quote = |value: Value| {
            t.render_str("{{ v | shell_quote }}", &from_json(&json!({ "v": value })))
        };
        assert_eq!(quote(json!("plain")), Ok("'plain'".into()));
        assert_eq!(quote(json!("")), Ok("''".into()));
        assert_eq!(quote(json!("it's")), Ok(r"'it'\''s'".into()));
        assert_eq!(
            quote(json!("x'; echo INJECTED-$(id -u); echo '")),
            Ok(r"'x'\''; echo INJECTED-$(id -u); echo '\'''".into())
        );
        assert_eq!(quote(json!("two\nlines")), Ok("'two\nlines'".into()));
        assert_eq!(
            quote(json!("héllo ✓ \u{7f}")),
            Ok("'héllo ✓ \u{7f}'".into())
        );
        assert_eq!(quote(json!(42)), Ok("'42'".into()));
        assert_eq!(quote(json!(true)), Ok("'true'".into()));
        assert_eq!(quote(json!(["a b", "c'd"])), Ok(r"'a b' 'c'\''d'".into()));
        assert!(
            quote(json!("nul\u{0}byte"))
                .unwrap_err()
                .message
                .contains("NUL")
        );
        assert!(quote(json!({"k": 1})).is_err());
    }

    /// What `sh -c` makes of the quoted text is the text itself, for every awkward input.
    #[test]
    fn shell_quote_round_trips_through_sh() {
        let t = Templates::new();
        for text in [
            "",
            "'",
            "''",
            "a'b\"c",
            "$(id -u) `id` $HOME \\ \n;|&<>*?",
            "é\t✓\u{1b}[0m",
        ] {
            let ctx = from_json(&json!({ "v": text }));
            let command = t
                .render_str("printf %s {{ v | shell_quote }}", &ctx)
                .unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), text, "{command}");
        }
    }

    #[test]
    fn analysis_lists_what_a_template_reads() {
        let a = analyze(
            "{% set n = params.n %}{% for x in tasks.a.outputs.items %}{{ x | upper }}{% endfor %}\
             {{ n }} {{ run.id }} {{ params.opt | default('') }}{% if params.m is not defined %}{% endif %}\
             {{ range(3) | join(',') }}{% raw %}{{ params.raw | nosuch }}{% endraw %}{# {{ params.c }} #}",
        )
        .unwrap();
        let paths: Vec<(&str, bool)> = a
            .variables
            .iter()
            .map(|v| (v.path.as_str(), v.guarded))
            .collect();
        assert_eq!(
            paths,
            [
                ("params.m", true),
                ("params.n", false),
                ("params.opt", true),
                ("range", false),
                ("run.id", false),
                ("tasks.a.outputs.items", false),
            ]
        );
        assert_eq!(a.filters, ["upper", "default", "join"]);
        assert_eq!(a.tests, ["defined"]);
        assert!(analyze("plain text").unwrap().variables.is_empty());
        assert!(
            analyze("{{ x | what('|') }}{% filter nosuch %}{% endfilter %}")
                .is_ok_and(|a| a.filters == ["what", "nosuch"])
        );
    }

    #[test]
    fn analysis_sees_which_expressions_are_shell_quoted() {
        let a = analyze(
            "echo {{ params.a | shell_quote }} {{ params.b }} {{ params.c | lower | shell_quote -}}\
             {{ event.ref | shell_quote ~ 'x' }} {{ (params.d | shell_quote) }}",
        )
        .unwrap();
        let quoted: Vec<(Vec<String>, bool)> = a
            .interpolations
            .into_iter()
            .map(|i| (i.variables, i.shell_quoted))
            .collect();
        let v = |s: &str| vec![s.to_owned()];
        assert_eq!(
            quoted,
            [
                (v("params.a"), true),
                (v("params.b"), false),
                (v("params.c"), true),
                (v("event.ref"), false),
                (v("params.d"), false),
            ]
        );
    }

    #[test]
    fn the_engine_knows_its_filters_and_tests() {
        assert!(is_filter("shell_quote") && is_filter("fromjson") && is_filter("upper"));
        assert!(!is_filter("uppr"));
        assert!(is_test("defined") && !is_test("definde"));
        assert_eq!(filter_names().len(), FILTER_CANDIDATES.len());
        assert_eq!(test_names().len(), TEST_CANDIDATES.len());
        assert!(global_names().iter().any(|g| g == "range"));
    }

    #[test]
    fn deferred_fields_are_left_to_their_operator_unless_they_use_raw() {
        let hook = Deferred {
            path: "hook.json",
            roots: &["step"],
        };
        let with = json!({
            "url": "{{ vars.region }}",
            "hook": {"url": "{{ params.model }}", "json": {
                "weights": "{{ step.weights }}",
                "old": "{% raw %}{{ step.mode }}{% endraw %}",
                "list": ["{{ step.number }}"],
            }},
            "hooks": "{{ params.samples }}",
        });
        let rendered = Templates::new()
            .render_field_deferring("with", &with, &context(), &[hook])
            .expect("renders");
        assert_eq!(rendered["url"], "eu");
        assert_eq!(
            rendered["hook"]["url"], "gpt-4o-mini",
            "beside the field: rendered"
        );
        assert_eq!(rendered["hook"]["json"]["weights"], "{{ step.weights }}");
        assert_eq!(rendered["hook"]["json"]["list"][0], "{{ step.number }}");
        assert_eq!(
            rendered["hook"]["json"]["old"], "{{ step.mode }}",
            "`raw` is still the worker's"
        );
        assert_eq!(rendered["hooks"], 200, "a longer key is not the field");
        assert!(hook.covers("hook.json") && hook.covers("hook.json[2]"));
        assert!(!hook.covers("hook.jsonx") && !hook.covers("hook"));
        assert!(!left_to_operator("{%- raw %}x{% endraw %}"));
        assert!(left_to_operator("{% rawish %}"));
    }
}

#[cfg(test)]
mod artifact_context_tests {
    use super::*;
    use serde_json::json;

    fn context(artifacts: &ArtifactPaths) -> minijinja::Value {
        let date = Utc::now();
        RenderContext {
            params: Map::new(),
            run: RunInfo {
                id: "run-1".into(),
                workflow: "wf".into(),
                logical_date: date,
                data_interval_start: date,
                data_interval_end: date,
                trigger: "manual".into(),
                triggered_by: None,
                try_number: 1,
                url: None,
            },
            tasks: json!({"score": {"outputs": {"n": 3}, "state": "success"},
                          "other": {"outputs": {}, "state": "success"}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
            event: Value::Null,
            upstream: Value::Null,
            failed_tasks: Vec::new(),
            vars: Map::new(),
            secrets: Arc::new(Secrets::from_pairs([])),
        }
        .to_value_with(artifacts)
    }

    #[test]
    fn artifacts_resolve_to_local_paths_and_only_used_ones_are_recorded() {
        let mut artifacts = ArtifactPaths::default();
        artifacts.insert("score", "results.jsonl", "/cache/ab/results.jsonl".into());
        artifacts.insert("score", "plot.png", "/cache/cd/plot.png".into());
        let templates = Templates::new();
        let rendered = templates
            .render_value(
                &json!("wc -l {{ tasks.score.artifacts['results.jsonl'] }}"),
                &context(&artifacts),
            )
            .expect("render");
        assert_eq!(rendered, json!("wc -l /cache/ab/results.jsonl"));
        assert_eq!(artifacts.used(), ["/cache/ab/results.jsonl"]);
        // Outputs are still where they were.
        let n = templates
            .render_value(&json!("{{ tasks.score.outputs.n }}"), &context(&artifacts))
            .expect("render");
        assert_eq!(n, json!(3));
    }

    #[test]
    fn a_missing_artifact_names_what_the_task_kept() {
        let mut artifacts = ArtifactPaths::default();
        artifacts.insert("score", "results.jsonl", "/cache/ab/results.jsonl".into());
        let templates = Templates::new();
        let error = templates
            .render_value(
                &json!("{{ tasks.score.artifacts['result.jsonl'] }}"),
                &context(&artifacts),
            )
            .unwrap_err();
        assert!(
            error.message.contains(
                "task `score` kept no artifact named `result.jsonl`; it kept: results.jsonl"
            ),
            "{}",
            error.message
        );
        let error = templates
            .render_value(
                &json!("{{ tasks.other.artifacts['x'] }}"),
                &context(&artifacts),
            )
            .unwrap_err();
        assert!(
            error.message.contains("(it kept none)"),
            "{}",
            error.message
        );
    }
}
