//! A columnar table, the kinds of its columns, and the row filters drift applies before
//! testing: the time window and seeded sampling.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use crate::rng::SeededRng;
use crate::{Error, Result};

/// What a column holds, which decides the tests that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    Numeric,
    Categorical,
    Text,
    Embedding,
}

impl ColumnKind {
    pub fn name(self) -> &'static str {
        match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Text => "text",
            ColumnKind::Embedding => "embedding",
        }
    }
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ColumnKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "numeric" => Ok(ColumnKind::Numeric),
            "categorical" => Ok(ColumnKind::Categorical),
            "text" => Ok(ColumnKind::Text),
            "embedding" => Ok(ColumnKind::Embedding),
            other => Err(Error::UnknownKind(other.to_string())),
        }
    }
}

/// Integer columns with at most this many distinct values are categorical when the kind is
/// inferred (Evidently's `INTEGER_CARDINALITY_LIMIT`).
pub const INTEGER_CARDINALITY_LIMIT: usize = 10;

/// One column's values as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers; NaN marks a missing value. `integer` is true when every value was written as
    /// an integer and none is missing, which is when pandas reads the column as int64.
    Numbers { values: Vec<f64>, integer: bool },
    /// Strings (also booleans, written `True`/`False` as pandas shows them); `None` is missing.
    Strings(Vec<Option<String>>),
    /// Arrays of numbers, one per row; `None` is missing.
    Arrays(Vec<Option<Vec<f64>>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Numbers { values, .. } => values.len(),
            Column::Strings(values) => values.len(),
            Column::Arrays(values) => values.len(),
        }
    }

    fn select(&self, rows: &[usize]) -> Column {
        match self {
            Column::Numbers { values, integer } => Column::Numbers {
                values: rows.iter().map(|&r| values[r]).collect(),
                integer: *integer,
            },
            Column::Strings(values) => {
                Column::Strings(rows.iter().map(|&r| values[r].clone()).collect())
            }
            Column::Arrays(values) => {
                Column::Arrays(rows.iter().map(|&r| values[r].clone()).collect())
            }
        }
    }

    /// The kind Evidently 0.7 infers for this column (`infer_column_type`), or `None` when
    /// the column is entirely missing.
    pub fn inferred_kind(&self) -> Option<ColumnKind> {
        match self {
            Column::Numbers { values, integer } => {
                if values.iter().all(|v| v.is_nan()) {
                    return None;
                }
                if *integer && distinct_numbers(values) <= INTEGER_CARDINALITY_LIMIT {
                    Some(ColumnKind::Categorical)
                } else {
                    Some(ColumnKind::Numeric)
                }
            }
            Column::Strings(values) => {
                let present: Vec<&str> = values.iter().flatten().map(String::as_str).collect();
                if present.is_empty() {
                    return None;
                }
                let distinct: HashSet<&str> = present.iter().copied().collect();
                // More distinct values than half the present ones reads as free text.
                if distinct.len() as f64 > present.len() as f64 * 0.5 {
                    Some(ColumnKind::Text)
                } else {
                    Some(ColumnKind::Categorical)
                }
            }
            Column::Arrays(_) => Some(ColumnKind::Embedding),
        }
    }
}

fn distinct_numbers(values: &[f64]) -> usize {
    values
        .iter()
        .filter(|v| !v.is_nan())
        .map(|v| canonical_bits(*v))
        .collect::<HashSet<u64>>()
        .len()
}

/// Bits that compare equal exactly when pandas treats two floats as the same value.
pub(crate) fn canonical_bits(value: f64) -> u64 {
    if value == 0.0 { 0 } else { value.to_bits() }
}

/// A table read from one source (the reference or the current data).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    source_name: String,
    rows: usize,
    names: Vec<String>,
    columns: Vec<Column>,
}

impl Table {
    /// Builds a table; every column must have `rows` values. `source_name` (`reference`,
    /// `current`) names the table in errors.
    pub fn new(source_name: &str, names: Vec<String>, columns: Vec<Column>) -> Result<Table> {
        let rows = columns.first().map_or(0, Column::len);
        if names.len() != columns.len() || columns.iter().any(|c| c.len() != rows) {
            return Err(Error::InvalidSetting(format!(
                "The {source_name} table's columns differ in length."
            )));
        }
        Ok(Table {
            source_name: source_name.to_string(),
            rows,
            names,
            columns,
        })
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn column_names(&self) -> &[String] {
        &self.names
    }

    pub fn column(&self, name: &str) -> Result<&Column> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
            .ok_or_else(|| Error::MissingColumn {
                column: name.to_string(),
                source_name: self.source_name.clone(),
            })
    }

