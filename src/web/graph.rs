//! The pictures the pages draw on the server, as plain numbers for the templates' SVG: the DAG
//! in layers (each task one column right of its furthest upstream task) and the Gantt chart of
//! a run's tries. Pure: no IO, no clock (the caller passes `now`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::dag::Workflow;
use crate::lifecycle::TaskState;

const NODE_WIDTH: u32 = 170;
const NODE_HEIGHT: u32 = 46;
const GAP_X: u32 = 56;
const GAP_Y: u32 = 18;
const MARGIN: u32 = 8;

/// A task's box.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    pub id: String,
    pub operator: String,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// The state of the task in the selected run (`none` without one).
    pub state: String,
    pub layer: usize,
    /// The hook group a hook task belongs to (`on failure`, …); `None` for a main task.
    pub hook: Option<&'static str>,
}

/// An arrow from one task to another, as an SVG path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// Each task's layer: 0 for tasks without upstream tasks, otherwise one more than the
/// furthest upstream task (the longest path from a source), so every edge points right.
fn layers(workflow: &Workflow) -> Vec<usize> {
    let n = workflow.tasks.len();
    let mut layer = vec![0usize; n];
    // A `Workflow` is acyclic, so a topological order exists; the fallback keeps file order.
    let order: Vec<usize> = petgraph::algo::toposort(&workflow.graph, None)
        .map(|nodes| nodes.into_iter().map(|i| workflow.graph[i]).collect())
        .unwrap_or_else(|_| (0..n).collect());
    for &task in &order {
        let deepest = workflow
            .upstream(task)
            .filter_map(|u| layer.get(u).map(|l| l + 1))
            .max()
            .unwrap_or(0);
        if let Some(slot) = layer.get_mut(task) {
            *slot = deepest;
        }
    }
    layer
}

/// A hook group as a node's tag says it.
fn hook_label(hook: crate::dag::Hook) -> &'static str {
    match hook {
        crate::dag::Hook::Failure => "on failure",
        crate::dag::Hook::Success => "on success",
        crate::dag::Hook::Deadline => "on deadline",
    }
}

/// Lays the workflow's tasks out in layers, coloured by `states` (task id → state).
pub fn dag_layout(workflow: &Workflow, states: &HashMap<String, TaskState>) -> Layout {
    let layer = layers(workflow);
    let mut rows_used: Vec<u32> = Vec::new();
    let mut nodes = Vec::with_capacity(workflow.tasks.len());
    for (index, task) in workflow.tasks.iter().enumerate() {
        let column = layer.get(index).copied().unwrap_or(0);
        if rows_used.len() <= column {
            rows_used.resize(column + 1, 0);
        }
        let row = rows_used[column];
        rows_used[column] += 1;
        nodes.push(Node {
            id: task.id.clone(),
            operator: task.operator.clone(),
            x: MARGIN + column as u32 * (NODE_WIDTH + GAP_X),
            y: MARGIN + row * (NODE_HEIGHT + GAP_Y),
            width: NODE_WIDTH,
            height: NODE_HEIGHT,
            state: states
                .get(&task.id)
                .map_or("none", |s| s.as_str())
                .to_owned(),
            layer: column,
            hook: None,
        });
    }
    let main_rows = rows_used.iter().copied().max().unwrap_or(1).max(1);
    // Hooks are not in the graph: they run after the main tasks, so they sit in a row of their
    // own under it, one group after the other, drawn as hooks.
    let hook_y = MARGIN + main_rows * (NODE_HEIGHT + GAP_Y) + GAP_Y;
    let mut hook_column = 0u32;
    for hook in crate::dag::Hook::ALL {
        for task in workflow.hooks(hook) {
            nodes.push(Node {
                id: task.id.clone(),
                operator: task.operator.clone(),
                x: MARGIN + hook_column * (NODE_WIDTH + GAP_X / 2),
                y: hook_y,
                width: NODE_WIDTH,
                height: NODE_HEIGHT,
                state: states
                    .get(&task.id)
                    .map_or("none", |s| s.as_str())
                    .to_owned(),
                layer: 0,
                hook: Some(hook_label(hook)),
            });
            hook_column += 1;
        }
    }
    let mut edges = Vec::new();
    for (index, node) in nodes.iter().enumerate().take(workflow.tasks.len()) {
        for up in workflow.upstream(index) {
            let Some(from) = nodes.get(up) else { continue };
            let (x1, y1) = (from.x + from.width, from.y + from.height / 2);
            let (x2, y2) = (node.x, node.y + node.height / 2);
            let bend = GAP_X / 2;
            edges.push(Edge {
                from: from.id.clone(),
                to: node.id.clone(),
                path: format!(
                    "M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}",
                    x1 + bend,
                    x2.saturating_sub(bend)
                ),
            });
        }
    }
    let columns = rows_used.len().max(1) as u32;
    let main_width = 2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * GAP_X;
    let hooks_width = 2 * MARGIN + hook_column * (NODE_WIDTH + GAP_X / 2);
    let main_height = 2 * MARGIN + main_rows * NODE_HEIGHT + (main_rows - 1) * GAP_Y;
    Layout {
        width: main_width.max(hooks_width),
        height: if hook_column > 0 {
            hook_y + NODE_HEIGHT + MARGIN
        } else {
            main_height
        },
        nodes,
        edges,
    }
}

