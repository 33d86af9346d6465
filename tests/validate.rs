//! `sluice validate`, driven through the real binary: the invalid fixtures with their expected
//! diagnostics, the shipped workflows, directories, exit codes, warnings and speed; and the
//! `shell_quote` filter those warnings point to, through `sluice run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluice(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("validate")
        .args(args)
        .output()
        .expect("the sluice binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `tests/fixtures/invalid/NAME.yaml` fails with exactly the lines in `NAME.expected`
/// (the path prefix removed, the summary line left out).
#[test]
fn invalid_fixtures_report_the_expected_diagnostics() {
    let dir = root().join("tests/fixtures/invalid");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 25, "only {} fixtures", fixtures.len());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let expected_path = fixture.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", fixture.display()));
        let output = sluice(&[fixture]);
        let prefix = format!("{}:", fixture.display());
        let text = stderr(&output);
        let actual: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("1 file"))
            .map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_owned())
            .collect();
        let expected: Vec<&str> = expected.lines().collect();
        if output.status.code() != Some(1) || actual != expected {
            failures.push(format!(
                "{}: exit {:?}\n--- expected\n{}\n--- actual\n{}",
                fixture.display(),
                output.status.code(),
                expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shipped_workflow_validates() {
    let output = sluice(&[&root().join("workflows")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("all valid"));
}

#[test]
fn a_broken_file_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "tasks:\n  a: {operator: noop}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nested/broken.yml"),
        "tasks:\n  a: {operator: nope}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a workflow").unwrap();
    let output = sluice(&[dir.path()]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("broken.yml:2:17: error: `operator` must be one of"),
        "{text}"
    );
    assert!(!text.contains("good.yaml"), "{text}");
    assert!(text.contains("2 files, 1 with errors"), "{text}");
}

/// A shell command (or an `eval` command target) that pastes in a free-text param or the
/// webhook payload gets a warning at the command; quoted, enum-bound or numeric values do not, and the exit code stays 0.
#[test]
fn unquoted_free_text_in_a_shell_command_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("risky.yaml");
    std::fs::write(
        &file,
        r#"params:
  p: { type: string, default: x }
  size: { type: string, default: small, enum: [small, large] }
  n: { type: integer, default: 1 }
tasks:
  risky:
    operator: shell
    with:
      command: "echo 'B={{ params.p }}' {{ event.pull_request.head.ref }} {{ params.p }}"
  safe:
    operator: shell
    env: { P: "{{ params.p }}", REF: "{{ event.pull_request.head.ref }}" }
    with:
      command: echo {{ params.p | shell_quote }} {{ params.size }} {{ params.n }} "$P" "$REF"
  scored:
    operator: eval
    with:
      dataset: golden.jsonl
      target: { command: "python3 answer.py --tag {{ params.p }}" }
      metrics: [exact_match]
"#,
    )
    .unwrap();
    let output = sluice(&[&file]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let prefix = format!("{}:", file.display());
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l))
        .collect();
    assert_eq!(
        lines,
        [
            "9:16: warning: `with.command` puts `params.p` into a shell command unquoted; a value holding `'`, `;` or `$(…)` would run as shell code",
            "  help: pass it through `env` (`env: { VALUE: \"{{ params.p }}\" }`, then \"$VALUE\" in the command) or write `{{ params.p | shell_quote }}`",
            "9:16: warning: `with.command` puts `event.pull_request.head.ref` into a shell command unquoted; a value holding `'`, `;` or `$(…)` would run as shell code",
            "  help: pass it through `env` (`env: { VALUE: \"{{ event.pull_request.head.ref }}\" }`, then \"$VALUE\" in the command) or write `{{ event.pull_request.head.ref | shell_quote }}`",
            "19:26: warning: `with.target.command` puts `params.p` into a shell command unquoted; a value holding `'`, `;` or `$(…)` would run as shell code",
            "  help: pass it through `env` (`env: { VALUE: \"{{ params.p }}\" }`, then \"$VALUE\" in the command) or write `{{ params.p | shell_quote }}`",
            "1 file, all valid",
        ],
        "{text}"
    );
}