    /// The present, finite values of a numeric column, in row order. Missing values and
    /// infinities are dropped, as Evidently drops them before testing.
    pub fn numbers(&self, name: &str) -> Result<Vec<f64>> {
        let values: Vec<f64> = match self.column(name)? {
            Column::Numbers { values, .. } => {
                values.iter().copied().filter(|v| v.is_finite()).collect()
            }
            Column::Strings(values) => {
                let mut numbers = Vec::with_capacity(values.len());
                for (row, value) in values.iter().enumerate() {
                    let Some(text) = value else { continue };
                    let number = parse_number(text).ok_or_else(|| Error::NotNumeric {
                        column: name.to_string(),
                        source_name: self.source_name.clone(),
                        row: row + 1,
                        value: text.clone(),
                    })?;
                    if number.is_finite() {
                        numbers.push(number);
                    }
                }
                numbers
            }
            Column::Arrays(_) => {
                return Err(Error::MethodNotForKind {
                    method: "a numeric test".to_string(),
                    kind: "embedding".to_string(),
                    column: name.to_string(),
                });
            }
        };
        self.non_empty(name, values)
    }

    /// The present values of a column as category labels, in row order.
    pub fn categories(&self, name: &str) -> Result<Vec<String>> {
        let values: Vec<String> = match self.column(name)? {
            Column::Numbers { values, .. } => values
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| number_label(*v))
                .collect(),
            Column::Strings(values) => values.iter().flatten().cloned().collect(),
            Column::Arrays(_) => {
                return Err(Error::MethodNotForKind {
                    method: "a categorical test".to_string(),
                    kind: "embedding".to_string(),
                    column: name.to_string(),
                });
            }
        };
        self.non_empty(name, values)
    }

    /// A text column's values, missing ones as `None` (their descriptors are zero, as
    /// Evidently computes them).
    pub fn texts(&self, name: &str) -> Result<Vec<Option<String>>> {
        let values = match self.column(name)? {
            Column::Strings(values) => values.clone(),
            Column::Numbers { values, .. } => values
                .iter()
                .map(|v| (!v.is_nan()).then(|| number_label(*v)))
                .collect(),
            Column::Arrays(_) => {
                return Err(Error::MethodNotForKind {
                    method: "a text test".to_string(),
                    kind: "embedding".to_string(),
                    column: name.to_string(),
                });
            }
        };
        self.non_empty(name, values)
    }

    /// An embedding column's present rows; every row must have the same width.
    pub fn embeddings(&self, name: &str) -> Result<Vec<Vec<f64>>> {
        let not_embedding = |row: usize| Error::NotEmbedding {
            column: name.to_string(),
            source_name: self.source_name.clone(),
            row: row + 1,
        };
        let values = match self.column(name)? {
            Column::Arrays(values) => values,
            // The first present value is the one that is not an array.
            Column::Numbers { values, .. } => {
                return Err(not_embedding(
                    values.iter().position(|v| !v.is_nan()).unwrap_or(0),
                ));
            }
            Column::Strings(values) => {
                return Err(not_embedding(
                    values.iter().position(Option::is_some).unwrap_or(0),
                ));
            }
        };
        let mut width = None;
        let mut rows = Vec::with_capacity(values.len());
        for (row, value) in values.iter().enumerate() {
            let Some(vector) = value else { continue };
            if vector.is_empty() {
                return Err(not_embedding(row));
            }
            let expected = *width.get_or_insert(vector.len());
            if vector.len() != expected {
                return Err(Error::EmbeddingWidth {
                    column: name.to_string(),
                    source_name: self.source_name.clone(),
                    row: row + 1,
                    expected,
                    found: vector.len(),
                });
            }
            rows.push(vector.clone());
        }
        self.non_empty(name, rows)
    }

    fn non_empty<T>(&self, name: &str, values: Vec<T>) -> Result<Vec<T>> {
        if values.is_empty() {
            Err(Error::EmptyColumn {
                column: name.to_string(),
                source_name: self.source_name.clone(),
            })
        } else {
            Ok(values)
        }
    }

    /// The rows whose timestamp in `column` falls in `(end - last, end]`. Rows without a
    /// timestamp are left out.
    pub fn window(&self, column: &str, end: DateTime<Utc>, last: TimeDelta) -> Result<Table> {
        let start = end.checked_sub_signed(last).ok_or_else(|| {
            Error::InvalidSetting(format!(
                "The window of {} seconds before {end} reaches outside the supported dates.",
                last.num_seconds()
            ))
        })?;
        if last <= TimeDelta::zero() {
            return Err(Error::InvalidSetting(
                "The window's `last` must be a positive duration.".to_string(),
            ));
        }
        let stamps = self.timestamps(column)?;
        let rows: Vec<usize> = stamps
            .iter()
            .enumerate()
            .filter(|(_, stamp)| stamp.is_some_and(|t| t > start && t <= end))
            .map(|(row, _)| row)
            .collect();
        Ok(self.select(&rows))
    }

    fn timestamps(&self, name: &str) -> Result<Vec<Option<DateTime<Utc>>>> {
        let not_timestamp = |row: usize, value: String| Error::NotTimestamp {
            column: name.to_string(),
            source_name: self.source_name.clone(),
            row: row + 1,
            value,
        };
        match self.column(name)? {
            Column::Numbers { values, .. } => values
                .iter()
                .enumerate()
                .map(|(row, &seconds)| {
                    if seconds.is_nan() {
                        return Ok(None);
                    }
                    epoch_seconds(seconds)
                        .map(Some)
                        .ok_or_else(|| not_timestamp(row, seconds.to_string()))
                })
                .collect(),
            Column::Strings(values) => values
                .iter()
                .enumerate()
                .map(|(row, value)| match value {
                    None => Ok(None),
                    Some(text) => parse_timestamp(text)
                        .map(Some)
                        .ok_or_else(|| not_timestamp(row, text.clone())),
                })
                .collect(),
            Column::Arrays(_) => Err(not_timestamp(0, "an array".to_string())),
        }
    }

    /// At most `max_rows` rows chosen uniformly with `seed`, in their original order. A table
    /// that already fits is returned whole.
    pub fn sample(&self, max_rows: usize, seed: u64) -> Table {
        if self.rows <= max_rows {
            return self.clone();
        }
        let rows = SeededRng::new(seed).sample_indices(self.rows, max_rows);
        self.select(&rows)
    }

    fn select(&self, rows: &[usize]) -> Table {
        Table {
            source_name: self.source_name.clone(),
            rows: rows.len(),
            names: self.names.clone(),
            columns: self.columns.iter().map(|c| c.select(rows)).collect(),
        }
    }
}

