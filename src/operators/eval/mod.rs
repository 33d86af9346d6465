//! `eval`: runs a golden set against a target (an OpenAI-compatible endpoint, a command, or a
//! predictions file), scores every answer (`metrics`), applies the guardrails
//! (`guardrails`) and the judge (`judge`), and returns the metrics, the ids of the examples
//! that failed and a per-example results artifact (`eval/results.jsonl`). docs/eval.md
//! defines every metric.

pub mod dataset;
pub mod guardrails;
pub mod judge;
pub mod metrics;
pub mod openai;
pub mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::dataset::Example;
use self::guardrails::Guardrails;
use self::judge::{JudgeMetric, Verdict};
use self::openai::{Chat, OpenAiTarget};
use self::target::{Answer, CommandTarget};
use super::{Completion, OpContext, OperatorError, Outputs, Result};
use crate::template::Templates;

/// The per-example results artifact.
pub const RESULTS_ARTIFACT: &str = "eval/results.jsonl";
/// At most this many failed ids are listed in `outputs.failures` (outputs live in the
/// database); `failures_total` counts them all and the results artifact lists every one.
const MAX_LISTED_FAILURES: usize = 1000;

/// The settings of an `eval` task (its `with`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalWith {
    /// The golden set: a JSONL file, one example per line (`id`, `input` or `messages`,
    /// `expected`, optional `context` and `tags`); relative to the workflow file's folder.
    pub dataset: PathBuf,
    /// What answers the examples: `{ predictions: FILE }`, `{ command: "…" | [program, args…] }`
    /// or `{ openai: { base_url, model, … } }`.
    pub target: Target,
    /// The metrics to compute (docs/eval.md defines each): exact_match, contains,
    /// regex_match, json_valid, f1, rouge_l, latency (p50/p95/p99 in ms), tokens, cost
    /// (cost_total, cost_per_1k), error_rate, faithfulness, answer_relevancy, toxicity,
    /// pii_rate, blocklist_rate, refusal_rate, prompt_injection_rate. `error_rate` is always
    /// reported. Default: `[exact_match]`.
    #[serde(default = "default_metrics")]
    pub metrics: Vec<Metric>,
    /// The model the answers came from, for `cost` prices (`[eval.prices."<model>"]`). Default:
    /// the `openai` target's `model`.
    #[serde(default)]
    pub model: Option<String>,
    /// The pattern `regex_match` looks for in every output (Rust regex syntax). Default: each
    /// example's `expected`, read as a pattern.
    #[serde(default)]
    pub regex: Option<String>,
    /// Words or phrases `blocklist_rate` looks for, case-insensitively, as whole words.
    #[serde(default)]
    pub blocklist: Vec<String>,
    /// Regular expressions `blocklist_rate` looks for anywhere in an output.
    #[serde(default)]
    pub blocklist_patterns: Vec<String>,
    /// The endpoint that judges faithfulness, answer_relevancy and toxicity (same settings as
    /// the `openai` target; its `prompt` and `system` are not used).
    #[serde(default)]
    pub judge: Option<OpenAiTarget>,
    /// Reuse the stored reply of an identical request (target, model, rendered prompt,
    /// parameters) instead of sending it again; hits are counted in `outputs.cache_hits`.
    #[serde(default)]
    pub cache: bool,
    /// Write every rendered prompt to the task log (masked). Default: off, so prompts, which
    /// may quote private data, stay out of logs.
    #[serde(default)]
    pub log_prompts: bool,
}

fn default_metrics() -> Vec<Metric> {
    vec![Metric::ExactMatch]
}

/// What answers the golden set.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A JSONL file of precomputed answers (`id`, `output`, optional `latency_ms`,
    /// `input_tokens`, `output_tokens`, `error`), relative to the workflow file's folder.
    Predictions(PathBuf),
    /// A program that reads examples as JSON lines on stdin and answers each with one JSON
    /// line on stdout (`output` or `error`), flushing after each.
    Command(CommandTarget),
    /// An OpenAI-compatible chat-completions endpoint.
    Openai(OpenAiTarget),
}

