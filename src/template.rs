//! Templating with minijinja: the render context (params, run, tasks, event, secrets, …) and
//! the native-value rule (a string that is exactly one `{{ expression }}` yields the value).

use std::fmt;
use std::sync::Arc;

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

/// Whether a string contains template syntax at all (most strings do not: they are copied
/// as they are, without compiling anything).
pub fn contains_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
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

/// The template engine: one minijinja environment shared by every render.
///
/// Undefined values are strict: `{{ params.typo }}` is an error naming `params.typo` rather
/// than an empty string that would silently reach a command line.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
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
        env.add_filter("fromjson", fromjson);
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
        Templates { env }
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
        Ok(match value {
            Value::String(source) => self.render_native(source, ctx)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.render_value(item, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (key, item) in map {
                    out.insert(key.clone(), self.render_value(item, ctx)?);
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
            .map_err(|e| from_minijinja(source, &e, ctx))
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
            .map_err(|e| from_minijinja(source, &e, ctx))?;
        let value = compiled
            .eval(ctx)
            .map_err(|e| from_minijinja(source, &e, ctx))?;
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn single_expression_detection() {
        assert_eq!(single_expression("{{ a.b }}"), Some("a.b"));
        assert_eq!(single_expression(" {{a}} "), Some("a"));
        assert_eq!(single_expression("{{ a }} {{ b }}"), None);
        assert_eq!(single_expression("{{ a }}x"), None);
        assert_eq!(single_expression("{% if a %}{{ a }}{% endif %}"), None);
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
