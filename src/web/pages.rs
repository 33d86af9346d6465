//! The pages people read: the workflows list, a workflow (graph, run grid, params, source) and
//! a run (state, params, Gantt, every try with outputs and logs). Every text from a workflow
//! file or a run reaches the templates as plain data, which escape it; outputs, params, errors
//! and logs pass the masker first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use minijinja::Value as Page;
use minijinja::value::Serde;

use super::graph::{Gantt, RunDuration, Span, dag_layout, duration_chart, gantt};
use super::{Result, WebError, WebState, auth::Session, human_duration, iso, render};
use crate::catalog::live::Entry;
use crate::dag::Workflow;
use crate::lifecycle::TaskState;
use crate::secrets::Masker;
use crate::store::{RunFilter, RunRecord, TaskInstanceRecord};

/// Recent runs shown per workflow on the list page.
const RECENT_RUNS: usize = 12;
/// Runs per page of a workflow's grid.
pub(super) const GRID_PAGE: usize = 20;

/// A state as the pages show it: a CSS class for the colour and a symbol so it reads without
/// colour too.
pub(super) fn symbol(state: &str) -> &'static str {
    match state {
        "success" => "✓",
        "failed" => "✗",
        "upstream_failed" => "⚠",
        "running" => "▶",
        "queued" => "…",
        "scheduled" => "◷",
        "pending" => "·",
        "up_for_retry" => "↻",
        "skipped" => "»",
        "cancelled" => "⊘",
        _ => " ",
    }
}

#[derive(Debug, Serialize)]
struct RunCell {
    id: String,
    state: String,
    symbol: &'static str,
    created_at: String,
    /// The run's creation day (`12-06`), set on the grid's first column of each day.
    day: Option<String>,
    /// How long the run took (so far), in milliseconds; `None` before it starts.
    #[serde(skip)]
    millis: Option<i64>,
}

impl RunCell {
    fn of(run: &RunRecord) -> RunCell {
        RunCell {
            id: run.id.clone(),
            state: run.state.as_str().to_owned(),
            symbol: symbol(run.state.as_str()),
            created_at: iso(run.created_at),
            day: None,
            millis: run
                .started_at
                .map(|s| (run.ended_at.unwrap_or_else(Utc::now) - s).num_milliseconds()),
        }
    }
}

/// Labels the first column of each day, so the grid's columns read as dates.
fn label_days(cells: &mut [RunCell], runs: &[RunRecord]) {
    let mut previous = None;
    for (cell, run) in cells.iter_mut().zip(runs) {
        let day = run.created_at.format("%m-%d").to_string();
        if previous.as_ref() != Some(&day) {
            cell.day = Some(day.clone());
        }
        previous = Some(day);
    }
}

#[derive(Debug, Serialize)]
struct WorkflowRow {
    id: String,
    description: Option<String>,
    tags: Vec<String>,
    schedule: Option<String>,
    timezone: String,
    next_run: Option<String>,
    /// The next run in the workflow's own zone.
    next_run_local: Option<String>,
    paused: bool,
    stale: bool,
    path: String,
    recent: Vec<RunCell>,
    /// Started by `github` or `workflow` triggers (with or without a schedule).
    triggered: bool,
}

/// The next time the workflow's schedule fires after `now`, unless it is paused.
fn next_run(workflow: &Workflow, paused: bool, now: chrono::DateTime<Utc>) -> Option<String> {
    if paused {
        return None;
    }
    let schedule = workflow.schedule.as_ref()?;
    schedule
        .next_after(now.with_timezone(&workflow.timezone))
        .map(|at| iso(at.with_timezone(&Utc)))
}

/// The next fire time in the workflow's own zone, named: `2026-12-07 02:00 Europe/Paris`.
fn next_run_local(workflow: &Workflow, paused: bool, now: DateTime<Utc>) -> Option<String> {
    if paused {
        return None;
    }
    let at = workflow
        .schedule
        .as_ref()?
        .next_after(now.with_timezone(&workflow.timezone))?;
    Some(format!(
        "{} {}",
        at.format("%Y-%m-%d %H:%M"),
        workflow.timezone.name()
    ))
}

