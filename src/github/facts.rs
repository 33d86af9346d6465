//! What filters and commit statuses need from a delivery, read out of its payload once: the
//! event and action, the repository, the branch or tag, the commit, the sender and the
//! changed files (when the payload lists them).

use serde_json::{Value, json};

/// The facts of one delivery. Fields the payload does not carry are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFacts {
    /// `X-GitHub-Event`: `push`, `pull_request`, …
    pub event: String,
    /// The payload's `action` (`opened`, `synchronize`, `published`, `completed`, …).
    pub action: Option<String>,
    /// `owner/name`.
    pub repository: Option<String>,
    /// The branch a filter looks at: the pushed branch, a pull request's base branch (as in
    /// GitHub Actions), a workflow run's head branch.
    pub branch: Option<String>,
    /// The pushed tag, or a release's tag.
    pub tag: Option<String>,
    /// The commit a status is reported on: a push's `after`, a pull request's head, a
    /// workflow run's `head_sha`, a release's target when it is a commit.
    pub sha: Option<String>,
    /// The login of who caused the event.
    pub sender: Option<String>,
    /// Files added, modified or removed by a push's commits; `None` when the payload does not
    /// list them (pull requests, releases, …).
    pub changed_paths: Option<Vec<String>>,
    /// A push that deleted its branch or tag.
    pub deleted: bool,
}

