//! The judge-based metrics of `eval` — `faithfulness` and `answer_relevancy` (RAGAS-style)
//! and the `toxicity` guardrail: a shipped prompt per metric (`prompts/`), rendered through
//! the budgeted template path, sent to the judge endpoint, and its verdict read as a score
//! between 0 and 1. A verdict that holds no such score is counted, never fatal.

use std::sync::Arc;

use serde_json::{Value, json};

use super::dataset::Example;
use super::openai::{Chat, Message};
use crate::operators::{OpContext, OperatorError, Result};
use crate::template::Templates;

/// A judge-based metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JudgeMetric {
    Faithfulness,
    AnswerRelevancy,
    Toxicity,
}

impl JudgeMetric {
    pub fn name(self) -> &'static str {
        match self {
            JudgeMetric::Faithfulness => "faithfulness",
            JudgeMetric::AnswerRelevancy => "answer_relevancy",
            JudgeMetric::Toxicity => "toxicity",
        }
    }

    /// The shipped prompt template; it sees `question`, `answer` and `context` (a list).
    pub fn prompt(self) -> &'static str {
        match self {
            JudgeMetric::Faithfulness => include_str!("prompts/faithfulness.txt"),
            JudgeMetric::AnswerRelevancy => include_str!("prompts/answer_relevancy.txt"),
            JudgeMetric::Toxicity => include_str!("prompts/toxicity.txt"),
        }
    }
}

/// What the judge said about one example for one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Score(f64),
    /// The judge answered, but no score between 0 and 1 could be read from it.
    Unparsable,
    /// The judge could not be asked (its request failed), or the example had no output.
    Missing,
}

/// Reads a score between 0 and 1 from a judge's answer: the `score` of the first JSON
/// object in it; else the number after the word `score`; else the whole answer as a number.
pub fn parse_verdict(text: &str) -> Option<f64> {
    let in_range = |v: f64| (0.0..=1.0).contains(&v).then_some(v);
    if let (Some(start), Some(end)) = (text.find('{'), text.rfind('}'))
        && start < end
        && let Ok(value) = serde_json::from_str::<Value>(&text[start..=end])
    {
        let score = match &value["score"] {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if let Some(score) = score {
            return in_range(score);
        }
    }
    let lower = text.to_lowercase();
    if let Some(at) = lower.find("score") {
        let rest = &lower[at + "score".len()..];
        let number: String = rest
            .trim_start_matches(|c: char| {
                c == '"' || c == '\'' || c == ':' || c == '=' || c.is_whitespace()
            })
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if let Ok(score) = number.parse::<f64>() {
            return in_range(score);
        }
    }
    text.trim().parse::<f64>().ok().and_then(in_range)
}

/// Asks the judge about every example that has an output, for one metric; verdicts keep the
/// examples' order.
pub async fn judge(
    ctx: &OpContext,
    chat: &Chat<'_>,
    templates: &Arc<Templates>,
    metric: JudgeMetric,
    examples: &[Example],
    outputs: &[Option<String>],
) -> Result<Vec<Verdict>> {
    let source = metric.prompt().to_owned();
    let contexts: Vec<Option<Value>> = examples
        .iter()
        .zip(outputs)
        .map(|(example, output)| {
            output.as_ref().map(|answer| {
                json!({
                    "question": example.question(),
                    "answer": answer,
                    "context": example.context,
                })
            })
        })
        .collect();
    let field = format!("the {} judge prompt", metric.name());
    let prompts: Vec<Option<String>> = templates
        .off_thread(&field, move |templates| {
            contexts
                .into_iter()
                .map(|context| {
                    context
                        .map(|c| templates.render_str(&source, &crate::template::from_json(&c)))
                        .transpose()
                })
                .collect()
        })
        .await
        .map_err(|e| OperatorError::failed(e.to_string()))?;
    let requests: Vec<Option<Vec<Message>>> = prompts
        .into_iter()
        .map(|prompt| {
            prompt.map(|content| {
                vec![Message {
                    role: "user".to_owned(),
                    content,
                }]
            })
        })
        .collect();
    let asked = requests.iter().filter(|r| r.is_some()).count();
    ctx.log.system(format!(
        "Asking the judge ({}) for {} on {asked} examples.",
        chat.target.model,
        metric.name()
    ));
    let judge_examples: Vec<Example> = examples.to_vec();
    let present: Vec<(usize, Vec<Message>)> = requests
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (i, r)))
        .collect();
    let (indexes, messages): (Vec<usize>, Vec<Vec<Message>>) = present.into_iter().unzip();
    let asked_examples: Vec<Example> = indexes.iter().map(|&i| judge_examples[i].clone()).collect();
    let answers = super::target::openai(ctx, chat, &asked_examples, messages).await;
    let mut verdicts = vec![Verdict::Missing; examples.len()];
    for (index, answer) in indexes.into_iter().zip(answers) {
        verdicts[index] = match answer.output {
            Some(text) => parse_verdict(&text).map_or(Verdict::Unparsable, Verdict::Score),
            None => Verdict::Missing,
        };
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_robustly() {
        assert_eq!(
            parse_verdict(r#"{"score": 0.8, "reason": "ok"}"#),
            Some(0.8)
        );
        assert_eq!(
            parse_verdict("Sure! ```json\n{\"score\": \"1\", \"reason\": \"all supported\"}\n```"),
            Some(1.0)
        );
        assert_eq!(parse_verdict("Score: 0.25 because …"), Some(0.25));
        assert_eq!(parse_verdict("0.5"), Some(0.5));
        assert_eq!(parse_verdict(r#"{"score": 7}"#), None, "out of range");
        assert_eq!(parse_verdict("I cannot judge this."), None);
        assert_eq!(parse_verdict(""), None);
        assert_eq!(parse_verdict("{broken json score: 0.3"), Some(0.3));
    }

    #[test]
    fn shipped_prompts_are_valid_templates() {
        let templates = Templates::new();
        for metric in [
            JudgeMetric::Faithfulness,
            JudgeMetric::AnswerRelevancy,
            JudgeMetric::Toxicity,
        ] {
            let ctx = crate::template::from_json(&json!({
                "question": "Q?", "answer": "A.", "context": ["P1", "P2"],
            }));
            let text = templates
                .render_str(metric.prompt(), &ctx)
                .expect("renders");
            assert!(text.contains("A."), "{}", metric.name());
            assert!(text.contains("\"score\""), "{}", metric.name());
        }
    }
}
