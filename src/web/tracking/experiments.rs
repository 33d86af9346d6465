//! `/experiments` and `/experiments/{id}`: an experiment's runs as a table with chosen param
//! and metric columns, sorted, filtered (the grammar of `tracking::query`) and paged by the
//! backend, with checkboxes to compare runs. Every setting is a GET parameter, so each view has
//! a link of its own; what cannot be used comes back as sentences on the page.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::Value as Page;
use minijinja::value::Serde;
use serde::Serialize;

use super::{masked, number, page, unavailable};
use crate::tracking::query::{field_name, parse_field, parse_filter};
use crate::tracking::{RunField, RunOrder, RunQuery, TrackingError, TrackingRunDetail};
use crate::web::{Result, WebError, WebState, auth::Session, iso};

/// Runs per page.
pub const PAGE_SIZE: u32 = 100;
/// Columns shown when none are chosen: the first params and metrics of the page's runs.
const DEFAULT_COLUMNS: usize = 6;

#[derive(Debug, Serialize)]
struct ExperimentRow {
    id: String,
    name: String,
    runs: Option<u64>,
    last_run_at: Option<String>,
}

/// `GET /experiments`: every experiment, with its run count and latest run.
pub(super) async fn list(State(state): State<WebState>, session: Session) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let rows: Vec<ExperimentRow> = tracking
        .experiment_summaries()
        .await?
        .into_iter()
        .map(|s| ExperimentRow {
            id: s.experiment.id,
            name: s.experiment.name,
            runs: s.runs,
            last_run_at: s.last_run_at.map(iso),
        })
        .collect();
    page(
        StatusCode::OK,
        "tracking_experiments.html",
        minijinja::context! {
            title => "Experiments",
            user => session.view(),
            backend => tracking.backend_name(),
            experiments => Page::from(Serde(&rows)),
        },
    )
}

/// The table's settings as the URL gives them.
#[derive(Debug, Default, Clone)]
struct TableQuery {
    filter: String,
    /// Field names as the filter grammar writes them.
    columns: Vec<String>,
    sort: Option<String>,
    descending: bool,
    page: Option<String>,
}

impl TableQuery {
    /// `columns=a,b` or the column picker's repeated `col=a&col=b`; `order=asc|desc`.
    fn of(pairs: &[(String, String)]) -> TableQuery {
        let mut query = TableQuery {
            descending: true,
            ..TableQuery::default()
        };
        for (name, value) in pairs {
            let value = value.trim();
            match name.as_str() {
                "filter" => query.filter = value.to_owned(),
                "columns" => query.columns.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned),
                ),
                "col" if !value.is_empty() => query.columns.push(value.to_owned()),
                "sort" if !value.is_empty() => query.sort = Some(value.to_owned()),
                "order" => query.descending = !value.eq_ignore_ascii_case("asc"),
                "page" if !value.is_empty() => query.page = Some(value.to_owned()),
                _ => {}
            }
        }
        let mut seen = BTreeSet::new();
        query.columns.retain(|c| seen.insert(c.clone()));
        query
    }

    /// The parameters of a link to this view, changed by `edit`.
    fn link(&self, edit: impl FnOnce(&mut TableQuery)) -> BTreeMap<&'static str, String> {
        let mut changed = self.clone();
        edit(&mut changed);
        let mut link = BTreeMap::new();
        if !changed.filter.is_empty() {
            link.insert("filter", changed.filter);
        }
        if !changed.columns.is_empty() {
            link.insert("columns", changed.columns.join(","));
        }
        if let Some(sort) = changed.sort {
            link.insert("sort", sort);
            link.insert(
                "order",
                if changed.descending { "desc" } else { "asc" }.to_owned(),
            );
        }
        if let Some(page) = changed.page {
            link.insert("page", page);
        }
        link
    }
}

