//! The typed workflow model (docs/language.md): what a workflow file means, with the position of
//! every node a diagnostic or the engine may point at.
//!
//! This module owns the data shapes and small conveniences for their consumers (step
//! lookups, effective retry policy, rendering parameter trees). It does not parse YAML
//! (`lower` does) or judge meaning (`validate` does): a [`Workflow`] handed out by
//! [`crate::load_workflow`] or [`crate::parse_str`] has passed every check.

use crate::expr::{EvalContext, ExprError, Reference, Template};
pub use crate::span::Spanned;
use crate::yaml::{Span, Style};
use indexmap::IndexMap;
use std::path::PathBuf;
use std::time::Duration;

macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every value with its spelling in a workflow file.
            pub const ALL: &'static [(&'static str, $name)] = &[$(($text, $name::$variant)),+];

            /// The spelling in a workflow file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the spelling used in workflow files.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().find(|(t, _)| *t == s).map(|(_, v)| *v)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum!(
    /// What happens when a step fails and neither its `retry` nor an error handler decides.
    OnFailure {
        /// The run fails and later steps do not start (the default).
        Abort = "abort",
        /// The failure is recorded and the run goes on.
        Continue = "continue",
        /// The workflow's `rollback` steps run; the run fails.
        Rollback = "rollback",
        /// The `compensate` steps of completed steps run in reverse order; the run fails.
        Compensate = "compensate",
    }
);

keyword_enum!(
    /// How the delay between retries grows.
    Backoff {
        /// Always `delay`.
        Fixed = "fixed",
        /// `delay * n`.
        Linear = "linear",
        /// `delay * 2^(n-1)`.
        Exponential = "exponential",
        /// `delay * fib(n)`.
        Fibonacci = "fibonacci",
        /// Chosen by the engine from the step's history.
        Adaptive = "adaptive",
    }
);

keyword_enum!(
    /// What an error handler does.
    Action {
        /// Fail the run now.
        Abort = "abort",
        /// Record the failure and go on.
        Continue = "continue",
        /// Try the step again (`max_retries` extra tries), then do `then`.
        Retry = "retry",
        /// Run the workflow's `rollback` steps.
        Rollback = "rollback",
        /// Run the `compensate` steps of completed steps.
        Compensate = "compensate",
        /// Fail the run and notify.
        Escalate = "escalate",
    }
);

keyword_enum!(
    /// How a step's context update merges into the run context.
    MergeStrategy {
        /// Nested objects merge key by key (the default).
        Deep = "deep",
        /// Top-level keys are replaced.
        Shallow = "shallow",
        /// The update replaces the whole context.
        Replace = "replace",
    }
);

keyword_enum!(
    /// What happens to a new run when a run of the same concurrency group is active.
    Overlap {
        /// The new run is dropped.
        Skip = "skip",
        /// The new run waits (the default).
        Queue = "queue",
        /// The active run is cancelled.
        CancelPrevious = "cancel_previous",
    }
);

keyword_enum!(
    /// Which missed cron ticks run after downtime.
    Catchup {
        /// None.
        Skip = "skip",
        /// Only the latest missed tick (the default).
        Latest = "latest",
        /// Every missed tick.
        All = "all",
    }
);

keyword_enum!(
    /// The declared type of a workflow parameter.
    ParamType {
        /// Any text (the default).
        String = "string",
        /// Any number.
        Number = "number",
        /// A whole number.
        Integer = "integer",
        /// `true` or `false`.
        Boolean = "boolean",
        /// A JSON array.
        Array = "array",
        /// A JSON object.
        Object = "object",
    }
);

keyword_enum!(
    /// The type of a step.
    StepType {
        /// Runs a skill (an executable found by name).
        Skill = "skill",
        /// Runs another workflow file from the same directory.
        Workflow = "workflow",
        /// Picks one branch of steps.
        Decision = "decision",
        /// Runs an inline shell script.
        Run = "run",
    }
);

/// How the steps of a stage are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Parallelism {
    /// One after another, in file order (`parallel: false`, the default).
    #[default]
    Sequential,
    /// All at once, up to `max_parallel` (`parallel: true`); siblings may not refer to each other.
    Parallel,
    /// As their dependencies (`needs`, `${{ steps.X }}` of siblings) allow (`parallel: auto`).
    Auto,
}

/// A string from the file that may hold `${{ }}` expressions, with what is needed to point
/// diagnostics at positions inside it.
#[derive(Debug, Clone)]
pub struct TemplateString {
    /// The parsed template.
    pub template: Template,
    /// The scalar's value text.
    pub text: String,
    /// How the scalar was written (to map offsets inside it to file positions).
    pub style: Style,
    /// The scalar node's span.
    pub span: Span,
}

impl TemplateString {
    /// Every context path read, offsets relative to [`TemplateString::text`].
    pub fn references(&self) -> Vec<Reference> {
        self.template.references()
    }

    /// Renders: a standalone `${{ }}` keeps its type, anything else becomes a string.
    pub fn render(&self, ctx: &dyn EvalContext) -> Result<serde_json::Value, ExprError> {
        self.template.render(ctx)
    }
}

/// A parameter tree (step `parameters`, `env`, `outputs`, schedule parameters, cache keys):
/// any YAML value whose strings are templates.
#[derive(Debug, Clone)]
pub struct TemplateValue {
    /// The node's span.
    pub span: Span,
    /// The content.
    pub kind: TemplateValueKind,
}

