//! What a task can see of the Sluice process that runs it: no secret it did not name, neither
//! through its own environment nor by reading its parents' (`/proc/PID/environ`), and, with
//! `run_as`, another user altogether.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use common::{Finished, Sandbox, wait_for};

const SECRET: &str = "foo-secret-8c1f";
const ADMIN_PASSWORD: &str = "admin-pw-5e2a";
const API_TOKEN: &str = "api-token-77d3";

/// A task that walks up from its parent to the top of the process tree and records, per
/// process, whether its environment could be read and whether a secret value is in it (the
/// values themselves would be masked in outputs, so only the verdict is written). A second
/// task names the secret in its `env` and checks that it got it.
const PEEK: &str = r#"
tasks:
  peek:
    operator: shell
    with:
      command: |
        # Shell variables, not exported: the values never enter this task's environment.
        S1=$(printf %s "$V1" | rev); S2=$(printf %s "$V2" | rev); S3=$(printf %s "$V3" | rev)
        echo "parent=$PPID" >> "$SLUICE_OUTPUT"
        # Hold on until the test has looked at the parent from outside, at most 20 s.
        for i in $(seq 200); do [ -e "$GO" ] && break; sleep 0.1; done
        pid=$PPID
        while [ "$pid" -gt 1 ]; do
          if tr '\0' '\n' < "/proc/$pid/environ" > env.txt 2>/dev/null; then
            echo "readable_$pid=yes" >> "$SLUICE_OUTPUT"
            if grep -q -e "$S1" -e "$S2" -e "$S3" -e SLUICE_SECRET_ env.txt; then
              echo "found_$pid=yes" >> "$SLUICE_OUTPUT"
            fi
          fi
          pid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status")
        done
        rm -f env.txt
        # Its own environment holds no secret either.
        if env | grep -q -e "$S1" -e "$S2" -e "$S3" -e SLUICE_SECRET_; then
          echo "found_self=yes" >> "$SLUICE_OUTPUT"
        fi
      env:
        GO: "{{ vars.go }}"
        # The values, reversed, so that this task's own environment does not hold them.
        V1: "{{ vars.v1 }}"
        V2: "{{ vars.v2 }}"
        V3: "{{ vars.v3 }}"
  named:
    operator: shell
    env:
      FOO: "{{ secrets.FOO }}"
    with:
      command: |
        if [ "$(printf %s "$FOO" | rev)" = "$EXPECTED" ]; then echo "named=yes" >> "$SLUICE_OUTPUT"; fi
      env:
        EXPECTED: "{{ vars.v1 }}"
"#;

/// The uid and gid of `nobody`, the unprivileged user the tests run Sluice as when they run
/// as root.
fn nobody() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "nobody"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id for nobody")
    };
    (id("-u"), id("-g"))
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// Writes `sluice.toml` with the variables the workflow reads, and more.
fn write_config(sb: &Sandbox, extra: &str) {
    sb.write(
        "sluice.toml",
        &format!(
            "{extra}\n[vars]\ngo = \"{}\"\nv1 = \"{}\"\nv2 = \"{}\"\nv3 = \"{}\"\n",
            sb.path().join("go").display(),
            reversed(SECRET),
            reversed(ADMIN_PASSWORD),
            reversed(API_TOKEN),
        ),
    );
}

#[test]
fn a_task_reads_no_secret_it_did_not_name_from_its_parents() {
    let sb = Sandbox::new();
    // Sluice runs as an unprivileged user, as a task shares the user of the process that
    // started it: the sandbox must be writable for it.
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    write_config(&sb, "");
    let file = sb.write("peek.yaml", PEEK);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut cmd = sb.command();
    cmd.arg("run")
        .arg(&file)
        .arg("--json")
        .env("SLUICE_SECRET_FOO", SECRET)
        .env("SLUICE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SLUICE_API_TOKEN", API_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if is_root() {
        let (uid, gid) = nobody();
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().expect("spawn sluice run");
    let sluice_pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let stderr_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });

    // From outside, as the test's own user: the running process's environment block (what
    // `/proc/PID/environ` shows, the block from exec time) holds none of the values.
    let environ_path = format!("/proc/{sluice_pid}/environ");
    let scratch_has_output = || {
        std::fs::read_dir(std::env::temp_dir()).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy() == format!("sluice-{sluice_pid}"))
        })
    };
    wait_for(
        "the task to start",
        Duration::from_secs(30),
        scratch_has_output,
    );
    if is_root() {
        let environ = std::fs::read(&environ_path).expect("root reads any environ");
        let environ = String::from_utf8_lossy(&environ);
        for value in [SECRET, ADMIN_PASSWORD, API_TOKEN, "SLUICE_SECRET_FOO"] {
            assert!(!environ.contains(value), "{value} is in {environ_path}");
        }
        assert!(environ.contains("SLUICE_LOG") || environ.contains("PATH="));
    }
    std::fs::write(sb.path().join("go"), "").expect("write go");

    let stdout = {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
            .expect("read stdout");
        out
    };
    let status = child.wait().expect("wait");
    let out = Finished {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr: stderr_lines.join().expect("stderr thread"),
    };
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    let peek = &json["tasks"]["peek"]["outputs"];
    assert_eq!(peek["parent"], sluice_pid.to_string(), "{json}");
    let found: Vec<&String> = peek
        .as_object()
        .expect("outputs")
        .keys()
        .filter(|k| k.starts_with("found"))
        .collect();
    assert!(
        found.is_empty(),
        "a task read secrets from {found:?}: {json}"
    );
    // Sluice itself is closed to the task (not dumpable), even as the same user.
    assert_eq!(
        peek[format!("readable_{sluice_pid}")],
        serde_json::Value::Null,
        "{json}"
    );
    assert_eq!(json["tasks"]["named"]["outputs"]["named"], "yes", "{json}");
}

