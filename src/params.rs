//! Typed run parameters: their declarations in a workflow file and the checking of a run's
//! values against them (defaults, types, enums, bounds).

use std::fmt;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The type of a run parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

/// The declaration of one run parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    /// The parameter's type; values are checked against it before a run starts.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value used when a run does not set the parameter. Without one, it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The allowed values.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// The smallest allowed value (integer and number parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// The largest allowed value (integer and number parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// What the parameter means; shown in the trigger form and `sluice schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A run parameter value that does not fit its declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    pub param: String,
    /// A sentence saying what is wrong.
    pub message: String,
}

impl ParamProblem {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        ParamProblem {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "param `{}`: {}", self.param, self.message)
    }
}

impl std::error::Error for ParamProblem {}

impl ParamType {
    /// The type as written in workflow files.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean",
            ParamType::Array => "an array",
            ParamType::Object => "an object",
        }
    }
}

/// Checks one value against its declaration: type (an integer must be a whole number), enum
/// membership, and minimum/maximum. The error is a sentence without the parameter's name.
pub fn check_value(decl: &ParamDecl, value: &Value) -> Result<(), String> {
    let type_ok = match decl.kind {
        ParamType::String => value.is_string(),
        ParamType::Integer => as_whole_number(value).is_some(),
        ParamType::Number => value.is_number(),
        ParamType::Boolean => value.is_boolean(),
        ParamType::Array => value.is_array(),
        ParamType::Object => value.is_object(),
    };
    if !type_ok {
        return Err(format!(
            "expected {}, got {}",
            decl.kind.with_article(),
            describe(value)
        ));
    }
    if let Some(allowed) = &decl.allowed
        && !allowed.iter().any(|a| same_value(a, value))
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!(
            "{} is not one of the allowed values: {}",
            value,
            list.join(", ")
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = decl.minimum
            && n < min
        {
            return Err(format!("must be at least {min}, got {value}"));
        }
        if let Some(max) = decl.maximum
            && n > max
        {
            return Err(format!("must be at most {max}, got {value}"));
        }
    }
    Ok(())
}