/// The content of a [`TemplateValue`].
#[derive(Debug, Clone)]
pub enum TemplateValueKind {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A string, possibly with `${{ }}`.
    String(TemplateString),
    /// A sequence.
    Array(Vec<TemplateValue>),
    /// A mapping, in file order.
    Object(IndexMap<String, TemplateValue>),
}

impl TemplateValue {
    /// Evaluates every template in the tree and returns plain JSON.
    pub fn render(&self, ctx: &dyn EvalContext) -> Result<serde_json::Value, ExprError> {
        use serde_json::Value;
        Ok(match &self.kind {
            TemplateValueKind::Null => Value::Null,
            TemplateValueKind::Bool(b) => Value::Bool(*b),
            TemplateValueKind::Number(n) => Value::Number(n.clone()),
            TemplateValueKind::String(t) => t.render(ctx)?,
            TemplateValueKind::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| v.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            TemplateValueKind::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(ctx)?)))
                    .collect::<Result<_, ExprError>>()?,
            ),
        })
    }

    /// The value as JSON when it holds no expression; `None` otherwise.
    pub fn to_static_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match &self.kind {
            TemplateValueKind::Null => Value::Null,
            TemplateValueKind::Bool(b) => Value::Bool(*b),
            TemplateValueKind::Number(n) => Value::Number(n.clone()),
            TemplateValueKind::String(t) => match &t.template {
                Template::Literal(s) => Value::String(s.clone()),
                _ => return None,
            },
            TemplateValueKind::Array(items) => Value::Array(
                items
                    .iter()
                    .map(TemplateValue::to_static_json)
                    .collect::<Option<_>>()?,
            ),
            TemplateValueKind::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Some((k.clone(), v.to_static_json()?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }

    /// Every template string in the tree, in file order.
    pub(crate) fn strings(&self) -> Vec<&TemplateString> {
        let mut out = Vec::new();
        self.collect_strings(&mut out);
        out
    }

    fn collect_strings<'a>(&'a self, out: &mut Vec<&'a TemplateString>) {
        match &self.kind {
            TemplateValueKind::String(t) => out.push(t),
            TemplateValueKind::Array(items) => items.iter().for_each(|v| v.collect_strings(out)),
            TemplateValueKind::Object(map) => map.values().for_each(|v| v.collect_strings(out)),
            _ => {}
        }
    }
}

/// Renders a map of template values (step `parameters`, `env`, workflow `outputs`) to a JSON
/// object.
pub fn render_map(
    map: &IndexMap<String, TemplateValue>,
    ctx: &dyn EvalContext,
) -> Result<serde_json::Map<String, serde_json::Value>, ExprError> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), v.render(ctx)?)))
        .collect()
}

/// A whole workflow file.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The file it was read from (`None` for [`crate::parse_str`]).
    pub file: Option<PathBuf>,
    /// The span of the `workflow:` mapping.
    pub span: Span,
    /// `name`: how the workflow is known everywhere; the file stem when absent.
    pub name: Spanned<String>,
    /// `version`.
    pub version: Option<Spanned<String>>,
    /// `description`.
    pub description: Option<Spanned<String>>,
    /// `metadata`.
    pub metadata: Metadata,
    /// `on`: what starts runs in the daemon.
    pub on: Triggers,
    /// `outputs`: values handed back to a calling workflow (templates over `steps`).
    pub outputs: IndexMap<String, TemplateValue>,
    /// `parameters`, in declaration order.
    pub parameters: Vec<Parameter>,
    /// `context`.
    pub context: ContextConfig,
    /// `env`: environment for every step.
    pub env: IndexMap<String, TemplateValue>,
    /// `checkout`: how the sources reach the workspace (`None`: the defaults).
    pub checkout: Option<Checkout>,
    /// `services`: processes running for the whole run, in file order.
    pub services: Vec<Service>,
    /// `concurrency`.
    pub concurrency: Option<Concurrency>,
    /// `stages`, in order.
    pub stages: Vec<Stage>,
    /// `error_handlers`, in order (the first matching one decides).
    pub error_handlers: Vec<ErrorHandler>,
    /// `rollback`.
    pub rollback: Option<Rollback>,
}

