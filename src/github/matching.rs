//! Whether a workflow's `github` triggers match a delivery, and with which params and commit
//! status. Filters apply in the order a reader checks them (event, repository, action, branch
//! or tag, paths); the first that refuses gives the reason recorded with the delivery.

use serde_json::{Map, Value};

use super::facts::EventFacts;
use super::patterns::Patterns;
use crate::spec::format::{GithubTrigger, StatusSetting, TriggerSpec};
use crate::template::Templates;

/// Where a run reports its commit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTarget {
    /// The status context, `sluice/<workflow>` unless the trigger names one.
    pub context: String,
    /// Text shown before the state's own description, if the trigger gives one.
    pub description: Option<String>,
}

/// A trigger that fires: the run's params and, when it reports one, its commit status.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub params: Map<String, Value>,
    pub status: Option<StatusTarget>,
}

/// What a workflow's triggers make of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerMatch {
    Fired(Fired),
    /// A trigger listens for the event but its filters refused it, for this reason.
    Refused(String),
}

/// Matches the `github` triggers of `workflow` (as written in its file) against a delivery;
/// `None` when none of them listens for this event. The first trigger that fires wins; when
/// none does, the reason is the first one's. `context` holds `event` (the payload).
pub fn match_trigger(
    workflow: &str,
    triggers: &[Value],
    facts: &EventFacts,
    context: &minijinja::Value,
    templates: &Templates,
) -> Option<TriggerMatch> {
    let mut refused: Option<String> = None;
    for raw in triggers {
        // Triggers were checked when the workflow compiled; one that no longer reads as a
        // github trigger is not one to act on.
        let Ok(TriggerSpec::Github(trigger)) = serde_json::from_value::<TriggerSpec>(raw.clone())
        else {
            continue;
        };
        if !trigger.events.contains(&facts.event) {
            continue;
        }
        let outcome = filters(&trigger, facts).and_then(|()| params(&trigger, context, templates));
        match outcome {
            Ok(params) => {
                return Some(TriggerMatch::Fired(Fired {
                    params,
                    status: status_target(workflow, &trigger, facts),
                }));
            }
            Err(reason) => {
                refused.get_or_insert(reason);
            }
        }
    }
    refused.map(TriggerMatch::Refused)
}

/// Checks every filter of one trigger; `Err` says which refused and why.
fn filters(trigger: &GithubTrigger, facts: &EventFacts) -> Result<(), String> {
    if !trigger.repositories.is_empty() {
        let Some(repository) = &facts.repository else {
            return Err("the payload names no repository".to_owned());
        };
        if !trigger
            .repositories
            .iter()
            .any(|r| r.eq_ignore_ascii_case(repository))
        {
            return Err(format!(
                "repository `{repository}` is not one of {}",
                listing(&trigger.repositories)
            ));
        }
    }
    if !trigger.actions.is_empty() {
        let Some(action) = &facts.action else {
            return Err(format!("`{}` deliveries have no action", facts.event));
        };
        if !trigger.actions.contains(action) {
            return Err(format!(
                "action `{action}` is not one of {}",
                listing(&trigger.actions)
            ));
        }
    }
    if facts.deleted {
        return Err("the push deleted its branch or tag".to_owned());
    }
    refs(trigger, facts)?;
    if !trigger.paths.is_empty()
        && let Some(changed) = &facts.changed_paths
    {
        let paths = compiled(&trigger.paths, "paths")?;
        if !paths.matches_any(changed.iter().map(String::as_str)) {
            return Err(format!(
                "none of the {} changed files matches `paths`",
                changed.len()
            ));
        }
    }
    Ok(())
}

/// `branches` and `tags`: with either set, the delivery must name a branch that `branches`
/// takes or a tag that `tags` takes (a list that is not set takes nothing), as in Actions.
fn refs(trigger: &GithubTrigger, facts: &EventFacts) -> Result<(), String> {
    if trigger.branches.is_empty() && trigger.tags.is_empty() {
        return Ok(());
    }
    if let Some(branch) = &facts.branch {
        if trigger.branches.is_empty() {
            return Err(format!("branch `{branch}`: the trigger only takes tags"));
        }
        return if compiled(&trigger.branches, "branches")?.matches(branch) {
            Ok(())
        } else {
            Err(format!("branch `{branch}` does not match `branches`"))
        };
    }
    if let Some(tag) = &facts.tag {
        if trigger.tags.is_empty() {
            return Err(format!("tag `{tag}`: the trigger only takes branches"));
        }
        return if compiled(&trigger.tags, "tags")?.matches(tag) {
            Ok(())
        } else {
            Err(format!("tag `{tag}` does not match `tags`"))
        };
    }
    Err(format!(
        "`{}` deliveries name no branch or tag, and the trigger filters on them",
        facts.event
    ))
}

