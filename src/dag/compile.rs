//! `compile`: from the text of a workflow file to a checked `Workflow`, or every problem found.
//! Structural problems come from the schema checker; semantic ones (ids, `needs`, cycles, cron,
//! time zones, durations, dates, params, templates) are checked here on every part that is
//! structurally sound, so one run reports both kinds. Templates are checked for what they
//! read (declared params, upstream tasks, the context of the place they are in) and the
//! filters and tests they apply; each operator's own check of `with` comes in through
//! [`OperatorCheck`], since operators sit above this layer. No IO.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::deadline::{Deadline, DeadlineFrom, parse_time_of_day};
use super::{Backoff, Hook, Task, Workflow};
use crate::diagnostic::Diagnostic;
use crate::duration::HumanDuration;
use crate::github;
use crate::lifecycle::TriggerRule;
use crate::params::{ParamDecl, ParamType};
use crate::schedule::Schedule;
use crate::spec::format::{BackoffSpec, DEFAULT_MAX_ACTIVE_RUNS};
use crate::spec::{self, Node, NodeValue, Pos, suggest};
use crate::template;

/// Built-in retry delay when neither the task nor `defaults` sets one. Airflow uses 300s; a
/// shorter wait suits the short tasks of LLM pipelines (API calls, evals) better.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);
/// The queue of tasks that name none; `sluice worker` serves it unless told otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// An operator's check of a task's `with` before anything is rendered: given the operator's
/// name and `with` as written, a sentence saying what is wrong. Only called on files that are
/// structurally sound (the schema check found nothing), so it never repeats the schema's
/// complaints.
pub type OperatorCheck<'a> = &'a dyn Fn(&str, &Value) -> Result<(), String>;

/// The fields of `with` an operator (by name) renders itself (`template::Deferred`): their
/// templates are checked against the operator's context instead of the task's.
pub type DeferredFields<'a> = &'a dyn Fn(&str) -> &'static [template::Deferred];

/// The outcome of compiling one file: the workflow or its errors, and warnings either way.
#[derive(Debug)]
pub struct Compiled {
    pub result: Result<Workflow, Vec<Diagnostic>>,
    /// Risky but runnable things (a free-text value pasted into a shell command), in file
    /// order.
    pub warnings: Vec<Diagnostic>,
}

/// Compiles one workflow file. `schema` is the JSON Schema the file is checked against (the
/// catalog's, which includes every operator's `with`); `path` names the file in diagnostics and
/// gives the default id (its stem). Operators' own checks are left out: see [`compile_checked`].
pub fn compile(source: &str, path: &Path, schema: &Value) -> Result<Workflow, Vec<Diagnostic>> {
    compile_checked(source, path, schema, &|_, _| Ok(()), &|_| &[]).result
}

/// [`compile`], with each task's `with` also checked by `check_operator`, and the warnings.
pub fn compile_checked(
    source: &str,
    path: &Path,
    schema: &Value,
    check_operator: OperatorCheck<'_>,
    deferred_fields: DeferredFields<'_>,
) -> Compiled {
    let root = match spec::parse(source) {
        Ok(root) => root,
        Err(e) => {
            return Compiled {
                result: Err(vec![Diagnostic::new(
                    path,
                    e.pos.line,
                    e.pos.column,
                    e.message,
                )]),
                warnings: Vec::new(),
            };
        }
    };
    let mut c = Compiler {
        path,
        deferred_fields,
        diagnostics: Vec::new(),
        fallbacks: Vec::new(),
        warnings: Vec::new(),
    };
    for p in spec::check::check(&root, schema) {
        c.diagnostics
            .push(Diagnostic::new(path, p.pos.line, p.pos.column, p.message).with_help(p.help));
    }
    if root.as_map().is_none() {
        return Compiled {
            result: Err(c.diagnostics),
            warnings: Vec::new(),
        };
    }
    let structurally_sound = c.diagnostics.is_empty();
    let workflow = c.workflow(&root, source);
    if structurally_sound {
        c.operator_checks(&root, check_operator);
    }
    // Typed reads that failed although the schema check passed point at a gap in the schema;
    // they are reported then, and otherwise left to the schema checker's clearer messages.
    if c.diagnostics.is_empty() {
        c.diagnostics.append(&mut c.fallbacks);
    }
    Diagnostic::sort(&mut c.warnings);
    let result = if c.diagnostics.is_empty() {
        Ok(workflow)
    } else {
        Diagnostic::sort(&mut c.diagnostics);
        Err(c.diagnostics)
    };
    Compiled {
        result,
        warnings: c.warnings,
    }
}

/// Whether a workflow id is well formed: `[a-z0-9_-]+`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether a repository is written `owner/name` with GitHub's characters.
fn is_repository_name(name: &str) -> bool {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    matches!(name.split_once('/'), Some((owner, repo)) if valid(owner) && valid(repo))
}

/// Whether a task id is well formed: `[A-Za-z0-9_-]+` (it appears in templates as
/// `tasks.<id>` and in URLs, so no dots, spaces or slashes).
pub fn is_valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Compiler<'p> {
    path: &'p Path,
    deferred_fields: DeferredFields<'p>,
    diagnostics: Vec<Diagnostic>,
    fallbacks: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// The render context's top-level names in a task's templates (`template::RenderContext`).
/// `upstream` is there too but always empty outside `workflow` triggers; reading into it is
/// reported.
const TASK_ROOTS: &[&str] = &[
    "params", "run", "ds", "ts", "tasks", "event", "upstream", "vars", "secrets",
];
/// Hooks also see the run's failed tasks.
const HOOK_ROOTS: &[&str] = &[
    "params",
    "run",
    "ds",
    "ts",
    "tasks",
    "event",
    "upstream",
    "vars",
    "secrets",
    "failed_tasks",
];
/// A `workflow` trigger's `if` and params see only the run that ended.
const WORKFLOW_TRIGGER_ROOTS: &[&str] = &["upstream"];
/// A `github` trigger's params see only the delivery's payload.
const GITHUB_TRIGGER_ROOTS: &[&str] = &["event"];