/// Parses a number the way pandas reads one from text; missing-value markers are not numbers
/// here (the readers turn them into missing values first).
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    if let Some(number) = parse_short_decimal(text) {
        return Some(number);
    }
    // Rust's parser reads every other number, and `inf`/`infinity`, as pandas does.
    if let Ok(number) = text.parse::<f64>() {
        return (!number.is_nan()).then_some(number);
    }
    let trimmed = text.trim();
    match trimmed {
        "inf" | "+inf" | "Infinity" | "+Infinity" => Some(f64::INFINITY),
        "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        _ if trimmed.eq_ignore_ascii_case("nan") => None,
        _ => trimmed.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

/// Exact powers of ten up to 10^15 (every one is a float exactly).
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Reads `[-+]digits[.digits]` with at most 15 digits in all, the shape nearly every number in
/// a data file has, without the general parser. Exact: the digits form an integer below 2^53
/// and the divisor is an exact power of ten, so the one division rounds correctly (Clinger's
/// fast path). Anything else returns `None` for the general parser.
fn parse_short_decimal(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.first()? {
        b'-' => (true, &bytes[1..]),
        b'+' => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut mantissa: u64 = 0;
    let mut count = 0usize;
    let mut fraction_digits = 0usize;
    let mut seen_point = false;
    let mut seen_digit = false;
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                count += 1;
                seen_digit = true;
                if seen_point {
                    fraction_digits += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return None,
        }
        if count > 15 {
            return None;
        }
    }
    if !seen_digit {
        return None;
    }
    let value = mantissa as f64 / POWERS_OF_TEN[fraction_digits];
    Some(if negative { -value } else { value })
}

/// A label for a number used as a category: integers without a fraction, others in full.
pub(crate) fn number_label(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:?}")
    }
}

fn epoch_seconds(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() || seconds.abs() > 1.0e13 {
        return None;
    }
    let whole = seconds.floor();
    let nanos = ((seconds - whole) * 1e9).round().min(999_999_999.0) as u32;
    DateTime::from_timestamp(whole as i64, nanos)
}

