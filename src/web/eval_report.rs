//! The eval report of an `eval` task (`GET /runs/{run_id}/tasks/{task}/eval`): its metrics
//! against the thresholds of the gate that reads them and against the champion's, every
//! example with failures first (input, expected and output side by side), and the regressions:
//! the examples that passed under the champion and fail now. `server::eval_report` serves the
//! same [`EvalReport`] as JSON.
//!
//! The champion is a registered model's alias (the gate's `baseline: { model, alias }`, or
//! `?champion=model@alias`); its examples come from the workflow run that registered the
//! version holding the alias (the tracking run's lineage), from the eval task with the same id.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::Value as Page;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::drift::latest_outputs;
use super::pages::{find_run, pinned_workflow};
use super::{Result, WebError, WebState, auth::Session, render};
use crate::dag::Workflow;
use crate::operators::eval::{RESULTS_ARTIFACT, format_value};
use crate::operators::gate::{BaselineMetrics, GateConfig, decide, number};
use crate::secrets::Masker;

/// How many examples (and regressions) a report lists; the counts cover them all.
pub const EXAMPLES_SHOWN: usize = 500;
/// The most of a results artifact a report reads.
const RESULTS_LIMIT: u64 = 64 << 20;

/// This module's routes, merged into `web::router`.
pub(super) fn routes() -> Router<WebState> {
    Router::new().route("/runs/{run_id}/tasks/{task}/eval", get(report))
}

/// The report of an eval task's latest successful try.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalReport {
    pub run_id: String,
    pub workflow_id: String,
    pub task: String,
    /// False while the task has no successful try: everything below is then empty.
    pub succeeded: bool,
    /// Examples evaluated.
    pub count: Option<u64>,
    /// Examples that failed.
    pub failures_total: Option<u64>,
    /// One row per metric: the eval's value, the gate's threshold and verdict, the champion's
    /// value and the difference.
    pub metrics: Vec<MetricRow>,
    /// The gate whose verdicts the rows show.
    pub gate: Option<GateSource>,
    pub champion: Champion,
    /// Examples listed (failures first), at most [`EXAMPLES_SHOWN`].
    pub examples: Vec<ExampleRow>,
    /// Examples in the results artifact.
    pub examples_total: usize,
    /// Examples in the results artifact that failed.
    pub examples_failed: usize,
    /// The examples that passed under the champion and fail now, at most [`EXAMPLES_SHOWN`].
    pub regressions: Vec<ExampleRow>,
    /// How many regressed, all counted; null without the champion's examples.
    pub regressions_total: Option<usize>,
    /// Why the examples cannot be shown (the artifact is missing, unreadable or cut).
    pub results_problem: Option<String>,
}

/// One metric of the report.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct MetricRow {
    pub metric: String,
    pub value: Option<f64>,
    /// The gate's bound, as `>= 0.90`.
    pub threshold: Option<String>,
    /// The gate's verdict on the metric: `pass`, `warn` or `fail`.
    pub status: Option<String>,
    pub champion: Option<f64>,
    /// `value - champion`.
    pub delta: Option<f64>,
}

/// Where the verdicts come from.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateSource {
    pub task: String,
    /// The state of the gate's latest try.
    pub state: Option<String>,
    /// The verdicts were worked out again from the gate's `with` and the champion's metrics
    /// (the gate did not succeed, so it kept no table).
    pub recomputed: bool,
    /// Why there are no verdicts, when there are none.
    pub problem: Option<String>,
}

/// The champion the report compares with.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Champion {
    /// Neither a gate's `baseline: { model }` nor `?champion=` names one.
    NotNamed,
    /// This server has no tracking backend to read aliases from.
    TrackingNotConfigured { model: String, alias: String },
    /// No version holds the alias yet.
    None { model: String, alias: String },
    Found {
        model: String,
        alias: String,
        version: u32,
        /// The workflow run that registered the version, whose examples are compared.
        run_id: Option<String>,
        /// Its eval task.
        task: Option<String>,
        /// Why its examples cannot be compared, when they cannot.
        problem: Option<String>,
    },
}

/// One example of the results artifact.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ExampleRow {
    pub id: String,
    pub passed: bool,
    pub input: Option<String>,
    pub expected: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    /// Metric → this example's score.
    #[schema(value_type = Object)]
    pub scores: Map<String, Value>,
    /// Passed under the champion.
    pub regressed: bool,
}

