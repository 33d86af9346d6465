//! `sluice validate`, driven through the real binary: the invalid fixtures with their expected
//! diagnostics, the shipped workflows, directories, exit codes and speed.

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
    let mut body =
        String::from("schedule: \"*/5 * * * *\"\ndefaults: {retries: 1, timeout: 5m}\ntasks:\n");
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