/// `GET /`: every workflow with its schedule and recent runs, import errors first.
pub async fn workflows(State(state): State<WebState>, session: Session) -> Result<Response> {
    let paused = state.store.paused().await?;
    let snapshot = state.catalog.snapshot();
    let now = Utc::now();
    let mut rows = Vec::with_capacity(snapshot.workflows.len());
    for entry in snapshot.workflows.values() {
        let w = &entry.workflow;
        let is_paused = paused.contains(&w.id);
        let filter = RunFilter {
            workflow: Some(w.id.clone()),
            ..RunFilter::default()
        };
        let page = state
            .store
            .list_runs(&filter, RECENT_RUNS, None)
            .await?
            .map_err(|e| WebError::Internal(e.to_string()))?;
        let mut recent: Vec<RunCell> = page.runs.iter().map(RunCell::of).collect();
        // Oldest on the left, as a timeline reads.
        recent.reverse();
        rows.push(WorkflowRow {
            id: w.id.clone(),
            description: w.description.clone(),
            tags: w.tags.clone(),
            schedule: w.schedule.as_ref().map(|s| s.expression.clone()),
            timezone: w.timezone.name().to_owned(),
            next_run: next_run(w, is_paused, now),
            next_run_local: next_run_local(w, is_paused, now),
            paused: is_paused,
            stale: entry.stale,
            path: entry.path.display().to_string(),
            recent,
            triggered: !triggers_of(w).is_empty(),
        });
    }
    let import_errors: Vec<Value> = snapshot
        .import_errors
        .iter()
        .map(|e| {
            serde_json::json!({
                "path": e.path.display().to_string(),
                "problems": e.diagnostics.iter().map(|d| serde_json::json!({
                    "location": format!("{}:{}:{}", d.path.display(), d.line, d.column),
                    "line": d.line,
                    "message": d.message,
                    "help": d.help,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(render(
        "workflows.html",
        minijinja::context! {
            title => "Workflows",
            user => session.view(),
            workflows => Page::from(Serde(&rows)),
            import_errors => Page::from(Serde(&import_errors)),
        },
    )?
    .into_response())
}

/// A trigger of a workflow, or a workflow another one triggers, as the workflow page lists it.
#[derive(Debug, Serialize)]
struct TriggerLink {
    label: String,
    /// The other workflow's page, for `workflow` triggers.
    workflow: Option<String>,
}

/// What starts a workflow besides its schedule: its `github` and `workflow` triggers.
fn triggers_of(w: &Workflow) -> Vec<TriggerLink> {
    let words = |v: Option<&Value>| -> String {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    w.triggers
        .iter()
        .filter_map(|t| {
            if let Some(g) = t.get("github") {
                let events = words(g.get("events"));
                Some(TriggerLink {
                    label: if events.is_empty() {
                        "GitHub events".to_owned()
                    } else {
                        format!("GitHub {events}")
                    },
                    workflow: None,
                })
            } else if let Some(up) = t.get("workflow") {
                let id = up.get("id").and_then(Value::as_str)?.to_owned();
                let states = words(up.get("states"));
                Some(TriggerLink {
                    label: if states.is_empty() {
                        format!("a run of {id} ends")
                    } else {
                        format!("a run of {id} ends ({states})")
                    },
                    workflow: Some(id),
                })
            } else {
                None
            }
        })
        .collect()
}

/// The loaded workflows that a run of `id` starts (their `workflow` triggers name it).
fn triggered_by_this(state: &WebState, id: &str) -> Vec<TriggerLink> {
    state
        .catalog
        .snapshot()
        .workflows
        .values()
        .filter(|entry| {
            entry.workflow.triggers.iter().any(|t| {
                t.get("workflow")
                    .and_then(|up| up.get("id"))
                    .and_then(Value::as_str)
                    == Some(id)
            })
        })
        .map(|entry| TriggerLink {
            label: entry.workflow.id.clone(),
            workflow: Some(entry.workflow.id.clone()),
        })
        .collect()
}

pub(super) fn find_workflow(state: &WebState, id: &str) -> Result<Entry> {
    state
        .catalog
        .get(id)
        .ok_or_else(|| WebError::NotFound(format!("there is no workflow `{id}`")))
}

#[derive(Debug, Serialize)]
pub(super) struct ParamRow {
    pub name: String,
    pub kind: &'static str,
    pub default: Option<String>,
    pub allowed: Option<Vec<String>>,
    pub description: Option<String>,
    pub required: bool,
}

pub(super) fn param_rows(workflow: &Workflow) -> Vec<ParamRow> {
    workflow
        .params
        .iter()
        .map(|(name, decl)| ParamRow {
            name: name.clone(),
            kind: decl.kind.name(),
            default: decl.default.as_ref().map(Value::to_string),
            allowed: decl
                .allowed
                .as_ref()
                .map(|values| values.iter().map(Value::to_string).collect()),
            description: decl.description.clone(),
            required: decl.default.is_none(),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct WorkflowQuery {
    /// The `next_cursor` of the previous page of runs.
    cursor: Option<String>,
    /// The run whose states colour the graph; the newest on the page when absent.
    run: Option<String>,
}

#[derive(Debug, Serialize)]
struct GridRow {
    task: String,
    cells: Vec<GridCell>,
}

#[derive(Debug, Serialize)]
struct GridCell {
    run_id: String,
    state: String,
    symbol: &'static str,
}

/// The newest page of a workflow's runs (or the one after `cursor`) as the grid shows it, with
/// the latest state of every task of those runs.
struct RunsGrid {
    runs: Vec<RunCell>,
    rows: Vec<GridRow>,
    next_cursor: Option<String>,
    states: HashMap<String, HashMap<String, TaskState>>,
}

async fn runs_grid(state: &WebState, w: &Workflow, cursor: Option<&str>) -> Result<RunsGrid> {
    let filter = RunFilter {
        workflow: Some(w.id.clone()),
        ..RunFilter::default()
    };
    let page = state
        .store
        .list_runs(&filter, GRID_PAGE, cursor)
        .await?
        .map_err(WebError::from)?;
    let run_ids: Vec<String> = page.runs.iter().map(|r| r.id.clone()).collect();
    let states = state.store.latest_task_states(&run_ids).await?;
    let rows = w
        .all_tasks()
        .map(|task| GridRow {
            task: task.id.clone(),
            cells: page
                .runs
                .iter()
                .map(|run| {
                    let state = states
                        .get(&run.id)
                        .and_then(|tasks| tasks.get(&task.id))
                        .map_or("none", |s| s.as_str());
                    GridCell {
                        run_id: run.id.clone(),
                        state: state.to_owned(),
                        symbol: symbol(state),
                    }
                })
                .collect(),
        })
        .collect();
    let mut runs: Vec<RunCell> = page.runs.iter().map(RunCell::of).collect();
    label_days(&mut runs, &page.runs);
    Ok(RunsGrid {
        runs,
        rows,
        next_cursor: page.next_cursor,
        states,
    })
}

/// `GET /workflows/{id}`: the graph, the grid of recent runs × tasks, params and source.
pub async fn workflow(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<WorkflowQuery>,
) -> Result<Response> {
    let entry = find_workflow(&state, &id)?;
    let w = &entry.workflow;
    let paused = state.store.paused().await?.contains(&w.id);
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let mut grid = runs_grid(&state, w, cursor.as_deref()).await?;
    let mut selected_id = query
        .run
        .clone()
        .or_else(|| grid.runs.first().map(|r| r.id.clone()));
    // A selected run outside this page (a link from elsewhere) still colours the graph.
    if let Some(run) = &selected_id
        && !grid.states.contains_key(run)
    {
        match state.store.run(run).await? {
            Some(r) if r.workflow_id == w.id => {
                grid.states.extend(
                    state
                        .store
                        .latest_task_states(std::slice::from_ref(run))
                        .await?,
                );
            }
            _ => selected_id = None,
        }
    }
    let empty = HashMap::new();
    let selected_states = selected_id
        .as_ref()
        .and_then(|r| grid.states.get(r))
        .unwrap_or(&empty);
    let layout = dag_layout(w, selected_states);
    let now = Utc::now();
    // In the grid's order (newest left), so each bar sits under its run's column.
    let durations: Vec<RunDuration> = grid
        .runs
        .iter()
        .map(|r| RunDuration {
            run_id: r.id.clone(),
            state: r.state.clone(),
            millis: r.millis,
            label: format!(
                "{} · {} · {}",
                r.created_at,
                r.state,
                r.millis.map_or_else(
                    || "not started".to_owned(),
                    |ms| human_duration(chrono::TimeDelta::milliseconds(ms))
                )
            ),
        })
        .collect();
    let chart = duration_chart(&durations);
    let triggers_in = triggers_of(w);
    let triggers_out = triggered_by_this(&state, &w.id);
    Ok(render(
        "workflow.html",
        minijinja::context! {
            title => w.id.clone(),
            user => session.view(),
            workflow => minijinja::context! {
                id => w.id.clone(),
                description => w.description.clone(),
                tags => w.tags.clone(),
                schedule => w.schedule.as_ref().map(|s| s.expression.clone()),
                timezone => w.timezone.name(),
                next_run => next_run(w, paused, now),
                next_run_local => next_run_local(w, paused, now),
                paused,
                stale => entry.stale,
                path => entry.path.display().to_string(),
                source_lines => w.source.lines().map(str::to_owned).collect::<Vec<_>>(),
                on_failure => w.on_failure.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
                triggers_in => Page::from(Serde(&triggers_in)),
                triggers_out => Page::from(Serde(&triggers_out)),
            },
            durations => Page::from(Serde(&chart)),
            params => Page::from(Serde(param_rows(w))),
            layout => Page::from(Serde(&layout)),
            selected => selected_id,
            runs => Page::from(Serde(&grid.runs)),
            grid => Page::from(Serde(&grid.rows)),
            cursor,
            next_cursor => grid.next_cursor,
        },
    )?
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct RunsFragmentQuery {
    /// The run the page's graph shows, highlighted in the grid.
    run: Option<String>,
}

/// `GET /workflows/{id}/runs`: the runs section of the workflow page alone, for the newest
/// page of runs, from the same template; the page's script swaps it in when a run appears.
pub async fn workflow_runs(
    State(state): State<WebState>,
    _session: Session,
    Path(id): Path<String>,
    Query(query): Query<RunsFragmentQuery>,
) -> Result<Response> {
    let entry = find_workflow(&state, &id)?;
    let grid = runs_grid(&state, &entry.workflow, None).await?;
    Ok(render(
        "runs.html",
        minijinja::context! {
            workflow => minijinja::context! { id => entry.workflow.id.clone() },
            selected => query.run,
            runs => Page::from(Serde(&grid.runs)),
            grid => Page::from(Serde(&grid.rows)),
            cursor => None::<String>,
            next_cursor => grid.next_cursor,
        },
    )?
    .into_response())
}

/// The run `run_id`, or 404.
pub(super) async fn find_run(state: &WebState, run_id: &str) -> Result<RunRecord> {
    state
        .store
        .run(run_id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("there is no run with id `{run_id}`")))
}

/// The workflow a run pinned: the live one when the hash matches, else the stored version.
pub(super) async fn pinned_workflow(state: &WebState, run: &RunRecord) -> Result<Arc<Workflow>> {
    if let Some(entry) = state.catalog.get(&run.workflow_id)
        && entry.workflow.source_hash == run.version_hash
    {
        return Ok(entry.workflow);
    }
    let (path, source) = state
        .store
        .workflow_version(&run.version_hash)
        .await?
        .ok_or_else(|| {
            WebError::Internal(format!(
                "run `{}` pins workflow version `{}`, which is not stored",
                run.id, run.version_hash
            ))
        })?;
    crate::catalog::compile_source(std::path::Path::new(&path), &source)
        .map(Arc::new)
        .map_err(|_| {
            WebError::Internal(format!(
                "the stored workflow version `{}` of run `{}` no longer compiles",
                run.version_hash, run.id
            ))
        })
}

/// JSON as people read it, with secrets masked.
fn masked_json(masker: &Masker, value: &Value) -> String {
    let mut value = value.clone();
    masker.mask_json(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct TryView {
    try_number: u32,
    state: String,
    symbol: &'static str,
    started_at: Option<String>,
    ended_at: Option<String>,
    duration: Option<String>,
    worker: Option<String>,
    exit_code: Option<i32>,
    error: Option<String>,
    outputs: Option<String>,
    log: super::logs::LogView,
    /// The try may still write to its log (the viewer follows it).
    live: bool,
}

#[derive(Debug, Serialize)]
struct TaskView {
    id: String,
    operator: String,
    state: String,
    symbol: &'static str,
    tries: Vec<TryView>,
    hook: bool,
    /// The latest try's warnings (masked): an amber mark on the task.
    warnings: Vec<String>,
    /// The latest try's one-line summary (masked), beside the task's name.
    summary: Option<String>,
    /// Shown open: the task failed or is at work; the others start collapsed.
    open: bool,
    /// The run-control actions that can apply to the task now.
    actions: TaskActions,
}

/// Which run-control actions the run page offers for a task: only those that can apply.
#[derive(Debug, Serialize)]
struct TaskActions {
    clear: bool,
    mark_success: bool,
    mark_failed: bool,
}

impl TaskActions {
    fn of(is_main: bool, latest: Option<TaskState>) -> TaskActions {
        use super::control::{TaskAction, applies};
        use crate::store::MarkedState;
        let may = |action| is_main && applies(action, latest);
        TaskActions {
            clear: may(TaskAction::Clear(super::control::ClearScope::default())),
            mark_success: may(TaskAction::Mark(MarkedState::Success)),
            mark_failed: may(TaskAction::Mark(MarkedState::Failed)),
        }
    }
}

/// The Gantt chart of a run's tries, one row per task of the workflow it pinned.
fn run_gantt(workflow: &Workflow, tries: &[TaskInstanceRecord], now: DateTime<Utc>) -> Gantt {
    let order: Vec<String> = workflow.all_tasks().map(|t| t.id.clone()).collect();
    let spans: Vec<Span> = tries
        .iter()
        .map(|t| Span {
            task_id: t.task_id.clone(),
            try_number: t.try_number,
            state: t.state,
            started_at: t.started_at,
            ended_at: t.ended_at,
        })
        .collect();
    gantt(&order, &spans, now)
}

/// `GET /runs/{run_id}/gantt`: the run page's Gantt section alone, from the same template; the
/// page's script swaps it in as tries start and end.
pub async fn run_gantt_section(
    State(state): State<WebState>,
    _session: Session,
    Path(run_id): Path<String>,
) -> Result<Response> {
    let run = find_run(&state, &run_id).await?;
    let workflow = pinned_workflow(&state, &run).await?;
    let tries = state.store.task_instances(&run_id).await?;
    let now = Utc::now();
    let chart = run_gantt(&workflow, &tries, now);
    Ok(render(
        "gantt.html",
        minijinja::context! {
            gantt => Page::from(Serde(&chart)),
            run => minijinja::context! { duration => run_duration(&run, now) },
        },
    )?
    .into_response())
}

/// The run's duration as the header and the Gantt chart both show it: from its first start to
/// its end (or now).
fn run_duration(run: &RunRecord, now: DateTime<Utc>) -> Option<String> {
    run.started_at
        .map(|s| human_duration(run.ended_at.unwrap_or(now) - s))
}

/// `GET /runs/{run_id}`: the run, its graph and Gantt chart, and each task's tries with
/// outputs and logs (long logs by their tail).
pub async fn run(
    State(state): State<WebState>,
    session: Session,
    Path(run_id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    use super::run_view;
    let flash = super::actions::take_flash(&headers);
    let run = find_run(&state, &run_id).await?;
    let workflow = pinned_workflow(&state, &run).await?;
    let tries = state.store.task_instances(&run_id).await?;
    let tails = state
        .store
        .log_tails(&run_id, super::logs::LOG_TAIL)
        .await?;
    let masker = &state.settings.masker;
    let last_log_id = tails.iter().map(|t| t.record.id).max().unwrap_or(0);
    let mut logs_by_try = super::logs::views(tails, masker);
    let mut by_task: BTreeMap<String, Vec<TaskInstanceRecord>> = BTreeMap::new();
    for t in &tries {
        by_task
            .entry(t.task_id.clone())
            .or_default()
            .push(t.clone());
    }
    let hooks: Vec<&str> = workflow.on_failure.iter().map(|t| t.id.as_str()).collect();
    let mut latest_states: HashMap<String, TaskState> = HashMap::new();
    let tasks: Vec<TaskView> = workflow
        .all_tasks()
        .map(|task| {
            let mut task_tries = by_task.remove(&task.id).unwrap_or_default();
            task_tries.sort_by_key(|t| t.try_number);
            let latest = task_tries.last().map(|t| t.state);
            if let Some(s) = latest {
                latest_states.insert(task.id.clone(), s);
            }
            let state = latest.map_or("none", |s| s.as_str()).to_owned();
            let latest_try = task_tries.last();
            TaskView {
                actions: TaskActions::of(workflow.task_index(&task.id).is_some(), latest),
                open: latest.is_some_and(|s| {
                    matches!(
                        s,
                        TaskState::Failed
                            | TaskState::Running
                            | TaskState::UpForRetry
                            | TaskState::Queued
                    )
                }),
                id: task.id.clone(),
                operator: task.operator.clone(),
                symbol: symbol(&state),
                state,
                hook: hooks.contains(&task.id.as_str()),
                warnings: latest_try.map_or_else(Vec::new, |t| {
                    t.warnings
                        .iter()
                        .map(|w| masker.mask(w).into_owned())
                        .collect()
                }),
                summary: latest_try
                    .and_then(|t| t.summary.as_deref())
                    .map(|s| masker.mask(s).into_owned()),
                tries: task_tries
                    .into_iter()
                    .map(|t| TryView {
                        try_number: t.try_number,
                        state: t.state.as_str().to_owned(),
                        symbol: symbol(t.state.as_str()),
                        started_at: t.started_at.map(iso),
                        ended_at: t.ended_at.map(iso),
                        duration: t
                            .started_at
                            .zip(t.ended_at)
                            .map(|(s, e)| human_duration(e - s)),
                        worker: t.worker.clone(),
                        exit_code: t.exit_code,
                        error: t.error.as_deref().map(|e| masker.mask(e).into_owned()),
                        outputs: t
                            .outputs
                            .as_ref()
                            .map(|o| masked_json(masker, &Value::Object(o.clone()))),
                        log: logs_by_try
                            .remove(&(t.task_id.clone(), t.try_number))
                            .unwrap_or_default(),
                        live: !t.state.is_final(),
                    })
                    .collect(),
            }
        })
        .collect();
    let warnings: usize = tasks.iter().map(|t| t.warnings.len()).sum();
    let now = Utc::now();
    let chart = run_gantt(&workflow, &tries, now);
    let layout = dag_layout(&workflow, &latest_states);
    // Params as people read them: strings bare, everything else as compact JSON.
    let params: Vec<(String, String)> = run
        .params
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            masker.mask_json(&mut v);
            let shown = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k.clone(), shown)
        })
        .collect();
    let duration = run_duration(&run, now);
    let final_state = run.state.is_final();
    let artifacts = super::artifacts::views(&state, &run_id).await?;
    let started = run_view::started_runs(
        &run,
        state
            .store
            .runs_by_triggered_by(&run_view::started_prefix(&run))
            .await?,
    );
    let heading = run_view::heading(&run);
    let reproduces =
        crate::catalog::reproduce::report(&state.store, state.tracking.as_deref(), &run).await?;
    let mut response = render(
        "run.html",
        minijinja::context! {
            title => format!("{} · {} · {}", run.workflow_id, heading, run.state),
            user => session.view(),
            run => minijinja::context! {
                id => run.id.clone(),
                heading,
                workflow => run.workflow_id.clone(),
                state => run.state.as_str(),
                symbol => symbol(run.state.as_str()),
                trigger => run.trigger.clone(),
                origin => run_view::origin(&run).map(|o| Page::from(Serde(o))),
                github => Page::from(Serde(run_view::github_facts(&run))),
                started_runs => Page::from(Serde(&started)),
                logical_date => run_view::has_logical_date(&run.trigger).then(|| iso(run.logical_date)),
                created_at => iso(run.created_at),
                started_at => run.started_at.map(iso),
                rerun_started_at => run.rerun_started_at.map(iso),
                ended_at => run.ended_at.map(iso),
                duration,
                error => run.error.as_deref().map(|e| masker.mask(e).into_owned()),
                version => run.version_hash.clone(),
                final => final_state,
                warnings,
            },
            params => Page::from(Serde(&params)),
            tasks => Page::from(Serde(&tasks)),
            artifacts => Page::from(Serde(&artifacts)),
            gantt => Page::from(Serde(&chart)),
            layout => Page::from(Serde(&layout)),
            last_log_id,
            flash => flash.as_ref().map(|(message, _)| message.clone()),
            reproduces => reproduces.map(|r| Page::from(Serde(r))),
        },
    )?
    .into_response();
    if let Some((_, forget)) = flash {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, forget);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_symbol() {
        for state in TaskState::ALL {
            assert_ne!(symbol(state.as_str()), " ", "{state}");
        }
        for state in crate::lifecycle::RunState::ALL {
            assert_ne!(symbol(state.as_str()), " ", "{state}");
        }
        assert_eq!(symbol("none"), " ");
    }
}
