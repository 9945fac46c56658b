//! The JSON Schema of the workflow file format, derived with schemars from the structs
//! below (they describe the file as written; the typed [`crate::model`] is what it means).
//!
//! `schemas/workflow.schema.json` is generated from here (`UPDATE_SCHEMA=1 cargo test -p dsl`
//! rewrites it) and a test keeps each object's properties equal to the keys that
//! [`crate::lower`] accepts. Editors use it through yaml-language-server.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// The schema as pretty JSON, with a trailing newline.
pub fn workflow_schema_json() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<WorkflowFile>();
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".to_owned());
    out.push('\n');
    out
}

/// The schema as a JSON value.
pub fn workflow_schema() -> serde_json::Value {
    serde_json::from_str(&workflow_schema_json()).unwrap_or(serde_json::Value::Null)
}

/// A duration: seconds (fractions allowed) or a humantime string such as `90s` or `5m`.
pub struct DurationDef;

impl JsonSchema for DurationDef {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Seconds (fractions allowed) or a duration such as `90s`, `5m`, `1h 30m`.",
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]"}
            ]
        })
    }
}

/// `parallel`: `true`, `false` or `auto`.
pub struct ParallelDef;

impl JsonSchema for ParallelDef {
    fn schema_name() -> Cow<'static, str> {
        "Parallel".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`false`: one step after another; `true`: all at once (up to `max_parallel`); `auto`: as dependencies allow.",
            "oneOf": [{"type": "boolean"}, {"const": "auto"}]
        })
    }
}

/// A string or a list of strings.
pub struct StringOrListDef;

impl JsonSchema for StringOrListDef {
    fn schema_name() -> Cow<'static, str> {
        "StringOrList".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// A string: scalars of other types are read as their text (`version: 1.0`).
pub struct TextDef;

impl JsonSchema for TextDef {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number", "boolean"]})
    }
}

/// A condition: `${{ expr }}`, a bare expression, or a boolean.
pub struct ConditionDef;

impl JsonSchema for ConditionDef {
    fn schema_name() -> Cow<'static, str> {
        "Condition".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`${{ expr }}` or a bare expression; the step runs when it is truthy.",
            "type": ["string", "boolean", "number"]
        })
    }
}

/// A mapping of names to any values (strings may hold `${{ }}`).
pub type ValueMap = std::collections::BTreeMap<String, serde_json::Value>;

/// A workflow file.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "Agent workflow file")]
pub struct WorkflowFile {
    /// The workflow.
    pub workflow: WorkflowDef,
}

/// A workflow.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WorkflowDef {
    /// How the workflow is known everywhere (API, CLI, history); the file stem when absent.
    pub name: Option<TextDef>,
    /// A version label.
    pub version: Option<TextDef>,
    /// What the workflow does.
    pub description: Option<TextDef>,
    /// Author, tags, limits and the default retry policy.
    pub metadata: Option<MetadataDef>,
    /// Triggers for the daemon.
    pub on: Option<TriggersDef>,
    /// Values handed back to a calling workflow.
    pub outputs: Option<ValueMap>,
    /// Declared parameters.
    pub parameters: Option<Vec<ParameterDef>>,
    /// Context handling.
    pub context: Option<ContextDef>,
    /// Environment for every step.
    pub env: Option<EnvMapDef>,
    /// How the sources reach the workspace: `false` for none, or `{depth, tags, submodules, path}`.
    pub checkout: Option<CheckoutOrFalse>,
    /// Long-running processes started before the first stage and stopped when the run ends.
    pub services: Option<std::collections::BTreeMap<String, ServiceDef>>,
    /// Concurrency group: a group name, or `{group, overlap}`.
    pub concurrency: Option<ConcurrencyOrGroup>,
    /// Stages, run in order.
    pub stages: Vec<StageDef>,
    /// Error handlers, matched on the failing step's error class.
    pub error_handlers: Option<Vec<ErrorHandlerDef>>,
    /// Steps run when a failure's action is `rollback`.
    pub rollback: Option<RollbackDef>,
}

