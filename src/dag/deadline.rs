//! Run deadlines: when a run should be done by. Pure: no IO, no clock.

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::duration::instant_after;

pub use crate::spec::format::DeadlineFrom;

/// A compiled `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `after` a duration from the run's start or its logical date.
    After { after: Duration, from: DeadlineFrom },
    /// At a time of day in the workflow's time zone: the first one at or after the end of
    /// the run's data interval.
    At { time: NaiveTime },
}

/// The facts of a run a deadline is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTimes {
    pub logical_date: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// `None` while the run has not started.
    pub started_at: Option<DateTime<Utc>>,
}

impl Deadline {
    /// When a run with these times is due; `None` while that cannot be known (counting from a
    /// start that has not happened).
    pub fn due_at(&self, timezone: Tz, run: &RunTimes) -> Option<DateTime<Utc>> {
        match *self {
            Deadline::After { after, from } => {
                let base = match from {
                    DeadlineFrom::Start => run.started_at?,
                    DeadlineFrom::LogicalDate => run.logical_date,
                };
                Some(instant_after(base, after))
            }
            Deadline::At { time } => {
                let end = run.data_interval_end;
                let day = end.with_timezone(&timezone).date_naive();
                let today = place(timezone, day, time)?;
                if today >= end {
                    return Some(today);
                }
                place(timezone, day.succ_opt()?, time)
            }
        }
    }
}

/// A wall-clock time in a zone, the way schedules treat them: a time skipped by a
/// spring-forward gap moves forward by the gap, a time that occurs twice is its first.
fn place(timezone: Tz, day: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let mut wall: NaiveDateTime = day.and_time(time);
    // Gaps are at most a few hours long; step forward until the wall time exists.
    for _ in 0..48 {
        match timezone.from_local_datetime(&wall) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
            LocalResult::None => wall += chrono::Duration::minutes(30),
        }
    }
    None
}