fn compiled(patterns: &[String], what: &str) -> Result<Patterns, String> {
    // Checked when the workflow compiled; a failure here means the file changed meaning.
    Patterns::new(patterns).map_err(|e| format!("`{what}`: {e}"))
}

fn params(
    trigger: &GithubTrigger,
    context: &minijinja::Value,
    templates: &Templates,
) -> Result<Map<String, Value>, String> {
    let mut params = Map::new();
    for (name, value) in &trigger.params {
        let rendered = templates
            .render_value(value, context)
            .map_err(|e| format!("param `{name}` could not be rendered: {e}"))?;
        params.insert(name.clone(), rendered);
    }
    Ok(params)
}

/// A status needs a commit and its repository; `status: false` turns it off.
fn status_target(
    workflow: &str,
    trigger: &GithubTrigger,
    facts: &EventFacts,
) -> Option<StatusTarget> {
    facts.sha.as_ref()?;
    facts.repository.as_ref()?;
    let default = || format!("sluice/{workflow}");
    match &trigger.status {
        None | Some(StatusSetting::Enabled(true)) => Some(StatusTarget {
            context: default(),
            description: None,
        }),
        Some(StatusSetting::Enabled(false)) => None,
        Some(StatusSetting::Custom(spec)) => Some(StatusTarget {
            context: spec.context.clone().unwrap_or_else(default),
            description: spec.description.clone(),
        }),
    }
}

