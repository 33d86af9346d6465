//! The search filter of an experiment's tracking runs, a small grammar like MLflow's:
//!
//! ```text
//! filter     := condition ("and" condition)*
//! condition  := field operator value
//! field      := metric.KEY | param.KEY | tag.KEY | status | name
//!               (also metrics., params., tags., attributes.status, attributes.run_name;
//!                a KEY with spaces or operators in backticks: metric.`f1 score`)
//! operator   := = | != | < | <= | > | >=
//! value      := a number | 'text' | "text" | a word
//! ```
//!
//! Metrics compare as numbers with every operator; params, tags, status and name compare as
//! text with `=` and `!=` (as on MLflow). A run without the field never matches. Parsing is
//! pure; `to_mlflow` writes a parsed filter in MLflow's own syntax for its `runs/search`.

use super::{Comparison, Condition, FilterValue, RunField, RunOrder, TrackingStatus};

/// Why a filter or a sort field cannot be used, as a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

fn fail<T>(message: String) -> Result<T, FilterError> {
    Err(FilterError(message))
}

/// The conditions of a filter; an empty filter has none.
pub fn parse_filter(text: &str) -> Result<Vec<Condition>, FilterError> {
    let mut lexer = Lexer { text, at: 0 };
    let mut conditions = Vec::new();
    if text.trim().is_empty() {
        return Ok(conditions);
    }
    loop {
        conditions.push(lexer.condition()?);
        lexer.skip_space();
        if lexer.done() {
            return Ok(conditions);
        }
        let word = lexer.word();
        if word.eq_ignore_ascii_case("and") {
            continue;
        }
        if word.eq_ignore_ascii_case("or") {
            return fail(
                "only `and` joins conditions; run one search per alternative instead of `or`"
                    .into(),
            );
        }
        return fail(format!(
            "expected `and` or the end of the filter after the condition, found `{}`",
            lexer.rest_preview(word)
        ));
    }
}

/// A field to sort by: the fields of a filter, and `start_time`.
pub fn parse_field(text: &str) -> Result<RunField, FilterError> {
    let mut lexer = Lexer { text, at: 0 };
    let field = lexer.field()?;
    lexer.skip_space();
    if !lexer.done() {
        return fail(format!("`{}` is not one field", text.trim()));
    }
    Ok(field)
}

/// A field as the filter grammar writes it (`metric.exact_match`), for links and forms.
pub fn field_name(field: &RunField) -> String {
    let key = |prefix: &str, key: &str| {
        if key
            .chars()
            .all(|c| c.is_alphanumeric() || "_-./:".contains(c))
        {
            format!("{prefix}.{key}")
        } else {
            format!("{prefix}.`{key}`")
        }
    };
    match field {
        RunField::Metric(k) => key("metric", k),
        RunField::Param(k) => key("param", k),
        RunField::Tag(k) => key("tag", k),
        RunField::Status => "status".into(),
        RunField::Name => "name".into(),
        RunField::StartTime => "start_time".into(),
    }
}

/// MLflow's `runs/search` filter for the conditions (`None` when there are none).
pub fn to_mlflow(conditions: &[Condition]) -> Option<String> {
    if conditions.is_empty() {
        return None;
    }
    let parts: Vec<String> = conditions
        .iter()
        .map(|c| {
            let value = match &c.value {
                FilterValue::Number(n) => format!("{n}"),
                FilterValue::Text(text) if text.contains('\'') => format!("\"{text}\""),
                FilterValue::Text(text) => format!("'{text}'"),
            };
            format!("{} {} {value}", mlflow_field(&c.field), c.op.as_str())
        })
        .collect();
    Some(parts.join(" and "))
}

/// MLflow's `order_by` entry for a sort.
pub fn order_to_mlflow(order: &RunOrder) -> String {
    let direction = if order.descending { "DESC" } else { "ASC" };
    format!("{} {direction}", mlflow_field(&order.field))
}