/// What the templates of one place in the file may read.
struct Scope<'a> {
    /// The context's top-level names there.
    roots: &'static [&'static str],
    /// Says where, for messages: "a task's templates", "a `github` trigger's params".
    place: &'static str,
    params: &'a IndexMap<String, ParamDecl>,
    /// For a task: which task reads, and what it may read under `tasks`.
    task: Option<TaskScope<'a>>,
}

struct TaskScope<'a> {
    id: &'a str,
    /// Tasks whose outputs exist when this one runs: its upstream tasks, directly or
    /// transitively, and for a hook every main task too.
    readable: HashSet<&'a str>,
    /// Every task id of the workflow, hooks included.
    all: &'a [&'a str],
}

/// Settings a task inherits from `defaults`.
#[derive(Default)]
struct Inherited {
    retries: Option<u32>,
    retry_delay: Option<Duration>,
    retry_backoff: Option<Backoff>,
    max_retry_delay: Option<Duration>,
    timeout: Option<Duration>,
    pool: Option<String>,
    queue: Option<String>,
    priority: Option<i32>,
}

impl Compiler<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, help: Option<String>) {
        self.diagnostics
            .push(Diagnostic::new(self.path, pos.line, pos.column, message).with_help(help));
    }

    /// Reads a node into a typed value; failures are kept as fallbacks (see `compile`).
    fn typed<T: DeserializeOwned>(&mut self, node: &Node, what: &str) -> Option<T> {
        match serde_json::from_value(node.to_json()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fallbacks.push(Diagnostic::new(
                    self.path,
                    node.pos.line,
                    node.pos.column,
                    format!("invalid `{what}`: {e}"),
                ));
                None
            }
        }
    }

    fn string(&mut self, root: &Node, key: &str) -> Option<(String, Pos)> {
        let node = root.get(key)?;
        node.as_str().map(|s| (s.to_owned(), node.pos))
    }

    /// A queue name: it is typed on command lines (`--queues gpu,cpu`), so it follows the id
    /// rules.
    fn queue(&mut self, map: &Node) -> Option<String> {
        let node = map.get("queue")?;
        let name = node.as_str()?;
        if is_valid_id(name) {
            Some(name.to_owned())
        } else {
            self.error(
                node.pos,
                format!("invalid queue name `{name}`"),
                Some("a queue name uses lowercase letters, digits, `_` and `-`".to_owned()),
            );
            None
        }
    }

    /// A task's `artifacts:` list, each glob checked by the compiler `artifacts::collect`
    /// uses at run time, so a pattern that could never match (absolute, `..`, not a glob) is
    /// reported at its own line instead of failing the task after it ran.
    fn artifact_globs(&mut self, list: &Node) -> Vec<String> {
        let Some(entries) = list.as_seq() else {
            return self.typed(list, "artifacts").unwrap_or_default();
        };
        let mut globs = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(pattern) = entry.as_str() else {
                continue;
            };
            match crate::dag::globs::artifact_glob(pattern) {
                Ok(_) => globs.push(pattern.to_owned()),
                Err(reason) => self.error(
                    entry.pos,
                    format!("`artifacts` entry `{pattern}` is not usable: {reason}"),
                    None,
                ),
            }
        }
        globs
    }

    fn duration(&mut self, map: &Node, key: &str) -> Option<Duration> {
        let node = map.get(key)?;
        let parsed = match &node.value {
            NodeValue::String(s) => HumanDuration::parse(s),
            NodeValue::Number(n) => match n.as_u64() {
                Some(secs) => HumanDuration::from_secs(secs),
                None => Err(format!(
                    "`{n}` is not a duration; a duration cannot be negative or fractional"
                )),
            },
            _ => return None,
        };
        match parsed {
            Ok(d) => Some(d.0),
            Err(message) => {
                self.error(node.pos, format!("invalid `{key}`: {message}"), None);
                None
            }
        }
    }

    /// Checks the template syntax of every string in a subtree.
    fn templates(&mut self, node: &Node, what: &str) {
        match &node.value {
            NodeValue::String(s) => {
                if let Err(e) = template::check_syntax(s) {
                    let message = e.message.replace(" (in <string>:1)", "");
                    self.error(
                        node.pos,
                        format!("template error in `{what}`: {message}"),
                        None,
                    );
                }
            }
            NodeValue::Seq(items) => items.iter().for_each(|i| self.templates(i, what)),
            NodeValue::Map(entries) => entries.iter().for_each(|e| self.templates(&e.value, what)),
            _ => {}
        }
    }

    fn workflow(&mut self, root: &Node, source: &str) -> Workflow {
        let id = match self.string(root, "id") {
            Some((id, pos)) => {
                if !is_valid_id(&id) {
                    self.error(
                        pos,
                        format!("the workflow id `{id}` may only contain lowercase letters, digits, `_` and `-`"),
                        None,
                    );
                }
                id
            }
            None => {
                let stem = self
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !is_valid_id(&stem) {
                    self.error(
                        Pos::FILE,
                        format!("the file name `{stem}` is not a valid workflow id (lowercase letters, digits, `_` and `-`)"),
                        Some("rename the file or set `id`".to_owned()),
                    );
                }
                stem
            }
        };
        let description = self.string(root, "description").map(|(s, _)| s);
        let schedule = self
            .string(root, "schedule")
            .and_then(|(text, pos)| match Schedule::parse(&text) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.error(pos, format!("invalid `schedule`: {e}"), None);
                    None
                }
            });
        let timezone = match self.string(root, "timezone") {
            Some((name, pos)) => match name.parse::<chrono_tz::Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    let help = suggest::did_you_mean(
                        &name,
                        chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()),
                    );
                    self.error(
                        pos,
                        format!("unknown time zone `{name}`; use an IANA name like `Europe/Paris`"),
                        help,
                    );
                    chrono_tz::UTC
                }
            },
            None => chrono_tz::UTC,
        };
        let start_date = self.date(root, "start_date");
        let end_date = self.date(root, "end_date");
        if let (Some(start), Some(end)) = (start_date, end_date)
            && end < start
            && let Some(node) = root.get("end_date")
        {
            self.error(
                node.pos,
                format!("`end_date` {end} is before `start_date` {start}"),
                None,
            );
        }
        let catchup = root
            .get("catchup")
            .and_then(|n| self.typed(n, "catchup"))
            .unwrap_or(false);
        let max_active_runs = root
            .get("max_active_runs")
            .and_then(|n| self.typed(n, "max_active_runs"))
            .unwrap_or(DEFAULT_MAX_ACTIVE_RUNS);
        let tags: Vec<String> = root
            .get("tags")
            .and_then(|n| self.typed(n, "tags"))
            .unwrap_or_default();
        let params = self.params(root.get("params"));
        let triggers = self.triggers(root.get("triggers"), &params);
        let inherited = match root.get("defaults") {
            Some(node) if node.as_map().is_some() => self.inherited(node),
            _ => Inherited::default(),
        };
        let (tasks, graph) = match root.entry("tasks") {
            Some(entry) => {
                if entry.value.as_map().is_some_and(<[_]>::is_empty) {
                    self.error(
                        entry.key_pos,
                        "`tasks` is empty; a workflow needs at least one task",
                        None,
                    );
                }
                self.task_group(&entry.value, "tasks", &inherited)
            }
            None => (Vec::new(), DiGraph::new()),
        };
        // Hook ids share one namespace with the tasks: templates and the database name a
        // task by its id alone.
        let mut taken: HashMap<String, &'static str> =
            tasks.iter().map(|t| (t.id.clone(), "tasks")).collect();
        let mut hooks: Vec<Vec<Task>> = Vec::with_capacity(Hook::ALL.len());
        for hook in Hook::ALL {
            let group = hook.key();
            let Some(entry) = root.entry(group) else {
                hooks.push(Vec::new());
                continue;
            };
            if let Some(map) = entry.value.as_map() {
                for e in map {
                    if let Some(other) = taken.get(&e.key) {
                        self.error(
                            e.key_pos,
                            format!("`{}` is already a task in `{other}`; use another id", e.key),
                            None,
                        );
                    }
                }
                for e in map {
                    taken.entry(e.key.clone()).or_insert(group);
                }
            }
            hooks.push(self.task_group(&entry.value, group, &inherited).0);
        }
        self.task_templates(root, &params, &tasks, &hooks);
        let on_deadline = hooks.pop().unwrap_or_default();
        let on_success = hooks.pop().unwrap_or_default();
        let on_failure = hooks.pop().unwrap_or_default();
        let deadline = self.deadline(root, &on_deadline);
        Workflow {
            id,
            description,
            schedule,
            timezone,
            start_date,
            end_date,
            catchup,
            max_active_runs,
            tags,
            params,
            triggers,
            tasks,
            on_failure,
            on_success,
            deadline,
            on_deadline,
            graph,
            source: source.to_owned(),
            source_hash: hex::encode(Sha256::digest(source.as_bytes())),
        }
    }

    /// Reads `deadline`: `after` (with `from`) or `at`, and `on_deadline` to go with it.
    fn deadline(&mut self, root: &Node, on_deadline: &[Task]) -> Option<Deadline> {
        let Some(entry) = root.entry("deadline") else {
            if let Some(hooks) = root.entry("on_deadline")
                && !on_deadline.is_empty()
            {
                self.error(
                    hooks.key_pos,
                    "`on_deadline` has tasks but the workflow has no `deadline`",
                    Some("add `deadline: { after: 2h }` or `deadline: { at: \"06:00\" }`".into()),
                );
            }
            return None;
        };
        let node = &entry.value;
        node.as_map()?;
        let after = self.duration(node, "after");
        let at = node
            .get("at")
            .and_then(|n| n.as_str().map(|s| (s.to_owned(), n.pos)));
        let from = node
            .get("from")
            .and_then(|n| self.typed::<DeadlineFrom>(n, "deadline.from"));
        if on_deadline.is_empty() {
            self.error(
                entry.key_pos,
                "`deadline` is set but there are no `on_deadline` tasks to run when it passes",
                None,
            );
        }
        match (node.get("after"), at) {
            (Some(_), Some((_, pos))) => {
                self.error(pos, "`deadline` has both `after` and `at`; give one", None);
                None
            }
            (None, None) => {
                self.error(
                    entry.key_pos,
                    "`deadline` needs `after` (like `2h`) or `at` (like \"06:00\")",
                    None,
                );
                None
            }
            (Some(_), None) => {
                let after = after?;
                if after.is_zero() {
                    if let Some(n) = node.get("after") {
                        self.error(n.pos, "`deadline.after` must be longer than zero", None);
                    }
                    return None;
                }
                Some(Deadline::After {
                    after,
                    from: from.unwrap_or(DeadlineFrom::Start),
                })
            }
            (None, Some((text, pos))) => {
                if let Some(n) = node.get("from") {
                    self.error(
                        n.pos,
                        "`deadline.from` goes with `after`, not with `at`",
                        None,
                    );
                }
                match parse_time_of_day(&text) {
                    Ok(time) => Some(Deadline::At { time }),
                    Err(message) => {
                        self.error(pos, format!("invalid `deadline.at`: {message}"), None);
                        None
                    }
                }
            }
        }
    }

    fn date(&mut self, root: &Node, key: &str) -> Option<chrono::NaiveDate> {
        let (text, pos) = self.string(root, key)?;
        match chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    pos,
                    format!("`{key}` must be a date written YYYY-MM-DD, found `{text}` ({e})"),
                    None,
                );
                None
            }
        }
    }

    fn params(&mut self, node: Option<&Node>) -> IndexMap<String, ParamDecl> {
        let mut params = IndexMap::new();
        let Some(entries) = node.and_then(Node::as_map) else {
            return params;
        };
        for entry in entries {
            let name = &entry.key;
            let decl_node = &entry.value;
            let Some(decl) = self.typed::<ParamDecl>(decl_node, &format!("params.{name}")) else {
                continue;
            };
            let numeric = matches!(decl.kind, ParamType::Integer | ParamType::Number);
            let kind = type_name(decl.kind);
            if let Some(default) = decl.default.as_ref().filter(|d| !d.is_null())
                && let Some(pos) = decl_node.get("default").map(|n| n.pos)
            {
                if !value_has_type(default, decl.kind) {
                    self.error(
                        pos,
                        format!(
                            "the default of param `{name}` must be {kind}, found {}",
                            json_kind(default)
                        ),
                        None,
                    );
                } else {
                    if let Some(allowed) = &decl.allowed
                        && !allowed.contains(default)
                    {
                        self.error(
                            pos,
                            format!(
                                "the default of param `{name}` is not one of its `enum` values"
                            ),
                            None,
                        );
                    }
                    if let Some(v) = default.as_f64() {
                        if let Some(min) = decl.minimum.filter(|m| v < *m) {
                            self.error(
                                pos,
                                format!("the default of param `{name}` is below its minimum {min}"),
                                None,
                            );
                        }
                        if let Some(max) = decl.maximum.filter(|m| v > *m) {
                            self.error(
                                pos,
                                format!("the default of param `{name}` is above its maximum {max}"),
                                None,
                            );
                        }
                    }
                }
            }
            if let (Some(allowed), Some(items)) =
                (&decl.allowed, decl_node.get("enum").and_then(Node::as_seq))
            {
                for (value, item) in allowed.iter().zip(items) {
                    if !value_has_type(value, decl.kind) {
                        self.error(
                            item.pos,
                            format!(
                                "the `enum` values of param `{name}` must be {kind}, found {}",
                                json_kind(value)
                            ),
                            None,
                        );
                    }
                }
            }
            for bound in ["minimum", "maximum"] {
                if let Some(n) = decl_node.get(bound)
                    && !numeric
                {
                    self.error(n.pos, format!("`{bound}` only applies to integer and number params, and `{name}` is {kind}"), None);
                }
            }
            if let (Some(min), Some(max)) = (decl.minimum, decl.maximum)
                && min > max
                && let Some(n) = decl_node.get("minimum")
            {
                self.error(
                    n.pos,
                    format!(
                        "param `{name}` has a minimum ({min}) greater than its maximum ({max})"
                    ),
                    None,
                );
            }
            params.insert(name.clone(), decl);
        }
        params
    }

    fn triggers(
        &mut self,
        node: Option<&Node>,
        params: &IndexMap<String, ParamDecl>,
    ) -> Vec<Value> {
        let Some(items) = node.and_then(Node::as_seq) else {
            return Vec::new();
        };
        for item in items {
            for entry in item.as_map().unwrap_or_default() {
                let scope = match entry.key.as_str() {
                    "workflow" => Some(Scope {
                        roots: WORKFLOW_TRIGGER_ROOTS,
                        place: "a `workflow` trigger's templates",
                        params,
                        task: None,
                    }),
                    "github" => Some(Scope {
                        roots: GITHUB_TRIGGER_ROOTS,
                        place: "a `github` trigger's templates",
                        params,
                        task: None,
                    }),
                    _ => None,
                };
                if scope.is_some() {
                    self.trigger_param_names(&entry.value, params);
                }
                for key in ["params", "if"] {
                    if let Some(n) = entry.value.get(key) {
                        let what = format!("triggers.{}.{key}", entry.key);
                        self.templates(n, &what);
                        if let Some(scope) = &scope {
                            self.references(n, &what, scope);
                        }
                    }
                }
                if entry.key == "github" {
                    self.github_trigger(&entry.value);
                }
            }
        }
        items.iter().map(Node::to_json).collect()
    }

    /// A trigger's `params` may only name the workflow's params: a run with another one would
    /// be refused every time the trigger fires.
    fn trigger_param_names(&mut self, trigger: &Node, params: &IndexMap<String, ParamDecl>) {
        let Some(entries) = trigger.get("params").and_then(Node::as_map) else {
            return;
        };
        for entry in entries.iter().filter(|e| !params.contains_key(&e.key)) {
            let help = suggest::did_you_mean(&entry.key, params.keys().map(String::as_str))
                .or_else(|| {
                    Some(format!(
                        "declare it under the workflow's `params:`, like `{}: {{ type: string }}`",
                        entry.key
                    ))
                });
            self.error(
                entry.key_pos,
                format!(
                    "the trigger maps the param `{}`, which the workflow does not declare",
                    entry.key
                ),
                help,
            );
        }
    }

    /// Event names, actions, glob patterns, repositories and the status setting of a
    /// `github` trigger; the schema has already checked the shapes.
    fn github_trigger(&mut self, node: &Node) {
        let events = node
            .get("events")
            .and_then(Node::as_seq)
            .unwrap_or_default();
        for event in events {
            let Some(name) = event.as_str() else { continue };
            if !github::events::is_known(name) {
                let help =
                    suggest::did_you_mean(name, github::events::KNOWN_EVENTS.iter().copied());
                self.error(
                    event.pos,
                    format!("`{name}` is not a GitHub webhook event Sluice knows"),
                    help.or_else(|| {
                        Some("see the event names in the README's GitHub section".to_owned())
                    }),
                );
            }
        }
        if let Some(actions) = node
            .get("actions")
            .filter(|a| a.as_seq().is_some_and(|s| !s.is_empty()))
        {
            let names: Vec<&str> = events.iter().filter_map(Node::as_str).collect();
            if !names.is_empty() && names.iter().all(|e| !github::events::has_action(e)) {
                self.error(
                    actions.pos,
                    format!(
                        "`actions` can never match: {} deliveries have no action",
                        names
                            .iter()
                            .map(|e| format!("`{e}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(
                        "remove `actions`, or list an event that has actions, like `pull_request`"
                            .to_owned(),
                    ),
                );
            }
        }
        for key in ["branches", "tags", "paths"] {
            let Some(items) = node.get(key).and_then(Node::as_seq) else {
                continue;
            };
            let patterns: Vec<String> = items
                .iter()
                .map(|n| n.as_str().unwrap_or_default().to_owned())
                .collect();
            if let Err(e) = github::Patterns::new(&patterns) {
                let pos = items.get(e.index).map_or(node.pos, |n| n.pos);
                self.error(pos, format!("invalid `{key}`: {e}"), None);
            }
        }
        for repository in node
            .get("repositories")
            .and_then(Node::as_seq)
            .unwrap_or_default()
        {
            let Some(name) = repository.as_str() else {
                continue;
            };
            if !is_repository_name(name) {
                self.error(
                    repository.pos,
                    format!("`{name}` is not a repository name; write it `owner/name`"),
                    None,
                );
            }
        }
        if let Some(status) = node.get("status") {
            if let Some(context) = status.get("context")
                && context.as_str().is_some_and(|c| c.trim().is_empty())
            {
                self.error(
                    context.pos,
                    "`status.context` is empty; give the status a name",
                    None,
                );
            }
            if let Some(description) = status.get("description")
                && description
                    .as_str()
                    .is_some_and(|d| d.chars().count() > 100)
            {
                self.error(
                    description.pos,
                    "`status.description` is longer than 100 characters; GitHub shows 140 with the state",
                    None,
                );
            }
        }
    }

    fn inherited(&mut self, node: &Node) -> Inherited {
        Inherited {
            retries: node.get("retries").and_then(|n| self.typed(n, "retries")),
            retry_delay: self.duration(node, "retry_delay"),
            retry_backoff: node
                .get("retry_backoff")
                .and_then(|n| self.typed::<BackoffSpec>(n, "retry_backoff"))
                .map(backoff),
            max_retry_delay: self.duration(node, "max_retry_delay"),
            timeout: self.duration(node, "timeout"),
            pool: node.get("pool").and_then(|n| n.as_str().map(str::to_owned)),
            queue: self.queue(node),
            priority: node.get("priority").and_then(|n| self.typed(n, "priority")),
        }
    }

    /// Reads `tasks` or `on_failure`: each task, then the graph of their `needs`.
    fn task_group(
        &mut self,
        node: &Node,
        group: &str,
        inherited: &Inherited,
    ) -> (Vec<Task>, DiGraph<usize, ()>) {
        let entries = node.as_map().unwrap_or_default();
        let mut tasks = Vec::with_capacity(entries.len());
        let mut needs_nodes: Vec<Vec<&Node>> = Vec::with_capacity(entries.len());
        for entry in entries {
            if !is_valid_task_id(&entry.key) {
                self.error(
                    entry.key_pos,
                    format!(
                        "the task id `{}` may only contain letters, digits, `_` and `-`",
                        entry.key
                    ),
                    None,
                );
            }
            let task_node = &entry.value;
            let needs: Vec<&Node> = task_node
                .get("needs")
                .and_then(Node::as_seq)
                .unwrap_or_default()
                .iter()
                .collect();
            tasks.push(self.task(&entry.key, task_node, inherited));
            needs_nodes.push(needs);
        }
        let index: HashMap<&str, usize> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.as_str(), i))
            .collect();
        let mut graph = DiGraph::with_capacity(tasks.len(), tasks.len());
        for i in 0..tasks.len() {
            graph.add_node(i);
        }
        for (i, needs) in needs_nodes.iter().enumerate() {
            let id = &entries[i].key;
            for need in needs {
                let Some(name) = need.as_str() else { continue };
                match index.get(name) {
                    Some(&j) if j == i => {
                        self.error(need.pos, format!("task `{id}` needs itself"), None);
                    }
                    Some(&j) => {
                        if !graph.contains_edge(NodeIndex::new(j), NodeIndex::new(i)) {
                            graph.add_edge(NodeIndex::new(j), NodeIndex::new(i), ());
                        }
                    }
                    None => {
                        let others = entries
                            .iter()
                            .filter(|e| e.key != *id)
                            .map(|e| e.key.as_str());
                        let help = suggest::did_you_mean(name, others);
                        self.error(
                            need.pos,
                            format!("task `{id}` needs `{name}`, which is not a task in `{group}`"),
                            help,
                        );
                    }
                }
            }
        }
        self.cycles(&graph, entries);
        (tasks, graph)
    }

    /// Names every cycle, following `needs` from its first task in file order.
    fn cycles(&mut self, graph: &DiGraph<usize, ()>, entries: &[spec::Entry]) {
        // Kosaraju's walk is iterative: a 10,000-task chain must not overflow the stack.
        let mut components = petgraph::algo::kosaraju_scc(graph);
        components.retain(|c| c.len() > 1);
        components.sort_by_key(|c| c.iter().map(|n| n.index()).min());
        for component in components {
            let Some(start) = component.iter().min_by_key(|n| n.index()).copied() else {
                continue;
            };
            let path = cycle_from(graph, &component, start);
            let names: Vec<&str> = path
                .iter()
                .map(|n| entries[n.index()].key.as_str())
                .collect();
            self.error(
                entries[start.index()].key_pos,
                format!("tasks {} form a cycle", names.join(" -> ")),
                Some("each task needs the next one; remove one of these `needs`".to_owned()),
            );
        }
    }

    fn task(&mut self, id: &str, node: &Node, inherited: &Inherited) -> Task {
        if let Some(with) = node.get("with") {
            self.templates(with, "with");
        }
        if let Some(env) = node.get("env") {
            self.templates(env, "env");
        }
        let condition = node.get("if").and_then(|n| {
            self.templates(n, "if");
            n.as_str().map(str::to_owned)
        });
        let retry_backoff = node
            .get("retry_backoff")
            .and_then(|n| self.typed::<BackoffSpec>(n, "retry_backoff"))
            .map(backoff)
            .or(inherited.retry_backoff)
            .unwrap_or_default();
        Task {
            id: id.to_owned(),
            operator: node
                .get("operator")
                .and_then(Node::as_str)
                .unwrap_or_default()
                .to_owned(),
            with: node.get("with").map(Node::to_json).unwrap_or(Value::Null),
            needs: node
                .get("needs")
                .and_then(Node::as_seq)
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
            trigger_rule: node
                .get("trigger_rule")
                .and_then(|n| self.typed::<TriggerRule>(n, "trigger_rule"))
                .unwrap_or_default(),
            condition,
            retries: node
                .get("retries")
                .and_then(|n| self.typed(n, "retries"))
                .or(inherited.retries)
                .unwrap_or(0),
            retry_delay: self
                .duration(node, "retry_delay")
                .or(inherited.retry_delay)
                .unwrap_or(DEFAULT_RETRY_DELAY),
            retry_backoff,
            max_retry_delay: self
                .duration(node, "max_retry_delay")
                .or(inherited.max_retry_delay),
            timeout: self.duration(node, "timeout").or(inherited.timeout),
            pool: node
                .get("pool")
                .and_then(Node::as_str)
                .map(str::to_owned)
                .or_else(|| inherited.pool.clone()),
            queue: self
                .queue(node)
                .or_else(|| inherited.queue.clone())
                .unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
            priority: node
                .get("priority")
                .and_then(|n| self.typed(n, "priority"))
                .or(inherited.priority)
                .unwrap_or(0),
            env: node
                .get("env")
                .and_then(|n| self.typed(n, "env"))
                .unwrap_or_default(),
            artifacts: node
                .get("artifacts")
                .map(|n| self.artifact_globs(n))
                .unwrap_or_default(),
        }
    }
}

