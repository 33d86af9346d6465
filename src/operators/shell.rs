//! `shell`: runs a command with `sh -c` (or a script file) in its own process group, streams
//! its stdout and stderr to the task log, and reads its outputs from the file `$SLUICE_OUTPUT`.
//! Its process groups never outlive the try (`reaper`), and run as `run_as` when set (`user`).

pub mod reaper;
pub mod user;

use std::collections::{HashMap, VecDeque};
use std::ops::RangeBounds;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::support::Text;
use super::{Completion, LogSink, LogStream, OpContext, OperatorError, Outputs, Result};
use crate::secrets;

/// How long processes get to exit after SIGTERM when the task is cancelled, before SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to keep reading output after the process group is gone. Only a process that left
/// the group (`setsid`) can still hold the pipes open by then; we do not wait for it.
const DRAIN_DEADLINE: Duration = Duration::from_millis(500);
/// Longer lines are split, so a process printing without newlines cannot exhaust memory.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How many stderr lines a failure message quotes, and how much of each.
const STDERR_TAIL_LINES: usize = 5;
const STDERR_TAIL_LINE_CHARS: usize = 300;
/// `$SLUICE_OUTPUT` is read whole; a bigger file is a mistake (outputs are stored in the
/// database), not something to load.
const MAX_OUTPUT_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The settings of a `shell` task (its `with`). Give exactly one of `command` and `script`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellWith {
    /// The command line, run with `sh -c` (or the configured `shell`). Exactly one of
    /// `command` and `script` is required.
    #[serde(default)]
    pub command: Option<String>,
    /// A script file, run with `sh` (or the configured `shell`); a relative path is read from
    /// the workflow file's folder. Exactly one of `command` and `script` is required.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Environment variables for the process, added after the task's `env` (so these win).
    /// Numbers and booleans are passed as their text, lists and maps as JSON. The process
    /// also gets SLUICE_RUN_ID, SLUICE_WORKFLOW, SLUICE_TASK_ID, SLUICE_TRY_NUMBER,
    /// SLUICE_OUTPUT and SLUICE_ARTIFACTS (a folder whose files are kept with the run when the
    /// task succeeds); secrets are not inherited, pass the ones it needs here.
    #[serde(default)]
    pub env: IndexMap<String, Text>,
    /// The working directory; a relative path is read from the workflow file's folder, which
    /// is also the default.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The shell that runs `command` or `script`. Default: `sh`.
    #[serde(default)]
    pub shell: Option<String>,
}

/// A checked `shell` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(try_from = "ShellWith")]
pub struct ShellConfig {
    pub program: Program,
    pub env: IndexMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub shell: String,
}

/// What a `shell` task runs.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
pub enum Program {
    /// A command line for `shell -c`.
    Command(String),
    /// A script file for `shell`, relative to the workflow's folder.
    Script(PathBuf),
}

impl TryFrom<ShellWith> for ShellConfig {
    type Error = String;

    fn try_from(with: ShellWith) -> std::result::Result<Self, String> {
        let program = match (with.command, with.script) {
            (Some(command), None) => Program::Command(command),
            (None, Some(script)) => Program::Script(script),
            (Some(_), Some(_)) => {
                return Err("give either `command` or `script`, not both".into());
            }
            (None, None) => {
                return Err("give the command to run as `command` (or a file as `script`)".into());
            }
        };
        for name in with.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(format!("`{name}` is not a valid environment variable name"));
            }
        }
        Ok(ShellConfig {
            program,
            env: with.env.into_iter().map(|(k, v)| (k, v.0)).collect(),
            cwd: with.cwd,
            shell: with.shell.unwrap_or_else(|| "sh".to_owned()),
        })
    }
}

