//! The drift report of a `drift` task (`GET /runs/{run_id}/tasks/{task}/drift`): each checked
//! column's verdict, its reference and current histograms overlaid (from the task's
//! `drift/histograms.json` artifact), and its statistic over the past runs of the same workflow
//! and task as a line, so drift creeping up shows before it crosses. The charts' geometry is
//! computed here as plain numbers, as `web::graph` does; the template draws and escapes it.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use minijinja::Value as Page;
use minijinja::value::Serde;
use serde::Serialize;
use serde_json::{Map, Value};

use super::pages::{find_run, pinned_workflow};
use super::{Result, WebError, WebState, auth::Session, iso, render};
use crate::artifacts::Artifacts;
use crate::lifecycle::TaskState;
use crate::operators::drift::HISTOGRAMS_ARTIFACT;
use crate::secrets::Masker;
use crate::store::{PastOutputs, Store, StoreError};

/// How many past runs the history lines reach back.
pub const HISTORY_RUNS: usize = 30;
/// The most of the histograms artifact the page reads.
const HISTOGRAMS_LIMIT: u64 = 4 << 20;
/// The drawing area of each chart, in SVG units.
const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 120.0;

/// One bin drawn as two overlaid bars.
#[derive(Debug, Serialize, PartialEq)]
struct Bar {
    x: f64,
    width: f64,
    reference_y: f64,
    reference_height: f64,
    current_y: f64,
    current_height: f64,
    /// The bin and both shares, for the bar's tooltip.
    title: String,
}

#[derive(Debug, Serialize, PartialEq)]
struct HistogramChart {
    /// What was binned: `values`, or a text column's descriptor.
    of: String,
    bars: Vec<Bar>,
    first_label: String,
    last_label: String,
}

/// One past run's statistic.
#[derive(Debug, Serialize, PartialEq)]
struct Point {
    x: f64,
    y: f64,
    run_id: String,
    title: String,
    /// The run this page shows.
    this_run: bool,
}

#[derive(Debug, Serialize, PartialEq)]
struct HistoryChart {
    points: Vec<Point>,
    /// Where the threshold runs, when the method compares the statistic with it.
    threshold_y: Option<f64>,
    low: String,
    high: String,
}

#[derive(Debug, Serialize)]
struct ColumnView {
    name: String,
    method: String,
    statistic: String,
    p_value: Option<String>,
    threshold: String,
    drifted: bool,
    histogram: Option<HistogramChart>,
    history: Option<HistoryChart>,
}