#[test]
fn run_as_runs_tasks_as_that_user_with_its_home_and_scratch() {
    let sb = Sandbox::new();
    let file = sb.write(
        "whoami.yaml",
        r#"
tasks:
  who:
    operator: shell
    with:
      command: |
        echo "uid=$(id -u)" >> "$SLUICE_OUTPUT"
        echo "groups=$(id -G)" >> "$SLUICE_OUTPUT"
        echo "home=$HOME" >> "$SLUICE_OUTPUT"
        echo "user=$USER" >> "$SLUICE_OUTPUT"
        if cat "/proc/$PPID/environ" > /dev/null 2>&1; then echo "parent=readable" >> "$SLUICE_OUTPUT"; fi
        echo "kept by $(id -u)" > "$SLUICE_ARTIFACTS/who.txt" || exit 7
"#,
    );
    if !is_root() {
        // Switching users needs root: without it, the setting is refused at start-up.
        sb.write("sluice.toml", "run_as = \"root\"\n");
        let out = sb.run_json(&file, &[]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("needs Sluice to run as root"),
            "{}",
            out.stderr
        );
        return;
    }
    let (uid, gid) = nobody();
    sb.write("sluice.toml", "run_as = \"nobody\"\n");
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    let who = &json["tasks"]["who"]["outputs"];
    assert_eq!(who["uid"], uid.to_string(), "{json}");
    // No supplementary group of root's is kept.
    assert_eq!(who["groups"], gid.to_string(), "{json}");
    assert_eq!(who["user"], "nobody", "{json}");
    assert!(
        who["home"]
            .as_str()
            .is_some_and(|h| !h.is_empty() && h != "/root"),
        "{json}"
    );
    assert_eq!(who["parent"], serde_json::Value::Null, "{json}");

    sb.write("sluice.toml", "run_as = \"no-such-user-sluice\"\n");
    let out = sb.run_json(&file, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no user `no-such-user-sluice`"),
        "{}",
        out.stderr
    );
}

#[test]
fn serve_keeps_no_secret_in_its_environment_and_is_not_readable_by_its_user() {
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::create_dir(sb.path().join("workflows")).expect("workflows folder");
    let webhook_secret = "webhook-secret-91ab";
    let mut cmd = sb.command();
    cmd.args(["serve", "--workflows", "workflows", "--bind", "127.0.0.1:0"])
        .env("SLUICE_SECRET_FOO", SECRET)
        .env("SLUICE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SLUICE_API_TOKEN", API_TOKEN)
        .env("SLUICE_GITHUB_WEBHOOK_SECRET", webhook_secret)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let unprivileged = is_root().then(nobody);
    if let Some((uid, gid)) = unprivileged {
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().expect("spawn sluice serve");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving on http://") {
                let _ = tx.send(());
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    let environ_path = format!("/proc/{pid}/environ");
    let environ = std::fs::read(&environ_path);
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(&environ_path).expect("the process's environ"),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "serve did not start");
    if let Some((uid, _)) = unprivileged {
        // Root reads it anyway: the block itself holds none of the values.
        let environ =
            String::from_utf8_lossy(&environ.expect("root reads any environ")).into_owned();
        for value in [
            SECRET,
            ADMIN_PASSWORD,
            API_TOKEN,
            webhook_secret,
            "SLUICE_SECRET_FOO",
        ] {
            assert!(!environ.contains(value), "{value} is in {environ_path}");
        }
        // Not dumpable: its /proc files belong to root, not to the user it runs as.
        assert_ne!(uid, 0);
        assert_eq!(owner, 0, "{environ_path} belongs to {owner}");
    } else {
        // As its own user, the test cannot read a non-dumpable process's environment.
        assert!(environ.is_err(), "{environ_path} is readable");
    }
}
