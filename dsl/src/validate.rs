//! Semantic checks of one lowered workflow: unique ids, references that
//! reach only steps that finish earlier, dependency cycles in `parallel: auto` stages,
//! parameter declarations, decisions, cron lines and time zones, and the static checks of
//! every `${{ }}` expression against the roots allowed where it appears.
//!
//! Sub-workflow resolution (files next to the caller, cycles, depth) needs the file system
//! and lives in `load`.

use crate::diagnostic::{Diagnostic, list, suggest};
use crate::expr::{self, Scope, Template, TemplatePart};
use crate::lower::{scalar_range, template_error};
use crate::model::*;
use crate::params::{json_eq, type_matches};
use crate::yaml::Span;
use std::collections::{HashMap, HashSet};

/// Roots allowed in a step's templates (`when`, `parameters`, `env`, `run`, `cache.key`);
/// `matrix` and `services` are added where a matrix or services are in scope.
pub(crate) const STEP_ROOTS: &[&str] = &[
    "parameters",
    "steps",
    "context",
    "env",
    "secrets",
    "run",
    "repo",
    "workflow",
];
/// Roots allowed in the workflow's `env` and `concurrency.group`.
pub(crate) const WORKFLOW_ENV_ROOTS: &[&str] =
    &["parameters", "secrets", "run", "repo", "workflow", "env"];
/// Roots allowed in schedule parameters (evaluated when the tick fires).
pub(crate) const SCHEDULE_ROOTS: &[&str] = &["workflow", "env", "secrets"];
/// Fields of `steps.<id>` an expression may read.
pub(crate) const STEP_FIELDS: &[&str] = &[
    "output",
    "outputs",
    "status",
    "exit_code",
    "error_class",
    "artifacts",
    "instances",
];

pub use crate::cron::parse_cron;

/// Runs every check on a workflow; `source` is the file's text (for expression positions).
pub fn validate(wf: &Workflow, source: &str) -> Vec<Diagnostic> {
    let mut v = Validator {
        wf,
        source,
        diags: Vec::new(),
        params: wf.parameters.iter().map(|p| p.name.value.clone()).collect(),
        by_id: HashMap::new(),
        ids: Vec::new(),
        any_compensate: wf.steps().any(|s| !s.compensate.is_empty()),
        suggestions_left: 100,
        ci: CiScope::default(),
    };
    for s in wf.steps().filter(|s| !s.implicit) {
        v.by_id.entry(s.id.value.as_str()).or_insert(s);
        v.ids.push(s.id.value.as_str());
    }
    v.run();
    v.diags
}

struct Validator<'a> {
    wf: &'a Workflow,
    source: &'a str,
    diags: Vec<Diagnostic>,
    params: Vec<String>,
    /// Every referable step by id (the first one when ids repeat).
    by_id: HashMap<&'a str, &'a Step>,
    /// Every referable step id in file order (for deterministic suggestions).
    ids: Vec<&'a str>,
    /// Whether any step has `compensate` steps.
    any_compensate: bool,
    /// Did-you-mean searches left (each scans every id; hostile files could ask for many).
    suggestions_left: usize,
    /// The matrix and services in scope of the templates being checked.
    ci: CiScope,
}

/// What `${{ matrix }}` and `${{ services }}` may read where templates are being checked.
#[derive(Debug, Clone, Default)]
struct CiScope {
    /// `None`: no matrix here; `Some(None)`: a dynamic matrix (any key); `Some(Some(keys))`:
    /// a static matrix with these keys.
    matrix: Option<Option<Vec<String>>>,
    /// Names of the services in scope.
    services: Vec<String>,
}