#[derive(Debug, Serialize)]
struct Header {
    name: String,
    /// `asc` or `desc` when the table is sorted by it.
    sorted: Option<&'static str>,
    link: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    name: String,
    status: &'static str,
    started_at: String,
    cells: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Choice {
    name: String,
    checked: bool,
}

/// A run's value of a column, as text.
fn cell(state: &WebState, run: &TrackingRunDetail, field: &RunField) -> String {
    let text = match field {
        RunField::Metric(key) => run.metrics.get(key).map(|p| number(p.value)),
        RunField::Param(key) => run.params.get(key).map(|v| masked(state, v)),
        RunField::Tag(key) => run.tags.get(key).map(|v| masked(state, v)),
        RunField::Status => Some(run.run.status.as_str().to_owned()),
        RunField::Name => Some(run.run.name.clone()),
        RunField::StartTime => Some(iso(run.run.started_at)),
    };
    text.unwrap_or_else(|| "—".to_owned())
}

/// `GET /experiments/{id}`: one page of the experiment's runs as the URL asks.
pub(super) async fn runs(
    State(state): State<WebState>,
    session: Session,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response> {
    let Some(tracking) = state.tracking.clone() else {
        return unavailable(&session);
    };
    let experiment = tracking
        .experiment_by_id(&id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("there is no experiment with id `{id}`")))?;
    let table = TableQuery::of(&pairs);
    let mut problems = Vec::new();
    let conditions = parse_filter(&table.filter)
        .map_err(|e| problems.push(format!("The filter cannot be used: {e}.")))
        .unwrap_or_default();
    let order = table.sort.as_deref().and_then(|sort| {
        parse_field(sort)
            .map(|field| RunOrder {
                field,
                descending: table.descending,
            })
            .map_err(|e| problems.push(format!("The sort cannot be used: {e}.")))
            .ok()
    });
    let mut chosen = Vec::new();
    for column in &table.columns {
        match parse_field(column) {
            Ok(field) => chosen.push(field),
            Err(e) => problems.push(format!("The column “{column}” cannot be shown: {e}.")),
        }
    }
    let mut found = None;
    if problems.is_empty() {
        let query = RunQuery {
            conditions,
            order: order.clone(),
            max_results: PAGE_SIZE,
            page_token: table.page.clone(),
        };
        match tracking.search_runs(&experiment.id, &query).await {
            Ok(page) => found = Some(page),
            Err(TrackingError::Invalid(message)) => {
                problems.push(format!("The search cannot be used: {message}."))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let runs = found.as_ref().map_or(&[][..], |p| p.runs.as_slice());
    // The keys offered are those of the page's runs, so listing them costs nothing more.
    let mut keys = BTreeSet::new();
    for run in runs {
        keys.extend(run.metrics.keys().map(|k| RunField::Metric(k.clone())));
        keys.extend(run.params.keys().map(|k| RunField::Param(k.clone())));
    }
    let columns: Vec<RunField> = if chosen.is_empty() {
        let metrics = keys.iter().filter(|f| matches!(f, RunField::Metric(_)));
        let params = keys.iter().filter(|f| matches!(f, RunField::Param(_)));
        params
            .take(DEFAULT_COLUMNS)
            .chain(metrics.take(DEFAULT_COLUMNS))
            .cloned()
            .collect()
    } else {
        chosen
    };
    let column_names: Vec<String> = columns.iter().map(field_name).collect();
    let mut choices: Vec<Choice> = keys
        .iter()
        .map(|field| {
            let name = field_name(field);
            Choice {
                checked: column_names.contains(&name),
                name,
            }
        })
        .collect();
    for name in &column_names {
        if !choices.iter().any(|c| &c.name == name) {
            choices.push(Choice {
                name: name.clone(),
                checked: true,
            });
        }
    }
    let sorted_by = order.as_ref().map(|o| field_name(&o.field));
    let headers: Vec<Header> = column_names
        .iter()
        .map(|name| {
            let sorted = (sorted_by.as_ref() == Some(name)).then_some(if table.descending {
                "desc"
            } else {
                "asc"
            });
            // A click sorts by the column, highest first; a second click turns the order.
            let descending = sorted != Some("desc");
            Header {
                name: name.clone(),
                sorted,
                link: table.link(|q| {
                    q.columns = column_names.clone();
                    q.sort = Some(name.clone());
                    q.descending = descending;
                    q.page = None;
                }),
            }
        })
        .collect();
    let rows: Vec<Row> = runs
        .iter()
        .map(|run| Row {
            id: run.run.id.clone(),
            name: run.run.name.clone(),
            status: run.run.status.as_str(),
            started_at: iso(run.run.started_at),
            cells: columns.iter().map(|f| cell(&state, run, f)).collect(),
        })
        .collect();
    let next = found
        .as_ref()
        .and_then(|p| p.next_page_token.clone())
        .map(|token| table.link(|q| q.page = Some(token)));
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    page(
        status,
        "tracking_experiment.html",
        minijinja::context! {
            title => format!("Experiment {}", experiment.name),
            user => session.view(),
            experiment => minijinja::context! { id => experiment.id, name => experiment.name },
            backend => tracking.backend_name(),
            problems,
            filter => &table.filter,
            sort => sorted_by,
            descending => table.descending,
            headers => Page::from(Serde(&headers)),
            rows => Page::from(Serde(&rows)),
            choices => Page::from(Serde(&choices)),
            total => found.as_ref().and_then(|p| p.total),
            paged => table.page.is_some(),
            first => table.link(|q| q.page = None),
            next,
            page_size => PAGE_SIZE,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn columns_come_from_either_form_once_each_and_links_keep_the_view() {
        let query = TableQuery::of(&pairs(&[
            ("columns", "param.model, metric.acc"),
            ("col", "metric.acc"),
            ("col", "metric.f1"),
            ("sort", "metric.acc"),
            ("order", "asc"),
            ("filter", "metric.acc > 0.5"),
            ("page", "100"),
        ]));
        assert_eq!(query.columns, ["param.model", "metric.acc", "metric.f1"]);
        assert!(!query.descending);
        let link = query.link(|q| q.page = None);
        assert_eq!(link["columns"], "param.model,metric.acc,metric.f1");
        assert_eq!(link["order"], "asc");
        assert_eq!(link["filter"], "metric.acc > 0.5");
        assert!(!link.contains_key("page"));
        assert!(TableQuery::of(&[]).descending, "highest first by default");
    }
}