pub async fn run(ctx: &OpContext, config: ShellConfig) -> Result<Completion> {
    let output_path = output_path(ctx)?;
    let artifacts = ctx.artifacts();
    artifacts
        .prepare()
        .await
        .map_err(|e| OperatorError::failed(e.to_string()))?;
    give_to_task_user(artifacts.dir(), "artifacts folder")?;
    let cwd = match &config.cwd {
        Some(cwd) => ctx.base_dir.join(cwd),
        None => ctx.base_dir.clone(),
    };
    // Checked here because a missing directory makes spawn fail with the same error as a
    // missing shell, which would send the user looking in the wrong place.
    if !cwd.is_dir() {
        return Err(OperatorError::failed(format!(
            "the working directory {} does not exist or is not a folder",
            cwd.display()
        )));
    }

    let overrides_path =
        ctx.env.iter().any(|(k, _)| k == "PATH") || config.env.contains_key("PATH");
    let program = if overrides_path {
        PathBuf::from(&config.shell)
    } else {
        resolve(&config.shell)
    };
    let mut command = try_command(program);
    match &config.program {
        Program::Command(line) => {
            ctx.log
                .system(format!("Running with `{} -c`: {line}", config.shell));
            command.arg("-c").arg(line);
        }
        Program::Script(script) => {
            let path = ctx.base_dir.join(script);
            if !path.is_file() {
                return Err(OperatorError::failed(format!(
                    "the script {} does not exist or is not a file",
                    path.display()
                )));
            }
            ctx.log.system(format!(
                "Running the script {} with `{}`.",
                path.display(),
                config.shell
            ));
            command.arg(path);
        }
    }
    command
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .envs(&config.env)
        .env("SLUICE_RUN_ID", &ctx.run_id)
        .env("SLUICE_WORKFLOW", &ctx.workflow)
        .env("SLUICE_TASK_ID", &ctx.task)
        .env("SLUICE_TRY_NUMBER", ctx.try_number.to_string())
        .env("SLUICE_OUTPUT", &output_path)
        .env("SLUICE_ARTIFACTS", artifacts.dir())
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    // A retry must never run beside an earlier try of its task: one whose process died
    // without a word (a `kill -9`, a lost lease) may have left processes on this machine.
    if ctx.try_number > 1 {
        let (run_id, task, try_number) = (ctx.run_id.clone(), ctx.task.clone(), ctx.try_number);
        let killed =
            tokio::task::spawn_blocking(move || kill_try_processes(&run_id, &task, ..try_number))
                .await
                .unwrap_or(0);
        if killed > 0 {
            ctx.log.system(format!(
                "Killed {killed} process group(s) an earlier try of this task left running."
            ));
        }
    }

    let mut child = command.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (is it installed and on PATH?)"
        } else {
            ""
        };
        OperatorError::failed(format!("could not start `{}`{hint}: {e}", config.shell))
    })?;
    // With `process_group(0)` the group id is the child's pid.
    let mut group = ProcessGroup::watch(child.id().and_then(|id| i32::try_from(id).ok()));

    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(OperatorError::failed(
            "the process's output pipes were not set up",
        ));
    };
    let pumps = async {
        tokio::join!(
            pump(stdout, LogStream::Stdout, ctx.log.clone(), 0),
            pump(
                stderr,
                LogStream::Stderr,
                ctx.log.clone(),
                STDERR_TAIL_LINES
            ),
        )
        .1
    };
    tokio::pin!(pumps);
    let mut stderr_tail: Option<VecDeque<String>> = None;

    let exited = loop {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => break None,
            status = child.wait() => break Some(status),
            tail = &mut pumps, if stderr_tail.is_none() => stderr_tail = Some(tail),
        }
    };

    let Some(status) = exited else {
        // Cancelled: ask the whole group to stop, give it a moment, then force it.
        ctx.log
            .system("The task was cancelled; stopping its processes (SIGTERM).");
        group.signal(libc::SIGTERM);
        let grace = tokio::time::sleep(TERM_GRACE);
        tokio::pin!(grace);
        let mut leader_done = false;
        // Done when the main process has exited and the pipes are closed, which means every
        // process that held them has exited too.
        while !(leader_done && stderr_tail.is_some()) {
            tokio::select! {
                _ = &mut grace => break,
                _ = child.wait(), if !leader_done => leader_done = true,
                tail = &mut pumps, if stderr_tail.is_none() => stderr_tail = Some(tail),
            }
        }
        group.signal(libc::SIGKILL);
        let _ = child.wait().await;
        group.disarm();
        drain(&mut pumps, &mut stderr_tail, &ctx.log).await;
        return Err(OperatorError::Cancelled);
    };

    // The main process has exited: whatever it left running in its group (a background job
    // holding stdout, for instance) goes now, or reading the output would never end.
    //
    // The pid was reaped by `wait`, but its number cannot be handed out again while any process
    // of the group lives; with none left this finds nothing (ESRCH). Only a pid wrap-around
    // within these few microseconds could reach a stranger, which is not a practical concern.
    group.signal(libc::SIGKILL);
    group.disarm();
    drain(&mut pumps, &mut stderr_tail, &ctx.log).await;

    let status = status.map_err(|e| {
        OperatorError::failed(format!("could not wait for the process to finish: {e}"))
    })?;
    check_status(status, stderr_tail.unwrap_or_default(), ctx)?;

    let mut outputs = read_outputs(&output_path)?;
    outputs.insert("exit_code".to_owned(), Value::from(0));
    Ok(Completion {
        outputs,
        exit_code: Some(0),
        ..Completion::default()
    })
}

