//! Loading workflow files: finding them, checking each against the whole-format JSON Schema
//! (every operator's `with` included), compiling it with each operator's own check of `with`,
//! and checking ids across files. One broken file never stops the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::dag::{self, Workflow};
use crate::diagnostic::Diagnostic;
use crate::operators::{Operator, OperatorError};
use crate::spec::check::TEMPLATED;

pub mod launch;
pub mod live;
pub mod reproduce;
pub mod runs;
pub mod versions;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("`{0}` does not exist")]
    Missing(PathBuf),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The JSON Schema of the whole format, built once per process.
pub fn workflow_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

/// The spec's schema, with `operator` restricted to the registry's names and, per operator,
/// `if {operator: NAME} then {with: <its config schema>}`.
fn build_schema() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let configs: Vec<(Operator, Value)> = Operator::ALL
        .iter()
        .map(|op| (*op, op.config_schema(&mut generator).to_value()))
        .collect();
    let mut schema = crate::spec::format::base_schema(&mut generator);
    schema["$id"] = json!("https://sluice.dev/schema/workflow.schema.json");
    let mut rules = Vec::new();
    for (op, config) in configs {
        let name = op.name();
        let def = format!("{}With", capitalize(name));
        let requires_with = config
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty());
        schema["$defs"][&def] = config;
        let mut then = json!({
            "properties": { "with": { "$ref": format!("#/$defs/{def}"), TEMPLATED: true } }
        });
        if requires_with {
            then["required"] = json!(["with"]);
        }
        rules.push(json!({
            "if": { "properties": { "operator": { "const": name } }, "required": ["operator"] },
            "then": then
        }));
    }
    let names: Vec<&str> = Operator::ALL.iter().map(|op| op.name()).collect();
    let task = &mut schema["$defs"]["TaskSpec"];
    task["properties"]["operator"]["enum"] = json!(names);
    task["allOf"] = Value::Array(rules);
    schema
}

fn capitalize(name: &str) -> String {
    name.split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Compiles a workflow from its source text (a stored version, or a file already read).
pub fn compile_source(path: &Path, source: &str) -> Result<Workflow, Vec<Diagnostic>> {
    check_source(path, source).result
}

/// Compiles a workflow with every check, each operator's own included, and its warnings.
pub fn check_source(path: &Path, source: &str) -> dag::Compiled {
    dag::compile_checked(source, path, workflow_schema(), &check_operator, &|name| {
        Operator::from_name(name).map_or(&[], Operator::deferred_fields)
    })
}

/// An operator's static check of `with` (see `Operator::check_static`), as `dag` takes it.
fn check_operator(name: &str, with: &Value) -> Result<(), String> {
    let Some(operator) = Operator::from_name(name) else {
        // The schema check already refused the name.
        return Ok(());
    };
    operator.check_static(with).map_err(|e| match e {
        OperatorError::Config { message, .. } => message,
        other => other.to_string(),
    })
}

/// Reads and compiles one workflow file. A file that cannot be read is one diagnostic at 0:0.
pub fn load_file(path: &Path) -> Result<Workflow, Vec<Diagnostic>> {
    check_file(path).result
}

/// [`load_file`], with the file's warnings.
pub fn check_file(path: &Path) -> dag::Compiled {
    match std::fs::read_to_string(path) {
        Ok(source) => check_source(path, &source),
        Err(e) => dag::Compiled {
            result: Err(vec![Diagnostic::new(
                path,
                0,
                0,
                format!("cannot read the file: {e}"),
            )]),
            warnings: Vec::new(),
        },
    }
}

/// The workflow files named by `paths`: files as given, directories searched recursively for
/// `*.yaml` and `*.yml` (sorted). A path that does not exist is an error.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CatalogError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CatalogError::Missing(path.clone()),
            _ => CatalogError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), CatalogError> {
    let io = |source| CatalogError::Io {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
    Ok(())
}

/// One file's outcome.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub result: Result<Workflow, Vec<Diagnostic>>,
}

/// One file's outcome and its warnings (`sluice validate`).
#[derive(Debug)]
pub struct Checked {
    pub loaded: Loaded,
    pub warnings: Vec<Diagnostic>,
}