/// A selectable metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ExactMatch,
    Contains,
    RegexMatch,
    JsonValid,
    F1,
    RougeL,
    Latency,
    Tokens,
    Cost,
    ErrorRate,
    Faithfulness,
    AnswerRelevancy,
    Toxicity,
    PiiRate,
    BlocklistRate,
    RefusalRate,
    PromptInjectionRate,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::ExactMatch => "exact_match",
            Metric::Contains => "contains",
            Metric::RegexMatch => "regex_match",
            Metric::JsonValid => "json_valid",
            Metric::F1 => "f1",
            Metric::RougeL => "rouge_l",
            Metric::Latency => "latency_p95_ms",
            Metric::Tokens => "output_tokens",
            Metric::Cost => "cost_per_1k",
            Metric::ErrorRate => "error_rate",
            Metric::Faithfulness => "faithfulness",
            Metric::AnswerRelevancy => "answer_relevancy",
            Metric::Toxicity => "toxicity",
            Metric::PiiRate => "pii_rate",
            Metric::BlocklistRate => "blocklist_rate",
            Metric::RefusalRate => "refusal_rate",
            Metric::PromptInjectionRate => "prompt_injection_rate",
        }
    }

    /// Scored against the example's `expected`.
    fn needs_expected(self) -> bool {
        matches!(
            self,
            Metric::ExactMatch | Metric::Contains | Metric::F1 | Metric::RougeL
        )
    }

    fn judged(self) -> Option<JudgeMetric> {
        match self {
            Metric::Faithfulness => Some(JudgeMetric::Faithfulness),
            Metric::AnswerRelevancy => Some(JudgeMetric::AnswerRelevancy),
            Metric::Toxicity => Some(JudgeMetric::Toxicity),
            _ => None,
        }
    }
}

/// A checked `eval` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "EvalWith")]
pub struct EvalConfig {
    pub with: EvalWith,
}

impl TryFrom<EvalWith> for EvalConfig {
    type Error = String;

    fn try_from(with: EvalWith) -> std::result::Result<Self, String> {
        if with.metrics.is_empty() {
            return Err("`metrics` is empty; name at least one metric".to_owned());
        }
        if let Target::Openai(openai) = &with.target {
            openai
                .check()
                .map_err(|e| format!("`target.openai`: {e}"))?;
        }
        if let Target::Command(CommandTarget::Argv(argv)) = &with.target
            && argv.is_empty()
        {
            return Err("`target.command` is an empty list".to_owned());
        }
        if let Some(judge) = &with.judge {
            judge.check().map_err(|e| format!("`judge`: {e}"))?;
        }
        if let Some(metric) = with.metrics.iter().find(|m| m.judged().is_some())
            && with.judge.is_none()
        {
            return Err(format!(
                "`{}` is judged by a model: give its endpoint as `judge: {{ model: …, base_url: … }}`",
                metric.name()
            ));
        }
        if let Some(pattern) = &with.regex {
            Regex::new(pattern).map_err(|e| format!("`regex` is not a valid pattern: {e}"))?;
        }
        Guardrails::new(&with.blocklist, &with.blocklist_patterns).map_err(|e| e.to_string())?;
        Ok(EvalConfig { with })
    }
}

/// Everything scored about one example, written as one line of the results artifact.
#[derive(Debug, Clone, Default)]
struct Scored {
    scores: Map<String, Value>,
    pii: Vec<&'static str>,
    blocklisted: bool,
    refusal: bool,
    injection: bool,
    failed: bool,
}