/// `?champion=model@alias`.
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    pub champion: Option<String>,
}

/// A value of the artifact as text: strings as they are, other JSON as its text.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The examples of a results artifact, in file order; a line that is not an example (a cut
/// last line) is skipped.
fn parse_results(bytes: &[u8], masker: &Masker) -> Vec<ExampleRow> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter_map(|mut line| {
            masker.mask_json(&mut line);
            let id = text(line.get("id"))?;
            Some(ExampleRow {
                id,
                passed: line["passed"].as_bool().unwrap_or(false),
                input: text(line.get("input")),
                expected: text(line.get("expected")),
                output: text(line.get("output")),
                error: text(line.get("error")),
                scores: line["scores"].as_object().cloned().unwrap_or_default(),
                regressed: false,
            })
        })
        .collect()
}

/// The examples of an eval task's results artifact, or why they cannot be read.
async fn kept_results(
    state: &WebState,
    run_id: &str,
    task: &str,
) -> std::result::Result<Vec<ExampleRow>, String> {
    let record = super::artifacts::find(&state.store, run_id, RESULTS_ARTIFACT, Some(task))
        .await
        .map_err(|e| e.to_string())?;
    let artifacts = state
        .artifacts
        .as_ref()
        .ok_or("this server has no artifact store to read the results from")?;
    let bytes = artifacts
        .read_head(&record.sha256, record.size, RESULTS_LIMIT)
        .await
        .map_err(|e| format!("the results of task `{task}` cannot be read: {e}"))?;
    let masker = state.settings.masker.clone();
    let rows = tokio::task::spawn_blocking(move || parse_results(&bytes, &masker))
        .await
        .map_err(|e| format!("reading the results stopped: {e}"))?;
    if record.size > RESULTS_LIMIT {
        return Err(format!(
            "the results of task `{task}` are {} bytes, more than the {} this page reads",
            record.size, RESULTS_LIMIT
        ));
    }
    Ok(rows)
}

/// The name `track` keeps an eval's results artifact under (its file name).
const KEPT_RESULTS: &str = "results.jsonl";

/// Per-example results kept with a tracking run.
async fn tracked_results(
    tracking: &crate::tracking::Tracking,
    run_id: &str,
    file: &crate::tracking::TrackedFile,
    masker: &Arc<Masker>,
) -> std::result::Result<Vec<ExampleRow>, String> {
    if file.size > RESULTS_LIMIT {
        return Err(format!(
            "its kept `{KEPT_RESULTS}` is {} bytes, more than the {RESULTS_LIMIT} this page reads",
            file.size
        ));
    }
    let bytes = tracking
        .run_file(run_id, &file.name)
        .await
        .map_err(|e| format!("its kept `{KEPT_RESULTS}` cannot be read: {e}"))?;
    let masker = masker.clone();
    tokio::task::spawn_blocking(move || parse_results(&bytes, &masker))
        .await
        .map_err(|e| format!("reading the results stopped: {e}"))
}

/// The gate task that checks `task`'s metrics: one whose `with.metrics` reads its outputs,
/// else the first gate downstream of it.
fn gate_of<'w>(workflow: &'w Workflow, task: &str) -> Option<&'w crate::dag::Task> {
    let reads = format!("tasks.{task}.outputs");
    let gates = || workflow.all_tasks().filter(|t| t.operator == "gate");
    gates()
        .find(|g| {
            g.with["metrics"]
                .as_str()
                .is_some_and(|m| m.contains(&reads))
        })
        .or_else(|| {
            let index = workflow.task_index(task)?;
            let downstream = workflow.with_downstream(index);
            gates().find(|g| downstream.contains(&g.id))
        })
}

/// `model@alias` (the alias defaults to `champion`).
fn parse_champion(text: &str) -> Option<(String, String)> {
    let (model, alias) = text.split_once('@').unwrap_or((text, "champion"));
    let (model, alias) = (model.trim(), alias.trim());
    (!model.is_empty() && !alias.is_empty()).then(|| (model.to_owned(), alias.to_owned()))
}

/// The champion's metrics and, when its run can be found, its examples' verdicts by id.
struct ChampionData {
    metrics: Option<Map<String, Value>>,
    passed: Option<HashSet<String>>,
}

