//! Schedule planning, Airflow's way: which data intervals of a workflow's cron schedule are due,
//! when the scheduler must next wake up, which intervals a backfill covers, and which queued runs
//! `max_active_runs` lets start. Pure: no IO, and the current time is always a parameter.
//!
//! A scheduled run covers a data interval `[start, end)` between two consecutive fire times of
//! the schedule, read in the workflow's time zone. Its logical date is `start`, and it is due
//! once `end` has passed — a daily run for 2026-11-01 starts just after midnight on 2026-11-02.
//!
//! Daylight-saving changes: the `cron` crate drops a fire time that falls into a spring-forward
//! gap (it would skip a whole day of a `0 2 * * *` schedule in Europe/Berlin). So fire times are
//! found on the wall clock (by asking `Schedule::next_after` in a zone without transitions) and
//! then placed in the workflow's zone the way Airflow (pendulum) does: a wall time that does not
//! exist is moved forward by the length of the gap (02:00 → 03:00), and a wall time that occurs
//! twice fires once, at its first occurrence.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::dag::Workflow;
use crate::schedule::Schedule;

/// A request the planner cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("workflow `{workflow}` has no schedule, so it has no intervals to backfill")]
    NotScheduled { workflow: String },
    #[error("the backfill range is empty: --from {from} is after --to {to}")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
    #[error(
        "a backfill of workflow `{workflow}` from {from} to {to} has more than {limit} intervals; backfill a shorter range"
    )]
    TooManyIntervals {
        workflow: String,
        from: NaiveDate,
        to: NaiveDate,
        limit: usize,
    },
    #[error("the backfill date {date} is out of range; give a date from year 1 to year 9999")]
    DateOutOfRange { date: NaiveDate },
}

/// Backfill dates come from requests; the calendar types reach much further than any schedule,
/// and arithmetic at their ends overflows.
fn backfill_date_in_range(date: NaiveDate) -> Result<NaiveDate, CronError> {
    if (1..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(CronError::DateOutOfRange { date })
    }
}

/// One data interval `[start, end)`. Its logical date is `start`; for a manual run of an
/// unscheduled workflow both ends are the trigger time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    /// The run's logical date (Airflow's `logical_date`, `ds` is its day).
    pub fn logical_date(&self) -> DateTime<Utc> {
        self.start
    }
}

/// How far back `latest_complete` looks for two fire times. Every valid crontab fires at least
/// once in eight years (`0 0 29 2 *` skips 2100); anything sparser is treated as never firing.
const HORIZON: Duration = Duration::days(366 * 40);

/// The intervals that should have a run now, given the logical date of the latest scheduled
/// run already created (`None`: the workflow never ran), oldest first and at most `limit`.
///
/// - `catchup: true` — every complete interval after `last`, or from `start_date` on when it
///   never ran. Without a `start_date` there is nothing to catch up from, so a workflow that
///   never ran gets only the latest complete interval.
/// - `catchup: false` — only the latest complete interval, and only if it starts after `last`.
///
/// No interval starts before `start_date` (midnight in the workflow's zone) or after
/// `end_date` (inclusive of that whole day). The cap exists so that a minutely schedule with a
/// ten-year catch-up cannot allocate without bound; the next call continues after the last
/// interval returned.
pub fn due_intervals(
    workflow: &Workflow,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    limit: usize,
) -> Vec<Interval> {
    let Some(schedule) = workflow.schedule.as_ref() else {
        return Vec::new();
    };
    let tz = workflow.timezone;
    let stop = end_bound(workflow);
    let mut due = Vec::new();
    let mut start = next_start(schedule, workflow, last, now);
    while due.len() < limit {
        let Some(s) = start.filter(|s| stop.is_none_or(|stop| *s < stop)) else {
            break;
        };
        let Some(end) = next_fire(schedule, tz, s) else {
            break;
        };
        if end > now {
            break;
        }
        due.push(Interval { start: s, end });
        start = Some(end);
    }
    due
}

/// When the next interval after `last` completes — the time the scheduler must wake to create
/// its run — or `None` when there is none (no schedule, or past `end_date`). A time at or
/// before `now` means a run is due already (see `due_intervals`).
pub fn next_wakeup(
    workflow: &Workflow,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let schedule = workflow.schedule.as_ref()?;
    let start = next_start(schedule, workflow, last, now)?;
    if end_bound(workflow).is_some_and(|stop| start >= stop) {
        return None;
    }
    next_fire(schedule, workflow.timezone, start)
}

