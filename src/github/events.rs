//! The webhook event names Sluice knows, and which of them carry an `action`. Workflow files
//! are checked against this list so that a typo (`pull_requests`) is an error instead of a
//! trigger that never fires.

/// Event names (`X-GitHub-Event`) a `github` trigger may list.
pub const KNOWN_EVENTS: &[&str] = &[
    "check_run",
    "check_suite",
    "create",
    "delete",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "issue_comment",
    "issues",
    "label",
    "merge_group",
    "milestone",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_target",
    "push",
    "registry_package",
    "release",
    "repository_dispatch",
    "status",
    "workflow_dispatch",
    "workflow_run",
];

/// Events whose payload has no `action`: an `actions` filter on them could never match.
const WITHOUT_ACTION: &[&str] = &["create", "delete", "push", "status", "workflow_dispatch"];

pub fn is_known(event: &str) -> bool {
    KNOWN_EVENTS.contains(&event)
}

/// Whether deliveries of `event` carry an `action` field.
pub fn has_action(event: &str) -> bool {
    !WITHOUT_ACTION.contains(&event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_sluice_documents_are_known_and_push_has_no_action() {
        for event in [
            "push",
            "pull_request",
            "release",
            "workflow_run",
            "issue_comment",
        ] {
            assert!(is_known(event), "{event}");
        }
        assert!(!is_known("pull_requests"));
        assert!(!has_action("push"));
        assert!(has_action("pull_request") && has_action("release"));
    }
}
