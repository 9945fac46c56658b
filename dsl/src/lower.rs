//! Lowering: the YAML tree to the typed [`crate::model`], collecting every problem in one
//! pass (unknown keys with did-you-mean, wrong types, missing fields, enumerated values,
//! durations and numbers out of range, `${{ }}` syntax).
//!
//! Lowering judges shape only. Meaning across nodes (ids, references, cycles, cron lines,
//! sub-workflows) is `validate`'s job. The key lists here are the single source of truth for
//! which keys each object accepts; a test checks that the JSON Schema agrees.

use crate::diagnostic::Diagnostic;
pub use crate::diagnostic::suggest;
use crate::expr::{self, Template};
use crate::model::*;
use crate::yaml::reader::{Map as Obj, Reader};
use crate::yaml::{self, Node, NodeKind, ScalarValue, Span, Style};
use indexmap::IndexMap;
use std::time::Duration;

/// Keys of the file's top-level mapping.
pub(crate) const FILE_KEYS: &[&str] = &["workflow"];
/// Keys of `workflow`.
pub(crate) const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "metadata",
    "on",
    "outputs",
    "parameters",
    "context",
    "env",
    "checkout",
    "services",
    "concurrency",
    "stages",
    "error_handlers",
    "rollback",
];
/// Keys of `metadata`.
pub(crate) const METADATA_KEYS: &[&str] =
    &["author", "tags", "timeout", "priority", "retry_policy"];
/// Keys of `metadata.retry_policy` and of a step's `retry`.
pub(crate) const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "backoff",
    "delay",
    "max_delay",
    "jitter",
    "retry_on",
];
/// Keys of `on`.
pub(crate) const ON_KEYS: &[&str] = &["push", "pull_request", "branch", "schedule", "manual"];
/// Keys of `on.push`.
pub(crate) const PUSH_KEYS: &[&str] = &["branches", "paths", "tags"];
/// Keys of `on.pull_request`.
pub(crate) const PULL_REQUEST_KEYS: &[&str] = &["branches", "paths"];
/// Keys of `on.branch`.
pub(crate) const BRANCH_TRIGGER_KEYS: &[&str] = &["branches"];
/// Keys of an `on.schedule` entry.
pub(crate) const SCHEDULE_KEYS: &[&str] = &["cron", "timezone", "parameters", "catchup"];
/// Keys of a `parameters` entry.
pub(crate) const PARAMETER_KEYS: &[&str] =
    &["name", "type", "required", "default", "enum", "description"];
/// Keys of `context`.
pub(crate) const CONTEXT_KEYS: &[&str] = &["preserve", "merge_strategy"];
/// Keys of `concurrency`.
pub(crate) const CONCURRENCY_KEYS: &[&str] = &["group", "overlap"];
/// Keys of a stage.
pub(crate) const STAGE_KEYS: &[&str] = &[
    "name",
    "parallel",
    "max_parallel",
    "steps",
    "env",
    "working_directory",
    "matrix",
    "services",
];
/// Keys of a step.
pub(crate) const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "type",
    "skill",
    "workflow",
    "decision",
    "branches",
    "run",
    "parameters",
    "when",
    "needs",
    "timeout",
    "retry",
    "on_failure",
    "compensate",
    "cache",
    "env",
    "resources",
    "shell",
    "idempotent",
    "working_directory",
    "matrix",
    "artifacts",
    "isolate",
];
/// Keys of a step's `decision`.
pub(crate) const DECISION_KEYS: &[&str] = &["branches"];
/// Keys of a decision branch.
pub(crate) const BRANCH_KEYS: &[&str] = &["when", "default", "steps"];
/// Keys of an `error_handlers` entry.
pub(crate) const ERROR_HANDLER_KEYS: &[&str] =
    &["error", "action", "max_retries", "then", "notify", "steps"];
/// Keys of `rollback`.
pub(crate) const ROLLBACK_KEYS: &[&str] = &["steps"];
/// Keys of a step's `cache`.
pub(crate) const CACHE_KEYS: &[&str] = &["key", "inputs", "paths", "ttl", "scope"];
/// Keys of `checkout`.
pub(crate) const CHECKOUT_KEYS: &[&str] = &["depth", "tags", "submodules", "path"];
/// Reserved keys of a `matrix` (every other key is an axis).
pub(crate) const MATRIX_KEYS: &[&str] = &["include", "exclude", "fail_fast", "max_parallel"];
/// Keys of a `services` entry.
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "run",
    "skill",
    "with",
    "parameters",
    "env",
    "ready",
    "ready_timeout",
];
/// Keys of a service's `ready`.
pub(crate) const READY_KEYS: &[&str] = &["tcp", "http", "run"];
/// Keys of an `artifacts` entry.
pub(crate) const ARTIFACT_KEYS: &[&str] = &["name", "paths", "retention", "from"];
/// Keys of an artifact's `from`.
pub(crate) const ARTIFACT_FROM_KEYS: &[&str] = &["workflow", "name"];
/// Keys of a step's `resources`.
pub(crate) const RESOURCES_KEYS: &[&str] = &["cpu", "memory_mb"];

/// Every object of the file format: its schema definition name and accepted keys.
pub const OBJECTS: &[(&str, &[&str])] = &[
    ("WorkflowFile", FILE_KEYS),
    ("WorkflowDef", WORKFLOW_KEYS),
    ("MetadataDef", METADATA_KEYS),
    ("RetryPolicyDef", RETRY_KEYS),
    ("TriggersDef", ON_KEYS),
    ("PushTriggerDef", PUSH_KEYS),
    ("PullRequestTriggerDef", PULL_REQUEST_KEYS),
    ("BranchTriggerDef", BRANCH_TRIGGER_KEYS),
    ("ScheduleDef", SCHEDULE_KEYS),
    ("ParameterDef", PARAMETER_KEYS),
    ("ContextDef", CONTEXT_KEYS),
    ("ConcurrencyDef", CONCURRENCY_KEYS),
    ("StageDef", STAGE_KEYS),
    ("StepDef", STEP_KEYS),
    ("DecisionDef", DECISION_KEYS),
    ("BranchDef", BRANCH_KEYS),
    ("ErrorHandlerDef", ERROR_HANDLER_KEYS),
    ("RollbackDef", ROLLBACK_KEYS),
    ("CacheDef", CACHE_KEYS),
    ("CheckoutDef", CHECKOUT_KEYS),
    ("ServiceDef", SERVICE_KEYS),
    ("ReadyDef", READY_KEYS),
    ("ArtifactDef", ARTIFACT_KEYS),
    ("ArtifactFromDef", ARTIFACT_FROM_KEYS),
    ("ResourcesDef", RESOURCES_KEYS),
];

/// Largest `max_attempts` / `max_retries` accepted.
pub(crate) const MAX_ATTEMPTS: i64 = 1000;

/// Lowers a parsed file into a workflow. `stem` names the workflow when it has no `name:`.
/// Returns the workflow (when the shape allowed building one) and every diagnostic.
pub fn lower(root: &Node, source: &str, stem: &str) -> (Option<Workflow>, Vec<Diagnostic>) {
    let mut l = Lowerer {
        source,
        r: Reader::new(),
    };
    let wf = l.file(root, stem);
    (wf, l.r.into_diagnostics())
}

struct Lowerer<'s> {
    source: &'s str,
    r: Reader,
}