async fn read_champion(
    state: &WebState,
    named: Option<(String, String)>,
    task: &str,
) -> Result<(Champion, ChampionData)> {
    let mut data = ChampionData {
        metrics: None,
        passed: None,
    };
    let Some((model, alias)) = named else {
        return Ok((Champion::NotNamed, data));
    };
    let Some(tracking) = state.tracking.as_deref() else {
        return Ok((Champion::TrackingNotConfigured { model, alias }, data));
    };
    let version = tracking
        .get_alias(&model, &alias)
        .await
        .map_err(|e| WebError::Internal(format!("cannot read `{model}@{alias}`: {e}")))?;
    let Some(version) = version else {
        return Ok((Champion::None { model, alias }, data));
    };
    let found =
        |run_id: Option<String>, task: Option<String>, problem: Option<String>| Champion::Found {
            model: model.clone(),
            alias: alias.clone(),
            version: version.version,
            run_id,
            task,
            problem,
        };
    let Some(tracking_run) = version.tracking_run_id.as_deref() else {
        let problem = "the version was registered without a tracking run".to_owned();
        return Ok((found(None, None, Some(problem)), data));
    };
    let detail = tracking.run(tracking_run).await.map_err(|e| {
        WebError::Internal(format!("cannot read tracking run `{tracking_run}`: {e}"))
    })?;
    let Some(detail) = detail else {
        let problem = format!("its tracking run `{tracking_run}` no longer exists");
        return Ok((found(None, None, Some(problem)), data));
    };
    data.metrics = Some(detail.latest_metrics());
    // The champion's own evaluation, when `track` kept its results with the tracking run,
    // comes first: the run that registered the version need not be the one that evaluated it
    // (a retrained version is registered by its training run and evaluated by the next).
    if let Some(kept) = detail.files.iter().find(|f| f.name == KEPT_RESULTS) {
        let lineage_run = detail.run.lineage.run_id.clone();
        return Ok(
            match tracked_results(tracking, tracking_run, kept, &state.settings.masker).await {
                Ok(rows) => {
                    data.passed = Some(
                        rows.into_iter()
                            .filter(|r| r.passed)
                            .map(|r| r.id)
                            .collect(),
                    );
                    (found(lineage_run, None, None), data)
                }
                Err(problem) => (found(lineage_run, None, Some(problem)), data),
            },
        );
    }
    let Some(run_id) = detail.run.lineage.run_id.clone() else {
        let problem = "its tracking run names no workflow run".to_owned();
        return Ok((found(None, None, Some(problem)), data));
    };
    let Some(run) = state.store.run(&run_id).await? else {
        let problem = format!("its workflow run `{run_id}` is no longer stored");
        return Ok((found(Some(run_id), None, Some(problem)), data));
    };
    let workflow = pinned_workflow(state, &run).await?;
    let evals: Vec<&str> = workflow
        .all_tasks()
        .filter(|t| t.operator == "eval")
        .map(|t| t.id.as_str())
        .collect();
    let eval_task = if evals.contains(&task) {
        task.to_owned()
    } else if let [only] = evals.as_slice() {
        (*only).to_owned()
    } else {
        let problem = format!(
            "its run has no eval task `{task}` and {} others",
            evals.len()
        );
        return Ok((found(Some(run_id), None, Some(problem)), data));
    };
    match kept_results(state, &run_id, &eval_task).await {
        Ok(rows) => {
            data.passed = Some(
                rows.into_iter()
                    .filter(|r| r.passed)
                    .map(|r| r.id)
                    .collect(),
            );
            Ok((found(Some(run_id), Some(eval_task), None), data))
        }
        Err(problem) => Ok((found(Some(run_id), Some(eval_task), Some(problem)), data)),
    }
}

