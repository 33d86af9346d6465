//! `/tracking/runs/{id}`: a tracking run (params, tags, latest metrics, each metric's history
//! as a chart, files, lineage); `/tracking/compare?runs=a,b`: two to four runs side by side,
//! rows that differ marked, metric deltas against the first run and one chart per metric with
//! a line per run.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::Value as Page;
use minijinja::value::Serde;
use serde::Serialize;

use super::charts::{self, COLOURS, Chart};
use super::{masked, number, page, unavailable};
use crate::tracking::{Tracking, TrackingRunDetail};
use crate::web::{Result, WebError, WebState, auth::Session, human_duration, iso};

/// The most metrics a page draws charts for.
const MAX_CHARTS: usize = 24;
/// How many runs a comparison takes.
const COMPARE_MIN: usize = 2;
const COMPARE_MAX: usize = 4;

async fn find(tracking: &Tracking, id: &str) -> Result<TrackingRunDetail> {
    tracking
        .run(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("there is no tracking run with id `{id}`")))
}

#[derive(Debug, Serialize)]
struct Pair {
    key: String,
    value: String,
}

#[derive(Debug, Serialize)]
struct MetricRow {
    key: String,
    value: String,
    step: i64,
}

/// `GET /tracking/runs/{id}`.
pub(super) async fn run(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let detail = find(&tracking, &id).await?;
    let experiment = tracking.experiment_by_id(&detail.run.experiment_id).await?;
    let mut charts: Vec<Chart> = Vec::new();
    for key in detail.metrics.keys().take(MAX_CHARTS) {
        let history = tracking.metric_history(&id, key).await?;
        charts.extend(charts::chart(key, &[(detail.run.name.clone(), history)]));
    }
    let pairs = |map: &std::collections::BTreeMap<String, String>| -> Vec<Pair> {
        map.iter()
            .map(|(k, v)| Pair {
                key: k.clone(),
                value: masked(&state, v),
            })
            .collect()
    };
    let metrics: Vec<MetricRow> = detail
        .metrics
        .values()
        .map(|p| MetricRow {
            key: p.key.clone(),
            value: number(p.value),
            step: p.step,
        })
        .collect();
    let run = &detail.run;
    page(
        StatusCode::OK,
        "tracking_run.html",
        minijinja::context! {
            title => format!("Tracking run {}", run.name),
            user => session.view(),
            run => minijinja::context! {
                id => &run.id,
                name => &run.name,
                status => run.status.as_str(),
                started_at => iso(run.started_at),
                ended_at => run.ended_at.map(iso),
                duration => run.ended_at.map(|end| human_duration(end - run.started_at)),
            },
            experiment => experiment.map(|e| minijinja::context! { id => e.id, name => e.name }),
            lineage => Page::from(Serde(&run.lineage)),
            params => Page::from(Serde(&pairs(&detail.params))),
            tags => Page::from(Serde(&pairs(&detail.tags))),
            metrics => Page::from(Serde(&metrics)),
            files => Page::from(Serde(&detail.files)),
            charts => Page::from(Serde(&charts)),
            width => charts::WIDTH,
            height => charts::HEIGHT,
        },
    )
}

/// `GET /tracking/runs/{id}/files/{name}`: a kept file, always as a download with a
/// sandboxing policy, so a kept HTML or SVG file never runs in this origin.
pub(super) async fn file(
    State(state): State<WebState>,
    session: Session,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let bytes = tracking.run_file(&id, &name).await?;
    Ok(crate::web::artifacts::attachment(bytes, &name))
}