/// A command for a process a try starts (`shell`, and `eval`'s `command` target): in a process
/// group of its own, so cancelling reaches everything it starts; killed if dropped; without
/// the process's secrets and credentials in its environment; as the task user (`run_as`)
/// when one is set. Callers add the environment, folder and pipes, and watch the group with
/// [`ProcessGroup`].
pub(crate) fn try_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    // Sealed processes (`serve`, `worker`, `run`) no longer hold secrets or credentials in
    // their environment; this also keeps them from tasks where the process was not sealed. A
    // task gets only the secrets its `env` passes explicitly.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(secrets::is_credential) {
            command.env_remove(name);
        }
    }
    if let Some(task_user) = user::task_user() {
        command
            .env("HOME", &task_user.home)
            .env("USER", &task_user.name)
            .env("LOGNAME", &task_user.name);
        // SAFETY: `switch` makes only async-signal-safe syscalls (setgroups, setgid, setuid)
        // on data prepared before the fork.
        unsafe {
            command.pre_exec(move || task_user.switch());
        }
    }
    command.process_group(0).kill_on_drop(true);
    command
}

/// The shell's absolute path, looked up on `PATH` once per name.
///
/// With a bare name and a changed environment, the standard library cannot use `posix_spawn`
/// and falls back to fork + exec, trying every `PATH` entry in the child; forking a large
/// multi-threaded process costs far more than the spawn itself. An absolute path keeps the
/// fast path.
pub(crate) fn resolve(shell: &str) -> PathBuf {
    static RESOLVED: std::sync::OnceLock<std::sync::Mutex<HashMap<String, PathBuf>>> =
        std::sync::OnceLock::new();
    if shell.contains('/') {
        return PathBuf::from(shell);
    }
    let cache = RESOLVED.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(shell.to_owned())
        .or_insert_with(|| {
            std::env::var_os("PATH")
                .and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(shell))
                        .find(|p| p.is_file())
                })
                .unwrap_or_else(|| PathBuf::from(shell))
        })
        .clone()
}

/// Finishes reading stdout and stderr, within [`DRAIN_DEADLINE`].
async fn drain(
    pumps: &mut (impl Future<Output = VecDeque<String>> + Unpin),
    stderr_tail: &mut Option<VecDeque<String>>,
    log: &LogSink,
) {
    if stderr_tail.is_some() {
        return;
    }
    match tokio::time::timeout(DRAIN_DEADLINE, pumps).await {
        Ok(tail) => *stderr_tail = Some(tail),
        Err(_) => log.system(
            "Stopped reading the output: a process outside the task's process group still \
             holds it open.",
        ),
    }
}

