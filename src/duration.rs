//! Durations as people write them in workflow files: `30s`, `10m`, `1h 30m`, `500ms`, or a
//! whole number of seconds; their upper limit, [`MAX_DURATION`]; and the one checked way to
//! add a duration to a date.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The longest duration a workflow (or a command line) may state: 365 days. A longer one is
/// almost always a mistake (a missing unit, extra zeros), and the limit keeps every date
/// computed from a duration far inside what the clock types can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A duration read from a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `30s`, `10m`, `1h 30m`, `250ms` or a bare number of seconds, up to
    /// [`MAX_DURATION`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let parsed = match text.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => humantime::parse_duration(text).map_err(|e| {
                format!("`{text}` is not a duration ({e}); write it like `30s`, `10m` or `1h 30m`")
            })?,
        };
        Self::within_limit(parsed, text)
    }

    /// A whole number of seconds, up to [`MAX_DURATION`].
    pub fn from_secs(seconds: u64) -> Result<Self, String> {
        Self::within_limit(Duration::from_secs(seconds), &seconds.to_string())
    }

    fn within_limit(duration: Duration, written: &str) -> Result<Self, String> {
        if duration > MAX_DURATION {
            return Err(format!(
                "`{written}` is longer than 365 days, the longest duration allowed; \
                 check the number and its unit"
            ));
        }
        Ok(HumanDuration(duration))
    }
}

/// `start + delay`, or the latest date there is when that does not fit: user durations reach
/// here (retry delays after backoff, reschedules), and an overflow must not panic a process.
pub fn instant_after(start: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| start.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HumanDuration::parse(s)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like `30s`, `10m` or `1h 30m`, or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                HumanDuration::from_secs(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                let seconds =
                    u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                HumanDuration::from_secs(seconds).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration like `30s`, `10m`, `1h 30m` or `500ms`, or a whole number of seconds.",
            "type": ["string", "integer"],
            "minimum": 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        let secs = |s: &str| HumanDuration::parse(s).map(|d| d.0.as_millis());
        assert_eq!(secs("30s"), Ok(30_000));
        assert_eq!(secs("10m"), Ok(600_000));
        assert_eq!(secs("1h 30m"), Ok(5_400_000));
        assert_eq!(secs("250ms"), Ok(250));
        assert_eq!(secs("45"), Ok(45_000));
        assert!(
            HumanDuration::parse("soon")
                .unwrap_err()
                .contains("`soon` is not a duration")
        );
        assert!(HumanDuration::parse("-5s").is_err());
    }

    #[test]
    fn durations_beyond_a_year_are_refused() {
        let limit = HumanDuration::parse("365d").unwrap();
        assert_eq!(limit.0, MAX_DURATION);
        assert_eq!(HumanDuration::parse("31536000"), Ok(limit));
        for text in [
            "10000000000000s",
            "366d",
            "31536001",
            "2y",
            "18446744073709551615",
        ] {
            let err = HumanDuration::parse(text).unwrap_err();
            assert!(err.contains("longer than 365 days"), "{text}: {err}");
        }
        assert!(HumanDuration::from_secs(u64::MAX).is_err());
        assert!(serde_json::from_str::<HumanDuration>("10000000000000").is_err());
        assert!(serde_json::from_str::<HumanDuration>("\"9999999999h\"").is_err());
        // humantime's own overflow is an error too, not a panic.
        assert!(HumanDuration::parse("99999999999999999999999s").is_err());
    }

    #[test]
    fn instant_after_saturates_instead_of_overflowing() {
        let now = Utc::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(60)),
            now + chrono::Duration::seconds(60)
        );
        assert_eq!(instant_after(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            instant_after(now, Duration::from_secs(10_000_000_000_000)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            instant_after(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn deserializes_numbers_and_strings() {
        let d: HumanDuration = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(120));
        let d: HumanDuration = serde_json::from_str("7").unwrap();
        assert_eq!(d.0, Duration::from_secs(7));
        assert!(serde_json::from_str::<HumanDuration>("-7").is_err());
    }
}