/// A run for the chart of run durations.
#[derive(Debug, Clone)]
pub struct RunDuration {
    pub run_id: String,
    pub state: String,
    /// `None` for a run that has not started.
    pub millis: Option<i64>,
    pub label: String,
}

/// A bar of the run durations chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DurationBar {
    pub run_id: String,
    pub state: String,
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DurationChart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<DurationBar>,
    /// The longest duration, the top of the scale, in words.
    pub longest: String,
}

const DURATION_BAR: u32 = 18;
const DURATION_GAP: u32 = 6;
const DURATION_HEIGHT: u32 = 90;

/// Runs' durations as bars in the order given, scaled to the longest; runs that never started have
/// no bar (their place stays, so the bars line up with the run grid's columns).
pub fn duration_chart(runs: &[RunDuration]) -> DurationChart {
    let longest = runs
        .iter()
        .filter_map(|r| r.millis)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let ms = r.millis?;
            let height = ((ms.max(0) as f64 / longest as f64) * f64::from(DURATION_HEIGHT))
                .round()
                .max(2.0) as u32;
            Some(DurationBar {
                run_id: r.run_id.clone(),
                state: r.state.clone(),
                x: i as u32 * (DURATION_BAR + DURATION_GAP),
                y: DURATION_HEIGHT - height,
                height,
                label: r.label.clone(),
            })
        })
        .collect();
    DurationChart {
        width: (runs.len().max(1) as u32) * (DURATION_BAR + DURATION_GAP),
        height: DURATION_HEIGHT,
        bars,
        longest: super::human_duration(chrono::TimeDelta::milliseconds(longest)),
    }
}

/// One try to draw in the Gantt chart.
#[derive(Debug, Clone)]
pub struct Span {
    pub task_id: String,
    pub try_number: u32,
    pub state: TaskState,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A bar of the Gantt chart, in pixels from the chart's left edge.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bar {
    pub task_id: String,
    pub try_number: u32,
    pub state: String,
    pub row: usize,
    pub y: u32,
    pub x: u32,
    pub width: u32,
    /// Start and end as ISO text, for the bar's tooltip.
    pub label: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gantt {
    pub width: u32,
    pub height: u32,
    /// Where bars start (task names are written left of it).
    pub offset: u32,
    pub rows: Vec<(String, u32)>,
    pub bars: Vec<Bar>,
    /// The time axis: each tick's x and its offset from the first start, in words.
    pub ticks: Vec<(u32, String)>,
    /// Where the axis is drawn (its labels sit above it).
    pub axis: u32,
    /// When the first try started (ISO), the axis's zero.
    pub start: Option<String>,
}

/// The chart's bar area: with the labels, the width of the page's column, so the chart fills
/// it (the template scales the SVG to the column on narrower screens).
const GANTT_WIDTH: u32 = 1040;
const GANTT_LABELS: u32 = 170;
const GANTT_ROW: u32 = 24;
const GANTT_AXIS: u32 = 22;
/// Tick steps, in seconds: the smallest that gives at most `MAX_TICKS` ticks is used.
const TICK_STEPS: [i64; 17] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
];
const MAX_TICKS: i64 = 8;