impl<'s> Lowerer<'s> {
    fn err(&mut self, span: Span, msg: impl Into<String>) {
        self.r.error(span, msg);
    }

    fn type_err(&mut self, node: &Node, expected: &str, what: &str) {
        self.r.type_error(node, expected, what);
    }

    /// Checks that `node` is a mapping and reports its unknown keys.
    fn obj<'n>(&mut self, node: &'n Node, keys: &[&str], what: &str) -> Option<Obj<'n>> {
        self.r.map(node, keys, what)
    }

    fn require<'n>(&mut self, o: &Obj<'n>, key: &str, what: &str) -> Option<&'n Node> {
        self.r.require(o, key, what)
    }

    // ---- scalars -------------------------------------------------------------------------

    fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        self.r.string(node, what)
    }

    fn opt_string(&mut self, o: &Obj, key: &str) -> Option<Spanned<String>> {
        self.r.field(o, key, Reader::string)
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<Spanned<bool>> {
        self.r.bool(node, what)
    }

    fn int(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<Spanned<i64>> {
        self.r.int(node, what, min, max)
    }

    fn number(&mut self, node: &Node, what: &str, min: f64, max: f64) -> Option<Spanned<f64>> {
        self.r.number(node, what, min, max)
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Spanned<Duration>> {
        self.r.duration(node, what)
    }

    fn keyword<T: Copy>(
        &mut self,
        node: &Node,
        what: &str,
        all: &[(&'static str, T)],
    ) -> Option<Spanned<T>> {
        self.r.keyword(node, what, all)
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<Spanned<String>> {
        self.r.string_list(node, what)
    }

    fn seq<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        self.r.seq(node, what)
    }

    // ---- templates -----------------------------------------------------------------------

    fn template_of(&mut self, node: &Node, text: &str, style: Style) -> Option<TemplateString> {
        match Template::parse(text) {
            Ok(template) => Some(TemplateString {
                template,
                text: text.to_owned(),
                style,
                span: node.span,
            }),
            Err(errors) => {
                for e in errors {
                    self.expr_error(node, e);
                }
                None
            }
        }
    }

    fn expr_error(&mut self, node: &Node, e: expr::ExprError) {
        let (style, text) = node
            .as_scalar()
            .map(|s| (s.style, s.text.as_str()))
            .unwrap_or((Style::Plain, ""));
        let span = scalar_range(self.source, node.span, style, text, e.offset, e.len);
        self.r.push(Diagnostic::error(span, e.message));
    }

    fn template_string(&mut self, node: &Node, what: &str) -> Option<TemplateString> {
        match node.as_scalar() {
            Some(s) if s.value != ScalarValue::Null => {
                let (text, style) = (s.text.clone(), s.style);
                self.template_of(node, &text, style)
            }
            _ => {
                self.type_err(node, "a string", what);
                None
            }
        }
    }

    /// A condition: a template, or a bare expression when it holds no `${{`.
    fn condition(&mut self, node: &Node, what: &str) -> Option<TemplateString> {
        let Some(s) = node.as_scalar().filter(|s| s.value != ScalarValue::Null) else {
            self.type_err(node, "an expression", what);
            return None;
        };
        if s.text.contains("${{") {
            return self.template_of(node, &s.text.clone(), s.style);
        }
        match expr::parse(&s.text) {
            Ok(e) => Some(TemplateString {
                template: Template::Whole { expr: e, offset: 0 },
                text: s.text.clone(),
                style: s.style,
                span: node.span,
            }),
            Err(e) => {
                self.expr_error(node, e);
                None
            }
        }
    }

    fn value(&mut self, node: &Node) -> Option<TemplateValue> {
        let kind = match &node.kind {
            NodeKind::Scalar(s) => match &s.value {
                ScalarValue::Null => TemplateValueKind::Null,
                ScalarValue::Bool(b) => TemplateValueKind::Bool(*b),
                ScalarValue::Int(i) => TemplateValueKind::Number((*i).into()),
                ScalarValue::Float(f) => match serde_json::Number::from_f64(*f) {
                    Some(n) => TemplateValueKind::Number(n),
                    None => {
                        self.err(node.span, format!("`{}` is not a finite number", s.text));
                        return None;
                    }
                },
                ScalarValue::Str => {
                    TemplateValueKind::String(self.template_of(node, &s.text.clone(), s.style)?)
                }
            },
            NodeKind::Seq(items) => {
                TemplateValueKind::Array(items.iter().filter_map(|n| self.value(n)).collect())
            }
            NodeKind::Map(entries) => TemplateValueKind::Object(
                entries
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().unwrap_or_default().to_owned(), self.value(v)?))
                    })
                    .collect(),
            ),
        };
        Some(TemplateValue {
            span: node.span,
            kind,
        })
    }

    fn value_map(&mut self, node: &Node, what: &str) -> IndexMap<String, TemplateValue> {
        let Some(entries) = self.r.entries(node, what) else {
            return IndexMap::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().unwrap_or_default().to_owned(), self.value(v)?)))
            .collect()
    }

    // ---- the file ------------------------------------------------------------------------

    fn file(&mut self, root: &Node, stem: &str) -> Option<Workflow> {
        let o = self.obj(root, FILE_KEYS, "the file")?;
        let Some(wf) = o.get("workflow") else {
            self.err(
                o.key("workflow").map(|k| k.span).unwrap_or(root.span),
                "missing required key `workflow` at the top of the file",
            );
            return None;
        };
        self.workflow(wf, stem)
    }

    fn workflow(&mut self, node: &Node, stem: &str) -> Option<Workflow> {
        let o = self.obj(node, WORKFLOW_KEYS, "`workflow`")?;
        let name = self
            .opt_string(&o, "name")
            .unwrap_or_else(|| Spanned::new(stem.to_owned(), node.span));
        let version = self.opt_string(&o, "version");
        let description = self.opt_string(&o, "description");
        let metadata = o
            .get("metadata")
            .map(|n| self.metadata(n))
            .unwrap_or_default();
        let on = o.get("on").map(|n| self.triggers(n)).unwrap_or_default();
        let outputs = o
            .get("outputs")
            .map(|n| self.value_map(n, "outputs"))
            .unwrap_or_default();
        let parameters = match o.get("parameters") {
            Some(n) => {
                let items = self.seq(n, "parameters");
                items.iter().filter_map(|p| self.parameter(p)).collect()
            }
            None => Vec::new(),
        };
        let context = o
            .get("context")
            .map(|n| self.context(n))
            .unwrap_or_default();
        let env = o.get("env").map(|n| self.env_map(n)).unwrap_or_default();
        let checkout = o.get("checkout").and_then(|n| self.checkout(n));
        let services = o
            .get("services")
            .map(|n| self.services(n))
            .unwrap_or_default();
        let concurrency = o.get("concurrency").and_then(|n| self.concurrency(n));
        let stages = match self.require(&o, "stages", "`workflow`") {
            Some(n) => {
                let items = self.seq(n, "stages");
                if items.is_empty() && matches!(n.kind, NodeKind::Seq(_)) {
                    self.err(
                        n.span,
                        "`stages` is empty; a workflow needs at least one stage",
                    );
                }
                items.iter().filter_map(|s| self.stage(s)).collect()
            }
            None => Vec::new(),
        };
        let error_handlers = match o.get("error_handlers") {
            Some(n) => {
                let items = self.seq(n, "error_handlers");
                items.iter().filter_map(|h| self.error_handler(h)).collect()
            }
            None => Vec::new(),
        };
        let rollback = o.get("rollback").and_then(|n| self.rollback(n));
        Some(Workflow {
            file: None,
            span: node.span,
            name,
            version,
            description,
            metadata,
            on,
            outputs,
            parameters,
            context,
            env,
            checkout,
            services,
            concurrency,
            stages,
            error_handlers,
            rollback,
        })
    }

    fn metadata(&mut self, node: &Node) -> Metadata {
        let Some(o) = self.obj(node, METADATA_KEYS, "`metadata`") else {
            return Metadata::default();
        };
        Metadata {
            author: self.opt_string(&o, "author"),
            tags: o
                .get("tags")
                .map(|n| self.string_list(n, "tags"))
                .unwrap_or_default(),
            timeout: o
                .get("timeout")
                .and_then(|n| self.positive_duration(n, "timeout")),
            priority: o
                .get("priority")
                .and_then(|n| self.int(n, "priority", -1000, 1000)),
            retry_policy: o
                .get("retry_policy")
                .and_then(|n| self.retry(n, "retry_policy")),
        }
    }

    fn positive_duration(&mut self, node: &Node, what: &str) -> Option<Spanned<Duration>> {
        let d = self.duration(node, what)?;
        if d.value.is_zero() {
            self.err(node.span, format!("`{what}` must be greater than zero"));
            return None;
        }
        Some(d)
    }

    fn retry(&mut self, node: &Node, what: &str) -> Option<RetryPolicy> {
        let o = self.obj(node, RETRY_KEYS, &format!("`{what}`"))?;
        let jitter = o
            .get("jitter")
            .and_then(|n| match n.as_scalar().map(|s| &s.value) {
                Some(ScalarValue::Bool(b)) => {
                    Some(Spanned::new(if *b { 1.0 } else { 0.0 }, n.span))
                }
                _ => self.number(n, "jitter", 0.0, 1.0),
            });
        Some(RetryPolicy {
            span: node.span,
            max_attempts: o
                .get("max_attempts")
                .and_then(|n| self.int(n, "max_attempts", 1, MAX_ATTEMPTS))
                .map(|s| Spanned::new(s.value as u32, s.span)),
            backoff: o
                .get("backoff")
                .and_then(|n| self.keyword(n, "backoff", Backoff::ALL)),
            delay: o.get("delay").and_then(|n| self.duration(n, "delay")),
            max_delay: o
                .get("max_delay")
                .and_then(|n| self.duration(n, "max_delay")),
            jitter,
            retry_on: o.get("retry_on").map(|n| self.string_list(n, "retry_on")),
        })
    }

    fn triggers(&mut self, node: &Node) -> Triggers {
        let Some(o) = self.obj(node, ON_KEYS, "`on`") else {
            return Triggers::default();
        };
        let push = o.get("push").and_then(|n| {
            let p = self.obj(n, PUSH_KEYS, "`on.push`")?;
            Some(PushTrigger {
                span: n.span,
                branches: p
                    .get("branches")
                    .map(|b| self.string_list(b, "branches"))
                    .unwrap_or_default(),
                paths: p
                    .get("paths")
                    .map(|b| self.string_list(b, "paths"))
                    .unwrap_or_default(),
                tags: p.get("tags").map(|b| self.string_list(b, "tags")),
            })
        });
        // `push:` with no value means "every push".
        let push = push.or_else(|| {
            o.key("push").map(|k| PushTrigger {
                span: k.span,
                ..PushTrigger::default()
            })
        });
        let pull_request = o.get("pull_request").and_then(|n| {
            let p = self.obj(n, PULL_REQUEST_KEYS, "`on.pull_request`")?;
            Some(PullRequestTrigger {
                span: n.span,
                branches: p
                    .get("branches")
                    .map(|b| self.string_list(b, "branches"))
                    .unwrap_or_default(),
                paths: p
                    .get("paths")
                    .map(|b| self.string_list(b, "paths"))
                    .unwrap_or_default(),
            })
        });
        // `pull_request:` with no value means "every pull request".
        let pull_request = pull_request.or_else(|| {
            o.key("pull_request").map(|k| PullRequestTrigger {
                span: k.span,
                ..PullRequestTrigger::default()
            })
        });
        let branch = o.get("branch").and_then(|n| {
            let p = self.obj(n, BRANCH_TRIGGER_KEYS, "`on.branch`")?;
            Some(BranchTrigger {
                span: n.span,
                branches: p
                    .get("branches")
                    .map(|b| self.string_list(b, "branches"))
                    .unwrap_or_default(),
            })
        });
        let branch = branch.or_else(|| {
            o.key("branch").map(|k| BranchTrigger {
                span: k.span,
                ..BranchTrigger::default()
            })
        });
        let schedule = match o.get("schedule") {
            Some(n) => {
                let items = self.seq(n, "schedule");
                items.iter().filter_map(|s| self.schedule(s)).collect()
            }
            None => Vec::new(),
        };
        Triggers {
            push,
            pull_request,
            branch,
            schedule,
            manual: o.get("manual").and_then(|n| self.bool(n, "manual")),
        }
    }

    fn schedule(&mut self, node: &Node) -> Option<Schedule> {
        let o = self.obj(node, SCHEDULE_KEYS, "a `schedule` entry")?;
        let cron = self
            .require(&o, "cron", "a `schedule` entry")
            .and_then(|n| self.string(n, "cron"));
        let timezone = self.opt_string(&o, "timezone");
        let parameters = o
            .get("parameters")
            .map(|n| self.value_map(n, "parameters"))
            .unwrap_or_default();
        let catchup = match o.get("catchup") {
            Some(n) => self.keyword(n, "catchup", Catchup::ALL)?,
            None => Spanned::new(Catchup::Latest, node.span),
        };
        Some(Schedule {
            span: node.span,
            cron: cron?,
            timezone,
            parameters,
            catchup,
        })
    }

    fn parameter(&mut self, node: &Node) -> Option<Parameter> {
        let o = self.obj(node, PARAMETER_KEYS, "a parameter")?;
        let name = self
            .require(&o, "name", "a parameter")
            .and_then(|n| self.string(n, "name"));
        if let Some(n) = &name
            && !is_identifier(&n.value)
        {
            self.err(
                n.span,
                format!("invalid parameter name `{}`: use letters, digits and `_`, not starting with a digit", n.value),
            );
        }
        let ty = match o.get("type") {
            Some(n) => self.keyword(n, "type", ParamType::ALL),
            None => Some(Spanned::new(ParamType::String, node.span)),
        };
        let required = match o.get("required") {
            Some(n) => self.bool(n, "required"),
            None => Some(Spanned::new(false, node.span)),
        };
        let default = o.get("default").map(|n| Spanned::new(n.to_json(), n.span));
        let allowed = o.get("enum").and_then(|n| match &n.kind {
            NodeKind::Seq(items) => {
                if items.is_empty() {
                    self.err(n.span, "`enum` is empty; list the allowed values");
                }
                Some(Spanned::new(
                    items.iter().map(Node::to_json).collect(),
                    n.span,
                ))
            }
            _ => {
                self.type_err(n, "a sequence", "enum");
                None
            }
        });
        let description = self.opt_string(&o, "description");
        Some(Parameter {
            span: node.span,
            name: name?,
            // An invalid type or flag was reported; keep the parameter (typed after its
            // default) so that references to it do not look undeclared.
            ty: ty.unwrap_or_else(|| {
                let guess = match default.as_ref().map(|d| &d.value) {
                    Some(serde_json::Value::Number(_)) => ParamType::Number,
                    Some(serde_json::Value::Bool(_)) => ParamType::Boolean,
                    Some(serde_json::Value::Array(_)) => ParamType::Array,
                    Some(serde_json::Value::Object(_)) => ParamType::Object,
                    _ => ParamType::String,
                };
                Spanned::new(guess, node.span)
            }),
            required: required.unwrap_or(Spanned::new(false, node.span)),
            default,
            allowed,
            description,
        })
    }

    fn context(&mut self, node: &Node) -> ContextConfig {
        let Some(o) = self.obj(node, CONTEXT_KEYS, "`context`") else {
            return ContextConfig::default();
        };
        ContextConfig {
            preserve: o
                .get("preserve")
                .and_then(|n| self.bool(n, "preserve"))
                .map(|b| b.value)
                .unwrap_or(false),
            merge_strategy: o
                .get("merge_strategy")
                .and_then(|n| self.keyword(n, "merge_strategy", MergeStrategy::ALL)),
        }
    }

    fn concurrency(&mut self, node: &Node) -> Option<Concurrency> {
        if node.as_scalar().is_some() {
            // `concurrency: GROUP` is short for `concurrency: {group: GROUP}`.
            return Some(Concurrency {
                span: node.span,
                group: Some(self.template_string(node, "concurrency")?),
                overlap: Spanned::new(Overlap::Queue, node.span),
            });
        }
        let o = self.obj(node, CONCURRENCY_KEYS, "`concurrency`")?;
        let group = o
            .get("group")
            .and_then(|n| self.template_string(n, "group"));
        let overlap = match o.get("overlap") {
            Some(n) => self.keyword(n, "overlap", Overlap::ALL)?,
            None => Spanned::new(Overlap::Queue, node.span),
        };
        Some(Concurrency {
            span: node.span,
            group,
            overlap,
        })
    }

    fn stage(&mut self, node: &Node) -> Option<Stage> {
        let o = self.obj(node, STAGE_KEYS, "a stage")?;
        // A missing name was reported; the stage and its steps are still checked.
        let name = self
            .require(&o, "name", "a stage")
            .and_then(|n| self.string(n, "name"))
            .unwrap_or_else(|| Spanned::new(String::new(), node.span));
        let parallel = match o.get("parallel") {
            Some(n) => match n.as_scalar() {
                Some(s) if s.value == ScalarValue::Bool(true) => {
                    Some(Spanned::new(Parallelism::Parallel, n.span))
                }
                Some(s) if s.value == ScalarValue::Bool(false) => {
                    Some(Spanned::new(Parallelism::Sequential, n.span))
                }
                Some(s) if s.text == "auto" => Some(Spanned::new(Parallelism::Auto, n.span)),
                _ => {
                    self.err(
                        n.span,
                        format!(
                            "invalid value `{}` for `parallel`; expected one of `true`, `false`, `auto`",
                            n.as_str().unwrap_or(n.type_name())
                        ),
                    );
                    None
                }
            },
            None => Some(Spanned::new(Parallelism::Sequential, node.span)),
        };
        let max_parallel = match o.get("max_parallel") {
            Some(n) => self
                .int(n, "max_parallel", 1, 10_000)
                .map(|v| Spanned::new(v.value as u32, v.span)),
            None => Some(Spanned::new(Stage::DEFAULT_MAX_PARALLEL, node.span)),
        };
        let steps = match self.require(&o, "steps", "a stage") {
            Some(n) => {
                let items = self.seq(n, "steps");
                if items.is_empty() && matches!(n.kind, NodeKind::Seq(_)) {
                    self.err(n.span, "`steps` is empty; a stage needs at least one step");
                }
                items.iter().filter_map(|s| self.step(s)).collect()
            }
            None => Vec::new(),
        };
        let env = o.get("env").map(|n| self.env_map(n)).unwrap_or_default();
        let working_directory = o
            .get("working_directory")
            .and_then(|n| self.relative_path(n, "working_directory"));
        let matrix = o.get("matrix").and_then(|n| self.matrix(n));
        let services = o
            .get("services")
            .map(|n| self.services(n))
            .unwrap_or_default();
        Some(Stage {
            span: node.span,
            name,
            parallel: parallel.unwrap_or(Spanned::new(Parallelism::Sequential, node.span)),
            max_parallel: max_parallel
                .unwrap_or(Spanned::new(Stage::DEFAULT_MAX_PARALLEL, node.span)),
            steps,
            env,
            working_directory,
            matrix,
            services,
        })
    }

    fn steps(&mut self, node: &Node, what: &str) -> Vec<Step> {
        let items = self.seq(node, what);
        items.iter().filter_map(|s| self.step(s)).collect()
    }

    fn step(&mut self, node: &Node) -> Option<Step> {
        let o = self.obj(node, STEP_KEYS, "a step")?;
        let id = self
            .require(&o, "id", "a step")
            .and_then(|n| self.string(n, "id"));
        if let Some(id) = &id
            && !is_step_id(&id.value)
        {
            self.err(
                id.span,
                format!("invalid step id `{}`: use letters, digits, `_` and `-`, starting with a letter or `_`", id.value),
            );
        }
        let name = self.opt_string(&o, "name");
        // The type, written or inferred from the one key that says what the step does.
        let kind_keys: Vec<(&str, &Node)> = ["skill", "workflow", "decision", "run"]
            .into_iter()
            .filter_map(|k| o.key(k).map(|n| (k, n)))
            .chain(o.key("branches").map(|n| ("branches", n)))
            .collect();
        let written = o
            .get("type")
            .and_then(|n| self.keyword(n, "type", StepType::ALL));
        let step_type = match written {
            Some(t) => Some(t),
            None if o.has("type") => None,
            None => {
                let inferred: Vec<&(&str, &Node)> = kind_keys
                    .iter()
                    .filter(|(k, _)| *k != "branches" || !o.has("decision"))
                    .collect();
                match inferred.as_slice() {
                    [] => {
                        self.err(
                            node.span,
                            "a step needs one of `skill`, `workflow`, `decision` or `run`",
                        );
                        None
                    }
                    [(k, n)] => {
                        let t = match *k {
                            "skill" => StepType::Skill,
                            "workflow" => StepType::Workflow,
                            "run" => StepType::Run,
                            _ => StepType::Decision,
                        };
                        Some(Spanned::new(t, n.span))
                    }
                    [_, (k2, n2), ..] => {
                        self.err(
                            n2.span,
                            format!(
                                "a step has exactly one of `skill`, `workflow`, `decision` or `run`; `{}` and `{k2}` are both set",
                                inferred[0].0
                            ),
                        );
                        None
                    }
                }
            }
        };
        let typed = step_type.is_some();
        let step_type = step_type.unwrap_or(Spanned::new(StepType::Skill, node.span));
        // Keys belonging to other step types are errors.
        for (k, n) in kind_keys.iter().filter(|_| typed) {
            let belongs = match step_type.value {
                StepType::Skill => *k == "skill",
                StepType::Workflow => *k == "workflow",
                StepType::Run => *k == "run",
                StepType::Decision => *k == "decision" || *k == "branches",
            };
            if !belongs {
                self.err(
                    n.span,
                    format!("`{k}` does not belong in a `{}` step", step_type.value),
                );
            }
        }
        if let Some(k) = o.key("shell")
            && typed
            && step_type.value != StepType::Run
        {
            self.err(
                k.span,
                format!(
                    "`shell` only applies to `run` steps, not `{}` steps",
                    step_type.value
                ),
            );
        }
        let kind = match step_type.value {
            _ if !typed => None,
            StepType::Skill => self
                .require(&o, "skill", "a `skill` step")
                .and_then(|n| self.name_ref(n, "skill"))
                .map(StepKind::Skill),
            StepType::Workflow => self
                .require(&o, "workflow", "a `workflow` step")
                .and_then(|n| self.name_ref(n, "workflow"))
                .map(StepKind::Workflow),
            StepType::Run => self
                .require(&o, "run", "a `run` step")
                .and_then(|n| self.template_string(n, "run"))
                .map(StepKind::Run),
            StepType::Decision => self.decision(&o, node),
        };
        // A step whose kind is broken is still checked and kept (with an empty skill), so
        // that one mistake neither hides others nor makes references to it look unknown.
        let kind = kind.unwrap_or_else(|| StepKind::Skill(Spanned::new(String::new(), node.span)));
        let parameters = o
            .get("parameters")
            .map(|n| self.value_map(n, "parameters"))
            .unwrap_or_default();
        let when = o.get("when").and_then(|n| self.condition(n, "when"));
        let needs = o
            .get("needs")
            .map(|n| self.string_list(n, "needs"))
            .unwrap_or_default();
        let timeout = o
            .get("timeout")
            .and_then(|n| self.positive_duration(n, "timeout"));
        let retry = o.get("retry").and_then(|n| self.retry(n, "retry"));
        let on_failure = match o.get("on_failure") {
            Some(n) => self.keyword(n, "on_failure", OnFailure::ALL),
            None => Some(Spanned::new(OnFailure::Abort, node.span)),
        };
        let compensate = o
            .get("compensate")
            .map(|n| self.steps(n, "compensate"))
            .unwrap_or_default();
        let cache = o.get("cache").and_then(|n| self.cache(n));
        let env = o.get("env").map(|n| self.env_map(n)).unwrap_or_default();
        let resources = o.get("resources").and_then(|n| {
            let r = self.obj(n, RESOURCES_KEYS, "`resources`")?;
            Some(Resources {
                span: n.span,
                cpu: r.get("cpu").and_then(|c| {
                    let text = c
                        .as_scalar()
                        .filter(|x| matches!(x.value, ScalarValue::Str))
                        .map(|x| x.text.as_str());
                    match text {
                        Some("all") => Some(Spanned::new(Cpu::All, c.span)),
                        Some(_) => {
                            self.type_err(c, "a number of cores or `all`", "cpu");
                            None
                        }
                        None => self
                            .number(c, "cpu", 0.0, 4096.0)
                            .map(|n| Spanned::new(Cpu::Cores(n.value), n.span)),
                    }
                }),
                memory_mb: r
                    .get("memory_mb")
                    .and_then(|m| self.int(m, "memory_mb", 0, 1 << 40))
                    .map(|m| Spanned::new(m.value as u64, m.span)),
            })
        });
        let shell = self.opt_string(&o, "shell");
        if let Some(sh) = &shell
            && let Err(msg) = ShellSpec::parse(&sh.value)
        {
            self.err(sh.span, msg);
        }
        let working_directory = o
            .get("working_directory")
            .and_then(|n| self.relative_path(n, "working_directory"));
        let matrix = o.get("matrix").and_then(|n| self.matrix(n));
        let artifacts = o
            .get("artifacts")
            .map(|n| self.artifacts(n))
            .unwrap_or_default();
        let idempotent = match o.get("idempotent") {
            Some(n) => self.bool(n, "idempotent"),
            None => Some(Spanned::new(true, node.span)),
        };
        let isolate = match o.get("isolate") {
            Some(n) => self.bool(n, "isolate"),
            None => Some(Spanned::new(false, node.span)),
        };
        Some(Step {
            span: node.span,
            id: id?,
            implicit: false,
            name,
            step_type,
            kind,
            parameters,
            when,
            needs,
            timeout,
            retry,
            on_failure: on_failure.unwrap_or(Spanned::new(OnFailure::Abort, node.span)),
            compensate,
            cache,
            env,
            resources,
            shell,
            idempotent: idempotent.unwrap_or(Spanned::new(true, node.span)),
            working_directory,
            matrix,
            artifacts,
            isolate: isolate.unwrap_or(Spanned::new(false, node.span)),
        })
    }

    // ---- CI keys: env, paths, checkout, matrix, services, artifacts, cache --------------

    /// An `env` mapping: names are environment variable names, values are scalars (strings
    /// may hold `${{ }}`).
    fn env_map(&mut self, node: &Node) -> IndexMap<String, TemplateValue> {
        let Some(entries) = self.r.entries(node, "env") else {
            return IndexMap::new();
        };
        let mut out = IndexMap::new();
        for (k, v) in entries {
            let name = k.as_str().unwrap_or_default();
            if !is_env_name(name) {
                self.err(
                    k.span,
                    format!("invalid environment variable name `{name}`: use letters, digits and `_`, not starting with a digit"),
                );
                continue;
            }
            if !matches!(v.kind, NodeKind::Scalar(_)) {
                self.type_err(v, "a string", &format!("env.{name}"));
                continue;
            }
            if let Some(val) = self.value(v) {
                out.insert(name.to_owned(), val);
            }
        }
        out
    }

    /// A path (or glob) relative to the workspace that does not leave it.
    fn relative_path(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        let s = self.string(node, what)?;
        if s.value.contains("${{") {
            let style = node.as_scalar().map(|x| x.style).unwrap_or(Style::Plain);
            self.template_of(node, &s.value, style)?;
        }
        match check_relative(&s.value) {
            Ok(()) => Some(s),
            Err(why) => {
                self.err(s.span, format!("`{what}` {why}: `{}`", s.value));
                None
            }
        }
    }

    fn relative_list(&mut self, node: &Node, what: &str) -> Vec<Spanned<String>> {
        match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .filter_map(|n| self.relative_path(n, what))
                .collect(),
            NodeKind::Scalar(_) => self.relative_path(node, what).into_iter().collect(),
            NodeKind::Map(_) => {
                self.type_err(node, "a list of strings", what);
                Vec::new()
            }
        }
    }

    fn checkout(&mut self, node: &Node) -> Option<Checkout> {
        if let Some(ScalarValue::Bool(b)) = node.as_scalar().map(|s| &s.value) {
            return Some(Checkout {
                span: node.span,
                enabled: *b,
                ..Checkout::default()
            });
        }
        if node.as_scalar().is_some() {
            self.type_err(node, "`false` or a mapping", "checkout");
            return None;
        }
        let o = self.obj(node, CHECKOUT_KEYS, "`checkout`")?;
        let depth = match o.get("depth") {
            None => Some(Checkout::DEFAULT_DEPTH),
            Some(n) if n.as_str() == Some("full") => None,
            Some(n) => match n.as_scalar().map(|s| &s.value) {
                Some(ScalarValue::Int(_)) => self
                    .int(n, "depth", 1, 1 << 31)
                    .map(|d| d.value as u32)
                    .or(Some(Checkout::DEFAULT_DEPTH)),
                _ => {
                    self.err(
                        n.span,
                        format!(
                            "invalid value `{}` for `depth`; expected a number of commits (at least 1) or `full`",
                            n.as_str().unwrap_or(n.type_name())
                        ),
                    );
                    Some(Checkout::DEFAULT_DEPTH)
                }
            },
        };
        let flag = |l: &mut Self, key: &str| {
            o.get(key)
                .and_then(|n| l.bool(n, key))
                .is_some_and(|b| b.value)
        };
        let tags = flag(self, "tags");
        let submodules = flag(self, "submodules");
        let path = o.get("path").and_then(|n| self.relative_path(n, "path"));
        Some(Checkout {
            span: node.span,
            enabled: true,
            depth,
            tags,
            submodules,
            path,
        })
    }

    /// A string that is one `${{ }}` template, for the dynamic parts of a matrix.
    fn dynamic(&mut self, node: &Node, what: &str, expected: &str) -> Option<TemplateString> {
        match node.as_scalar() {
            Some(s) if s.value == ScalarValue::Str && s.text.contains("${{") => {
                self.template_of(node, &s.text.clone(), s.style)
            }
            _ => {
                self.type_err(node, expected, what);
                None
            }
        }
    }

    /// A matrix value: a scalar or a mapping of scalars, written out.
    fn matrix_value(&mut self, node: &Node, what: &str) -> Option<Spanned<serde_json::Value>> {
        let ok = match &node.kind {
            NodeKind::Scalar(s) => s.value != ScalarValue::Null,
            NodeKind::Map(entries) => entries.iter().all(|(_, v)| v.as_scalar().is_some()),
            NodeKind::Seq(_) => false,
        };
        if !ok {
            self.type_err(node, "a scalar or a mapping of scalars", what);
            return None;
        }
        if let Some(s) = node.as_scalar()
            && s.text.contains("${{")
        {
            self.err(
                node.span,
                format!("a value in `{what}` cannot be an expression; write the whole list as one `${{{{ }}}}` expression"),
            );
            return None;
        }
        Some(Spanned::new(node.to_json(), node.span))
    }

    /// `include` / `exclude` entries: mappings, or one expression.
    #[allow(clippy::type_complexity)]
    fn matrix_entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
    ) -> Option<(
        MatrixValues<serde_json::Map<String, serde_json::Value>>,
        Vec<&'n [(Node, Node)]>,
    )> {
        let NodeKind::Seq(items) = &node.kind else {
            let t = self.dynamic(node, what, "a list of mappings or a `${{ }}` expression")?;
            return Some((MatrixValues::Dynamic(t), Vec::new()));
        };
        let mut out = Vec::new();
        let mut raw = Vec::new();
        for item in items {
            let Some(entries) = self.r.entries(item, what) else {
                continue;
            };
            let mut map = serde_json::Map::new();
            let mut ok = true;
            for (k, v) in entries {
                let key = k.as_str().unwrap_or_default().to_owned();
                match self.matrix_value(v, &format!("{what}.{key}")) {
                    Some(v) => {
                        map.insert(key, v.value);
                    }
                    None => ok = false,
                }
            }
            if entries.is_empty() {
                self.err(
                    item.span,
                    format!("an empty `{what}` entry matches nothing"),
                );
                ok = false;
            }
            if ok {
                out.push(Spanned::new(map, item.span));
                raw.push(entries);
            }
        }
        Some((MatrixValues::Static(out), raw))
    }

    fn matrix(&mut self, node: &Node) -> Option<Matrix> {
        if node.as_scalar().is_some() {
            let whole = self.dynamic(node, "matrix", "a mapping or a `${{ }}` expression")?;
            return Some(Matrix {
                span: node.span,
                whole: Some(whole),
                axes: Vec::new(),
                include: None,
                exclude: None,
                fail_fast: true,
                max_parallel: None,
            });
        }
        let entries = self.r.entries(node, "matrix")?;
        let before = self.r.diagnostics().len();
        let mut axes = Vec::new();
        let (mut include, mut exclude) = (None, None);
        let (mut include_raw, mut exclude_raw) = (Vec::new(), Vec::new());
        let mut fail_fast = true;
        let mut max_parallel = None;
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            match key {
                "include" | "exclude" => {
                    if let Some((vals, raw)) = self.matrix_entries(v, key) {
                        if key == "include" {
                            include = Some(vals);
                            include_raw = raw;
                        } else {
                            exclude = Some(vals);
                            exclude_raw = raw;
                        }
                    }
                }
                "fail_fast" => {
                    fail_fast = self.bool(v, "fail_fast").is_none_or(|b| b.value);
                }
                "max_parallel" => {
                    max_parallel = self
                        .int(v, "max_parallel", 1, 10_000)
                        .map(|m| Spanned::new(m.value as u32, m.span));
                }
                _ => {
                    // `includes:`, `fail-fast:` and the like are typos of the reserved keys,
                    // unless they hold a list of plain values (then they are an axis).
                    let plain_list = matches!(&v.kind, NodeKind::Seq(items) if items.iter().all(|i| i.as_scalar().is_some()));
                    if !plain_list && let Some(s) = suggest(key, MATRIX_KEYS.iter().copied()) {
                        self.err(
                            k.span,
                            format!("unknown key `{key}` in `matrix`, did you mean `{s}`?"),
                        );
                        continue;
                    }
                    if !is_step_id(key) {
                        self.err(
                            k.span,
                            format!("invalid matrix axis name `{key}`: use letters, digits, `_` and `-`, starting with a letter or `_`"),
                        );
                        continue;
                    }
                    let values = match &v.kind {
                        NodeKind::Seq(items) => {
                            if items.is_empty() {
                                self.err(v.span, format!("matrix axis `{key}` has no values"));
                            }
                            MatrixValues::Static(
                                items
                                    .iter()
                                    .filter_map(|n| self.matrix_value(n, key))
                                    .collect(),
                            )
                        }
                        _ => {
                            match self.dynamic(v, key, "a list of values or a `${{ }}` expression")
                            {
                                Some(t) => MatrixValues::Dynamic(t),
                                None => continue,
                            }
                        }
                    };
                    axes.push(MatrixAxis {
                        name: Spanned::new(key.to_owned(), k.span),
                        values,
                    });
                }
            }
        }
        let axis_names: Vec<&str> = axes.iter().map(|a| a.name.value.as_str()).collect();
        let all_static_axes = axes
            .iter()
            .all(|a| matches!(a.values, MatrixValues::Static(_)));
        // Keys naming no axis: always wrong in `exclude`; in `include` a near-miss of an axis
        // the entry does not name is a typo (a new key would be added to every instance).
        if all_static_axes {
            for entry in &exclude_raw {
                for (k, _) in entry.iter() {
                    let name = k.as_str().unwrap_or_default();
                    if !axis_names.contains(&name) {
                        let mut msg =
                            format!("`exclude` names `{name}`, which is not an axis of the matrix");
                        if let Some(s) = suggest(name, axis_names.iter().copied()) {
                            msg.push_str(&format!("; did you mean `{s}`?"));
                        } else {
                            msg.push_str(&format!(
                                "; axes: {}",
                                crate::diagnostic::list(&axis_names)
                            ));
                        }
                        self.err(k.span, msg);
                    }
                }
            }
            for entry in &include_raw {
                for (k, _) in entry.iter() {
                    let name = k.as_str().unwrap_or_default();
                    if axis_names.contains(&name) {
                        continue;
                    }
                    if let Some(s) = suggest(name, axis_names.iter().copied())
                        && !entry.iter().any(|(k2, _)| k2.as_str() == Some(s))
                    {
                        self.err(
                            k.span,
                            format!("`include` names `{name}`, which is not an axis, did you mean `{s}`? (a key that is not an axis is added to every matching instance)"),
                        );
                    }
                }
            }
        }
        let m = Matrix {
            span: node.span,
            whole: None,
            axes,
            include,
            exclude,
            fail_fast,
            max_parallel,
        };
        if self.r.diagnostics().len() == before
            && let Some(Err(e)) = m.expand()
        {
            self.err(node.span, e.to_string());
        }
        Some(m)
    }

    fn services(&mut self, node: &Node) -> Vec<Service> {
        let Some(entries) = self.r.entries(node, "services") else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| self.service(k, v))
            .collect()
    }

    fn service(&mut self, key: &Node, node: &Node) -> Option<Service> {
        let name = key.as_str().unwrap_or_default();
        if !is_step_id(name) {
            self.err(
                key.span,
                format!("invalid service name `{name}`: use letters, digits, `_` and `-`, starting with a letter or `_`"),
            );
        }
        let what = format!("service `{name}`");
        let o = self.obj(node, SERVICE_KEYS, &what)?;
        let kind = match (o.get("run"), o.get("skill")) {
            (Some(r), None) => self.template_string(r, "run").map(ServiceKind::Run),
            (None, Some(s)) => self.name_ref(s, "skill").map(ServiceKind::Skill),
            (Some(_), Some(_)) => {
                let span = o.key("skill").map_or(node.span, |k| k.span);
                self.err(span, format!("{what} has both `run` and `skill`; give one"));
                None
            }
            (None, None) => {
                self.err(node.span, format!("{what} needs `run` or `skill`"));
                None
            }
        };
        if o.has("with") && o.has("parameters") {
            let span = o.key("with").map_or(node.span, |k| k.span);
            self.err(span, "`with` and `parameters` are the same; give one");
        }
        if let (Some(ServiceKind::Run(_)), Some(k)) =
            (&kind, o.key("with").or_else(|| o.key("parameters")))
        {
            self.err(
                k.span,
                format!(
                    "`{}` only applies to a skill service",
                    k.as_str().unwrap_or_default()
                ),
            );
        }
        let parameters = o
            .get("with")
            .or_else(|| o.get("parameters"))
            .map(|n| self.value_map(n, "parameters"))
            .unwrap_or_default();
        let env = o.get("env").map(|n| self.env_map(n)).unwrap_or_default();
        let ready = o.get("ready").and_then(|n| {
            let r = self.obj(n, READY_KEYS, "`ready`")?;
            let given: Vec<&str> = READY_KEYS.iter().copied().filter(|k| r.has(k)).collect();
            match given.as_slice() {
                ["tcp"] => {
                    let t = r.get("tcp")?;
                    match t.as_scalar().map(|s| &s.value) {
                        Some(ScalarValue::Int(_)) => {
                            self.int(t, "tcp", 1, 65535)?;
                            self.value(t).map(ServiceReady::Tcp)
                        }
                        Some(ScalarValue::Str) if t.as_str().is_some_and(|s| s.contains("${{")) => {
                            self.value(t).map(ServiceReady::Tcp)
                        }
                        _ => {
                            self.type_err(t, "a port number or a `${{ }}` expression", "tcp");
                            None
                        }
                    }
                }
                ["http"] => self
                    .template_string(r.get("http")?, "http")
                    .map(ServiceReady::Http),
                ["run"] => self
                    .template_string(r.get("run")?, "run")
                    .map(ServiceReady::Run),
                _ => {
                    self.err(
                        n.span,
                        "`ready` takes exactly one of `tcp`, `http` or `run`",
                    );
                    None
                }
            }
        });
        let ready_timeout = o
            .get("ready_timeout")
            .and_then(|n| self.positive_duration(n, "ready_timeout"));
        Some(Service {
            span: node.span,
            name: Spanned::new(name.to_owned(), key.span),
            kind: kind?,
            parameters,
            env,
            ready,
            ready_timeout,
        })
    }

    fn artifacts(&mut self, node: &Node) -> Vec<Artifact> {
        let items = self.seq(node, "artifacts");
        let mut out: Vec<Artifact> = Vec::new();
        for item in items {
            let Some(a) = self.artifact(item) else {
                continue;
            };
            if let Some(first) = out.iter().find(|o| o.name.value == a.name.value) {
                let line = first.name.span.start.line;
                self.err(
                    a.name.span,
                    format!(
                        "duplicate artifact `{}` (first declared on line {line})",
                        a.name.value
                    ),
                );
                continue;
            }
            out.push(a);
        }
        out
    }

    fn artifact(&mut self, node: &Node) -> Option<Artifact> {
        let o = self.obj(node, ARTIFACT_KEYS, "an artifact")?;
        let name = self
            .require(&o, "name", "an artifact")
            .and_then(|n| self.name_ref(n, "artifact"));
        let from = o.get("from").and_then(|n| {
            let f = self.obj(n, ARTIFACT_FROM_KEYS, "`from`")?;
            let workflow = self
                .require(&f, "workflow", "`from`")
                .and_then(|w| self.string(w, "workflow"))?;
            let name = f.get("name").and_then(|x| self.name_ref(x, "artifact"));
            Some(ArtifactFrom {
                span: n.span,
                workflow,
                name,
            })
        });
        let paths = match (o.get("paths"), o.has("from")) {
            (Some(p), false) => {
                let paths = self.relative_list(p, "paths");
                if matches!(&p.kind, NodeKind::Seq(v) if v.is_empty()) {
                    self.err(p.span, "`paths` is empty; list the files to keep");
                }
                paths
            }
            (Some(_), true) => {
                let span = o.key("paths").map_or(node.span, |k| k.span);
                self.err(
                    span,
                    "an artifact has `paths` (files of this step) or `from` (another workflow's artifact), not both",
                );
                Vec::new()
            }
            (None, true) => Vec::new(),
            (None, false) => {
                self.err(
                    node.span,
                    "missing required key `paths` (or `from`) in an artifact",
                );
                Vec::new()
            }
        };
        let retention = o
            .get("retention")
            .and_then(|n| self.positive_duration(n, "retention"));
        Some(Artifact {
            span: node.span,
            name: name?,
            paths,
            retention,
            from,
        })
    }

    fn cache(&mut self, node: &Node) -> Option<Cache> {
        let empty = Cache {
            span: node.span,
            key: None,
            inputs: Vec::new(),
            paths: Vec::new(),
            ttl: None,
            scope: None,
        };
        match node.as_scalar().map(|s| &s.value) {
            Some(ScalarValue::Bool(true)) => return Some(empty),
            Some(ScalarValue::Bool(false)) => return None,
            Some(_) => {
                self.type_err(node, "`true` or a mapping", "cache");
                return None;
            }
            None => {}
        }
        let c = self.obj(node, CACHE_KEYS, "`cache`")?;
        let key = match c.get("key") {
            Some(k) => Some(self.value(k)?),
            None => None,
        };
        Some(Cache {
            key,
            inputs: c
                .get("inputs")
                .map(|n| self.relative_list(n, "inputs"))
                .unwrap_or_default(),
            paths: c
                .get("paths")
                .map(|n| self.relative_list(n, "paths"))
                .unwrap_or_default(),
            ttl: c.get("ttl").and_then(|t| self.positive_duration(t, "ttl")),
            scope: c
                .get("scope")
                .and_then(|n| self.keyword(n, "scope", CacheScope::ALL)),
            ..empty
        })
    }

    fn decision(&mut self, o: &Obj, node: &Node) -> Option<StepKind> {
        let branches_node = match (o.get("decision"), o.get("branches")) {
            (Some(d), _) => match &d.kind {
                NodeKind::Seq(_) => Some(d),
                _ => {
                    let dobj = self.obj(d, DECISION_KEYS, "`decision`")?;
                    self.require(&dobj, "branches", "`decision`")
                }
            },
            (None, Some(b)) => Some(b),
            (None, None) => {
                self.err(
                    node.span,
                    "missing required key `decision` (with `branches`) in a `decision` step",
                );
                None
            }
        }?;
        let items = self.seq(branches_node, "branches");
        if items.is_empty() && matches!(branches_node.kind, NodeKind::Seq(_)) {
            self.err(
                branches_node.span,
                "`branches` is empty; a decision needs at least one branch",
            );
        }
        Some(StepKind::Decision(Decision {
            branches: items.iter().filter_map(|b| self.branch(b)).collect(),
        }))
    }

    /// A skill or workflow name: a plain name, never a path.
    fn name_ref(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        let s = self.string(node, what)?;
        let ok = !s.value.is_empty()
            && s.value != "."
            && s.value != ".."
            && s.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            self.err(
                node.span,
                format!(
                    "invalid {what} name `{}`: use letters, digits, `_`, `-` and `.`, no paths",
                    s.value
                ),
            );
            return None;
        }
        Some(s)
    }

    fn branch(&mut self, node: &Node) -> Option<Branch> {
        let o = self.obj(node, BRANCH_KEYS, "a decision branch")?;
        let default = o
            .get("default")
            .and_then(|n| self.bool(n, "default"))
            .map(|b| b.value)
            .unwrap_or(false);
        let when = o.get("when").and_then(|n| self.condition(n, "when"));
        if default {
            if let Some(k) = o.key("when") {
                self.err(
                    k.span,
                    "the default branch has no `when`; it runs when no other branch does",
                );
            }
        } else if !o.has("when") {
            self.err(
                node.span,
                "a decision branch needs `when` (or `default: true`)",
            );
        }
        let steps = match self.require(&o, "steps", "a decision branch") {
            Some(n) => self.steps(n, "steps"),
            None => Vec::new(),
        };
        Some(Branch {
            span: node.span,
            when,
            default,
            steps,
        })
    }

    fn error_handler(&mut self, node: &Node) -> Option<ErrorHandler> {
        let o = self.obj(node, ERROR_HANDLER_KEYS, "an error handler")?;
        let error = self
            .require(&o, "error", "an error handler")
            .and_then(|n| self.string(n, "error"));
        let action = self
            .require(&o, "action", "an error handler")
            .and_then(|n| self.keyword(n, "action", Action::ALL));
        let max_retries = o
            .get("max_retries")
            .and_then(|n| self.int(n, "max_retries", 0, MAX_ATTEMPTS))
            .map(|v| Spanned::new(v.value as u32, v.span));
        let then = o
            .get("then")
            .and_then(|n| self.keyword(n, "then", Action::ALL));
        if let Some(t) = &then
            && t.value == Action::Retry
        {
            self.err(
                t.span,
                "`then` cannot be `retry`; it says what happens after the retries",
            );
        }
        let notify = o.get("notify").and_then(|n| self.bool(n, "notify"));
        let steps = match o.get("steps") {
            Some(n) => {
                let items = self.seq(n, "steps");
                items
                    .iter()
                    .filter_map(|s| match s.as_scalar() {
                        // A plain string names a skill to run.
                        Some(_) => {
                            let skill = self.name_ref(s, "skill")?;
                            Some(implicit_step(skill))
                        }
                        None => self.step(s),
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        Some(ErrorHandler {
            span: node.span,
            error: error?,
            action: action?,
            max_retries,
            then,
            notify,
            steps,
        })
    }

    fn rollback(&mut self, node: &Node) -> Option<Rollback> {
        let o = self.obj(node, ROLLBACK_KEYS, "`rollback`")?;
        let steps = match self.require(&o, "steps", "`rollback`") {
            Some(n) => self.steps(n, "steps"),
            None => Vec::new(),
        };
        Some(Rollback {
            span: node.span,
            steps,
        })
    }
}

/// A step for a plain skill name in `error_handlers[].steps`.
fn implicit_step(skill: Spanned<String>) -> Step {
    let span = skill.span;
    Step {
        span,
        id: skill.clone(),
        implicit: true,
        name: None,
        step_type: Spanned::new(StepType::Skill, span),
        kind: StepKind::Skill(skill),
        parameters: IndexMap::new(),
        when: None,
        needs: Vec::new(),
        timeout: None,
        retry: None,
        on_failure: Spanned::new(OnFailure::Abort, span),
        compensate: Vec::new(),
        cache: None,
        env: IndexMap::new(),
        resources: None,
        shell: None,
        idempotent: Spanned::new(true, span),
        working_directory: None,
        matrix: None,
        artifacts: Vec::new(),
        isolate: Spanned::new(false, span),
    }
}

/// The file range of `len` bytes at `offset` inside a scalar's value text.
pub(crate) fn scalar_range(
    source: &str,
    span: Span,
    style: Style,
    text: &str,
    offset: usize,
    len: usize,
) -> Span {
    let start = yaml::map_offset(source, span, style, text, offset);
    let end = yaml::map_offset(source, span, style, text, offset + len.max(1));
    let end = if end.line == start.line && end.offset > start.offset {
        end
    } else {
        yaml::Pos {
            column: start.column + 1,
            offset: start.offset + 1,
            ..start
        }
    };
    Span { start, end }
}

/// The diagnostic for an expression error inside a template string, at the expression's own
/// line and column.
pub(crate) fn template_error(source: &str, t: &TemplateString, e: &expr::ExprError) -> Diagnostic {
    Diagnostic::error(
        scalar_range(source, t.span, t.style, &t.text, e.offset, e.len),
        e.message.clone(),
    )
}

/// Letters, digits and `_`, not starting with a digit.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Letters, digits, `_` and `-`, starting with a letter or `_`.
pub(crate) fn is_step_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Letters, digits and `_`, not starting with a digit (a portable environment name).
pub(crate) fn is_env_name(s: &str) -> bool {
    is_identifier(s)
}

/// Why a path is not a relative path inside the workspace (`Ok` when it is one).
pub(crate) fn check_relative(path: &str) -> Result<(), &'static str> {
    let p = path.trim();
    if p.starts_with('/') || p.starts_with('\\') || p.starts_with('~') || p.get(1..2) == Some(":") {
        return Err("must be relative to the workspace");
    }
    let mut depth: i64 = 0;
    for part in p.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("leaves the workspace");
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}
