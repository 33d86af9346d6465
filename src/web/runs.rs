//! The runs page (`GET /runs`): every run, newest first, filtered by workflow, state, trigger
//! kind and creation date, paged by the store's cursor. The filters are plain GET parameters,
//! so the form works without JavaScript and every filtered page has a link of its own.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use minijinja::Value as Page;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};

use super::pages::symbol;
use super::{DAMAGED_PAGE_LINK, Result, WebState, auth::Session, human_duration, iso, render};
use crate::lifecycle::RunState;
use crate::store::{RunFilter, RunRecord};

/// Runs per page.
const RUNS_PAGE: usize = 50;

/// The kinds of trigger that start runs, as the store records them.
const TRIGGER_KINDS: &[&str] = &[
    "schedule", "manual", "ui", "api", "backfill", "github", "workflow",
];

/// The runs page's GET parameters, as typed; empty fields (an untouched form) filter nothing.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RunsPageQuery {
    workflow: Option<String>,
    state: Option<String>,
    trigger: Option<String>,
    /// The first day (UTC) of the creation dates shown, `YYYY-MM-DD`.
    from: Option<String>,
    /// The last day (UTC) of the creation dates shown, included.
    to: Option<String>,
    cursor: Option<String>,
}

/// A field's text, `None` when it was left empty.
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A `YYYY-MM-DD` day as people type it into the form.
fn parse_day(label: &str, text: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!("The {label} date “{text}” is not a date; write it as YYYY-MM-DD, for example 2026-03-31.")
    })
}

/// The store filter the parameters ask for, or every problem with them, each a sentence.
fn filter_of(query: &RunsPageQuery) -> std::result::Result<RunFilter, Vec<String>> {
    let mut problems = Vec::new();
    let state = given(&query.state).and_then(|text| {
        let found = RunState::ALL.iter().find(|s| s.as_str() == text).copied();
        if found.is_none() {
            let names: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
            problems.push(format!(
                "“{text}” is not a run state; choose one of {}.",
                names.join(", ")
            ));
        }
        found
    });
    let trigger = given(&query.trigger).and_then(|text| {
        if TRIGGER_KINDS.contains(&text) {
            Some(text.to_owned())
        } else {
            problems.push(format!(
                "“{text}” is not a kind of trigger; choose one of {}.",
                TRIGGER_KINDS.join(", ")
            ));
            None
        }
    });
    let mut day = |label: &str, field: &Option<String>| {
        given(field).and_then(|text| parse_day(label, text).map_err(|e| problems.push(e)).ok())
    };
    let from = day("“from”", &query.from);
    let to = day("“to”", &query.to);
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        problems.push(format!(
            "The “from” date {from} is after the “to” date {to}; no run can match."
        ));
    }
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    // The "to" day is included: the range ends at the next midnight. The last representable
    // day has no next one, and then nothing ends the range.
    let created_before = to.and_then(|d| d.succ_opt()).and_then(midnight);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RunFilter {
        workflow: given(&query.workflow).map(str::to_owned),
        state,
        trigger,
        created_from: from.and_then(midnight),
        created_before,
        ..RunFilter::default()
    })
}

#[derive(Debug, Serialize)]
struct RunRow {
    id: String,
    workflow: String,
    state: &'static str,
    symbol: &'static str,
    trigger: String,
    triggered_by: Option<String>,
    logical_date: String,
    created_at: String,
    started_at: Option<String>,
    duration: Option<String>,
}

impl RunRow {
    fn of(run: &RunRecord, now: DateTime<Utc>) -> RunRow {
        RunRow {
            id: run.id.clone(),
            workflow: run.workflow_id.clone(),
            state: run.state.as_str(),
            symbol: symbol(run.state.as_str()),
            trigger: run.trigger.clone(),
            triggered_by: run.triggered_by.clone(),
            logical_date: iso(run.logical_date),
            created_at: iso(run.created_at),
            started_at: run.started_at.map(iso),
            duration: run
                .started_at
                .map(|s| human_duration(run.ended_at.unwrap_or(now) - s)),
        }
    }
}

/// The parameters of a link to another page of the same filtered list.
fn page_link(query: &RunsPageQuery, cursor: Option<&str>) -> BTreeMap<&'static str, String> {
    let mut link = BTreeMap::new();
    for (name, field) in [
        ("workflow", &query.workflow),
        ("state", &query.state),
        ("trigger", &query.trigger),
        ("from", &query.from),
        ("to", &query.to),
    ] {
        if let Some(value) = given(field) {
            link.insert(name, value.to_owned());
        }
    }
    if let Some(cursor) = cursor {
        link.insert("cursor", cursor.to_owned());
    }
    link
}

/// `GET /runs`: one page of runs matching the filter form, newest first. Invalid filters come
/// back as the same page with a 400 and a sentence for each problem.
pub async fn list(
    State(state): State<WebState>,
    session: Session,
    Query(query): Query<RunsPageQuery>,
) -> Result<Response> {
    let cursor = given(&query.cursor);
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    let mut next_cursor = None;
    match filter_of(&query) {
        Err(found) => problems = found,
        Ok(filter) => match state.store.list_runs(&filter, RUNS_PAGE, cursor).await? {
            Ok(page) => {
                let now = Utc::now();
                rows = page.runs.iter().map(|r| RunRow::of(r, now)).collect();
                next_cursor = page.next_cursor;
            }
            Err(_) => problems.push(DAMAGED_PAGE_LINK.to_owned()),
        },
    }
    let workflows: Vec<String> = state.catalog.snapshot().workflows.keys().cloned().collect();
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = render(
        "run_list.html",
        minijinja::context! {
            title => "Runs",
            user => session.view(),
            runs => Page::from(Serde(&rows)),
            problems,
            query => Page::from(Serde(&query)),
            workflows,
            states => RunState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            triggers => TRIGGER_KINDS.to_vec(),
            paged => cursor.is_some(),
            newest => page_link(&query, None),
            next => next_cursor.as_deref().map(|c| page_link(&query, Some(c))),
        },
    )?;
    Ok((status, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(fields: &[(&str, &str)]) -> RunsPageQuery {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        RunsPageQuery {
            workflow: get("workflow"),
            state: get("state"),
            trigger: get("trigger"),
            from: get("from"),
            to: get("to"),
            cursor: None,
        }
    }

    #[test]
    fn days_cover_whole_utc_days_and_empty_fields_filter_nothing() {
        let filter = filter_of(&query(&[
            ("from", "2026-03-01"),
            ("to", "2026-03-31"),
            ("state", ""),
            ("workflow", " "),
        ]))
        .expect("valid");
        assert_eq!(
            filter.created_from.map(iso).as_deref(),
            Some("2026-03-01T00:00:00Z")
        );
        assert_eq!(
            filter.created_before.map(iso).as_deref(),
            Some("2026-04-01T00:00:00Z")
        );
        assert_eq!(filter.state, None);
        assert_eq!(filter.workflow, None);
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let problems = filter_of(&query(&[
            ("state", "done"),
            ("trigger", "cron"),
            ("from", "31/03/2026"),
        ]))
        .expect_err("invalid");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("“done” is not a run state"));
        assert!(problems[1].contains("“cron” is not a kind of trigger"));
        assert!(problems[2].contains("YYYY-MM-DD"));
        let reversed = filter_of(&query(&[("from", "2026-04-02"), ("to", "2026-04-01")]))
            .expect_err("reversed");
        assert!(reversed[0].contains("is after"), "{reversed:?}");
    }
}
