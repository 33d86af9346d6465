//! Durations as people write them in workflow files: `30s`, `10m`, `1h 30m`, `500ms`, or a
//! whole number of seconds.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration read from a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `30s`, `10m`, `1h 30m`, `250ms` or a bare number of seconds.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(seconds)));
        }
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| {
                format!("`{text}` is not a duration ({e}); write it like `30s`, `10m` or `1h 30m`")
            })
    }
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
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| HumanDuration(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
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
    fn deserializes_numbers_and_strings() {
        let d: HumanDuration = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(120));
        let d: HumanDuration = serde_json::from_str("7").unwrap();
        assert_eq!(d.0, Duration::from_secs(7));
        assert!(serde_json::from_str::<HumanDuration>("-7").is_err());
    }
}