/// `metadata`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MetadataDef {
    /// Author.
    pub author: Option<TextDef>,
    /// Tags.
    pub tags: Option<Vec<String>>,
    /// Limit for the whole run.
    pub timeout: Option<DurationDef>,
    /// Higher runs first when runs queue.
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: Option<i64>,
    /// The default retry policy of every step.
    pub retry_policy: Option<RetryPolicyDef>,
}

/// A retry policy.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetryPolicyDef {
    /// Tries in all, the first included.
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: Option<u32>,
    /// How the delay grows.
    pub backoff: Option<BackoffDef>,
    /// Base delay.
    pub delay: Option<DurationDef>,
    /// Cap on one delay.
    pub max_delay: Option<DurationDef>,
    /// Randomised fraction of each delay (`true` = 1).
    pub jitter: Option<JitterDef>,
    /// Error classes that are retried.
    pub retry_on: Option<StringOrListDef>,
}

/// `jitter`: a boolean or a fraction.
pub struct JitterDef;

impl JsonSchema for JitterDef {
    fn schema_name() -> Cow<'static, str> {
        "Jitter".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"oneOf": [{"type": "boolean"}, {"type": "number", "minimum": 0, "maximum": 1}]})
    }
}

/// Backoff kinds.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum BackoffDef {
    /// Always `delay`.
    Fixed,
    /// `delay * n`.
    Linear,
    /// `delay * 2^(n-1)`.
    Exponential,
    /// `delay * fib(n)`.
    Fibonacci,
    /// Chosen from history.
    Adaptive,
}

/// `on`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TriggersDef {
    /// Run on pushes (of branches, and of tags with `tags`).
    pub push: Option<PushTriggerDef>,
    /// Run for pull requests (inbound forge hooks: opened, synchronize, reopened).
    pub pull_request: Option<PullRequestTriggerDef>,
    /// Run for pushes to non-default branches of a watched repository.
    pub branch: Option<BranchTriggerDef>,
    /// Run on cron ticks.
    pub schedule: Option<Vec<ScheduleDef>>,
    /// Allow runs by hand (CLI, API).
    pub manual: Option<bool>,
}

/// `on.push`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PushTriggerDef {
    /// Branch globs.
    pub branches: Option<StringOrListDef>,
    /// Path globs.
    pub paths: Option<StringOrListDef>,
    /// Tag globs: pushed tags that run the workflow (without `branches`, branch pushes do
    /// not).
    pub tags: Option<StringOrListDef>,
}

/// `on.pull_request`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PullRequestTriggerDef {
    /// Globs over the pull request's base branch.
    pub branches: Option<StringOrListDef>,
    /// Globs over the files the pull request changes.
    pub paths: Option<StringOrListDef>,
}

/// `on.branch`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BranchTriggerDef {
    /// Globs over non-default branch names.
    pub branches: Option<StringOrListDef>,
}

/// One cron schedule.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScheduleDef {
    /// 5 fields, or 6 with leading seconds.
    pub cron: String,
    /// IANA time zone (default UTC).
    pub timezone: Option<String>,
    /// Parameters for the scheduled runs.
    pub parameters: Option<ValueMap>,
    /// Which missed ticks run after downtime.
    pub catchup: Option<CatchupDef>,
}

/// Catch-up modes.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum CatchupDef {
    /// None.
    Skip,
    /// The latest only.
    Latest,
    /// Every missed tick.
    All,
}

/// A declared parameter.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ParameterDef {
    /// Letters, digits and `_`.
    pub name: String,
    /// The type (default `string`).
    #[schemars(rename = "type")]
    pub ty: Option<ParamTypeDef>,
    /// Whether a value must be given.
    pub required: Option<bool>,
    /// The value when none is given.
    pub default: Option<serde_json::Value>,
    /// The allowed values.
    #[schemars(rename = "enum")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// What it is for.
    pub description: Option<TextDef>,
}

/// Parameter types.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum ParamTypeDef {
    /// Text.
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// `true`/`false`.
    Boolean,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
}

/// `context`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ContextDef {
    /// Keep the context between runs.
    pub preserve: Option<bool>,
    /// How a step's context update merges.
    pub merge_strategy: Option<MergeStrategyDef>,
}

