//! Where `eval`'s answers come from: a predictions file keyed by id (offline runs), a command
//! that answers examples as JSON lines over stdin and stdout, or an OpenAI-compatible endpoint
//! (requests in [`super::openai`]). Each gives one [`Answer`] per example, in order; an example
//! that could not be answered carries its error instead of failing the task.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::dataset::{Example, read_jsonl};
use super::openai::{Chat, Message};
use crate::operators::shell::{self, ProcessGroup, TERM_GRACE};
use crate::operators::{LogStream, OpContext, OperatorError, Result};
use crate::template::{TemplateError, Templates};

/// How many examples pass between two progress lines in the log (at least one line per tenth).
pub const PROGRESS_EVERY: usize = 100;

/// What answered one example.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The output; `None` when the example could not be answered (`error` says why).
    pub output: Option<String>,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached: bool,
}

impl Answer {
    fn failed(error: impl Into<String>) -> Answer {
        Answer {
            error: Some(error.into()),
            ..Answer::default()
        }
    }
}

/// A program that answers examples: a command line run with `sh -c`, or a program and its
/// arguments run directly.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandTarget {
    /// A command line, run with `sh -c` in the workflow file's folder.
    Line(String),
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
}

/// One line of a predictions file, or of a command's answers.
#[derive(Debug, Deserialize)]
struct PredictionLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl PredictionLine {
    fn into_answer(self) -> Answer {
        let output = self.output.map(|o| match o {
            Value::String(s) => s,
            other => other.to_string(),
        });
        Answer {
            error: match (&output, self.error) {
                (_, Some(error)) => Some(error),
                (None, None) => Some("the prediction has no `output`".to_owned()),
                (Some(_), None) => None,
            },
            output,
            latency_ms: self.latency_ms,
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cached: false,
        }
    }
}

/// Reads a predictions file (JSONL: `id`, `output`, optional `latency_ms`, `input_tokens`,
/// `output_tokens`, `error`) and gives each example the prediction with its id.
pub async fn predictions(path: &Path, examples: &[Example]) -> Result<Vec<Answer>> {
    let lines = read_jsonl::<PredictionLine>(path, "prediction").await?;
    let mut by_id: HashMap<String, Answer> = HashMap::with_capacity(lines.len());
    for (number, line) in lines {
        let id = match &line.id {
            Some(id) => super::dataset::id_text(id).ok_or_else(|| {
                OperatorError::rejected(format!(
                    "{}:{number}: `id` must be a string or a number",
                    path.display()
                ))
            })?,
            None => {
                return Err(OperatorError::rejected(format!(
                    "{}:{number}: the prediction has no `id`",
                    path.display()
                )));
            }
        };
        if by_id.insert(id.clone(), line.into_answer()).is_some() {
            return Err(OperatorError::rejected(format!(
                "{}:{number}: the id `{id}` has a prediction already",
                path.display()
            )));
        }
    }
    Ok(examples
        .iter()
        .map(|example| {
            by_id
                .remove(&example.id)
                .unwrap_or_else(|| Answer::failed("the predictions file has no line for this id"))
        })
        .collect())
}

/// Runs the command once and asks it each example in turn: one JSON line on its stdin
/// (`id`, `input`, `messages`, `context`, `tags`), one JSON line back on its stdout
/// (`output` or `error`, optional token counts). Examples travel only through the pipe,
/// never through a command line. Its stderr goes to the task log.
pub async fn command(
    ctx: &OpContext,
    target: &CommandTarget,
    examples: &[Example],
) -> Result<Vec<Answer>> {
    let mut command = match target {
        CommandTarget::Line(line) => {
            ctx.log
                .system(format!("Starting the target with `sh -c`: {line}"));
            let mut command = shell::try_command(shell::resolve("sh"));
            command.arg("-c").arg(line);
            command
        }
        CommandTarget::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Err(OperatorError::Config {
                    operator: "eval",
                    message: "`target.command` is an empty list".to_owned(),
                });
            };
            ctx.log
                .system(format!("Starting the target program {program}."));
            let mut command = shell::try_command(program);
            command.args(args);
            command
        }
    };
    command
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .env("SLUICE_RUN_ID", &ctx.run_id)
        .env("SLUICE_WORKFLOW", &ctx.workflow)
        .env("SLUICE_TASK_ID", &ctx.task)
        .env("SLUICE_TRY_NUMBER", ctx.try_number.to_string())
        .current_dir(&ctx.base_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if ctx.try_number > 1 {
        let (run_id, task, try_number) = (ctx.run_id.clone(), ctx.task.clone(), ctx.try_number);
        tokio::task::spawn_blocking(move || {
            shell::kill_try_processes(&run_id, &task, ..try_number)
        })
        .await
        .ok();
    }
    let mut child = command
        .spawn()
        .map_err(|e| OperatorError::failed(format!("could not start the target command: {e}")))?;
    let mut group = ProcessGroup::watch(child.id().and_then(|id| i32::try_from(id).ok()));
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(OperatorError::failed(
            "the target command's pipes were not set up",
        ));
    };
    let stderr_pump = tokio::spawn(shell::pump(stderr, LogStream::Stderr, ctx.log.clone(), 0));
    let mut stdout = BufReader::new(stdout).lines();

    let mut answers = Vec::with_capacity(examples.len());
    let mut gone: Option<String> = None;
    for (index, example) in examples.iter().enumerate() {
        if let Some(reason) = &gone {
            answers.push(Answer::failed(reason.clone()));
            continue;
        }
        let mut line = json!({
            "id": example.id,
            "input": example.input,
            "messages": example.messages,
            "context": example.context,
            "tags": example.tags,
        })
        .to_string();
        line.push('\n');
        let started = Instant::now();
        let exchange = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            stdout.next_line().await
        };
        let read = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                stop(&mut child, &mut group).await;
                return Err(OperatorError::Cancelled);
            }
            read = exchange => read,
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let answer = match read {
            Ok(Some(text)) => match serde_json::from_str::<PredictionLine>(&text) {
                Ok(reply) => match &reply.id {
                    Some(id)
                        if super::dataset::id_text(id).as_deref() != Some(example.id.as_str()) =>
                    {
                        Answer::failed(format!(
                            "the command answered for id {id}, not `{}`",
                            example.id
                        ))
                    }
                    _ => Answer {
                        latency_ms: Some(reply.latency_ms.unwrap_or(latency_ms)),
                        ..reply.into_answer()
                    },
                },
                Err(e) => {
                    Answer::failed(format!("the command's answer is not a JSON object ({e})"))
                }
            },
            Ok(None) => {
                gone = Some("the command exited before answering this example".to_owned());
                Answer::failed("the command exited before answering this example")
            }
            Err(e) => {
                let reason = format!("the command's pipes failed: {e}");
                gone = Some(reason.clone());
                Answer::failed(reason)
            }
        };
        answers.push(answer);
        progress(ctx, index + 1, examples.len());
    }
    // Closing stdin is the command's signal to finish.
    drop(stdin);
    let exited = tokio::time::timeout(TERM_GRACE, child.wait()).await;
    if exited.is_err() {
        ctx.log
            .system("The target command did not exit after its input ended; stopping it.");
    }
    stop(&mut child, &mut group).await;
    stderr_pump.abort();
    Ok(answers)
}