/// RFC 3339 (`2026-12-06T10:00:00Z`), or a zone-less `YYYY-MM-DD[ T]HH:MM:SS[.f]` read as UTC,
/// or seconds since 1970.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(stamp) = DateTime::parse_from_rfc3339(text) {
        return Some(stamp.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    text.parse::<f64>().ok().and_then(epoch_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: Vec<(&str, Column)>) -> Table {
        let (names, columns): (Vec<_>, Vec<_>) =
            columns.into_iter().map(|(n, c)| (n.to_string(), c)).unzip();
        Table::new("current", names, columns).unwrap()
    }

    #[test]
    fn short_decimals_parse_exactly_as_the_general_parser_does() {
        let mut rng = SeededRng::new(5);
        for _ in 0..100_000 {
            let value = rng.normal() * 10f64.powi(rng.below(12) as i32 - 4);
            for decimals in [0, 1, 3, 6, 9] {
                let text = format!("{value:.decimals$}");
                assert_eq!(parse_number(&text), text.parse::<f64>().ok(), "{text}");
            }
        }
        for text in [
            "1.",
            ".5",
            "-0",
            "+7.25",
            "123456789012345",
            "0.000000000000001",
        ] {
            assert_eq!(parse_number(text), text.parse::<f64>().ok(), "{text}");
        }
        for text in ["1e5", "1234567890123456", "1.2.3", "-", ".", "1,5", "0x10"] {
            assert_eq!(parse_short_decimal(text), None, "{text}");
        }
        assert_eq!(parse_number("1e5"), Some(100000.0));
        assert_eq!(parse_number("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_number("nan"), None);
    }

    #[test]
    fn kinds_are_inferred_as_evidently_infers_them() {
        let floats = Column::Numbers {
            values: vec![1.0, 2.0, 1.0],
            integer: false,
        };
        let few_integers = Column::Numbers {
            values: vec![1.0, 2.0, 1.0],
            integer: true,
        };
        let many_integers = Column::Numbers {
            values: (0..11).map(f64::from).collect(),
            integer: true,
        };
        // Two distinct values among four are not more than half: categories.
        let labels = Column::Strings(vec![
            Some("a".into()),
            Some("a".into()),
            Some("a".into()),
            Some("b".into()),
        ]);
        let prose = Column::Strings(vec![Some("a b".into()), Some("c d".into()), None]);
        assert_eq!(floats.inferred_kind(), Some(ColumnKind::Numeric));
        assert_eq!(few_integers.inferred_kind(), Some(ColumnKind::Categorical));
        assert_eq!(many_integers.inferred_kind(), Some(ColumnKind::Numeric));
        assert_eq!(labels.inferred_kind(), Some(ColumnKind::Categorical));
        assert_eq!(prose.inferred_kind(), Some(ColumnKind::Text));
    }

    #[test]
    fn a_word_in_a_numeric_column_is_reported_with_its_row() {
        let t = table(vec![(
            "latency",
            Column::Strings(vec![Some("1.5".into()), None, Some("fast".into())]),
        )]);
        assert_eq!(
            t.numbers("latency"),
            Err(Error::NotNumeric {
                column: "latency".into(),
                source_name: "current".into(),
                row: 3,
                value: "fast".into(),
            })
        );
        assert!(matches!(
            t.numbers("missing"),
            Err(Error::MissingColumn { .. })
        ));
    }

    #[test]
    fn embeddings_must_be_arrays_of_one_width() {
        let t = table(vec![
            (
                "e",
                Column::Arrays(vec![Some(vec![1.0, 2.0]), None, Some(vec![1.0])]),
            ),
            ("s", Column::Strings(vec![None, Some("x".into()), None])),
        ]);
        assert_eq!(
            t.embeddings("e"),
            Err(Error::EmbeddingWidth {
                column: "e".into(),
                source_name: "current".into(),
                row: 3,
                expected: 2,
                found: 1,
            })
        );
        assert_eq!(
            t.embeddings("s"),
            Err(Error::NotEmbedding {
                column: "s".into(),
                source_name: "current".into(),
                row: 2,
            })
        );
    }

    #[test]
    fn the_window_keeps_rows_after_its_start_up_to_and_including_its_end() {
        let t = table(vec![
            (
                "ts",
                Column::Strings(vec![
                    Some("2026-12-05T10:00:00Z".into()),
                    Some("2026-12-05T10:00:01Z".into()),
                    Some("2026-12-06 10:00:00".into()),
                    Some("2026-12-06T10:00:01Z".into()),
                    None,
                ]),
            ),
            (
                "x",
                Column::Numbers {
                    values: vec![1.0, 2.0, 3.0, 4.0, 5.0],
                    integer: true,
                },
            ),
        ]);
        let end = parse_timestamp("2026-12-06T10:00:00Z").unwrap();
        let kept = t.window("ts", end, TimeDelta::hours(24)).unwrap();
        assert_eq!(kept.numbers("x").unwrap(), vec![2.0, 3.0]);
        assert!(matches!(
            t.window("ts", end, TimeDelta::MAX),
            Err(Error::InvalidSetting(_))
        ));
    }

    #[test]
    fn sampling_is_seeded_and_keeps_row_order() {
        let t = table(vec![(
            "x",
            Column::Numbers {
                values: (0..100).map(f64::from).collect(),
                integer: true,
            },
        )]);
        let a = t.sample(10, 3).numbers("x").unwrap();
        assert_eq!(a, t.sample(10, 3).numbers("x").unwrap());
        assert_ne!(a, t.sample(10, 4).numbers("x").unwrap());
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(t.sample(1000, 3).rows(), 100);
    }
}
