//! Crontab expressions as users write them, translated in this one place to the `cron` crate
//! (which wants seconds first, counts weekdays from 1 = Sunday and ANDs the two day fields).
//!
//! Crontab semantics kept here: 5 fields (or 6 with seconds first), `@hourly`-style macros,
//! weekday names and numbers where 0 and 7 are Sunday, and when both day-of-month and
//! day-of-week are restricted (neither starts with `*`), a day matches if either matches.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::DateTime;
use chrono_tz::Tz;

/// A crontab expression that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "`{expression}` has {count} fields; a schedule has 5 (minute hour day-of-month month day-of-week), 6 with seconds first, or is one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
    )]
    FieldCount { expression: String, count: usize },
    #[error(
        "`{macro_name}` is not a schedule macro; use one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
    )]
    UnknownMacro { macro_name: String },
    #[error("the {field} field `{text}` is invalid: {reason}")]
    Field {
        field: &'static str,
        text: String,
        reason: String,
    },
    #[error("`{expression}` could not be translated: {reason}")]
    Translation { expression: String, reason: String },
}

/// A checked schedule: the expression as written and its translation.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    /// The translation for the `cron` crate. When both day fields are restricted this one
    /// carries the day-of-month restriction only and `or_weekdays` the day-of-week one: use
    /// `next_after`, which combines them as crontab does.
    pub cron: cron::Schedule,
    /// The day-of-week half of an OR of the two day fields, when both are restricted.
    pub or_weekdays: Option<cron::Schedule>,
    /// The hour and all day fields are `*`: the schedule fires every hour (or more often) on
    /// every day, so it follows elapsed time rather than the wall clock across DST changes.
    pub every_hour: bool,
}

