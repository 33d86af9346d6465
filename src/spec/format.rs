//! The typed structs of workflow format v1, exactly as written in a file. They generate the
//! JSON Schema (`sluice schema`) and their `///` comments are the user reference, so every
//! field has one. Semantic checks (cycles, cron, time zones, …) live in `dag`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::HumanDuration;
use crate::lifecycle::TriggerRule;
use crate::params::ParamDecl;

/// The built-in default of `max_active_runs`: Airflow's `max_active_runs_per_dag` default.
pub const DEFAULT_MAX_ACTIVE_RUNS: u32 = 16;

fn default_timezone() -> String {
    "UTC".to_owned()
}

fn default_max_active_runs() -> u32 {
    DEFAULT_MAX_ACTIVE_RUNS
}

/// A Sluice workflow file (format v1).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sluice workflow")]
pub struct WorkflowSpec {
    /// The workflow's id: lowercase letters, digits, `_` and `-`. Defaults to the file name
    /// without its extension. Unique across all loaded files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the workflow does, shown in the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When runs start by themselves: a crontab expression (5 fields, or 6 with seconds
    /// first) or `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`,
    /// `@annually`. Absent: the workflow only runs when triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The IANA time zone `schedule` is read in, like `Europe/Paris`. Default `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The first day (YYYY-MM-DD) scheduled runs cover; with `catchup: true`, missed
    /// intervals since then are run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date"))]
    pub start_date: Option<String>,
    /// The last day (YYYY-MM-DD) scheduled runs cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date"))]
    pub end_date: Option<String>,
    /// Whether intervals missed while Sluice was down (or before it started) are run.
    /// Default `false`.
    #[serde(default)]
    pub catchup: bool,
    /// How many runs of this workflow may be active at once. Default 16 (Airflow's default).
    #[serde(default = "default_max_active_runs")]
    #[schemars(range(min = 1))]
    pub max_active_runs: u32,
    /// Labels for grouping and filtering workflows in the UI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Typed run parameters, readable in templates as `params.<name>`. The UI's trigger form
    /// is generated from them.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, ParamDecl>,
    /// Events that start a run besides `schedule`: GitHub webhooks, or another workflow
    /// finishing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerSpec>,
    /// Settings every task inherits unless it sets its own.
    #[serde(default)]
    pub defaults: DefaultsSpec,
    /// Tasks run after a run has failed, in the same shape as `tasks`. Templates see the
    /// failed tasks as `failed_tasks` (`id`, `error`, `try_number`) and the run's page as
    /// `run.url`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub on_failure: IndexMap<String, TaskSpec>,
    /// Tasks run after every task has succeeded, before the run counts as a success. Their
    /// own outcome does not change the run's state.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub on_success: IndexMap<String, TaskSpec>,
    /// When a run should be done by. A run still going then runs its `on_deadline` tasks,
    /// once, and carries on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DeadlineSpec>,
    /// Tasks run once when a run passes its `deadline` while it is still running.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub on_deadline: IndexMap<String, TaskSpec>,
    /// The tasks, by id. Their order is the display order; `needs` sets the execution order.
    pub tasks: IndexMap<String, TaskSpec>,
}

/// When a run should be done by: `after` a duration, or `at` a time of day.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadlineSpec {
    /// How long after `from` the run should be done, like `2h`. Not together with `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<HumanDuration>,
    /// What `after` counts from: `start` (when the run started; default) or `logical_date`
    /// (for scheduled runs, the start of the data interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DeadlineFrom>,
    /// A time of day, `HH:MM`, in the workflow's `timezone`: the run should be done by the
    /// first such time at or after the end of its data interval (for a manual run, when it
    /// was triggered). Not together with `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// What a deadline's `after` counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineFrom {
    /// When the run started.
    Start,
    /// The run's logical date.
    LogicalDate,
}