/// The gate's verdict per metric: its kept table when it succeeded, else `decide` again over
/// its `with` with this eval's metrics and the champion's.
async fn gate_verdicts(
    state: &WebState,
    run_id: &str,
    gate: &crate::dag::Task,
    metrics: &Map<String, Value>,
    champion: Option<&Map<String, Value>>,
    champion_named: bool,
) -> Result<(GateSource, Vec<MetricRow>)> {
    let tries: Vec<_> = state
        .store
        .task_instances(run_id)
        .await?
        .into_iter()
        .filter(|t| t.task_id == gate.id)
        .collect();
    let last_state = tries
        .iter()
        .max_by_key(|t| t.try_number)
        .map(|t| t.state.as_str().to_owned());
    let mut source = GateSource {
        task: gate.id.clone(),
        state: last_state,
        recomputed: false,
        problem: None,
    };
    let row = |r: &Value| MetricRow {
        metric: r["metric"].as_str().unwrap_or_default().to_owned(),
        value: r["value"].as_f64(),
        threshold: r["threshold"].as_str().map(str::to_owned),
        status: r["status"].as_str().map(str::to_owned),
        champion: None,
        delta: None,
    };
    if let Some(outputs) = latest_outputs(&state.store, run_id, &gate.id).await?
        && let Some(table) = outputs.get("table").and_then(Value::as_array)
    {
        return Ok((source, table.iter().map(row).collect()));
    }
    // The metrics the gate read: another task's, when its template names one task (a `track`
    // between eval and gate: `{{ tasks.track.outputs.metrics }}`), else this eval's.
    let named = gate.with["metrics"]
        .as_str()
        .and_then(|text| crate::template::tasks_read([text]))
        .filter(|ids| ids.len() == 1)
        .and_then(|ids| ids.into_iter().next());
    let read = match named {
        Some(id) => latest_outputs(&state.store, run_id, &id)
            .await?
            .and_then(|o| o.get("metrics").and_then(Value::as_object).cloned()),
        None => None,
    };
    let mut with = gate.with.clone();
    if let Some(fields) = with.as_object_mut() {
        let read = read.unwrap_or_else(|| metrics.clone());
        fields.insert("metrics".into(), Value::Object(read));
    }
    let config: GateConfig = match serde_json::from_value(with) {
        Ok(config) => config,
        Err(e) => {
            source.problem = Some(format!(
                "the gate kept no table and its settings cannot be read without running it: {e}"
            ));
            return Ok((source, Vec::new()));
        }
    };
    let baseline = match config.baseline.as_ref() {
        None => BaselineMetrics::None,
        Some(b) => match (&b.metrics, &b.model, champion) {
            (Some(m), _, _) => BaselineMetrics::Found(m.clone()),
            (None, Some(_), Some(m)) if champion_named => BaselineMetrics::Found(m.clone()),
            (None, Some(model), _) => BaselineMetrics::NoChampion {
                model: model.clone(),
                alias: b.alias.clone(),
            },
            (None, None, _) => BaselineMetrics::None,
        },
    };
    source.recomputed = true;
    let table = decide(&config, &baseline)
        .table
        .into_iter()
        .map(|r| MetricRow {
            metric: r.metric,
            value: r.value,
            threshold: r.threshold,
            status: Some(r.status.to_string()),
            champion: None,
            delta: None,
        })
        .collect();
    Ok((source, table))
}