pub async fn run(ctx: &OpContext, config: EvalConfig) -> Result<Completion> {
    let with = config.with;
    let selected = |m: Metric| with.metrics.contains(&m);
    let examples = dataset::read(&ctx.base_dir.join(&with.dataset)).await?;
    ctx.log.system(format!(
        "Read {} examples from {}.",
        examples.len(),
        with.dataset.display()
    ));
    if let Some(metric) = with
        .metrics
        .iter()
        .find(|m| m.needs_expected() || (**m == Metric::RegexMatch && with.regex.is_none()))
        && let Some(example) = examples.iter().find(|e| e.expected.is_none())
    {
        return Err(OperatorError::rejected(format!(
            "`{}` compares with `expected`, which the example `{}` does not have",
            metric.name(),
            example.id
        )));
    }
    if selected(Metric::Faithfulness)
        && let Some(example) = examples.iter().find(|e| e.context.is_empty())
    {
        return Err(OperatorError::rejected(format!(
            "`faithfulness` judges an answer against its `context`, which the example `{}` does not have",
            example.id
        )));
    }
    let model = with.model.clone().or_else(|| match &with.target {
        Target::Openai(openai) => Some(openai.model.clone()),
        _ => None,
    });
    let price = if selected(Metric::Cost) {
        let model = model.as_deref().ok_or_else(|| {
            OperatorError::rejected(
                "`cost` needs the model's price: name the model as `model` (the `openai` \
                 target names its own)",
            )
        })?;
        Some(*ctx.services.eval.prices.get(model).ok_or_else(|| {
            OperatorError::rejected(format!(
                "`cost` needs a price for the model `{model}`: add `[eval.prices.\"{model}\"]` \
                 with `input_per_1k` and `output_per_1k` to sluice.toml"
            ))
        })?)
    } else {
        None
    };
    let guardrails = Guardrails::new(&with.blocklist, &with.blocklist_patterns)
        .map_err(|e| OperatorError::rejected(e.to_string()))?;
    let templates = Arc::new(Templates::new());
    let mut warnings: Vec<String> = Vec::new();
    let cache = if with.cache {
        if ctx.services.store.is_none() {
            warnings.push(
                "`cache` is on, but this process has no database: nothing was cached".to_owned(),
            );
        }
        ctx.services.store.as_ref()
    } else {
        None
    };
    let secrets = crate::secrets::Secrets::from_env();
    let api_key = |target: &OpenAiTarget| -> Result<Option<String>> {
        target
            .api_key_secret
            .as_ref()
            .map(|name| {
                secrets.get(name).map(str::to_owned).ok_or_else(|| {
                    OperatorError::rejected(format!(
                        "the secret `{name}` (the API key) is not set: set SLUICE_SECRET_{name}"
                    ))
                })
            })
            .transpose()
    };

    let mut retries = 0;
    let mut cache_hits = 0;
    let answers: Vec<Answer> = match &with.target {
        Target::Predictions(path) => {
            target::predictions(&ctx.base_dir.join(path), &examples).await?
        }
        Target::Command(command) => target::command(ctx, command, &examples).await?,
        Target::Openai(openai) => {
            let chat = Chat {
                http: &ctx.http,
                target: openai,
                api_key: api_key(openai)?,
                cache,
                cancel: &ctx.cancel,
                retries: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
            };
            let prompt = match &openai.prompt_file {
                Some(file) => {
                    let path = ctx.base_dir.join(file);
                    Some(tokio::fs::read_to_string(&path).await.map_err(|e| {
                        OperatorError::rejected(format!(
                            "cannot read the prompt file {}: {e}",
                            path.display()
                        ))
                    })?)
                }
                None => openai.prompt.clone(),
            };
            let requests = target::render_messages(
                &templates,
                openai.system.as_deref(),
                prompt.as_deref(),
                &examples,
            )
            .await?;
            if with.log_prompts {
                for (example, messages) in examples.iter().zip(&requests) {
                    let text = serde_json::to_string(messages).unwrap_or_default();
                    ctx.log.system(format!(
                        "Prompt of example {}: {}",
                        example.id,
                        ctx.masker.mask(&text)
                    ));
                }
            }
            ctx.log.system(format!(
                "Asking {} ({}) for {} answers, {} at a time.",
                openai.model,
                openai.base_url,
                examples.len(),
                openai.concurrency
            ));
            let answers = target::openai(ctx, &chat, &examples, requests).await;
            retries += chat.retries.load(Ordering::Relaxed);
            cache_hits += chat.cache_hits.load(Ordering::Relaxed);
            answers
        }
    };
    if ctx.cancel.is_cancelled() {
        return Err(OperatorError::Cancelled);
    }

    let outputs: Vec<Option<String>> = answers.iter().map(|a| a.output.clone()).collect();
    let mut verdicts: BTreeMap<&'static str, Vec<Verdict>> = BTreeMap::new();
    if let Some(judge_target) = &with.judge {
        let chat = Chat {
            http: &ctx.http,
            target: judge_target,
            api_key: api_key(judge_target)?,
            cache,
            cancel: &ctx.cancel,
            retries: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        };
        for metric in with.metrics.iter().filter_map(|m| m.judged()) {
            let judged = judge::judge(ctx, &chat, &templates, metric, &examples, &outputs).await?;
            verdicts.insert(metric.name(), judged);
        }
        retries += chat.retries.load(Ordering::Relaxed);
        cache_hits += chat.cache_hits.load(Ordering::Relaxed);
        if ctx.cancel.is_cancelled() {
            return Err(OperatorError::Cancelled);
        }
    }

    // Scoring reads every output through several automata: CPU work, off the async threads.
    let metrics_selected = with.metrics.clone();
    let regex = with
        .regex
        .as_deref()
        .map(Regex::new)
        .transpose()
        .map_err(|e| OperatorError::rejected(format!("`regex` is not valid: {e}")))?;
    let scoring = tokio::task::spawn_blocking(move || {
        let scored = score_all(
            &metrics_selected,
            regex.as_ref(),
            &guardrails,
            &examples,
            &answers,
            &verdicts,
        )?;
        Ok::<_, OperatorError>((examples, answers, verdicts, scored))
    });
    let (examples, answers, verdicts, scored) = scoring
        .await
        .map_err(|e| OperatorError::failed(format!("scoring stopped: {e}")))??;

    let summary_metrics = aggregate(
        &with.metrics,
        &examples,
        &answers,
        &scored,
        &verdicts,
        price,
    );
    let count = examples.len();
    let failures: Vec<&str> = examples
        .iter()
        .zip(&scored)
        .filter(|(_, s)| s.failed)
        .map(|(e, _)| e.id.as_str())
        .collect();

    let mut lines = String::new();
    for ((example, answer), scored) in examples.iter().zip(&answers).zip(&scored) {
        let mut line = json!({
            "id": example.id,
            "tags": example.tags,
            "input": example.question(),
            "expected": example.expected,
            "output": answer.output,
            "error": answer.error,
            "latency_ms": answer.latency_ms,
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "cached": answer.cached,
            "scores": scored.scores,
            "pii": scored.pii,
            "blocklisted": scored.blocklisted,
            "refusal": scored.refusal,
            "prompt_injection": scored.injection,
            "passed": !scored.failed,
        });
        ctx.masker.mask_json(&mut line);
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    ctx.artifacts()
        .put(RESULTS_ARTIFACT, lines)
        .await
        .map_err(|e| OperatorError::failed(format!("could not keep {RESULTS_ARTIFACT}: {e}")))?;

    let errors = answers.iter().filter(|a| a.error.is_some()).count();
    if errors > 0 {
        warnings.push(format!("{errors} of {count} examples got no answer"));
    }
    let mut unparsable = Map::new();
    for (name, verdicts) in &verdicts {
        let n = verdicts
            .iter()
            .filter(|v| **v == Verdict::Unparsable)
            .count();
        unparsable.insert((*name).to_owned(), json!(n));
        if n > 0 {
            warnings.push(format!(
                "the judge's verdict on {name} could not be read for {n} examples"
            ));
        }
    }

    let summary = summary_line(&with.metrics, &summary_metrics, count);
    ctx.log
        .system(format!("{summary}; {} failed.", failures.len()));
    let mut out = Outputs::new();
    out.insert("metrics".into(), Value::Object(summary_metrics));
    out.insert("count".into(), json!(count));
    out.insert(
        "failures".into(),
        json!(
            failures
                .iter()
                .take(MAX_LISTED_FAILURES)
                .collect::<Vec<_>>()
        ),
    );
    out.insert("failures_total".into(), json!(failures.len()));
    out.insert("errors".into(), json!(errors));
    out.insert("cache_hits".into(), json!(cache_hits));
    out.insert("retries".into(), json!(retries));
    if !unparsable.is_empty() {
        out.insert("judge_unparsable".into(), Value::Object(unparsable));
    }
    if let Some(model) = model {
        out.insert("model".into(), json!(model));
    }
    out.insert("results".into(), json!(RESULTS_ARTIFACT));
    Ok(Completion {
        outputs: out,
        warnings,
        summary: Some(summary),
        ..Completion::default()
    })
}

/// Scores every example for the selected metrics; an example fails when it got no answer or
/// a selected pass/fail metric (exact_match, contains, regex_match, json_valid) is false.
fn score_all(
    selected: &[Metric],
    regex: Option<&Regex>,
    guardrails: &Guardrails,
    examples: &[Example],
    answers: &[Answer],
    verdicts: &BTreeMap<&'static str, Vec<Verdict>>,
) -> Result<Vec<Scored>> {
    let mut all = Vec::with_capacity(examples.len());
    // Patterns from `expected` repeat across examples rarely; compile each as it comes.
    for (index, (example, answer)) in examples.iter().zip(answers).enumerate() {
        let mut scored = Scored {
            failed: answer.output.is_none(),
            ..Scored::default()
        };
        let output = answer.output.as_deref();
        let expected = example.expected.as_deref().unwrap_or_default();
        for metric in selected {
            let pass = |ok: bool| if ok { 1.0 } else { 0.0 };
            let score = match (metric, output) {
                (Metric::ExactMatch, Some(o)) => pass(metrics::exact_match(o, expected)),
                (Metric::Contains, Some(o)) => pass(metrics::contains(o, expected)),
                (Metric::RegexMatch, Some(o)) => match regex {
                    Some(regex) => pass(regex.is_match(o)),
                    None => {
                        let own = Regex::new(expected).map_err(|e| {
                            OperatorError::rejected(format!(
                                "the `expected` of example `{}` is not a valid pattern for \
                                 regex_match: {e}",
                                example.id
                            ))
                        })?;
                        pass(own.is_match(o))
                    }
                },
                (Metric::JsonValid, Some(o)) => pass(metrics::json_valid(o)),
                (Metric::F1, Some(o)) => metrics::f1(o, expected),
                (Metric::RougeL, Some(o)) => metrics::rouge_l(o, expected),
                (
                    Metric::ExactMatch
                    | Metric::Contains
                    | Metric::RegexMatch
                    | Metric::JsonValid
                    | Metric::F1
                    | Metric::RougeL,
                    None,
                ) => 0.0,
                (metric, _) => {
                    if let Some(judged) = metric.judged()
                        && let Some(Verdict::Score(score)) =
                            verdicts.get(judged.name()).and_then(|v| v.get(index))
                    {
                        scored.scores.insert(judged.name().to_owned(), json!(score));
                    }
                    continue;
                }
            };
            if matches!(
                metric,
                Metric::ExactMatch | Metric::Contains | Metric::RegexMatch | Metric::JsonValid
            ) && score < 1.0
            {
                scored.failed = true;
            }
            scored.scores.insert(metric.name().to_owned(), json!(score));
        }
        if let Some(output) = output {
            let findings = guardrails.scan_output(output);
            scored.pii = findings.pii;
            scored.blocklisted = findings.blocklisted;
            scored.refusal = findings.refusal;
        }
        if selected.contains(&Metric::PromptInjectionRate) {
            scored.injection = guardrails.is_injection(&example.question())
                || example
                    .messages
                    .iter()
                    .flatten()
                    .any(|m| guardrails.is_injection(&m.content));
        }
        all.push(scored);
    }
    Ok(all)
}

/// The metrics over all examples, by output name (docs/eval.md).
fn aggregate(
    selected: &[Metric],
    examples: &[Example],
    answers: &[Answer],
    scored: &[Scored],
    verdicts: &BTreeMap<&'static str, Vec<Verdict>>,
    price: Option<crate::config::ModelPrice>,
) -> Map<String, Value> {
    let count = examples.len().max(1) as f64;
    let answered: Vec<&Scored> = answers
        .iter()
        .zip(scored)
        .filter(|(a, _)| a.output.is_some())
        .map(|(_, s)| s)
        .collect();
    let share_of_answered = |hit: &dyn Fn(&Scored) -> bool| {
        if answered.is_empty() {
            0.0
        } else {
            answered.iter().filter(|s| hit(s)).count() as f64 / answered.len() as f64
        }
    };
    let input_tokens: u64 = answers.iter().map(|a| a.input_tokens).sum();
    let output_tokens: u64 = answers.iter().map(|a| a.output_tokens).sum();
    let mut out = Map::new();
    for metric in selected {
        match metric {
            Metric::ExactMatch
            | Metric::Contains
            | Metric::RegexMatch
            | Metric::JsonValid
            | Metric::F1
            | Metric::RougeL => {
                let sum: f64 = scored
                    .iter()
                    .filter_map(|s| s.scores.get(metric.name()).and_then(Value::as_f64))
                    .sum();
                out.insert(metric.name().to_owned(), json!(sum / count));
            }
            Metric::Latency => {
                let latencies: Vec<f64> = answers
                    .iter()
                    .filter(|a| a.output.is_some())
                    .filter_map(|a| a.latency_ms)
                    .collect();
                for (name, q) in [
                    ("latency_p50_ms", 50.0),
                    ("latency_p95_ms", 95.0),
                    ("latency_p99_ms", 99.0),
                ] {
                    if let Some(value) = metrics::percentile(&latencies, q) {
                        out.insert(name.to_owned(), json!(value));
                    }
                }
            }
            Metric::Tokens => {
                out.insert("input_tokens".to_owned(), json!(input_tokens));
                out.insert("output_tokens".to_owned(), json!(output_tokens));
            }
            Metric::Cost => {
                if let Some(price) = price {
                    let total = input_tokens as f64 / 1000.0 * price.input_per_1k
                        + output_tokens as f64 / 1000.0 * price.output_per_1k;
                    out.insert("cost_total".to_owned(), json!(total));
                    out.insert("cost_per_1k".to_owned(), json!(total / count * 1000.0));
                }
            }
            Metric::ErrorRate => {}
            Metric::Faithfulness | Metric::AnswerRelevancy | Metric::Toxicity => {
                let name = metric.name();
                let scores: Vec<f64> = verdicts
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| match v {
                        Verdict::Score(s) => Some(*s),
                        _ => None,
                    })
                    .collect();
                if !scores.is_empty() {
                    out.insert(
                        name.to_owned(),
                        json!(scores.iter().sum::<f64>() / scores.len() as f64),
                    );
                }
            }
            Metric::PiiRate => {
                out.insert(
                    "pii_rate".to_owned(),
                    json!(share_of_answered(&|s| !s.pii.is_empty())),
                );
            }
            Metric::BlocklistRate => {
                out.insert(
                    "blocklist_rate".to_owned(),
                    json!(share_of_answered(&|s| s.blocklisted)),
                );
            }
            Metric::RefusalRate => {
                out.insert(
                    "refusal_rate".to_owned(),
                    json!(share_of_answered(&|s| s.refusal)),
                );
            }
            Metric::PromptInjectionRate => {
                let hits = scored.iter().filter(|s| s.injection).count() as f64;
                out.insert("prompt_injection_rate".to_owned(), json!(hits / count));
            }
        }
    }
    let errors = answers.iter().filter(|a| a.output.is_none()).count() as f64;
    out.insert("error_rate".to_owned(), json!(errors / count));
    out
}

/// "exact_match 0.92 on 200 examples": the first selected metric that has a value.
fn summary_line(selected: &[Metric], metrics: &Map<String, Value>, count: usize) -> String {
    let first = selected
        .iter()
        .map(|m| m.name())
        .find_map(|name| metrics.get(name).and_then(Value::as_f64).map(|v| (name, v)));
    let examples = if count == 1 { "example" } else { "examples" };
    match first {
        Some((name, value)) => format!("{name} {} on {count} {examples}", format_value(value)),
        None => format!("{count} {examples} evaluated"),
    }
}

/// A metric value as the summary shows it: two decimals below 10, whole numbers above.
pub fn format_value(value: f64) -> String {
    if value.abs() >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}
