//! A PostgreSQL schema of its own for one test, shared by the processes the test starts
//! (`serve`, `worker`), and `sluice worker` processes to kill.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use super::{Sandbox, wait_for};

/// A fresh schema on the test PostgreSQL server (`SLUICE_TEST_POSTGRES_URL`, default the local
/// `test` database), dropped by `finish` (a failed test leaves it for inspection).
pub struct TestDatabase {
    /// The URL every process of the test uses: the server's, scoped to the schema.
    pub url: String,
    admin_url: String,
    schema: String,
    db: DatabaseConnection,
}

impl TestDatabase {
    /// `None` when PostgreSQL is unreachable outside CI; with `CI` set that is a failure.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let admin = match Database::connect(&admin_url).await {
            Ok(db) => db,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL at {admin_url} is needed in CI: {e}")
            }
            Err(e) => {
                eprintln!("skipped: PostgreSQL at {admin_url} is unreachable: {e}");
                return None;
            }
        };
        let schema = format!("sluice_it_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
        let db = Database::connect(&url)
            .await
            .expect("connect to the schema");
        Some(TestDatabase {
            url,
            admin_url,
            schema,
            db,
        })
    }

    /// Rows of a query as JSON objects.
    pub async fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT row_to_json(q)::text AS j FROM ({sql}) q"),
            ))
            .await
            .expect("query");
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("", "j").expect("json column");
                serde_json::from_str(&text).expect("json row")
            })
            .collect()
    }

    /// One number from a query.
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                sql.to_owned(),
            ))
            .await
            .expect("query")
            .expect("a row");
        row.try_get_by_index::<i64>(0).expect("a number")
    }

    pub async fn finish(self) {
        let _ = self.db.close().await;
        if let Ok(admin) = Database::connect(&self.admin_url).await {
            let _ = admin
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .await;
            let _ = admin.close().await;
        }
    }
}

/// A running `sluice worker`, killed when dropped.
pub struct WorkerProcess {
    child: Child,
    pub name: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    /// Starts `sluice worker` on `url` and waits until it has started.
    pub fn start(sb: &Sandbox, url: &str, name: &str, args: &[&str]) -> WorkerProcess {
        WorkerProcess::start_with_env(sb, url, name, args, &[])
    }

    /// Like `start`, with extra environment variables (secrets, for example).
    pub fn start_with_env(
        sb: &Sandbox,
        url: &str,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        let mut child = sb
            .command()
            .args(["worker", "--name", name])
            .args(args)
            .envs(env.iter().copied())
            .env("SLUICE_DATABASE_URL", url)
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sluice worker");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let worker = WorkerProcess {
            child,
            name: name.to_owned(),
            stderr: lines,
        };
        wait_for("the worker to start", Duration::from_secs(120), || {
            worker.logs().contains("Worker started")
        });
        worker
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Sends a signal (SIGSTOP, SIGCONT, …).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child we spawned, with a valid signal number.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Ends the worker the hard way, like a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
