//! What the run page says about a run besides its tasks: a title that names the run (its
//! workflow, its logical date or what started it, its state), where it came from (a user, an
//! upstream run or task, a GitHub delivery with its event, pull request, commit and sender
//! linked to GitHub) and the runs it started.

use serde::Serialize;
use serde_json::Value;

use super::iso;
use crate::store::RunRecord;

/// Triggers whose runs stand for a data interval: the only ones whose logical date means
/// something to people.
pub(super) fn has_logical_date(trigger: &str) -> bool {
    matches!(trigger, "schedule" | "backfill")
}

/// How a trigger kind reads in a sentence.
fn trigger_words(trigger: &str) -> &str {
    match trigger {
        "schedule" => "Scheduled run",
        "backfill" => "Backfill run",
        "ui" => "Run started in the UI",
        "api" => "Run started through the API",
        "github" => "GitHub run",
        "workflow" => "Run triggered by another run",
        "manual" => "Run started with sluice run",
        _ => "Run",
    }
}

/// The run's heading: what it is, without its id. A scheduled run is named by its logical
/// date; any other by what started it and when it was created.
pub(super) fn heading(run: &RunRecord) -> String {
    if has_logical_date(&run.trigger) {
        format!(
            "{} for {}",
            trigger_words(&run.trigger),
            run.logical_date.format("%Y-%m-%d %H:%M UTC")
        )
    } else {
        format!(
            "{}, {}",
            trigger_words(&run.trigger),
            run.created_at.format("%Y-%m-%d %H:%M UTC")
        )
    }
}

/// A fact with an optional link.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(super) struct Link {
    pub label: String,
    pub href: Option<String>,
}

fn text(label: impl Into<String>) -> Link {
    Link {
        label: label.into(),
        href: None,
    }
}

fn link(label: impl Into<String>, href: String) -> Link {
    Link {
        label: label.into(),
        href: Some(href),
    }
}

/// Who or what started the run, linked where it is a page.
pub(super) fn origin(run: &RunRecord) -> Option<Link> {
    let by = run.triggered_by.as_deref()?;
    if let Some(user) = by.strip_prefix("user:") {
        return Some(text(format!("{user}, in the UI")));
    }
    if let Some(delivery) = by.strip_prefix("github:") {
        return Some(link(
            format!("GitHub delivery {delivery}"),
            "/github/deliveries".to_owned(),
        ));
    }
    if let Some(backfill) = by.strip_prefix("backfill:") {
        return Some(text(format!("backfill {backfill}")));
    }
    // `workflow/run` (a workflow trigger) or `workflow/run/task/try` (a `trigger` task).
    let parts: Vec<&str> = by.split('/').collect();
    match parts.as_slice() {
        [workflow, run_id] => Some(link(
            format!("a run of {workflow}"),
            format!("/runs/{run_id}"),
        )),
        [workflow, run_id, task, try_number] => Some(link(
            format!("task {task} (try {try_number}) of a run of {workflow}"),
            format!("/runs/{run_id}#task-{task}"),
        )),
        _ => Some(text(by)),
    }
}

/// The `triggered_by` prefix of the runs this run started.
pub(super) fn started_prefix(run: &RunRecord) -> String {
    format!("{}/{}", run.workflow_id, run.id)
}

/// A run this run started.
#[derive(Debug, Serialize)]
pub(super) struct StartedRun {
    pub id: String,
    pub workflow: String,
    pub state: String,
    pub symbol: &'static str,
    pub created_at: String,
}