impl Workflow {
    /// Every step of the file: stage steps (each followed by its decision branches' and
    /// compensation steps, depth first), then error handler steps, then rollback steps.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        let mut out = Vec::new();
        for stage in &self.stages {
            for step in &stage.steps {
                step.collect(&mut out);
            }
        }
        for h in &self.error_handlers {
            for step in &h.steps {
                step.collect(&mut out);
            }
        }
        if let Some(rb) = &self.rollback {
            for step in &rb.steps {
                step.collect(&mut out);
            }
        }
        out.into_iter()
    }

    /// The step with this id, wherever it is.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps().find(|s| s.id.value == id)
    }

    /// The declared parameter with this name.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name.value == name)
    }

    /// The names of the sub-workflows called by `type: workflow` steps, in file order,
    /// without repeats.
    pub fn called_workflows(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self.steps() {
            if let StepKind::Workflow(w) = &s.kind
                && !out.contains(&w.value.as_str())
            {
                out.push(&w.value);
            }
        }
        out
    }

    /// The first error handler matching an error class (`error: "*"` matches every class).
    pub fn handler_for(&self, class: &str) -> Option<&ErrorHandler> {
        self.error_handlers.iter().find(|h| h.matches(class))
    }

    /// The retry policy in force for a step: the step's `retry` fields over the workflow's
    /// `metadata.retry_policy` fields over the defaults (one attempt).
    pub fn retry_for(&self, step: &Step) -> Retry {
        let wf = self.metadata.retry_policy.as_ref();
        let st = step.retry.as_ref();
        fn pick<'a, T>(
            st: Option<&'a RetryPolicy>,
            wf: Option<&'a RetryPolicy>,
            f: impl Fn(&'a RetryPolicy) -> Option<&'a Spanned<T>>,
        ) -> Option<&'a T> {
            st.and_then(&f)
                .or_else(|| wf.and_then(&f))
                .map(|s| &s.value)
        }
        Retry {
            max_attempts: pick(st, wf, |p| p.max_attempts.as_ref())
                .copied()
                .unwrap_or(1),
            backoff: pick(st, wf, |p| p.backoff.as_ref())
                .copied()
                .unwrap_or(Backoff::Fixed),
            delay: pick(st, wf, |p| p.delay.as_ref())
                .copied()
                .unwrap_or(Retry::DEFAULT_DELAY),
            max_delay: pick(st, wf, |p| p.max_delay.as_ref()).copied(),
            jitter: pick(st, wf, |p| p.jitter.as_ref()).copied().unwrap_or(0.0),
            retry_on: st
                .and_then(|p| p.retry_on.as_ref())
                .or_else(|| wf.and_then(|p| p.retry_on.as_ref()))
                .map(|v| v.iter().map(|s| s.value.clone()).collect()),
        }
    }
}

/// `metadata`.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `author`.
    pub author: Option<Spanned<String>>,
    /// `tags`.
    pub tags: Vec<Spanned<String>>,
    /// `timeout`: limit for the whole run.
    pub timeout: Option<Spanned<Duration>>,
    /// `priority`: higher runs first when runs queue.
    pub priority: Option<Spanned<i64>>,
    /// `retry_policy`: the default for every step.
    pub retry_policy: Option<RetryPolicy>,
}

/// A retry policy as written (`metadata.retry_policy` or a step's `retry`); absent fields
/// fall back (step -> workflow -> default), see [`Workflow::retry_for`].
#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    /// The mapping's span.
    pub span: Span,
    /// `max_attempts`: tries in all, the first included (at least 1).
    pub max_attempts: Option<Spanned<u32>>,
    /// `backoff`.
    pub backoff: Option<Spanned<Backoff>>,
    /// `delay`: the base delay.
    pub delay: Option<Spanned<Duration>>,
    /// `max_delay`: the cap on one delay.
    pub max_delay: Option<Spanned<Duration>>,
    /// `jitter`: fraction of each delay that is randomised (`true` = 1.0, `false` = 0).
    pub jitter: Option<Spanned<f64>>,
    /// `retry_on`: the error classes that are retried.
    pub retry_on: Option<Vec<Spanned<String>>>,
}

/// The effective retry settings of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Tries in all (1 = no retry).
    pub max_attempts: u32,
    /// How the delay grows (default `fixed`).
    pub backoff: Backoff,
    /// Base delay (default 1 s).
    pub delay: Duration,
    /// Cap on one delay.
    pub max_delay: Option<Duration>,
    /// Fraction of each delay that is randomised, 0 to 1.
    pub jitter: f64,
    /// Retried classes; `None` means every class except [`Retry::NOT_RETRIED_BY_DEFAULT`].
    pub retry_on: Option<Vec<String>>,
}

impl Retry {
    /// The base delay when none is given.
    pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);
    /// Classes not retried unless `retry_on` names them.
    pub(crate) const NOT_RETRIED_BY_DEFAULT: &'static [&'static str] = &[
        "ValidationError",
        "ExpressionError",
        "SkillNotFound",
        "Cancelled",
    ];

    /// Whether a failure of this class may be retried.
    pub fn retries(&self, class: &str) -> bool {
        match &self.retry_on {
            Some(list) => list.iter().any(|c| c == class || c == "*"),
            None => !Self::NOT_RETRIED_BY_DEFAULT.contains(&class),
        }
    }
}

/// `on`: triggers for the daemon.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    /// `on.push`.
    pub push: Option<PushTrigger>,
    /// `on.pull_request`: runs for pull requests opened or updated on a forge (inbound
    /// `pull_request` hooks).
    pub pull_request: Option<PullRequestTrigger>,
    /// `on.branch`: runs for pushes to non-default branches of a watched repository (no
    /// forge needed).
    pub branch: Option<BranchTrigger>,
    /// `on.schedule`.
    pub schedule: Vec<Schedule>,
    /// `on.manual`.
    pub manual: Option<Spanned<bool>>,
}

/// `on.push`: runs on new commits.
#[derive(Debug, Clone, Default)]
pub struct PushTrigger {
    /// The mapping's span.
    pub span: Span,
    /// Branch globs; empty means every branch.
    pub branches: Vec<Spanned<String>>,
    /// Path globs; empty means any change.
    pub paths: Vec<Spanned<String>>,
    /// Tag globs (`on.push.tags`): a pushed tag matching them runs the workflow at the
    /// tagged commit. `None` without the key: tag pushes do not run the workflow. With
    /// `tags` and no `branches`, branch pushes do not run it either.
    pub tags: Option<Vec<Spanned<String>>>,
}