/// The intervals whose logical date falls on the days `from..=to` in the workflow's zone, for
/// `sluice backfill`. `start_date`, `end_date` and `catchup` do not apply: the user named the
/// days. More than `limit` intervals is an error rather than a silent cut, so a backfill never
/// does less than it was asked to.
pub fn backfill_intervals(
    workflow: &Workflow,
    from: NaiveDate,
    to: NaiveDate,
    limit: usize,
) -> Result<Vec<Interval>, CronError> {
    let Some(schedule) = workflow.schedule.as_ref() else {
        return Err(CronError::NotScheduled {
            workflow: workflow.id.clone(),
        });
    };
    let (from, to) = (backfill_date_in_range(from)?, backfill_date_in_range(to)?);
    if from > to {
        return Err(CronError::EmptyRange { from, to });
    }
    let tz = workflow.timezone;
    let first = start_of_day(tz, from);
    let stop = to.succ_opt().map(|day| start_of_day(tz, day));
    let mut intervals = Vec::new();
    let mut start = next_fire(schedule, tz, first - Duration::seconds(1));
    while let Some(s) = start.filter(|s| stop.is_none_or(|stop| *s < stop)) {
        let Some(end) = next_fire(schedule, tz, s) else {
            break;
        };
        if intervals.len() == limit {
            return Err(CronError::TooManyIntervals {
                workflow: workflow.id.clone(),
                from,
                to,
                limit,
            });
        }
        intervals.push(Interval { start: s, end });
        start = Some(end);
    }
    Ok(intervals)
}

/// The data interval of a run started by hand (UI, API, `trigger`) at `now`. As in Airflow, a
/// scheduled workflow gets the latest interval that ended at or before `now`; an unscheduled one
/// (or a schedule that never fires) gets `[now, now]`, so its logical date is `now`.
pub fn manual_interval(workflow: &Workflow, now: DateTime<Utc>) -> Interval {
    workflow
        .schedule
        .as_ref()
        .and_then(|schedule| latest_complete(schedule, workflow.timezone, now))
        .unwrap_or(Interval {
            start: now,
            end: now,
        })
}

/// Which queued runs may start now under `max_active_runs`, given how many runs are running:
/// the oldest ones, as many as there are free slots.
pub fn runs_to_start(
    max_active_runs: u32,
    running: usize,
    queued_oldest_first: &[String],
) -> Vec<String> {
    let max = usize::try_from(max_active_runs).unwrap_or(usize::MAX);
    let free = max.saturating_sub(running);
    queued_oldest_first.iter().take(free).cloned().collect()
}

/// The start of the next interval to create after `last`, complete or not, before `end_date`
/// is applied. This one function decides `due_intervals` and `next_wakeup`, so the two agree.
fn next_start(
    schedule: &Schedule,
    workflow: &Workflow,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tz = workflow.timezone;
    let after_last = match last {
        Some(last) => Some(next_fire(schedule, tz, last)?),
        None => None,
    };
    let earliest = match workflow.start_date {
        // Checked: `start_date` can be the first day the calendar holds.
        Some(day) => Some(next_fire(
            schedule,
            tz,
            start_of_day(tz, day).checked_sub_signed(Duration::seconds(1))?,
        )?),
        None => None,
    };
    let floor = after_last.max(earliest);
    if workflow.catchup && floor.is_some() {
        return floor;
    }
    // Without catchup, skip to the latest complete interval; when there is none yet (a
    // schedule that has not fired twice within the horizon), only the floor remains.
    let latest = latest_complete(schedule, tz, now).map(|i| i.start);
    floor.max(latest)
}