impl CiScope {
    fn with_matrix(mut self, m: Option<&Matrix>) -> Self {
        let Some(m) = m else { return self };
        let keys = m
            .known_keys()
            .map(|k| k.into_iter().map(str::to_owned).collect::<Vec<_>>());
        self.matrix = Some(match (self.matrix.take(), keys) {
            (None, k) => k,
            (Some(Some(mut a)), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        });
        self
    }

    fn with_services(mut self, s: &[Service]) -> Self {
        self.services.extend(s.iter().map(|s| s.name.value.clone()));
        self
    }
}

/// Where a reference to a step may point, for one step being checked.
struct Visibility<'v, 'a> {
    /// Ids that have finished before this step starts.
    done: &'v HashSet<&'a str>,
    /// Ids running at the same time as this step (siblings in a `parallel: true` stage).
    concurrent: &'v HashSet<&'a str>,
    /// Ids of the same stage that a `parallel: auto` step may wait for.
    auto_siblings: &'v HashSet<&'a str>,
    /// Stage name, for messages.
    stage: &'v str,
}

impl<'a> Validator<'a> {
    fn run(&mut self) {
        self.unique_ids();
        self.parameters();
        self.triggers();
        self.stages();
        self.handlers_and_rollback();
        self.workflow_templates();
    }

    fn unique_ids(&mut self) {
        let mut seen: HashMap<&str, &Step> = HashMap::new();
        for s in self.wf.steps() {
            if s.implicit {
                continue;
            }
            if let Some(first) = seen.get(s.id.value.as_str()) {
                self.diags.push(Diagnostic::error(
                    s.id.span,
                    format!(
                        "duplicate step id `{}` (first defined on line {})",
                        s.id.value, first.id.span.start.line
                    ),
                ));
            } else {
                seen.insert(&s.id.value, s);
            }
        }
        let mut stages: HashMap<&str, &Stage> = HashMap::new();
        for st in self.wf.stages.iter().filter(|st| !st.name.value.is_empty()) {
            if let Some(first) = stages.get(st.name.value.as_str()) {
                self.diags.push(Diagnostic::error(
                    st.name.span,
                    format!(
                        "duplicate stage name `{}` (first defined on line {})",
                        st.name.value, first.name.span.start.line
                    ),
                ));
            } else {
                stages.insert(&st.name.value, st);
            }
        }
    }

    fn parameters(&mut self) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for p in &self.wf.parameters {
            if let Some(line) = seen.get(p.name.value.as_str()) {
                self.diags.push(Diagnostic::error(
                    p.name.span,
                    format!(
                        "duplicate parameter `{}` (first declared on line {line})",
                        p.name.value
                    ),
                ));
            } else {
                seen.insert(&p.name.value, p.name.span.start.line);
            }
            let ty = p.ty.value;
            if let Some(allowed) = &p.allowed {
                for v in &allowed.value {
                    if !type_matches(ty, v) {
                        self.diags.push(Diagnostic::error(
                            allowed.span,
                            format!(
                                "`enum` value {} of parameter `{}` is not of type `{ty}`",
                                v, p.name.value
                            ),
                        ));
                    }
                }
            }
            if let Some(d) = &p.default {
                if !type_matches(ty, &d.value) {
                    self.diags.push(Diagnostic::error(
                        d.span,
                        format!(
                            "default {} of parameter `{}` is not of type `{ty}`",
                            d.value, p.name.value
                        ),
                    ));
                } else if let Some(allowed) = &p.allowed
                    && !allowed.value.iter().any(|a| json_eq(a, &d.value))
                {
                    let names: Vec<String> = allowed.value.iter().map(|v| v.to_string()).collect();
                    self.diags.push(Diagnostic::error(
                        d.span,
                        format!(
                            "default {} of parameter `{}` is not one of its `enum` values: {}",
                            d.value,
                            p.name.value,
                            names.join(", ")
                        ),
                    ));
                }
                if p.required.value {
                    self.diags.push(Diagnostic::warning(
                        p.required.span,
                        format!(
                            "parameter `{}` is required and has a default; the default is never used",
                            p.name.value
                        ),
                    ));
                }
            }
        }
    }