impl PushTrigger {
    /// Whether pushes to branches run the workflow: always, unless the section names only
    /// `tags`.
    pub fn runs_on_branches(&self) -> bool {
        self.tags.is_none() || !self.branches.is_empty()
    }
}

/// `on.pull_request`: runs for opened, reopened and updated pull requests.
#[derive(Debug, Clone, Default)]
pub struct PullRequestTrigger {
    /// The mapping's span.
    pub span: Span,
    /// Globs over the pull request's base branch; empty means every base.
    pub branches: Vec<Spanned<String>>,
    /// Path globs over the files the pull request changes; empty means any change.
    pub paths: Vec<Spanned<String>>,
}

/// `on.branch`: runs for pushes to non-default branches.
#[derive(Debug, Clone, Default)]
pub struct BranchTrigger {
    /// The mapping's span.
    pub span: Span,
    /// Branch globs; empty means every non-default branch.
    pub branches: Vec<Spanned<String>>,
}

/// One `on.schedule` entry.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The entry's span.
    pub span: Span,
    /// The cron line: 5 fields, or 6 with leading seconds (checked with croner).
    pub cron: Spanned<String>,
    /// An IANA time zone (checked with chrono-tz); UTC when absent.
    pub timezone: Option<Spanned<String>>,
    /// Parameters for the scheduled runs.
    pub parameters: IndexMap<String, TemplateValue>,
    /// Which missed ticks run after downtime.
    pub catchup: Spanned<Catchup>,
}

impl Schedule {
    /// Parses the cron line (already checked by validation).
    pub fn cron(&self) -> Result<croner::Cron, croner::errors::CronError> {
        crate::cron::parse_cron(&self.cron.value)
    }

    /// The time zone (UTC when absent; already checked by validation).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone
            .as_ref()
            .and_then(|t| t.value.parse().ok())
            .unwrap_or(chrono_tz::UTC)
    }
}

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// The entry's span.
    pub span: Span,
    /// `name`.
    pub name: Spanned<String>,
    /// `type` (default `string`).
    pub ty: Spanned<ParamType>,
    /// `required` (default false).
    pub required: Spanned<bool>,
    /// `default`.
    pub default: Option<Spanned<serde_json::Value>>,
    /// `enum`: the allowed values.
    pub allowed: Option<Spanned<Vec<serde_json::Value>>>,
    /// `description`.
    pub description: Option<Spanned<String>>,
}

/// `context`.
#[derive(Debug, Clone, Default)]
pub struct ContextConfig {
    /// `preserve`: the context survives between runs of this workflow (default false).
    pub preserve: bool,
    /// `merge_strategy` (default `deep`).
    pub merge_strategy: Option<Spanned<MergeStrategy>>,
}

impl ContextConfig {
    /// The merge strategy in force.
    pub fn merge(&self) -> MergeStrategy {
        self.merge_strategy
            .as_ref()
            .map(|m| m.value)
            .unwrap_or(MergeStrategy::Deep)
    }
}

/// `concurrency`.
#[derive(Debug, Clone)]
pub struct Concurrency {
    /// The mapping's span.
    pub span: Span,
    /// `group`: runs in the same group do not overlap (a template; default: the workflow name).
    pub group: Option<TemplateString>,
    /// `overlap` (default `queue`).
    pub overlap: Spanned<Overlap>,
}

/// One stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The entry's span.
    pub span: Span,
    /// `name`.
    pub name: Spanned<String>,
    /// `parallel`: `false` (default), `true` or `auto`.
    pub parallel: Spanned<Parallelism>,
    /// `max_parallel` (default 5, at least 1).
    pub max_parallel: Spanned<u32>,
    /// `steps`.
    pub steps: Vec<Step>,
    /// `env`: environment for the stage's steps (over the workflow's, under the step's).
    pub env: IndexMap<String, TemplateValue>,
    /// `working_directory`: relative to the workspace; the default of the stage's steps.
    pub working_directory: Option<Spanned<String>>,
    /// `matrix`: the stage runs once per instance.
    pub matrix: Option<Matrix>,
    /// `services`: processes running while the stage runs, in file order.
    pub services: Vec<Service>,
}

impl Stage {
    /// The default `max_parallel`.
    pub(crate) const DEFAULT_MAX_PARALLEL: u32 = 5;