impl EventFacts {
    pub fn from_payload(event: &str, payload: &Value) -> EventFacts {
        let text = |pointer: &str| {
            payload
                .pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let mut facts = EventFacts {
            event: event.to_owned(),
            action: text("/action"),
            repository: text("/repository/full_name"),
            sender: text("/sender/login"),
            ..EventFacts::default()
        };
        match event {
            "push" => {
                if let Some(reference) = text("/ref") {
                    (facts.branch, facts.tag) = split_ref(&reference);
                }
                facts.sha = text("/after").filter(|s| is_commit(s) && !is_zero(s));
                facts.deleted = payload
                    .get("deleted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                facts.changed_paths = push_paths(payload);
            }
            "pull_request"
            | "pull_request_target"
            | "pull_request_review"
            | "pull_request_review_comment" => {
                facts.branch = text("/pull_request/base/ref");
                facts.sha = text("/pull_request/head/sha").filter(|s| is_commit(s));
            }
            "release" => {
                facts.tag = text("/release/tag_name");
                facts.sha = text("/release/target_commitish").filter(|s| is_commit(s));
            }
            "workflow_run" => {
                facts.branch = text("/workflow_run/head_branch");
                facts.sha = text("/workflow_run/head_sha").filter(|s| is_commit(s));
            }
            "check_suite" | "check_run" => {
                let root = if event == "check_suite" {
                    "/check_suite"
                } else {
                    "/check_run/check_suite"
                };
                facts.branch = text(&format!("{root}/head_branch"));
                facts.sha = text(&format!("{root}/head_sha")).filter(|s| is_commit(s));
            }
            "create" | "delete" => match (text("/ref_type").as_deref(), text("/ref")) {
                (Some("branch"), Some(name)) => facts.branch = Some(name),
                (Some("tag"), Some(name)) => facts.tag = Some(name),
                _ => {}
            },
            "merge_group" => {
                facts.branch = text("/merge_group/base_ref").map(|r| split_ref(&r).0.unwrap_or(r));
                facts.sha = text("/merge_group/head_sha").filter(|s| is_commit(s));
            }
            "deployment" | "deployment_status" => {
                facts.sha = text("/deployment/sha").filter(|s| is_commit(s));
            }
            _ => {}
        }
        facts
    }

    /// The facts as recorded with a run (`trigger_details`) and shown by the API.
    pub fn to_details(&self, delivery: &str) -> Value {
        json!({
            "event": self.event,
            "action": self.action,
            "delivery": delivery,
            "repository": self.repository,
            "branch": self.branch,
            "tag": self.tag,
            "sha": self.sha,
            "sender": self.sender,
        })
    }
}

/// `refs/heads/x` is branch `x`, `refs/tags/v1` is tag `v1`.
fn split_ref(reference: &str) -> (Option<String>, Option<String>) {
    if let Some(branch) = reference.strip_prefix("refs/heads/") {
        (Some(branch.to_owned()), None)
    } else if let Some(tag) = reference.strip_prefix("refs/tags/") {
        (None, Some(tag.to_owned()))
    } else {
        (None, None)
    }
}

/// Every path a push's commits added, modified or removed, in first-seen order.
fn push_paths(payload: &Value) -> Option<Vec<String>> {
    let commits = payload.get("commits")?.as_array()?;
    let mut paths: Vec<String> = Vec::new();
    for commit in commits {
        for kind in ["added", "modified", "removed"] {
            let listed = commit.get(kind).and_then(Value::as_array);
            for path in listed.into_iter().flatten().filter_map(Value::as_str) {
                if !paths.iter().any(|p| p == path) {
                    paths.push(path.to_owned());
                }
            }
        }
    }
    Some(paths)
}

/// A full commit id: 40 hex digits (SHA-1) or 64 (SHA-256 repositories).
fn is_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The all-zero id GitHub sends as `after` when a push deleted the ref.
fn is_zero(text: &str) -> bool {
    text.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_push_gives_its_branch_commit_and_changed_files() {
        let payload = json!({
            "ref": "refs/heads/feature/x", "after": SHA, "deleted": false,
            "repository": {"full_name": "acme/evals"}, "sender": {"login": "octocat"},
            "commits": [
                {"added": ["prompts/a.txt"], "modified": ["README.md"], "removed": []},
                {"added": [], "modified": ["prompts/a.txt"], "removed": ["old.txt"]}
            ]
        });
        let facts = EventFacts::from_payload("push", &payload);
        assert_eq!(facts.branch.as_deref(), Some("feature/x"));
        assert_eq!(facts.tag, None);
        assert_eq!(facts.sha.as_deref(), Some(SHA));
        assert_eq!(facts.repository.as_deref(), Some("acme/evals"));
        assert_eq!(facts.sender.as_deref(), Some("octocat"));
        assert_eq!(facts.action, None);
        assert_eq!(
            facts.changed_paths,
            Some(vec![
                "prompts/a.txt".into(),
                "README.md".into(),
                "old.txt".into()
            ])
        );
    }

    #[test]
    fn a_tag_push_and_a_deleting_push() {
        let tag = EventFacts::from_payload("push", &json!({"ref": "refs/tags/v1.2", "after": SHA}));
        assert_eq!((tag.branch, tag.tag.as_deref()), (None, Some("v1.2")));
        let zero = "0".repeat(40);
        let gone = EventFacts::from_payload(
            "push",
            &json!({"ref": "refs/heads/x", "after": zero, "deleted": true, "commits": []}),
        );
        assert!(gone.deleted);
        assert_eq!(gone.sha, None, "the zero id is no commit to report on");
    }

    #[test]
    fn a_pull_request_filters_on_its_base_and_reports_on_its_head() {
        let payload = json!({
            "action": "synchronize",
            "pull_request": {"base": {"ref": "main"}, "head": {"ref": "topic", "sha": SHA}}
        });
        let facts = EventFacts::from_payload("pull_request", &payload);
        assert_eq!(facts.action.as_deref(), Some("synchronize"));
        assert_eq!(facts.branch.as_deref(), Some("main"));
        assert_eq!(facts.sha.as_deref(), Some(SHA));
        assert_eq!(facts.changed_paths, None);
    }

    #[test]
    fn releases_and_workflow_runs() {
        let release = EventFacts::from_payload(
            "release",
            &json!({"action": "published", "release": {"tag_name": "v2", "target_commitish": "main"}}),
        );
        assert_eq!(release.tag.as_deref(), Some("v2"));
        assert_eq!(release.sha, None, "a branch name is not a commit");
        let run = EventFacts::from_payload(
            "workflow_run",
            &json!({"action": "completed", "workflow_run": {"head_branch": "main", "head_sha": SHA}}),
        );
        assert_eq!(
            (run.branch.as_deref(), run.sha.as_deref()),
            (Some("main"), Some(SHA))
        );
    }

    #[test]
    fn payloads_of_the_wrong_shape_give_no_facts_and_no_panic() {
        for payload in [
            json!(null),
            json!([1, 2]),
            json!({"ref": 5, "commits": "x", "after": []}),
        ] {
            let facts = EventFacts::from_payload("push", &payload);
            assert_eq!(facts.branch, None);
            assert_eq!(facts.sha, None);
        }
    }
}
