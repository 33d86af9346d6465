//! Artifacts over HTTP, shared by the UI (behind a session) and the API (behind a token):
//! finding a run's artifact by name, answering with its bytes, and the previews the run page
//! shows (the first rows of text, JSON, JSONL and CSV files; images inline). Previews are
//! plain data the templates escape; no HTML is built here.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Session;
use super::{Result, WebError, WebState};
use crate::artifacts::Artifacts;
use crate::secrets::Masker;
use crate::store::{ArtifactRecord, Store, StoreError};

/// Why an artifact cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    NotFound(String),
    /// Several tasks kept the name; the caller must say which.
    #[error("{0}")]
    Ambiguous(String),
    /// No store is configured here, or it failed; the cause is for the log.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DownloadError> for WebError {
    fn from(error: DownloadError) -> Self {
        match error {
            DownloadError::NotFound(m) => WebError::NotFound(m),
            DownloadError::Ambiguous(m) => WebError::Conflict(m),
            DownloadError::Unavailable(m) => WebError::Internal(m),
            DownloadError::Store(e) => WebError::Store(e),
        }
    }
}

/// The latest successful try's artifact `name` of run `run_id` (of `task`, when given).
pub async fn find(
    store: &Store,
    run_id: &str,
    name: &str,
    task: Option<&str>,
) -> Result<ArtifactRecord, DownloadError> {
    let mut matching: Vec<ArtifactRecord> = store
        .latest_artifacts(run_id)
        .await?
        .into_iter()
        .filter(|a| a.name == name && task.is_none_or(|t| a.task_id == t))
        .collect();
    match matching.len() {
        0 => Err(DownloadError::NotFound(match task {
            Some(task) => format!("task `{task}` of run `{run_id}` kept no artifact `{name}`"),
            None => format!("run `{run_id}` has no artifact `{name}`"),
        })),
        1 => Ok(matching.remove(0)),
        _ => Err(DownloadError::Ambiguous(format!(
            "several tasks of run `{run_id}` kept an artifact `{name}` ({}); add `?task=` to \
             say which",
            matching
                .iter()
                .map(|a| a.task_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Media types a browser may show inline: images that cannot run script.
fn shows_inline(media_type: &str) -> bool {
    matches!(
        media_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// The artifact's bytes, streamed from the store. Anything but a plain image is sent as an
/// attachment with a sandboxing policy, so a kept HTML or SVG file never runs in this origin.
pub async fn serve(
    artifacts: Option<&Artifacts>,
    artifact: &ArtifactRecord,
    inline: bool,
) -> Result<Response, DownloadError> {
    let Some(artifacts) = artifacts else {
        return Err(DownloadError::Unavailable(
            "this server has no artifact store to read from".to_owned(),
        ));
    };
    let stream = artifacts
        .open_blob(&artifact.sha256)
        .await
        .map_err(|e| DownloadError::Unavailable(e.to_string()))?;
    let inline = inline && shows_inline(&artifact.media_type);
    let content_type = if inline {
        artifact.media_type.as_str()
    } else {
        "application/octet-stream"
    };
    let file_name = download_name(&artifact.name, "artifact");
    let disposition = if inline {
        "inline".to_owned()
    } else {
        format!("attachment; filename=\"{file_name}\"")
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, content_type);
    set(header::CONTENT_LENGTH, &artifact.size.to_string());
    set(header::CONTENT_DISPOSITION, &disposition);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CONTENT_SECURITY_POLICY, "sandbox");
    set(
        header::HeaderName::from_static("x-artifact-sha256"),
        &artifact.sha256,
    );
    Ok(response)
}

/// The last part of a stored name, reduced to characters safe in a `Content-Disposition`
/// file name.
pub(crate) fn download_name(name: &str, fallback: &str) -> String {
    let last = name.rsplit('/').next().filter(|n| !n.is_empty());
    last.unwrap_or(fallback)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `bytes` as a download of `name` under a sandboxing policy, so stored HTML or SVG never runs
/// in this origin.
pub(crate) fn attachment(bytes: Vec<u8>, name: &str) -> Response {
    let mut response = Body::from(bytes).into_response();
    let headers = response.headers_mut();
    let disposition = format!("attachment; filename=\"{}\"", download_name(name, "file"));
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, "application/octet-stream");
    set(header::CONTENT_DISPOSITION, &disposition);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CONTENT_SECURITY_POLICY, "sandbox");
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct DownloadQuery {
    task: Option<String>,
    #[serde(default)]
    inline: bool,
}

/// `GET /runs/{run_id}/artifacts/{name}`: the run page's download links and image previews.
pub(super) async fn download(
    State(state): State<WebState>,
    _session: Session,
    Path((run_id, name)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    super::pages::find_run(&state, &run_id).await?;
    let artifact = find(&state.store, &run_id, &name, query.task.as_deref()).await?;
    Ok(serve(state.artifacts.as_ref(), &artifact, query.inline).await?)
}

/// Bytes read from the start of an artifact for its preview.
const PREVIEW_BYTES: u64 = 16 * 1024;
/// Lines (rows) a preview shows.
const PREVIEW_ROWS: usize = 20;
/// Artifacts previewed per page; the rest are listed with their links only.
const PREVIEWS_PER_PAGE: usize = 20;

/// An artifact as the run page lists it.
#[derive(Debug, Serialize)]
pub(super) struct ArtifactView {
    name: String,
    /// The name as one URL path segment; the page links to
    /// `/runs/{run}/artifacts/{path}?task={task}`.
    path: String,
    size: String,
    media_type: String,
    preview: Option<Preview>,
}

/// What the run page shows of an artifact's content.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Preview {
    /// The first lines of a text, JSON or JSONL file.
    Text { text: String, truncated: bool },
    /// The first rows of a CSV file, split into cells.
    Table {
        rows: Vec<Vec<String>>,
        truncated: bool,
    },
    /// An image, shown inline from its download link.
    Image,
}

/// The run's artifacts by task id, with previews of the first few.
pub(super) async fn views(
    state: &WebState,
    run_id: &str,
) -> Result<std::collections::BTreeMap<String, Vec<ArtifactView>>> {
    let mut by_task: std::collections::BTreeMap<String, Vec<ArtifactView>> = Default::default();
    let mut previews_left = PREVIEWS_PER_PAGE;
    for a in state.store.latest_artifacts(run_id).await? {
        let preview = if previews_left > 0 {
            previews_left -= 1;
            preview(state, &a).await
        } else {
            None
        };
        by_task
            .entry(a.task_id.clone())
            .or_default()
            .push(ArtifactView {
                size: human_size(a.size),
                media_type: a.media_type.clone(),
                path: encode_segment(&a.name),
                name: a.name,
                preview,
            });
    }
    Ok(by_task)
}

async fn preview(state: &WebState, artifact: &ArtifactRecord) -> Option<Preview> {
    if shows_inline(&artifact.media_type) {
        return Some(Preview::Image);
    }
    if !is_text(&artifact.media_type) {
        return None;
    }
    let store = state.artifacts.as_ref()?;
    let head = match store
        .read_head(&artifact.sha256, artifact.size, PREVIEW_BYTES)
        .await
    {
        Ok(head) => head,
        Err(error) => {
            tracing::warn!(%error, name = %artifact.name, "Could not read an artifact's preview.");
            return None;
        }
    };
    Some(build_preview(
        &artifact.media_type,
        &head,
        artifact.size > PREVIEW_BYTES,
        &state.settings.masker,
    ))
}

fn is_text(media_type: &str) -> bool {
    media_type.starts_with("text/")
        || matches!(media_type, "application/json" | "application/x-ndjson")
}

/// The preview of an artifact whose first bytes are `head` (`cut`: the file goes on).
/// Secrets are masked, as everywhere else on the page.
fn build_preview(media_type: &str, head: &[u8], cut: bool, masker: &Masker) -> Preview {
    let text = masker.mask(&String::from_utf8_lossy(head)).into_owned();
    let mut lines: Vec<&str> = text.lines().collect();
    // A line cut by the byte limit is not shown half.
    if cut && !text.ends_with('\n') {
        lines.pop();
    }
    let truncated = cut || lines.len() > PREVIEW_ROWS;
    lines.truncate(PREVIEW_ROWS);
    if media_type == "text/csv" {
        return Preview::Table {
            rows: lines.iter().map(|l| split_csv_line(l)).collect(),
            truncated,
        };
    }
    if media_type == "application/json"
        && !cut
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
        && let Ok(pretty) = serde_json::to_string_pretty(&value)
    {
        let pretty_lines: Vec<&str> = pretty.lines().collect();
        return Preview::Text {
            text: pretty_lines[..pretty_lines.len().min(PREVIEW_ROWS)].join("\n"),
            truncated: pretty_lines.len() > PREVIEW_ROWS,
        };
    }
    Preview::Text {
        text: lines.join("\n"),
        truncated,
    }
}

/// One CSV line into cells: commas separate, double quotes group (`""` is a quote).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// A path segment with everything but unreserved characters percent-encoded, for links to
/// artifacts whose names hold `/`.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A size as people read it: `512 B`, `100.0 KB`, `1.5 GB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_previews_are_rows_of_cells_and_stop_at_the_row_limit() {
        let mut csv = String::from("name,score\n\"Smith, J\",0.9\n\"say \"\"hi\"\"\",1\n");
        for i in 0..30 {
            csv.push_str(&format!("r{i},{i}\n"));
        }
        let Preview::Table { rows, truncated } =
            build_preview("text/csv", csv.as_bytes(), false, &Masker::default())
        else {
            panic!("a table")
        };
        assert_eq!(rows.len(), PREVIEW_ROWS);
        assert_eq!(rows[1], ["Smith, J", "0.9"]);
        assert_eq!(rows[2], ["say \"hi\"", "1"]);
        assert!(truncated);
    }

    #[test]
    fn text_previews_mask_secrets_and_drop_a_cut_line() {
        let masker = Masker::new(vec!["sk-secret".to_owned()]);
        let preview = build_preview(
            "application/x-ndjson",
            b"{\"key\":\"sk-secret\"}\n{\"a\":1}\n{\"a\":",
            true,
            &masker,
        );
        assert_eq!(
            preview,
            Preview::Text {
                text: "{\"key\":\"***\"}\n{\"a\":1}".to_owned(),
                truncated: true
            }
        );
        let preview = build_preview(
            "application/json",
            b"{\"b\":1,\"a\":[1,2]}",
            false,
            &Masker::default(),
        );
        let Preview::Text { text, truncated } = preview else {
            panic!("text")
        };
        assert!(text.starts_with("{\n  \"b\": 1"), "{text}");
        assert!(!truncated);
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(100_000), "100.0 KB");
        assert_eq!(human_size(1_500_000_000), "1.5 GB");
    }
}