    /// For each step, the indices of the siblings it names in `needs:` or reads as
    /// `${{ steps.X }}` (itself excluded). These are its dependencies in a
    /// `parallel: auto` stage; other stages ignore them.
    pub fn sibling_dependencies(&self) -> Vec<Vec<usize>> {
        let index: std::collections::HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.value.as_str(), i))
            .collect();
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.step_references()
                    .iter()
                    .filter_map(|r| index.get(r.as_str()).copied())
                    .filter(|&j| j != i)
                    .collect()
            })
            .collect()
    }
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// The entry's span (for a plain string in `error_handlers[].steps`, the string's span).
    pub span: Span,
    /// `id`: unique in the file.
    pub id: Spanned<String>,
    /// True for a step written as a plain skill name in `error_handlers[].steps`: its id is
    /// the skill name, may repeat, and cannot be referred to.
    pub implicit: bool,
    /// `name`: a label for humans.
    pub name: Option<Spanned<String>>,
    /// `type`, written or inferred (span of the `type` value or of the inferring key).
    pub step_type: Spanned<StepType>,
    /// What the step does.
    pub kind: StepKind,
    /// `parameters`: the step's input object.
    pub parameters: IndexMap<String, TemplateValue>,
    /// `when`: the step runs only when this is truthy. A string without `${{ }}` is read as
    /// one whole expression (like GitHub's `if:`).
    pub when: Option<TemplateString>,
    /// `needs`: ids of steps that must finish first.
    pub needs: Vec<Spanned<String>>,
    /// `timeout`.
    pub timeout: Option<Spanned<Duration>>,
    /// `retry`: overrides fields of the workflow's retry policy.
    pub retry: Option<RetryPolicy>,
    /// `on_failure` (default `abort`).
    pub on_failure: Spanned<OnFailure>,
    /// `compensate`: steps that undo this one.
    pub compensate: Vec<Step>,
    /// `cache`.
    pub cache: Option<Cache>,
    /// `env`: environment for this step (over the workflow's `env`).
    pub env: IndexMap<String, TemplateValue>,
    /// `resources`.
    pub resources: Option<Resources>,
    /// `shell` (for `run` steps): a name (`bash`, `sh`, `python`, `pwsh`, ...) or a command
    /// line with `{0}`; checked by [`ShellSpec::parse`].
    pub shell: Option<Spanned<String>>,
    /// `idempotent` (default true).
    pub idempotent: Spanned<bool>,
    /// `working_directory`: relative to the workspace (over the stage's).
    pub working_directory: Option<Spanned<String>>,
    /// `matrix`: the step runs once per instance.
    pub matrix: Option<Matrix>,
    /// `artifacts`: files kept after the step succeeds (or taken from another workflow).
    pub artifacts: Vec<Artifact>,
    /// `isolate` (default false): the step runs in a private copy of the workspace, removed
    /// when it ends.
    pub isolate: Spanned<bool>,
}

impl Step {
    fn collect<'a>(&'a self, out: &mut Vec<&'a Step>) {
        out.push(self);
        if let StepKind::Decision(d) = &self.kind {
            for b in &d.branches {
                for s in &b.steps {
                    s.collect(out);
                }
            }
        }
        for s in &self.compensate {
            s.collect(out);
        }
    }

    /// Every template string of this step itself (`when`, `parameters`, `env`, `run`,
    /// `cache.key`), not of nested steps.
    pub(crate) fn templates(&self) -> Vec<&TemplateString> {
        let mut out = Vec::new();
        if let Some(w) = &self.when {
            out.push(w);
        }
        if let StepKind::Run(r) = &self.kind {
            out.push(r);
        }
        for v in self.parameters.values() {
            out.extend(v.strings());
        }
        for v in self.env.values() {
            out.extend(v.strings());
        }
        if let Some(c) = &self.cache
            && let Some(k) = &c.key
        {
            out.extend(k.strings());
        }
        if let Some(m) = &self.matrix {
            out.extend(m.templates());
        }
        out
    }

    /// The shell named by `shell:` (`None` when absent or invalid).
    pub fn shell_spec(&self) -> Option<ShellSpec> {
        self.shell
            .as_ref()
            .and_then(|s| ShellSpec::parse(&s.value).ok())
    }

    /// The declared artifact with this name.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name.value == name)
    }

    /// The ids of the steps this step refers to: its `needs` and every `${{ steps.X }}` of
    /// its own templates and of its decision branches (`when` and the branch steps, which
    /// run as part of it), in order, without repeats. Compensation steps are not included
    /// (they run later). In a `parallel: auto` stage, the siblings among these are the
    /// step's dependencies.
    pub fn step_references(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.collect_references(&mut out);
        out
    }

    fn collect_references(&self, out: &mut Vec<String>) {
        let mut push = |id: &str| {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_owned());
            }
        };
        for n in &self.needs {
            push(&n.value);
        }
        let mut templates = self.templates();
        if let StepKind::Decision(d) = &self.kind {
            templates.extend(d.branches.iter().filter_map(|b| b.when.as_ref()));
        }
        for t in templates {
            for r in t.references() {
                if r.root == "steps"
                    && let Some(id) = r.path.first()
                {
                    push(id);
                }
            }
        }
        for s in self.branch_steps() {
            s.collect_references(out);
        }
    }

    /// The nested steps of a decision (all branches), empty for other types.
    pub(crate) fn branch_steps(&self) -> impl Iterator<Item = &Step> {
        let branches: &[Branch] = match &self.kind {
            StepKind::Decision(d) => &d.branches,
            _ => &[],
        };
        branches.iter().flat_map(|b| b.steps.iter())
    }
}

/// What a step does, by type.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// `skill: NAME`.
    Skill(Spanned<String>),
    /// `workflow: NAME` (a file `NAME.yaml` or `NAME.yml` next to this one).
    Workflow(Spanned<String>),
    /// `decision: {branches}` (or `branches:` on the step).
    Decision(Decision),
    /// `run: SCRIPT`: each `${{ }}` reaches the shell through an environment variable.
    Run(TemplateString),
}

/// A decision: the first branch whose `when` is true runs, else the default branch.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The branches, in order.
    pub branches: Vec<Branch>,
}