fn check_status(status: ExitStatus, stderr_tail: VecDeque<String>, ctx: &OpContext) -> Result<()> {
    let tail = if stderr_tail.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = stderr_tail.iter().map(|l| format!("  {l}")).collect();
        format!("; the last lines of stderr were:\n{}", lines.join("\n"))
    };
    let tail = ctx.masker.mask(&tail).into_owned();
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(OperatorError::Failed {
            message: format!("the command exited with code {code}{tail}"),
            exit_code: Some(code),
        }),
        (None, Some(signal)) => Err(OperatorError::Failed {
            message: format!(
                "the command was killed by signal {signal} ({}){tail}",
                signal_name(signal)
            ),
            exit_code: None,
        }),
        (None, None) => Err(OperatorError::failed(format!(
            "the command ended abnormally{tail}"
        ))),
    }
}

/// Creates the scratch folder and an empty `$SLUICE_OUTPUT` file, named after task and try so
/// retries never read a previous attempt's outputs.
/// `<scratch>/<task>.try<N>.<kind>`: named after task and try, so retries never see a
/// previous attempt's files.
fn scratch_file(ctx: &OpContext, kind: &str) -> PathBuf {
    scratch_path(&ctx.scratch_dir, &ctx.task, ctx.try_number, kind)
}

fn scratch_path(scratch_dir: &Path, task: &str, try_number: u32, kind: &str) -> PathBuf {
    let task: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    scratch_dir.join(format!("{task}.try{try_number}.{kind}"))
}

/// Kills what is left on this machine of a task's tries numbered within `tries`, after the
/// process that ran them died (`kill -9`, a crash) or lost them (an expired lease). Every
/// process a `shell` try starts carries `SLUICE_RUN_ID`, `SLUICE_TASK_ID` and
/// `SLUICE_TRY_NUMBER` in its environment, so the try's process groups are found in `/proc`
/// without any bookkeeping on the hot path, and a reused pid is never hit. Returns how many
/// process groups were killed. Reads `/proc`: call it off the async threads.
pub fn kill_try_processes(run_id: &str, task: &str, tries: impl RangeBounds<u32>) -> usize {
    let expected = [
        format!("SLUICE_RUN_ID={run_id}"),
        format!("SLUICE_TASK_ID={task}"),
    ];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut groups = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let in_tries = vars.iter().any(|var| {
            var.strip_prefix(b"SLUICE_TRY_NUMBER=")
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| tries.contains(&n))
        });
        if in_tries && expected.iter().all(|e| vars.contains(&e.as_bytes())) {
            // SAFETY: getpgid(2) only reads the process table.
            let pgid = unsafe { libc::getpgid(pid) };
            if pgid > 1 {
                groups.insert(pgid);
            }
        }
    }
    groups
        .into_iter()
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the try's own.
        .filter(|pgid| unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0)
        .count()
}

/// Hands a folder the task writes into (its scratch folder, `$SLUICE_ARTIFACTS`) to the
/// `run_as` user, when there is one; a plain syscall, like the `mkdir` before it.
fn give_to_task_user(dir: &Path, what: &str) -> Result<()> {
    let Some(task_user) = user::task_user() else {
        return Ok(());
    };
    std::os::unix::fs::chown(dir, Some(task_user.uid), Some(task_user.gid)).map_err(|e| {
        OperatorError::failed(format!(
            "could not give the {what} {} to the user `{}`: {e}",
            dir.display(),
            task_user.name
        ))
    })
}

fn output_path(ctx: &OpContext) -> Result<PathBuf> {
    // Plain std calls: two fast syscalls on a local folder, cheaper than a trip through
    // tokio's blocking pool.
    std::fs::create_dir_all(&ctx.scratch_dir).map_err(|e| {
        OperatorError::failed(format!(
            "could not create the scratch folder {}: {e}",
            ctx.scratch_dir.display()
        ))
    })?;
    give_to_task_user(&ctx.scratch_dir, "scratch folder")?;
    let path = scratch_file(ctx, "output");
    // Not created up front: a file per task costs more than the task itself on some file
    // systems, and `>> "$SLUICE_OUTPUT"` creates it; a missing file means no outputs. A file
    // left by an earlier run of this same try (handed back at a shutdown) is removed.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(OperatorError::failed(format!(
                "could not clear the output file {}: {e}",
                path.display()
            )));
        }
    }
    Ok(path)
}

