//! The one helper end-to-end tests share: a temporary folder with a database, and the real
//! `sluice` binary run inside it.

#![allow(dead_code)]

pub mod browser;
pub mod github;
pub mod openai;
pub mod postgres;
pub mod server;
pub mod tracked;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// What a finished `sluice` process left behind.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl From<Output> for Finished {
    fn from(o: Output) -> Self {
        Finished {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> String {
        self.path().join("sluice.db").display().to_string()
    }

    /// Writes a file under the sandbox and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, content).expect("write file");
        path
    }

    /// A `sluice` command running in the sandbox, with no inherited secrets.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(sluice_bin());
        cmd.current_dir(self.path())
            .env("SLUICE_DATABASE_URL", self.db())
            .env_remove("SLUICE_LOG");
        for (key, _) in std::env::vars() {
            if key.starts_with("SLUICE_SECRET_") {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn sluice(&self, args: &[&str]) -> Finished {
        self.command()
            .args(args)
            .output()
            .expect("run sluice")
            .into()
    }

    /// `sluice run FILE --json ARGS…`
    pub fn run_json(&self, file: &Path, args: &[&str]) -> Finished {
        let mut cmd = self.command();
        cmd.arg("run").arg(file).arg("--json").args(args);
        cmd.output().expect("run sluice").into()
    }
}

/// Waits until `condition` holds, checking every few milliseconds, or panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process is still alive (and not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}