/// The latest interval that ended at or before `now`: found by scanning forward from a point
/// in the past, doubling the look-back until two fire times are seen. Fire times can only be
/// found forwards, and the doubling keeps a minutely schedule cheap and a yearly one possible.
fn latest_complete(schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> Option<Interval> {
    let mut look_back = Duration::minutes(2);
    while look_back <= HORIZON {
        let mut fires: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
        let mut cursor = now - look_back;
        while let Some(fire) = next_fire(schedule, tz, cursor).filter(|f| *f <= now) {
            fires = (fires.1, Some(fire));
            cursor = fire;
        }
        if let (Some(start), Some(end)) = fires {
            return Some(Interval { start, end });
        }
        look_back = look_back * 2;
    }
    None
}

/// The first fire time strictly after `after`, DST-correct in the workflow's zone (see the
/// module comment for why this does not call `Schedule::next_after` in `tz` directly).
fn next_fire(schedule: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if schedule.every_hour {
        return next_fire_by_elapsed_time(schedule, tz, after);
    }
    let mut wall = after.with_timezone(&tz).naive_local();
    // Each turn moves the wall clock forward, so this ends; the bound only guards against a
    // schedule whose every wall time maps back before `after`, which real zones cannot do.
    for _ in 0..64 {
        let next_wall = schedule
            .next_after(Tz::UTC.from_utc_datetime(&wall))?
            .naive_utc();
        let candidate = match tz.from_local_datetime(&next_wall) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            // A repeated wall time fires once, at its first occurrence — unless that is not
            // after `after` (we are inside the repeated hour already), then at the second.
            LocalResult::Ambiguous(first, second) => {
                let first = first.with_timezone(&Utc);
                if first > after {
                    first
                } else {
                    second.with_timezone(&Utc)
                }
            }
            // A wall time inside a gap is read with the offset in force before the gap, which
            // moves it forward by the gap's length (02:30 → 03:30), as pendulum does.
            LocalResult::None => skipped_forward(tz, next_wall),
        };
        if candidate > after {
            return Some(candidate);
        }
        wall = next_wall;
    }
    None
}

/// Fire times of a schedule that fires every hour or more often, every day (`@hourly`,
/// `*/15 * * * *`): read at the zone's standard offset all year, so the repeated hour of an
/// autumn change gets its own runs and the skipped hour of a spring change none, as Airflow
/// does — every interval lasts the same elapsed time.
fn next_fire_by_elapsed_time(
    schedule: &Schedule,
    tz: Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use chrono::{Datelike, Offset};
    // The smaller of the January and July offsets is the standard one, in either hemisphere.
    let year = after.year();
    let offset_at = |month| {
        Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
            .single()
            .map(|t| {
                tz.offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc()
            })
    };
    let standard = offset_at(1)?.min(offset_at(7)?);
    let shift = Duration::seconds(i64::from(standard));
    let next = schedule.next_after(Tz::UTC.from_utc_datetime(&(after + shift).naive_utc()))?;
    Some(next.with_timezone(&Utc) - shift)
}

/// A wall time that does not exist in `tz`, read with the UTC offset in force a day earlier
/// (no real zone changes its offset twice within a day).
fn skipped_forward(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    use chrono::Offset;
    let before = tz
        .offset_from_utc_datetime(&(wall - Duration::days(1)))
        .fix();
    Utc.from_utc_datetime(&(wall - Duration::seconds(i64::from(before.local_minus_utc()))))
}

/// Midnight at the start of `day` in `tz`; where midnight falls into a gap, the first instant
/// after it.
fn start_of_day(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => skipped_forward(tz, midnight),
    }
}

/// The first instant after `end_date` in the workflow's zone: intervals must start before it.
fn end_bound(workflow: &Workflow) -> Option<DateTime<Utc>> {
    let day = workflow.end_date?.succ_opt()?;
    Some(start_of_day(workflow.timezone, day))
}

#[cfg(test)]
mod tests {
    use super::*;

    use indexmap::IndexMap;
    use petgraph::graph::DiGraph;