/// Settings every task inherits unless it sets its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// How many times a failed task is tried again. Built-in default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The wait before the first retry. Built-in default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<HumanDuration>,
    /// How the wait grows between retries: `fixed` (built-in default) or `exponential`
    /// (doubles each time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<BackoffSpec>,
    /// The longest wait between retries, capping `exponential` backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_delay: Option<HumanDuration>,
    /// How long one try may run before it is stopped and counts as failed. No limit by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// The pool whose slots limit how many such tasks run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The queue tasks wait in; only workers serving it take them. Built-in default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher runs first when workers are busy. Built-in default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// One task: an operator and its settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The built-in operator that does the work (`shell`, `http`, `noop`, …).
    pub operator: String,
    /// The operator's settings. Every string in it is a template, rendered when the task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-sluice-templated" = true))]
    pub with: Option<Value>,
    /// Ids of the tasks that must finish before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// When the task may start, given how its `needs` ended. Default `all_success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,
    /// A template expression; when it renders false (or empty), the task is skipped.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-sluice-templated" = true))]
    pub condition: Option<String>,
    /// How many times a failed try is repeated. Overrides `defaults.retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The wait before the first retry. Overrides `defaults.retry_delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<HumanDuration>,
    /// `fixed` or `exponential`. Overrides `defaults.retry_backoff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<BackoffSpec>,
    /// The longest wait between retries. Overrides `defaults.max_retry_delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_delay: Option<HumanDuration>,
    /// How long one try may run. Overrides `defaults.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// The pool this task takes a slot from. Overrides `defaults.pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The queue this task waits in (`gpu`, …); only workers serving it take it (`sluice
    /// worker --queues gpu`). Overrides `defaults.queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Higher runs first when workers are busy. Overrides `defaults.priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Environment variables for the processes the task starts. Values are templates.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("x-sluice-templated" = true))]
    pub env: IndexMap<String, String>,
    /// Files to keep with the run when the task succeeds: paths or globs relative to the
    /// workflow's folder (`*` stays within a folder, `**` crosses folders), as GitHub's
    /// upload-artifact takes them. Everything the task writes under `$SLUICE_ARTIFACTS` is
    /// kept too. Later tasks read them as `{{ tasks.<id>.artifacts["name"] }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

/// How the wait between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffSpec {
    /// The same wait every time.
    Fixed,
    /// The wait doubles after each retry, up to `max_retry_delay`.
    Exponential,
}

/// An event that starts a run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerSpec {
    /// A GitHub webhook delivery (`POST /hooks/github`).
    Github(GithubTrigger),
    /// Another workflow's run finishing.
    Workflow(WorkflowTrigger),
}

/// Starts a run when GitHub delivers a matching webhook event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubTrigger {
    /// GitHub event names (`X-GitHub-Event`), like `pull_request` or `push`.
    pub events: Vec<String>,
    /// The payload's `action` values that match (`opened`, `synchronize`, …). Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Branch patterns (globs; `*` stays within a `/` segment, `**` crosses them; a leading
    /// `!` excludes; the last pattern that matches decides). A push matches on its branch, a
    /// pull request on its base branch, a workflow run on its head branch. With `branches` or
    /// `tags` set, a delivery must name a branch or tag they take.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// Tag patterns (globs with `!` exclusions, like `branches`): a pushed tag, or a release's
    /// tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Changed-file patterns (globs with `!` exclusions): the run starts when at least one
    /// changed file matches. Applied where the payload lists changed files (a push's commits);
    /// other deliveries are not filtered by `paths`. Empty: any change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The repositories (`owner/name`) whose deliveries match. Empty: any repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Run parameters taken from the event; values are templates over `event` (the payload).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("x-sluice-templated" = true))]
    pub params: IndexMap<String, Value>,
    /// The commit status the run reports on the delivery's commit (`pending` when it starts,
    /// then `success`, `failure` or `error`), when the secret `GITHUB_TOKEN` is set. Default:
    /// on, with the context `sluice/<workflow id>`; `false` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusSetting>,
}

/// Whether and how a GitHub-triggered run reports its commit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusSetting {
    /// `true` reports with the defaults, `false` reports nothing.
    Enabled(bool),
    /// Reports with this context and description.
    Custom(StatusSpec),
}

/// The commit status a run reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// The status's name on the pull request (what branch protection requires). Default
    /// `sluice/<workflow id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Text shown before the state (`Eval gate: failed`). At most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Starts a run when a run of another workflow ends in one of the given states.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowTrigger {
    /// The id of the upstream workflow.
    pub id: String,
    /// The final states of the upstream run that match. Default: `success`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<UpstreamState>,
    /// A template expression over `upstream`; the run starts only when it is true.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-sluice-templated" = true))]
    pub condition: Option<String>,
    /// Run parameters; values are templates over `upstream`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("x-sluice-templated" = true))]
    pub params: IndexMap<String, Value>,
}

/// A final state of an upstream run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamState {
    /// The run succeeded.
    Success,
    /// The run failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

/// The JSON Schema of the format without operator-specific `with` checks (those are added by
/// `catalog`, which knows the operators).
pub fn base_schema(generator: &mut schemars::SchemaGenerator) -> Value {
    generator.root_schema_for::<WorkflowSpec>().to_value()
}