/// Reads `HH:MM` (24-hour clock).
pub fn parse_time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| {
        format!("`{text}` is not a time of day; write it as HH:MM on a 24-hour clock, like `06:00`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a valid time")
            .with_timezone(&Utc)
    }

    fn times(logical: &str, end: &str, started: Option<&str>) -> RunTimes {
        RunTimes {
            logical_date: utc(logical),
            data_interval_end: utc(end),
            started_at: started.map(utc),
        }
    }

    #[test]
    fn after_counts_from_the_start_or_the_logical_date() {
        let run = times(
            "2026-11-01T00:00:00Z",
            "2026-11-02T00:00:00Z",
            Some("2026-11-02T00:05:00Z"),
        );
        let from_start = Deadline::After {
            after: Duration::from_secs(2 * 3600),
            from: DeadlineFrom::Start,
        };
        assert_eq!(
            from_start.due_at(Tz::UTC, &run),
            Some(utc("2026-11-02T02:05:00Z"))
        );
        let from_logical = Deadline::After {
            after: Duration::from_secs(26 * 3600),
            from: DeadlineFrom::LogicalDate,
        };
        assert_eq!(
            from_logical.due_at(Tz::UTC, &run),
            Some(utc("2026-11-02T02:00:00Z"))
        );
        let not_started = times("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", None);
        assert_eq!(from_start.due_at(Tz::UTC, &not_started), None);
    }

    #[test]
    fn at_is_the_next_such_time_after_the_interval_ends_in_the_workflows_zone() {
        let six = Deadline::At {
            time: parse_time_of_day("06:00").expect("a time"),
        };
        // A daily run of 1 November (Paris) starts after midnight on the 2nd: due 06:00 on
        // the 2nd, Paris time (UTC+1 in November).
        let daily = times(
            "2026-10-31T23:00:00Z",
            "2026-11-01T23:00:00Z",
            Some("2026-11-01T23:01:00Z"),
        );
        assert_eq!(
            six.due_at(chrono_tz::Europe::Paris, &daily),
            Some(utc("2026-11-02T05:00:00Z"))
        );
        // A manual run triggered at 07:30 is due at 06:00 the next day.
        let manual = times(
            "2026-11-27T07:30:00Z",
            "2026-11-27T07:30:00Z",
            Some("2026-11-27T07:30:00Z"),
        );
        assert_eq!(
            six.due_at(Tz::UTC, &manual),
            Some(utc("2026-11-28T06:00:00Z"))
        );
        // Exactly at the time counts as that time.
        let on_time = times("2026-11-27T06:00:00Z", "2026-11-27T06:00:00Z", None);
        assert_eq!(
            six.due_at(Tz::UTC, &on_time),
            Some(utc("2026-11-27T06:00:00Z"))
        );
    }

    #[test]
    fn a_time_skipped_by_daylight_saving_moves_forward() {
        let half_two = Deadline::At {
            time: parse_time_of_day("02:30").expect("a time"),
        };
        // 29 March 2026, Berlin: 02:00 → 03:00.
        let run = times("2026-03-28T23:00:00Z", "2026-03-28T23:00:00Z", None);
        assert_eq!(
            half_two.due_at(chrono_tz::Europe::Berlin, &run),
            Some(utc("2026-03-29T01:00:00Z")),
            "03:00 CEST"
        );
    }

    #[test]
    fn times_of_day_are_checked() {
        assert!(parse_time_of_day("6am").is_err());
        assert!(parse_time_of_day("24:00").is_err());
        assert_eq!(
            parse_time_of_day("23:59").expect("valid"),
            NaiveTime::from_hms_opt(23, 59, 0).expect("time")
        );
    }

    fn compile(source: &str) -> Result<crate::dag::Workflow, Vec<String>> {
        // The structure is checked elsewhere; an empty schema accepts the file as it is.
        crate::dag::compile(
            source,
            std::path::Path::new("w.yaml"),
            &serde_json::json!({}),
        )
        .map_err(|ds| ds.iter().map(ToString::to_string).collect())
    }

    const TASKS: &str = "tasks:\n  a: { operator: noop }\n";
    const HOOK: &str = "on_deadline:\n  late: { operator: noop }\n";

    #[test]
    fn deadlines_compile_with_their_hooks() {
        let w = compile(&format!(
            "deadline: {{ after: 2h, from: logical_date }}\n{HOOK}{TASKS}on_success:\n  ok: {{ operator: noop }}\n"
        ))
        .expect("valid");
        assert_eq!(
            w.deadline,
            Some(Deadline::After {
                after: Duration::from_secs(7200),
                from: DeadlineFrom::LogicalDate
            })
        );
        assert_eq!(w.on_deadline[0].id, "late");
        assert_eq!(w.on_success[0].id, "ok");
        let ids: Vec<&str> = w.all_tasks().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "ok", "late"]);
        assert_eq!(w.task_at(2).map(|t| t.id.as_str()), Some("late"));
        let at = compile(&format!("deadline: {{ at: \"06:30\" }}\n{HOOK}{TASKS}")).expect("valid");
        assert_eq!(
            at.deadline,
            Some(Deadline::At {
                time: NaiveTime::from_hms_opt(6, 30, 0).expect("time")
            })
        );
    }

    #[test]
    fn deadline_mistakes_are_reported_where_they_are() {
        let problems = |source: String| compile(&source).expect_err("invalid").join("\n");
        let both = problems(format!(
            "deadline: {{ after: 2h, at: \"06:00\" }}\n{HOOK}{TASKS}"
        ));
        assert!(both.contains("w.yaml:1:"), "{both}");
        assert!(both.contains("both `after` and `at`"), "{both}");
        assert!(problems(format!("deadline: {{}}\n{HOOK}{TASKS}")).contains("needs `after`"));
        assert!(problems(format!("{HOOK}{TASKS}")).contains("has no `deadline`"));
        assert!(
            problems(format!("deadline: {{ after: 1h }}\n{TASKS}"))
                .contains("no `on_deadline` tasks")
        );
        assert!(
            problems(format!(
                "deadline: {{ at: \"06:00\", from: start }}\n{HOOK}{TASKS}"
            ))
            .contains("goes with `after`")
        );
        let clash = problems(format!(
            "deadline: {{ after: 1h }}\non_deadline:\n  a: {{ operator: noop }}\n{TASKS}"
        ));
        assert!(
            clash.contains("`a` is already a task in `tasks`"),
            "{clash}"
        );
        let hooks_clash = problems(format!(
            "{TASKS}on_failure:\n  tell: {{ operator: noop }}\non_success:\n  tell: {{ operator: noop }}\n"
        ));
        assert!(
            hooks_clash.contains("`tell` is already a task in `on_failure`"),
            "{hooks_clash}"
        );
    }
}
