//! The command line as a newcomer meets it, following the README: the quick start's API
//! example, `--bind`, exit codes, debugging a failed run, `validate` on empty paths, the
//! messages, users, completions, the man page and `sluice doctor`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Sandbox;
use common::server::{Server, TOKEN, client};

/// The shipped example workflow, as the README runs it.
const HELLO: &str = include_str!("../workflows/hello.yaml");

fn sandbox_with_hello() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("workflows/hello.yaml", HELLO);
    sb
}

/// `sluice serve` started as the README starts it (no `SLUICE_LOG`), with `args`, and every
/// line it writes to stderr until it listens. Returns the child and the address it serves.
fn serve_as_documented(sb: &Sandbox, args: &[&str]) -> (Child, String, Vec<String>) {
    let mut child = sb
        .command()
        .arg("serve")
        .args(args)
        .env("SLUICE_ADMIN_PASSWORD", "tide-lantern-orbit")
        .env_remove("SLUICE_API_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sluice serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let address = line
                    .split("serving on http://")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(|a| a.trim_end_matches('"').to_owned());
                lines.push(line);
                if let Some(address) = address {
                    return (child, address, lines);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start:\n{}", lines.join("\n"));
            }
        }
    }
}

#[test]
fn the_readme_quick_start_sets_the_token_its_api_example_sends() {
    let readme = include_str!("../README.md");
    let quick_start = readme
        .split("## Two commands")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a quick start section");
    assert!(
        quick_start.contains("SLUICE_API_TOKEN=") && quick_start.contains("sluice serve"),
        "the quick start must start `serve` with a token:\n{quick_start}"
    );
    assert!(
        quick_start.contains("cargo install --locked --path ."),
        "the quick start must say how `sluice` gets on the PATH"
    );
    assert!(readme.contains("Authorization: Bearer $SLUICE_API_TOKEN"));
}

