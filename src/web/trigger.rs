//! The trigger form: one field per declared param (enums as selects, booleans as checkboxes,
//! lists and maps as JSON), turned back into typed values and started with `catalog::launch`.
//! Every problem is found in one pass and shown beside the field it concerns, with a summary
//! at the top. `?from=RUN` fills the form with a run's params, to run it again edited.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::info;

use super::pages::find_workflow;
use super::{Result, WebError, WebState, auth::Session, render};
use crate::catalog::launch::{LaunchError, RunRequest, launch};
use crate::dag::Workflow;
use crate::dag::intervals::manual_interval;
use crate::params::{ParamDecl, ParamType, check_value};

/// Form fields are `param.<name>`, so no param can collide with `csrf`.
const PREFIX: &str = "param.";

#[derive(Debug, Serialize)]
struct Field {
    name: String,
    input: &'static str,
    kind: &'static str,
    description: Option<String>,
    required: bool,
    /// The bounds of a number, as the label shows them (`1 to 500`, `at least 1`).
    bounds: Option<String>,
    /// The text in the box (or the chosen option's value).
    value: String,
    checked: bool,
    options: Vec<FieldOption>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct FieldOption {
    /// The option as JSON, so non-string enum values survive the round trip.
    value: String,
    label: String,
}

/// The text a value shows as in a text box: strings bare, everything else as JSON.
pub(super) fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fields(
    workflow: &Workflow,
    given: Option<&HashMap<String, String>>,
    errors: &HashMap<String, String>,
) -> Vec<Field> {
    workflow
        .params
        .iter()
        .map(|(name, decl)| {
            let key = format!("{PREFIX}{name}");
            let given_value = given.and_then(|g| g.get(&key));
            let input = match (decl.kind, &decl.allowed) {
                (_, Some(_)) => "select",
                (ParamType::Boolean, None) => "checkbox",
                (ParamType::Array | ParamType::Object, None) => "textarea",
                (ParamType::Integer | ParamType::Number, None) => "number",
                (ParamType::String, None) => "text",
            };
            let value = match (given, given_value, &decl.default) {
                (Some(_), Some(v), _) => v.clone(),
                (Some(_), None, _) => String::new(),
                (None, _, Some(default)) if input == "select" => default.to_string(),
                (None, _, Some(default)) => as_text(default),
                (None, _, None) => String::new(),
            };
            let checked = match given {
                Some(_) => given_value.is_some(),
                None => decl.default == Some(Value::Bool(true)),
            };
            let options = decl
                .allowed
                .iter()
                .flatten()
                .map(|v| FieldOption {
                    value: v.to_string(),
                    label: as_text(v),
                })
                .collect();
            Field {
                bounds: bounds(decl),
                name: name.clone(),
                input,
                kind: decl.kind.name(),
                description: decl.description.clone(),
                required: decl.default.is_none(),
                value,
                checked,
                options,
                error: errors.get(name).cloned(),
            }
        })
        .collect()
}

/// A number's bounds as a label shows them.
fn bounds(decl: &ParamDecl) -> Option<String> {
    match (decl.minimum, decl.maximum) {
        (Some(min), Some(max)) => Some(format!("{min} to {max}")),
        (Some(min), None) => Some(format!("at least {min}")),
        (None, Some(max)) => Some(format!("at most {max}")),
        (None, None) => None,
    }
}

/// A run's params as the form's fields hold them (`param.<name>` → text), with the defaults
/// of params the run did not have; what `fields` shows and `submit` reads back.
pub(super) fn given_from_params(
    workflow: &Workflow,
    params: &Map<String, Value>,
) -> HashMap<String, String> {
    let mut given = HashMap::new();
    for (name, decl) in &workflow.params {
        let Some(value) = params.get(name).or(decl.default.as_ref()) else {
            continue;
        };
        let text = match (decl.kind, &decl.allowed) {
            (_, Some(_)) => value.to_string(),
            (ParamType::Boolean, None) if value == &Value::Bool(true) => "on".to_owned(),
            (ParamType::Boolean, None) => continue,
            _ => as_text(value),
        };
        given.insert(format!("{PREFIX}{name}"), text);
    }
    given
}

/// The typed value of one field, `None` when left empty (the default then applies), or a
/// sentence saying why the text is not a value of the param's type.
fn parse_field(decl: &ParamDecl, raw: Option<&str>) -> Result<Option<Value>, String> {
    if decl.kind == ParamType::Boolean && decl.allowed.is_none() {
        // An unticked checkbox sends nothing: that means false, not "use the default".
        return Ok(Some(Value::Bool(raw.is_some())));
    }
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if decl.allowed.is_some() {
        return serde_json::from_str(raw)
            .map(Some)
            .map_err(|_| "choose one of the listed values".to_owned());
    }
    match decl.kind {
        ParamType::String => Ok(Some(Value::String(raw.to_owned()))),
        ParamType::Integer => raw
            .parse::<i64>()
            .map(|n| Some(Value::from(n)))
            .map_err(|_| format!("`{raw}` is not a whole number")),
        ParamType::Number => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| format!("`{raw}` is not a number")),
        ParamType::Array | ParamType::Object => serde_json::from_str(raw)
            .map(Some)
            .map_err(|e| format!("this is not valid JSON: {e}")),
        ParamType::Boolean => Ok(Some(Value::Bool(true))),
    }
}

#[derive(Debug, Deserialize)]
pub struct FormQuery {
    /// A run of this workflow whose params fill the form.
    from: Option<String>,
}