    fn triggers(&mut self) {
        // A push, a tag, a pull request give no parameters: a required one without a default
        // fails every such run.
        let on = &self.wf.on;
        let unattended = if on.push.is_some() {
            Some("on.push")
        } else if on.pull_request.is_some() {
            Some("on.pull_request")
        } else if on.branch.is_some() {
            Some("on.branch")
        } else {
            None
        };
        if let Some(trigger) = unattended {
            for p in &self.wf.parameters {
                if p.required.value && p.default.is_none() {
                    self.diags.push(
                        Diagnostic::warning(
                            p.required.span,
                            format!(
                                "`{trigger}` runs this workflow without parameters, but parameter `{}` is required and has no default; every {} run will fail",
                                p.name.value,
                                if trigger == "on.pull_request" { "pull-request" } else { "push" }
                            ),
                        )
                        .with_hint(format!("give `{}` a default, or drop `{trigger}` and trigger the workflow by hand", p.name.value)),
                    );
                }
            }
        }
        self.trigger_globs();
        for s in &self.wf.on.schedule {
            if let Err((message, hint)) = crate::cron::check_cron(&s.cron.value) {
                let mut d = Diagnostic::error(s.cron.span, message);
                if let Some(hint) = hint {
                    d = d.with_hint(hint);
                }
                self.diags.push(d);
            }
            if let Some(tz) = &s.timezone
                && tz.value.parse::<chrono_tz::Tz>().is_err()
            {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
                let mut msg = format!("unknown time zone `{}`", tz.value);
                if let Some(s) = suggest(&tz.value, names) {
                    msg.push_str(&format!(", did you mean `{s}`?"));
                }
                self.diags.push(
                    Diagnostic::error(tz.span, msg)
                        .with_hint("use an IANA name such as `Europe/Berlin` or `UTC`"),
                );
            }
            for v in s.parameters.values() {
                for t in v.strings() {
                    self.check_template(t, SCHEDULE_ROOTS, None);
                }
            }
            for (k, v) in &s.parameters {
                match self.wf.parameter(k) {
                    None => self.diags.push(Diagnostic::error(
                        v.span,
                        format!("schedule sets undeclared parameter `{k}`"),
                    )),
                    Some(p) => {
                        if let Some(json) = v.to_static_json()
                            && let Err(errors) = crate::params::check_value(p, &json)
                        {
                            for e in errors {
                                self.diags.push(Diagnostic::error(v.span, e.to_string()));
                            }
                        }
                    }
                }
            }
            for p in &self.wf.parameters {
                if p.required.value
                    && p.default.is_none()
                    && !s.parameters.contains_key(&p.name.value)
                {
                    self.diags.push(Diagnostic::error(
                        s.cron.span,
                        format!(
                            "this schedule does not set required parameter `{}` (it has no default)",
                            p.name.value
                        ),
                    ));
                }
            }
        }
    }

    /// Every glob of `on.push`, `on.pull_request` and `on.branch` compiles the way the
    /// daemon matches it (`*` stops at `/`, `**` crosses it, a leading `!` excludes); a bad
    /// one is an error at its own line.
    fn trigger_globs(&mut self) {
        let on = &self.wf.on;
        let mut lists: Vec<(&str, &[Spanned<String>])> = Vec::new();
        if let Some(p) = &on.push {
            lists.push(("on.push.branches", &p.branches));
            lists.push(("on.push.paths", &p.paths));
            if let Some(tags) = &p.tags {
                lists.push(("on.push.tags", tags));
            }
        }
        if let Some(p) = &on.pull_request {
            lists.push(("on.pull_request.branches", &p.branches));
            lists.push(("on.pull_request.paths", &p.paths));
        }
        if let Some(b) = &on.branch {
            lists.push(("on.branch.branches", &b.branches));
        }
        for (key, globs) in lists {
            for g in globs {
                if let Err(message) = check_trigger_glob(&g.value) {
                    self.diags.push(
                        Diagnostic::error(g.span, format!("invalid glob `{}` in `{key}`: {message}", g.value))
                            .with_hint("`*` matches within one path segment, `**` across `/`, `!` at the start excludes; escape `[`, `{` and `\\` with `\\`"),
                    );
                }
            }
        }
    }

