//! Matching `workflow` triggers: given a run that just ended, which workflows start and with
//! what params. Pure: no IO, no clock; the caller loads the facts and launches the runs.

use serde_json::{Map, Value, json};
use tracing::warn;

use crate::dag::Workflow;
use crate::lifecycle::RunState;
use crate::spec::format::{TriggerSpec, UpstreamState, WorkflowTrigger};
use crate::template::Templates;

/// What triggers see of a run that ended, as `upstream` in their templates.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    pub workflow: String,
    pub run_id: String,
    pub state: RunState,
    /// Task id → that task's outputs (its latest try).
    pub outputs: Map<String, Value>,
}

impl RunFacts {
    /// `upstream` as templates see it: `{workflow, run_id, state, outputs: {task: outputs}}`.
    pub fn to_upstream(&self) -> Value {
        json!({
            "workflow": self.workflow,
            "run_id": self.run_id,
            "state": self.state.as_str(),
            "outputs": self.outputs,
        })
    }
}

fn state_matches(wanted: &[UpstreamState], state: RunState) -> bool {
    let state = match state {
        RunState::Success => UpstreamState::Success,
        RunState::Failed => UpstreamState::Failed,
        RunState::Cancelled => UpstreamState::Cancelled,
        RunState::Queued | RunState::Running => return false,
    };
    // No states given means `success`, as the format documents.
    if wanted.is_empty() {
        state == UpstreamState::Success
    } else {
        wanted.contains(&state)
    }
}

/// The workflows among `candidates` whose `workflow` triggers match the ended run, each with
/// the params its trigger maps from `upstream`. An `if` or a param that cannot be rendered is
/// logged and the trigger does not fire: a typo must not start runs with wrong params.
pub fn matching_workflow_triggers<'a>(
    ended: &RunFacts,
    candidates: impl Iterator<Item = &'a Workflow>,
    templates: &Templates,
) -> Vec<(String, Map<String, Value>)> {
    // Only `upstream` exists for a run that has not been created yet.
    let context = crate::template::from_json(&json!({ "upstream": ended.to_upstream() }));
    let mut started = Vec::new();
    for workflow in candidates {
        for raw in &workflow.triggers {
            // Triggers were checked against the schema when the workflow compiled; one that
            // no longer parses is not a workflow trigger we can act on.
            let Ok(TriggerSpec::Workflow(trigger)) = serde_json::from_value(raw.clone()) else {
                continue;
            };
            if trigger.id != ended.workflow || !state_matches(&trigger.states, ended.state) {
                continue;
            }
            if let Some(params) = fire(&workflow.id, &trigger, ended, &context, templates) {
                started.push((workflow.id.clone(), params));
            }
        }
    }
    started
}

/// Evaluates one matching trigger's `if` and params; `None` when it does not fire.
fn fire(
    workflow: &str,
    trigger: &WorkflowTrigger,
    ended: &RunFacts,
    context: &minijinja::Value,
    templates: &Templates,
) -> Option<Map<String, Value>> {
    if let Some(condition) = &trigger.condition {
        match templates.eval_condition_field("if", condition, context) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                warn!(workflow, upstream_run = %ended.run_id, error = %e, "A workflow trigger's `if` could not be evaluated; it does not fire.");
                return None;
            }
        }
    }
    let mut params = Map::new();
    for (name, value) in &trigger.params {
        match templates.render_field(&format!("params.{name}"), value, context) {
            Ok(value) => {
                params.insert(name.clone(), value);
            }
            Err(e) => {
                warn!(workflow, upstream_run = %ended.run_id, param = %name, error = %e, "A workflow trigger's param could not be rendered; it does not fire.");
                return None;
            }
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(id: &str, triggers: Value) -> Workflow {
        let source = format!("id: {id}\ntasks:\n  t: {{ operator: noop }}\n");
        // The structure was checked elsewhere; an empty schema accepts the file as it is.
        let mut w = crate::dag::compile(&source, std::path::Path::new("w.yaml"), &json!({}))
            .expect("compiles");
        w.triggers = triggers.as_array().cloned().unwrap_or_default();
        w
    }

    fn ended(state: RunState, drift: &str) -> RunFacts {
        let mut outputs = Map::new();
        outputs.insert("check".into(), json!({ "drift": drift }));
        RunFacts {
            workflow: "a".into(),
            run_id: "r1".into(),
            state,
            outputs,
        }
    }

    fn b() -> Workflow {
        workflow(
            "b",
            json!([{ "workflow": {
                "id": "a", "states": ["success"],
                "if": "{{ upstream.outputs.check.drift == 'yes' }}",
                "params": { "reason": "{{ upstream.outputs.check.drift }}", "from": "{{ upstream.run_id }}" }
            }}]),
        )
    }

    #[test]
    fn a_matching_run_starts_the_workflow_with_mapped_params() {
        let t = Templates::new();
        let found = matching_workflow_triggers(&ended(RunState::Success, "yes"), [b()].iter(), &t);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "b");
        assert_eq!(found[0].1["reason"], "yes");
        assert_eq!(found[0].1["from"], "r1");
    }

    #[test]
    fn a_false_if_or_another_state_or_workflow_does_not_match() {
        let t = Templates::new();
        assert!(
            matching_workflow_triggers(&ended(RunState::Success, "no"), [b()].iter(), &t)
                .is_empty()
        );
        assert!(
            matching_workflow_triggers(&ended(RunState::Failed, "yes"), [b()].iter(), &t)
                .is_empty()
        );
        let mut other = ended(RunState::Success, "yes");
        other.workflow = "z".into();
        assert!(matching_workflow_triggers(&other, [b()].iter(), &t).is_empty());
    }

    #[test]
    fn states_default_to_success_and_github_triggers_are_ignored() {
        let t = Templates::new();
        let c = workflow(
            "c",
            json!([{ "github": { "events": ["push"] } }, { "workflow": { "id": "a" } }]),
        );
        let found =
            matching_workflow_triggers(&ended(RunState::Success, "x"), [c.clone()].iter(), &t);
        assert_eq!(found, vec![("c".to_owned(), Map::new())]);
        assert!(
            matching_workflow_triggers(&ended(RunState::Cancelled, "x"), [c].iter(), &t).is_empty()
        );
    }

    #[test]
    fn a_broken_if_is_treated_as_false() {
        let t = Templates::new();
        let d = workflow(
            "d",
            json!([{ "workflow": { "id": "a", "if": "{{ upstream.outputs.missing.x }}" } }]),
        );
        assert!(
            matching_workflow_triggers(&ended(RunState::Success, "x"), [d].iter(), &t).is_empty()
        );
    }

    #[test]
    fn a_runaway_if_or_param_runs_out_of_budget_and_does_not_fire() {
        let t = Templates::new();
        let runaway = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}\
                       {% endfor %}true";
        let looping_if = workflow("e", json!([{ "workflow": { "id": "a", "if": runaway } }]));
        let looping_param = workflow(
            "f",
            json!([{ "workflow": { "id": "a", "params": { "p": runaway } } }]),
        );
        let ended = ended(RunState::Success, "x");
        assert!(matching_workflow_triggers(&ended, [looping_if].iter(), &t).is_empty());
        assert!(matching_workflow_triggers(&ended, [looping_param].iter(), &t).is_empty());
    }
}
