//! The model registry: `/models` (each model's latest version and aliases), `/models/{name}`
//! (versions, aliases, every alias move), `/models/{name}/versions/{v}` (files, tags, the
//! tracking run, the source's text) and `/models/{name}/diff?from=&to=` (the key-level diff
//! of YAML and JSON files, the line diff of other text).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::Value as Page;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

use super::{page, unavailable};
use crate::tracking::diff::{FileChange, KeyKind, LineKind};
use crate::tracking::{ModelVersionRecord, Tracking, TrackingError};
use crate::web::{Result, WebError, WebState, auth::Session, iso};

/// The largest file a version page shows as text.
const PREVIEW_BYTES: u64 = 256 << 10;
/// The most files a version page shows as text.
const PREVIEW_FILES: usize = 10;

#[derive(Debug, Serialize)]
struct ModelRow {
    name: String,
    description: String,
    latest: Option<u32>,
    versions: usize,
    aliases: Vec<(String, u32)>,
}

fn aliases_of(versions: &[ModelVersionRecord]) -> Vec<(String, u32)> {
    let mut aliases: Vec<(String, u32)> = versions
        .iter()
        .flat_map(|v| v.aliases.iter().map(|a| (a.clone(), v.version)))
        .collect();
    aliases.sort();
    aliases
}

/// `GET /models`.
pub(super) async fn list(State(state): State<WebState>, session: Session) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let mut rows = Vec::new();
    for model in tracking.models().await? {
        let versions = tracking.model_versions(&model.name).await?;
        rows.push(ModelRow {
            latest: versions.iter().map(|v| v.version).max(),
            versions: versions.len(),
            aliases: aliases_of(&versions),
            name: model.name,
            description: model.description,
        });
    }
    page(
        StatusCode::OK,
        "models.html",
        minijinja::context! {
            title => "Models",
            user => session.view(),
            models => Page::from(Serde(&rows)),
        },
    )
}

async fn known_model(tracking: &Tracking, name: &str) -> Result<()> {
    match tracking.get_model(name).await? {
        Some(_) => Ok(()),
        None => Err(WebError::NotFound(format!(
            "there is no registered model `{name}`"
        ))),
    }
}

#[derive(Debug, Serialize)]
struct VersionRow {
    version: u32,
    description: String,
    aliases: Vec<String>,
    tracking_run_id: Option<String>,
    files: usize,
}

#[derive(Debug, Serialize)]
struct MoveRow {
    alias: String,
    from: Option<u32>,
    to: Option<u32>,
    moved_at: String,
    moved_by: String,
}

/// `GET /models/{name}`.
pub(super) async fn model(
    State(state): State<WebState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let model = tracking
        .get_model(&name)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("there is no registered model `{name}`")))?;
    let versions = tracking.model_versions(&name).await?;
    let mut moves: Vec<MoveRow> = tracking
        .alias_history(&name)
        .await?
        .into_iter()
        .map(|m| MoveRow {
            alias: m.alias,
            from: m.from,
            to: m.to,
            moved_at: iso(m.moved_at),
            moved_by: m.moved_by,
        })
        .collect();
    moves.reverse();
    let rows: Vec<VersionRow> = versions
        .iter()
        .map(|v| VersionRow {
            version: v.version,
            description: v.description.clone(),
            aliases: v.aliases.clone(),
            tracking_run_id: v.tracking_run_id.clone(),
            files: v.files.len(),
        })
        .collect();
    page(
        StatusCode::OK,
        "model.html",
        minijinja::context! {
            title => format!("Model {name}"),
            user => session.view(),
            model => minijinja::context! { name => model.name, description => model.description },
            versions => Page::from(Serde(&rows)),
            aliases => aliases_of(&versions),
            moves => Page::from(Serde(&moves)),
            numbers => versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        },
    )
}

#[derive(Debug, Serialize)]
struct FileView {
    name: String,
    sha256: String,
    size: u64,
    /// The text's lines, when it is text small enough to show.
    lines: Option<Vec<String>>,
}

fn version_number(model: &str, text: &str) -> Result<u32> {
    text.trim().parse().map_err(|_| {
        WebError::NotFound(format!(
            "model `{model}` has no version `{text}`; versions are numbers"
        ))
    })
}