/// A server with no token refuses changes with a message naming keys the configuration
/// accepts, reads stay open, and the CLI's message names its own flag and variable.
#[tokio::test]
async fn a_server_without_a_token_says_how_to_configure_one() {
    let sb = sandbox_with_hello();
    let server = Server::start_with(&sb, &[], &[("SLUICE_API_TOKEN", "")]);
    let http = client();
    let read = http
        .get(format!("{}/api/v1/workflows/hello", server.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(read.status().as_u16(), 200, "reads are open without tokens");
    let refused = http
        .post(format!("{}/api/v1/workflows/hello/runs", server.base))
        .json(&serde_json::json!({"params": {}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 401);
    let body: serde_json::Value = refused.json().await.expect("JSON");
    let message = body["error"].as_str().expect("a message");
    assert!(!message.contains("api_tokens"), "{message}");
    assert!(
        message.contains("SLUICE_API_TOKEN") && message.contains("under `[api]`"),
        "{message}"
    );
    // The key the message names is one the configuration accepts.
    sb.write("sluice.toml", "[api]\ntokens = [\"from-the-file\"]\n");
    let doctor = sb
        .command()
        .arg("doctor")
        .env_remove("SLUICE_API_TOKEN")
        .output()
        .expect("doctor");
    let doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(doctor.contains("ok    config"), "{doctor}");
    assert!(doctor.contains("1 token(s) configured"), "{doctor}");
    std::fs::remove_file(sb.path().join("sluice.toml")).expect("remove sluice.toml");

    let cli = sb
        .command()
        .args(["trigger", "hello", "--server", &server.base])
        .env_remove("SLUICE_API_TOKEN")
        .output()
        .expect("trigger");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--token") && stderr.contains("SLUICE_API_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("Authorization"), "{stderr}");
}

/// Exit codes as the README documents them, `trigger --wait` in words, `runs` as a table,
/// and the missing-token message of the CLI.
#[test]
fn trigger_exit_codes_and_messages_follow_the_readme() {
    let sb = sandbox_with_hello();
    sb.write(
        "workflows/broken.yaml",
        "tasks:\n  a: { operator: shell, with: { command: \"exit 4\" } }\n",
    );
    let server = Server::start(&sb);
    let trigger = |args: &[&str], token: Option<&str>| {
        let mut cmd = sb.command();
        cmd.arg("trigger")
            .args(args)
            .args(["--server", &server.base])
            .env_remove("SLUICE_API_TOKEN");
        if let Some(token) = token {
            cmd.env("SLUICE_API_TOKEN", token);
        }
        common::Finished::from(cmd.output().expect("trigger"))
    };
    let out_of_range = trigger(&["hello", "-p", "repeat=9"], Some(TOKEN));
    assert_eq!(out_of_range.code, 2, "{}", out_of_range.stderr);
    // The same words as `sluice run` (and the web UI's trigger form) use for the problem.
    let run = sb.sluice(&["run", "workflows/hello.yaml", "-p", "repeat=9"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let problem = run.stderr.trim().trim_start_matches("error: ");
    assert_eq!(problem, "param `repeat`: must be at most 5, got 9");
    assert!(
        out_of_range.stderr.contains(problem),
        "{}",
        out_of_range.stderr
    );
    assert!(
        !out_of_range.stderr.contains("422"),
        "{}",
        out_of_range.stderr
    );
    let unknown = trigger(&["no_such_workflow"], Some(TOKEN));
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown
            .stderr
            .contains("there is no workflow `no_such_workflow`"),
        "{}",
        unknown.stderr
    );
    let malformed = trigger(&["hello", "-p", "novalue"], Some(TOKEN));
    assert_eq!(malformed.code, 2, "{}", malformed.stderr);

    let no_token = trigger(&["hello"], None);
    assert_eq!(no_token.code, 1, "{}", no_token.stderr);
    assert!(
        no_token
            .stderr
            .contains("pass `--token TOKEN` or set SLUICE_API_TOKEN"),
        "{}",
        no_token.stderr
    );
    let wrong_token = trigger(&["hello"], Some("not-the-token"));
    assert_eq!(wrong_token.code, 1, "{}", wrong_token.stderr);
    assert!(
        wrong_token.stderr.contains("did not accept the API token"),
        "{}",
        wrong_token.stderr
    );

    let waited = trigger(&["hello", "-p", "name=Ada", "--wait"], Some(TOKEN));
    assert_eq!(waited.code, 0, "{}", waited.stderr);
    assert!(waited.stderr.contains(" succeeded."), "{}", waited.stderr);
    assert!(!waited.stderr.contains("is success"), "{}", waited.stderr);

    let failed = trigger(&["broken", "--wait"], Some(TOKEN));
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stderr.contains(" failed."), "{}", failed.stderr);
    assert!(failed.stderr.contains("sluice logs "), "{}", failed.stderr);

    let runs = sb
        .command()
        .args(["runs", "--server", &server.base])
        .env("SLUICE_API_TOKEN", TOKEN)
        .output()
        .expect("runs");
    let table = String::from_utf8_lossy(&runs.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two runs:\n{table}");
    let column = |line: &str, word: &str| line.find(word).expect(word);
    let row = |workflow: &str| {
        *lines
            .iter()
            .find(|l| l.contains(workflow))
            .unwrap_or_else(|| panic!("no run of {workflow}:\n{table}"))
    };
    let (hello, broken) = (row("hello"), row("broken"));
    assert_eq!(
        column(lines[0], "WORKFLOW"),
        column(hello, "hello"),
        "{table}"
    );
    assert_eq!(
        column(lines[0], "WORKFLOW"),
        column(broken, "broken"),
        "{table}"
    );
    assert_eq!(
        column(lines[0], "STATE"),
        column(hello, "success"),
        "{table}"
    );
    assert_eq!(
        column(lines[0], "STATE"),
        column(broken, "failed"),
        "{table}"
    );
    let date = hello[column(lines[0], "LOGICAL DATE")..].trim();
    assert!(
        chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S").is_ok(),
        "a date to the second, not `{date}`"
    );
}

/// `serve` as the README starts it: a host name for `--bind`, and one line, not a page,
/// about the migrations of a new database. A bind address without a port says what to write.
#[test]
fn serve_binds_host_names_and_starts_quietly() {
    let sb = sandbox_with_hello();
    let (mut child, address, lines) =
        serve_as_documented(&sb, &["--workflows", "workflows", "--bind", "localhost:0"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        address.starts_with("127.0.0.1:") || address.starts_with("[::1]:"),
        "{address}"
    );
    let about_migrations = lines
        .iter()
        .filter(|l| l.to_lowercase().contains("migration"))
        .count();
    assert_eq!(about_migrations, 1, "{}", lines.join("\n"));

    let no_port = sb.sluice(&["serve", "--bind", "localhost"]);
    assert_eq!(no_port.code, 2, "{}", no_port.stderr);
    assert!(
        no_port.stderr.contains("has no port") && no_port.stderr.contains("127.0.0.1:8080"),
        "{}",
        no_port.stderr
    );
}

/// What someone debugging a failed `sluice run` needs is printed, and every failure, a
/// template error included, is in the task's log.
#[test]
fn a_failed_run_says_why_and_where_to_look() {
    let sb = Sandbox::new();
    let failing = sb.write(
        "failing.yaml",
        "tasks:\n  ok: { operator: noop }\n  boom:\n    operator: shell\n    needs: [ok]\n    \
         with: { command: \"echo first >&2; echo 'it broke here' >&2; exit 3\" }\n  \
         stuck:\n    operator: shell\n    timeout: 1s\n    \
         with: { command: \"echo 'waiting for the lock' >&2; sleep 30\" }\n",
    );
    let run = sb.run_json(&failing, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run_id = run.json()["run_id"].as_str().expect("run id").to_owned();
    assert!(
        run.stderr
            .contains("Task `boom` failed (try 1, exit code 3)"),
        "{}",
        run.stderr
    );
    // The shell error carries its stderr: said once, not twice.
    assert_eq!(
        run.stderr.matches("it broke here").count(),
        1,
        "{}",
        run.stderr
    );
    // A timeout's error does not: the log's last stderr lines follow it.
    assert!(
        run.stderr.contains(
            "Task `stuck` failed (try 1): the task timed out after 1s and was killed\n  \
             last line of stderr:\n    waiting for the lock\n"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("sluice logs {run_id} stuck")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("sluice logs {run_id} boom")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("Run {run_id} failed")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Task `ok`"), "{}", run.stderr);

    let typo = sb.write(
        "typo.yaml",
        "tasks:\n  ok: { operator: noop }\n  greet:\n    operator: shell\n    needs: [ok]\n    \
         with: { command: \"echo {{ tasks.ok.outputs.nme }}\" }\n",
    );
    let run = sb.run_json(&typo, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run_id = run.json()["run_id"].as_str().expect("run id").to_owned();
    let logs = sb.sluice(&["logs", &run_id, "greet"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(
        logs.stdout
            .contains("greet#1 system: The task failed: cannot render `with.command`"),
        "the template error belongs in the log:\n{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("nme"), "{}", logs.stdout);

    let no_task = sb.sluice(&["logs", &run_id, "nosuchtask"]);
    assert_eq!(no_task.code, 1, "{}", no_task.stdout);
    assert!(
        no_task.stderr.contains(&format!(
            "run `{run_id}` has no task `nosuchtask`; its tasks: ok, greet"
        )),
        "{}",
        no_task.stderr
    );
    let no_run = sb.sluice(&["logs", "nosuchrun"]);
    assert_eq!(no_run.code, 1);
    assert!(
        no_run
            .stderr
            .contains("there is no run with id `nosuchrun`"),
        "{}",
        no_run.stderr
    );
}

/// A wrong path must not pass as valid, and a missing file reads the same from `validate`
/// and `run`.
#[test]
fn validate_refuses_paths_without_workflows_and_missing_files_read_alike() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("empty")).expect("mkdir");
    let empty = sb.sluice(&["validate", "empty"]);
    assert_eq!(empty.code, 2, "{}", empty.stderr);
    assert!(
        empty
            .stderr
            .contains("no workflow files (*.yaml, *.yml) in `empty`"),
        "{}",
        empty.stderr
    );
    sb.write("notes/readme.txt", "not a workflow");
    let no_yaml = sb.sluice(&["validate", "notes"]);
    assert_eq!(no_yaml.code, 2, "{}", no_yaml.stderr);
    assert!(!no_yaml.stderr.contains("all valid"), "{}", no_yaml.stderr);

    let validate = sb.sluice(&["validate", "missing.yaml"]);
    let run = sb.sluice(&["run", "missing.yaml"]);
    assert_eq!((validate.code, run.code), (2, 2));
    assert_eq!(
        validate.stderr.trim(),
        "error: `missing.yaml` does not exist"
    );
    assert_eq!(run.stderr.trim(), validate.stderr.trim());
}

#[test]
fn help_says_serve_also_serves_the_web_ui() {
    let sb = Sandbox::new();
    let help = sb.sluice(&["--help"]);
    assert_eq!(help.code, 0);
    let serve = help
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("serve "))
        .expect("a serve line");
    assert!(serve.contains("web UI"), "{serve}");
}

/// Adds a user through the binary, the password on stdin.
fn user_add(sb: &Sandbox, name: &str, role: &str, password: &str) -> common::Finished {
    let mut child = sb
        .command()
        .args(["user", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    child.wait_with_output().expect("user add ends").into()
}

#[test]
fn users_need_strong_passwords_and_can_be_listed_and_removed() {
    let sb = Sandbox::new();
    for role in ["viewer", "operator", "admin"] {
        let short = user_add(&sb, "ann", role, "abc123");
        assert_eq!(short.code, 2, "{role}: {}", short.stderr);
        assert!(
            short.stderr.contains("at least 8 characters"),
            "{}",
            short.stderr
        );
        let common = user_add(&sb, "ann", role, "Password123");
        assert_eq!(common.code, 2, "{role}: {}", common.stderr);
        assert!(common.stderr.contains("most common"), "{}", common.stderr);
    }
    let nobody = sb.sluice(&["user", "list"]);
    assert_eq!(nobody.code, 0, "{}", nobody.stderr);
    assert!(nobody.stdout.is_empty() && nobody.stderr.contains("No users"));

    assert_eq!(
        user_add(&sb, "ann", "operator", "tide-lantern-orbit").code,
        0
    );
    assert_eq!(user_add(&sb, "bo", "viewer", "quiet-harbour-73").code, 0);
    let listed = sb.sluice(&["user", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let rows: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..2], ["NAME", "ROLE"]);
    assert_eq!(rows[1][..2], ["ann", "operator"]);
    assert_eq!(rows[2][..2], ["bo", "viewer"]);
    assert!(
        !listed.stdout.contains("argon2"),
        "no hashes: {}",
        listed.stdout
    );

    let removed = sb.sluice(&["user", "remove", "ann"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let listed = sb.sluice(&["user", "list"]);
    assert!(!listed.stdout.contains("ann"), "{}", listed.stdout);
    let again = sb.sluice(&["user", "remove", "ann"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("there is no user `ann`"),
        "{}",
        again.stderr
    );
    let admin = sb.sluice(&["user", "remove", "admin"]);
    assert_eq!(admin.code, 2, "{}", admin.stderr);
    assert!(
        admin.stderr.contains("SLUICE_ADMIN_PASSWORD"),
        "{}",
        admin.stderr
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let sb = Sandbox::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef sluice"),
        ("fish", "complete -c sluice"),
    ] {
        let script = sb.sluice(&["completions", shell]);
        assert_eq!(script.code, 0, "{shell}: {}", script.stderr);
        assert!(script.stdout.contains(marker), "{shell}");
        for command in ["serve", "doctor", "trigger"] {
            assert!(script.stdout.contains(command), "{shell} lacks {command}");
        }
    }
    let unknown = sb.sluice(&["completions", "tcsh"]);
    assert_eq!(unknown.code, 2);

    let page = sb.sluice(&["man"]);
    assert_eq!(page.code, 0, "{}", page.stderr);
    assert!(page.stdout.contains(".TH sluice 1"), "{}", page.stdout);
    assert!(page.stdout.contains("doctor"), "every command is listed");
    let sub = sb.sluice(&["man", "user", "add"]);
    assert_eq!(sub.code, 0, "{}", sub.stderr);
    assert!(
        sub.stdout.contains(".TH sluice-user-add 1"),
        "{}",
        sub.stdout
    );
    assert!(sub.stdout.contains("\\-\\-role"), "{}", sub.stdout);
    let missing = sb.sluice(&["man", "nosuch"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("has no command `nosuch`"),
        "{}",
        missing.stderr
    );
}

#[test]
fn doctor_says_what_to_fix() {
    let sb = Sandbox::new();
    // A port nobody listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    sb.write(
        "sluice.toml",
        &format!("[smtp]\nhost = \"127.0.0.1\"\nport = {closed}\ntls = \"none\"\nfrom = \"s@example.com\"\n"),
    );
    let doctor = |env: &[(&str, &str)]| {
        let mut cmd = sb.command();
        cmd.arg("doctor")
            .env_remove("SLUICE_API_TOKEN")
            .env_remove("SLUICE_ADMIN_PASSWORD")
            .envs(env.iter().copied());
        common::Finished::from(cmd.output().expect("doctor"))
    };
    let sick = doctor(&[]);
    assert_eq!(sick.code, 1, "{}\n{}", sick.stdout, sick.stderr);
    assert!(
        sick.stdout.contains("ok    config: ./sluice.toml is valid"),
        "{}",
        sick.stdout
    );
    assert!(sick.stdout.contains("ok    database"), "{}", sick.stdout);
    assert!(
        sick.stdout
            .contains("FAIL  workflows: `workflows` does not exist"),
        "{}",
        sick.stdout
    );
    assert!(
        sick.stdout
            .contains(&format!("FAIL  smtp: cannot connect to 127.0.0.1:{closed}")),
        "{}",
        sick.stdout
    );
    assert!(sick.stdout.contains("warn  api"), "{}", sick.stdout);
    assert!(sick.stdout.contains("fix: "), "{}", sick.stdout);

    sb.write("workflows/hello.yaml", HELLO);
    let smtp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = smtp.local_addr().expect("address").port();
    sb.write(
        "sluice.toml",
        &format!("[smtp]\nhost = \"127.0.0.1\"\nport = {open}\ntls = \"none\"\nfrom = \"s@example.com\"\n"),
    );
    let well = doctor(&[
        ("SLUICE_API_TOKEN", "t"),
        ("SLUICE_ADMIN_PASSWORD", "tide-lantern-orbit"),
    ]);
    assert_eq!(well.code, 0, "{}\n{}", well.stdout, well.stderr);
    assert!(
        well.stdout
            .contains("ok    workflows: 1 valid workflow files"),
        "{}",
        well.stdout
    );
    assert!(
        well.stdout
            .contains(&format!("ok    smtp: 127.0.0.1:{open} accepts connections")),
        "{}",
        well.stdout
    );
    assert!(!well.stdout.contains("warn"), "{}", well.stdout);

    sb.write("sluice.toml", "concurency = 3\n");
    let typo = doctor(&[]);
    assert_eq!(typo.code, 1);
    assert!(typo.stdout.contains("FAIL  config"), "{}", typo.stdout);
}