/// An offset on the time axis as people read it: `0s`, `45s`, `2m`, `1m 30s`, `1h`, `2h 30m`.
fn tick_label(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// Ticks every round step across `total_ms`, as x positions in the bar area.
fn ticks(total_ms: f64) -> Vec<(u32, String)> {
    let total_s = (total_ms / 1000.0).ceil() as i64;
    let step = TICK_STEPS
        .iter()
        .copied()
        .find(|step| total_s / step <= MAX_TICKS)
        .unwrap_or_else(|| (total_s / MAX_TICKS).max(1));
    if total_ms < 1000.0 {
        // Under a second: the start and the end, in milliseconds.
        let end = super::human_duration(chrono::TimeDelta::milliseconds(total_ms as i64));
        return vec![
            (GANTT_LABELS, "0s".to_owned()),
            (GANTT_LABELS + GANTT_WIDTH, end),
        ];
    }
    // Only ticks within the chart: none past the last try's end.
    (0..=total_s / step)
        .map(|i| i * step)
        .filter(|at| (*at * 1000) as f64 <= total_ms)
        .map(|at| {
            let x = ((at * 1000) as f64 / total_ms * f64::from(GANTT_WIDTH)).round() as u32;
            (GANTT_LABELS + x.min(GANTT_WIDTH), tick_label(at))
        })
        .collect()
}

/// Bars for every try that started, one row per task in `order`; a try still running ends at
/// `now`. Bars are at least 2 px wide so instant tries stay visible.
pub fn gantt(order: &[String], spans: &[Span], now: DateTime<Utc>) -> Gantt {
    let started: Vec<&Span> = spans.iter().filter(|s| s.started_at.is_some()).collect();
    let start = started.iter().filter_map(|s| s.started_at).min();
    let end = started.iter().map(|s| s.ended_at.unwrap_or(now)).max();
    let rows: Vec<(String, u32)> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), GANTT_AXIS + i as u32 * GANTT_ROW))
        .collect();
    let height = GANTT_AXIS + (order.len().max(1) as u32) * GANTT_ROW;
    let (Some(start), Some(end)) = (start, end) else {
        return Gantt {
            width: GANTT_LABELS + GANTT_WIDTH,
            height,
            offset: GANTT_LABELS,
            rows,
            bars: Vec::new(),
            ticks: Vec::new(),
            axis: GANTT_AXIS,
            start: None,
        };
    };
    let total = (end - start).num_milliseconds().max(1) as f64;
    let scale = |at: DateTime<Utc>| -> u32 {
        let ms = (at - start).num_milliseconds().max(0) as f64;
        ((ms / total) * f64::from(GANTT_WIDTH)).round() as u32
    };
    let bars = started
        .iter()
        .filter_map(|s| {
            let row = order.iter().position(|id| *id == s.task_id)?;
            let from = s.started_at?;
            let to = s.ended_at.unwrap_or(now).max(from);
            let x = scale(from);
            Some(Bar {
                task_id: s.task_id.clone(),
                try_number: s.try_number,
                state: s.state.as_str().to_owned(),
                row,
                y: GANTT_AXIS + row as u32 * GANTT_ROW + 4,
                x: GANTT_LABELS + x,
                width: scale(to).saturating_sub(x).max(2),
                label: format!(
                    "{} try {}: {} ({})",
                    s.task_id,
                    s.try_number,
                    s.state,
                    super::human_duration(to - from)
                ),
            })
        })
        .collect();
    Gantt {
        width: GANTT_LABELS + GANTT_WIDTH,
        height,
        offset: GANTT_LABELS,
        rows,
        bars,
        ticks: ticks(total),
        axis: GANTT_AXIS,
        start: Some(super::iso(start)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(source: &str) -> Workflow {
        crate::catalog::compile_source(std::path::Path::new("wf.yaml"), source).expect("compiles")
    }

    #[test]
    fn layers_follow_the_longest_path() {
        // d needs a (layer 1) and c (layer 2), so it sits in layer 3, not 1.
        let w = workflow(
            "tasks:\n  d: { operator: noop, needs: [a, c] }\n  a: { operator: noop }\n  \
             b: { operator: noop, needs: [a] }\n  c: { operator: noop, needs: [b] }\n  \
             e: { operator: noop }\n",
        );
        let states = HashMap::from([("a".to_owned(), TaskState::Success)]);
        let layout = dag_layout(&w, &states);
        let by_id: HashMap<&str, &Node> = layout.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        assert_eq!(
            ["a", "b", "c", "d", "e"].map(|t| by_id[t].layer),
            [0, 1, 2, 3, 0]
        );
        assert_eq!(by_id["a"].state, "success");
        assert_eq!(by_id["b"].state, "none");
        // Two tasks in layer 0 are stacked, not on top of each other.
        assert_ne!(by_id["a"].y, by_id["e"].y);
        assert_eq!(by_id["a"].x, by_id["e"].x);
        assert_eq!(layout.edges.len(), 4);
        for edge in &layout.edges {
            assert!(
                by_id[edge.from.as_str()].x < by_id[edge.to.as_str()].x,
                "{edge:?}"
            );
        }
        assert!(
            layout
                .nodes
                .iter()
                .all(|n| n.x + n.width <= layout.width && n.y + n.height <= layout.height)
        );
    }

    #[test]
    fn hooks_sit_under_the_graph_and_durations_scale_to_the_longest() {
        let w = workflow(
            "tasks:\n  a: { operator: noop }\n  b: { operator: noop, needs: [a] }\n\
             on_failure:\n  page: { operator: noop }\n",
        );
        let layout = dag_layout(&w, &HashMap::new());
        let page = layout
            .nodes
            .iter()
            .find(|n| n.id == "page")
            .expect("the hook");
        assert_eq!(page.hook, Some("on failure"));
        assert!(
            layout
                .nodes
                .iter()
                .all(|n| n.hook.is_some() || n.y < page.y)
        );
        assert!(page.y + page.height <= layout.height);
        assert_eq!(layout.edges.len(), 1, "hooks have no edges from the graph");
        let run = |ms: Option<i64>| RunDuration {
            run_id: "r".into(),
            state: "success".into(),
            millis: ms,
            label: String::new(),
        };
        let chart = duration_chart(&[run(Some(1000)), run(None), run(Some(4000))]);
        assert_eq!(chart.bars.len(), 2);
        assert_eq!(chart.bars[1].height, DURATION_HEIGHT);
        assert_eq!(chart.bars[0].height, DURATION_HEIGHT / 4 + 1);
        assert_eq!(
            chart.bars[1].x,
            2 * (DURATION_BAR + DURATION_GAP),
            "the gap stays"
        );
        assert_eq!(chart.longest, "4.0s");
    }

    #[test]
    fn gantt_scales_tries_to_the_run() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .expect("time")
            .to_utc();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let span = |task: &str, try_number, from, to: Option<i64>| Span {
            task_id: task.into(),
            try_number,
            state: if to.is_some() {
                TaskState::Success
            } else {
                TaskState::Running
            },
            started_at: Some(at(from)),
            ended_at: to.map(at),
        };
        let order = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let spans = [
            span("a", 1, 0, Some(10)),
            span("b", 1, 10, None),
            Span {
                started_at: None,
                ..span("c", 1, 0, None)
            },
        ];
        let chart = gantt(&order, &spans, at(20));
        assert_eq!(chart.bars.len(), 2, "c never started");
        assert_eq!(
            (chart.bars[0].x - chart.offset, chart.bars[0].width),
            (0, 520)
        );
        assert_eq!(
            (chart.bars[1].x - chart.offset, chart.bars[1].width),
            (520, 520)
        );
        assert_eq!(chart.bars[1].row, 1);
        // 20 s: a tick every 5 s, the last at the right edge.
        let labels: Vec<&str> = chart.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0s", "5s", "10s", "15s", "20s"]);
        assert_eq!(chart.ticks[4].0, chart.width);
        let empty = gantt(&order, &[], at(0));
        assert!(empty.bars.is_empty() && empty.ticks.is_empty());
        assert_eq!(tick_label(90), "1m 30s");
        assert_eq!(tick_label(9000), "2h 30m");
        assert!(
            ticks(3_600_000.0 * 30.0).len() <= 9,
            "a long run keeps few ticks"
        );
        let short: Vec<String> = ticks(64.0).into_iter().map(|t| t.1).collect();
        assert_eq!(
            short,
            ["0s", "64ms"],
            "a run under a second is not drawn as one"
        );
        let uneven = ticks(12_500.0);
        assert_eq!(
            uneven.last().map(|t| t.1.as_str()),
            Some("12s"),
            "none past the end"
        );
        assert!(uneven.iter().all(|t| t.0 <= GANTT_LABELS + GANTT_WIDTH));
    }
}