/// Reads the report of `task` in run `run_id`; `NotFound` when the run has no such eval task.
pub async fn read_report(
    state: &WebState,
    run_id: &str,
    task: &str,
    champion: Option<&str>,
) -> Result<EvalReport> {
    let run = find_run(state, run_id).await?;
    let workflow = pinned_workflow(state, &run).await?;
    if !workflow
        .all_tasks()
        .any(|t| t.id == task && t.operator == "eval")
    {
        return Err(WebError::NotFound(format!(
            "run `{run_id}` has no eval task `{task}`"
        )));
    }
    let gate = gate_of(&workflow, task);
    let named = match champion {
        Some(text) => Some(parse_champion(text).ok_or_else(|| {
            WebError::BadRequest(format!(
                "`champion` is `{text}`: give it as `model@alias`, such as `assistant@champion`"
            ))
        })?),
        None => gate.and_then(|g| {
            let baseline = &g.with["baseline"];
            let model = baseline["model"].as_str()?;
            let alias = baseline["alias"].as_str().unwrap_or("champion");
            Some((model.to_owned(), alias.to_owned()))
        }),
    };
    let mut report = EvalReport {
        run_id: run.id.clone(),
        workflow_id: run.workflow_id.clone(),
        task: task.to_owned(),
        succeeded: false,
        count: None,
        failures_total: None,
        metrics: Vec::new(),
        gate: None,
        champion: Champion::NotNamed,
        examples: Vec::new(),
        examples_total: 0,
        examples_failed: 0,
        regressions: Vec::new(),
        regressions_total: None,
        results_problem: None,
    };
    let Some(outputs) = latest_outputs(&state.store, run_id, task).await? else {
        return Ok(report);
    };
    report.succeeded = true;
    report.count = outputs.get("count").and_then(Value::as_u64);
    report.failures_total = outputs.get("failures_total").and_then(Value::as_u64);
    let metrics = outputs
        .get("metrics")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let champion_named = named.is_some();
    let (champion, data) = read_champion(state, named, task).await?;
    report.champion = champion;

    let mut gate_rows = Vec::new();
    if let Some(gate) = gate {
        let (source, rows) = gate_verdicts(
            state,
            run_id,
            gate,
            &metrics,
            data.metrics.as_ref(),
            champion_named,
        )
        .await?;
        report.gate = Some(source);
        gate_rows = rows;
    }
    report.metrics = metric_rows(&metrics, gate_rows, data.metrics.as_ref());

    match kept_results(state, run_id, task).await {
        Ok(rows) => {
            let (mut failed, passed): (Vec<ExampleRow>, Vec<ExampleRow>) =
                rows.into_iter().partition(|r| !r.passed);
            report.examples_total = failed.len() + passed.len();
            report.examples_failed = failed.len();
            if let Some(champion_passed) = &data.passed {
                for row in &mut failed {
                    row.regressed = champion_passed.contains(&row.id);
                }
                let regressions: Vec<&ExampleRow> = failed.iter().filter(|r| r.regressed).collect();
                report.regressions_total = Some(regressions.len());
                report.regressions = regressions
                    .into_iter()
                    .take(EXAMPLES_SHOWN)
                    .cloned()
                    .collect();
            }
            report.examples = failed
                .into_iter()
                .chain(passed)
                .take(EXAMPLES_SHOWN)
                .collect();
        }
        Err(problem) => report.results_problem = Some(problem),
    }
    Ok(report)
}

/// The eval's metrics in its order, then metrics only the gate checks (missing ones breach),
/// each with the gate's verdict and the champion's value.
fn metric_rows(
    metrics: &Map<String, Value>,
    gate_rows: Vec<MetricRow>,
    champion: Option<&Map<String, Value>>,
) -> Vec<MetricRow> {
    let mut gate: BTreeMap<String, MetricRow> = BTreeMap::new();
    let mut gate_order = Vec::new();
    for row in gate_rows {
        // The gate lists a metric once per check; the worst verdict and the bound stay.
        match gate.get_mut(&row.metric) {
            Some(kept) => {
                if rank(row.status.as_deref()) > rank(kept.status.as_deref()) {
                    kept.status = row.status;
                }
                if kept.threshold.is_none() {
                    kept.threshold = row.threshold;
                }
            }
            None => {
                gate_order.push(row.metric.clone());
                gate.insert(row.metric.clone(), row);
            }
        }
    }
    let names = metrics
        .keys()
        .cloned()
        .chain(gate_order.into_iter().filter(|m| !metrics.contains_key(m)));
    names
        .map(|name| {
            let checked = gate.remove(&name);
            let value = metrics
                .get(&name)
                .and_then(number)
                .or_else(|| checked.as_ref().and_then(|c| c.value));
            let champion = champion.and_then(|c| c.get(&name)).and_then(number);
            MetricRow {
                value,
                threshold: checked.as_ref().and_then(|c| c.threshold.clone()),
                status: checked.and_then(|c| c.status),
                champion,
                delta: value.zip(champion).map(|(v, c)| v - c),
                metric: name,
            }
        })
        .collect()
}

fn rank(status: Option<&str>) -> u8 {
    match status {
        Some("fail") => 3,
        Some("warn") => 2,
        Some("pass") => 1,
        _ => 0,
    }
}

/// `GET /runs/{run_id}/tasks/{task}/eval`.
pub async fn report(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task_id)): Path<(String, String)>,
    Query(query): Query<ReportQuery>,
) -> Result<Response> {
    let report = read_report(&state, &run_id, &task_id, query.champion.as_deref()).await?;
    let shown = |v: Option<f64>| v.map(format_value);
    let metrics: Vec<_> = report
        .metrics
        .iter()
        .map(|m| {
            minijinja::context! {
                metric => &m.metric,
                value => shown(m.value),
                threshold => &m.threshold,
                status => &m.status,
                champion => shown(m.champion),
                delta => m.delta.map(|d| format!("{}{}", if d > 0.0 { "+" } else { "" }, format_value(d))),
            }
        })
        .collect();
    Ok(render(
        "eval.html",
        minijinja::context! {
            title => format!("{} · eval of {task_id}", report.workflow_id),
            user => session.view(),
            metrics,
            cut => CUT_CHARS,
            report => Page::from(Serde(&report)),
        },
    )?
    .into_response())
}