/// Names a template may use without their being in the context: the engine's own inside
/// loops, macros and blocks.
const TEMPLATE_LOCALS: &[&str] = &["loop", "self", "super", "caller", "varargs", "kwargs"];

impl Compiler<'_> {
    /// Checks what the templates of every task and hook read, and warns where a shell command
    /// pastes in text that anyone could have chosen.
    fn task_templates(
        &mut self,
        root: &Node,
        params: &IndexMap<String, ParamDecl>,
        tasks: &[Task],
        hooks: &[Vec<Task>],
    ) {
        let all: Vec<&str> = tasks
            .iter()
            .chain(hooks.iter().flatten())
            .map(|t| t.id.as_str())
            .collect();
        let groups = std::iter::once(("tasks", tasks)).chain(
            Hook::ALL
                .iter()
                .zip(hooks)
                .map(|(hook, group)| (hook.key(), group.as_slice())),
        );
        for (group, group_tasks) in groups {
            let Some(entries) = root.get(group).and_then(Node::as_map) else {
                continue;
            };
            let hook = group != "tasks";
            let by_id: HashMap<&str, &Task> =
                group_tasks.iter().map(|t| (t.id.as_str(), t)).collect();
            // `task_group` made one task per entry, in order.
            for (entry, task) in entries.iter().zip(group_tasks) {
                let templated = ["with", "env", "if"]
                    .iter()
                    .filter_map(|key| entry.value.get(key))
                    .any(has_template);
                // Only templates read other tasks: a workflow of plain commands skips the walk
                // upstream, which would cost the square of a long chain's length.
                let mut readable = if templated {
                    upstream_of(&by_id, &task.id)
                } else {
                    HashSet::new()
                };
                if hook && templated {
                    readable.extend(tasks.iter().map(|t| t.id.as_str()));
                }
                let scope = Scope {
                    roots: if hook { HOOK_ROOTS } else { TASK_ROOTS },
                    place: if hook {
                        "a hook's templates"
                    } else {
                        "a task's templates"
                    },
                    params,
                    task: Some(TaskScope {
                        id: &task.id,
                        readable,
                        all: &all,
                    }),
                };
                let deferred = (self.deferred_fields)(&task.operator);
                for key in ["with", "env", "if"] {
                    if let Some(node) = entry.value.get(key) {
                        let deferred = if key == "with" { deferred } else { &[] };
                        self.references_at(node, key, &scope, &mut String::new(), deferred);
                    }
                }
                // Every place whose rendered text `sh -c` runs: shell's `command`, and the
                // `command` target of `eval` when it is one string.
                let with = entry.value.get("with");
                let shell_command = match task.operator.as_str() {
                    "shell" => with
                        .and_then(|w| w.get("command"))
                        .map(|c| (c, "with.command")),
                    "eval" => with
                        .and_then(|w| w.get("target"))
                        .and_then(|t| t.get("command"))
                        .map(|c| (c, "with.target.command")),
                    _ => None,
                };
                if let Some((command, field)) = shell_command {
                    self.unquoted_in_shell(command, field, params);
                }
            }
        }
    }

    /// Checks every template in a subtree against what `scope` may read, and its filters and
    /// tests against the engine's.
    fn references(&mut self, node: &Node, what: &str, scope: &Scope<'_>) {
        self.references_at(node, what, scope, &mut String::new(), &[]);
    }

    /// [`Compiler::references`], where the strings of `deferred` fields (paths below `what`;
    /// `path` is the current one) are checked against their operator's context instead.
    fn references_at(
        &mut self,
        node: &Node,
        what: &str,
        scope: &Scope<'_>,
        path: &mut String,
        deferred: &[template::Deferred],
    ) {
        match &node.value {
            NodeValue::String(text) => match deferred.iter().find(|d| d.covers(path)) {
                Some(field) if template::left_to_operator(text) => {
                    let own = Scope {
                        roots: field.roots,
                        place: "this field, which its operator renders itself,",
                        params: scope.params,
                        task: None,
                    };
                    let what = format!("{what}.{}", field.path);
                    self.template_references(node, text, &what, &own);
                }
                _ => self.template_references(node, text, what, scope),
            },
            NodeValue::Seq(items) => {
                for (index, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{index}]"));
                    self.references_at(item, what, scope, path, deferred);
                    path.truncate(len);
                }
            }
            NodeValue::Map(entries) => {
                for entry in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&entry.key);
                    self.references_at(&entry.value, what, scope, path, deferred);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// Checks one template against what `scope` may read, and its filters and tests against
    /// the engine's.
    fn template_references(&mut self, node: &Node, text: &str, what: &str, scope: &Scope<'_>) {
        // A template that does not compile was reported by `templates`.
        let Ok(analysis) = template::analyze(text) else {
            return;
        };
        for variable in &analysis.variables {
            if let Some((message, help)) = reference_problem(variable, what, scope) {
                self.error(node.pos, message, help);
            }
        }
        for filter in analysis.filters.iter().filter(|f| !template::is_filter(f)) {
            let help = suggest::did_you_mean(filter, template::filter_names())
                .or_else(|| Some("see the filters in the README's templating section".into()));
            self.error(
                node.pos,
                format!("`{what}` uses the filter `{filter}`, which does not exist"),
                help,
            );
        }
        for test in analysis.tests.iter().filter(|t| !template::is_test(t)) {
            let help = suggest::did_you_mean(test, template::test_names());
            self.error(
                node.pos,
                format!("`{what}` uses the test `{test}`, which does not exist"),
                help,
            );
        }
    }

    /// Warns about each free-text value a shell `command` interpolates without `shell_quote`:
    /// the rendered text is run by `sh -c`, so a value holding `'; …` runs as code.
    fn unquoted_in_shell(
        &mut self,
        command: &Node,
        field: &str,
        params: &IndexMap<String, ParamDecl>,
    ) {
        let Some(Ok(analysis)) = command.as_str().map(template::analyze) else {
            return;
        };
        let mut warned = HashSet::new();
        for interpolation in analysis.interpolations.iter().filter(|i| !i.shell_quoted) {
            for path in &interpolation.variables {
                if is_free_text(path, params) && warned.insert(path.as_str()) {
                    self.warnings.push(
                        Diagnostic::warning(
                            self.path,
                            command.pos.line,
                            command.pos.column,
                            format!(
                                "`{field}` puts `{path}` into a shell command unquoted; a value holding `'`, `;` or `$(…)` would run as shell code"
                            ),
                        )
                        .with_help(Some(format!(
                            "pass it through `env` (`env: {{ VALUE: \"{{{{ {path} }}}}\" }}`, then \"$VALUE\" in the command) or write `{{{{ {path} | shell_quote }}}}`"
                        ))),
                    );
                }
            }
        }
    }

    /// Runs each operator's own check of its `with` (see [`OperatorCheck`]).
    fn operator_checks(&mut self, root: &Node, check: OperatorCheck<'_>) {
        let groups = std::iter::once("tasks").chain(Hook::ALL.iter().map(|h| h.key()));
        for group in groups {
            let Some(entries) = root.get(group).and_then(Node::as_map) else {
                continue;
            };
            for entry in entries {
                let Some(operator) = entry.value.get("operator").and_then(Node::as_str) else {
                    continue;
                };
                let with = entry.value.entry("with");
                let value = with.map_or(Value::Null, |w| w.value.to_json());
                if let Err(message) = check(operator, &value) {
                    let pos = match with {
                        Some(w) => named_key(&w.value, &message).unwrap_or(w.key_pos),
                        None => entry.key_pos,
                    };
                    self.error(
                        pos,
                        format!("invalid `with` for operator `{operator}`: {message}"),
                        None,
                    );
                }
            }
        }
    }
}

