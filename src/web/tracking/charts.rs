//! Metric histories as line charts: plain numbers (SVG coordinates) the templates draw, so the
//! page needs no script. Pure.

use serde::Serialize;

use crate::tracking::MetricPoint;

/// The drawing area, in SVG units.
pub const WIDTH: f64 = 360.0;
pub const HEIGHT: f64 = 120.0;
/// The most points a line keeps; longer histories keep every n-th point and the last.
const MAX_POINTS: usize = 400;
/// The colours of the runs of a comparison, in order.
pub const COLOURS: [&str; 4] = ["#2f6fde", "#d9480f", "#2b8a3e", "#9c36b5"];

/// One run's line.
#[derive(Debug, Serialize, PartialEq)]
pub struct Line {
    /// `x,y x,y …` for a `polyline`.
    pub points: String,
    /// The last point, drawn as a dot (a history of one point is only that).
    pub last_x: f64,
    pub last_y: f64,
    pub colour: &'static str,
    pub label: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Chart {
    pub key: String,
    pub lines: Vec<Line>,
    pub low: String,
    pub high: String,
    pub first_step: i64,
    pub last_step: i64,
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// One chart of one metric over several runs' histories (each `(label, points)`), on shared
/// axes: steps across, values up. `None` when no run has a point.
pub fn chart(key: &str, histories: &[(String, Vec<MetricPoint>)]) -> Option<Chart> {
    let all = histories.iter().flat_map(|(_, points)| points);
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for p in all {
        low = low.min(p.value);
        high = high.max(p.value);
        first = first.min(p.step);
        last = last.max(p.step);
    }
    if first > last {
        return None;
    }
    let span = if high > low { high - low } else { 1.0 };
    let steps = (last - first).max(1) as f64;
    let x = |step: i64| round((step - first) as f64 / steps * WIDTH);
    let y = |value: f64| {
        if high > low {
            round(HEIGHT - (value - low) / span * HEIGHT)
        } else {
            HEIGHT / 2.0
        }
    };
    let lines = histories
        .iter()
        .zip(COLOURS.iter().cycle())
        .filter(|((_, points), _)| !points.is_empty())
        .map(|((label, points), colour)| {
            let every = points.len().div_ceil(MAX_POINTS).max(1);
            let mut kept: Vec<&MetricPoint> = points.iter().step_by(every).collect();
            if let Some(end) = points.last()
                && kept.last().is_some_and(|k| !std::ptr::eq(*k, end))
            {
                kept.push(end);
            }
            let points: Vec<String> = kept
                .iter()
                .map(|p| format!("{},{}", x(p.step), y(p.value)))
                .collect();
            let end = kept.last().map_or((0.0, 0.0), |p| (x(p.step), y(p.value)));
            Line {
                points: points.join(" "),
                last_x: end.0,
                last_y: end.1,
                colour,
                label: label.clone(),
            }
        })
        .collect();
    Some(Chart {
        key: key.to_owned(),
        lines,
        low: super::number(low),
        high: super::number(high),
        first_step: first,
        last_step: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[(i64, f64)]) -> Vec<MetricPoint> {
        values
            .iter()
            .map(|&(step, value)| MetricPoint {
                key: "loss".into(),
                value,
                step,
                timestamp_ms: 0,
            })
            .collect()
    }

    #[test]
    fn lines_share_axes_from_the_lowest_to_the_highest_value() {
        let drawn = chart(
            "loss",
            &[
                ("a".into(), points(&[(0, 1.0), (2, 0.5)])),
                ("b".into(), points(&[(0, 0.0), (1, 0.25)])),
            ],
        )
        .expect("a chart");
        assert_eq!(
            drawn.lines[0].points,
            format!("0,0 {WIDTH},{}", HEIGHT / 2.0)
        );
        assert_eq!(
            drawn.lines[1].points,
            format!("0,{HEIGHT} {},{}", WIDTH / 2.0, HEIGHT * 0.75)
        );
        assert_eq!(
            (drawn.lines[0].colour, drawn.lines[1].colour),
            (COLOURS[0], COLOURS[1])
        );
        assert_eq!((drawn.low.as_str(), drawn.high.as_str()), ("0", "1"));
        assert_eq!((drawn.first_step, drawn.last_step), (0, 2));
        assert_eq!(chart("none", &[("a".into(), Vec::new())]), None);
    }

    #[test]
    fn long_histories_are_thinned_but_keep_their_last_point() {
        let long: Vec<(i64, f64)> = (0..10_001).map(|s| (s, s as f64)).collect();
        let drawn = chart("x", &[("a".into(), points(&long))]).expect("a chart");
        let line = &drawn.lines[0];
        assert!(line.points.split(' ').count() <= MAX_POINTS + 1);
        assert_eq!((line.last_x, line.last_y), (WIDTH, 0.0));
        let flat = chart("y", &[("a".into(), points(&[(0, 3.0)]))]).expect("one point");
        assert_eq!(flat.lines[0].points, format!("0,{}", HEIGHT / 2.0));
    }
}