    fn stages(&mut self) {
        let wf = self.wf;
        let mut done: HashSet<&'a str> = HashSet::new();
        let empty: HashSet<&'a str> = HashSet::new();
        for stage in &wf.stages {
            for svc in &stage.services {
                if let Some(first) = wf.services.iter().find(|w| w.name.value == svc.name.value) {
                    self.diags.push(Diagnostic::error(
                        svc.name.span,
                        format!(
                            "service `{}` is already defined for the whole workflow (line {})",
                            svc.name.value, first.name.span.start.line
                        ),
                    ));
                }
            }
            self.ci = CiScope::default()
                .with_services(&wf.services)
                .with_services(&stage.services)
                .with_matrix(stage.matrix.as_ref());
            self.stage_templates(stage, &done);
            let ids: HashSet<&'a str> = stage.steps.iter().map(|s| s.id.value.as_str()).collect();
            match stage.parallel.value {
                Parallelism::Sequential => {
                    let mut local = done.clone();
                    for step in &stage.steps {
                        let vis = Visibility {
                            done: &local,
                            concurrent: &empty,
                            auto_siblings: &empty,
                            stage: &stage.name.value,
                        };
                        self.step(step, &vis);
                        add_ids(step, &mut local);
                    }
                }
                Parallelism::Parallel => {
                    for step in &stage.steps {
                        let vis = Visibility {
                            done: &done,
                            concurrent: &ids,
                            auto_siblings: &empty,
                            stage: &stage.name.value,
                        };
                        self.step(step, &vis);
                    }
                }
                Parallelism::Auto => {
                    for step in &stage.steps {
                        let vis = Visibility {
                            done: &done,
                            concurrent: &empty,
                            auto_siblings: &ids,
                            stage: &stage.name.value,
                        };
                        self.step(step, &vis);
                    }
                    self.auto_cycles(stage);
                }
            }
            for s in &stage.steps {
                add_ids(s, &mut done);
            }
        }
        // Compensation runs after the main flow: every main step may be referred to. The
        // compensation of a matrix stage's step runs per instance, with its `matrix`.
        let all_main = done;
        for stage in &self.wf.stages {
            self.ci = CiScope::default()
                .with_services(&wf.services)
                .with_matrix(stage.matrix.as_ref());
            for step in &stage.steps {
                self.compensations(step, &all_main);
            }
        }
        self.ci = CiScope::default().with_services(&wf.services);
    }

    fn compensations(&mut self, step: &'a Step, all_main: &HashSet<&'a str>) {
        if !step.compensate.is_empty() {
            self.after_steps(&step.compensate, all_main, "compensation");
        }
        for s in step.branch_steps() {
            self.compensations(s, all_main);
        }
    }

    /// Steps that run after the main flow (compensation, error handlers, rollback), one
    /// after another.
    fn after_steps(&mut self, steps: &'a [Step], all_main: &HashSet<&'a str>, what: &str) {
        let empty = HashSet::new();
        let mut local = all_main.clone();
        for s in steps {
            let vis = Visibility {
                done: &local,
                concurrent: &empty,
                auto_siblings: &empty,
                stage: what,
            };
            self.step(s, &vis);
            add_ids(s, &mut local);
        }
    }

    fn handlers_and_rollback(&mut self) {
        let mut all_main = HashSet::new();
        for stage in &self.wf.stages {
            for s in &stage.steps {
                add_ids(s, &mut all_main);
            }
        }
        for h in &self.wf.error_handlers {
            self.after_steps(&h.steps, &all_main, "error handler");
            if h.action.value == Action::Retry && h.max_retries.is_none() {
                // Default of one extra try is fine; nothing to report.
            }
            if h.action.value != Action::Retry
                && let Some(t) = &h.then
            {
                self.diags.push(Diagnostic::warning(
                    t.span,
                    format!(
                        "`then` only applies to `action: retry`; it is ignored with `action: {}`",
                        h.action.value
                    ),
                ));
            }
            if self.wf.rollback.is_none() {
                for a in std::iter::once(&h.action).chain(h.then.iter()) {
                    if a.value == Action::Rollback {
                        self.diags.push(Diagnostic::warning(
                            a.span,
                            "action `rollback` but the workflow has no `rollback` section; nothing will be rolled back",
                        ));
                    }
                }
            }
        }
        if let Some(rb) = &self.wf.rollback {
            self.after_steps(&rb.steps, &all_main, "rollback");
        }
    }