/// Text longer than this many characters is shown cut, with the whole of it one click away.
const CUT_CHARS: usize = 280;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn results_lines_become_rows_and_a_cut_line_is_skipped() {
        let masker = Masker::new(vec!["s3cret".into()]);
        let bytes = b"{\"id\":\"q1\",\"input\":\"hi s3cret\",\"expected\":\"a\",\"output\":\"a\",\"passed\":true,\"scores\":{\"exact_match\":1.0}}\n{\"id\":7,\"expected\":{\"a\":1},\"output\":null,\"error\":\"no answer\",\"passed\":false}\n{\"id\":\"q3\",\"inp";
        let rows = parse_results(bytes, &masker);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].input.as_deref(), Some("hi ***"));
        assert!(rows[0].passed && !rows[1].passed);
        assert_eq!(rows[1].id, "7");
        assert_eq!(rows[1].expected.as_deref(), Some("{\"a\":1}"));
        assert_eq!(rows[1].output, None);
        assert_eq!(rows[1].error.as_deref(), Some("no answer"));
    }

    #[tokio::test]
    async fn a_champion_needs_a_name_and_tracking_to_be_read() {
        let dir = tempfile::tempdir().expect("a folder");
        let store = crate::store::Store::open(&crate::store::StoreConfig::new("sqlite::memory:"))
            .await
            .expect("a store");
        let state = WebState {
            store,
            catalog: std::sync::Arc::new(crate::catalog::live::Catalog::open(dir.path())),
            settings: std::sync::Arc::default(),
            login_limiter: std::sync::Arc::default(),
            artifacts: None,
            tracking: None,
        };
        let (champion, data) = read_champion(&state, None, "evaluate").await.expect("read");
        assert!(matches!(champion, Champion::NotNamed));
        assert!(data.metrics.is_none() && data.passed.is_none());
        let named = Some(("assistant".to_owned(), "champion".to_owned()));
        let (champion, _) = read_champion(&state, named, "evaluate")
            .await
            .expect("read");
        assert_eq!(
            serde_json::to_value(&champion).expect("json"),
            json!({"status": "tracking_not_configured", "model": "assistant", "alias": "champion"})
        );
    }

    #[test]
    fn champion_names_read_model_at_alias() {
        assert_eq!(
            parse_champion("assistant@prod"),
            Some(("assistant".into(), "prod".into()))
        );
        assert_eq!(
            parse_champion("assistant"),
            Some(("assistant".into(), "champion".into()))
        );
        assert_eq!(parse_champion("@prod"), None);
        assert_eq!(parse_champion("assistant@"), None);
    }

    #[test]
    fn metric_rows_join_the_gate_and_the_champion() {
        let metrics = json!({"exact_match": 0.5, "error_rate": 0.1});
        let metrics = metrics.as_object().cloned().unwrap_or_default();
        let champion = json!({"exact_match": 0.75});
        let gate = vec![
            MetricRow {
                metric: "exact_match".into(),
                value: Some(0.5),
                threshold: Some(">= 0.60".into()),
                status: Some("warn".into()),
                champion: None,
                delta: None,
            },
            MetricRow {
                metric: "exact_match".into(),
                value: Some(0.5),
                threshold: None,
                status: Some("fail".into()),
                champion: None,
                delta: None,
            },
            MetricRow {
                metric: "f1".into(),
                value: None,
                threshold: Some(">= 0.50".into()),
                status: Some("fail".into()),
                champion: None,
                delta: None,
            },
        ];
        let rows = metric_rows(&metrics, gate, champion.as_object());
        let names: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(names, ["exact_match", "error_rate", "f1"]);
        let exact = &rows[0];
        assert_eq!(exact.threshold.as_deref(), Some(">= 0.60"));
        assert_eq!(exact.status.as_deref(), Some("fail"));
        assert_eq!(exact.champion, Some(0.75));
        assert_eq!(exact.delta, Some(-0.25));
        assert_eq!(rows[1].status, None);
        assert_eq!(rows[2].value, None);
    }
}