/// `GET /models/{name}/versions/{version}`.
pub(super) async fn version(
    State(state): State<WebState>,
    session: Session,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let number = version_number(&name, &version)?;
    let record =
        tracking
            .model_version(&name, number)
            .await?
            .ok_or(TrackingError::UnknownVersion {
                model: name.clone(),
                version: number,
            })?;
    let mut files = Vec::with_capacity(record.files.len());
    for (i, file) in record.files.iter().enumerate() {
        let lines = if i < PREVIEW_FILES && file.size <= PREVIEW_BYTES {
            let bytes = tracking.version_file(&name, number, &file.name).await?;
            String::from_utf8(bytes)
                .ok()
                .map(|text| text.lines().map(str::to_owned).collect())
        } else {
            None
        };
        files.push(FileView {
            name: file.name.clone(),
            sha256: file.sha256.clone(),
            size: file.size,
            lines,
        });
    }
    page(
        StatusCode::OK,
        "model_version.html",
        minijinja::context! {
            title => format!("{name} version {number}"),
            user => session.view(),
            model => name,
            version => minijinja::context! {
                number => record.version,
                description => record.description,
                tracking_run_id => record.tracking_run_id,
                aliases => record.aliases,
                tags => record.tags,
            },
            files => Page::from(Serde(&files)),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Serialize)]
struct KeyRow {
    path: String,
    kind: &'static str,
    old: Option<String>,
    new: Option<String>,
}

#[derive(Debug, Serialize)]
struct LineRow {
    kind: &'static str,
    text: String,
}

#[derive(Debug, Serialize)]
struct FileDiffView {
    name: String,
    /// `unchanged`, `keys`, `lines` or `binary`.
    kind: &'static str,
    keys: Vec<KeyRow>,
    lines: Vec<LineRow>,
    old_size: usize,
    new_size: usize,
}

fn compact(value: Option<serde_json::Value>) -> Option<String> {
    value.map(|v| match v {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    })
}

/// `GET /models/{name}/diff?from=V1&to=V2`: the form to pick two versions, and their diff.
pub(super) async fn diff(
    State(state): State<WebState>,
    session: Session,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    known_model(&tracking, &name).await?;
    let numbers: Vec<u32> = tracking
        .model_versions(&name)
        .await?
        .iter()
        .map(|v| v.version)
        .collect();
    fn given(field: &Option<String>) -> Option<&str> {
        field.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    let mut problems = Vec::new();
    let mut pick = |label: &str, field: &Option<String>| {
        given(field).and_then(|text| match text.parse::<u32>() {
            Ok(n) if numbers.contains(&n) => Some(n),
            _ => {
                problems.push(format!(
                    "The “{label}” version “{text}” is not a version of {name}."
                ));
                None
            }
        })
    };
    let from = pick("from", &query.from);
    let to = pick("to", &query.to);
    let mut files = Vec::new();
    if let (Some(from), Some(to)) = (from, to) {
        for file in tracking.diff_versions(&name, from, to).await? {
            let mut view = FileDiffView {
                name: file.name,
                kind: "unchanged",
                keys: Vec::new(),
                lines: Vec::new(),
                old_size: 0,
                new_size: 0,
            };
            match file.change {
                FileChange::Unchanged => {}
                FileChange::Keys { changes } => {
                    view.kind = "keys";
                    view.keys = changes
                        .into_iter()
                        .map(|c| KeyRow {
                            path: c.path,
                            kind: match c.kind {
                                KeyKind::Added => "added",
                                KeyKind::Removed => "removed",
                                KeyKind::Changed => "changed",
                            },
                            old: compact(c.old),
                            new: compact(c.new),
                        })
                        .collect();
                }
                FileChange::Lines { lines } => {
                    view.kind = "lines";
                    view.lines = lines
                        .into_iter()
                        .map(|l| LineRow {
                            kind: match l.kind {
                                LineKind::Same => "same",
                                LineKind::Added => "added",
                                LineKind::Removed => "removed",
                            },
                            text: l.text,
                        })
                        .collect();
                }
                FileChange::Binary { old_size, new_size } => {
                    view.kind = "binary";
                    view.old_size = old_size;
                    view.new_size = new_size;
                }
            }
            files.push(view);
        }
    }
    // The form starts on the two newest versions.
    let default_to = numbers.first().copied();
    let default_from = numbers.get(1).copied().or(default_to);
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let shown: BTreeMap<&str, Option<u32>> =
        [("from", from.or(default_from)), ("to", to.or(default_to))].into();
    page(
        status,
        "model_diff.html",
        minijinja::context! {
            title => format!("{name}: compare versions"),
            user => session.view(),
            model => name,
            numbers,
            chosen => shown,
            compared => from.zip(to).map(|(f, t)| minijinja::context! { from => f, to => t }),
            problems,
            files => Page::from(Serde(&files)),
        },
    )
}