    /// The templates of a stage's own keys (`env`, `services`, a dynamic `matrix`), checked
    /// with the steps finished before the stage.
    fn stage_templates(&mut self, stage: &'a Stage, done: &HashSet<&'a str>) {
        let empty = HashSet::new();
        let vis = Visibility {
            done,
            concurrent: &empty,
            auto_siblings: &empty,
            stage: &stage.name.value,
        };
        let me = stage.name.value.as_str();
        let with_ci = self.ci.clone();
        // The matrix's own expressions are evaluated before it exists.
        self.ci.matrix = None;
        if let Some(m) = &stage.matrix {
            for t in m.templates() {
                self.check_template(t, STEP_ROOTS, Some((&vis, me)));
            }
        }
        self.ci = with_ci;
        for v in stage.env.values() {
            for t in v.strings() {
                self.check_template(t, STEP_ROOTS, Some((&vis, me)));
            }
        }
        for svc in &stage.services {
            for t in svc.templates() {
                self.check_template(t, STEP_ROOTS, Some((&vis, me)));
            }
        }
    }

    fn workflow_templates(&mut self) {
        let wf = self.wf;
        self.ci = CiScope::default().with_services(&wf.services);
        for svc in &wf.services {
            for t in svc.templates() {
                self.check_template(t, WORKFLOW_ENV_ROOTS, None);
            }
        }
        self.ci = CiScope::default();
        for v in wf.env.values() {
            for t in v.strings() {
                self.check_template(t, WORKFLOW_ENV_ROOTS, None);
            }
        }
        if let Some(c) = &wf.concurrency
            && let Some(g) = &c.group
        {
            self.check_template(g, WORKFLOW_ENV_ROOTS, None);
        }
        let mut all = HashSet::new();
        for stage in &wf.stages {
            for s in &stage.steps {
                add_ids(s, &mut all);
            }
        }
        let empty = HashSet::new();
        let vis = Visibility {
            done: &all,
            concurrent: &empty,
            auto_siblings: &empty,
            stage: "outputs",
        };
        for v in wf.outputs.values() {
            for t in v.strings() {
                self.check_template(t, STEP_ROOTS, Some((&vis, "outputs")));
            }
        }
    }

    fn step(&mut self, step: &'a Step, vis: &Visibility<'_, 'a>) {
        let me = step.id.value.as_str();
        for n in &step.needs {
            self.step_ref(me, &n.value, n.span, vis);
        }
        if step.on_failure.value == OnFailure::Rollback && self.wf.rollback.is_none() {
            self.diags.push(Diagnostic::warning(
                step.on_failure.span,
                "`on_failure: rollback` but the workflow has no `rollback` section; nothing will be rolled back",
            ));
        }
        if step.isolate.value && matches!(step.kind, StepKind::Decision(_) | StepKind::Workflow(_))
        {
            self.diags.push(
                Diagnostic::warning(
                    step.isolate.span,
                    format!(
                        "`isolate` has no effect on a `{}` step: only `run` and `skill` steps get a copy of the workspace",
                        step.step_type.value
                    ),
                )
                .with_hint("put `isolate: true` on the steps it runs"),
            );
        }
        if let Some(cache) = &step.cache
            && matches!(step.kind, StepKind::Workflow(_) | StepKind::Decision(_))
        {
            self.diags.push(
                Diagnostic::warning(
                    cache.span,
                    "`cache` applies to `run` and skill steps only: this step runs every time",
                )
                .with_hint("put `cache` on the steps it runs"),
            );
        }
        if step.on_failure.value == OnFailure::Compensate && !self.any_compensate {
            self.diags.push(Diagnostic::warning(
                step.on_failure.span,
                "`on_failure: compensate` but no step has `compensate` steps; nothing will be undone",
            ));
        }
        let outer = self.ci.clone();
        let matrix_templates: Vec<*const TemplateString> = step
            .matrix
            .iter()
            .flat_map(|m| m.templates())
            .map(|t| t as *const TemplateString)
            .collect();
        let inner = outer.clone().with_matrix(step.matrix.as_ref());
        for t in step.templates() {
            // A step's dynamic matrix is evaluated before its instances exist.
            self.ci = if matrix_templates.contains(&(t as *const TemplateString)) {
                outer.clone()
            } else {
                inner.clone()
            };
            self.check_template(t, STEP_ROOTS, Some((vis, me)));
        }
        self.ci = inner;
        if let StepKind::Run(r) = &step.kind {
            self.check_shell_positions(r, step.shell.as_ref().map(|s| s.value.as_str()));
            for rf in r.references() {
                if rf.root == "repo"
                    && let Some(field) = rf.path.first()
                    && (field == "message" || field == "branch")
                {
                    let span =
                        scalar_range(self.source, r.span, r.style, &r.text, rf.offset, rf.len);
                    self.diags.push(
                        Diagnostic::warning(
                            span,
                            format!("`repo.{field}` in a `run:` script is text chosen by whoever pushes"),
                        )
                        .with_hint("it reaches the script through an environment variable; keep it quoted (\"$VAR\") and never `eval` it"),
                    );
                }
            }
        }
        // Decision branches: sequential inside the branch, after everything the decision
        // step itself may see.
        if let StepKind::Decision(d) = &step.kind {
            let defaults: Vec<&Branch> = d.branches.iter().filter(|b| b.default).collect();
            for extra in defaults.iter().skip(1) {
                self.diags.push(Diagnostic::error(
                    extra.span,
                    format!(
                        "decision `{me}` has more than one default branch (the first is on line {})",
                        defaults[0].span.start.line
                    ),
                ));
            }
            for b in &d.branches {
                if let Some(w) = &b.when {
                    self.check_template(w, STEP_ROOTS, Some((vis, me)));
                }
                let mut local = vis.done.clone();
                let empty = HashSet::new();
                for s in &b.steps {
                    let inner = Visibility {
                        done: &local,
                        concurrent: &empty,
                        auto_siblings: vis.auto_siblings,
                        stage: vis.stage,
                    };
                    self.step(s, &inner);
                    add_ids(s, &mut local);
                }
            }
        }
        self.ci = outer;
        if let Some(c) = &step.cache
            && let Some(key) = &c.key
            && key.strings().is_empty()
            && key.to_static_json().is_some_and(|v| v.is_null())
        {
            self.diags
                .push(Diagnostic::error(key.span, "`cache.key` must not be null"));
        }
    }

