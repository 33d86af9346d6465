//! A JSON-Schema checker over the positioned YAML tree. It understands the subset schemars
//! emits (type, properties, required, additionalProperties, enum, const, items,
//! minimum/maximum, integer formats, $ref/$defs, anyOf/oneOf/allOf, if/then/else) and reports
//! every structural problem at once, each at the line and column of the node at fault.
//!
//! One extension: a schema carrying `"x-sluice-templated": true` marks a subtree whose strings
//! are templates rendered at run time; there, a string containing template syntax is accepted
//! wherever any type is expected.

use serde_json::{Map, Value};

use super::suggest;
use super::tree::{Node, NodeValue, Pos};
use crate::template::contains_template;

/// The schema keyword that marks a templated subtree.
pub const TEMPLATED: &str = "x-sluice-templated";

/// A structural problem found by the checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

/// Checks `node` against `schema` (a root schema whose `$ref`s point into its own `$defs`).
/// Problems are in the order they were found, which follows the file.
pub fn check(node: &Node, schema: &Value) -> Vec<Problem> {
    let checker = Checker { root: schema };
    let mut out = Vec::new();
    let at = Place {
        label: None,
        anchor: node.pos,
        templated: false,
    };
    checker.validate(node, schema, &at, &mut out, 0);
    out
}

/// Where in the document a node sits, for messages.
#[derive(Clone)]
struct Place {
    /// The name used in messages (`retries`, `needs[1]`); `None` at the root.
    label: Option<String>,
    /// Where problems about the node as a whole point: its key when it has one.
    anchor: Pos,
    templated: bool,
}

impl Place {
    fn name(&self) -> String {
        match &self.label {
            Some(l) => format!("`{l}`"),
            None => "the workflow file".to_owned(),
        }
    }
}

/// `$ref` chains deeper than this are a broken schema, not a deep document.
const MAX_REF_DEPTH: usize = 64;

struct Checker<'s> {
    root: &'s Value,
}