/// The runs among `candidates` (found by `started_prefix`) that this run started.
pub(super) fn started_runs(run: &RunRecord, candidates: Vec<RunRecord>) -> Vec<StartedRun> {
    let prefix = started_prefix(run);
    candidates
        .into_iter()
        .filter(|r| {
            r.triggered_by.as_deref().is_some_and(|by| {
                by == prefix
                    || by
                        .strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .map(|r| StartedRun {
            symbol: super::pages::symbol(r.state.as_str()),
            state: r.state.as_str().to_owned(),
            created_at: iso(r.created_at),
            workflow: r.workflow_id,
            id: r.id,
        })
        .collect()
}

/// Characters GitHub allows in an owner/repository name, a branch, a login: anything else is
/// not linked (the text still shows).
fn plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !value.contains("..")
}

/// A GitHub run's facts (event, pull request, commit, branch, sender), linked to GitHub.
pub(super) fn github_facts(run: &RunRecord) -> Vec<(&'static str, Link)> {
    let Some(details) = run
        .trigger_details
        .as_ref()
        .filter(|_| run.trigger == "github")
    else {
        return Vec::new();
    };
    let field = |name: &str| details.get(name).and_then(Value::as_str).map(str::to_owned);
    let repository = field("repository").filter(|r| plain(r));
    let base = repository
        .as_ref()
        .map(|r| format!("https://github.com/{r}"));
    let mut facts = Vec::new();
    if let Some(event) = field("event") {
        let action = field("action")
            .map(|a| format!(" ({a})"))
            .unwrap_or_default();
        facts.push(("Event", text(format!("{event}{action}"))));
    }
    if let Some(repository) = &repository {
        facts.push((
            "Repository",
            link(
                repository.clone(),
                format!("https://github.com/{repository}"),
            ),
        ));
    }
    let number = run
        .event
        .get("pull_request")
        .and_then(|pr| pr.get("number"))
        .or_else(|| run.event.get("number"))
        .and_then(Value::as_u64);
    if let (Some(n), Some(base)) = (number, &base) {
        facts.push((
            "Pull request",
            link(format!("#{n}"), format!("{base}/pull/{n}")),
        ));
    }
    if let Some(branch) = field("branch") {
        facts.push(match (&base, plain(&branch)) {
            (Some(base), true) => (
                "Branch",
                link(branch.clone(), format!("{base}/tree/{branch}")),
            ),
            _ => ("Branch", text(branch)),
        });
    }
    if let Some(sha) = field("sha") {
        let short: String = sha.chars().take(12).collect();
        facts.push(match (&base, sha.chars().all(|c| c.is_ascii_hexdigit())) {
            (Some(base), true) => ("Commit", link(short, format!("{base}/commit/{sha}"))),
            _ => ("Commit", text(short)),
        });
    }
    if let Some(sender) = field("sender") {
        facts.push(if plain(&sender) && !sender.contains('/') {
            (
                "Sender",
                link(sender.clone(), format!("https://github.com/{sender}")),
            )
        } else {
            ("Sender", text(sender))
        });
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::RunState;
    use chrono::TimeZone;

    fn run(trigger: &str, triggered_by: Option<&str>) -> RunRecord {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 12, 6, 2, 0, 0)
            .single()
            .expect("time");
        RunRecord {
            id: "r1".into(),
            workflow_id: "wf".into(),
            version_hash: "h".into(),
            state: RunState::Success,
            trigger: trigger.into(),
            triggered_by: triggered_by.map(str::to_owned),
            params: serde_json::Map::new(),
            logical_date: at,
            data_interval_start: at,
            data_interval_end: at,
            error: None,
            created_at: at + chrono::Duration::minutes(5),
            started_at: None,
            rerun_started_at: None,
            ended_at: None,
            trigger_details: None,
            event: Value::Null,
        }
    }

    #[test]
    fn headings_name_the_run_by_what_means_something() {
        assert_eq!(
            heading(&run("schedule", None)),
            "Scheduled run for 2026-12-06 02:00 UTC"
        );
        assert_eq!(
            heading(&run("ui", Some("user:ann"))),
            "Run started in the UI, 2026-12-06 02:05 UTC"
        );
        assert!(has_logical_date("backfill") && !has_logical_date("github"));
    }

    #[test]
    fn origins_link_to_what_started_the_run() {
        assert_eq!(
            origin(&run("workflow", Some("up/r0"))),
            Some(link("a run of up", "/runs/r0".into()))
        );
        assert_eq!(
            origin(&run("workflow", Some("up/r0/go/2"))),
            Some(link(
                "task go (try 2) of a run of up",
                "/runs/r0#task-go".into()
            ))
        );
        assert_eq!(
            origin(&run("ui", Some("user:ann"))),
            Some(text("ann, in the UI"))
        );
        assert_eq!(origin(&run("ui", None)), None);
        let started = started_runs(
            &run("ui", None),
            vec![
                run("workflow", Some("wf/r1")),
                run("workflow", Some("wf/r1/t/1")),
                run("workflow", Some("wf/r10")),
            ],
        );
        assert_eq!(started.len(), 2, "wf/r10 is another run's");
    }

    #[test]
    fn github_facts_link_only_plain_names() {
        let mut r = run("github", Some("github:d1"));
        r.trigger_details = Some(serde_json::json!({
            "event": "pull_request", "action": "opened", "repository": "acme/model",
            "branch": "main", "sha": "0123456789abcdef", "sender": "octo"
        }));
        r.event = serde_json::json!({"pull_request": {"number": 7}});
        let facts = github_facts(&r);
        let href = |name: &str| {
            facts
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, l)| l.href.clone())
        };
        assert_eq!(
            href("Pull request").as_deref(),
            Some("https://github.com/acme/model/pull/7")
        );
        assert_eq!(
            href("Commit").as_deref(),
            Some("https://github.com/acme/model/commit/0123456789abcdef")
        );
        assert_eq!(href("Sender").as_deref(), Some("https://github.com/octo"));
        r.trigger_details = Some(serde_json::json!({"repository": "javascript:alert(1)//x"}));
        assert!(github_facts(&r).iter().all(|(_, l)| l.href.is_none()));
    }
}
