//! Times as the pages print them: relative to now ("3 h ago", "in 47 min") with the absolute
//! time and its zone on hover. The templates' `relative` and `absolute` filters are these
//! functions; `app.js` keeps the relative text current with the same rules.

use chrono::{DateTime, Utc};

/// How long ago (or how far ahead) `at` is from `now`, in the largest unit that fits; beyond
/// 30 days, the date.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let (past, s) = (seconds >= 0, seconds.unsigned_abs());
    let amount = match s {
        0..=9 => return "just now".to_owned(),
        10..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        86_400..=2_591_999 => format!("{} d", s / 86_400),
        _ => return at.format("%Y-%m-%d").to_string(),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// An absolute time with its zone: `2026-12-06 14:02:03 UTC`.
pub fn absolute(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `relative` template filter: an ISO time as `relative` to now; other text unchanged.
pub(super) fn relative_filter(text: &str) -> String {
    parse(text).map_or_else(|| text.to_owned(), |at| relative(at, Utc::now()))
}

/// The `absolute` template filter: an ISO time as `absolute`; other text unchanged.
pub(super) fn absolute_filter(text: &str) -> String {
    parse(text).map_or_else(|| text.to_owned(), absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally_both_ways() {
        let now = parse("2026-12-06T14:00:00Z").expect("time");
        let at = |s: i64| now + chrono::Duration::seconds(s);
        assert_eq!(relative(at(-3), now), "just now");
        assert_eq!(relative(at(-42), now), "42 s ago");
        assert_eq!(relative(at(47 * 60), now), "in 47 min");
        assert_eq!(relative(at(-3 * 3600 - 100), now), "3 h ago");
        assert_eq!(relative(at(-2 * 86_400), now), "2 d ago");
        assert_eq!(relative(at(-40 * 86_400), now), "2026-10-27");
        assert_eq!(absolute(now), "2026-12-06 14:00:00 UTC");
        assert_eq!(relative_filter("not a time"), "not a time");
    }
}
