//! The run page's log viewer: each try's log as numbered, timed lines, only its tail inlined
//! for a long log (so a 20,000-line log keeps the page small and fast), and the whole log as
//! plain text (`GET /runs/{id}/tasks/{task}/log.txt`), to read in full or download.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::pages::find_run;
use super::{Result, WebError, WebState, auth::Session};
use crate::secrets::Masker;
use crate::store::LogTailLine;

/// The most lines of one try the run page inlines; a longer log shows its tail and links to
/// the whole.
pub(super) const LOG_TAIL: usize = 500;

/// A log line's time as the viewer prints it (the zone is said once, above the log).
pub(super) fn clock_time(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}

#[derive(Debug, Serialize)]
pub(super) struct LineView {
    /// The line's number in its try's log, from 1.
    n: u64,
    at: String,
    stream: String,
    line: String,
}

/// One try's log as the viewer shows it.
#[derive(Debug, Default, Serialize)]
pub(super) struct LogView {
    lines: Vec<LineView>,
    /// How many lines the whole log has.
    pub total: u64,
    /// Only the tail is shown.
    truncated: bool,
}

/// The viewer data of every try of a run, by (task, try), from its log tails.
pub(super) fn views(tails: Vec<LogTailLine>, masker: &Masker) -> HashMap<(String, u32), LogView> {
    let mut views: HashMap<(String, u32), LogView> = HashMap::new();
    for tail in tails {
        let l = tail.record;
        let view = views.entry((l.task_id, l.try_number)).or_default();
        view.total = tail.total;
        view.truncated = tail.total > LOG_TAIL as u64;
        view.lines.push(LineView {
            n: tail.number,
            at: clock_time(l.logged_at),
            stream: l.stream,
            line: masker.mask(&l.line).into_owned(),
        });
    }
    views
}

#[derive(Debug, Deserialize)]
pub struct RawQuery {
    /// The try whose log to send; the latest when absent.
    #[serde(rename = "try")]
    try_number: Option<u32>,
    /// Send it as a file to save rather than to read in the browser.
    #[serde(default)]
    download: bool,
}

/// `GET /runs/{run_id}/tasks/{task}/log.txt?try=N`: a try's whole log as plain text, masked.
pub async fn raw(
    State(state): State<WebState>,
    _session: Session,
    Path((run_id, task)): Path<(String, String)>,
    Query(query): Query<RawQuery>,
) -> Result<Response> {
    let run = find_run(&state, &run_id).await?;
    let lines = state.store.logs(&run.id, Some(&task)).await?;
    let try_number = match query.try_number {
        Some(n) => n,
        None => state
            .store
            .task_instances(&run.id)
            .await?
            .iter()
            .filter(|t| t.task_id == task)
            .map(|t| t.try_number)
            .max()
            .ok_or_else(|| {
                WebError::NotFound(format!("task `{task}` has not run in run `{run_id}`"))
            })?,
    };
    let masker = &state.settings.masker;
    let mut text = String::new();
    for l in lines.iter().filter(|l| l.try_number == try_number) {
        text.push_str(&masker.mask(&l.line));
        text.push('\n');
    }
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if query.download {
        let name: String = format!("{}-{task}-try{try_number}.log", run.workflow_id)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        let value = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .unwrap_or(HeaderValue::from_static("attachment"));
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