/// Merge strategies.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum MergeStrategyDef {
    /// Key by key, recursively.
    Deep,
    /// Top-level keys.
    Shallow,
    /// Replace the whole context.
    Replace,
}

/// `concurrency`: a group name or a mapping.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum ConcurrencyOrGroup {
    /// Group name.
    Group(String),
    /// Group and overlap.
    Full(ConcurrencyDef),
}

/// `concurrency` as a mapping.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConcurrencyDef {
    /// Runs in the same group do not overlap (default: the workflow name).
    pub group: Option<String>,
    /// What happens to a new run when one is active.
    pub overlap: Option<OverlapDef>,
}

/// Overlap policies.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum OverlapDef {
    /// Drop the new run.
    Skip,
    /// Wait.
    Queue,
    /// Cancel the active run.
    CancelPrevious,
}

/// A stage.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StageDef {
    /// Stage name (unique).
    pub name: TextDef,
    /// Scheduling of the steps (default `false`).
    pub parallel: Option<ParallelDef>,
    /// Most steps at once (default 5).
    #[schemars(range(min = 1, max = 10000))]
    pub max_parallel: Option<u32>,
    /// The steps.
    pub steps: Vec<StepDef>,
    /// Environment for the stage's steps.
    pub env: Option<EnvMapDef>,
    /// Working directory of the stage's steps, relative to the workspace.
    pub working_directory: Option<String>,
    /// Run the stage once per matrix instance.
    pub matrix: Option<MatrixDef>,
    /// Long-running processes started before the stage's steps and stopped after them.
    pub services: Option<std::collections::BTreeMap<String, ServiceDef>>,
}

/// A step.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StepDef {
    /// Unique in the file: letters, digits, `_`, `-`.
    pub id: String,
    /// A label for humans.
    pub name: Option<TextDef>,
    /// Inferred from `skill`, `workflow`, `decision`/`branches` or `run` when absent.
    #[schemars(rename = "type")]
    pub ty: Option<StepTypeDef>,
    /// Skill name.
    pub skill: Option<String>,
    /// Sub-workflow name (a file `NAME.yaml` next to this one).
    pub workflow: Option<String>,
    /// Decision: `{branches}` or a list of branches.
    pub decision: Option<DecisionOrBranches>,
    /// Decision branches (alternative to `decision`).
    pub branches: Option<Vec<BranchDef>>,
    /// Inline shell script.
    pub run: Option<String>,
    /// The step's input object.
    pub parameters: Option<ValueMap>,
    /// Run only when truthy.
    pub when: Option<ConditionDef>,
    /// Steps that must finish first.
    pub needs: Option<StringOrListDef>,
    /// Time limit.
    pub timeout: Option<DurationDef>,
    /// Overrides fields of the workflow's retry policy.
    pub retry: Option<RetryPolicyDef>,
    /// What a failure does (default `abort`).
    pub on_failure: Option<OnFailureDef>,
    /// Steps that undo this one.
    pub compensate: Option<Vec<StepDef>>,
    /// Step cache: `true` or `{key, inputs, paths, ttl, scope}`.
    pub cache: Option<CacheOrTrue>,
    /// Environment for this step.
    pub env: Option<EnvMapDef>,
    /// Resources needed for admission.
    pub resources: Option<ResourcesDef>,
    /// Interpreter for `run` (default bash, else sh).
    pub shell: Option<ShellDef>,
    /// Safe to re-run after a crash (default true).
    pub idempotent: Option<bool>,
    /// Working directory, relative to the workspace.
    pub working_directory: Option<String>,
    /// Run the step once per matrix instance.
    pub matrix: Option<MatrixDef>,
    /// Files kept after the step succeeds.
    pub artifacts: Option<Vec<ArtifactDef>>,
    /// Run in a private copy of the workspace (copy-on-write where possible), removed at
    /// the step's end.
    pub isolate: Option<bool>,
}

/// Step types.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum StepTypeDef {
    /// A skill.
    Skill,
    /// A sub-workflow.
    Workflow,
    /// A decision.
    Decision,
    /// A shell script.
    Run,
}

