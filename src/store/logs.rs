//! Task logs: lines appended in batches, read back per run, task and try.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Value};

use super::{CHUNK, Result, Store, get};

/// A line to append. The text is already masked.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    pub run_id: String,
    pub task_id: String,
    pub try_number: u32,
    pub stream: &'static str,
    pub line: String,
    pub logged_at: DateTime<Utc>,
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub id: i64,
    pub task_id: String,
    pub try_number: u32,
    pub stream: String,
    pub line: String,
    pub logged_at: DateTime<Utc>,
}

/// A `task_logs` row (selected as `id, task_id, try_number, stream, line, logged_at`).
pub(super) fn log_from_row(r: &sea_orm::QueryResult) -> Result<LogRecord> {
    Ok(LogRecord {
        id: get(r, "id")?,
        task_id: get(r, "task_id")?,
        try_number: get::<i32>(r, "try_number")? as u32,
        stream: get(r, "stream")?,
        line: get(r, "line")?,
        logged_at: get(r, "logged_at")?,
    })
}

/// Inserts log lines with multi-row statements, on the connection or transaction given.
pub(super) async fn insert_logs<C: ConnectionTrait>(
    store: &Store,
    conn: &C,
    lines: &[NewLogLine],
) -> Result<()> {
    for chunk in lines.chunks(CHUNK) {
        let (sql, values) = insert_logs_statement(chunk);
        conn.execute_raw(store.stmt(&sql, values)).await?;
    }
    Ok(())
}

/// The one INSERT of up to `CHUNK` log lines.
pub(super) fn insert_logs_statement(chunk: &[NewLogLine]) -> (String, Vec<Value>) {
    let mut sql = String::from(
        "INSERT INTO task_logs (run_id, task_id, try_number, stream, line, logged_at) VALUES ",
    );
    let mut values = Vec::with_capacity(chunk.len() * 6);
    for (i, l) in chunk.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?)");
        values.extend([
            Value::from(l.run_id.as_str()),
            l.task_id.as_str().into(),
            (l.try_number as i32).into(),
            l.stream.into(),
            l.line.as_str().into(),
            l.logged_at.into(),
        ]);
    }
    (sql, values)
}

impl Store {
    pub async fn append_logs(&self, lines: &[NewLogLine]) -> Result<()> {
        insert_logs(self, self.db(), lines).await
    }

    /// The log lines of a run, optionally of one task, in the order they were written.
    pub async fn logs(&self, run_id: &str, task_id: Option<&str>) -> Result<Vec<LogRecord>> {
        let (sql, values): (&str, Vec<Value>) = match task_id {
            Some(task) => (
                "SELECT id, task_id, try_number, stream, line, logged_at FROM task_logs \
                 WHERE run_id = ? AND task_id = ? ORDER BY id",
                vec![run_id.into(), task.into()],
            ),
            None => (
                "SELECT id, task_id, try_number, stream, line, logged_at FROM task_logs \
                 WHERE run_id = ? ORDER BY id",
                vec![run_id.into()],
            ),
        };
        let rows = self.db().query_all_raw(self.stmt(sql, values)).await?;
        rows.iter().map(log_from_row).collect()
    }

    /// The last `per_try` lines of every try of a run, oldest first, each with its number in
    /// its try's log (from 1) and that log's length: what the run page shows without reading
    /// every line of a long log. Both steps walk the `task_logs_by_try` index: the lengths
    /// without reading a line, then each try's tail from its end.
    pub async fn log_tails(&self, run_id: &str, per_try: usize) -> Result<Vec<LogTailLine>> {
        let limit = i64::try_from(per_try).unwrap_or(i64::MAX);
        let counts = self
            .db()
            .query_all_raw(self.stmt(
                "SELECT task_id, try_number, COUNT(*) AS total FROM task_logs \
                 WHERE run_id = ? GROUP BY task_id, try_number",
                vec![run_id.into()],
            ))
            .await?;
        let mut tails = Vec::new();
        for count in &counts {
            let task_id: String = get(count, "task_id")?;
            let try_number: i32 = get(count, "try_number")?;
            let total = get::<i64>(count, "total")?.max(0) as u64;
            let rows = self
                .db()
                .query_all_raw(self.stmt(
                    "SELECT id, task_id, try_number, stream, line, logged_at FROM task_logs \
                     WHERE run_id = ? AND task_id = ? AND try_number = ? ORDER BY id DESC LIMIT ?",
                    vec![
                        run_id.into(),
                        task_id.as_str().into(),
                        try_number.into(),
                        limit.into(),
                    ],
                ))
                .await?;
            for (back, row) in rows.iter().enumerate() {
                tails.push(LogTailLine {
                    record: log_from_row(row)?,
                    number: total.saturating_sub(back as u64).max(1),
                    total,
                });
            }
        }
        tails.sort_by_key(|t| t.record.id);
        Ok(tails)
    }
}

/// A line of a log's tail (`Store::log_tails`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogTailLine {
    pub record: LogRecord,
    /// The line's number in its try's log, from 1.
    pub number: u64,
    /// How many lines its try's log has.
    pub total: u64,
}
