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
        });
    }
    let mut edges = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
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
    let rows = rows_used.iter().copied().max().unwrap_or(1).max(1);
    Layout {
        width: 2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * GAP_X,
        height: 2 * MARGIN + rows * NODE_HEIGHT + (rows - 1) * GAP_Y,
        nodes,
        edges,
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
    /// The time the chart spans, in words.
    pub span: String,
}

const GANTT_WIDTH: u32 = 640;
const GANTT_LABELS: u32 = 170;
const GANTT_ROW: u32 = 24;

/// Bars for every try that started, one row per task in `order`; a try still running ends at
/// `now`. Bars are at least 2 px wide so instant tries stay visible.
pub fn gantt(order: &[String], spans: &[Span], now: DateTime<Utc>) -> Gantt {
    let started: Vec<&Span> = spans.iter().filter(|s| s.started_at.is_some()).collect();
    let start = started.iter().filter_map(|s| s.started_at).min();
    let end = started.iter().map(|s| s.ended_at.unwrap_or(now)).max();
    let rows: Vec<(String, u32)> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u32 * GANTT_ROW))
        .collect();
    let height = (order.len().max(1) as u32) * GANTT_ROW;
    let (Some(start), Some(end)) = (start, end) else {
        return Gantt {
            width: GANTT_LABELS + GANTT_WIDTH,
            height,
            offset: GANTT_LABELS,
            rows,
            bars: Vec::new(),
            span: "nothing has started yet".into(),
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
                y: row as u32 * GANTT_ROW + 4,
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
        span: super::human_duration(end - start),
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
            (0, 320)
        );
        assert_eq!(
            (chart.bars[1].x - chart.offset, chart.bars[1].width),
            (320, 320)
        );
        assert_eq!(chart.bars[1].row, 1);
        assert_eq!(chart.span, "20.0s");
        let empty = gantt(&order, &[], at(0));
        assert!(empty.bars.is_empty());
    }
}