fn mlflow_field(field: &RunField) -> String {
    match field {
        RunField::Metric(k) => format!("metrics.`{k}`"),
        RunField::Param(k) => format!("params.`{k}`"),
        RunField::Tag(k) => format!("tags.`{k}`"),
        RunField::Status => "attributes.status".into(),
        RunField::Name => "attributes.run_name".into(),
        RunField::StartTime => "attributes.start_time".into(),
    }
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn done(&self) -> bool {
        self.rest().is_empty()
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn rest_preview(&self, word: &str) -> String {
        format!("{word}{}", self.rest()).chars().take(40).collect()
    }

    /// Letters, digits and `_`, `-`, `.`, `/`, `:` up to the next space, operator or quote.
    fn word(&mut self) -> &'a str {
        self.skip_space();
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || "=!<>'\"`".contains(c))
            .unwrap_or(rest.len());
        self.at += end;
        &rest[..end]
    }

    fn field(&mut self) -> Result<RunField, FilterError> {
        self.skip_space();
        let rest = self.rest();
        let Some(dot) = rest.find('.').filter(|&dot| {
            !rest[..dot].contains(|c: char| c.is_whitespace() || "=!<>'\"`".contains(c))
        }) else {
            let word = self.word();
            return match word.to_ascii_lowercase().as_str() {
                "status" => Ok(RunField::Status),
                "name" | "run_name" => Ok(RunField::Name),
                "start_time" => Ok(RunField::StartTime),
                "" => fail(format!(
                    "expected a field such as `metric.accuracy` or `param.model`, found `{}`",
                    self.rest_preview("")
                )),
                other => fail(format!(
                    "`{other}` is not a field; write metric.NAME, param.NAME, tag.NAME, status \
                     or name"
                )),
            };
        };
        let prefix = rest[..dot].to_ascii_lowercase();
        self.at += dot + 1;
        let key = if self.rest().starts_with('`') {
            let inner = &self.rest()[1..];
            let Some(close) = inner.find('`') else {
                return fail("a key in backticks has no closing backtick".into());
            };
            let key = &inner[..close];
            self.at += close + 2;
            key
        } else {
            self.word()
        };
        if key.is_empty() {
            return fail(format!("`{prefix}.` needs a key after the dot"));
        }
        let key = key.to_owned();
        match prefix.as_str() {
            "metric" | "metrics" => Ok(RunField::Metric(key)),
            "param" | "params" => Ok(RunField::Param(key)),
            "tag" | "tags" => Ok(RunField::Tag(key)),
            "attribute" | "attributes" => match key.as_str() {
                "status" => Ok(RunField::Status),
                "run_name" | "name" => Ok(RunField::Name),
                "start_time" => Ok(RunField::StartTime),
                other => fail(format!(
                    "`attributes.{other}` is not searchable; use attributes.status or \
                     attributes.run_name"
                )),
            },
            other => fail(format!(
                "`{other}.{key}` is not a field; the prefixes are metric., param. and tag."
            )),
        }
    }

    fn operator(&mut self) -> Result<Comparison, FilterError> {
        self.skip_space();
        let rest = self.rest();
        let (op, len) = if rest.starts_with("!=") {
            (Comparison::Ne, 2)
        } else if rest.starts_with("<=") {
            (Comparison::Le, 2)
        } else if rest.starts_with(">=") {
            (Comparison::Ge, 2)
        } else if rest.starts_with("==") {
            (Comparison::Eq, 2)
        } else if rest.starts_with('=') {
            (Comparison::Eq, 1)
        } else if rest.starts_with('<') {
            (Comparison::Lt, 1)
        } else if rest.starts_with('>') {
            (Comparison::Gt, 1)
        } else {
            return fail(format!(
                "expected an operator (=, !=, <, <=, >, >=), found `{}`",
                self.rest_preview("")
            ));
        };
        self.at += len;
        Ok(op)
    }

    /// A quoted text, or a bare word (a number when it reads as one).
    fn value(&mut self) -> Result<(String, bool), FilterError> {
        self.skip_space();
        let rest = self.rest();
        if let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let inner = &rest[1..];
            let Some(close) = inner.find(quote) else {
                return fail(format!("the text {quote}… has no closing {quote}"));
            };
            self.at += close + 2;
            return Ok((inner[..close].to_owned(), true));
        }
        let word = self.word();
        if word.is_empty() {
            return fail("a condition ends without a value".into());
        }
        Ok((word.to_owned(), false))
    }

    fn condition(&mut self) -> Result<Condition, FilterError> {
        let field = self.field()?;
        let op = self.operator()?;
        let (text, quoted) = self.value()?;
        let name = field_name(&field);
        let value = match &field {
            RunField::Metric(_) | RunField::StartTime => match text.parse::<f64>() {
                Ok(n) if !quoted && n.is_finite() => FilterValue::Number(n),
                _ => {
                    return fail(format!("`{name}` compares with a number, not `{text}`"));
                }
            },
            _ => {
                if !matches!(op, Comparison::Eq | Comparison::Ne) {
                    return fail(format!(
                        "`{name}` is text: compare it with = or !=, not {}",
                        op.as_str()
                    ));
                }
                if field == RunField::Status {
                    let upper = text.to_ascii_uppercase();
                    if TrackingStatus::parse(&upper).is_none() || upper == "SCHEDULED" {
                        return fail(format!(
                            "`{text}` is not a status; use RUNNING, FINISHED, FAILED or KILLED"
                        ));
                    }
                    FilterValue::Text(upper)
                } else {
                    if text.contains('\'') && text.contains('"') {
                        return fail(format!(
                            "`{text}` has both kinds of quote; search for a part without one"
                        ));
                    }
                    FilterValue::Text(text)
                }
            }
        };
        Ok(Condition { field, op, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(key: &str, op: Comparison, n: f64) -> Condition {
        Condition {
            field: RunField::Metric(key.into()),
            op,
            value: FilterValue::Number(n),
        }
    }

    #[test]
    fn conditions_join_with_and_in_either_case_and_values_may_be_bare() {
        let parsed =
            parse_filter("metric.exact_match >= 0.8 and param.model = gpt AND tags.team != 'a b'")
                .expect("valid");
        assert_eq!(
            parsed,
            vec![
                metric("exact_match", Comparison::Ge, 0.8),
                Condition {
                    field: RunField::Param("model".into()),
                    op: Comparison::Eq,
                    value: FilterValue::Text("gpt".into()),
                },
                Condition {
                    field: RunField::Tag("team".into()),
                    op: Comparison::Ne,
                    value: FilterValue::Text("a b".into()),
                },
            ]
        );
        assert_eq!(
            parse_filter("metrics.`f1 score`<0.5").expect("valid"),
            vec![metric("f1 score", Comparison::Lt, 0.5)]
        );
        assert_eq!(parse_filter("  ").expect("empty"), vec![]);
        assert_eq!(
            parse_filter("status = finished").expect("valid")[0].value,
            FilterValue::Text("FINISHED".into())
        );
        assert_eq!(
            parse_filter("param.n = 200").expect("valid")[0].value,
            FilterValue::Text("200".into()),
            "a param compares as the text written"
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let cases = [
            ("metric.acc >= high", "compares with a number"),
            ("param.model > gpt", "compare it with = or !="),
            ("metric.acc = 1 or metric.acc = 2", "only `and`"),
            ("accuracy > 1", "is not a field"),
            ("metric.acc 1", "expected an operator"),
            ("metric.acc >=", "without a value"),
            ("status = done", "is not a status"),
            ("param.model = 'gpt", "no closing"),
            ("metric. > 1", "needs a key"),
            ("metric.a > 1 metric.b > 2", "expected `and`"),
            ("color.red = 1", "is not a field"),
        ];
        for (filter, expected) in cases {
            let error = parse_filter(filter).expect_err(filter);
            assert!(error.0.contains(expected), "{filter}: {error}");
        }
    }

    #[test]
    fn filters_and_sorts_read_as_mlflow_writes_them() {
        let parsed = parse_filter("metric.acc > 0.5 and param.model = gpt and status = FINISHED")
            .expect("valid");
        assert_eq!(
            to_mlflow(&parsed).as_deref(),
            Some(
                "metrics.`acc` > 0.5 and params.`model` = 'gpt' and attributes.status = 'FINISHED'"
            )
        );
        assert_eq!(to_mlflow(&[]), None);
        let order = RunOrder {
            field: parse_field("metric.acc").expect("field"),
            descending: true,
        };
        assert_eq!(order_to_mlflow(&order), "metrics.`acc` DESC");
        assert_eq!(
            field_name(&RunField::Metric("f1 score".into())),
            "metric.`f1 score`"
        );
        assert_eq!(parse_field("start_time"), Ok(RunField::StartTime));
        assert!(parse_field("metric.a b").is_err());
    }
}
