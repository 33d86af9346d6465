//! What changed between two versions of a file: for YAML and JSON, which keys were added,
//! removed or changed (nested keys as dotted paths, list items as `[i]`), with the old and
//! new values; for other text, a line diff (longest common subsequence). Pure: no IO.

use serde::Serialize;
use serde_json::Value;

/// Lines compared by the quadratic LCS at most, per side, once the common start and end are
/// set aside; beyond that the middle is shown as removed then added.
const MAX_LCS_LINES: usize = 2_000;

/// One file's diff between two versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileDiff {
    pub name: String,
    pub change: FileChange,
}

/// What became of a file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileChange {
    /// The same bytes in both versions.
    Unchanged,
    /// A YAML or JSON document whose keys changed.
    Keys { changes: Vec<KeyChange> },
    /// Text, line by line. A file only one version has is all added or all removed.
    Lines { lines: Vec<Line> },
    /// Content that is not UTF-8 text.
    Binary { old_size: usize, new_size: usize },
}

/// A key that changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyChange {
    /// `model.temperature`, `messages[0].content`.
    pub path: String,
    pub kind: KeyKind,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Added,
    Removed,
    Changed,
}

/// A line of a line diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub kind: LineKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Same,
    Added,
    Removed,
}

/// Compares two versions of the file `name`; `None` is a version without it.
pub fn diff_file(name: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> FileDiff {
    let change = if old.is_some() && old == new {
        FileChange::Unchanged
    } else {
        let old_bytes = old.unwrap_or_default();
        let new_bytes = new.unwrap_or_default();
        match (
            std::str::from_utf8(old_bytes),
            std::str::from_utf8(new_bytes),
        ) {
            (Ok(old_text), Ok(new_text)) => {
                match (
                    old.map(|_| document(name, old_text)),
                    new.map(|_| document(name, new_text)),
                ) {
                    // Both sides parse as documents (a missing side is an empty one).
                    (Some(Some(a)), Some(Some(b))) => FileChange::Keys {
                        changes: diff_values(&a, &b),
                    },
                    (None, Some(Some(b))) => FileChange::Keys {
                        changes: diff_values(&Value::Object(Default::default()), &b),
                    },
                    (Some(Some(a)), None) => FileChange::Keys {
                        changes: diff_values(&a, &Value::Object(Default::default())),
                    },
                    _ => FileChange::Lines {
                        lines: diff_lines(old_text, new_text),
                    },
                }
            }
            _ => FileChange::Binary {
                old_size: old_bytes.len(),
                new_size: new_bytes.len(),
            },
        }
    };
    FileDiff {
        name: name.to_owned(),
        change,
    }
}

/// The file as a YAML or JSON document, by its extension; `None` for other files and for
/// content that does not parse (which is then compared as text).
fn document(name: &str, text: &str) -> Option<Value> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".json") {
        serde_json::from_str(text).ok()
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        serde_saphyr::from_str::<Value>(text).ok()
    } else {
        None
    }
}