/// A number as the page prints it: at most four significant digits after the point, or
/// scientific notation for tiny p-values.
pub(crate) fn shown(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if v != 0.0 && v.abs() < 1e-4 => format!("{v:.3e}"),
        Some(v) => {
            let text = format!("{v:.4}");
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        None => "—".to_owned(),
    }
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .map(|items| items.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

/// The overlaid bars of one column's histogram (an entry of the artifact's `columns`).
fn histogram_chart(entry: &Value, masker: &Masker) -> Option<HistogramChart> {
    let labels: Vec<String> = entry["labels"]
        .as_array()?
        .iter()
        .map(|l| masker.mask(l.as_str().unwrap_or_default()).into_owned())
        .collect();
    let reference = numbers(&entry["reference"]);
    let current = numbers(&entry["current"]);
    if labels.is_empty() || reference.len() != labels.len() || current.len() != labels.len() {
        return None;
    }
    let tallest = reference
        .iter()
        .chain(&current)
        .copied()
        .fold(0.0f64, f64::max);
    let scale = if tallest > 0.0 { HEIGHT / tallest } else { 0.0 };
    let width = WIDTH / labels.len() as f64;
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let bars = labels
        .iter()
        .zip(reference.iter().zip(&current))
        .enumerate()
        .map(|(i, (label, (r, c)))| Bar {
            x: round(i as f64 * width),
            width: round(width),
            reference_y: round(HEIGHT - r * scale),
            reference_height: round(r * scale),
            current_y: round(HEIGHT - c * scale),
            current_height: round(c * scale),
            title: format!(
                "{label}: reference {:.1}%, current {:.1}%",
                r * 100.0,
                c * 100.0
            ),
        })
        .collect();
    Some(HistogramChart {
        of: entry["of"].as_str().unwrap_or("values").to_owned(),
        bars,
        first_label: labels.first().cloned().unwrap_or_default(),
        last_label: labels.last().cloned().unwrap_or_default(),
    })
}

/// A column's statistic over the past runs, oldest on the left; the threshold line is drawn
/// when the method compares the statistic itself with it (the distances).
fn history_chart(
    column: &str,
    history: &[PastOutputs],
    this_run: &str,
    threshold: Option<f64>,
) -> Option<HistoryChart> {
    let found: Vec<(&PastOutputs, f64)> = history
        .iter()
        .filter_map(|past| {
            let statistic = past.outputs.get("columns")?.get(column)?.get("statistic")?;
            Some((past, statistic.as_f64()?))
        })
        .collect();
    if found.is_empty() {
        return None;
    }
    let values = found.iter().map(|(_, v)| *v).chain(threshold);
    let (low, high) = values.fold((0.0f64, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let high = if high > low { high } else { low + 1.0 };
    let y = |v: f64| ((HEIGHT - (v - low) / (high - low) * HEIGHT) * 100.0).round() / 100.0;
    let step = if found.len() > 1 {
        WIDTH / (found.len() - 1) as f64
    } else {
        0.0
    };
    let points = found
        .iter()
        .enumerate()
        .map(|(i, (past, v))| Point {
            x: ((i as f64 * step) * 100.0).round() / 100.0,
            y: y(*v),
            run_id: past.run_id.clone(),
            title: format!(
                "{}: {}",
                iso(past.logical_date),
                shown(&serde_json::json!(v))
            ),
            this_run: past.run_id == this_run,
        })
        .collect();
    Some(HistoryChart {
        points,
        threshold_y: threshold.map(y),
        low: shown(&serde_json::json!(low)),
        high: shown(&serde_json::json!(high)),
    })
}

/// The outputs of the task's latest successful try in the run, if it has one.
pub async fn latest_outputs(
    store: &Store,
    run_id: &str,
    task: &str,
) -> std::result::Result<Option<Map<String, Value>>, StoreError> {
    Ok(store
        .task_instances(run_id)
        .await?
        .into_iter()
        .filter(|t| t.task_id == task && t.state == TaskState::Success)
        .max_by_key(|t| t.try_number)
        .and_then(|t| t.outputs))
}

/// The task's histograms artifact, or why there is none to show.
pub async fn kept_histograms(
    store: &Store,
    artifacts: Option<&Artifacts>,
    run_id: &str,
    task: &str,
) -> std::result::Result<Value, String> {
    let record = super::artifacts::find(store, run_id, HISTOGRAMS_ARTIFACT, Some(task))
        .await
        .map_err(|e| e.to_string())?;
    let artifacts = artifacts.ok_or("this server has no artifact store to read from")?;
    let bytes = artifacts
        .read_head(&record.sha256, record.size, HISTOGRAMS_LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the histograms cannot be read: {e}"))
}

/// `GET /runs/{run_id}/tasks/{task}/drift`: the report of a `drift` task's latest success.
pub async fn report(
    State(state): State<WebState>,
    session: Session,
    Path((run_id, task_id)): Path<(String, String)>,
) -> Result<Response> {
    let run = find_run(&state, &run_id).await?;
    let workflow = pinned_workflow(&state, &run).await?;
    let is_drift = workflow
        .all_tasks()
        .any(|t| t.id == task_id && t.operator == "drift");
    if !is_drift {
        return Err(WebError::NotFound(format!(
            "run `{run_id}` has no drift task `{task_id}`"
        )));
    }
    let masker = &state.settings.masker;
    let mut columns = Vec::new();
    let mut verdict = None;
    let mut histograms_problem = None;
    if let Some(outputs) = latest_outputs(&state.store, &run_id, &task_id).await? {
        let kept = kept_histograms(&state.store, state.artifacts.as_ref(), &run_id, &task_id).await;
        if let Err(problem) = &kept {
            histograms_problem = Some(masker.mask(problem).into_owned());
        }
        let kept = kept.unwrap_or(Value::Null);
        let history = state
            .store
            .task_outputs_history(&run.workflow_id, &task_id, HISTORY_RUNS)
            .await?;
        if let Some(checked) = outputs.get("columns").and_then(Value::as_object) {
            for (name, column) in checked {
                let has_p_value = column.get("p_value").is_some();
                let threshold = column["threshold"].as_f64();
                columns.push(ColumnView {
                    name: masker.mask(name).into_owned(),
                    method: column["method"].as_str().unwrap_or_default().to_owned(),
                    statistic: shown(&column["statistic"]),
                    p_value: column.get("p_value").map(shown),
                    threshold: shown(&column["threshold"]),
                    drifted: column["drifted"].as_bool().unwrap_or(false),
                    histogram: histogram_chart(&kept["columns"][name], masker),
                    history: history_chart(
                        name,
                        &history,
                        &run_id,
                        threshold.filter(|_| !has_p_value),
                    ),
                });
            }
        }
        verdict = Some(minijinja::context! {
            drift_detected => outputs.get("drift_detected").and_then(Value::as_bool).unwrap_or(false),
            drift_share => shown(outputs.get("drift_share").unwrap_or(&Value::Null)),
            drifted => outputs.get("drifted_columns").and_then(Value::as_array).map_or(0, Vec::len),
            reference_rows => kept["reference_rows"].as_u64(),
            current_rows => kept["current_rows"].as_u64(),
            current_rows_read => kept["current_rows_read"].as_u64(),
            window => Page::from(Serde(&kept["window"])),
            runs => history.len(),
        });
    }
    Ok(render(
        "drift.html",
        minijinja::context! {
            title => format!("{} · drift of {task_id}", run.workflow_id),
            user => session.view(),
            run => minijinja::context! { id => run.id, workflow => run.workflow_id },
            task => task_id,
            verdict,
            histograms_problem,
            columns => Page::from(Serde(&columns)),
            width => WIDTH,
            height => HEIGHT,
        },
    )?
    .into_response())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    #[test]
    fn histograms_become_overlaid_bars_scaled_to_the_tallest() {
        let masker = Masker::new(Vec::new());
        let entry = json!({"of": "values", "labels": ["a", "b"], "edges": [],
                           "reference": [0.25, 0.75], "current": [0.5, 0.5]});
        let chart = histogram_chart(&entry, &masker).expect("a chart");
        assert_eq!(chart.bars.len(), 2);
        assert_eq!(chart.bars[1].reference_height, HEIGHT);
        assert_eq!(chart.bars[1].reference_y, 0.0);
        assert_eq!(chart.bars[0].current_height, HEIGHT * 2.0 / 3.0);
        assert_eq!(chart.bars[1].x, WIDTH / 2.0);
        assert_eq!(chart.bars[0].title, "a: reference 25.0%, current 50.0%");
        assert_eq!(
            (chart.first_label.as_str(), chart.last_label.as_str()),
            ("a", "b")
        );
        let broken = json!({"labels": ["a"], "reference": [], "current": []});
        assert_eq!(histogram_chart(&broken, &masker), None);
        assert_eq!(histogram_chart(&Value::Null, &masker), None);
    }

    fn past(run_id: &str, statistic: f64) -> PastOutputs {
        PastOutputs {
            run_id: run_id.into(),
            logical_date: Utc::now(),
            try_number: 1,
            outputs: json!({"columns": {"x": {"statistic": statistic}}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    #[test]
    fn history_runs_oldest_to_newest_with_the_threshold_line() {
        let history = [past("r1", 0.05), past("r2", 0.1), past("r3", 0.2)];
        let chart = history_chart("x", &history, "r3", Some(0.1)).expect("a chart");
        let xs: Vec<f64> = chart.points.iter().map(|p| p.x).collect();
        assert_eq!(xs, [0.0, WIDTH / 2.0, WIDTH]);
        // Zero at the bottom, the highest value at the top.
        assert_eq!(chart.points[2].y, 0.0);
        assert_eq!(chart.threshold_y, Some(HEIGHT / 2.0));
        assert!(chart.points[2].this_run && !chart.points[0].this_run);
        assert_eq!(history_chart("other", &history, "r3", None), None);
    }

    #[test]
    fn numbers_read_plainly() {
        assert_eq!(shown(&json!(0.123456)), "0.1235");
        assert_eq!(shown(&json!(1.2e-9)), "1.200e-9");
        assert_eq!(shown(&json!(2.0)), "2");
        assert_eq!(shown(&Value::Null), "—");
    }
}