fn read_outputs(path: &Path) -> Result<Outputs> {
    let fail =
        |what: String| OperatorError::failed(format!("$SLUICE_OUTPUT ({}) {what}", path.display()));
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        // The command wrote no outputs (the file is created by the first `>>`).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outputs::new()),
        Err(e) => return Err(fail(format!("could not be read: {e}"))),
    };
    if size > MAX_OUTPUT_FILE_BYTES {
        return Err(fail(format!(
            "is {size} bytes; outputs are limited to {MAX_OUTPUT_FILE_BYTES} bytes — write large \
             data to a file and output its path"
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("could not be read: {e}")))?;
    parse_outputs(&text).map_err(fail)
}

/// Parses `$SLUICE_OUTPUT`: a JSON object, or `key=value` lines in the format of GitHub
/// Actions' `$GITHUB_OUTPUT`, including its multi-line form:
///
/// ```text
/// name<<EOF
/// first line
/// second line
/// EOF
/// ```
///
/// Values from lines are strings; write JSON for numbers, lists and maps.
pub fn parse_outputs(text: &str) -> std::result::Result<Outputs, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("is not a JSON object".into()),
            Err(e) => Err(format!("starts with `{{` but is not valid JSON: {e}")),
        };
    }
    let mut outputs = Outputs::new();
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate();
    while let Some((index, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let equals = line.find('=');
        let heredoc = line.find("<<");
        let (key, value) = match (equals, heredoc) {
            // GitHub's rule: whichever of `=` and `<<` comes first decides the form.
            (Some(eq), None) => (&line[..eq], line[eq + 1..].to_owned()),
            (Some(eq), Some(h)) if eq < h => (&line[..eq], line[eq + 1..].to_owned()),
            (_, Some(h)) => {
                let (key, delimiter) = (&line[..h], &line[h + 2..]);
                if delimiter.is_empty() {
                    return Err(format!("line {}: `{key}<<` needs a delimiter", index + 1));
                }
                let mut body: Vec<&str> = Vec::new();
                let mut closed = false;
                for (_, next) in lines.by_ref() {
                    if next == delimiter {
                        closed = true;
                        break;
                    }
                    body.push(next);
                }
                if !closed {
                    return Err(format!(
                        "line {}: the value of `{key}` is never closed by a line `{delimiter}`",
                        index + 1
                    ));
                }
                (key, body.join("\n"))
            }
            (None, None) => {
                return Err(format!(
                    "line {}: expected `key=value` or `key<<DELIMITER`, got `{}`",
                    index + 1,
                    line.chars().take(80).collect::<String>()
                ));
            }
        };
        if key.is_empty() {
            return Err(format!("line {}: the output name is missing", index + 1));
        }
        outputs.insert(key.to_owned(), Value::String(value));
    }
    Ok(outputs)
}

/// Reads one output stream into the log line by line until end of file, and returns its last
/// `keep` lines (for failure messages).
pub(crate) async fn pump(
    reader: impl AsyncRead + Unpin,
    stream: LogStream,
    log: LogSink,
    keep: usize,
) -> VecDeque<String> {
    let mut reader = BufReader::new(reader);
    let mut tail = VecDeque::with_capacity(keep);
    let mut line: Vec<u8> = Vec::new();
    let mut emit = |line: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // Lossy: a task printing binary or another encoding must not fail the task.
        let text = String::from_utf8_lossy(line).into_owned();
        line.clear();
        if keep > 0 {
            if tail.len() == keep {
                tail.pop_front();
            }
            tail.push_back(text.chars().take(STDERR_TAIL_LINE_CHARS).collect());
        }
        log.write(stream, text);
    };
    loop {
        let buffer = match reader.fill_buf().await {
            Ok(buffer) => buffer,
            Err(e) => {
                log.system(format!("Reading {} failed: {e}", stream.as_str()));
                break;
            }
        };
        if buffer.is_empty() {
            if !line.is_empty() {
                emit(&mut line);
            }
            break;
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&buffer[..end]);
                reader.consume(end + 1);
                emit(&mut line);
            }
            None => {
                let len = buffer.len();
                line.extend_from_slice(buffer);
                reader.consume(len);
                if line.len() >= MAX_LINE_BYTES {
                    emit(&mut line);
                }
            }
        }
    }
    tail
}