/// Failure policies.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum OnFailureDef {
    /// Fail the run.
    Abort,
    /// Go on.
    Continue,
    /// Run the rollback steps.
    Rollback,
    /// Undo completed steps.
    Compensate,
}

/// `decision`: a mapping with `branches` or a list of branches.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum DecisionOrBranches {
    /// `{branches: [...]}`.
    Decision(DecisionDef),
    /// `[...]`.
    Branches(Vec<BranchDef>),
}

/// A decision.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DecisionDef {
    /// Branches; the first whose `when` is true runs, else the default one.
    pub branches: Vec<BranchDef>,
}

/// A decision branch.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BranchDef {
    /// Condition (absent on the default branch).
    pub when: Option<ConditionDef>,
    /// The branch that runs when no other does.
    pub default: Option<bool>,
    /// Steps of the branch.
    pub steps: Vec<StepDef>,
}

/// An error handler.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ErrorHandlerDef {
    /// Error class matched (`*` for any).
    pub error: String,
    /// What to do.
    pub action: ActionDef,
    /// Extra tries for `action: retry`.
    #[schemars(range(min = 0, max = 1000))]
    pub max_retries: Option<u32>,
    /// What to do when the retries are used up.
    pub then: Option<ActionDef>,
    /// Send a notification.
    pub notify: Option<bool>,
    /// Steps to run; a plain string names a skill.
    pub steps: Option<Vec<HandlerStep>>,
}

/// A handler step: a skill name or a full step.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum HandlerStep {
    /// Skill name.
    Skill(String),
    /// A step.
    Step(Box<StepDef>),
}

/// Handler actions.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum ActionDef {
    /// Fail the run.
    Abort,
    /// Go on.
    Continue,
    /// Try again.
    Retry,
    /// Roll back.
    Rollback,
    /// Undo completed steps.
    Compensate,
    /// Fail and notify.
    Escalate,
}

/// `rollback`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RollbackDef {
    /// Steps, run one after another.
    pub steps: Vec<StepDef>,
}

/// `cache`: `true` or a mapping.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum CacheOrTrue {
    /// `true`: cache with the defaults.
    Enabled(bool),
    /// The settings.
    Settings(CacheDef),
}

/// `cache`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CacheDef {
    /// Extra values (templates) mixed into the key.
    pub key: Option<serde_json::Value>,
    /// Globs of workspace files whose contents are part of the key.
    pub inputs: Option<StringOrListDef>,
    /// Workspace paths saved with the entry and restored on a hit.
    pub paths: Option<StringOrListDef>,
    /// How long an entry is valid.
    pub ttl: Option<DurationDef>,
    /// Who may read the entry (default `repo`).
    pub scope: Option<CacheScopeDef>,
}

/// Cache scopes.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum CacheScopeDef {
    /// Every run of the repository.
    Repo,
    /// Runs of the same branch.
    Branch,
}

/// An `env` mapping: variable names to scalars (strings may hold `${{ }}`).
pub struct EnvMapDef;

impl JsonSchema for EnvMapDef {
    fn schema_name() -> Cow<'static, str> {
        "EnvMap".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]}
        })
    }
}

/// `shell`: a known name or a command line with `{0}`.
pub struct ShellDef;

impl JsonSchema for ShellDef {
    fn schema_name() -> Cow<'static, str> {
        "Shell".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`bash`, `sh`, `python`, `pwsh` (or `python3`, `dash`, `zsh`, `ksh`, `node`, `nodejs`, `perl`, `ruby`, `powershell`, or an absolute path to one), or a command line where `{0}` stands for the script.",
            "anyOf": [
                {"enum": ["bash", "sh", "python", "pwsh", "python3", "dash", "zsh", "ksh", "node", "nodejs", "perl", "ruby", "powershell"]},
                {"type": "string", "pattern": "^/"},
                {"type": "string", "pattern": "\\{0\\}"}
            ]
        })
    }
}

/// `checkout`: `false` or a mapping.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum CheckoutOrFalse {
    /// `false`: no sources (`true`: the defaults).
    Enabled(bool),
    /// The settings.
    Settings(CheckoutDef),
}