/// What is wrong with a template reading `variable` in `scope`, as a message and a hint.
fn reference_problem(
    variable: &template::Variable,
    what: &str,
    scope: &Scope<'_>,
) -> Option<(String, Option<String>)> {
    let path = variable.path.as_str();
    let mut parts = path.split('.');
    let root = parts.next()?;
    let field = parts.next();
    if !scope.roots.contains(&root) {
        if TEMPLATE_LOCALS.contains(&root) || template::global_names().iter().any(|g| g == root) {
            return None;
        }
        let help = if root == "failed_tasks" {
            Some(
                "`failed_tasks` is set only in hooks (`on_failure`, `on_success`, `on_deadline`)"
                    .to_owned(),
            )
        } else {
            suggest::did_you_mean(root, scope.roots.iter().copied()).or_else(|| {
                Some(format!(
                    "{} can read {}",
                    scope.place,
                    scope
                        .roots
                        .iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        return Some((
            format!("`{what}` reads `{root}`, which is not in the template context here"),
            help,
        ));
    }
    let field = field?;
    if variable.guarded {
        return None;
    }
    match root {
        "params" if !scope.params.contains_key(field) => {
            let help = suggest::did_you_mean(field, scope.params.keys().map(String::as_str))
                .or_else(|| {
                    Some(if scope.params.is_empty() {
                        format!("declare it under `params:`, like `{field}: {{ type: string }}`")
                    } else {
                        format!(
                            "the workflow's params are {}",
                            scope
                                .params
                                .keys()
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                });
            Some((
                format!("`{what}` reads `params.{field}`, but the workflow has no param `{field}`"),
                help,
            ))
        }
        "run" if !template::RUN_FIELDS.contains(&field) => Some((
            format!("`{what}` reads `run.{field}`, but `run` has no `{field}`"),
            suggest::did_you_mean(field, template::RUN_FIELDS.iter().copied()),
        )),
        "upstream" if scope.task.is_none() && !template::UPSTREAM_FIELDS.contains(&field) => {
            Some((
                format!("`{what}` reads `upstream.{field}`, but `upstream` has no `{field}`"),
                suggest::did_you_mean(field, template::UPSTREAM_FIELDS.iter().copied()),
            ))
        }
        "upstream" if scope.task.is_some() => Some((
            format!(
                "`{what}` reads `{path}`, but `upstream` is set only in a `workflow` trigger's `if` and `params`"
            ),
            Some("map what the task needs into a param in the trigger's `params`".to_owned()),
        )),
        "tasks" => {
            let task = scope.task.as_ref()?;
            if !task.all.contains(&field) {
                return Some((
                    format!(
                        "`{what}` reads `tasks.{field}`, but the workflow has no task `{field}`"
                    ),
                    suggest::did_you_mean(field, task.all.iter().copied()),
                ));
            }
            if field == task.id {
                return Some((
                    format!(
                        "task `{field}` reads its own outputs (`tasks.{field}`), which do not exist while it runs"
                    ),
                    None,
                ));
            }
            if !task.readable.contains(field) {
                return Some((
                    format!(
                        "task `{}` reads `tasks.{field}`, but `{field}` is not upstream of it, so its outputs may not exist yet",
                        task.id
                    ),
                    Some(format!("add `{field}` to the `needs` of `{}`", task.id)),
                ));
            }
            match parts.next() {
                Some(part) if !template::TASK_RESULT_FIELDS.contains(&part) => Some((
                    format!(
                        "`{what}` reads `tasks.{field}.{part}`, but a task's result holds only `outputs` and `state`"
                    ),
                    suggest::did_you_mean(part, template::TASK_RESULT_FIELDS.iter().copied()),
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a value is text that someone outside the workflow chooses: anything in a
/// trigger's payload, or a string param with no `enum` to hold it to known values.
fn is_free_text(path: &str, params: &IndexMap<String, ParamDecl>) -> bool {
    let mut parts = path.split('.');
    match (parts.next(), parts.next()) {
        (Some("event"), _) => true,
        (Some("params"), Some(name)) => params
            .get(name)
            .is_some_and(|d| matches!(d.kind, ParamType::String) && d.allowed.is_none()),
        _ => false,
    }
}

/// Whether any string in `node` holds template syntax.
fn has_template(node: &Node) -> bool {
    match &node.value {
        NodeValue::String(text) => crate::template::contains_template(text),
        NodeValue::Seq(items) => items.iter().any(has_template),
        NodeValue::Map(entries) => entries.iter().any(|e| has_template(&e.value)),
        _ => false,
    }
}

/// The tasks upstream of `id` in its group (`by_id`), directly or transitively.
fn upstream_of<'t>(by_id: &HashMap<&str, &'t Task>, id: &str) -> HashSet<&'t str> {
    let mut found = HashSet::new();
    let mut pending: Vec<&str> = by_id
        .get(id)
        .map(|t| t.needs.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(name) = pending.pop() {
        if let Some(task) = by_id.get(name)
            && found.insert(task.id.as_str())
        {
            pending.extend(task.needs.iter().map(String::as_str));
        }
    }
    found
}

/// The position of the first key of `with` that a message names in backquotes, so
/// "`timeout` must be longer than zero" points at `timeout`.
fn named_key(with: &Node, message: &str) -> Option<Pos> {
    let entries = with.as_map()?;
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|word| entries.iter().find(|e| e.key == word).map(|e| e.key_pos))
}

/// A path `start -> … -> start` inside one strongly connected component, following `needs`
/// (edges backwards, since edges point from upstream to downstream): a depth-first walk that
/// tries lower task positions first, kept on an explicit stack so no cycle is too long for it.
fn cycle_from(
    graph: &DiGraph<usize, ()>,
    component: &[NodeIndex],
    start: NodeIndex,
) -> Vec<NodeIndex> {
    let inside: HashSet<NodeIndex> = component.iter().copied().collect();
    let next_of = |here: NodeIndex| {
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(here, petgraph::Direction::Incoming)
            .filter(|n| inside.contains(n))
            .collect();
        // Popped from the end: the lowest position first.
        next.sort_by_key(|n| std::cmp::Reverse(n.index()));
        next
    };
    let mut path = vec![start];
    let mut visited = HashSet::from([start]);
    let mut choices = vec![next_of(start)];
    while let Some(options) = choices.last_mut() {
        match options.pop() {
            Some(n) if n == start => {
                path.push(n);
                return path;
            }
            Some(n) => {
                if visited.insert(n) {
                    path.push(n);
                    choices.push(next_of(n));
                }
            }
            None => {
                choices.pop();
                if path.len() > 1 {
                    path.pop();
                }
            }
        }
    }
    path
}

fn backoff(spec: BackoffSpec) -> Backoff {
    match spec {
        BackoffSpec::Fixed => Backoff::Fixed,
        BackoffSpec::Exponential => Backoff::Exponential,
    }
}

fn type_name(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "a boolean",
        ParamType::Array => "a list",
        ParamType::Object => "a map",
    }
}

fn value_has_type(value: &Value, kind: ParamType) -> bool {
    match kind {
        ParamType::String => value.is_string(),
        ParamType::Integer => value.is_i64() || value.is_u64(),
        ParamType::Number => value.is_number(),
        ParamType::Boolean => value.is_boolean(),
        ParamType::Array => value.is_array(),
        ParamType::Object => value.is_object(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}