impl Decision {
    /// The `default: true` branch, if any.
    pub fn default_branch(&self) -> Option<&Branch> {
        self.branches.iter().find(|b| b.default)
    }
}

/// One decision branch.
#[derive(Debug, Clone)]
pub struct Branch {
    /// The entry's span.
    pub span: Span,
    /// `when` (absent on the default branch).
    pub when: Option<TemplateString>,
    /// `default: true`.
    pub default: bool,
    /// `steps`, run one after another.
    pub steps: Vec<Step>,
}

/// One error handler.
#[derive(Debug, Clone)]
pub struct ErrorHandler {
    /// The entry's span.
    pub span: Span,
    /// `error`: the error class matched (`*` matches every class).
    pub error: Spanned<String>,
    /// `action`.
    pub action: Spanned<Action>,
    /// `max_retries`: extra tries for `action: retry` (default 1).
    pub max_retries: Option<Spanned<u32>>,
    /// `then`: what to do when the retries are used up (default `abort`).
    pub then: Option<Spanned<Action>>,
    /// `notify`: send a notification when the handler fires.
    pub notify: Option<Spanned<bool>>,
    /// `steps`: run when the handler fires (a plain string is a skill name).
    pub steps: Vec<Step>,
}

impl ErrorHandler {
    /// Whether this handler handles an error class.
    pub fn matches(&self, class: &str) -> bool {
        self.error.value == class || self.error.value == "*"
    }
}

/// `rollback`.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// The mapping's span.
    pub span: Span,
    /// `steps`, run one after another.
    pub steps: Vec<Step>,
}

/// `cache` (`cache: true` or a mapping): the step's result is reused while its key is the same.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The node's span.
    pub span: Span,
    /// `key`: extra values (templates) mixed into the cache key.
    pub key: Option<TemplateValue>,
    /// `inputs`: globs of workspace files whose contents are part of the key.
    pub inputs: Vec<Spanned<String>>,
    /// `paths`: workspace paths saved with the entry and restored on a hit.
    pub paths: Vec<Spanned<String>>,
    /// `ttl`.
    pub ttl: Option<Spanned<Duration>>,
    /// `scope` (default `repo`).
    pub scope: Option<Spanned<CacheScope>>,
}

/// `resources`: what the step needs to be admitted.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// The mapping's span.
    pub span: Span,
    /// `cpu`: cores (fractions allowed; 0 = I/O-bound, needs no CPU slot), or `all`. Default 1.
    pub cpu: Option<Spanned<Cpu>>,
    /// `memory_mb`.
    pub memory_mb: Option<Spanned<u64>>,
}

/// `resources.cpu`: a number of cores or `all`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cpu {
    /// That many cores (fractions allowed, rounded up when admitted; 0 = I/O-bound).
    Cores(f64),
    /// `all`: every core of the machine, so the step runs alone (no other step that needs
    /// a CPU slot runs beside it).
    All,
}

impl Cpu {
    /// The CPU slots asked for on a machine with `capacity` of them.
    pub fn slots(self, capacity: u32) -> u32 {
        match self {
            Cpu::Cores(c) => c.max(0.0).ceil().min(f64::from(u32::MAX)) as u32,
            Cpu::All => capacity,
        }
    }
}

keyword_enum!(
    /// Who may read a step cache entry.
    CacheScope {
        /// Every run of the repository.
        Repo = "repo",
        /// Runs of the same branch (and, read-only, branches created from it).
        Branch = "branch",
    }
);

keyword_enum!(
    /// A shell named by `shell:`.
    ShellName {
        /// `bash --noprofile --norc -eo pipefail {0}`.
        Bash = "bash",
        /// `sh -e {0}`.
        Sh = "sh",
        /// `python {0}`.
        Python = "python",
        /// `pwsh -command ". '{0}'"`.
        Pwsh = "pwsh",
        /// Other interpreters the script runner knows.
        Python3 = "python3",
        /// The Debian Almquist shell.
        Dash = "dash",
        /// The Z shell.
        Zsh = "zsh",
        /// The Korn shell.
        Ksh = "ksh",
        /// Node.js.
        Node = "node",
        /// Node.js (Debian's name).
        Nodejs = "nodejs",
        /// Perl.
        Perl = "perl",
        /// Ruby.
        Ruby = "ruby",
        /// Windows PowerShell's name for `pwsh`.
        Powershell = "powershell",
    }
);

/// What a step's `shell:` value means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellSpec {
    /// A known shell or interpreter, by name (or by an absolute path ending in such a name).
    Named(ShellName),
    /// A custom command line where `{0}` stands for the script, e.g. `bash -x {0}`.
    Template(String),
}

