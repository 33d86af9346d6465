//! Readers of CSV and JSONL into a [`Table`], over any `std::io::Read` the caller opens.
//!
//! Values are read the way pandas reads them, because Evidently's column kinds and its
//! handling of missing values follow pandas: an empty cell and pandas' missing-value markers
//! (`NA`, `NaN`, `null`, …) are missing; a column whose every cell is an integer literal and
//! none is missing is an integer column.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use serde_json::Value;

use crate::table::{Column, Table, parse_number};
use crate::{Error, Result};

/// pandas' default missing-value markers (`pandas._libs.parsers.STR_NA_VALUES`).
const MISSING_MARKERS: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

fn is_missing(cell: &str) -> bool {
    MISSING_MARKERS.contains(&cell)
}

fn read_all(mut input: impl Read, source_name: &str) -> Result<String> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| Error::Read {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    // A UTF-8 byte-order mark is not part of the first column's name.
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| Error::Read {
        source_name: source_name.to_string(),
        message: format!(
            "it is not UTF-8 text (at byte {}).",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// Reads CSV (RFC 4180: a header line, `,` separators, `"` quotes with `""` inside) into a
/// table. `source_name` names the data in errors.
pub fn read_csv(input: impl Read, source_name: &str) -> Result<Table> {
    let text = read_all(input, source_name)?;
    parse_csv(&text, source_name)
}

// The parsers are not generic over the reader, so they are compiled (and optimised) in this
// crate once, not again in each caller's crate with the caller's settings: a dev build of a
// caller would otherwise parse at opt-level 0.
fn parse_csv(text: &str, source_name: &str) -> Result<Table> {
    let mut records = Records::new(text, source_name);
    let mut header = Vec::new();
    if records.next_record(&mut header)?.is_none() {
        return Err(Error::EmptyData {
            source_name: source_name.to_string(),
        });
    }
    let names: Vec<String> = header.iter().map(|c| c.trim().to_string()).collect();
    let mut seen = HashMap::new();
    for name in &names {
        if seen.insert(name.as_str(), ()).is_some() {
            return Err(Error::Malformed {
                source_name: source_name.to_string(),
                line: 1,
                message: format!("the column name `{name}` appears twice in the header."),
            });
        }
    }
    let width = names.len();
    // Newlines bound the row count (quoted ones only overestimate): reserving once avoids
    // copying every column again and again as it grows.
    let row_bound = text.bytes().filter(|b| *b == b'\n').count() + 1;
    let mut builders: Vec<CsvColumn> = (0..width).map(|_| CsvColumn::new(row_bound)).collect();
    let mut rows = 0;
    let mut cells = Vec::with_capacity(width);
    while let Some(line) = records.next_record(&mut cells)? {
        if cells.len() > width {
            return Err(Error::Malformed {
                source_name: source_name.to_string(),
                line,
                message: format!(
                    "the row has {} cells but the header names {width} columns.",
                    cells.len()
                ),
            });
        }
        for (index, builder) in builders.iter_mut().enumerate() {
            builder.push(cells.get(index).map_or("", |c| c.as_ref()), rows);
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(Error::EmptyData {
            source_name: source_name.to_string(),
        });
    }
    // A column that turned out not to be numeric needs the text of the rows read while it
    // still looked numeric; read those cells again rather than keep every cell's text.
    let needs_text: Vec<usize> = builders
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.text_from_row().filter(|&r| r > 0).map(|_| i))
        .collect();
    if !needs_text.is_empty() {
        let mut again = Records::new(text, source_name);
        again.next_record(&mut cells)?;
        let mut row = 0;
        while again.next_record(&mut cells)?.is_some() {
            for &index in &needs_text {
                let builder = &mut builders[index];
                if builder.text_from_row().is_some_and(|from| row < from) {
                    let cell = cells.get(index).map_or("", |c| c.as_ref());
                    builder.set_text(row, cell);
                }
            }
            row += 1;
        }
    }
    let columns = builders.into_iter().map(CsvColumn::finish).collect();
    Table::new(source_name, names, columns)
}

/// One CSV column while it is read: numbers as long as every cell is one, then text.
enum CsvColumn {
    Numbers {
        values: Vec<f64>,
        integer: bool,
    },
    Strings {
        values: Vec<Option<String>>,
        /// Rows before this one were read as numbers and still need their text.
        text_from_row: usize,
    },
}

impl CsvColumn {
    fn new(row_bound: usize) -> Self {
        CsvColumn::Numbers {
            values: Vec::with_capacity(row_bound),
            integer: true,
        }
    }

    fn push(&mut self, cell: &str, row: usize) {
        match self {
            CsvColumn::Numbers { values, integer } => {
                // Numbers first: almost every cell of a numeric column is one, and no
                // missing-value marker parses as a number other than NaN.
                if let Some(number) = parse_number(cell) {
                    values.push(number);
                    *integer = *integer && is_integer_literal(cell);
                } else if is_missing(cell) {
                    values.push(f64::NAN);
                    *integer = false;
                } else {
                    let mut texts = vec![None; row];
                    texts.push(Some(cell.to_string()));
                    *self = CsvColumn::Strings {
                        values: texts,
                        text_from_row: row,
                    };
                }
            }
            CsvColumn::Strings { values, .. } => {
                values.push((!is_missing(cell)).then(|| cell.to_string()));
            }
        }
    }

    fn text_from_row(&self) -> Option<usize> {
        match self {
            CsvColumn::Numbers { .. } => None,
            CsvColumn::Strings { text_from_row, .. } => Some(*text_from_row),
        }
    }

    fn set_text(&mut self, row: usize, cell: &str) {
        if let CsvColumn::Strings { values, .. } = self {
            values[row] = (!is_missing(cell)).then(|| cell.to_string());
        }
    }

    fn finish(self) -> Column {
        match self {
            CsvColumn::Numbers { values, integer } => Column::Numbers { values, integer },
            CsvColumn::Strings { values, .. } => Column::Strings(values),
        }
    }
}

fn is_integer_literal(cell: &str) -> bool {
    let digits = cell.trim().trim_start_matches(['+', '-']);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Splits CSV text into records, keeping track of line numbers for errors.
struct Records<'a> {
    text: &'a str,
    position: usize,
    line: usize,
    source_name: &'a str,
}

impl<'a> Records<'a> {
    fn new(text: &'a str, source_name: &'a str) -> Self {
        Records {
            text,
            position: 0,
            line: 1,
            source_name,
        }
    }

    /// Reads the next non-blank record into `cells` (reused, so rows cost no allocation) and
    /// returns the line it starts on.
    fn next_record(&mut self, cells: &mut Vec<Cow<'a, str>>) -> Result<Option<usize>> {
        cells.clear();
        let bytes = self.text.as_bytes();
        // Blank lines are skipped, as pandas skips them.
        while self.position < bytes.len()
            && (bytes[self.position] == b'\n' || bytes[self.position] == b'\r')
        {
            if bytes[self.position] == b'\n' {
                self.line += 1;
            }
            self.position += 1;
        }
        if self.position >= bytes.len() {
            return Ok(None);
        }
        let start_line = self.line;
        loop {
            let (cell, ended_record) = self.next_cell(start_line)?;
            cells.push(cell);
            if ended_record {
                return Ok(Some(start_line));
            }
        }
    }

    /// Reads one cell; says whether the record ended after it.
    fn next_cell(&mut self, start_line: usize) -> Result<(Cow<'a, str>, bool)> {
        let bytes = self.text.as_bytes();
        if bytes.get(self.position) == Some(&b'"') {
            let mut value = String::new();
            let mut from = self.position + 1;
            let mut at = from;
            loop {
                match bytes.get(at) {
                    None => {
                        return Err(Error::Malformed {
                            source_name: self.source_name.to_string(),
                            line: start_line,
                            message: "a quoted cell is never closed.".to_string(),
                        });
                    }
                    Some(b'"') if bytes.get(at + 1) == Some(&b'"') => {
                        value.push_str(&self.text[from..=at]);
                        at += 2;
                        from = at;
                    }
                    Some(b'"') => {
                        value.push_str(&self.text[from..at]);
                        at += 1;
                        break;
                    }
                    Some(b'\n') => {
                        self.line += 1;
                        at += 1;
                    }
                    Some(_) => at += 1,
                }
            }
            self.position = at;
            let ended = self.end_of_cell(start_line)?;
            Ok((Cow::Owned(value), ended))
        } else {
            let from = self.position;
            let rest = &bytes[from..];
            let length = rest
                .iter()
                .position(|&b| b == b',' || b == b'\n')
                .unwrap_or(rest.len());
            let mut cell = &self.text[from..from + length];
            self.position = from + length;
            if let Some(stripped) = cell.strip_suffix('\r') {
                cell = stripped;
            }
            let ended = self.end_of_cell(start_line)?;
            Ok((Cow::Borrowed(cell), ended))
        }
    }

    /// Consumes the separator after a cell; true at the end of a record.
    fn end_of_cell(&mut self, start_line: usize) -> Result<bool> {
        let bytes = self.text.as_bytes();
        match bytes.get(self.position) {
            None => Ok(true),
            Some(b',') => {
                self.position += 1;
                Ok(false)
            }
            Some(b'\n') => {
                self.position += 1;
                self.line += 1;
                Ok(true)
            }
            Some(b'\r') if bytes.get(self.position + 1) == Some(&b'\n') => {
                self.position += 2;
                self.line += 1;
                Ok(true)
            }
            Some(_) => Err(Error::Malformed {
                source_name: self.source_name.to_string(),
                line: start_line,
                message: "a quoted cell is followed by text before the next separator.".to_string(),
            }),
        }
    }
}

/// Reads JSON Lines (one JSON object per line; blank lines skipped) into a table. Columns
/// appear in the order their keys are first seen; a key absent from a line is missing there.
/// Numbers make numeric columns, strings and booleans string columns, arrays of numbers
/// embedding columns, and `null` a missing value.
pub fn read_jsonl(input: impl Read, source_name: &str) -> Result<Table> {
    let text = read_all(input, source_name)?;
    parse_jsonl(&text, source_name)
}

fn parse_jsonl(text: &str, source_name: &str) -> Result<Table> {
    let mut names: Vec<String> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let mut builders: Vec<JsonColumn> = Vec::new();
    let mut rows = 0;
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |message: String| Error::Malformed {
            source_name: source_name.to_string(),
            line: line_index + 1,
            message,
        };
        let object = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(malformed("the line is not a JSON object.".to_string())),
            Err(e) => return Err(malformed(format!("{e}."))),
        };
        for (key, value) in object {
            let index = *index_of.entry(key.clone()).or_insert_with(|| {
                names.push(key);
                builders.push(JsonColumn::Missing(0));
                builders.len() - 1
            });
            builders[index].push(value, rows);
        }
        rows += 1;
        for builder in &mut builders {
            builder.fill_to(rows);
        }
    }
    if rows == 0 {
        return Err(Error::EmptyData {
            source_name: source_name.to_string(),
        });
    }
    let columns = builders.into_iter().map(JsonColumn::finish).collect();
    Table::new(source_name, names, columns)
}

/// One JSONL column while it is read; it settles on the kind of its first present value and
/// falls back to strings when later values disagree.
enum JsonColumn {
    Missing(usize),
    Numbers { values: Vec<f64>, integer: bool },
    Strings(Vec<Option<String>>),
    Arrays(Vec<Option<Vec<f64>>>),
}

impl JsonColumn {
    fn len(&self) -> usize {
        match self {
            JsonColumn::Missing(count) => *count,
            JsonColumn::Numbers { values, .. } => values.len(),
            JsonColumn::Strings(values) => values.len(),
            JsonColumn::Arrays(values) => values.len(),
        }
    }

    /// Pads with missing values so the column has `rows` values.
    fn fill_to(&mut self, rows: usize) {
        while self.len() < rows {
            self.push_missing();
        }
    }

    fn push_missing(&mut self) {
        match self {
            JsonColumn::Missing(count) => *count += 1,
            JsonColumn::Numbers { values, integer } => {
                values.push(f64::NAN);
                *integer = false;
            }
            JsonColumn::Strings(values) => values.push(None),
            JsonColumn::Arrays(values) => values.push(None),
        }
    }

    fn push(&mut self, value: Value, row: usize) {
        self.fill_to(row);
        if value.is_null() {
            self.push_missing();
            return;
        }
        if let JsonColumn::Missing(count) = self {
            let count = *count;
            *self = match &value {
                Value::Number(_) => JsonColumn::Numbers {
                    values: vec![f64::NAN; count],
                    integer: count == 0,
                },
                Value::Array(_) if as_vector(&value).is_some() => {
                    JsonColumn::Arrays(vec![None; count])
                }
                _ => JsonColumn::Strings(vec![None; count]),
            };
        }
        match (&mut *self, &value) {
            (JsonColumn::Numbers { values, integer }, Value::Number(number)) => {
                *integer = *integer && (number.is_i64() || number.is_u64());
                values.push(number.as_f64().unwrap_or(f64::NAN));
            }
            (JsonColumn::Arrays(values), Value::Array(_)) if as_vector(&value).is_some() => {
                values.push(as_vector(&value));
            }
            (JsonColumn::Strings(values), _) => values.push(Some(json_label(&value))),
            _ => {
                // Kinds disagree: keep everything as text, as pandas keeps an object column.
                let mut texts = self.labels();
                texts.push(Some(json_label(&value)));
                *self = JsonColumn::Strings(texts);
            }
        }
    }

    fn labels(&self) -> Vec<Option<String>> {
        match self {
            JsonColumn::Missing(count) => vec![None; *count],
            JsonColumn::Numbers { values, .. } => values
                .iter()
                .map(|v| (!v.is_nan()).then(|| crate::table::number_label(*v)))
                .collect(),
            JsonColumn::Strings(values) => values.clone(),
            JsonColumn::Arrays(values) => values
                .iter()
                .map(|v| v.as_ref().map(|v| format!("{v:?}")))
                .collect(),
        }
    }

    fn finish(self) -> Column {
        match self {
            JsonColumn::Missing(count) => Column::Strings(vec![None; count]),
            JsonColumn::Numbers { values, integer } => Column::Numbers { values, integer },
            JsonColumn::Strings(values) => Column::Strings(values),
            JsonColumn::Arrays(values) => Column::Arrays(values),
        }
    }
}

fn as_vector(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(Value::as_f64).collect()
}

fn json_label(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(number) => number
            .as_f64()
            .map_or_else(|| number.to_string(), crate::table::number_label),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_read_as_pandas_reads_them() {
        let csv =
            "a,b,c,d\r\n1,x,1.5,\"he said \"\"hi\"\", twice\"\n2,NA,2,\n\n3,z,nan,\"two\nlines\"\n";
        let table = read_csv(csv.as_bytes(), "reference").unwrap();
        assert_eq!(table.rows(), 3);
        assert_eq!(
            table.column("a").unwrap(),
            &Column::Numbers {
                values: vec![1.0, 2.0, 3.0],
                integer: true
            }
        );
        assert_eq!(
            table.column("b").unwrap(),
            &Column::Strings(vec![Some("x".into()), None, Some("z".into())])
        );
        assert_eq!(table.numbers("c").unwrap(), vec![1.5, 2.0]);
        assert_eq!(
            table.column("d").unwrap(),
            &Column::Strings(vec![
                Some("he said \"hi\", twice".into()),
                None,
                Some("two\nlines".into())
            ])
        );
    }

    #[test]
    fn a_csv_column_that_turns_to_text_keeps_its_earlier_cells() {
        let csv = "id,label\n1,10\n2,20\n3,high\n";
        let table = read_csv(csv.as_bytes(), "current").unwrap();
        assert_eq!(
            table.column("label").unwrap(),
            &Column::Strings(vec![
                Some("10".into()),
                Some("20".into()),
                Some("high".into())
            ])
        );
    }

    #[test]
    fn bad_csv_gets_a_clear_error() {
        assert_eq!(
            read_csv("a,b\n".as_bytes(), "current"),
            Err(Error::EmptyData {
                source_name: "current".into()
            })
        );
        assert!(matches!(
            read_csv("a,b\n1,2,3\n".as_bytes(), "current"),
            Err(Error::Malformed { line: 2, .. })
        ));
        assert!(matches!(
            read_csv("a\n\"open\n".as_bytes(), "current"),
            Err(Error::Malformed { line: 2, .. })
        ));
        assert!(matches!(
            read_csv(&[0xff, 0xfe][..], "current"),
            Err(Error::Read { .. })
        ));
    }

    #[test]
    fn jsonl_values_make_columns_of_their_kind() {
        let jsonl = r#"{"x": 1, "t": "a", "e": [1, 2.5]}

{"x": 2.5, "e": null, "flag": true}
{"x": null, "t": "b", "e": [0, 1]}
"#;
        let table = read_jsonl(jsonl.as_bytes(), "current").unwrap();
        assert_eq!(table.rows(), 3);
        assert_eq!(table.numbers("x").unwrap(), vec![1.0, 2.5]);
        assert_eq!(
            table.column("t").unwrap(),
            &Column::Strings(vec![Some("a".into()), None, Some("b".into())])
        );
        assert_eq!(
            table.embeddings("e").unwrap(),
            vec![vec![1.0, 2.5], vec![0.0, 1.0]]
        );
        assert_eq!(
            table.column("flag").unwrap(),
            &Column::Strings(vec![None, Some("True".into()), None])
        );
        assert!(matches!(
            read_jsonl("{\"x\": 1}\n[1]\n".as_bytes(), "current"),
            Err(Error::Malformed { line: 2, .. })
        ));
    }
}