impl Schedule {
    /// Parses a crontab expression.
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = expression.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(ScheduleError::UnknownMacro {
                    macro_name: other.to_owned(),
                });
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0".to_owned(), &fields[..]),
            6 => (render(&parse_field(fields[0], &SECOND)?), &fields[1..]),
            count => {
                return Err(ScheduleError::FieldCount {
                    expression: trimmed.to_owned(),
                    count,
                });
            }
        };
        let minute = render(&parse_field(rest[0], &MINUTE)?);
        let hour = render(&parse_field(rest[1], &HOUR)?);
        let dom = parse_field(rest[2], &DAY_OF_MONTH)?;
        let month = render(&parse_field(rest[3], &MONTH)?);
        let dow = parse_field(rest[4], &DAY_OF_WEEK)?;
        // Crontab numbers weekdays 0-7 from Sunday (7 is Sunday again); the cron crate 1-7.
        let dow_cron = FieldValues {
            star: dow.star,
            values: dow.values.iter().map(|d| d % 7 + 1).collect(),
            full: dow.full,
        };
        let build = |dom: &str, dow: &str| {
            let text = format!("{seconds} {minute} {hour} {dom} {month} {dow}");
            cron::Schedule::from_str(&text).map_err(|e| ScheduleError::Translation {
                expression: trimmed.to_owned(),
                reason: e.to_string(),
            })
        };
        let (cron, or_weekdays) = if !dom.star && !dow.star {
            (
                build(&render(&dom), "*")?,
                Some(build("*", &render(&dow_cron))?),
            )
        } else {
            (build(&render(&dom), &render(&dow_cron))?, None)
        };
        Ok(Schedule {
            expression: trimmed.to_owned(),
            cron,
            or_weekdays,
            every_hour: rest[1..].iter().all(|field| *field == "*"),
        })
    }

    /// The first fire time strictly after `after`, in the same time zone.
    pub fn next_after(&self, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
        let first = self.cron.after(&after).next();
        let second = self
            .or_weekdays
            .as_ref()
            .and_then(|s| s.after(&after).next());
        match (first, second) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The allowed range and names of one crontab field.
struct FieldKind {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The number of the first name (`JAN` = 1, `SUN` = 0).
    names_start: u32,
}

const SECOND: FieldKind = FieldKind {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    names_start: 0,
};
const MINUTE: FieldKind = FieldKind {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_start: 0,
};
const HOUR: FieldKind = FieldKind {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_start: 0,
};
const DAY_OF_MONTH: FieldKind = FieldKind {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    names_start: 0,
};
const MONTH: FieldKind = FieldKind {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    names_start: 1,
};
const DAY_OF_WEEK: FieldKind = FieldKind {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    names_start: 0,
};

/// The values one field allows.
struct FieldValues {
    /// The field starts with `*` (crontab's test for "unrestricted" in the day-field OR rule).
    star: bool,
    /// It is exactly `*`: every value, written as `*` for the cron crate.
    full: bool,
    values: BTreeSet<u32>,
}

fn render(field: &FieldValues) -> String {
    if field.full {
        return "*".to_owned();
    }
    field
        .values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_field(text: &str, kind: &FieldKind) -> Result<FieldValues, ScheduleError> {
    let error = |reason: String| ScheduleError::Field {
        field: kind.name,
        text: text.to_owned(),
        reason,
    };
    let mut values = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| error(format!("the step `{step}` is not a number")))?;
                if step == 0 {
                    return Err(error("a step must be at least 1".to_owned()));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (low, high) = if range == "*" || range == "?" {
            (kind.min, kind.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                value(a, kind).map_err(&error)?,
                value(b, kind).map_err(&error)?,
            );
            if a > b {
                return Err(error(format!("the range `{range}` goes backwards")));
            }
            (a, b)
        } else {
            let a = value(range, kind).map_err(&error)?;
            // `5/15` means "from 5 to the end, every 15", as in crontab.
            (a, if step.is_some() { kind.max } else { a })
        };
        let step = step.unwrap_or(1);
        values.extend((low..=high).step_by(step as usize));
    }
    let star = text.starts_with('*');
    Ok(FieldValues {
        star,
        full: text == "*",
        values,
    })
}

fn value(text: &str, kind: &FieldKind) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        if n < kind.min || n > kind.max {
            return Err(format!("{n} is out of range {}-{}", kind.min, kind.max));
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    match kind.names.iter().position(|n| *n == upper) {
        Some(i) => Ok(kind.names_start + i as u32),
        None if text.is_empty() => Err("a value is missing".to_owned()),
        None => Err(format!("`{text}` is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn fires(expression: &str, from: (i32, u32, u32), count: usize) -> Vec<DateTime<Tz>> {
        let schedule = Schedule::parse(expression).unwrap();
        let mut at = Tz::UTC
            .with_ymd_and_hms(from.0, from.1, from.2, 0, 0, 0)
            .unwrap();
        let mut out = Vec::new();
        for _ in 0..count {
            match schedule.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn weekdays_nine_to_five() {
        // 2026-11-02 is a Monday.
        let times = fires("0 9 * * 1-5", (2026, 11, 1), 6);
        let days: Vec<Weekday> = times.iter().map(|t| t.weekday()).collect();
        use Weekday::*;
        assert_eq!(days, [Mon, Tue, Wed, Thu, Fri, Mon]);
        assert!(
            times
                .iter()
                .all(|t| t.format("%H:%M:%S").to_string() == "09:00:00")
        );
        assert_eq!(fires("0 9 * * MON-FRI", (2026, 11, 1), 6), times);
    }

    #[test]
    fn day_fields_are_ored_when_both_are_restricted() {
        // November 2026: Mondays are 2, 9, 16, 23, 30.
        let days: Vec<u32> = fires("0 0 1,15 * 1", (2026, 10, 31), 7)
            .iter()
            .map(|t| t.day())
            .collect();
        assert_eq!(days, [1, 2, 9, 15, 16, 23, 30]);
    }

    #[test]
    fn every_fifteen_minutes_and_macros() {
        let times: Vec<String> = fires("*/15 * * * *", (2026, 11, 1), 5)
            .iter()
            .map(|t| t.format("%H:%M").to_string())
            .collect();
        assert_eq!(times, ["00:15", "00:30", "00:45", "01:00", "01:15"]);
        let daily: Vec<String> = fires("@daily", (2026, 11, 1), 2)
            .iter()
            .map(|t| t.format("%d %H:%M").to_string())
            .collect();
        assert_eq!(daily, ["02 00:00", "03 00:00"]);
        assert_eq!(
            fires("@midnight", (2026, 11, 1), 2),
            fires("@daily", (2026, 11, 1), 2)
        );
        assert_eq!(
            fires("@hourly", (2026, 11, 1), 1)[0]
                .format("%H:%M")
                .to_string(),
            "01:00"
        );
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        for expression in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "@weekly"] {
            let times = fires(expression, (2026, 11, 1), 3);
            assert!(
                times.iter().all(|t| t.weekday() == Weekday::Sun),
                "{expression}: {times:?}"
            );
            assert_eq!(times.len(), 3);
        }
        // Friday to Sunday, written with 7.
        let days: Vec<Weekday> = fires("0 0 * * 5-7", (2026, 11, 1), 3)
            .iter()
            .map(|t| t.weekday())
            .collect();
        assert_eq!(days, [Weekday::Fri, Weekday::Sat, Weekday::Sun]);
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let times: Vec<String> = fires("30 0 12 * * *", (2026, 11, 1), 1)
            .iter()
            .map(|t| t.format("%H:%M:%S").to_string())
            .collect();
        assert_eq!(times, ["12:00:30"]);
    }

    #[test]
    fn time_zones_are_honoured() {
        let schedule = Schedule::parse("0 9 * * *").unwrap();
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let at = tz.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap();
        let next = schedule.next_after(at).unwrap();
        assert_eq!(
            next.format("%Y-%m-%d %H:%M %Z").to_string(),
            "2026-11-03 09:00 CET"
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let message = |e: &str| Schedule::parse(e).unwrap_err().to_string();
        assert!(message("0 9 * *").contains("has 4 fields"));
        assert_eq!(
            message("61 * * * *"),
            "the minute field `61` is invalid: 61 is out of range 0-59"
        );
        assert_eq!(
            message("0 0 * * 8"),
            "the day-of-week field `8` is invalid: 8 is out of range 0-7"
        );
        assert!(message("@fortnightly").contains("is not a schedule macro"));
        assert!(message("0 0 * * FUNDAY").contains("`FUNDAY` is not a number"));
        assert!(message("*/0 * * * *").contains("step must be at least 1"));
        assert!(message("0 5-1 * * *").contains("goes backwards"));
        assert!(message("0 0 0 * *").contains("0 is out of range 1-31"));
    }
}