/// Checks a run's parameter values against the declarations and fills in defaults.
///
/// The result holds every declared parameter, in declaration order. Every problem is reported
/// at once: unknown names (with a "did you mean"), values that do not fit, and required
/// parameters (those without a default) that were not given.
pub fn resolve(
    decls: &IndexMap<String, ParamDecl>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<ParamProblem>> {
    let mut problems = Vec::new();
    for name in given.keys() {
        if !decls.contains_key(name) {
            problems.push(ParamProblem::new(name, unknown_message(name, decls)));
        }
    }
    let mut resolved = Map::with_capacity(decls.len());
    for (name, decl) in decls {
        let (value, origin) = match (given.get(name), &decl.default) {
            (Some(value), _) => (value, "value"),
            (None, Some(default)) => (default, "default"),
            (None, None) => {
                problems.push(ParamProblem::new(
                    name,
                    format!("is required (it has no default); pass it with `-p {name}=…`"),
                ));
                continue;
            }
        };
        match check_value(decl, value) {
            Ok(()) => {
                resolved.insert(name.clone(), normalize(decl, value));
            }
            Err(message) if origin == "default" => problems.push(ParamProblem::new(
                name,
                format!("the default is invalid: {message}"),
            )),
            Err(message) => problems.push(ParamProblem::new(name, message)),
        }
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// Parses `-p KEY=VALUE` pairs from the command line by each parameter's declared type:
/// strings as they are, integers, numbers, booleans (`true`/`false`), arrays and objects as
/// JSON. Only parses: pass the result to [`resolve`] for bounds, enums and defaults.
pub fn parse_cli(
    decls: &IndexMap<String, ParamDecl>,
    pairs: &[(String, String)],
) -> Result<Map<String, Value>, Vec<ParamProblem>> {
    let mut problems = Vec::new();
    let mut parsed = Map::with_capacity(pairs.len());
    for (name, raw) in pairs {
        let Some(decl) = decls.get(name) else {
            problems.push(ParamProblem::new(name, unknown_message(name, decls)));
            continue;
        };
        if parsed.contains_key(name) {
            problems.push(ParamProblem::new(name, "is given more than once"));
            continue;
        }
        match parse_raw(decl.kind, raw) {
            Ok(value) => {
                parsed.insert(name.clone(), value);
            }
            Err(message) => problems.push(ParamProblem::new(name, message)),
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// Splits one `KEY=VALUE` command-line argument at its first `=`. The value may be empty and
/// may itself contain `=`.
pub fn split_cli_pair(raw: &str) -> Result<(String, String), String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(format!(
            "`{raw}` is not KEY=VALUE; write it like `-p model=gpt-4o-mini`"
        ));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!(
            "`{raw}` has no name before `=`; write it like `-p model=gpt-4o-mini`"
        ));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!("the parameter name `{key}` contains whitespace"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_raw(kind: ParamType, raw: &str) -> Result<Value, String> {
    let text = raw.trim();
    match kind {
        ParamType::String => Ok(Value::String(raw.to_owned())),
        ParamType::Integer => {
            if let Ok(n) = text.parse::<i64>() {
                Ok(Value::from(n))
            } else if let Ok(n) = text.parse::<u64>() {
                Ok(Value::from(n))
            } else {
                Err(format!("`{raw}` is not an integer"))
            }
        }
        ParamType::Number => {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Value::from(n));
            }
            text.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("`{raw}` is not a number"))
        }
        ParamType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{raw}` is not a boolean; write `true` or `false`")),
        },
        ParamType::Array | ParamType::Object => {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| format!("`{raw}` is not valid JSON ({e})"))?;
            let fits = if kind == ParamType::Array {
                value.is_array()
            } else {
                value.is_object()
            };
            if fits {
                Ok(value)
            } else {
                Err(format!(
                    "expected {} in JSON, got {}",
                    kind.with_article(),
                    describe(&value)
                ))
            }
        }
    }
}

/// The value as a whole number, when it is one (`3` and `3.0` are; `3.5` is not).
fn as_whole_number(value: &Value) -> Option<Value> {
    let n = value.as_number()?;
    if n.is_i64() || n.is_u64() {
        return Some(value.clone());
    }
    let f = n.as_f64()?;
    // The bounds keep the cast exact; whole floats outside them stay floats.
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        return Some(Value::from(f as i64));
    }
    if f.fract() == 0.0 && f.is_finite() {
        return Some(value.clone());
    }
    None
}

/// The value as it is stored: integer parameters written as `3.0` become `3`.
fn normalize(decl: &ParamDecl, value: &Value) -> Value {
    match decl.kind {
        ParamType::Integer => as_whole_number(value).unwrap_or_else(|| value.clone()),
        _ => value.clone(),
    }
}

/// Equality that treats `3` and `3.0` as the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(s.clone())),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn unknown_message(name: &str, decls: &IndexMap<String, ParamDecl>) -> String {
    if decls.is_empty() {
        return "is not a parameter of this workflow (it declares none)".into();
    }
    match did_you_mean(name, decls.keys().map(String::as_str)) {
        Some(best) => format!("is not a parameter of this workflow; did you mean `{best}`?"),
        None => {
            let known: Vec<String> = decls.keys().map(|k| format!("`{k}`")).collect();
            format!(
                "is not a parameter of this workflow; it declares {}",
                known.join(", ")
            )
        }
    }
}

/// The candidate closest to `name` by edit distance, when it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters where swapping two neighbours counts as one edit (optimal
/// string alignment), since transposed letters are the most common typo (`modle`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: two back (for transpositions), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 0..a.len() {
        cur[0] = i + 1;
        for j in 0..b.len() {
            let substitution = prev[j] + usize::from(a[i] != b[j]);
            let mut best = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                best = best.min(before[j - 1] + 1);
            }
            cur[j + 1] = best;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(kind: ParamType) -> ParamDecl {
        ParamDecl {
            kind,
            default: None,
            allowed: None,
            minimum: None,
            maximum: None,
            description: None,
        }
    }

    fn decls() -> IndexMap<String, ParamDecl> {
        let mut d = IndexMap::new();
        d.insert(
            "model".to_string(),
            ParamDecl {
                default: Some(json!("gpt-4o-mini")),
                ..decl(ParamType::String)
            },
        );
        d.insert(
            "samples".to_string(),
            ParamDecl {
                default: Some(json!(200)),
                minimum: Some(1.0),
                maximum: Some(1000.0),
                ..decl(ParamType::Integer)
            },
        );
        d.insert("commit".to_string(), decl(ParamType::String));
        d.insert(
            "mode".to_string(),
            ParamDecl {
                default: Some(json!("fast")),
                allowed: Some(vec![json!("fast"), json!("full")]),
                ..decl(ParamType::String)
            },
        );
        d
    }

    fn given(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn check_value_types() {
        assert!(check_value(&decl(ParamType::Integer), &json!(3)).is_ok());
        assert!(check_value(&decl(ParamType::Integer), &json!(3.0)).is_ok());
        assert_eq!(
            check_value(&decl(ParamType::Integer), &json!(3.5)),
            Err("expected an integer, got the number 3.5".into())
        );
        assert_eq!(
            check_value(&decl(ParamType::Number), &json!("3")),
            Err("expected a number, got the string \"3\"".into())
        );
        assert!(check_value(&decl(ParamType::Number), &json!(3.5)).is_ok());
        assert!(check_value(&decl(ParamType::Boolean), &json!(false)).is_ok());
        assert!(check_value(&decl(ParamType::Array), &json!([1])).is_ok());
        assert!(check_value(&decl(ParamType::Object), &json!({})).is_ok());
        assert!(check_value(&decl(ParamType::String), &Value::Null).is_err());
    }

    #[test]
    fn check_value_enum_and_bounds() {
        let d = decls();
        assert!(check_value(&d["mode"], &json!("full")).is_ok());
        assert_eq!(
            check_value(&d["mode"], &json!("slow")),
            Err("\"slow\" is not one of the allowed values: \"fast\", \"full\"".into())
        );
        assert_eq!(
            check_value(&d["samples"], &json!(0)),
            Err("must be at least 1, got 0".into())
        );
        assert_eq!(
            check_value(&d["samples"], &json!(1001)),
            Err("must be at most 1000, got 1001".into())
        );
        let numbers = ParamDecl {
            allowed: Some(vec![json!(1), json!(2)]),
            ..decl(ParamType::Number)
        };
        assert!(check_value(&numbers, &json!(2.0)).is_ok());
    }

    #[test]
    fn resolve_fills_defaults_in_declaration_order() {
        let resolved = resolve(&decls(), &given(json!({"commit": "abc", "samples": 5.0})))
            .expect("valid params");
        assert_eq!(
            Value::Object(resolved.clone()),
            json!({"model": "gpt-4o-mini", "samples": 5, "commit": "abc", "mode": "fast"})
        );
        let keys: Vec<_> = resolved.keys().cloned().collect();
        assert_eq!(keys, ["model", "samples", "commit", "mode"]);
    }

    #[test]
    fn resolve_reports_every_problem() {
        let problems = resolve(
            &decls(),
            &given(json!({"modle": "x", "samples": "many", "mode": "slow"})),
        )
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "param `modle`: is not a parameter of this workflow; did you mean `model`?",
                "param `samples`: expected an integer, got the string \"many\"",
                "param `commit`: is required (it has no default); pass it with `-p commit=…`",
                "param `mode`: \"slow\" is not one of the allowed values: \"fast\", \"full\"",
            ]
        );
    }

    #[test]
    fn resolve_unknown_without_close_match_lists_names() {
        let problems = resolve(&decls(), &given(json!({"zzzzzz": 1, "commit": "c"}))).unwrap_err();
        assert_eq!(
            problems[0].message,
            "is not a parameter of this workflow; it declares `model`, `samples`, `commit`, `mode`"
        );
        let none = resolve(&IndexMap::new(), &given(json!({"x": 1}))).unwrap_err();
        assert_eq!(
            none[0].message,
            "is not a parameter of this workflow (it declares none)"
        );
    }

    #[test]
    fn resolve_reports_an_invalid_default() {
        let mut d = IndexMap::new();
        d.insert(
            "n".to_string(),
            ParamDecl {
                default: Some(json!("ten")),
                ..decl(ParamType::Integer)
            },
        );
        let problems = resolve(&d, &Map::new()).unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            "param `n`: the default is invalid: expected an integer, got the string \"ten\""
        );
    }

    #[test]
    fn parse_cli_by_declared_type() {
        let mut d = decls();
        d.insert("ratio".into(), decl(ParamType::Number));
        d.insert("dry".into(), decl(ParamType::Boolean));
        d.insert("tags".into(), decl(ParamType::Array));
        d.insert("extra".into(), decl(ParamType::Object));
        let pairs: Vec<(String, String)> = [
            ("model", "gpt-4o"),
            ("samples", "50"),
            ("ratio", "0.5"),
            ("dry", "TRUE"),
            ("tags", r#"["a","b"]"#),
            ("extra", r#"{"k": 1}"#),
            ("commit", " 123 "),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let parsed = parse_cli(&d, &pairs).expect("parses");
        assert_eq!(
            Value::Object(parsed),
            json!({"model": "gpt-4o", "samples": 50, "ratio": 0.5, "dry": true,
                   "tags": ["a", "b"], "extra": {"k": 1}, "commit": " 123 "})
        );
    }

    #[test]
    fn parse_cli_problems() {
        let mut d = decls();
        d.insert("dry".into(), decl(ParamType::Boolean));
        d.insert("tags".into(), decl(ParamType::Array));
        let pairs: Vec<(String, String)> = [
            ("samples", "5.5"),
            ("dry", "yes"),
            ("tags", "{}"),
            ("sample", "1"),
            ("model", "a"),
            ("model", "b"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let text: Vec<String> = parse_cli(&d, &pairs)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "param `samples`: `5.5` is not an integer",
                "param `dry`: `yes` is not a boolean; write `true` or `false`",
                "param `tags`: expected an array in JSON, got an object",
                "param `sample`: is not a parameter of this workflow; did you mean `samples`?",
                "param `model`: is given more than once",
            ]
        );
    }

    #[test]
    fn split_cli_pairs() {
        assert_eq!(split_cli_pair("a=b"), Ok(("a".into(), "b".into())));
        assert_eq!(split_cli_pair("q=x=y"), Ok(("q".into(), "x=y".into())));
        assert_eq!(
            split_cli_pair("empty="),
            Ok(("empty".into(), String::new()))
        );
        assert!(
            split_cli_pair("novalue")
                .unwrap_err()
                .contains("is not KEY=VALUE")
        );
        assert!(split_cli_pair("=v").unwrap_err().contains("no name"));
        assert!(split_cli_pair("a b=v").unwrap_err().contains("whitespace"));
    }

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let names = ["model", "samples", "temperature"];
        assert_eq!(did_you_mean("modle", names), Some("model"));
        assert_eq!(did_you_mean("Temprature", names), Some("temperature"));
        assert_eq!(did_you_mean("xyz", names), None);
        assert_eq!(edit_distance("modle", "model"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
