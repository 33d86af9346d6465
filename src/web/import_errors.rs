//! A file that does not validate, as the workflows page links to it: its problems, each linking
//! to its line, beside the file as it is now, with numbered, anchored lines. Only the files the
//! catalog lists as import errors can be shown.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{Result, WebError, WebState, auth::Session, render};

#[derive(Debug, Deserialize)]
pub struct SourceQuery {
    /// The file, as the import error names it.
    path: String,
}

#[derive(Debug, Serialize)]
struct Problem {
    line: u32,
    column: u32,
    message: String,
    help: Option<String>,
}

/// `GET /import-errors/source?path=…`.
pub async fn source(
    State(state): State<WebState>,
    session: Session,
    Query(query): Query<SourceQuery>,
) -> Result<Response> {
    let snapshot = state.catalog.snapshot();
    let error = snapshot
        .import_errors
        .iter()
        .find(|e| e.path.display().to_string() == query.path)
        .ok_or_else(|| {
            WebError::NotFound(format!(
                "`{}` has no import errors now; it may have been fixed",
                query.path
            ))
        })?;
    let problems: Vec<Problem> = error
        .diagnostics
        .iter()
        .map(|d| Problem {
            line: d.line,
            column: d.column,
            message: d.message.clone(),
            help: d.help.clone(),
        })
        .collect();
    // The file as it is now (it may have changed since it was read: the lines are then close).
    let text = tokio::fs::read_to_string(&error.path)
        .await
        .unwrap_or_default();
    let masker = &state.settings.masker;
    let lines: Vec<String> = text.lines().map(|l| masker.mask(l).into_owned()).collect();
    Ok(render(
        "import_error.html",
        minijinja::context! {
            title => format!("Import errors in {}", query.path),
            user => session.view(),
            path => query.path,
            problems => minijinja::Value::from(minijinja::value::Serde(&problems)),
            lines,
        },
    )?
    .into_response())
}