    /// A workflow with only the scheduling fields that matter here.
    fn workflow(schedule: Option<&str>, timezone: &str) -> Workflow {
        Workflow {
            id: "planned".to_owned(),
            description: None,
            schedule: schedule.map(|s| Schedule::parse(s).expect("test schedules are valid")),
            timezone: timezone.parse().expect("test zones are valid"),
            start_date: None,
            end_date: None,
            catchup: false,
            max_active_runs: 1,
            tags: Vec::new(),
            params: IndexMap::new(),
            triggers: Vec::new(),
            tasks: Vec::new(),
            on_failure: Vec::new(),
            on_success: Vec::new(),
            deadline: None,
            on_deadline: Vec::new(),
            graph: DiGraph::new(),
            source: String::new(),
            source_hash: String::new(),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test times are RFC 3339")
            .with_timezone(&Utc)
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("test dates are YYYY-MM-DD")
    }

    /// Intervals as "start/end" in UTC, for readable assertions.
    fn show(intervals: &[Interval]) -> Vec<String> {
        intervals
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i.start.format("%m-%dT%H:%M"),
                    i.end.format("%m-%dT%H:%M")
                )
            })
            .collect()
    }

    /// Consecutive fire times from the day before `from` to the day after `to`, via backfill.
    fn daily_fires(workflow: &Workflow, from: &str, to: &str) -> Vec<Interval> {
        backfill_intervals(workflow, day(from), day(to), 100).expect("a valid range")
    }

    #[test]
    fn hourly_schedule_runs_the_hour_that_just_ended() {
        let mut w = workflow(Some("@hourly"), "UTC");
        w.start_date = Some(day("2026-11-01"));
        let now = utc("2026-11-01T03:30:00Z");
        let due = due_intervals(&w, Some(utc("2026-11-01T01:00:00Z")), now, 10);
        assert_eq!(show(&due), ["11-01T02:00/11-01T03:00"]);
        assert_eq!(
            next_wakeup(&w, Some(utc("2026-11-01T02:00:00Z")), now),
            Some(utc("2026-11-01T04:00:00Z"))
        );
        // Exactly at the interval's end it is due: `end` is exclusive for the data, not the run.
        let at_end = due_intervals(
            &w,
            Some(utc("2026-11-01T02:00:00Z")),
            utc("2026-11-01T04:00:00Z"),
            10,
        );
        assert_eq!(show(&at_end), ["11-01T03:00/11-01T04:00"]);
    }

    #[test]
    fn daily_schedule_first_run_covers_the_start_date() {
        let mut w = workflow(Some("@daily"), "UTC");
        w.start_date = Some(day("2026-11-01"));
        w.catchup = true;
        // Before the first day has ended nothing is due, and the scheduler wakes at its end.
        let early = utc("2026-11-01T12:00:00Z");
        assert!(due_intervals(&w, None, early, 10).is_empty());
        assert_eq!(
            next_wakeup(&w, None, early),
            Some(utc("2026-11-02T00:00:00Z"))
        );
        let due = due_intervals(&w, None, utc("2026-11-02T00:00:05Z"), 10);
        assert_eq!(show(&due), ["11-01T00:00/11-02T00:00"]);
        assert_eq!(due[0].logical_date(), utc("2026-11-01T00:00:00Z"));
    }

    #[test]
    fn catchup_runs_every_missed_interval_after_a_gap() {
        let mut w = workflow(Some("@daily"), "UTC");
        w.start_date = Some(day("2026-10-01"));
        w.catchup = true;
        // The last run covered 11-01; Sluice was down until 11-05 10:00.
        let last = Some(utc("2026-11-01T00:00:00Z"));
        let now = utc("2026-11-05T10:00:00Z");
        let due = due_intervals(&w, last, now, 10);
        assert_eq!(
            show(&due),
            [
                "11-02T00:00/11-03T00:00",
                "11-03T00:00/11-04T00:00",
                "11-04T00:00/11-05T00:00"
            ]
        );
        // Once the newest is created, the next wake-up is the end of the running day.
        assert_eq!(
            next_wakeup(&w, Some(due[2].start), now),
            Some(utc("2026-11-06T00:00:00Z"))
        );
        // The wake-up for the stale `last` is in the past: there is work to do now.
        assert_eq!(
            next_wakeup(&w, last, now),
            Some(utc("2026-11-03T00:00:00Z"))
        );
    }

    #[test]
    fn without_catchup_only_the_latest_interval_runs_after_a_gap() {
        let mut w = workflow(Some("@daily"), "UTC");
        w.start_date = Some(day("2026-10-01"));
        let last = Some(utc("2026-11-01T00:00:00Z"));
        let now = utc("2026-11-05T10:00:00Z");
        assert_eq!(
            show(&due_intervals(&w, last, now, 10)),
            ["11-04T00:00/11-05T00:00"]
        );
        assert_eq!(
            next_wakeup(&w, last, now),
            Some(utc("2026-11-05T00:00:00Z"))
        );
        // Never ran: also just the latest one, not everything since start_date.
        assert_eq!(
            show(&due_intervals(&w, None, now, 10)),
            ["11-04T00:00/11-05T00:00"]
        );
        // Already created: nothing more until the current day ends.
        let done = Some(utc("2026-11-04T00:00:00Z"));
        assert!(due_intervals(&w, done, now, 10).is_empty());
        assert_eq!(
            next_wakeup(&w, done, now),
            Some(utc("2026-11-06T00:00:00Z"))
        );
    }

    #[test]
    fn a_start_date_in_the_future_means_nothing_is_due() {
        for catchup in [true, false] {
            let mut w = workflow(Some("0 6 * * *"), "UTC");
            w.start_date = Some(day("2026-12-01"));
            w.catchup = catchup;
            let now = utc("2026-11-05T10:00:00Z");
            assert!(
                due_intervals(&w, None, now, 10).is_empty(),
                "catchup {catchup}"
            );
            // The first interval starts at the first fire on start_date and ends a day later.
            assert_eq!(
                next_wakeup(&w, None, now),
                Some(utc("2026-12-02T06:00:00Z"))
            );
        }
    }

    #[test]
    fn end_date_stops_runs_after_its_last_day() {
        let mut w = workflow(Some("@daily"), "UTC");
        w.start_date = Some(day("2026-11-01"));
        w.end_date = Some(day("2026-11-03"));
        w.catchup = true;
        let now = utc("2026-11-20T00:00:00Z");
        // end_date is inclusive: the interval starting on 11-03 still runs.
        assert_eq!(
            show(&due_intervals(&w, None, now, 10)),
            [
                "11-01T00:00/11-02T00:00",
                "11-02T00:00/11-03T00:00",
                "11-03T00:00/11-04T00:00"
            ]
        );
        let last = Some(utc("2026-11-03T00:00:00Z"));
        assert!(due_intervals(&w, last, now, 10).is_empty());
        assert_eq!(next_wakeup(&w, last, now), None);
        // Without catchup, the latest interval (11-18) is past end_date: nothing, as in Airflow.
        w.catchup = false;
        assert!(due_intervals(&w, None, now, 10).is_empty());
        assert_eq!(next_wakeup(&w, None, now), None);
    }

    #[test]
    fn berlin_two_am_across_both_dst_changes() {
        // `0 2 * * *` in Europe/Berlin. On 2026-03-29 clocks jump from 02:00 to 03:00, so 02:00
        // does not exist: Vixie cron runs such a job when the clock jumps (03:00) and Airflow
        // (pendulum) moves the time forward by the gap, also 03:00 CEST = 01:00 UTC. The day is
        // not skipped. On 2026-10-25 clocks fall back from 03:00 to 02:00, so 02:00-02:59 occurs
        // twice: cron does not rerun a fixed-time job, and Airflow fires at the first
        // occurrence, 02:00 CEST = 00:00 UTC. One run that day, not two.
        let w = workflow(Some("0 2 * * *"), "Europe/Berlin");
        let spring = daily_fires(&w, "2026-03-27", "2026-03-30");
        assert_eq!(
            show(&spring),
            [
                "03-27T01:00/03-28T01:00",
                "03-28T01:00/03-29T01:00",
                "03-29T01:00/03-30T00:00",
                "03-30T00:00/03-31T00:00"
            ]
        );
        let fall = daily_fires(&w, "2026-10-24", "2026-10-26");
        assert_eq!(
            show(&fall),
            [
                "10-24T00:00/10-25T00:00",
                "10-25T00:00/10-26T01:00",
                "10-26T01:00/10-27T01:00"
            ]
        );
        // The scheduler sees the same: a catch-up across each change creates one run a day.
        let mut w = w;
        w.catchup = true;
        w.start_date = Some(day("2026-03-27"));
        let due = due_intervals(&w, None, utc("2026-03-31T12:00:00Z"), 10);
        assert_eq!(due, spring);
        w.start_date = Some(day("2026-10-24"));
        let due = due_intervals(&w, None, utc("2026-10-27T12:00:00Z"), 10);
        assert_eq!(due, fall);
        // Asked from inside the repeated hour, the next fire is the next day: 02:00 does not
        // fire a second time at its second occurrence (01:00 UTC).
        let tz = w.timezone;
        let schedule = w.schedule.as_ref().expect("scheduled");
        assert_eq!(
            next_fire(schedule, tz, utc("2026-10-24T23:30:00Z")),
            Some(utc("2026-10-25T00:00:00Z"))
        );
        for inside in [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
        ] {
            assert_eq!(
                next_fire(schedule, tz, utc(inside)),
                Some(utc("2026-10-26T01:00:00Z")),
                "after {inside}"
            );
        }
    }

    #[test]
    fn new_york_half_past_one_across_both_dst_changes() {
        // `30 1 * * *` in America/New_York. On 2026-03-08 clocks jump 02:00 → 03:00, which
        // leaves 01:30 alone (EST, 06:30 UTC). On 2026-11-01 they fall back 02:00 → 01:00, so
        // 01:30 happens twice; it fires once, at the first (EDT, 05:30 UTC), as above.
        let w = workflow(Some("30 1 * * *"), "America/New_York");
        assert_eq!(
            show(&daily_fires(&w, "2026-03-07", "2026-03-09")),
            [
                "03-07T06:30/03-08T06:30",
                "03-08T06:30/03-09T05:30",
                "03-09T05:30/03-10T05:30"
            ]
        );
        assert_eq!(
            show(&daily_fires(&w, "2026-10-31", "2026-11-02")),
            [
                "10-31T05:30/11-01T05:30",
                "11-01T05:30/11-02T06:30",
                "11-02T06:30/11-03T06:30"
            ]
        );
    }

    /// Berlin falls back on 2026-10-25: 02:00–02:59 happens twice. An hourly schedule gets an
    /// hour-long interval for each elapsed hour, the repeated one included (Airflow does the
    /// same); in spring the skipped hour has none. Every interval is one hour long.
    #[test]
    fn hourly_schedules_follow_elapsed_time_across_dst_changes() {
        let hourly = workflow(Some("@hourly"), "Europe/Berlin");
        let mut wf = hourly.clone();
        wf.start_date = Some(day("2026-10-25"));
        wf.catchup = true;
        // 2026-10-25 00:00 CEST is 2026-10-24T22:00Z; by 04:00Z six hours have elapsed.
        let due = due_intervals(&wf, None, utc("2026-10-25T04:00:00Z"), 100);
        assert!(
            due.iter().all(|i| i.end - i.start == Duration::hours(1)),
            "{:?}",
            show(&due)
        );
        let starts: Vec<String> = due.iter().map(|i| i.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2026-10-24T22:00:00+00:00",
                "2026-10-24T23:00:00+00:00",
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T03:00:00+00:00",
            ],
            "00:00, 01:00, 02:00 CEST, then 02:00, 03:00, 04:00 CET"
        );
        let mut spring = hourly;
        spring.start_date = Some(day("2026-03-29"));
        spring.catchup = true;
        let due = due_intervals(&spring, None, utc("2026-03-29T03:00:00Z"), 100);
        // 00:00 and 01:00 CET, then 03:00 and 04:00 CEST: 02:00 does not exist that night.
        assert_eq!(due.len(), 4, "{:?}", show(&due));
        assert!(due.iter().all(|i| i.end - i.start == Duration::hours(1)));
    }

    #[test]
    fn backfill_of_a_week_of_daily_runs() {
        let w = workflow(Some("@daily"), "UTC");
        let week = backfill_intervals(&w, day("2026-11-01"), day("2026-11-07"), 100)
            .expect("a valid range");
        assert_eq!(week.len(), 7);
        assert_eq!(week[0].start, utc("2026-11-01T00:00:00Z"));
        assert_eq!(week[6].end, utc("2026-11-08T00:00:00Z"));
        assert!(week.windows(2).all(|pair| pair[0].end == pair[1].start));
        // Logical dates are days in the workflow's zone, not in UTC.
        let tokyo = workflow(Some("@daily"), "Asia/Tokyo");
        let one = backfill_intervals(&tokyo, day("2026-11-01"), day("2026-11-01"), 100)
            .expect("a valid range");
        assert_eq!(show(&one), ["10-31T15:00/11-01T15:00"]);
    }

    #[test]
    fn backfill_errors_say_what_to_change() {
        let w = workflow(Some("* * * * *"), "UTC");
        let too_many = backfill_intervals(&w, day("2026-11-01"), day("2026-11-07"), 1000);
        assert!(matches!(
            too_many,
            Err(CronError::TooManyIntervals { limit: 1000, .. })
        ));
        let backwards = backfill_intervals(&w, day("2026-11-07"), day("2026-11-01"), 10);
        assert!(matches!(backwards, Err(CronError::EmptyRange { .. })));
        // Regression: the first day of the calendar overflowed when the first fire time was
        // searched from the second before it.
        for (from, to) in [
            (NaiveDate::MIN, day("2026-11-01")),
            (day("2026-11-01"), NaiveDate::MAX),
            (NaiveDate::MAX, NaiveDate::MAX),
        ] {
            let error = backfill_intervals(&w, from, to, 10).expect_err("out of range");
            assert!(
                matches!(error, CronError::DateOutOfRange { .. }),
                "{from}..{to}: {error}"
            );
        }
        let manual = workflow(None, "UTC");
        let error = backfill_intervals(&manual, day("2026-11-01"), day("2026-11-01"), 10)
            .expect_err("no schedule");
        assert_eq!(
            error.to_string(),
            "workflow `planned` has no schedule, so it has no intervals to backfill"
        );
    }

    #[test]
    fn an_unscheduled_workflow_is_never_due() {
        let mut w = workflow(None, "UTC");
        w.catchup = true;
        w.start_date = Some(day("2026-01-01"));
        let now = utc("2026-11-05T10:00:00Z");
        assert!(due_intervals(&w, None, now, 10).is_empty());
        assert_eq!(next_wakeup(&w, None, now), None);
    }

    #[test]
    fn limit_caps_a_long_catchup_and_the_next_call_continues() {
        let mut w = workflow(Some("* * * * *"), "UTC");
        w.start_date = Some(day("2016-01-01"));
        w.catchup = true;
        let now = utc("2026-11-05T10:00:00Z");
        let first = due_intervals(&w, None, now, 5);
        assert_eq!(first.len(), 5);
        assert_eq!(first[0].start, utc("2016-01-01T00:00:00Z"));
        let next = due_intervals(&w, Some(first[4].start), now, 5);
        assert_eq!(next[0].start, first[4].end);
        assert!(due_intervals(&w, None, now, 0).is_empty());
    }

    #[test]
    fn manual_runs_take_the_latest_complete_interval() {
        let w = workflow(Some("0 2 * * *"), "UTC");
        let now = utc("2026-11-05T10:00:00Z");
        assert_eq!(
            show(&[manual_interval(&w, now)]),
            ["11-04T02:00/11-05T02:00"]
        );
        // Exactly at a fire time, the interval that ends then is the latest complete one.
        let at_fire = utc("2026-11-05T02:00:00Z");
        assert_eq!(manual_interval(&w, at_fire).end, at_fire);
        // A yearly schedule needs the look-back to grow past a year.
        let yearly = workflow(Some("@yearly"), "UTC");
        assert_eq!(
            show(&[manual_interval(&yearly, now)]),
            ["01-01T00:00/01-01T00:00"]
        );
        assert_eq!(
            manual_interval(&yearly, now).start,
            utc("2025-01-01T00:00:00Z")
        );
        let unscheduled = workflow(None, "UTC");
        assert_eq!(
            manual_interval(&unscheduled, now),
            Interval {
                start: now,
                end: now
            }
        );
    }

    #[test]
    fn runs_to_start_fills_free_slots_oldest_first() {
        let queued: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
        assert_eq!(runs_to_start(1, 0, &queued), ["a"]);
        assert_eq!(runs_to_start(2, 1, &queued), ["a"]);
        assert_eq!(runs_to_start(16, 2, &queued), ["a", "b", "c"]);
        assert!(runs_to_start(1, 1, &queued).is_empty());
        // More running than allowed (the limit was lowered): start nothing, never underflow.
        assert!(runs_to_start(1, 3, &queued).is_empty());
        assert!(runs_to_start(4, 0, &[]).is_empty());
    }
}
