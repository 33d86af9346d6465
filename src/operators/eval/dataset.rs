//! The golden set: a JSONL file of examples (`id`, `input` or `messages`, `expected`,
//! optional `context` and `tags`), read off the async threads and checked line by line, so a
//! bad line is reported with its number instead of failing somewhere later.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::openai::Message;
use crate::operators::{OperatorError, Result};

/// One example of the golden set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub id: String,
    pub input: Option<String>,
    pub messages: Option<Vec<Message>>,
    /// The reference answer; a non-string value stands as its JSON text.
    pub expected: Option<String>,
    /// Retrieved passages the answer should rest on (faithfulness).
    pub context: Vec<String>,
    pub tags: Vec<String>,
}

impl Example {
    /// The question as text: `input`, or the last user message.
    pub fn question(&self) -> String {
        if let Some(input) = &self.input {
            return input.clone();
        }
        self.messages
            .iter()
            .flatten()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
struct ExampleLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    expected: Option<Value>,
    #[serde(default)]
    context: Option<Context>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Context {
    One(String),
    Many(Vec<String>),
}

/// An id as text: a string as it is, a number as written.
pub fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a JSONL file: every non-blank line one `T`, with its 1-based line number. `what`
/// names a line in errors ("example", "prediction").
pub async fn read_jsonl<T: DeserializeOwned + Send + 'static>(
    path: &Path,
    what: &'static str,
) -> Result<Vec<(usize, T)>> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(&owned).map_err(|e| {
            OperatorError::rejected(format!("cannot read {}: {e}", owned.display()))
        })?;
        let mut out = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let item = serde_json::from_str::<T>(line).map_err(|e| {
                OperatorError::rejected(format!(
                    "{}:{}: the {what} is not valid: {e}",
                    owned.display(),
                    index + 1
                ))
            })?;
            out.push((index + 1, item));
        }
        Ok(out)
    })
    .await
    .map_err(|e| OperatorError::failed(format!("reading {} stopped: {e}", path.display())))?
}

/// Reads and checks the golden set: every example has an id, unique, and `input` or
/// `messages`.
pub async fn read(path: &Path) -> Result<Vec<Example>> {
    let lines = read_jsonl::<ExampleLine>(path, "example").await?;
    let at = |number: usize| format!("{}:{number}", path.display());
    let mut seen = HashSet::with_capacity(lines.len());
    let mut examples = Vec::with_capacity(lines.len());
    for (number, line) in lines {
        let id = line.id.as_ref().and_then(id_text).ok_or_else(|| {
            OperatorError::rejected(format!(
                "{}: the example needs an `id` (a string or a number)",
                at(number)
            ))
        })?;
        if !seen.insert(id.clone()) {
            return Err(OperatorError::rejected(format!(
                "{}: the id `{id}` is used by an earlier example",
                at(number)
            )));
        }
        if line.input.is_none() && line.messages.is_none() {
            return Err(OperatorError::rejected(format!(
                "{}: the example `{id}` needs `input` or `messages`",
                at(number)
            )));
        }
        examples.push(Example {
            id,
            input: line.input,
            messages: line.messages,
            expected: line.expected.map(|e| match e {
                Value::String(s) => s,
                other => other.to_string(),
            }),
            context: match line.context {
                None => Vec::new(),
                Some(Context::One(one)) => vec![one],
                Some(Context::Many(many)) => many,
            },
            tags: line.tags,
        });
    }
    if examples.is_empty() {
        return Err(OperatorError::rejected(format!(
            "{} holds no examples",
            path.display()
        )));
    }
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_text(text: &str) -> Result<Vec<Example>> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("golden.jsonl");
        std::fs::write(&path, text).expect("write");
        read(&path).await
    }

    #[tokio::test]
    async fn examples_are_read_with_their_optional_parts() {
        let examples = read_text(
            "{\"id\": 1, \"input\": \"Capital of France?\", \"expected\": \"Paris\", \"context\": \"Paris is the capital.\", \"tags\": [\"geo\"]}\n\n\
             {\"id\": \"b\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"expected\": {\"a\": 1}}\n",
        )
        .await
        .expect("valid");
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[0].id, "1");
        assert_eq!(examples[0].context, ["Paris is the capital."]);
        assert_eq!(examples[1].expected.as_deref(), Some("{\"a\":1}"));
        assert_eq!(examples[1].question(), "Hi");
    }

    #[tokio::test]
    async fn bad_lines_are_reported_with_their_number() {
        for (text, says) in [
            ("{\"input\": \"x\"}\n", ":1: the example needs an `id`"),
            (
                "{\"id\": 1, \"input\": \"x\"}\n{\"id\": 1, \"input\": \"y\"}\n",
                ":2: the id `1`",
            ),
            ("{\"id\": 1}\n", "needs `input` or `messages`"),
            (
                "{\"id\": 1, \"input\": \"x\"}\nnot json\n",
                ":2: the example is not valid",
            ),
            ("\n", "holds no examples"),
        ] {
            let error = read_text(text).await.expect_err(text).to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