#[derive(Debug, Serialize)]
struct CompareCell {
    value: String,
    /// Against the first run: `+0.05`, `-1.2`.
    delta: Option<String>,
    /// `up` or `down` when the value moved.
    direction: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct CompareRow {
    key: String,
    cells: Vec<CompareCell>,
    differs: bool,
}

#[derive(Debug, Serialize)]
struct RunHead {
    id: String,
    name: String,
    status: &'static str,
    started_at: String,
    colour: &'static str,
}

/// The run ids a comparison asks for: `runs=a,b` or the table's repeated `run=a&run=b`.
fn compared_ids(pairs: &[(String, String)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (name, value) in pairs {
        if name == "runs" || name == "run" {
            for id in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                if !ids.iter().any(|seen| seen == id) {
                    ids.push(id.to_owned());
                }
            }
        }
    }
    ids
}

/// The rows of one kind of value (params or metrics) across the runs.
fn rows(
    runs: &[TrackingRunDetail],
    keys: &BTreeSet<String>,
    value: impl Fn(&TrackingRunDetail, &str) -> Option<String>,
    numeric: impl Fn(&TrackingRunDetail, &str) -> Option<f64>,
) -> Vec<CompareRow> {
    keys.iter()
        .map(|key| {
            let base = runs.first().and_then(|r| numeric(r, key));
            let cells: Vec<CompareCell> = runs
                .iter()
                .enumerate()
                .map(|(i, run)| {
                    let delta = match (i, base, numeric(run, key)) {
                        (1.., Some(base), Some(v)) if v != base => Some(v - base),
                        _ => None,
                    };
                    CompareCell {
                        value: value(run, key).unwrap_or_else(|| "—".to_owned()),
                        delta: delta.map(|d| {
                            let text = number(d);
                            if d > 0.0 { format!("+{text}") } else { text }
                        }),
                        direction: delta.map(|d| if d > 0.0 { "up" } else { "down" }),
                    }
                })
                .collect();
            let differs = cells.windows(2).any(|w| w[0].value != w[1].value);
            CompareRow {
                key: key.clone(),
                cells,
                differs,
            }
        })
        .collect()
}

/// `GET /tracking/compare?runs=a,b,c`.
pub(super) async fn compare(
    State(state): State<WebState>,
    session: Session,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let ids = compared_ids(&pairs);
    if !(COMPARE_MIN..=COMPARE_MAX).contains(&ids.len()) {
        return page(
            StatusCode::BAD_REQUEST,
            "tracking_compare.html",
            minijinja::context! {
                title => "Compare runs",
                user => session.view(),
                problem => format!(
                    "Choose {COMPARE_MIN} to {COMPARE_MAX} runs to compare; {} {} chosen.",
                    ids.len(),
                    if ids.len() == 1 { "was" } else { "were" }
                ),
            },
        );
    }
    let mut runs = Vec::with_capacity(ids.len());
    for id in &ids {
        runs.push(find(&tracking, id).await?);
    }
    let param_keys: BTreeSet<String> = runs.iter().flat_map(|r| r.params.keys().cloned()).collect();
    let metric_keys: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    let params = rows(
        &runs,
        &param_keys,
        |run, key| run.params.get(key).map(|v| masked(&state, v)),
        |_, _| None,
    );
    let metrics = rows(
        &runs,
        &metric_keys,
        |run, key| run.metrics.get(key).map(|p| number(p.value)),
        |run, key| run.metrics.get(key).map(|p| p.value),
    );
    let mut charts = Vec::new();
    for key in metric_keys.iter().take(MAX_CHARTS) {
        let mut histories = Vec::with_capacity(runs.len());
        for run in &runs {
            let points = if run.metrics.contains_key(key) {
                tracking.metric_history(&run.run.id, key).await?
            } else {
                Vec::new()
            };
            histories.push((run.run.name.clone(), points));
        }
        charts.extend(charts::chart(key, &histories));
    }
    let heads: Vec<RunHead> = runs
        .iter()
        .zip(COLOURS)
        .map(|(run, colour)| RunHead {
            id: run.run.id.clone(),
            name: run.run.name.clone(),
            status: run.run.status.as_str(),
            started_at: iso(run.run.started_at),
            colour,
        })
        .collect();
    let experiment = tracking
        .experiment_by_id(&runs[0].run.experiment_id)
        .await?;
    page(
        StatusCode::OK,
        "tracking_compare.html",
        minijinja::context! {
            title => "Compare runs",
            user => session.view(),
            runs => Page::from(Serde(&heads)),
            experiment => experiment.map(|e| minijinja::context! { id => e.id, name => e.name }),
            params => Page::from(Serde(&params)),
            metrics => Page::from(Serde(&metrics)),
            charts => Page::from(Serde(&charts)),
            width => charts::WIDTH,
            height => charts::HEIGHT,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compared_runs_come_from_either_form_once_each() {
        let pairs: Vec<(String, String)> =
            [("runs", "a, b"), ("run", "c"), ("run", "a"), ("x", "d")]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        assert_eq!(compared_ids(&pairs), ["a", "b", "c"]);
    }
}