/// The process group of a running task. Dropping it while armed kills the group, so a task
/// future that is dropped midway (the worker gave up on it) leaves nothing running; while it
/// is armed the reaper knows it, so it dies with this process too.
pub(crate) struct ProcessGroup {
    pgid: Option<i32>,
}

impl ProcessGroup {
    pub(crate) fn watch(pgid: Option<i32>) -> ProcessGroup {
        if let Some(pgid) = pgid {
            reaper::watch(pgid);
        }
        ProcessGroup { pgid }
    }

    pub(crate) fn signal(&self, signal: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the
            // process group. ESRCH (nothing left) is the expected, harmless failure.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }

    /// Forgets the group, which the caller has killed already.
    pub(crate) fn disarm(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            reaper::release(pgid);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        self.disarm();
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL, often the out-of-memory killer",
        libc::SIGSEGV => "SIGSEGV, a crash",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "unknown signal",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::super::support::test_support::{context, lines, wait_for};
    use super::*;
    use crate::operators::Operator;

    fn config(with: Value) -> ShellConfig {
        serde_json::from_value(with).expect("a valid config")
    }

    /// Whether a process exists and is not a zombie (an exited child not yet reaped, which is
    /// what a killed grandchild is until init collects it).
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim().chars().next());
                !matches!(state, Some('Z' | 'X'))
            }
            Err(_) => false,
        }
    }

    #[test]
    fn config_requires_exactly_one_program() {
        let err = |with: Value| Operator::Shell.check_config(with).unwrap_err().to_string();
        assert!(err(json!({})).contains("give the command to run as `command`"));
        assert!(err(json!({"command": "a", "script": "b"})).contains("not both"));
        assert!(err(json!({"comand": "a"})).contains("unknown field `comand`"));
        assert!(err(json!({"command": "a", "env": {"A=B": "x"}})).contains("not a valid"));
        let c = config(json!({"command": "true", "env": {"N": 3, "B": true, "L": [1], "E": null}}));
        assert_eq!(c.program, Program::Command("true".into()));
        assert_eq!(c.shell, "sh");
        let env: Vec<_> = c
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("N", "3"), ("B", "true"), ("L", "[1]"), ("E", "")]);
    }

    #[test]
    fn schema_is_the_documented_with() {
        let schema = serde_json::to_value(schemars::schema_for!(ShellConfig)).unwrap();
        assert_eq!(schema["additionalProperties"], json!(false), "{schema}");
        for field in ["command", "script", "env", "cwd", "shell"] {
            let doc = &schema["properties"][field]["description"];
            assert!(
                doc.as_str().is_some_and(|d| !d.is_empty()),
                "{field}: {schema}"
            );
        }
    }

    #[test]
    fn outputs_in_github_format() {
        let text = "a=1\r\nb=x=y\n\nmulti<<EOF\nline 1\nline 2\nEOF\nempty=\n";
        assert_eq!(
            Value::Object(parse_outputs(text).unwrap()),
            json!({"a": "1", "b": "x=y", "multi": "line 1\nline 2", "empty": ""})
        );
        assert_eq!(
            Value::Object(parse_outputs("k<<X\nX\n").unwrap()),
            json!({"k": ""})
        );
        assert!(
            parse_outputs("k<<EOF\nno end\n")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            parse_outputs("just words\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_outputs("=v\n")
                .unwrap_err()
                .contains("name is missing")
        );
        assert!(
            parse_outputs("{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse_outputs("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn outputs_from_json_and_key_value_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let done = run(
            &ctx,
            config(json!({"command": r#"echo '{"n": 3, "list": [1, 2]}' > "$SLUICE_OUTPUT""#})),
        )
        .await
        .unwrap();
        assert_eq!(
            Value::Object(done.outputs),
            json!({"n": 3, "list": [1, 2], "exit_code": 0})
        );
        assert_eq!(done.exit_code, Some(0));

        let script = r#"echo "model=gpt" >> "$SLUICE_OUTPUT"
{ echo "notes<<END"; echo "a"; echo "b"; echo "END"; } >> "$SLUICE_OUTPUT""#;
        let done = run(&ctx, config(json!({"command": script}))).await.unwrap();
        assert_eq!(
            Value::Object(done.outputs),
            json!({"model": "gpt", "notes": "a\nb", "exit_code": 0})
        );
    }

    #[tokio::test]
    async fn streams_stdout_and_stderr_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, mut rx) = context(dir.path());
        run(
            &ctx,
            config(json!({"command": "echo one; echo two >&2; printf 'three'"})),
        )
        .await
        .unwrap();
        let mut logged = Vec::new();
        while let Ok(line) = rx.try_recv() {
            logged.push((line.stream, line.text));
        }
        let got: Vec<_> = logged
            .iter()
            .map(|(stream, text)| (*stream, text.as_str()))
            .collect();
        assert!(got.contains(&(LogStream::Stdout, "one")));
        assert!(got.contains(&(LogStream::Stderr, "two")));
        assert!(got.contains(&(LogStream::Stdout, "three")));
    }

    #[tokio::test]
    async fn non_zero_exit_reports_code_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let cmd = "for i in 1 2 3 4 5 6 7; do echo \"err $i\" >&2; done; exit 3";
        match run(&ctx, config(json!({"command": cmd}))).await {
            Err(OperatorError::Failed { message, exit_code }) => {
                assert_eq!(exit_code, Some(3));
                assert!(
                    message.starts_with("the command exited with code 3"),
                    "{message}"
                );
                assert!(
                    message.contains("err 7") && message.contains("err 3"),
                    "{message}"
                );
                assert!(!message.contains("err 2"), "only the last lines: {message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn killed_by_signal_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        match run(&ctx, config(json!({"command": "kill -SEGV $$"}))).await {
            Err(OperatorError::Failed {
                message,
                exit_code: None,
            }) => {
                assert!(message.contains("signal 11 (SIGSEGV"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let pidfile = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cancel = ctx.cancel.clone();
        let task =
            tokio::spawn(async move { run(&ctx, config(json!({"command": command}))).await });

        let read_pid = || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        assert!(wait_for(Duration::from_secs(5), || read_pid().is_some()).await);
        let pid: i32 = read_pid().unwrap();
        assert!(alive(pid));

        let started = Instant::now();
        cancel.cancel();
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(OperatorError::Cancelled)),
            "{result:?}"
        );
        assert!(
            wait_for(Duration::from_secs(5), || !alive(pid)).await,
            "grandchild {pid} survived"
        );
        // `sleep` dies of SIGTERM at once: no need to sit out the grace period.
        assert!(started.elapsed() < TERM_GRACE, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn cancel_escalates_to_sigkill_when_sigterm_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let cancel = ctx.cancel.clone();
        let ready = dir.path().join("ready");
        let command = format!(
            "trap '' TERM; touch {}; while :; do sleep 0.05; done",
            ready.display()
        );
        let task =
            tokio::spawn(async move { run(&ctx, config(json!({"command": command}))).await });
        assert!(wait_for(Duration::from_secs(5), || ready.exists()).await);
        cancel.cancel();
        let result = tokio::time::timeout(TERM_GRACE * 3, task)
            .await
            .expect("stops")
            .unwrap();
        assert!(
            matches!(result, Err(OperatorError::Cancelled)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn background_orphan_does_not_hang_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let pidfile = dir.path().join("pid");
        // The background `sleep` inherits stdout; without the group kill the task would wait
        // for it to close the pipe, 30 seconds later.
        let command = format!("sleep 30 & echo $! > {}; echo done", pidfile.display());
        let started = Instant::now();
        let done = run(&ctx, config(json!({"command": command})))
            .await
            .unwrap();
        assert_eq!(done.exit_code, Some(0));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(wait_for(Duration::from_secs(5), || !alive(pid)).await);
    }

    #[tokio::test]
    async fn a_retry_first_kills_what_an_earlier_try_left_running() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, mut rx) = context(dir.path());
        // A run of its own, so that no other test's processes match.
        ctx.run_id = format!("run-{}", uuid::Uuid::new_v4());
        let leftover = |try_number: &str| {
            std::process::Command::new("sleep")
                .arg("30")
                .env("SLUICE_RUN_ID", &ctx.run_id)
                .env("SLUICE_TASK_ID", &ctx.task)
                .env("SLUICE_TRY_NUMBER", try_number)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        // What a first try cut off by a crash left, and a process of a later try, which is
        // none of this try's business.
        let mut earlier = leftover("1");
        let mut later = leftover("3");
        ctx.try_number = 2;
        run(&ctx, config(json!({"command": "true"}))).await.unwrap();
        // Killed before the retry started (the log says so); reaped here once it is gone.
        let mut earlier_status = None;
        let reaped = wait_for(Duration::from_secs(5), || {
            earlier_status = earlier.try_wait().unwrap();
            earlier_status.is_some()
        })
        .await;
        assert!(
            reaped && earlier_status.is_some_and(|s| s.signal() == Some(libc::SIGKILL)),
            "{earlier_status:?}"
        );
        assert_eq!(
            later.try_wait().unwrap(),
            None,
            "a later try's process was killed"
        );
        later.kill().unwrap();
        later.wait().unwrap();
        let system = lines(&mut rx, LogStream::System);
        assert!(
            system.iter().any(|l| l.contains("Killed 1 process group")),
            "{system:?}"
        );
    }

    #[tokio::test]
    async fn env_cwd_and_sluice_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (mut ctx, _rx) = context(dir.path());
        ctx.env = vec![
            ("FROM_TASK".into(), "task".into()),
            ("BOTH".into(), "task".into()),
        ];
        let command = r#"{
          echo "task=$FROM_TASK"; echo "both=$BOTH"; echo "n=$N"; echo "pwd=$(pwd)"
          echo "run=$SLUICE_RUN_ID"; echo "wf=$SLUICE_WORKFLOW"; echo "id=$SLUICE_TASK_ID"
          echo "try=$SLUICE_TRY_NUMBER"
        } >> "$SLUICE_OUTPUT""#;
        let with = json!({"command": command, "cwd": "sub", "env": {"BOTH": "with", "N": 5}});
        let outputs = run(&ctx, config(with)).await.unwrap().outputs;
        let sub = dir.path().join("sub").canonicalize().unwrap();
        assert_eq!(
            Value::Object(outputs),
            json!({"task": "task", "both": "with", "n": "5", "pwd": sub.display().to_string(),
                   "run": "run-1", "wf": "wf", "id": "t", "try": "1", "exit_code": 0})
        );
        let missing = run(&ctx, config(json!({"command": "true", "cwd": "nope"}))).await;
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("working directory")
        );
    }

    #[tokio::test]
    async fn runs_a_script_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(
            dir.path().join("scripts/job.sh"),
            "echo \"where=$(basename \"$(pwd)\")\" >> \"$SLUICE_OUTPUT\"\n",
        )
        .unwrap();
        let (ctx, mut rx) = context(dir.path());
        let done = run(&ctx, config(json!({"script": "scripts/job.sh"})))
            .await
            .unwrap();
        let base = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert_eq!(
            Value::Object(done.outputs),
            json!({"where": base, "exit_code": 0})
        );
        assert!(lines(&mut rx, LogStream::System)[0].contains("job.sh"));
        let missing = run(&ctx, config(json!({"script": "nope.sh"})))
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("nope.sh does not exist"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn missing_shell_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let err = run(
            &ctx,
            config(json!({"command": "true", "shell": "no-such-shell-x"})),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("could not start `no-such-shell-x`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_chain_of_true_is_fast() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(dir.path());
        let started = Instant::now();
        for _ in 0..40 {
            run(&ctx, config(json!({"command": "true"}))).await.unwrap();
        }
        // The benchmark budget is 100 ms for 40 tasks including scheduling; leave room for a
        // loaded test machine while still catching a sleep or a poll sneaking in.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