/// Loads every file, in parallel on the machine's cores, then rejects workflows whose id an
/// earlier file (in the given order) already uses. Results are in the order of `files`.
pub fn load_all(files: &[PathBuf]) -> Vec<Loaded> {
    check_all(files).into_iter().map(|c| c.loaded).collect()
}

/// [`load_all`], keeping each file's warnings.
pub fn check_all(files: &[PathBuf]) -> Vec<Checked> {
    // Build the schema before the threads start so they do not all wait on it.
    let _ = workflow_schema();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(workers).max(1);
    let checked: Vec<Checked> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| {
                            let compiled = check_file(p);
                            Checked {
                                loaded: Loaded {
                                    path: p.clone(),
                                    result: compiled.result,
                                },
                                warnings: compiled.warnings,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(list) => list,
                // A panic is a bug in Sluice; keep it visible rather than silently losing files.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let (mut loaded, warnings): (Vec<Loaded>, Vec<Vec<Diagnostic>>) =
        checked.into_iter().map(|c| (c.loaded, c.warnings)).unzip();
    reject_duplicate_ids(&mut loaded);
    loaded
        .into_iter()
        .zip(warnings)
        .map(|(loaded, warnings)| Checked { loaded, warnings })
        .collect()
}

/// Marks every workflow whose id an earlier file already uses as an error.
pub fn reject_duplicate_ids(loaded: &mut [Loaded]) {
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for item in loaded.iter_mut() {
        let Ok(workflow) = &item.result else { continue };
        match seen.get(&workflow.id) {
            Some(first) => {
                let pos = id_position(&workflow.source);
                let message = format!(
                    "the workflow id `{}` is already used by {}",
                    workflow.id,
                    first.display()
                );
                item.result = Err(vec![
                    Diagnostic::new(&item.path, pos.0, pos.1, message).with_help(Some(
                        "workflow ids must be unique; set a different `id`".to_owned(),
                    )),
                ]);
            }
            None => {
                seen.insert(workflow.id.clone(), item.path.clone());
            }
        }
    }
}

/// Where the top-level `id` key is, or 0:0 when the id comes from the file name.
fn id_position(source: &str) -> (u32, u32) {
    crate::spec::parse(source)
        .ok()
        .and_then(|root| root.entry("id").map(|e| (e.key_pos.line, e.key_pos.column)))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_every_operator() {
        let schema = workflow_schema();
        let task = &schema["$defs"]["TaskSpec"];
        assert_eq!(
            task["allOf"].as_array().map(Vec::len),
            Some(Operator::ALL.len())
        );
        assert!(schema["$defs"]["NoopWith"].is_object());
    }

    #[test]
    fn compiles_a_small_workflow_with_defaults_applied() {
        let source = "defaults: {retries: 2, retry_backoff: exponential}\ntasks:\n  a: {operator: noop}\n  b: {operator: noop, needs: [a], retries: 5, timeout: 10m}\n";
        let wf = dag::compile(source, Path::new("small.yaml"), workflow_schema()).unwrap();
        assert_eq!(wf.id, "small");
        assert_eq!(wf.tasks[0].retries, 2);
        assert_eq!(wf.tasks[0].retry_delay, dag::DEFAULT_RETRY_DELAY);
        assert_eq!(wf.tasks[0].retry_backoff, dag::Backoff::Exponential);
        assert_eq!(wf.tasks[1].retries, 5);
        assert_eq!(
            wf.tasks[1].timeout,
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(wf.upstream(1).collect::<Vec<_>>(), [0]);
        assert_eq!(wf.max_active_runs, 16);
        assert_eq!(wf.source_hash.len(), 64);
    }

    #[test]
    fn duplicate_ids_are_rejected_in_the_later_file() {
        let wf = |path: &str, source: &str| Loaded {
            path: path.into(),
            result: dag::compile(source, Path::new(path), workflow_schema()),
        };
        let mut loaded = vec![
            wf("a.yaml", "id: same\ntasks: {t: {operator: noop}}\n"),
            wf("b.yaml", "tasks: {t: {operator: noop}}\nid: same\n"),
        ];
        reject_duplicate_ids(&mut loaded);
        assert!(loaded[0].result.is_ok());
        let errors = loaded[1].result.as_ref().unwrap_err();
        assert_eq!(
            errors[0].to_string().lines().next(),
            Some("b.yaml:2:1: error: the workflow id `same` is already used by a.yaml")
        );
    }
}