    /// The `${{ }}` of a shell script whose position the shell cannot honour (right after
    /// a backslash or `$`, in a heredoc delimiter, ...): errors at the expression.
    fn check_shell_positions(&mut self, r: &TemplateString, shell: Option<&str>) {
        if r.template.is_literal() || !crate::shell::is_posix_shell(shell) {
            return;
        }
        let pieces: Vec<crate::shell::Piece<'_>> = match &r.template {
            Template::Literal(_) => return,
            Template::Whole { .. } => vec![crate::shell::Piece::Expr],
            Template::Interpolated(parts) => parts
                .iter()
                .map(|p| match p {
                    TemplatePart::Text(t) => crate::shell::Piece::Text(t),
                    TemplatePart::Expr { .. } => crate::shell::Piece::Expr,
                })
                .collect(),
        };
        let Err(problems) = crate::shell::rewrite(&pieces, &|n| format!("AGENT_EXPR_{n}")) else {
            return;
        };
        let exprs = r.template.exprs();
        for p in problems {
            let Some(&(_, offset)) = exprs.get(p.expr) else {
                continue;
            };
            // Point at `${{ ... }}` as a whole.
            let start = offset.saturating_sub(3);
            let end = r
                .text
                .get(offset..)
                .and_then(|rest| rest.find("}}"))
                .map_or(r.text.len(), |e| offset + e + 2);
            let len = end.saturating_sub(start);
            let span = scalar_range(self.source, r.span, r.style, &r.text, start, len);
            self.diags.push(Diagnostic::error(span, p.message));
        }
    }

    fn check_template(
        &mut self,
        t: &TemplateString,
        roots: &[&str],
        steps: Option<(&Visibility, &str)>,
    ) {
        let mut all_roots: Vec<&str> = roots.to_vec();
        if self.ci.matrix.is_some() {
            all_roots.push("matrix");
        }
        if !self.ci.services.is_empty() {
            all_roots.push("services");
        }
        let scope = Scope {
            parameters: &self.params,
            roots: &all_roots,
        };
        for (e, offset) in t.template.exprs() {
            for err in expr::check(e, &scope) {
                let hint = if err.message.starts_with("context `matrix` cannot") {
                    Some("`matrix` is available in a stage or step that has `matrix:`")
                } else if err.message.starts_with("context `services` cannot") {
                    Some(
                        "`services` is available where services are declared: the workflow's everywhere, a stage's in that stage",
                    )
                } else {
                    None
                };
                let mut d = template_error(self.source, t, &err.shifted(offset));
                if let Some(h) = hint {
                    d = d.with_hint(h);
                }
                self.diags.push(d);
            }
        }
        self.ci_references(t);
        if let Some((vis, me)) = steps {
            for r in t.references() {
                if r.root != "steps" || !roots.contains(&"steps") {
                    continue;
                }
                let Some(id) = r.path.first() else { continue };
                // Point at `steps.X` (computed only when there is something to report).
                if vis.done.contains(id.as_str())
                    && id != me
                    && r.path
                        .get(1)
                        .is_none_or(|f| STEP_FIELDS.contains(&f.as_str()))
                {
                    if r.path.get(1).is_some_and(|f| f == "artifacts") {
                        self.artifact_ref(t, &r, id);
                    }
                    continue;
                }
                let id_len = ("steps.".len() + id.len()).min(r.len.max(1));
                let span = scalar_range(self.source, t.span, t.style, &t.text, r.offset, id_len);
                if self.step_ref(me, id, span, vis)
                    && let Some(field) = r.path.get(1)
                    && !STEP_FIELDS.contains(&field.as_str())
                {
                    let mut msg = format!(
                        "unknown field `{field}` of step `{id}`; expected one of {}",
                        list(STEP_FIELDS)
                    );
                    if let Some(s) = suggest(field, STEP_FIELDS.iter().copied()) {
                        msg =
                            format!("unknown field `{field}` of step `{id}`, did you mean `{s}`?");
                    }
                    let span = scalar_range(self.source, t.span, t.style, &t.text, r.offset, r.len);
                    self.diags.push(Diagnostic::error(span, msg));
                }
            }
        }
    }

    /// `${{ matrix.X }}` of a static matrix and `${{ services.NAME.FIELD }}`: the key, the
    /// service and the field must exist.
    fn ci_references(&mut self, t: &TemplateString) {
        for r in t.references() {
            let Some(first) = r.path.first() else {
                continue;
            };
            let msg = match r.root.as_str() {
                "matrix" => match &self.ci.matrix {
                    Some(Some(keys)) if !keys.contains(first) => {
                        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
                        Some(match suggest(first, names.iter().copied()) {
                            Some(s) => {
                                format!("the matrix has no key `{first}`, did you mean `{s}`?")
                            }
                            None => {
                                format!("the matrix has no key `{first}`; it has {}", list(&names))
                            }
                        })
                    }
                    _ => None,
                },
                "services" if !self.ci.services.is_empty() => {
                    let names: Vec<&str> = self.ci.services.iter().map(String::as_str).collect();
                    if !names.contains(&first.as_str()) {
                        Some(match suggest(first, names.iter().copied()) {
                            Some(s) => format!("unknown service `{first}`, did you mean `{s}`?"),
                            None => format!(
                                "unknown service `{first}`; services here: {}",
                                list(&names)
                            ),
                        })
                    } else {
                        r.path
                            .get(1)
                            .filter(|f| !SERVICE_FIELDS.contains(&f.as_str()))
                            .map(|f| {
                                format!(
                                    "unknown field `{f}` of service `{first}`; expected one of {}",
                                    list(SERVICE_FIELDS)
                                )
                            })
                    }
                }
                _ => None,
            };
            if let Some(msg) = msg {
                let span = scalar_range(self.source, t.span, t.style, &t.text, r.offset, r.len);
                self.diags.push(Diagnostic::error(span, msg));
            }
        }
    }

    /// `${{ steps.ID.artifacts.NAME }}`: step `ID` declares artifact `NAME`.
    fn artifact_ref(&mut self, t: &TemplateString, r: &expr::Reference, id: &str) {
        let Some(step) = self.by_id.get(id) else {
            return;
        };
        let names: Vec<&str> = step
            .artifacts
            .iter()
            .map(|a| a.name.value.as_str())
            .collect();
        let msg = match r.path.get(2) {
            _ if names.is_empty() => format!("step `{id}` declares no `artifacts`"),
            Some(n) if !names.contains(&n.as_str()) => match suggest(n, names.iter().copied()) {
                Some(s) => format!("step `{id}` has no artifact `{n}`, did you mean `{s}`?"),
                None => format!(
                    "step `{id}` has no artifact `{n}`; it declares {}",
                    list(&names)
                ),
            },
            _ => return,
        };
        let span = scalar_range(self.source, t.span, t.style, &t.text, r.offset, r.len);
        self.diags.push(Diagnostic::error(span, msg));
    }

    /// Checks one reference from step `me` to step `id`; true when it is fine.
    fn step_ref(&mut self, me: &str, id: &str, span: Span, vis: &Visibility) -> bool {
        if id == me {
            self.diags.push(Diagnostic::error(
                span,
                format!("step `{me}` refers to itself"),
            ));
            return false;
        }
        if vis.done.contains(id) || vis.auto_siblings.contains(id) {
            return true;
        }
        if vis.concurrent.contains(id) {
            self.diags.push(
                Diagnostic::error(
                    span,
                    format!(
                        "step `{me}` refers to `{id}`, which runs at the same time in parallel stage `{}`",
                        vis.stage
                    ),
                )
                .with_hint("move it to a later stage, or use `parallel: auto` to make the reference a dependency"),
            );
            return false;
        }
        if let Some(target) = self.by_id.get(id) {
            self.diags.push(
                Diagnostic::error(
                    span,
                    format!(
                        "step `{me}` refers to `{id}` (line {}), which has not finished when `{me}` runs",
                        target.id.span.start.line
                    ),
                )
                .with_hint("a step may only refer to steps of earlier stages or earlier steps of a sequential stage"),
            );
            return false;
        }
        let suggestion = if self.suggestions_left > 0 {
            self.suggestions_left -= 1;
            suggest(id, self.ids.iter().copied())
        } else {
            None
        };
        let msg = match suggestion {
            Some(s) => format!("unknown step `{id}`, did you mean `{s}`?"),
            None => format!("unknown step `{id}`"),
        };
        self.diags.push(Diagnostic::error(span, msg));
        false
    }

    fn auto_cycles(&mut self, stage: &Stage) {
        /// Cycles reported per stage at most (each report walks the current path).
        const MAX_REPORTS: usize = 20;
        let deps = stage.sibling_dependencies();
        // Iterative depth-first search (a long dependency chain must not overflow the
        // stack); each cycle is reported once, from the step where the search entered it.
        let mut state = vec![0u8; deps.len()]; // 0 = new, 1 = on the path, 2 = done
        let mut seen: HashSet<Vec<usize>> = HashSet::new();
        for root in 0..deps.len() {
            if state[root] != 0 {
                continue;
            }
            state[root] = 1;
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(&(node, next)) = path.last() {
                let Some(&d) = deps[node].get(next) else {
                    state[node] = 2;
                    path.pop();
                    continue;
                };
                if let Some(top) = path.last_mut() {
                    top.1 += 1;
                }
                match state[d] {
                    0 => {
                        state[d] = 1;
                        path.push((d, 0));
                    }
                    1 if seen.len() < MAX_REPORTS => {
                        let pos = path.iter().position(|(x, _)| *x == d).unwrap_or(0);
                        let cycle: Vec<usize> = path[pos..].iter().map(|(x, _)| *x).collect();
                        let mut key = cycle.clone();
                        key.sort_unstable();
                        if seen.insert(key) {
                            let mut names: Vec<&str> = cycle
                                .iter()
                                .map(|&i| stage.steps[i].id.value.as_str())
                                .collect();
                            names.push(names[0]);
                            self.diags.push(Diagnostic::error(
                                stage.steps[cycle[0]].id.span,
                                format!(
                                    "dependency cycle in `parallel: auto` stage `{}`: {}",
                                    stage.name.value,
                                    names.join(" -> ")
                                ),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Adds a step's id and the ids of its decision branches (they finish with it).
fn add_ids<'w>(step: &'w Step, set: &mut HashSet<&'w str>) {
    set.insert(step.id.value.as_str());
    for s in step.branch_steps() {
        add_ids(s, set);
    }
}

/// Compiles a trigger glob as the daemon does; the error names what is wrong with it.
pub fn check_trigger_glob(pattern: &str) -> Result<(), String> {
    let text = pattern.strip_prefix('!').unwrap_or(pattern);
    if text.is_empty() {
        return Err("the pattern is empty".into());
    }
    globset::GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|_| ())
        .map_err(|e| e.kind().to_string())
}