/// The injection a pasted param allows (`x'; echo INJECTED-$(id -u); echo '` inside
/// `'B=…'`) does not happen through `shell_quote`: the command sees the literal text.
#[test]
fn a_shell_quoted_param_reaches_the_command_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quoted.yaml");
    std::fs::write(
        &file,
        r#"params:
  p: { type: string }
tasks:
  quoted:
    operator: shell
    with:
      command: |
        echo B={{ params.p | shell_quote }}
        printf 'b=%s\n' {{ params.p | shell_quote }} >> "$SLUICE_OUTPUT"
"#,
    )
    .unwrap();
    let hostile = "x'; echo INJECTED-$(id -u); echo '";
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir.path())
        .env("SLUICE_DATABASE_URL", dir.path().join("sluice.db"))
        .args(["run", "--json", "-p"])
        .arg(format!("p={hostile}"))
        .arg(&file)
        .output()
        .expect("the sluice binary runs");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json output");
    let task = &json["tasks"]["quoted"];
    assert_eq!(task["state"], "success", "{json}");
    assert_eq!(task["outputs"]["b"], hostile, "{json}");
    let logs = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir.path())
        .env("SLUICE_DATABASE_URL", dir.path().join("sluice.db"))
        .args(["logs"])
        .arg(json["run_id"].as_str().expect("a run id"))
        .output()
        .expect("sluice logs runs");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains(&format!("B={hostile}")), "{logs}");
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    assert!(!logs.contains(&format!("INJECTED-{uid}")), "{logs}");
}

#[test]
fn a_missing_path_is_a_usage_error() {
    let output = sluice(&[Path::new("/definitely/not/here.yaml")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("does not exist"));
}

#[test]
fn duplicate_workflow_ids_across_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "id: same\ntasks: {t: {operator: noop}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "id: same\ntasks: {t: {operator: noop}}\n",
    )
    .unwrap();
    let output = sluice(&[dir.path()]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("b.yaml:1:1: error: the workflow id `same` is already used by"),
        "{text}"
    );
}

/// A thousand ten-task files validate in well under a second in a release build
/// (BENCHMARKS.md); this unoptimised build gets a loose bound that still catches a blow-up.
/// CPU time is measured rather than wall time, so a busy machine does not fail the test.
#[test]
fn validating_a_thousand_files_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from(
        "schedule: \"*/5 * * * *\"\nparams: {x: {type: integer, default: 1}}\ndefaults: {retries: 1, timeout: 5m}\ntasks:\n",
    );
    for i in 0..10 {
        if i == 0 {
            body.push_str("  t0: {operator: shell, with: {command: \"echo {{ params.x }}\"}}\n");
        } else {
            body.push_str(&format!(
                "  t{i}: {{operator: noop, needs: [t{}]}}\n",
                i - 1
            ));
        }
    }
    for i in 0..1000 {
        std::fs::write(dir.path().join(format!("wf_{i:04}.yaml")), &body).unwrap();
    }
    // Reaped by wait4 below, which std cannot do while reporting the child's own CPU time.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("validate")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sluice validate");
    // wait4 reports this child's own CPU time; other tests' children do not count.
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers to the two out-parameters.
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as libc::pid_t, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "validate failed: {status}"
    );
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    assert!(cpu < 6.0, "took {cpu:.2} s of CPU");
}

/// Regression: checking for cycles recursed once per task, so `sluice validate` of a valid
/// 10,000-task chain overflowed its stack and aborted; a cycle as long is named too.
#[test]
fn a_ten_thousand_task_chain_validates_and_as_long_a_cycle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let chain = |closed: bool| {
        let mut body = String::from("tasks:\n");
        for i in 0..10_000 {
            let needs = match (i, closed) {
                (0, false) => String::new(),
                (0, true) => ", needs: [t9999]".to_owned(),
                _ => format!(", needs: [t{}]", i - 1),
            };
            body.push_str(&format!("  t{i}: {{operator: noop{needs}}}\n"));
        }
        body
    };
    std::fs::write(dir.path().join("chain.yaml"), chain(false)).unwrap();
    std::fs::write(dir.path().join("cycle.yaml"), chain(true)).unwrap();
    let validate = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("validate")
            .arg(dir.path().join(file))
            .output()
            .expect("run sluice validate")
    };
    let valid = validate("chain.yaml");
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    let cycle = validate("cycle.yaml");
    let stderr = String::from_utf8_lossy(&cycle.stderr);
    assert_eq!(cycle.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tasks t0 -> t9999 -> t9998")
            && stderr.contains("-> t1 -> t0 form a cycle"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
}