/// `GET /workflows/{id}/trigger`, or `?from=RUN` to start from a run's params.
pub async fn form(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<FormQuery>,
) -> Result<Response> {
    let entry = find_workflow(&state, &id)?;
    let given = match query.from.as_deref().filter(|f| !f.is_empty()) {
        Some(run_id) => {
            let run = super::pages::find_run(&state, run_id).await?;
            if run.workflow_id != id {
                return Err(WebError::NotFound(format!(
                    "run `{run_id}` is a run of `{}`, not of `{id}`",
                    run.workflow_id
                )));
            }
            Some(given_from_params(&entry.workflow, &run.params))
        }
        None => None,
    };
    page(
        &session,
        &entry.workflow,
        given.as_ref(),
        &HashMap::new(),
        None,
        StatusCode::OK,
    )
}

fn page(
    session: &Session,
    workflow: &Workflow,
    given: Option<&HashMap<String, String>>,
    errors: &HashMap<String, String>,
    general: Option<String>,
    status: StatusCode,
) -> Result<Response> {
    // The summary at the top, in the form's order, each linking to its field.
    let summary: Vec<(String, String)> = workflow
        .params
        .keys()
        .filter_map(|name| errors.get(name).map(|e| (name.clone(), e.clone())))
        .collect();
    let body = render(
        "trigger.html",
        minijinja::context! {
            title => format!("Trigger {}", workflow.id),
            user => session.view(),
            workflow => minijinja::context! { id => workflow.id.clone(), description => workflow.description.clone() },
            fields => minijinja::Value::from(minijinja::value::Serde(fields(workflow, given, errors))),
            general,
            summary,
        },
    )?;
    Ok((status, body).into_response())
}

/// `POST /workflows/{id}/trigger`: starts the run and shows its page, or the form again with
/// the problems beside their fields (422).
pub async fn submit(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response> {
    let given: HashMap<String, String> = form.into_iter().collect();
    session.authorize_action(given.get("csrf").map_or("", String::as_str))?;
    let entry = find_workflow(&state, &id)?;
    let workflow = &entry.workflow;
    let mut params = Map::new();
    let mut errors = HashMap::new();
    for (name, decl) in &workflow.params {
        let raw = given.get(&format!("{PREFIX}{name}")).map(String::as_str);
        match parse_field(decl, raw) {
            // Checked here too, so that every field's problem shows at once.
            Ok(Some(value)) => match check_value(decl, &value) {
                Ok(()) => {
                    params.insert(name.clone(), value);
                }
                Err(message) => {
                    errors.insert(name.clone(), message);
                }
            },
            Ok(None) if decl.default.is_none() => {
                errors.insert(
                    name.clone(),
                    "fill this in: it has no default value".to_owned(),
                );
            }
            Ok(None) => {}
            Err(message) => {
                errors.insert(name.clone(), message);
            }
        }
    }
    if !errors.is_empty() {
        return page(
            &session,
            workflow,
            Some(&given),
            &errors,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let interval = manual_interval(workflow, Utc::now());
    let request = RunRequest {
        params,
        trigger: "ui".into(),
        triggered_by: Some(format!("user:{}", session.user)),
        logical_date: interval.logical_date(),
        data_interval: (interval.start, interval.end),
    };
    let path = entry.path.display().to_string();
    match launch(&state.store, workflow, &path, request).await {
        Ok(run_id) => {
            info!(workflow = %id, run_id = %run_id, user = %session.user, "Run queued from the UI.");
            Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
        }
        Err(LaunchError::Params(problems)) => {
            let mut general = Vec::new();
            for p in problems {
                if workflow.params.contains_key(&p.param) {
                    errors.insert(p.param, p.message);
                } else {
                    general.push(p.to_string());
                }
            }
            page(
                &session,
                workflow,
                Some(&given),
                &errors,
                (!general.is_empty()).then(|| general.join("; ")),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(LaunchError::Store(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(kind: ParamType) -> ParamDecl {
        ParamDecl {
            kind,
            default: None,
            allowed: None,
            minimum: None,
            maximum: None,
            description: None,
        }
    }

    #[test]
    fn fields_parse_to_their_types() {
        let int = decl(ParamType::Integer);
        assert_eq!(parse_field(&int, Some(" 42 ")), Ok(Some(Value::from(42))));
        assert_eq!(parse_field(&int, Some("")), Ok(None));
        assert!(
            parse_field(&int, Some("4.5"))
                .unwrap_err()
                .contains("whole number")
        );
        let num = decl(ParamType::Number);
        assert_eq!(
            parse_field(&num, Some("0.5")),
            Ok(Some(serde_json::json!(0.5)))
        );
        assert!(parse_field(&num, Some("NaN")).is_err());
        assert!(parse_field(&num, Some("abc")).is_err());
        let flag = decl(ParamType::Boolean);
        assert_eq!(parse_field(&flag, None), Ok(Some(Value::Bool(false))));
        assert_eq!(parse_field(&flag, Some("on")), Ok(Some(Value::Bool(true))));
        let list = decl(ParamType::Array);
        assert_eq!(
            parse_field(&list, Some("[1, 2]")),
            Ok(Some(serde_json::json!([1, 2])))
        );
        assert!(
            parse_field(&list, Some("[1,"))
                .unwrap_err()
                .contains("not valid JSON")
        );
        let text = decl(ParamType::String);
        assert_eq!(
            parse_field(&text, Some("<b>")),
            Ok(Some(Value::from("<b>")))
        );
        let choice = ParamDecl {
            allowed: Some(vec![Value::from(1), Value::from("two")]),
            ..decl(ParamType::String)
        };
        assert_eq!(parse_field(&choice, Some("1")), Ok(Some(Value::from(1))));
        assert_eq!(
            parse_field(&choice, Some("\"two\"")),
            Ok(Some(Value::from("two")))
        );
        assert!(parse_field(&choice, Some("two")).is_err());
    }
}