impl ShellSpec {
    /// Reads a `shell:` value: one word is a known name (or an absolute path to one), more
    /// words are a custom template that must contain `{0}`. The error is the message.
    pub fn parse(text: &str) -> Result<ShellSpec, String> {
        let t = text.trim();
        if t.contains(char::is_whitespace) || t.contains("{0}") {
            if !t.contains("{0}") {
                return Err(format!(
                    "custom shell `{t}` has no `{{0}}`; write where the script goes, e.g. `{t} {{0}}`"
                ));
            }
            return Ok(ShellSpec::Template(t.to_owned()));
        }
        let base = if t.starts_with('/') {
            t.rsplit('/').next().unwrap_or(t)
        } else {
            t
        };
        match ShellName::parse(base) {
            Some(n) => Ok(ShellSpec::Named(n)),
            None => {
                let names: Vec<&str> = ShellName::ALL.iter().map(|(s, _)| *s).collect();
                let mut msg = format!(
                    "unknown shell `{t}`; expected one of {}, or a command line with `{{0}}`",
                    crate::diagnostic::list(&names[..4])
                );
                if let Some(s) = crate::diagnostic::suggest(base, names.iter().copied()) {
                    msg = format!(
                        "unknown shell `{t}`, did you mean `{s}`? Expected one of {}, or a command line with `{{0}}`",
                        crate::diagnostic::list(&names[..4])
                    );
                }
                Err(msg)
            }
        }
    }
}

/// `checkout:` of a workflow: how the run's workspace gets the sources.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The node's span.
    pub span: Span,
    /// `checkout: false`: no sources at all.
    pub enabled: bool,
    /// `depth`: commits of history (default 1); `None` with `enabled` means `full`.
    pub depth: Option<u32>,
    /// `tags`: fetch tags (default false).
    pub tags: bool,
    /// `submodules`: check submodules out (default false).
    pub submodules: bool,
    /// `path`: the directory inside the workspace (default the workspace itself).
    pub path: Option<Spanned<String>>,
}

impl Checkout {
    /// The default depth of history.
    pub const DEFAULT_DEPTH: u32 = 1;
}

impl Default for Checkout {
    fn default() -> Self {
        Checkout {
            span: Span::default(),
            enabled: true,
            depth: Some(Checkout::DEFAULT_DEPTH),
            tags: false,
            submodules: false,
            path: None,
        }
    }
}

/// Values of a matrix axis, `include` or `exclude`: written out, or one `${{ }}` expression
/// giving them at run time (a dynamic matrix).
#[derive(Debug, Clone)]
pub enum MatrixValues<T> {
    /// Written in the file.
    Static(Vec<Spanned<T>>),
    /// An expression evaluated when the stage or step starts (a JSON list).
    Dynamic(TemplateString),
}

/// One `matrix` axis.
#[derive(Debug, Clone)]
pub struct MatrixAxis {
    /// The axis name (read as `${{ matrix.NAME }}`).
    pub name: Spanned<String>,
    /// Its values (scalars or mappings).
    pub values: MatrixValues<serde_json::Value>,
}

/// A `matrix:` on a stage or a step.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// The node's span.
    pub span: Span,
    /// `matrix: ${{ expr }}`: the whole matrix (an object with axes, `include`, `exclude`)
    /// comes from an expression; the other fields are then empty.
    pub whole: Option<TemplateString>,
    /// The axes, in file order.
    pub axes: Vec<MatrixAxis>,
    /// `include`.
    pub include: Option<MatrixValues<serde_json::Map<String, serde_json::Value>>>,
    /// `exclude`.
    pub exclude: Option<MatrixValues<serde_json::Map<String, serde_json::Value>>>,
    /// `fail_fast` (default true): one failing instance cancels the others.
    pub fail_fast: bool,
    /// `max_parallel`: instances at once (default: no limit beyond admission).
    pub max_parallel: Option<Spanned<u32>>,
}

impl Matrix {
    /// The most instances a matrix may have.
    pub const MAX_INSTANCES: usize = crate::matrix::MAX_INSTANCES;

    /// Whether every value is written in the file (so it can be expanded now).
    pub fn is_static(&self) -> bool {
        self.whole.is_none()
            && self
                .axes
                .iter()
                .all(|a| matches!(a.values, MatrixValues::Static(_)))
            && !matches!(self.include, Some(MatrixValues::Dynamic(_)))
            && !matches!(self.exclude, Some(MatrixValues::Dynamic(_)))
    }

    /// Expands a static matrix (see [`crate::matrix::expand`]); `None` when it is dynamic.
    pub fn expand(
        &self,
    ) -> Option<Result<Vec<crate::matrix::MatrixInstance>, crate::matrix::MatrixError>> {
        if !self.is_static() {
            return None;
        }
        fn vals<T: Clone>(v: &MatrixValues<T>) -> Vec<T> {
            match v {
                MatrixValues::Static(items) => items.iter().map(|i| i.value.clone()).collect(),
                MatrixValues::Dynamic(_) => Vec::new(),
            }
        }
        let axes: Vec<(String, Vec<serde_json::Value>)> = self
            .axes
            .iter()
            .map(|a| (a.name.value.clone(), vals(&a.values)))
            .collect();
        let include = self.include.as_ref().map(vals).unwrap_or_default();
        let exclude = self.exclude.as_ref().map(vals).unwrap_or_default();
        Some(crate::matrix::expand(&axes, &include, &exclude))
    }