/// `checkout`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CheckoutDef {
    /// Commits of history (default 1) or `full`.
    pub depth: Option<DepthDef>,
    /// Fetch tags.
    pub tags: Option<bool>,
    /// Check submodules out.
    pub submodules: Option<bool>,
    /// Directory inside the workspace.
    pub path: Option<String>,
}

/// `depth`: a number of commits or `full`.
pub struct DepthDef;

impl JsonSchema for DepthDef {
    fn schema_name() -> Cow<'static, str> {
        "Depth".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"oneOf": [{"type": "integer", "minimum": 1}, {"const": "full"}]})
    }
}

/// `matrix`: axes (lists of values) plus `include`, `exclude`, `fail_fast`, `max_parallel`,
/// or one `${{ }}` expression; any list may also be an expression.
pub struct MatrixDef;

impl JsonSchema for MatrixDef {
    fn schema_name() -> Cow<'static, str> {
        "Matrix".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Axes (lists of scalars or mappings), `include`, `exclude`, `fail_fast` (default true), `max_parallel`; or a `${{ }}` expression giving the whole matrix.",
            "oneOf": [
                {"type": "string", "pattern": "\\$\\{\\{"},
                {
                    "type": "object",
                    "properties": {
                        "include": {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "string"}]},
                        "exclude": {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "string"}]},
                        "fail_fast": {"type": "boolean"},
                        "max_parallel": {"type": "integer", "minimum": 1, "maximum": 10000}
                    },
                    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
                    "additionalProperties": {
                        "oneOf": [
                            {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean", "object"]}},
                            {"type": "string", "pattern": "\\$\\{\\{"}
                        ]
                    }
                }
            ]
        })
    }
}

/// A service.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ServiceDef {
    /// Shell command line of the service (or `skill`).
    pub run: Option<String>,
    /// Skill run as the service (or `run`).
    pub skill: Option<String>,
    /// The skill's parameters (`parameters` is the same).
    pub with: Option<ValueMap>,
    /// The skill's parameters.
    pub parameters: Option<ValueMap>,
    /// Environment of the service.
    pub env: Option<EnvMapDef>,
    /// Readiness probe: exactly one of `tcp`, `http`, `run`.
    pub ready: Option<ReadyDef>,
    /// How long the probe may take (default 60 s).
    pub ready_timeout: Option<DurationDef>,
}

/// A service's readiness probe.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReadyDef {
    /// A TCP port on 127.0.0.1 (a number or `${{ services.NAME.port }}`).
    pub tcp: Option<PortDef>,
    /// A URL answering 2xx to GET.
    pub http: Option<String>,
    /// A command that exits with 0 when ready.
    pub run: Option<String>,
}

/// A port number or an expression.
pub struct PortDef;

impl JsonSchema for PortDef {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"oneOf": [{"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "string"}]})
    }
}

/// An artifact of a step.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ArtifactDef {
    /// Unique within the step; read as `${{ steps.ID.artifacts.NAME }}`.
    pub name: String,
    /// Globs relative to the workspace (or `from`).
    pub paths: Option<StringOrListDef>,
    /// How long it is kept (default: with the run).
    pub retention: Option<DurationDef>,
    /// Take the artifact of the latest successful run of another workflow on the same branch.
    pub from: Option<ArtifactFromDef>,
}

/// Where an artifact is taken from.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ArtifactFromDef {
    /// The other workflow's name.
    pub workflow: String,
    /// Its artifact (default: the same name).
    pub name: Option<String>,
}

/// `resources.cpu`: a number of cores or `all`.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum CpuDef {
    /// Cores (fractions allowed; 0 = I/O-bound).
    Cores(#[schemars(range(min = 0))] f64),
    /// `all`: every core of the machine.
    All(AllCores),
}

/// The word `all`.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum AllCores {
    /// Every core.
    All,
}

/// `resources`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ResourcesDef {
    /// Cores (0 = I/O-bound), or `all`: every core, so the step runs alone.
    pub cpu: Option<CpuDef>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
}