fn listing(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn context(payload: &Value) -> minijinja::Value {
        crate::template::from_json(&json!({ "event": payload }))
    }

    fn decide(triggers: Value, event: &str, payload: &Value) -> Option<TriggerMatch> {
        let facts = EventFacts::from_payload(event, payload);
        let triggers = triggers.as_array().cloned().unwrap_or_default();
        match_trigger(
            "evals",
            &triggers,
            &facts,
            &context(payload),
            &Templates::new(),
        )
    }

    fn push(branch: &str, files: &[&str]) -> Value {
        json!({
            "ref": format!("refs/heads/{branch}"), "after": SHA,
            "repository": {"full_name": "acme/evals"}, "sender": {"login": "octocat"},
            "commits": [{"added": files, "modified": [], "removed": []}]
        })
    }

    fn pull_request(action: &str, base: &str) -> Value {
        json!({
            "action": action, "number": 7,
            "repository": {"full_name": "acme/evals"},
            "pull_request": {"base": {"ref": base}, "head": {"sha": SHA, "ref": "topic"}}
        })
    }

    fn fired(m: Option<TriggerMatch>) -> Fired {
        match m {
            Some(TriggerMatch::Fired(f)) => f,
            other => panic!("expected the trigger to fire, got {other:?}"),
        }
    }

    fn refused(m: Option<TriggerMatch>) -> String {
        match m {
            Some(TriggerMatch::Refused(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_pull_request_fires_with_mapped_params_and_the_default_status() {
        let triggers = json!([{ "github": {
            "events": ["pull_request"], "actions": ["opened", "synchronize"],
            "branches": ["main"],
            "params": { "pr": "{{ event.number }}", "sha": "{{ event.pull_request.head.sha }}" }
        }}]);
        let f = fired(decide(
            triggers.clone(),
            "pull_request",
            &pull_request("opened", "main"),
        ));
        assert_eq!(f.params["pr"], json!(7));
        assert_eq!(f.params["sha"], json!(SHA));
        assert_eq!(
            f.status,
            Some(StatusTarget {
                context: "sluice/evals".into(),
                description: None
            })
        );
        let reason = refused(decide(
            triggers.clone(),
            "pull_request",
            &pull_request("closed", "main"),
        ));
        assert!(reason.contains("action `closed`"), "{reason}");
        let reason = refused(decide(
            triggers.clone(),
            "pull_request",
            &pull_request("opened", "dev"),
        ));
        assert!(reason.contains("branch `dev`"), "{reason}");
        assert_eq!(
            decide(triggers, "push", &push("main", &[])),
            None,
            "not listening for push"
        );
    }

    #[test]
    fn branch_and_path_filters_with_exclusions() {
        let triggers = json!([{ "github": {
            "events": ["push"], "branches": ["main", "release/**", "!release/old/**"],
            "paths": ["prompts/**", "!prompts/drafts/**"]
        }}]);
        fired(decide(
            triggers.clone(),
            "push",
            &push("main", &["prompts/a.txt"]),
        ));
        fired(decide(
            triggers.clone(),
            "push",
            &push("release/1/x", &["prompts/a.txt"]),
        ));
        let reason = refused(decide(
            triggers.clone(),
            "push",
            &push("release/old/1", &["prompts/a.txt"]),
        ));
        assert!(reason.contains("release/old/1"), "{reason}");
        let reason = refused(decide(
            triggers.clone(),
            "push",
            &push("main", &["prompts/drafts/x.txt", "README.md"]),
        ));
        assert!(reason.contains("2 changed files"), "{reason}");
        let tag = json!({"ref": "refs/tags/v1", "after": SHA, "commits": []});
        let reason = refused(decide(triggers, "push", &tag));
        assert!(reason.contains("only takes branches"), "{reason}");
    }

    #[test]
    fn paths_do_not_filter_payloads_without_a_file_list() {
        let triggers =
            json!([{ "github": { "events": ["pull_request"], "paths": ["prompts/**"] } }]);
        fired(decide(
            triggers,
            "pull_request",
            &pull_request("opened", "main"),
        ));
    }

    #[test]
    fn tags_repositories_and_status_settings() {
        let release = json!({
            "action": "published", "repository": {"full_name": "Acme/Evals"},
            "release": {"tag_name": "v1.4.0", "target_commitish": SHA}
        });
        let triggers = json!([{ "github": {
            "events": ["release"], "tags": ["v1.*"], "repositories": ["acme/evals"],
            "status": {"context": "gate/quality", "description": "Eval gate"}
        }}]);
        let f = fired(decide(triggers, "release", &release));
        assert_eq!(
            f.status,
            Some(StatusTarget {
                context: "gate/quality".into(),
                description: Some("Eval gate".into())
            })
        );
        let other_repo =
            json!([{ "github": { "events": ["release"], "repositories": ["acme/other"] } }]);
        let reason = refused(decide(other_repo, "release", &release));
        assert!(reason.contains("Acme/Evals"), "{reason}");
        let off = json!([{ "github": { "events": ["release"], "status": false } }]);
        assert_eq!(fired(decide(off, "release", &release)).status, None);
    }

    #[test]
    fn a_param_that_cannot_render_refuses_and_a_later_trigger_may_fire() {
        let triggers = json!([
            { "github": { "events": ["push"], "params": { "x": "{{ event.nope.deeper }}" } } },
            { "github": { "events": ["push"], "params": { "x": "{{ event.ref }}" } } }
        ]);
        let f = fired(decide(triggers, "push", &push("main", &[])));
        assert_eq!(f.params["x"], json!("refs/heads/main"));
        let only_bad = json!([{ "github": { "events": ["push"], "params": { "x": "{{ event.nope.deeper }}" } } }]);
        let reason = refused(decide(only_bad, "push", &push("main", &[])));
        assert!(reason.contains("param `x`"), "{reason}");
    }

    #[test]
    fn deleting_pushes_and_actionless_events_are_refused_with_reasons() {
        let gone =
            json!({"ref": "refs/heads/x", "after": "0".repeat(40), "deleted": true, "commits": []});
        let any_push = json!([{ "github": { "events": ["push"] } }]);
        assert!(refused(decide(any_push, "push", &gone)).contains("deleted"));
        let comment = json!({"action": "created", "issue": {"number": 1}});
        let filtered = json!([{ "github": { "events": ["issue_comment"], "branches": ["main"] } }]);
        assert!(refused(decide(filtered, "issue_comment", &comment)).contains("no branch or tag"));
    }

    #[test]
    fn a_runaway_params_mapping_runs_out_of_budget_and_refuses() {
        let runaway = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}\
                       {% endfor %}{{ event.ref }}";
        let triggers = json!([{ "github": { "events": ["push"], "params": { "x": runaway } } }]);
        let reason = refused(decide(triggers, "push", &push("main", &[])));
        assert!(
            reason.contains("param `x`") && reason.contains("more work than one render may do"),
            "{reason}"
        );
    }
}