    /// The instances, with the dynamic parts evaluated in `ctx` (the context the stage or
    /// step starts with); for a static matrix the same as [`Matrix::expand`].
    pub fn instances(
        &self,
        ctx: &dyn EvalContext,
    ) -> Result<Vec<crate::matrix::MatrixInstance>, crate::matrix::MatrixError> {
        use crate::matrix::{MatrixError, expand, expand_value, json_entries, json_list};
        let eval = |t: &TemplateString| {
            t.render(ctx)
                .map_err(|e| MatrixError::Invalid(format!("`matrix`: {e}")))
        };
        if let Some(w) = &self.whole {
            return expand_value(&eval(w)?);
        }
        let mut axes = Vec::with_capacity(self.axes.len());
        for a in &self.axes {
            let values = match &a.values {
                MatrixValues::Static(v) => v.iter().map(|x| x.value.clone()).collect(),
                MatrixValues::Dynamic(t) => json_list(&eval(t)?, &a.name.value)?,
            };
            axes.push((a.name.value.clone(), values));
        }
        let entries = |l: &Option<MatrixValues<serde_json::Map<String, serde_json::Value>>>,
                       what: &str| {
            match l {
                None => Ok(Vec::new()),
                Some(MatrixValues::Static(v)) => Ok(v.iter().map(|x| x.value.clone()).collect()),
                Some(MatrixValues::Dynamic(t)) => json_entries(&eval(t)?, what),
            }
        };
        let include = entries(&self.include, "include")?;
        let exclude = entries(&self.exclude, "exclude")?;
        expand(&axes, &include, &exclude)
    }

    /// Every template string of the matrix (the whole-matrix or per-list expressions).
    pub(crate) fn templates(&self) -> Vec<&TemplateString> {
        let mut out: Vec<&TemplateString> = self.whole.iter().collect();
        for a in &self.axes {
            if let MatrixValues::Dynamic(t) = &a.values {
                out.push(t);
            }
        }
        for l in [&self.include, &self.exclude].into_iter().flatten() {
            if let MatrixValues::Dynamic(t) = l {
                out.push(t);
            }
        }
        out
    }

    /// The names `${{ matrix.X }}` may read when they are all known now: the axes and the
    /// keys of `include` entries. `None` for a dynamic matrix.
    pub fn known_keys(&self) -> Option<Vec<&str>> {
        if !self.is_static() {
            return None;
        }
        let mut out: Vec<&str> = self.axes.iter().map(|a| a.name.value.as_str()).collect();
        if let Some(MatrixValues::Static(items)) = &self.include {
            for e in items {
                for k in e.value.keys() {
                    if !out.contains(&k.as_str()) {
                        out.push(k);
                    }
                }
            }
        }
        Some(out)
    }
}

/// How the engine knows a service is ready.
#[derive(Debug, Clone)]
pub enum ServiceReady {
    /// `tcp: PORT`: a TCP connection to 127.0.0.1 succeeds (a number or a template such as
    /// `${{ services.db.port }}`).
    Tcp(TemplateValue),
    /// `http: URL`: a GET answers with a 2xx status.
    Http(TemplateString),
    /// `run: CMD`: the command exits with 0.
    Run(TemplateString),
}

/// What a service runs.
#[derive(Debug, Clone)]
pub enum ServiceKind {
    /// `run: SCRIPT`.
    Run(TemplateString),
    /// `skill: NAME`.
    Skill(Spanned<String>),
}

/// One entry of `services:` (workflow or stage): a long-running process started before the
/// steps and stopped when its stage or run ends.
#[derive(Debug, Clone)]
pub struct Service {
    /// The entry's span.
    pub span: Span,
    /// The name (read as `${{ services.NAME.port }}`).
    pub name: Spanned<String>,
    /// What it runs.
    pub kind: ServiceKind,
    /// `parameters` (alias `with`) for a skill service.
    pub parameters: IndexMap<String, TemplateValue>,
    /// `env`.
    pub env: IndexMap<String, TemplateValue>,
    /// `ready`: the readiness probe (none: ready once started).
    pub ready: Option<ServiceReady>,
    /// `ready_timeout`: how long the probe may take (default 60 s).
    pub ready_timeout: Option<Spanned<Duration>>,
}

impl Service {
    /// The default `ready_timeout`.
    pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

    /// Every template string of the service.
    pub(crate) fn templates(&self) -> Vec<&TemplateString> {
        let mut out = Vec::new();
        if let ServiceKind::Run(r) = &self.kind {
            out.push(r);
        }
        for v in self.parameters.values().chain(self.env.values()) {
            out.extend(v.strings());
        }
        match &self.ready {
            Some(ServiceReady::Tcp(v)) => out.extend(v.strings()),
            Some(ServiceReady::Http(t) | ServiceReady::Run(t)) => out.push(t),
            None => {}
        }
        out
    }
}

/// Fields of `${{ services.NAME }}`.
pub const SERVICE_FIELDS: &[&str] = &["port", "host"];

/// Where an artifact comes from when it is taken from another workflow.
#[derive(Debug, Clone)]
pub struct ArtifactFrom {
    /// The span of `from`.
    pub span: Span,
    /// `workflow`: the other workflow's name.
    pub workflow: Spanned<String>,
    /// `name`: its artifact (default: this artifact's name).
    pub name: Option<Spanned<String>>,
}

/// One entry of a step's `artifacts`.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The entry's span.
    pub span: Span,
    /// `name`: unique within the step (read as `${{ steps.ID.artifacts.NAME }}`).
    pub name: Spanned<String>,
    /// `paths`: globs relative to the workspace, collected after the step succeeds.
    pub paths: Vec<Spanned<String>>,
    /// `retention`: kept this long (default: with the run).
    pub retention: Option<Spanned<Duration>>,
    /// `from`: take the artifact of the latest successful run of another workflow on the same
    /// branch instead of collecting `paths`.
    pub from: Option<ArtifactFrom>,
}