/// Ends the command's process group: SIGTERM, a grace period, SIGKILL.
async fn stop(child: &mut tokio::process::Child, group: &mut ProcessGroup) {
    group.signal(libc::SIGTERM);
    let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
    group.signal(libc::SIGKILL);
    let _ = child.wait().await;
    group.disarm();
}

/// Renders each example's messages for an OpenAI-compatible target: `messages` as written,
/// or `prompt` (default `{{ example.input }}`) over the example as the user message; the
/// `system` message first. Rendered off the async threads under the template budget.
pub async fn render_messages(
    templates: &Arc<Templates>,
    system: Option<&str>,
    prompt: Option<&str>,
    examples: &[Example],
) -> Result<Vec<Vec<Message>>> {
    let prompt = prompt.unwrap_or("{{ example.input }}").to_owned();
    let system = system.map(str::to_owned);
    let inputs: Vec<(Option<Vec<Message>>, Value)> = examples
        .iter()
        .map(|e| {
            (
                e.messages.clone(),
                json!({ "example": {
                    "id": e.id,
                    "input": e.input.clone().unwrap_or_default(),
                    "context": e.context,
                    "tags": e.tags,
                }}),
            )
        })
        .collect();
    templates
        .off_thread("with.target.openai.prompt", move |templates| {
            let mut all = Vec::with_capacity(inputs.len());
            for (messages, context) in inputs {
                let mut rendered: Vec<Message> = Vec::new();
                if let Some(system) = &system {
                    rendered.push(Message {
                        role: "system".to_owned(),
                        content: system.clone(),
                    });
                }
                match messages {
                    Some(messages) => rendered.extend(messages),
                    None => {
                        let ctx = crate::template::from_json(&context);
                        let content = templates
                            .render_str(&prompt, &ctx)
                            .map_err(|e: TemplateError| e.in_field("with.target.openai.prompt"))?;
                        rendered.push(Message {
                            role: "user".to_owned(),
                            content,
                        });
                    }
                }
                all.push(rendered);
            }
            Ok(all)
        })
        .await
        .map_err(|e| OperatorError::rejected(e.to_string()))
}

/// Asks the endpoint every example's messages, `concurrency` at a time; answers keep the
/// examples' order.
pub async fn openai(
    ctx: &OpContext,
    chat: &Chat<'_>,
    examples: &[Example],
    requests: Vec<Vec<Message>>,
) -> Vec<Answer> {
    let total = requests.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut answers: Vec<(usize, Answer)> =
        futures_util::stream::iter(requests.into_iter().enumerate())
            .map(|(index, messages)| {
                let id = &examples[index].id;
                let done = &done;
                async move {
                    let reply = chat
                        .complete(&messages, |attempt, error, wait| {
                            ctx.log.system(format!(
                                "Example {id}: attempt {attempt} failed ({}); trying again in {}.",
                                ctx.masker.mask(error),
                                humantime::format_duration(round_ms(wait))
                            ));
                        })
                        .await;
                    let answer = match reply {
                        Ok(reply) => Answer {
                            output: Some(reply.text),
                            error: None,
                            latency_ms: Some(reply.latency_ms),
                            input_tokens: reply.input_tokens,
                            output_tokens: reply.output_tokens,
                            cached: reply.cached,
                        },
                        Err(error) => Answer::failed(error),
                    };
                    let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(ctx, finished, total);
                    (index, answer)
                }
            })
            .buffer_unordered(chat.target.concurrency)
            .collect()
            .await;
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

fn round_ms(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// A progress line every [`PROGRESS_EVERY`] examples, and at the end.
pub fn progress(ctx: &OpContext, done: usize, total: usize) {
    let every = PROGRESS_EVERY.min(total.div_ceil(10)).max(1);
    if done.is_multiple_of(every) || done == total {
        ctx.log
            .system(format!("Answered {done} of {total} examples."));
    }
}
