//! A real `sluice serve` on a free port for end-to-end tests, and small JSON helpers over its
//! API.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::Sandbox;

/// The API token every test server accepts.
pub const TOKEN: &str = "test-token";

/// A running `sluice serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve` on the sandbox's `workflows` folder and waits until it listens.
    pub fn start(sb: &Sandbox) -> Server {
        Server::start_with(sb, &[], &[])
    }

    /// Like `start`, with extra arguments and environment variables.
    pub fn start_with(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = sb
            .command()
            .args(["serve", "--workflows", "workflows", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("SLUICE_API_TOKEN", TOKEN)
            .env("SLUICE_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sluice serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("serving on http://").nth(1) {
                        let address = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send(address.trim_end_matches('"').to_owned());
                    }
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let Ok(address) = rx.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            let logs = lines.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
            panic!("serve did not start:\n{logs}");
        };
        Server {
            child,
            base: format!("http://{address}"),
            stderr: lines,
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Ends the server the hard way, like a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns the exit code once the server has stopped.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: kill(2) on a child we spawned, with a valid signal number.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("serve did not stop after SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = client()
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts a run through the API and returns its id.
    pub async fn start_run(&self, workflow: &str, params: Value) -> String {
        let (status, body) = self
            .post(
                &format!("/api/v1/workflows/{workflow}/runs"),
                json!({ "params": params }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["run_id"].as_str().expect("run id").to_owned()
    }

    /// Polls a run until it has ended, and returns it.
    pub async fn wait_run(&self, run_id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, run) = self.get(&format!("/api/v1/runs/{run_id}")).await;
            if status == 200
                && matches!(
                    run["state"].as_str(),
                    Some("success" | "failed" | "cancelled")
                )
            {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not end: {run}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    reqwest::Client::new()
}

/// Writes `workflows/<name>.yaml` in the sandbox.
pub fn write_workflow(sb: &Sandbox, name: &str, content: &str) {
    sb.write(&format!("workflows/{name}.yaml"), content);
}

/// A page or a response body as text, with a session cookie or else the API token.
pub async fn get_text(server: &Server, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client().get(format!("{}{path}", server.base));
    request = match cookie {
        Some(cookie) => request.header(reqwest::header::COOKIE, cookie),
        None => request.bearer_auth(TOKEN),
    };
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A session cookie for the UI, recorded straight in the sandbox's database (the login form
/// is `tests/ui.rs`' subject).
pub async fn ui_cookie(sb: &Sandbox) -> String {
    use sha2::Digest;
    let store = sluice::store::Store::open(&sluice::store::StoreConfig::new(sb.db()))
        .await
        .expect("open the sandbox database");
    let token = "ui-test-session-cookie-value";
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let now = chrono::Utc::now();
    let session = sluice::store::SessionRecord {
        user_name: "admin".into(),
        role: sluice::store::Role::Admin,
        csrf_token: "csrf".into(),
        expires_at: now + chrono::TimeDelta::hours(1),
    };
    store
        .create_session(&hash, &session, now)
        .await
        .expect("a session");
    format!("{}={token}", sluice::web::SESSION_COOKIE)
}