impl<'s> Checker<'s> {
    fn resolve(&self, reference: &str) -> Option<&'s Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// Follows `$ref`s to the schema that says something.
    fn deref(&self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..MAX_REF_DEPTH {
            match schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| self.resolve(r))
            {
                Some(target) => schema = target,
                None => return schema,
            }
        }
        schema
    }

    fn is_valid(&self, node: &Node, schema: &'s Value, at: &Place, depth: usize) -> bool {
        let mut scratch = Vec::new();
        self.validate(node, schema, at, &mut scratch, depth);
        scratch.is_empty()
    }

    fn validate(
        &self,
        node: &Node,
        schema: &'s Value,
        at: &Place,
        out: &mut Vec<Problem>,
        depth: usize,
    ) {
        let obj = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(problem(
                    node.pos,
                    format!("{} is not allowed here", at.name()),
                    None,
                ));
                return;
            }
            Value::Object(obj) => obj,
            _ => return,
        };
        if depth > MAX_REF_DEPTH * 4 {
            return;
        }
        let mut at_here;
        let mut at = at;
        if obj.get(TEMPLATED).and_then(Value::as_bool) == Some(true) && !at.templated {
            at_here = at.clone();
            at_here.templated = true;
            at = &at_here;
        }
        if at.templated && node.as_str().is_some_and(contains_template) {
            return;
        }
        if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
            match self.resolve(target) {
                Some(target) => self.validate(node, target, at, out, depth + 1),
                None => out.push(problem(
                    node.pos,
                    format!("the schema refers to `{target}`, which does not exist"),
                    None,
                )),
            }
        }
        if let Some(types) = obj.get("type")
            && !type_matches(node, types)
        {
            out.push(problem(
                node.pos,
                format!(
                    "{} must be {}, found {}",
                    at.name(),
                    describe_types(types),
                    node.kind_name()
                ),
                None,
            ));
            return;
        }
        if let Some(allowed) = obj.get("enum").and_then(Value::as_array)
            && !allowed.iter().any(|v| equals(node, v))
        {
            out.push(enum_problem(node, at, allowed.iter()));
            return;
        }
        if let Some(expected) = obj.get("const")
            && !equals(node, expected)
        {
            out.push(enum_problem(node, at, std::iter::once(expected)));
            return;
        }
        if let NodeValue::Number(n) = &node.value {
            check_number(n, obj, node.pos, at, out);
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = obj.get(keyword).and_then(Value::as_array) {
                self.validate_union(node, branches, at, out, depth);
            }
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            for branch in all {
                self.validate(node, branch, at, out, depth + 1);
            }
        }
        if let Some(condition) = obj.get("if") {
            let branch = if self.is_valid(node, condition, at, depth + 1) {
                obj.get("then")
            } else {
                obj.get("else")
            };
            if let Some(branch) = branch {
                self.validate(node, branch, at, out, depth + 1);
            }
        }
        match &node.value {
            NodeValue::Map(entries) => self.validate_map(node, entries, obj, at, out, depth),
            NodeValue::Seq(items) => {
                if let Some(item_schema) = obj.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let label = match &at.label {
                            Some(l) => format!("{l}[{i}]"),
                            None => format!("[{i}]"),
                        };
                        let place = Place {
                            label: Some(label),
                            anchor: item.pos,
                            templated: at.templated,
                        };
                        self.validate(item, item_schema, &place, out, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }

    fn validate_map(
        &self,
        node: &Node,
        entries: &[super::tree::Entry],
        obj: &'s Map<String, Value>,
        at: &Place,
        out: &mut Vec<Problem>,
        depth: usize,
    ) {
        let properties = obj.get("properties").and_then(Value::as_object);
        if let Some(required) = obj.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !entries.iter().any(|e| e.key == key) {
                    let message = match &at.label {
                        Some(l) => format!("missing required key `{key}` in `{l}`"),
                        None => format!("missing required key `{key}`"),
                    };
                    out.push(problem(at.anchor, message, None));
                }
            }
        }
        let additional = obj.get("additionalProperties");
        for entry in entries {
            let place = Place {
                label: Some(entry.key.clone()),
                anchor: entry.key_pos,
                templated: at.templated,
            };
            if let Some(schema) = properties.and_then(|p| p.get(&entry.key)) {
                self.validate(&entry.value, schema, &place, out, depth + 1);
                continue;
            }
            match additional {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let help = suggest::did_you_mean(&entry.key, known.iter().copied())
                        .or_else(|| expected_keys(&known));
                    let message = match &at.label {
                        Some(l) => format!("unknown key `{}` in `{l}`", entry.key),
                        None => format!("unknown key `{}`", entry.key),
                    };
                    out.push(problem(entry.key_pos, message, help));
                }
                Some(schema @ Value::Object(_)) => {
                    self.validate(&entry.value, schema, &place, out, depth + 1)
                }
                _ => {}
            }
        }
        let _ = node;
    }

    fn validate_union(
        &self,
        node: &Node,
        branches: &'s [Value],
        at: &Place,
        out: &mut Vec<Problem>,
        depth: usize,
    ) {
        let mut results: Vec<(&'s Value, Vec<Problem>)> = Vec::with_capacity(branches.len());
        for branch in branches {
            let mut problems = Vec::new();
            self.validate(node, branch, at, &mut problems, depth + 1);
            if problems.is_empty() {
                return;
            }
            results.push((branch, problems));
        }
        let resolved: Vec<&'s Value> = branches.iter().map(|b| self.deref(b)).collect();

        // A union of constants (an enum whose variants carry documentation).
        let mut constants = Vec::new();
        if resolved
            .iter()
            .all(|b| collect_constants(b, &mut constants))
            && !constants.is_empty()
        {
            out.push(enum_problem(node, at, constants.into_iter()));
            return;
        }

        // An externally tagged enum: each branch is a map with exactly one required key.
        let tags: Option<Vec<&str>> = resolved.iter().map(|b| single_tag(b)).collect();
        if let (Some(tags), Some(entries)) = (&tags, node.as_map()) {
            let present: Vec<&super::tree::Entry> = entries
                .iter()
                .filter(|e| tags.contains(&e.key.as_str()))
                .collect();
            if present.len() == 1
                && let Some(i) = tags.iter().position(|t| *t == present[0].key)
            {
                out.append(&mut results[i].1);
                return;
            }
            let list = join_code(tags.iter().copied());
            let (pos, help) = match entries.first() {
                Some(first) if present.is_empty() => (
                    first.key_pos,
                    suggest::did_you_mean(&first.key, tags.iter().copied()),
                ),
                _ => (at.anchor, None),
            };
            out.push(problem(
                pos,
                format!("{} must have exactly one of the keys {list}", at.name()),
                help,
            ));
            return;
        }

        // Otherwise report the branch that fits the node's type best; if none does, the types.
        let fitting: Vec<usize> = (0..resolved.len())
            .filter(|&i| {
                resolved[i]
                    .get("type")
                    .is_none_or(|t| type_matches(node, t))
            })
            .collect();
        if fitting.is_empty() {
            let mut names: Vec<&str> = Vec::new();
            for b in &resolved {
                for name in type_names(b.get("type")) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            let expected = join_alternatives(&names.iter().map(|n| article(n)).collect::<Vec<_>>());
            out.push(problem(
                node.pos,
                format!(
                    "{} must be {expected}, found {}",
                    at.name(),
                    node.kind_name()
                ),
                None,
            ));
            return;
        }
        let best = fitting
            .into_iter()
            .min_by_key(|&i| results[i].1.len())
            .unwrap_or(0);
        out.append(&mut results[best].1);
    }
}

fn problem(pos: Pos, message: String, help: Option<String>) -> Problem {
    Problem { pos, message, help }
}

fn expected_keys(known: &[&str]) -> Option<String> {
    if known.is_empty() {
        Some("no keys are allowed here".to_owned())
    } else {
        Some(format!(
            "expected one of {}",
            join_code(known.iter().copied())
        ))
    }
}

fn join_code<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_alternatives(items: &[String]) -> String {
    match items {
        [] => "something else".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "integer" => "an integer".to_owned(),
        "object" => "a map".to_owned(),
        "array" => "a list".to_owned(),
        "null" => "null".to_owned(),
        other => format!("a {other}"),
    }
}

fn type_names(types: Option<&Value>) -> Vec<&str> {
    match types {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn describe_types(types: &Value) -> String {
    let names = type_names(Some(types));
    // "null" only says that the key may be left empty; it would confuse the message.
    let shown: Vec<String> = names
        .iter()
        .filter(|n| **n != "null")
        .map(|n| article(n))
        .collect();
    if shown.is_empty() {
        join_alternatives(&names.iter().map(|n| article(n)).collect::<Vec<_>>())
    } else {
        join_alternatives(&shown)
    }
}

fn type_matches(node: &Node, types: &Value) -> bool {
    let names = type_names(Some(types));
    if names.is_empty() {
        return true;
    }
    names.iter().any(|t| match (*t, &node.value) {
        ("null", NodeValue::Null) => true,
        ("boolean", NodeValue::Bool(_)) => true,
        ("integer", NodeValue::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", NodeValue::Number(_)) => true,
        ("string", NodeValue::String(_)) => true,
        ("array", NodeValue::Seq(_)) => true,
        ("object", NodeValue::Map(_)) => true,
        _ => false,
    })
}

fn equals(node: &Node, value: &Value) -> bool {
    match (&node.value, value) {
        (NodeValue::String(a), Value::String(b)) => a == b,
        (NodeValue::Bool(a), Value::Bool(b)) => a == b,
        (NodeValue::Null, Value::Null) => true,
        (NodeValue::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => node.to_json() == *value,
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn enum_problem<'v>(node: &Node, at: &Place, allowed: impl Iterator<Item = &'v Value>) -> Problem {
    let allowed: Vec<String> = allowed.map(value_text).collect();
    let found = match &node.value {
        NodeValue::String(s) => format!("`{s}`"),
        NodeValue::Number(n) => format!("`{n}`"),
        NodeValue::Bool(b) => format!("`{b}`"),
        _ => node.kind_name().to_owned(),
    };
    let help = node
        .as_str()
        .and_then(|s| suggest::did_you_mean(s, allowed.iter().map(String::as_str)));
    let message = if allowed.len() == 1 {
        format!("{} must be `{}`, found {found}", at.name(), allowed[0])
    } else {
        format!(
            "{} must be one of {}, found {found}",
            at.name(),
            join_code(allowed.iter().map(String::as_str))
        )
    };
    problem(node.pos, message, help)
}

/// Adds the values a constant-only schema allows; false when the schema is not one.
fn collect_constants<'v>(schema: &'v Value, into: &mut Vec<&'v Value>) -> bool {
    if let Some(c) = schema.get("const") {
        into.push(c);
        true
    } else if let Some(list) = schema.get("enum").and_then(Value::as_array) {
        into.extend(list);
        true
    } else {
        false
    }
}

/// The key of a `{ key: … }` branch of an externally tagged enum.
fn single_tag(schema: &Value) -> Option<&str> {
    let required = schema.get("required")?.as_array()?;
    let properties = schema.get("properties")?.as_object()?;
    match (required.as_slice(), properties.len()) {
        ([Value::String(key)], 1) if properties.contains_key(key) => Some(key),
        _ => None,
    }
}

fn check_number(
    n: &serde_json::Number,
    obj: &Map<String, Value>,
    pos: Pos,
    at: &Place,
    out: &mut Vec<Problem>,
) {
    let Some(value) = n.as_f64() else { return };
    let format_range: Option<(f64, f64)> = match obj.get("format").and_then(Value::as_str) {
        Some("uint8") => Some((0.0, f64::from(u8::MAX))),
        Some("uint16") => Some((0.0, f64::from(u16::MAX))),
        Some("uint32") => Some((0.0, f64::from(u32::MAX))),
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        Some("uint64" | "uint") => Some((0.0, u64::MAX as f64)),
        _ => None,
    };
    let minimum = obj.get("minimum").and_then(Value::as_f64);
    let maximum = obj.get("maximum").and_then(Value::as_f64);
    if let Some(min) = minimum
        && value < min
    {
        out.push(problem(
            pos,
            format!("{} must be at least {min}, found {n}", at.name()),
            None,
        ));
    } else if let Some(max) = maximum
        && value > max
    {
        out.push(problem(
            pos,
            format!("{} must be at most {max}, found {n}", at.name()),
            None,
        ));
    } else if let Some((low, high)) = format_range
        && (value < low || value > high)
    {
        out.push(problem(
            pos,
            format!("{} must be between {low} and {high}, found {n}", at.name()),
            None,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tree::parse;
    use serde_json::json;

    fn problems(yaml: &str, schema: Value) -> Vec<String> {
        let node = parse(yaml).unwrap();
        check(&node, &schema)
            .into_iter()
            .map(|p| match p.help {
                Some(h) => format!("{}: {} ({h})", p.pos, p.message),
                None => format!("{}: {}", p.pos, p.message),
            })
            .collect()
    }

    fn task_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "operator": {"type": "string"},
                "retries": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
                "needs": {"type": "array", "items": {"type": "string"}},
                "mode": {"oneOf": [{"const": "fixed"}, {"const": "exponential"}]},
                "with": {"x-sluice-templated": true, "$ref": "#/$defs/With"}
            },
            "required": ["operator"],
            "additionalProperties": false,
            "$defs": {"With": {"type": "object", "properties": {"url": {"type": "string"}, "n": {"type": "integer"}}, "required": ["url"], "additionalProperties": false}}
        })
    }

    #[test]
    fn reports_every_problem_with_its_position() {
        let yaml = "retires: 2\nretries: two\nneeds: [a, 3]\nmode: exponentail\n";
        assert_eq!(
            problems(yaml, task_schema()),
            [
                "1:1: missing required key `operator`",
                "1:1: unknown key `retires` (did you mean `retries`?)",
                "2:10: `retries` must be an integer, found a string",
                "3:12: `needs[1]` must be a string, found an integer",
                "4:7: `mode` must be one of `fixed`, `exponential`, found `exponentail` (did you mean `exponential`?)",
            ]
        );
    }

    #[test]
    fn templates_are_accepted_anywhere_inside_templated_subtrees() {
        let yaml = "operator: x\nwith:\n  url: [1, 2]\n  n: \"{{ params.n }}\"\n  extra: 1\n";
        assert_eq!(
            problems(yaml, task_schema()),
            [
                "3:8: `url` must be a string, found a list",
                "5:3: unknown key `extra` in `with` (expected one of `url`, `n`)",
            ]
        );
        assert!(problems("operator: x\nwith: \"{{ params.all }}\"\n", task_schema()).is_empty());
        assert_eq!(
            problems("operator: x\nretries: \"{{ params.n }}\"\n", task_schema()),
            ["2:10: `retries` must be an integer, found a string"]
        );
    }

    #[test]
    fn tagged_unions_and_if_then() {
        let schema = json!({
            "type": "array",
            "items": {"oneOf": [
                {"type": "object", "properties": {"github": {"type": "object"}}, "required": ["github"], "additionalProperties": false},
                {"type": "object", "properties": {"workflow": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}, "required": ["workflow"], "additionalProperties": false}
            ]}
        });
        assert_eq!(
            problems("- githb: {}\n- workflow: {}\n", schema),
            [
                "1:3: `[0]` must have exactly one of the keys `github`, `workflow` (did you mean `github`?)",
                "2:3: missing required key `id` in `workflow`",
            ]
        );
        let schema = json!({
            "allOf": [{"if": {"properties": {"op": {"const": "http"}}, "required": ["op"]},
                       "then": {"properties": {"with": {"required": ["url"]}}}}]
        });
        assert_eq!(
            problems("op: http\nwith: {}\n", schema.clone()),
            ["2:1: missing required key `url` in `with`"]
        );
        assert!(problems("op: noop\nwith: {}\n", schema).is_empty());
    }

    #[test]
    fn numbers_out_of_range() {
        assert_eq!(
            problems(
                "retries: -1\n",
                json!({"properties": {"retries": {"type": "integer", "format": "uint32", "minimum": 0}}})
            ),
            ["1:10: `retries` must be at least 0, found -1"]
        );
    }
}