/// Every key whose value differs between `old` and `new`, in document order.
pub fn diff_values(old: &Value, new: &Value) -> Vec<KeyChange> {
    let mut changes = Vec::new();
    walk("", old, new, &mut changes);
    changes
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(path: &str, old: &Value, new: &Value, changes: &mut Vec<KeyChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => walk(&join(path, key), value, other, changes),
                    None => changes.push(KeyChange {
                        path: join(path, key),
                        kind: KeyKind::Removed,
                        old: Some(value.clone()),
                        new: None,
                    }),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    changes.push(KeyChange {
                        path: join(path, key),
                        kind: KeyKind::Added,
                        old: None,
                        new: Some(value.clone()),
                    });
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let item = format!("{path}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => walk(&item, x, y, changes),
                    (Some(x), None) => changes.push(KeyChange {
                        path: item,
                        kind: KeyKind::Removed,
                        old: Some(x.clone()),
                        new: None,
                    }),
                    (None, Some(y)) => changes.push(KeyChange {
                        path: item,
                        kind: KeyKind::Added,
                        old: None,
                        new: Some(y.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        _ if old != new => changes.push(KeyChange {
            path: if path.is_empty() {
                "(document)".to_owned()
            } else {
                path.to_owned()
            },
            kind: KeyKind::Changed,
            old: Some(old.clone()),
            new: Some(new.clone()),
        }),
        _ => {}
    }
}

/// A line diff: the common start and end as they are, the middle by longest common
/// subsequence.
pub fn diff_lines(old: &str, new: &str) -> Vec<Line> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let line = |kind, text: &str| Line {
        kind,
        text: text.to_owned(),
    };
    let mut lines: Vec<Line> = a[..prefix]
        .iter()
        .map(|t| line(LineKind::Same, t))
        .collect();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    if mid_a.len() > MAX_LCS_LINES || mid_b.len() > MAX_LCS_LINES {
        lines.extend(mid_a.iter().map(|t| line(LineKind::Removed, t)));
        lines.extend(mid_b.iter().map(|t| line(LineKind::Added, t)));
    } else {
        lines.extend(lcs(mid_a, mid_b));
    }
    lines.extend(
        a[a.len() - suffix..]
            .iter()
            .map(|t| line(LineKind::Same, t)),
    );
    lines
}

fn lcs(a: &[&str], b: &[&str]) -> Vec<Line> {
    let (n, m) = (a.len(), b.len());
    // lengths[i][j]: the LCS of a[i..] and b[j..].
    let width = m + 1;
    let mut lengths = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[i * width + j] = if a[i] == b[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let mut out = Vec::with_capacity(n + m);
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Line {
                kind: LineKind::Same,
                text: a[i].to_owned(),
            });
            i += 1;
            j += 1;
        } else if j < m && (i == n || lengths[i * width + j + 1] >= lengths[(i + 1) * width + j]) {
            out.push(Line {
                kind: LineKind::Added,
                text: b[j].to_owned(),
            });
            j += 1;
        } else {
            out.push(Line {
                kind: LineKind::Removed,
                text: a[i].to_owned(),
            });
            i += 1;
        }
    }
    out
}

/// The diffs as text for a terminal: `~ key: old -> new`, `+ key: new`, `- key: old` for
/// documents; `+`/`-`/` ` lines for text.
pub fn render(diffs: &[FileDiff], old_label: &str, new_label: &str) -> String {
    let mut out = String::new();
    for diff in diffs {
        out.push_str(&format!(
            "--- {} ({old_label})\n+++ {} ({new_label})\n",
            diff.name, diff.name
        ));
        match &diff.change {
            FileChange::Unchanged => out.push_str("  (unchanged)\n"),
            FileChange::Binary { old_size, new_size } => out.push_str(&format!(
                "  (binary content: {old_size} bytes -> {new_size} bytes)\n"
            )),
            FileChange::Keys { changes } if changes.is_empty() => {
                out.push_str("  (same keys and values; only formatting differs)\n")
            }
            FileChange::Keys { changes } => {
                for change in changes {
                    let show =
                        |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
                    out.push_str(&match change.kind {
                        KeyKind::Added => format!("+ {}: {}\n", change.path, show(&change.new)),
                        KeyKind::Removed => {
                            format!("- {}: {}\n", change.path, show(&change.old))
                        }
                        KeyKind::Changed => format!(
                            "~ {}: {} -> {}\n",
                            change.path,
                            show(&change.old),
                            show(&change.new)
                        ),
                    });
                }
            }
            FileChange::Lines { lines } => {
                for line in lines {
                    let mark = match line.kind {
                        LineKind::Same => ' ',
                        LineKind::Added => '+',
                        LineKind::Removed => '-',
                    };
                    out.push(mark);
                    out.push_str(&line.text);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kinds(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| match l.kind {
                LineKind::Same => '=',
                LineKind::Added => '+',
                LineKind::Removed => '-',
            })
            .collect()
    }

    #[test]
    fn line_diff_keeps_what_both_share() {
        let lines = diff_lines("a\nb\nc\nd\n", "a\nx\nc\nd\ne\n");
        assert_eq!(kinds(&lines), "=+-==+");
        assert_eq!(lines[1].text, "x");
        assert_eq!(lines[2].text, "b");
        assert!(
            diff_lines("same\n", "same\n")
                .iter()
                .all(|l| l.kind == LineKind::Same)
        );
        assert_eq!(kinds(&diff_lines("", "a\nb")), "++");
    }

    #[test]
    fn yaml_diff_names_added_removed_and_changed_keys_with_values() {
        let old = b"model: gpt-4o\nparams:\n  temperature: 0.2\n  top_p: 0.9\nstop: [a]\n";
        let new = b"model: gpt-4o\nparams:\n  temperature: 0.7\nstop: [a, b]\nsystem: be brief\n";
        let diff = diff_file("prompts/p.yaml", Some(old), Some(new));
        let FileChange::Keys { changes } = diff.change else {
            panic!("a YAML file gets a key diff: {diff:?}");
        };
        let summary: Vec<(String, KeyKind)> =
            changes.iter().map(|c| (c.path.clone(), c.kind)).collect();
        assert_eq!(
            summary,
            vec![
                ("params.temperature".into(), KeyKind::Changed),
                ("params.top_p".into(), KeyKind::Removed),
                ("stop[1]".into(), KeyKind::Added),
                ("system".into(), KeyKind::Added),
            ]
        );
        assert_eq!(changes[0].old, Some(json!(0.2)));
        assert_eq!(changes[0].new, Some(json!(0.7)));
    }

    #[test]
    fn json_and_text_and_binary_are_told_apart() {
        let json_diff = diff_file("c.json", Some(br#"{"a":1}"#), Some(br#"{"a": 1}"#));
        assert_eq!(json_diff.change, FileChange::Keys { changes: vec![] });
        let broken = diff_file("c.json", Some(b"{"), Some(b"{\n}"));
        assert!(matches!(broken.change, FileChange::Lines { .. }));
        let binary = diff_file("w.bin", Some(&[0xff, 0xfe]), Some(&[0xff]));
        assert_eq!(
            binary.change,
            FileChange::Binary {
                old_size: 2,
                new_size: 1
            }
        );
        let added = diff_file("new.txt", None, Some(b"hello\n"));
        assert_eq!(
            added.change,
            FileChange::Lines {
                lines: vec![Line {
                    kind: LineKind::Added,
                    text: "hello".into()
                }]
            }
        );
        assert_eq!(
            diff_file("same.txt", Some(b"x"), Some(b"x")).change,
            FileChange::Unchanged
        );
    }

    #[test]
    fn rendering_shows_each_change_on_a_line() {
        let diffs = vec![diff_file(
            "p.yaml",
            Some(b"temperature: 0.2\n"),
            Some(b"temperature: 0.7\n"),
        )];
        assert_eq!(
            render(&diffs, "v1", "v2"),
            "--- p.yaml (v1)\n+++ p.yaml (v2)\n~ temperature: 0.2 -> 0.7\n"
        );
    }
}
