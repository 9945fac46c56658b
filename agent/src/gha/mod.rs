//! `agent import-gha`: GitHub Actions workflow files converted into ours.
//!
//! The source is read with the language's line-precise YAML reader, so every note and
//! every part that could not be converted is reported at its `file:line:col`. Jobs become
//! stages in dependency order, steps become steps; known actions (checkout, setup-*,
//! toolchains, cache, artifacts) become native keys or built-in skills, and any other
//! action becomes a placeholder step that fails with the reason, so nothing is silently
//! skipped. Expressions are translated by [`expr`]; the YAML is written by [`emit`]. The
//! result is checked with our own validator before it is handed back.
//!
//! Pure: no file system, no processes (the command in `cli::import_gha` does the I/O).

pub(crate) mod emit;
pub(crate) mod expr;

use dsl::yaml::{Node, NodeKind, ScalarValue};
use emit::Out;
use expr::{Issue, Scope};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// One converted file.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// Our workflow file's text, or `None` when the source is not a workflow at all.
    pub yaml: Option<String>,
    /// What was converted and what was not.
    pub report: FileReport,
    /// The parts of the [`Selection`] this source has: `job ID`, `matrix AXIS` and
    /// `matrix AXIS=VALUE` (a selection naming nothing of any source is a usage error).
    pub matched: HashSet<String>,
}

/// What to convert of a workflow (`agent import-gha --job` and `--matrix`): the default
/// converts everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these jobs and the jobs they need (`needs`, transitively); empty: every job.
    pub jobs: Vec<String>,
    /// Matrix axes narrowed to these values, compared with each value as written (`3.11`,
    /// `20`, `ubuntu-latest`). `include` and `exclude` entries that set the axis to another
    /// value are dropped too; a job whose axis keeps no value is left out.
    pub matrix: Vec<(String, Vec<String>)>,
}

impl Selection {
    fn axis(&self, name: &str) -> Option<&[String]> {
        self.matrix
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The compatibility report of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The source file as named on the command line.
    pub source: String,
    /// Our workflow's name (the file stem).
    pub workflow: String,
    /// Every job and step converted, with no error.
    pub converted: bool,
    /// The output passed our validator.
    pub valid: bool,
    pub jobs: Vec<JobReport>,
    pub diagnostics: Vec<Diag>,
}

/// One job of the report.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub id: String,
    pub converted: bool,
    pub steps: Vec<StepReport>,
}

/// One step of the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based position in the job.
    pub index: usize,
    pub name: String,
    /// Our step id, when the step became one.
    pub id: Option<String>,
    pub converted: bool,
}

/// A note or an error at a place of the source.
#[derive(Debug, Clone, Serialize)]
pub struct Diag {
    pub line: usize,
    pub column: usize,
    /// `error` (not converted) or `note` (converted, with a difference worth knowing).
    pub severity: &'static str,
    pub message: String,
    pub job: Option<String>,
    pub step: Option<usize>,
}

impl Diag {
    /// `FILE:LINE:COL: severity: message`.
    pub fn render(&self, file: &str) -> String {
        format!(
            "{file}:{}:{}: {}: {}",
            self.line, self.column, self.severity, self.message
        )
    }
}

/// The GitHub variables given to converted steps, from ours (workflow `env:` entries,
/// added for the names the source mentions).
const GITHUB_VARIABLES: &[(&str, &str)] = &[
    ("GITHUB_SHA", "${{ env('AGENT_SHA') }}"),
    ("GITHUB_REF", "${{ env('AGENT_REF') }}"),
    ("GITHUB_REF_NAME", "${{ env('AGENT_BRANCH') }}"),
    ("GITHUB_HEAD_REF", "${{ env('AGENT_BRANCH') }}"),
    ("GITHUB_REPOSITORY", "${{ env('AGENT_REPO_FULL_NAME') }}"),
    ("GITHUB_WORKSPACE", "${{ env('AGENT_WORKSPACE') }}"),
    ("GITHUB_RUN_ID", "${{ env('AGENT_RUN_ID') }}"),
    ("GITHUB_RUN_NUMBER", "${{ env('AGENT_RUN_ID') }}"),
    ("GITHUB_EVENT_NAME", "${{ env('AGENT_EVENT') }}"),
    ("GITHUB_WORKFLOW", "${{ env('AGENT_WORKFLOW') }}"),
    ("GITHUB_SERVER_URL", "https://github.com"),
    ("GITHUB_STEP_SUMMARY", "/dev/null"),
    ("RUNNER_TEMP", "${{ env('AGENT_TEMP') }}"),
    ("RUNNER_OS", "Linux"),
    ("RUNNER_ARCH", "X64"),
];

/// Per-step files renamed in scripts: GitHub's name, ours.
const SCRIPT_RENAMES: &[(&str, &str)] = &[
    ("GITHUB_OUTPUT", "AGENT_OUTPUT"),
    ("GITHUB_ENV", "AGENT_ENV"),
    ("GITHUB_PATH", "AGENT_PATH"),
];

/// Built-in skills for setup actions: action, skill, version input.
const SETUP_ACTIONS: &[(&str, &str, &str)] = &[
    ("actions/setup-python", "setup-python", "python-version"),
    ("actions/setup-node", "setup-node", "node-version"),
    ("actions/setup-go", "setup-go", "go-version"),
    ("actions/setup-java", "setup-java", "java-version"),
];

/// Images that run as host programs when used as services.
const KNOWN_SERVICES: &[&str] = &["postgres", "redis", "mysql", "mariadb"];

/// Converts one GitHub Actions workflow. `source` names the file in diagnostics and in the
/// output's header; `stem` becomes our workflow's name.
pub fn convert(source: &str, text: &str, stem: &str) -> Conversion {
    convert_selected(source, text, stem, &Selection::default())
}

/// [`convert`] of the jobs and matrix values `selection` keeps; what it leaves out is
/// listed as notes.
pub fn convert_selected(source: &str, text: &str, stem: &str, selection: &Selection) -> Conversion {
    let mut cv = Cv::new(stem);
    cv.selection = selection.clone();
    // GitHub reads a closing `]` or `}` on a line of its own at the indentation of the key
    // that opened it; strict YAML does not. Such a source is read again with those lines
    // indented as the line before them (line numbers unchanged).
    let mut parsed = dsl::yaml::parse_str(text);
    if parsed.is_err()
        && let Some((lenient, first)) = indent_closing_brackets(text)
        && let Ok(again) = dsl::yaml::parse_str(&lenient)
    {
        cv.push_at(
            first,
            1,
            false,
            "a closing bracket less indented than YAML allows is read as GitHub reads it",
        );
        parsed = Ok(again);
    }
    let yaml = match parsed {
        Err(diags) => {
            for d in diags {
                cv.push_at(d.span.start.line, d.span.start.column, true, d.message);
            }
            None
        }
        Ok(parsed) => {
            for d in parsed.diagnostics {
                cv.push_at(d.span.start.line, d.span.start.column, true, d.message);
            }
            cv.workflow(&parsed.root, text)
        }
    };
    let mut yaml = yaml.map(|doc| cv.finish(source, &doc));
    let mut valid = false;
    if let Some(text) = &yaml {
        match dsl::parse_str(&format!("{stem}.yaml"), text) {
            Ok(_) => valid = true,
            Err(diags) => {
                for d in diags.iter().filter(|d| d.is_error()) {
                    cv.push_at(
                        1,
                        1,
                        true,
                        format!(
                            "the converted file does not validate: {}:{}: {}",
                            d.span.start.line, d.span.start.column, d.message
                        ),
                    );
                }
                // The header lists the problems too.
                if let Some(doc) = &cv.doc {
                    yaml = Some(cv.finish(source, &doc.clone()));
                }
            }
        }
    }
    let report = cv.report(source, valid);
    Conversion {
        yaml,
        report,
        matched: cv.matched,
    }
}

struct JobInfo {
    id: String,
    steps: Vec<(usize, String, Option<String>)>,
}

struct Cv {
    stem: String,
    diags: Vec<Diag>,
    job: Option<String>,
    step: Option<usize>,
    checkout: Vec<(String, Out)>,
    inputs: HashMap<String, String>,
    job_outputs: HashMap<String, HashMap<String, String>>,
    /// Uploaded so far: (our name, the source's name with `*` for expressions, step id).
    artifacts: Vec<(String, String, String)>,
    ids: HashSet<String>,
    jobs: Vec<JobInfo>,
    doc: Option<Out>,
    pending_artifact: Option<(String, String)>,
    artifact_count: usize,
    noted: HashSet<String>,
    selection: Selection,
    matched: HashSet<String>,
}

/// `text` with each line that holds only closing brackets (`]`, `}`, a comma, a comment)
/// indented at least as the line before it, and the first such line changed (1-based);
/// `None` when no line changes.
fn indent_closing_brackets(text: &str) -> Option<(String, usize)> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut first = None;
    let mut previous = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        let code = body.split(" #").next().unwrap_or_default().trim_end();
        let closing = !code.is_empty()
            && code.starts_with([']', '}'])
            && code.chars().all(|c| matches!(c, ']' | '}' | ',' | ' '));
        if closing && indent < previous {
            out.push_str(&" ".repeat(previous));
            out.push_str(body);
            first.get_or_insert(i + 1);
            continue;
        }
        out.push_str(line);
        if !body.trim().is_empty() && !body.starts_with('#') {
            previous = indent;
        }
    }
    first.map(|f| (out, f))
}

fn map(node: &Node) -> &[(Node, Node)] {
    match &node.kind {
        NodeKind::Map(m) => m,
        _ => &[],
    }
}

fn text(node: &Node) -> Option<String> {
    match &node.kind {
        NodeKind::Scalar(s) if s.value != ScalarValue::Null => Some(s.text.clone()),
        _ => None,
    }
}

fn items(node: &Node) -> Vec<&Node> {
    match &node.kind {
        NodeKind::Seq(s) => s.iter().collect(),
        NodeKind::Scalar(s) if s.value == ScalarValue::Null => Vec::new(),
        _ => vec![node],
    }
}

fn truthy(node: &Node) -> Option<bool> {
    match &node.kind {
        NodeKind::Scalar(s) => match &s.value {
            ScalarValue::Bool(b) => Some(*b),
            ScalarValue::Str => match s.text.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// `a-z0-9-` words of a text, for step ids.
fn slug(s: &str) -> String {
    let s: String = expr::template_parts(s)
        .into_iter()
        .filter(|(e, _)| !e)
        .map(|(_, t)| t)
        .collect();
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    if out.len() > 30 {
        // At most 30 characters, cut at a word's end when there is one.
        let cut = out[..=30].rfind('-').filter(|&i| i >= 10).unwrap_or(30);
        out.truncate(cut);
    }
    out
}

/// A plain name of ours (letters, digits, `_`, `-`, `.`) for an artifact name.
fn plain_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_matches(['-', '.']).to_string()
}

/// Single-quotes a text for a shell script.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Replaces whole words `from` by `to` in a script.
fn rename_word(script: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(i) = rest.find(from) {
        let prev = rest[..i].chars().last().or_else(|| out.chars().last());
        let before_ok = !prev.is_some_and(is_word);
        let after_ok = !rest[i + from.len()..].chars().next().is_some_and(is_word);
        out.push_str(&rest[..i]);
        if before_ok && after_ok {
            out.push_str(to);
        } else {
            out.push_str(from);
        }
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

impl Cv {
    fn new(stem: &str) -> Cv {
        Cv {
            stem: stem.to_string(),
            diags: Vec::new(),
            job: None,
            step: None,
            checkout: Vec::new(),
            inputs: HashMap::new(),
            job_outputs: HashMap::new(),
            artifacts: Vec::new(),
            ids: HashSet::new(),
            jobs: Vec::new(),
            doc: None,
            pending_artifact: None,
            artifact_count: 0,
            noted: HashSet::new(),
            selection: Selection::default(),
            matched: HashSet::new(),
        }
    }

    fn push_at(&mut self, line: usize, column: usize, error: bool, message: impl Into<String>) {
        self.diags.push(Diag {
            line,
            column,
            severity: if error { "error" } else { "note" },
            message: message.into(),
            job: self.job.clone(),
            step: self.step,
        });
    }

    fn at(&mut self, node: &Node, error: bool, message: impl Into<String>) {
        self.push_at(node.span.start.line, node.span.start.column, error, message);
    }

    fn error(&mut self, node: &Node, message: impl Into<String>) {
        self.at(node, true, message);
    }

    fn note(&mut self, node: &Node, message: impl Into<String>) {
        self.at(node, false, message);
    }

    /// A note given once per file.
    fn note_once(&mut self, node: &Node, key: &str, message: impl Into<String>) {
        if self.noted.insert(key.to_string()) {
            let (job, step) = (self.job.take(), self.step.take());
            self.note(node, message);
            self.job = job;
            self.step = step;
        }
    }

    fn issues(&mut self, node: &Node, issues: Vec<Issue>) {
        for i in issues {
            self.at(node, i.error, i.message);
        }
    }

    fn scope(&self) -> Scope {
        Scope {
            inputs: self.inputs.clone(),
            job_outputs: self.job_outputs.clone(),
            job: self.job.clone().unwrap_or_default(),
            ..Scope::default()
        }
    }

    /// A string with `${{ }}` translated.
    fn tmpl(&mut self, node: &Node, s: &str, scope: &Scope) -> String {
        let mut issues = Vec::new();
        let out = expr::translate_template(s, scope, &mut issues);
        self.issues(node, issues);
        out
    }

    /// A condition (`if:`) as our expression text (without `${{ }}`).
    fn cond(&mut self, node: &Node, scope: &Scope) -> Option<String> {
        let s = match &node.kind {
            NodeKind::Scalar(s) => match s.value {
                ScalarValue::Bool(b) => return Some(b.to_string()),
                ScalarValue::Int(_) | ScalarValue::Float(_) => return Some(s.text.clone()),
                ScalarValue::Null => return None,
                ScalarValue::Str => s.text.trim().to_string(),
            },
            _ => {
                self.error(node, "`if` must be an expression");
                return None;
            }
        };
        let mut issues = Vec::new();
        let parts = expr::template_parts(&s);
        let out = match parts.as_slice() {
            [(true, e)] => expr::translate(e, scope, &mut issues),
            _ if s.contains("${{") => expr::template_as_expr(&s, scope, &mut issues),
            _ => expr::translate(&s, scope, &mut issues),
        };
        self.issues(node, issues);
        Some(out)
    }

    /// Any YAML value, strings translated.
    fn value(&mut self, node: &Node, scope: &Scope) -> Out {
        match &node.kind {
            NodeKind::Scalar(s) => match &s.value {
                ScalarValue::Null => Out::Null,
                ScalarValue::Bool(b) => Out::Bool(*b),
                ScalarValue::Int(i) => Out::Int(*i),
                ScalarValue::Float(f) => Out::Float(*f),
                ScalarValue::Str => Out::Str(self.tmpl(node, &s.text, scope)),
            },
            NodeKind::Seq(items) => Out::Seq(items.iter().map(|i| self.value(i, scope)).collect()),
            NodeKind::Map(entries) => Out::Map(
                entries
                    .iter()
                    .map(|(k, v)| (text(k).unwrap_or_default(), self.value(v, scope)))
                    .collect(),
            ),
        }
    }

    /// An `env:` mapping: values as text (null as empty), names checked.
    fn env(&mut self, node: &Node, scope: &Scope) -> Out {
        let mut out = Vec::new();
        if !matches!(node.kind, NodeKind::Map(_)) {
            if let Some(s) = text(node) {
                self.error(
                    node,
                    format!("`env` as one expression (`{s}`) has no equivalent here"),
                );
            }
            return Out::Map(out);
        }
        for (k, v) in map(node) {
            let name = text(k).unwrap_or_default();
            let valid = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.error(k, format!("environment name `{name}` is not valid here"));
                continue;
            }
            let value = match &v.kind {
                NodeKind::Scalar(s) => match s.value {
                    ScalarValue::Null => Out::str(""),
                    ScalarValue::Str => Out::Str(self.tmpl(v, &s.text, scope)),
                    _ => Out::Str(s.text.clone()),
                },
                _ => {
                    self.error(
                        v,
                        format!("`{name}`: an environment value must be a scalar"),
                    );
                    continue;
                }
            };
            out.push((name, value));
        }
        Out::Map(out)
    }

    fn new_id(&mut self, job: &str, base: &str) -> String {
        let mut s = slug(base);
        if s.is_empty() {
            s = "step".into();
        }
        if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            s = format!("s-{s}");
        }
        let mut id = s.clone();
        if self.ids.contains(&id) {
            id = format!("{}-{s}", slug(job));
        }
        let mut n = 2;
        let base_id = id.clone();
        while self.ids.contains(&id) {
            id = format!("{base_id}-{n}");
            n += 1;
        }
        self.ids.insert(id.clone());
        id
    }

    fn workflow(&mut self, root: &Node, source_text: &str) -> Option<Out> {
        let NodeKind::Map(_) = root.kind else {
            self.error(
                root,
                "not a GitHub Actions workflow: the file is not a mapping",
            );
            return None;
        };
        let Some(jobs) = root.get("jobs") else {
            self.error(root, "not a GitHub Actions workflow: no `jobs`");
            return None;
        };
        let mut wf: Vec<(String, Out)> = vec![("name".into(), Out::str(self.stem.clone()))];
        if let Some(name) = root.get("name").and_then(text) {
            wf.push((
                "description".into(),
                Out::str(format!("{name} (from GitHub Actions)")),
            ));
        }
        for (k, _) in map(root) {
            let key = text(k).unwrap_or_default();
            match key.as_str() {
                "name" | "on" | "jobs" | "env" | "defaults" | "concurrency" | "run-name" => {}
                "permissions" => self.note(k, "`permissions` dropped: steps run with the agent's rights and the secrets it is given"),
                other => self.note(k, format!("`{other}` dropped: it has no equivalent here")),
            }
        }
        let (on, params, call_outputs) = match root.get("on") {
            Some(on) => self.triggers(on),
            None => (None, Vec::new(), None),
        };
        if let Some(on) = on {
            wf.push(("on".into(), on));
        }
        if !params.is_empty() {
            wf.push(("parameters".into(), Out::Seq(params)));
        }
        let scope = self.scope();
        let mut env = match root.get("env") {
            Some(e) => self.env(e, &scope),
            None => Out::Map(Vec::new()),
        };
        if let Out::Map(entries) = &mut env {
            for (name, value) in GITHUB_VARIABLES {
                let mentioned = source_text.match_indices(name).any(|(i, _)| {
                    let after = source_text[i + name.len()..].chars().next();
                    let before = source_text[..i].chars().last();
                    !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if mentioned && !entries.iter().any(|(k, _)| k == name) {
                    entries.push((name.to_string(), Out::str(*value)));
                    if *name == "GITHUB_STEP_SUMMARY"
                        && let Some(at) = source_text.find(name)
                    {
                        let before = &source_text[..at];
                        let line = before.matches('\n').count() + 1;
                        let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
                            .chars()
                            .count()
                            + 1;
                        let (job, step) = (self.job.take(), self.step.take());
                        self.push_at(
                            line,
                            column,
                            false,
                            "step summaries are not kept here: `GITHUB_STEP_SUMMARY` is /dev/null",
                        );
                        self.job = job;
                        self.step = step;
                    }
                }
            }
        }
        let defaults = root.get("defaults").and_then(|d| d.get("run")).cloned();
        if let Some(Out::Map(m)) = Some(&env)
            && !m.is_empty()
        {
            wf.push(("env".into(), env.clone()));
        }
        let concurrency = root.get("concurrency").and_then(|c| self.concurrency(c));
        let stages = self.jobs(jobs, defaults.as_ref());
        if !self.checkout.is_empty() {
            wf.push(("checkout".into(), Out::Map(self.checkout.clone())));
        }
        if let Some(c) = concurrency {
            wf.push(("concurrency".into(), c));
        }
        wf.push(("stages".into(), Out::Seq(stages)));
        if let Some(outputs) = call_outputs {
            let mut outs = Vec::new();
            let scope = self.scope();
            for (k, v) in map(&outputs) {
                let name = text(k).unwrap_or_default();
                let Some(value) = v.get("value") else {
                    self.error(v, format!("output `{name}` has no `value`"));
                    continue;
                };
                let s = text(value).unwrap_or_default();
                let mut issues = Vec::new();
                let e = expr::template_as_expr(&s, &scope, &mut issues);
                self.issues(value, issues);
                outs.push((name, Out::Str(format!("${{{{ {e} }}}}"))));
            }
            if !outs.is_empty() {
                wf.push(("outputs".into(), Out::Map(outs)));
            }
        }
        let doc = Out::Map(vec![("workflow".into(), Out::Map(wf))]);
        self.doc = Some(doc.clone());
        Some(doc)
    }

    fn finish(&self, source: &str, doc: &Out) -> String {
        let mut head = format!(
            "# Converted by `agent import-gha` from {source}.\n# Review the notes below; `agent validate` checks this file.\n"
        );
        let mut diags: Vec<&Diag> = self.diags.iter().collect();
        diags.sort_by_key(|d| (d.line, d.column));
        if !diags.is_empty() {
            head.push_str("#\n");
        }
        for d in diags {
            let line = d.render(source).replace('\n', " ");
            head.push_str(&format!("# {line}\n"));
        }
        head + &emit::render(doc)
    }

    fn report(&self, source: &str, valid: bool) -> FileReport {
        let err_at = |job: &str, step: Option<usize>| {
            self.diags.iter().any(|d| {
                d.severity == "error"
                    && d.job.as_deref() == Some(job)
                    && (step.is_none() || d.step == step)
            })
        };
        let jobs = self
            .jobs
            .iter()
            .map(|j| JobReport {
                id: j.id.clone(),
                converted: !err_at(&j.id, None),
                steps: j
                    .steps
                    .iter()
                    .map(|(index, name, id)| StepReport {
                        index: *index,
                        name: name.clone(),
                        id: id.clone(),
                        converted: !err_at(&j.id, Some(*index)),
                    })
                    .collect(),
            })
            .collect();
        let mut diagnostics = self.diags.clone();
        diagnostics.sort_by_key(|d| (d.line, d.column));
        FileReport {
            source: source.to_string(),
            workflow: self.stem.clone(),
            converted: !self.diags.iter().any(|d| d.severity == "error"),
            valid,
            jobs,
            diagnostics,
        }
    }

    // ---- triggers ------------------------------------------------------------------------

    fn triggers(&mut self, on: &Node) -> (Option<Out>, Vec<Out>, Option<Node>) {
        let events: Vec<(String, &Node, Option<&Node>)> = match &on.kind {
            NodeKind::Map(m) => m
                .iter()
                .map(|(k, v)| (text(k).unwrap_or_default(), k, Some(v)))
                .collect(),
            _ => items(on)
                .into_iter()
                .map(|n| (text(n).unwrap_or_default(), n, None))
                .collect(),
        };
        let mut push: Option<Out> = None;
        let mut pr: Option<(&Node, Option<&Node>)> = None;
        let mut schedule = Vec::new();
        let mut manual = false;
        let mut params: Vec<Out> = Vec::new();
        let mut outputs = None;
        for (event, key, cfg) in events {
            match event.as_str() {
                "push" => push = self.push_filter(key, cfg, "push"),
                "pull_request" | "pull_request_target" => pr = Some((key, cfg)),
                "schedule" => {
                    for entry in cfg.map(items).unwrap_or_default() {
                        match entry.get("cron").and_then(text) {
                            Some(c) => schedule.push(Out::map(vec![("cron", Out::str(c))])),
                            None => self.error(entry, "a schedule entry without `cron`"),
                        }
                    }
                }
                "workflow_dispatch" => {
                    manual = true;
                    if let Some(inputs) = cfg.and_then(|c| c.get("inputs")) {
                        self.inputs_to_params(inputs, &mut params);
                    }
                }
                "workflow_call" => {
                    self.note(
                        key,
                        "`workflow_call`: other workflows call this one with a `workflow:` step; its inputs are parameters",
                    );
                    if let Some(c) = cfg {
                        if let Some(inputs) = c.get("inputs") {
                            self.inputs_to_params(inputs, &mut params);
                        }
                        outputs = c.get("outputs").cloned();
                        if let Some(s) = c.get("secrets") {
                            self.note(s, "`secrets` of a called workflow come from the agent's configured secrets");
                        }
                    }
                }
                other => self.note(
                    key,
                    format!("event `{other}` has no equivalent here; dropped (`agent trigger` runs the workflow by hand)"),
                ),
            }
        }
        let dsl_has_pr = dsl::lower::OBJECTS
            .iter()
            .any(|(n, keys)| *n == "TriggersDef" && keys.contains(&"pull_request"));
        let mut pr_out = None;
        if let Some((key, cfg)) = pr {
            if dsl_has_pr {
                pr_out = self.push_filter(key, cfg, "pull_request");
            } else if push.is_some() {
                self.note(
                    key,
                    "`pull_request` has no equivalent here: a pull request's head branch runs on its pushes (the `push` trigger)",
                );
            } else {
                self.note(
                    key,
                    "`pull_request` has no equivalent here: it becomes a push trigger of every branch (a pull request's head branch runs on its pushes)",
                );
                let mut p = Vec::new();
                if let Some(paths) = cfg.and_then(|c| c.get("paths")) {
                    p.push(("paths".to_string(), self.string_list(paths)));
                }
                push = Some(Out::Map(p));
            }
        }
        let mut on_out = Vec::new();
        if let Some(p) = push {
            on_out.push(("push".to_string(), p));
        }
        if let Some(p) = pr_out {
            on_out.push(("pull_request".to_string(), p));
        }
        if !schedule.is_empty() {
            on_out.push(("schedule".to_string(), Out::Seq(schedule)));
        }
        if manual {
            on_out.push(("manual".to_string(), Out::Bool(true)));
        }
        let on_out = if on_out.is_empty() {
            None
        } else {
            Some(Out::Map(on_out))
        };
        (on_out, params, outputs)
    }

    fn string_list(&mut self, node: &Node) -> Out {
        Out::Seq(
            items(node)
                .into_iter()
                .filter_map(|n| text(n).map(Out::Str))
                .collect(),
        )
    }

    fn push_filter(&mut self, key: &Node, cfg: Option<&Node>, what: &str) -> Option<Out> {
        let mut out = Vec::new();
        let Some(cfg) = cfg else {
            return Some(Out::Map(out));
        };
        let has_branches = cfg.get("branches").is_some();
        for (k, v) in map(cfg) {
            let name = text(k).unwrap_or_default();
            match name.as_str() {
                "branches" => out.push(("branches".to_string(), self.string_list(v))),
                "paths" => out.push(("paths".to_string(), self.string_list(v))),
                "tags" | "tags-ignore" if !has_branches => {
                    self.note(
                        k,
                        format!("`{what}` of tags has no equivalent here: the trigger is dropped (run it with `agent trigger`)"),
                    );
                    return None;
                }
                "types" => self.note(k, format!("`{what}.types` dropped")),
                other => self.note(
                    k,
                    format!("`{what}.{other}` has no equivalent here; dropped (the workflow runs on more changes)"),
                ),
            }
        }
        let _ = key;
        Some(Out::Map(out))
    }

    fn inputs_to_params(&mut self, inputs: &Node, params: &mut Vec<Out>) {
        for (k, v) in map(inputs) {
            let gh = text(k).unwrap_or_default();
            let name = expr::param_name(&gh);
            if self.inputs.contains_key(&gh) {
                continue;
            }
            if name != gh {
                self.note(
                    k,
                    format!("input `{gh}` is the parameter `{name}` (parameter names are letters, digits and `_`)"),
                );
            }
            self.inputs.insert(gh.clone(), name.clone());
            let ty = v
                .get("type")
                .and_then(text)
                .unwrap_or_else(|| "string".into());
            let (ty, options) = match ty.as_str() {
                "boolean" => ("boolean", None),
                "number" => ("number", None),
                "choice" => ("string", v.get("options")),
                "environment" | "string" => ("string", None),
                other => {
                    self.note(v, format!("input type `{other}` is read as a string"));
                    ("string", None)
                }
            };
            let mut p = vec![
                ("name".to_string(), Out::str(name)),
                ("type".to_string(), Out::str(ty)),
            ];
            let required = v.get("required").and_then(truthy).unwrap_or(false);
            if let Some(d) = v.get("default").filter(|d| !d.is_null()) {
                let value = match (ty, &d.kind) {
                    ("boolean", _) => truthy(d).map(Out::Bool),
                    ("number", NodeKind::Scalar(s)) => match s.value {
                        ScalarValue::Int(i) => Some(Out::Int(i)),
                        ScalarValue::Float(f) => Some(Out::Float(f)),
                        _ => s.text.parse::<f64>().ok().map(Out::Float),
                    },
                    (_, NodeKind::Scalar(s)) => Some(Out::Str(s.text.clone())),
                    _ => None,
                };
                match value {
                    Some(v) => p.push(("default".to_string(), v)),
                    None => self.note(d, "this default does not fit the input's type; dropped"),
                }
            } else if required {
                p.push(("required".to_string(), Out::Bool(true)));
            }
            if let Some(opts) = options {
                p.push(("enum".to_string(), self.string_list(opts)));
            }
            if let Some(desc) = v.get("description").and_then(text) {
                p.push(("description".to_string(), Out::str(desc.trim().to_string())));
            }
            params.push(Out::Map(p));
        }
    }

    fn concurrency(&mut self, node: &Node) -> Option<Out> {
        let scope = self.scope();
        let (group, cancel) = match &node.kind {
            NodeKind::Map(_) => (node.get("group"), node.get("cancel-in-progress")),
            _ => (Some(node), None),
        };
        let mut out = Vec::new();
        if let Some(g) = group.and_then(|g| text(g).map(|t| (g, t))) {
            let t = self.tmpl(g.0, &g.1, &scope);
            out.push(("group".to_string(), Out::Str(t)));
        }
        let overlap = match cancel {
            None => "queue",
            Some(c) => match truthy(c) {
                Some(true) => "cancel_previous",
                Some(false) => "queue",
                None => {
                    self.error(
                        c,
                        "`cancel-in-progress` as an expression has no equivalent here (overlap is fixed)",
                    );
                    "queue"
                }
            },
        };
        out.push(("overlap".to_string(), Out::str(overlap)));
        Some(Out::Map(out))
    }

    // ---- jobs ----------------------------------------------------------------------------

    fn jobs(&mut self, jobs: &Node, defaults: Option<&Node>) -> Vec<Out> {
        let list: Vec<(String, &Node, &Node)> = map(jobs)
            .iter()
            .map(|(k, v)| (text(k).unwrap_or_default(), k, v))
            .collect();
        if list.is_empty() {
            self.error(jobs, "`jobs` has no job");
        }
        let list = self.select_jobs(list);
        let ids: Vec<&str> = list.iter().map(|(id, _, _)| id.as_str()).collect();
        let needs_of = |v: &Node| -> Vec<String> {
            v.get("needs")
                .map(|n| items(n).into_iter().filter_map(text).collect())
                .unwrap_or_default()
        };
        // Dependency order, file order among ready jobs.
        let mut done: Vec<usize> = Vec::new();
        let mut placed = vec![false; list.len()];
        for (_, _, v) in &list {
            for n in needs_of(v) {
                if !ids.contains(&n.as_str()) {
                    let node = v.get("needs").unwrap_or(v);
                    self.error(
                        node,
                        format!("`needs` names `{n}`, which is not a job of this workflow"),
                    );
                }
            }
        }
        while done.len() < list.len() {
            let next = (0..list.len()).find(|&i| {
                !placed[i]
                    && needs_of(list[i].2).iter().all(|n| {
                        !ids.contains(&n.as_str()) || done.iter().any(|&d| list[d].0 == *n)
                    })
            });
            let i = match next {
                Some(i) => i,
                None => {
                    let i = (0..list.len()).find(|&i| !placed[i]).unwrap_or(0);
                    self.error(list[i].1, "jobs that need each other in a circle");
                    i
                }
            };
            placed[i] = true;
            done.push(i);
        }
        // Levels of the dependency graph: jobs of one level need none of each other.
        let mut level = vec![0usize; list.len()];
        for &i in &done {
            level[i] = needs_of(list[i].2)
                .iter()
                .filter_map(|n| done.iter().find(|&&d| list[d].0 == *n))
                .filter(|&&d| d != i)
                .map(|&d| level[d] + 1)
                .max()
                .unwrap_or(0);
        }
        let mut order = done.clone();
        order.sort_by_key(|&i| (level[i], done.iter().position(|&d| d == i)));
        let mut converted: Vec<(usize, String, Out)> = Vec::new();
        for &i in &order {
            let (id, key, node) = &list[i];
            self.job = Some(id.clone());
            self.step = None;
            if let Some(stage) = self.job(id, key, node, defaults) {
                converted.push((level[i], id.clone(), stage));
            }
            self.job = None;
        }
        let mut stages = Vec::new();
        let mut serial = Vec::new();
        let max_level = converted.iter().map(|c| c.0).max().unwrap_or(0);
        for l in 0..=max_level {
            let (mergeable, alone): (Vec<_>, Vec<_>) = converted
                .iter()
                .filter(|c| c.0 == l)
                .partition(|c| mergeable(&c.2));
            let mut level_stages = Vec::new();
            if mergeable.len() >= 2 {
                let ids: Vec<&str> = mergeable.iter().map(|c| c.1.as_str()).collect();
                level_stages.push(merge_stages(&ids, mergeable.iter().map(|c| &c.2)));
            } else {
                level_stages.extend(mergeable.iter().map(|c| c.2.clone()));
            }
            level_stages.extend(alone.iter().map(|c| c.2.clone()));
            if level_stages.len() > 1 {
                serial.extend(alone.iter().map(|c| c.1.clone()));
            }
            stages.extend(level_stages);
        }
        if !serial.is_empty() {
            self.note_once(
                jobs,
                "serial",
                if serial.len() == 1 {
                    format!(
                        "`{}` keeps a stage of its own (it has a matrix or services), so it runs after the jobs it does not need instead of beside them",
                        serial[0]
                    )
                } else {
                    format!(
                        "{} keep stages of their own (they have a matrix or services), so they run one after another instead of side by side",
                        serial.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                    )
                },
            );
        }
        stages
    }

    /// The jobs that `--job` and `--matrix` keep, with a note at each job left out.
    fn select_jobs<'a>(
        &mut self,
        list: Vec<(String, &'a Node, &'a Node)>,
    ) -> Vec<(String, &'a Node, &'a Node)> {
        let needs_of = |v: &Node| -> Vec<String> {
            v.get("needs")
                .map(|n| items(n).into_iter().filter_map(text).collect())
                .unwrap_or_default()
        };
        let index = |id: &str| list.iter().position(|(j, _, _)| j == id);
        let mut why: Vec<Option<String>> = vec![None; list.len()];
        let mut kept_for: Vec<Option<String>> = vec![None; list.len()];
        if !self.selection.jobs.is_empty() {
            let mut want: Vec<usize> = Vec::new();
            for j in &self.selection.jobs {
                if let Some(i) = index(j) {
                    self.matched.insert(format!("job {j}"));
                    if !want.contains(&i) {
                        want.push(i);
                    }
                }
            }
            let mut at = 0;
            while at < want.len() {
                let needer = want[at];
                for n in needs_of(list[needer].2) {
                    if let Some(i) = index(&n)
                        && !want.contains(&i)
                    {
                        want.push(i);
                        kept_for[i] = Some(list[needer].0.clone());
                    }
                }
                at += 1;
            }
            for (i, (id, _, _)) in list.iter().enumerate() {
                if !want.contains(&i) {
                    why[i] = Some(format!("job `{id}` left out: not selected by --job"));
                }
            }
        }
        for (i, (id, _, v)) in list.iter().enumerate() {
            let Some(m) = v.get("strategy").and_then(|s| s.get("matrix")) else {
                continue;
            };
            for (ak, av) in map(m) {
                let axis = text(ak).unwrap_or_default();
                let Some(values) = self.selection.axis(&axis).map(<[String]>::to_vec) else {
                    continue;
                };
                if axis == "include" || axis == "exclude" || !matches!(av.kind, NodeKind::Seq(_)) {
                    continue;
                }
                self.matched.insert(format!("matrix {axis}"));
                let mut any = false;
                for t in items(av).into_iter().filter_map(text) {
                    if values.contains(&t) {
                        self.matched.insert(format!("matrix {axis}={t}"));
                        any = true;
                    }
                }
                if !any && why[i].is_none() {
                    why[i] = Some(format!(
                        "job `{id}` left out: --matrix keeps no value of its axis `{axis}`"
                    ));
                }
            }
        }
        // A job that needs a job left out is left out too.
        loop {
            let mut changed = false;
            for i in 0..list.len() {
                if why[i].is_some() {
                    continue;
                }
                if let Some(n) = needs_of(list[i].2)
                    .into_iter()
                    .find(|n| index(n).is_some_and(|d| why[d].is_some()))
                {
                    why[i] = Some(format!(
                        "job `{}` left out: it needs `{n}`, which is left out",
                        list[i].0
                    ));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut kept = Vec::new();
        for (i, job) in list.into_iter().enumerate() {
            match &why[i] {
                Some(reason) => self.note(job.1, reason.clone()),
                None => {
                    if let Some(needer) = &kept_for[i] {
                        self.note(job.1, format!("job `{}` kept: `{needer}` needs it", job.0));
                    }
                    kept.push(job);
                }
            }
        }
        kept
    }

    /// A matrix axis's values, or its `include` / `exclude` entries, as `--matrix` narrows
    /// them (with a note at `key` when it does).
    fn narrowed(&mut self, key: &Node, name: &str, v: &Node, scope: &Scope) -> Option<Out> {
        if self.selection.matrix.is_empty() || !matches!(v.kind, NodeKind::Seq(_)) {
            return Some(self.value(v, scope));
        }
        let all = items(v);
        let kept: Vec<&Node> = if name == "include" || name == "exclude" {
            all.iter()
                .copied()
                .filter(|entry| {
                    map(entry).iter().all(|(k, val)| {
                        let axis = text(k).unwrap_or_default();
                        match (self.selection.axis(&axis), text(val)) {
                            (Some(values), Some(t)) => values.contains(&t),
                            _ => true,
                        }
                    })
                })
                .collect()
        } else {
            let Some(values) = self.selection.axis(name) else {
                return Some(self.value(v, scope));
            };
            all.iter()
                .copied()
                .filter(|i| text(i).is_some_and(|t| values.contains(&t)))
                .collect()
        };
        if kept.len() < all.len() {
            let show = |list: &[&Node]| {
                list.iter()
                    .map(|i| text(i).unwrap_or_else(|| "{...}".into()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let message = if name == "include" || name == "exclude" {
                format!(
                    "--matrix drops {} of the {} `{name}` entries (they set a value it leaves out)",
                    all.len() - kept.len(),
                    all.len()
                )
            } else {
                format!(
                    "matrix axis `{name}` narrowed by --matrix to {} (upstream: {})",
                    show(&kept),
                    show(&all)
                )
            };
            self.note(key, message);
        }
        if kept.is_empty() && (name == "include" || name == "exclude") {
            return None;
        }
        Some(Out::Seq(
            kept.into_iter().map(|i| self.value(i, scope)).collect(),
        ))
    }

    fn job(
        &mut self,
        id: &str,
        key: &Node,
        node: &Node,
        wf_defaults: Option<&Node>,
    ) -> Option<Out> {
        let mut info = JobInfo {
            id: id.to_string(),
            steps: Vec::new(),
        };
        let mut stage: Vec<(String, Out)> = vec![("name".into(), Out::str(id))];
        if !matches!(node.kind, NodeKind::Map(_)) {
            self.error(node, format!("job `{id}` is not a mapping"));
            self.jobs.push(info);
            return None;
        }
        let mut scope = self.scope();
        let mut job_when = None;
        let mut job_timeout = None;
        let mut job_continue = false;
        let mut job_defaults: Option<Node> = None;
        for (k, v) in map(node) {
            let name = text(k).unwrap_or_default();
            match name.as_str() {
                "runs-on" => self.note_once(
                    k,
                    "runs-on",
                    "`runs-on` dropped: every job runs on this host (as it is, with its installed tools)",
                ),
                "name" | "needs" | "steps" | "env" | "strategy" | "outputs" | "uses" | "with" | "secrets" | "services" => {}
                "permissions" => {}
                "if" => job_when = self.cond(v, &scope),
                "timeout-minutes" => job_timeout = Some(v.clone()),
                "continue-on-error" => match truthy(v) {
                    Some(b) => {
                        job_continue = b;
                        if b {
                            self.note(v, "`continue-on-error` of the job is on each of its steps");
                        }
                    }
                    None => self.error(v, "`continue-on-error` as an expression has no equivalent here"),
                },
                "defaults" => job_defaults = v.get("run").cloned(),
                "container" => self.error(k, "`container` has no equivalent here: the job's steps would run on this host, not in the image"),
                "environment" => self.note(k, "`environment` dropped: protection rules and environment secrets have no equivalent here"),
                "concurrency" => self.note(k, "a job's `concurrency` dropped: concurrency applies to whole runs here"),
                other => self.note(k, format!("`{other}` of a job dropped: it has no equivalent here")),
            }
        }
        let _ = key;
        if let Some(uses) = node.get("uses") {
            let step = self.call_job(id, uses, node, &scope, job_when.as_deref());
            info.steps
                .push((1, text(uses).unwrap_or_default(), step.1.clone()));
            stage.push(("steps".into(), Out::Seq(vec![step.0])));
            self.jobs.push(info);
            return Some(Out::Map(stage));
        }
        // Services first: steps may read their ports.
        let services = node.get("services").map(|s| self.services(s, &scope));
        if let Some(Out::Map(s)) = &services {
            scope.services = s.iter().map(|(k, _)| k.clone()).collect();
        }
        if let Some(env) = node.get("env") {
            let e = self.env(env, &scope);
            if matches!(&e, Out::Map(m) if !m.is_empty()) {
                stage.push(("env".into(), e));
            }
        }
        // `defaults.run` of the job wins key by key over the workflow's.
        let default = |key: &str| {
            job_defaults
                .as_ref()
                .and_then(|d| d.get(key))
                .or_else(|| wf_defaults.and_then(|d| d.get(key)))
                .cloned()
        };
        let default_shell = default("shell");
        if let Some(wd) = default("working-directory").as_ref()
            && let Some(t) = text(wd)
            && let Some(p) = self.workdir(wd, &t, &scope)
        {
            stage.push(("working_directory".into(), Out::Str(p)));
        }
        if let Some(strategy) = node.get("strategy")
            && let Some(m) = self.matrix(strategy, &scope)
        {
            match &m {
                Out::Map(entries) => {
                    let mut keys = Vec::new();
                    for (k, v) in entries {
                        match (k.as_str(), v) {
                            ("include", Out::Seq(list)) => {
                                for item in list {
                                    if let Out::Map(kv) = item {
                                        keys.extend(kv.iter().map(|(k, _)| k.clone()));
                                    }
                                }
                            }
                            ("include", _) => scope.dynamic_matrix = true,
                            ("exclude" | "fail_fast" | "max_parallel", _) => {}
                            _ => keys.push(k.clone()),
                        }
                    }
                    scope.matrix = Some(keys);
                }
                _ => scope.dynamic_matrix = true,
            }
            stage.push(("matrix".into(), m));
        }
        if let Some(Out::Map(s)) = services
            && !s.is_empty()
        {
            stage.push(("services".into(), Out::Map(s)));
        }
        let mut steps = Vec::new();
        let mut pending_cache: Option<(Node, Out)> = None;
        let step_nodes = node.get("steps").map(items).unwrap_or_default();
        if node.get("steps").is_none() {
            self.error(node, format!("job `{id}` has neither `steps` nor `uses`"));
        }
        for (i, s) in step_nodes.into_iter().enumerate() {
            self.step = Some(i + 1);
            let label = s
                .get("name")
                .and_then(text)
                .or_else(|| s.get("uses").and_then(text))
                .or_else(|| {
                    s.get("run").and_then(text).map(|r| {
                        r.lines()
                            .next()
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect()
                    })
                })
                .unwrap_or_else(|| format!("step {}", i + 1));
            let ctx = StepCtx {
                job: id,
                when: job_when.as_deref(),
                timeout: job_timeout.as_ref(),
                cont: job_continue,
                shell: default_shell.as_ref(),
            };
            let out = self.step_out(s, &ctx, &mut scope, &mut pending_cache);
            let our_id = match &out {
                Some(Out::Map(m)) => m
                    .iter()
                    .find(|(k, _)| k == "id")
                    .and_then(|(_, v)| match v {
                        Out::Str(s) => Some(s.clone()),
                        _ => None,
                    }),
                _ => None,
            };
            info.steps.push((i + 1, label, our_id));
            if let Some(mut o) = out {
                if let (Some((_, cache)), Out::Map(m)) = (pending_cache.take(), &mut o) {
                    m.push(("cache".into(), cache));
                }
                steps.push(o);
            }
        }
        self.step = None;
        if let Some((n, _)) = pending_cache.take() {
            self.note(&n, "`actions/cache` with no step after it: dropped");
        }
        if let Some(outputs) = node.get("outputs") {
            let mut outs = HashMap::new();
            for (k, v) in map(outputs) {
                let name = text(k).unwrap_or_default();
                let t = text(v).unwrap_or_default();
                let mut issues = Vec::new();
                let e = expr::template_as_expr(&t, &scope, &mut issues);
                self.issues(v, issues);
                outs.insert(name, e);
            }
            self.job_outputs.insert(id.to_string(), outs);
        }
        if steps.is_empty() {
            let sid = self.new_id(id, &format!("{id}-nothing"));
            steps.push(Out::map(vec![
                ("id", Out::Str(sid)),
                (
                    "name",
                    Out::str("nothing left to run (every step became a setting)"),
                ),
                ("run", Out::str("true")),
            ]));
        }
        stage.push(("steps".into(), Out::Seq(steps)));
        self.jobs.push(info);
        Some(Out::Map(stage))
    }

    fn call_job(
        &mut self,
        id: &str,
        uses: &Node,
        node: &Node,
        scope: &Scope,
        when: Option<&str>,
    ) -> (Out, Option<String>) {
        let target = text(uses).unwrap_or_default();
        let sid = self.new_id(id, id);
        self.step = Some(1);
        let local = target.strip_prefix("./.github/workflows/").map(|f| {
            f.trim_end_matches(".yml")
                .trim_end_matches(".yaml")
                .to_string()
        });
        let mut step = vec![("id".to_string(), Out::str(sid.clone()))];
        if let Some(w) = when {
            step.push(("when".into(), Out::Str(format!("${{{{ {w} }}}}"))));
        }
        match local {
            Some(stem) if !stem.contains('/') => {
                step.push(("workflow".into(), Out::Str(stem)));
                if let Some(with) = node.get("with") {
                    let mut params = Vec::new();
                    for (k, v) in map(with) {
                        let name = expr::param_name(&text(k).unwrap_or_default());
                        params.push((name, self.value(v, scope)));
                    }
                    step.push(("parameters".into(), Out::Map(params)));
                }
                if node.get("secrets").is_some() {
                    self.note(uses, "`secrets` of a call: the called workflow reads the agent's configured secrets");
                }
            }
            _ => {
                let msg = format!(
                    "reusable workflow `{target}` is not converted: only local ones (`./.github/workflows/…`) become `workflow:` steps"
                );
                self.error(uses, msg.clone());
                step.push(("name".into(), Out::Str(format!("not converted: {target}"))));
                step.push(("run".into(), Out::Str(placeholder(&msg))));
            }
        }
        self.step = None;
        (Out::Map(step), Some(sid))
    }

    fn workdir(&mut self, node: &Node, t: &str, scope: &Scope) -> Option<String> {
        if t.starts_with('/') || t.starts_with('~') {
            self.error(
                node,
                format!("working directory `{t}` is outside the workspace; dropped"),
            );
            return None;
        }
        let t = t.trim_start_matches("./");
        if t.is_empty() || t == "." {
            return None;
        }
        Some(self.tmpl(node, t, scope))
    }

    fn matrix(&mut self, strategy: &Node, scope: &Scope) -> Option<Out> {
        let mut out = Vec::new();
        if let Some(m) = strategy.get("matrix") {
            match &m.kind {
                NodeKind::Map(entries) => {
                    for (k, v) in entries {
                        let name = text(k).unwrap_or_default();
                        match name.as_str() {
                            "include" | "exclude" => {
                                if let Some(val) = self.narrowed(k, &name, v, scope) {
                                    out.push((name, val));
                                }
                            }
                            _ => {
                                let ok = name
                                    .chars()
                                    .next()
                                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                                    && name
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                                if !ok {
                                    self.error(
                                        k,
                                        format!("matrix axis name `{name}` is not valid here"),
                                    );
                                    continue;
                                }
                                if let Some(val) = self.narrowed(k, &name, v, scope) {
                                    out.push((name, val));
                                }
                            }
                        }
                    }
                }
                _ => {
                    if let Some(t) = text(m) {
                        let val = self.tmpl(m, &t, scope);
                        self.note(
                            m,
                            "a matrix from an expression is expanded when the stage starts",
                        );
                        return Some(Out::Str(val));
                    }
                }
            }
            if let Some((k, _)) = map(m).first() {
                self.note_once(
                    k,
                    "matrix",
                    "`strategy.matrix` is the stage's `matrix`: the job runs once per instance on this host (axes that chose a runner, such as `os`, are kept as values)",
                );
            }
        }
        if let Some(ff) = strategy.get("fail-fast") {
            match truthy(ff) {
                Some(b) => out.push(("fail_fast".into(), Out::Bool(b))),
                None => self.error(ff, "`fail-fast` as an expression has no equivalent here"),
            }
        }
        if let Some(mp) = strategy.get("max-parallel") {
            match mp.as_scalar().map(|s| &s.value) {
                Some(ScalarValue::Int(i)) if *i >= 1 => {
                    out.push(("max_parallel".into(), Out::Int(*i)))
                }
                _ => self.error(mp, "`max-parallel` must be a positive integer here"),
            }
        }
        let has_axes = out
            .iter()
            .any(|(k, _)| k != "fail_fast" && k != "max_parallel");
        if has_axes { Some(Out::Map(out)) } else { None }
    }

    fn services(&mut self, node: &Node, scope: &Scope) -> Out {
        let mut out = Vec::new();
        for (k, v) in map(node) {
            let name = text(k).unwrap_or_default();
            let image = v
                .get("image")
                .and_then(text)
                .or_else(|| text(v))
                .unwrap_or_default();
            let base = image
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .split([':', '@'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let valid_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_name {
                self.error(k, format!("service name `{name}` is not valid here"));
                continue;
            }
            let Some(program) = KNOWN_SERVICES.iter().find(|s| **s == base) else {
                self.error(
                    v.get("image").unwrap_or(v),
                    format!(
                        "service image `{image}` is not converted: only {} run as programs of this host",
                        KNOWN_SERVICES.join(", ")
                    ),
                );
                continue;
            };
            let port = format!("${{{{ services.{name}.port }}}}");
            let (run, ready) = match *program {
                "postgres" => (
                    POSTGRES_RUN.to_string(),
                    Out::map(vec![("run", Out::Str(format!("pg_isready -h 127.0.0.1 -p {port}")))]),
                ),
                "redis" => (
                    "exec redis-server --port \"$PORT\" --bind 127.0.0.1 --save '' --appendonly no\n".to_string(),
                    Out::map(vec![("tcp", Out::Str(port.clone()))]),
                ),
                _ => (
                    MYSQL_RUN.to_string(),
                    Out::map(vec![("run", Out::Str(format!("mysqladmin ping -h 127.0.0.1 -P {port} --silent")))]),
                ),
            };
            let mut svc = vec![("run".to_string(), Out::Str(run))];
            if let Some(env) = v.get("env") {
                let e = self.env(env, scope);
                if matches!(&e, Out::Map(m) if !m.is_empty()) {
                    svc.push(("env".into(), e));
                }
            }
            svc.push(("ready".into(), ready));
            if v.get("ports").is_some() || v.get("options").is_some() {
                self.note(
                    k,
                    format!("service `{name}` ({image}) runs as the host's `{program}` on a free port: read it as `${{{{ services.{name}.port }}}}` (also `job.services.{name}.ports[...]`); fixed ports and `options` are dropped"),
                );
            }
            out.push((name, Out::Map(svc)));
        }
        Out::Map(out)
    }

    // ---- steps ---------------------------------------------------------------------------

    fn step_out(
        &mut self,
        s: &Node,
        ctx: &StepCtx,
        scope: &mut Scope,
        pending_cache: &mut Option<(Node, Out)>,
    ) -> Option<Out> {
        if !matches!(s.kind, NodeKind::Map(_)) {
            self.error(s, "a step must be a mapping");
            return None;
        }
        let gh_id = s.get("id").and_then(text);
        for (k, _) in map(s) {
            let key = text(k).unwrap_or_default();
            if !matches!(
                key.as_str(),
                "id" | "name"
                    | "if"
                    | "uses"
                    | "with"
                    | "run"
                    | "shell"
                    | "working-directory"
                    | "env"
                    | "continue-on-error"
                    | "timeout-minutes"
            ) {
                self.note(
                    k,
                    format!("`{key}` of a step dropped: it has no equivalent here"),
                );
            }
        }
        let mut step: Vec<(String, Out)> = Vec::new();
        let mut body: Vec<(String, Out)> = Vec::new();
        let mut base = gh_id.clone();
        match (s.get("uses"), s.get("run")) {
            (Some(_), Some(r)) => {
                self.error(r, "a step with both `uses` and `run`");
                return None;
            }
            (None, None) => {
                self.error(s, "a step without `uses` or `run`");
                return None;
            }
            (None, Some(r)) => {
                let script = text(r).unwrap_or_default();
                let mut script = script;
                for (from, to) in SCRIPT_RENAMES {
                    script = rename_word(&script, from, to);
                }
                let script = env_refs_in_script(&script);
                let script = self.tmpl(r, &script, scope);
                body.push(("run".into(), Out::Str(script)));
                if let Some(shell) = s.get("shell").or(ctx.shell)
                    && let Some(sh) = self.shell(shell)
                {
                    body.push(("shell".into(), Out::Str(sh)));
                }
                if base.is_none() {
                    base = s.get("name").and_then(text).or_else(|| {
                        text(r).map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                    });
                }
            }
            (Some(u), None) => {
                let uses = text(u).unwrap_or_default();
                let action = uses
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if base.is_none() {
                    base = s
                        .get("name")
                        .and_then(text)
                        .or_else(|| action.rsplit('/').next().map(str::to_string));
                }
                match self.action(s, u, &uses, &action, scope, &mut body) {
                    ActionResult::Step => {}
                    ActionResult::Dropped(what) => {
                        if let Some(id) = &gh_id {
                            scope.dropped_steps.insert(id.clone(), what);
                        }
                        return None;
                    }
                    ActionResult::Cache(c) => {
                        if let Some(id) = &gh_id {
                            scope
                                .dropped_steps
                                .insert(id.clone(), "actions/cache".into());
                        }
                        *pending_cache = Some((u.clone(), c));
                        return None;
                    }
                }
            }
        }
        let id = self.new_id(ctx.job, base.as_deref().unwrap_or("step"));
        if let Some((name, raw)) = self.pending_artifact.take() {
            self.artifacts.push((name, raw, id.clone()));
        }
        step.push(("id".into(), Out::Str(id.clone())));
        if let Some(n) = s.get("name").and_then(text) {
            step.push(("name".into(), Out::Str(n)));
        }
        let own_when = s.get("if").and_then(|c| self.cond(c, scope));
        let when = match (ctx.when, own_when) {
            (Some(j), Some(o)) => Some(format!("({j}) && ({o})")),
            (Some(j), None) => Some(j.to_string()),
            (None, o) => o,
        };
        if let Some(w) = when {
            step.push(("when".into(), Out::Str(format!("${{{{ {w} }}}}"))));
        }
        step.extend(body);
        if let Some(wd) = s.get("working-directory")
            && let Some(t) = text(wd)
            && let Some(p) = self.workdir(wd, &t, scope)
        {
            step.push(("working_directory".into(), Out::Str(p)));
        }
        if let Some(env) = s.get("env") {
            let e = self.env(env, scope);
            if matches!(&e, Out::Map(m) if !m.is_empty()) {
                step.push(("env".into(), e));
            }
        }
        if let Some(t) = s.get("timeout-minutes").or(ctx.timeout) {
            match t.as_scalar().map(|x| &x.value) {
                Some(ScalarValue::Int(m)) if *m > 0 => {
                    step.push(("timeout".into(), Out::Str(format!("{m}m"))));
                }
                Some(ScalarValue::Float(m)) if *m > 0.0 => {
                    step.push(("timeout".into(), Out::Float(m * 60.0)));
                }
                _ => self.error(t, "`timeout-minutes` must be a positive number here"),
            }
        }
        let cont = match s.get("continue-on-error") {
            Some(c) => match truthy(c) {
                Some(b) => b,
                None => {
                    self.error(c, "`continue-on-error` as an expression has no equivalent here: a failure stops the run");
                    false
                }
            },
            None => ctx.cont,
        };
        if cont {
            step.push(("on_failure".into(), Out::str("continue")));
        }
        if let Some(gid) = gh_id {
            scope.steps.insert(gid, id);
        }
        Some(Out::Map(step))
    }

    fn shell(&mut self, node: &Node) -> Option<String> {
        let sh = text(node)?;
        let first = sh.split_whitespace().next().unwrap_or_default();
        match first {
            "bash" | "sh" | "python" | "pwsh" | "powershell" if !sh.contains(' ') => Some(sh),
            "cmd" => {
                self.error(node, "`shell: cmd` has no equivalent here (Windows only)");
                None
            }
            _ if sh.contains("{0}") => Some(sh),
            _ => {
                self.error(node, format!("`shell: {sh}` has no equivalent here"));
                None
            }
        }
    }

    fn action(
        &mut self,
        s: &Node,
        u: &Node,
        uses: &str,
        action: &str,
        scope: &Scope,
        body: &mut Vec<(String, Out)>,
    ) -> ActionResult {
        let with = s.get("with");
        let with_get = |k: &str| with.and_then(|w| w.get(k));
        let reference = uses.split_once('@').map(|x| x.1).unwrap_or_default();
        if action == "actions/checkout" {
            if let Some(r) = with_get("repository") {
                let msg = "`actions/checkout` of another repository is not converted: the workspace holds this repository only";
                self.error(r, msg);
                body.push(("run".into(), Out::Str(placeholder(msg))));
                return ActionResult::Step;
            }
            for (k, v) in with.map(map).unwrap_or_default() {
                let key = text(k).unwrap_or_default();
                match key.as_str() {
                    "fetch-depth" => match v.as_scalar().map(|x| &x.value) {
                        Some(ScalarValue::Int(0)) => self.set_checkout("depth", Out::str("full")),
                        Some(ScalarValue::Int(n)) if *n > 0 => self.set_checkout("depth", Out::Int(*n)),
                        _ => self.error(v, "`fetch-depth` must be a number here"),
                    },
                    "submodules" => match truthy(v).or_else(|| (text(v).as_deref() == Some("recursive")).then_some(true)) {
                        Some(b) => self.set_checkout("submodules", Out::Bool(b)),
                        None => self.error(v, "`submodules` must be true, false or recursive here"),
                    },
                    "fetch-tags" => {
                        if let Some(b) = truthy(v) {
                            self.set_checkout("tags", Out::Bool(b));
                        }
                    }
                    "path" => {
                        if let Some(p) = text(v) {
                            self.set_checkout("path", Out::Str(p));
                        }
                    }
                    "persist-credentials" | "clean" | "show-progress" | "lfs" => {}
                    other => self.note(k, format!("`actions/checkout` input `{other}` dropped: the workspace is a checkout of the run's commit")),
                }
            }
            self.note_once(
                u,
                "checkout",
                "`actions/checkout` is the workspace itself (a checkout of the run's commit); its options are the workflow's `checkout:`",
            );
            return ActionResult::Dropped("actions/checkout".into());
        }
        if let Some((_, skill, version_key)) = SETUP_ACTIONS.iter().find(|(a, _, _)| *a == action) {
            body.push(("skill".into(), Out::str(*skill)));
            let mut params = Vec::new();
            let mut dropped = Vec::new();
            for (k, v) in with.map(map).unwrap_or_default() {
                let key = text(k).unwrap_or_default();
                if key == *version_key {
                    params.push(("version".to_string(), self.value(v, scope)));
                } else if key.ends_with("-version-file") {
                    params.push(("version_file".to_string(), self.value(v, scope)));
                } else if key == "distribution" || key == "architecture" {
                    params.push((key, self.value(v, scope)));
                } else {
                    dropped.push(format!("`{key}`"));
                }
            }
            if !dropped.is_empty() {
                self.note(
                    u,
                    format!("`{action}` inputs dropped: {}", dropped.join(", ")),
                );
            }
            if !params.is_empty() {
                body.push(("parameters".into(), Out::Map(params)));
            }
            return ActionResult::Step;
        }
        if action == "dtolnay/rust-toolchain" {
            body.push(("skill".into(), Out::str("rust-toolchain")));
            let mut params = Vec::new();
            let (toolchain, component) = match reference {
                "clippy" => (Some("stable"), Some("clippy")),
                "miri" => (Some("nightly"), Some("miri")),
                "master" | "v1" | "" => (None, None),
                other => (Some(other), None),
            };
            match with_get("toolchain") {
                Some(t) => params.push(("toolchain".to_string(), self.value(t, scope))),
                None => match toolchain {
                    Some(t) => params.push(("toolchain".to_string(), Out::str(t))),
                    None => params.push(("toolchain".to_string(), Out::str("stable"))),
                },
            }
            let mut components: Vec<String> =
                component.map(|c| vec![c.to_string()]).unwrap_or_default();
            if let Some(c) = with_get("components").and_then(text) {
                components.extend(
                    c.split([',', ' '])
                        .filter(|x| !x.is_empty())
                        .map(str::to_string),
                );
            }
            if !components.is_empty() {
                params.push(("components".to_string(), Out::Str(components.join(","))));
            }
            if let Some(t) = with_get("targets").and_then(text) {
                params.push(("targets".to_string(), Out::Str(t)));
            }
            body.push(("parameters".into(), Out::Map(params)));
            return ActionResult::Step;
        }
        if action == "actions-rs/toolchain" {
            // The archived action most Rust workflows of its time use: `toolchain` (none:
            // the workspace's rust-toolchain file, as our skill without one), `target`,
            // `components`; `override` and `default` are what the skill does for the later
            // steps (RUSTUP_TOOLCHAIN).
            body.push(("skill".into(), Out::str("rust-toolchain")));
            let mut params = Vec::new();
            let mut dropped = Vec::new();
            for (k, v) in with.map(map).unwrap_or_default() {
                let key = text(k).unwrap_or_default();
                match key.as_str() {
                    "toolchain" => params.push(("toolchain".to_string(), self.value(v, scope))),
                    "target" => params.push(("targets".to_string(), self.value(v, scope))),
                    "components" => params.push(("components".to_string(), self.value(v, scope))),
                    "override" | "default" => {}
                    _ => dropped.push(format!("`{key}`")),
                }
            }
            if !dropped.is_empty() {
                self.note(
                    u,
                    format!("`{action}` inputs dropped: {}", dropped.join(", ")),
                );
            }
            if !params.is_empty() {
                body.push(("parameters".into(), Out::Map(params)));
            }
            return ActionResult::Step;
        }
        if action == "actions/cache" || action == "actions/cache/restore" {
            let mut cache = Vec::new();
            if let Some(k) = with_get("key").and_then(|k| text(k).map(|t| (k, t))) {
                let key = self.tmpl(k.0, &k.1, scope);
                cache.push(("key".to_string(), Out::Seq(vec![Out::Str(key)])));
            }
            let mut paths = Vec::new();
            if let Some(p) = with_get("path") {
                let all = text(p).unwrap_or_default();
                for line in all.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    if line.starts_with('~')
                        || line.starts_with('/')
                        || line.contains("${{")
                        || line.starts_with('!')
                        || line.split('/').any(|c| c == "..")
                    {
                        self.note(p, format!("cache path `{line}` dropped: cached paths are relative to the workspace"));
                    } else {
                        paths.push(Out::str(line.trim_start_matches("./")));
                    }
                }
            }
            if !paths.is_empty() {
                cache.push(("paths".into(), Out::Seq(paths)));
            }
            if with_get("restore-keys").is_some() {
                self.note(
                    u,
                    "`restore-keys` dropped: a cache entry is reused only for its exact key",
                );
            }
            self.note(u, "`actions/cache` is the `cache:` of the next step (its result and paths are reused while the key is unchanged)");
            return ActionResult::Cache(Out::Map(cache));
        }
        if action == "actions/upload-artifact" {
            let raw = with_get("name")
                .and_then(text)
                .unwrap_or_else(|| "artifact".into());
            let stripped: String = expr::template_parts(&raw)
                .into_iter()
                .filter(|(e, _)| !e)
                .map(|(_, t)| t)
                .collect();
            let mut name = plain_name(&stripped);
            self.artifact_count += 1;
            if name.is_empty() {
                name = format!("artifact-{}", self.artifact_count);
            }
            let raw_glob: String = expr::template_parts(&raw)
                .into_iter()
                .map(|(e, t)| if e { "*".to_string() } else { t })
                .collect();
            if name != raw {
                let n = with_get("name").unwrap_or(u);
                self.note(
                    n,
                    format!(
                        "artifact `{raw}` is named `{name}` (artifact names are plain words here)"
                    ),
                );
            }
            let mut paths = Vec::new();
            let p = with_get("path");
            for line in p
                .and_then(text)
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                if line.starts_with('~')
                    || line.starts_with('/')
                    || line.starts_with('!')
                    || line.contains("${{")
                {
                    self.note(p.unwrap_or(u), format!("artifact path `{line}` dropped: artifact paths are globs relative to the workspace"));
                } else {
                    let l = line.trim_start_matches("./");
                    paths.push(Out::str(if l.is_empty() { "." } else { l }));
                }
            }
            if paths.is_empty() {
                let msg =
                    "`actions/upload-artifact` without a path in the workspace is not converted";
                self.error(p.unwrap_or(u), msg);
                body.push(("run".into(), Out::Str(placeholder(msg))));
                return ActionResult::Step;
            }
            let mut art = vec![
                ("name".to_string(), Out::Str(name.clone())),
                ("paths".to_string(), Out::Seq(paths)),
            ];
            if let Some(r) = with_get("retention-days")
                && let Some(ScalarValue::Int(d)) = r.as_scalar().map(|x| &x.value)
            {
                art.push(("retention".into(), Out::Str(format!("{d}d"))));
            }
            body.push(("run".into(), Out::str("true")));
            body.push(("artifacts".into(), Out::Seq(vec![Out::Map(art)])));
            self.pending_artifact = Some((name, raw_glob));
            return ActionResult::Step;
        }
        if action == "actions/download-artifact" {
            let dest = with_get("path")
                .and_then(text)
                .unwrap_or_else(|| ".".into());
            let want = with_get("name").and_then(text);
            let pattern = with_get("pattern").and_then(text);
            let found: Vec<(String, String)> = self
                .artifacts
                .iter()
                .filter(|(n, raw, _)| match (&want, &pattern) {
                    (Some(w), _) => plain_name(w) == *n || w == raw,
                    (None, Some(p)) => glob_match(p, raw) || glob_match(&plain_name_glob(p), n),
                    (None, None) => true,
                })
                .map(|(n, _, s)| (n.clone(), s.clone()))
                .collect();
            if found.is_empty() {
                let msg = "`actions/download-artifact`: no earlier step of this workflow uploads a matching artifact";
                self.error(u, msg);
                body.push(("run".into(), Out::Str(placeholder(msg))));
                return ActionResult::Step;
            }
            let mut script = String::new();
            let single =
                want.is_some() || with_get("merge-multiple").and_then(truthy) == Some(true);
            for (name, step) in &found {
                let target = if single {
                    dest.clone()
                } else {
                    format!("{dest}/{name}")
                };
                script.push_str(&format!(
                    "mkdir -p {q} && cp -R \"${{{{ steps.{step}.artifacts.{name} }}}}/.\" {q}\n",
                    q = sh_quote(&target)
                ));
            }
            body.push(("run".into(), Out::Str(script)));
            return ActionResult::Step;
        }
        let msg = format!("action `{uses}` is not converted: it has no equivalent here");
        self.error(u, msg.clone());
        body.push(("run".into(), Out::Str(placeholder(&msg))));
        ActionResult::Step
    }

    fn set_checkout(&mut self, key: &str, value: Out) {
        if let Some(e) = self.checkout.iter_mut().find(|(k, _)| k == key) {
            e.1 = value;
        } else {
            self.checkout.push((key.to_string(), value));
        }
    }
}

const POSTGRES_RUN: &str = r#"data=$(mktemp -d)
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
initdb -D "$data" -A trust -U "$user" >/dev/null
if [ "$db" != postgres ]; then
  echo "CREATE DATABASE \"$db\"" | postgres --single -D "$data" postgres >/dev/null
fi
exec postgres -D "$data" -p "$PORT" -k "$data" -c listen_addresses=127.0.0.1
"#;

const MYSQL_RUN: &str = r#"data=$(mktemp -d)
mysqld --initialize-insecure --datadir="$data/db" >/dev/null 2>&1 || mariadb-install-db --datadir="$data/db" >/dev/null
exec mysqld --datadir="$data/db" --port="$PORT" --bind-address=127.0.0.1 --socket="$data/mysqld.sock"
"#;

struct StepCtx<'a> {
    job: &'a str,
    when: Option<&'a str>,
    timeout: Option<&'a Node>,
    cont: bool,
    shell: Option<&'a Node>,
}

enum ActionResult {
    Step,
    Dropped(String),
    Cache(Out),
}

/// Whether a converted job can share a `parallel: auto` stage with the other jobs of its
/// level: it has no stage-wide matrix or services.
fn mergeable(stage: &Out) -> bool {
    matches!(stage, Out::Map(m) if !m.iter().any(|(k, _)| k == "matrix" || k == "services"))
}

/// Independent jobs as one `parallel: auto` stage: each job's steps form a chain through
/// `needs`, so the jobs run side by side and each job's steps in order. The job's `env`
/// and working directory move onto its steps.
fn merge_stages<'a>(ids: &[&str], stages: impl Iterator<Item = &'a Out>) -> Out {
    let mut steps = Vec::new();
    for stage in stages {
        let Out::Map(m) = stage else { continue };
        let get = |k: &str| m.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let env = get("env");
        let wd = get("working_directory");
        let mut prev: Option<String> = None;
        for step in match get("steps") {
            Some(Out::Seq(s)) => s,
            _ => Vec::new(),
        } {
            let Out::Map(mut fields) = step else { continue };
            let id = fields
                .iter()
                .find(|(k, _)| k == "id")
                .and_then(|(_, v)| match v {
                    Out::Str(s) => Some(s.clone()),
                    _ => None,
                });
            let mut extra = Vec::new();
            if let Some(p) = &prev {
                extra.push(("needs".to_string(), Out::Seq(vec![Out::Str(p.clone())])));
            }
            if let Some(Out::Map(job_env)) = &env {
                match fields.iter_mut().find(|(k, _)| k == "env") {
                    Some((_, Out::Map(step_env))) => {
                        let mut merged: Vec<(String, Out)> = job_env
                            .iter()
                            .filter(|(k, _)| !step_env.iter().any(|(s, _)| s == k))
                            .cloned()
                            .collect();
                        merged.append(step_env);
                        *step_env = merged;
                    }
                    _ => fields.push(("env".to_string(), Out::Map(job_env.clone()))),
                }
            }
            if let Some(wd) = &wd
                && !fields.iter().any(|(k, _)| k == "working_directory")
            {
                fields.push(("working_directory".to_string(), wd.clone()));
            }
            // `needs` right after the id and name.
            let at = fields
                .iter()
                .position(|(k, _)| k != "id" && k != "name")
                .unwrap_or(fields.len());
            for (n, e) in extra.into_iter().enumerate() {
                fields.insert(at + n, e);
            }
            prev = id;
            steps.push(Out::Map(fields));
        }
    }
    Out::Map(vec![
        ("name".to_string(), Out::Str(ids.join(" + "))),
        ("parallel".to_string(), Out::str("auto")),
        (
            "max_parallel".to_string(),
            Out::Int(ids.len().max(2) as i64),
        ),
        ("steps".to_string(), Out::Seq(steps)),
    ])
}

/// A script that fails with `msg` (the placeholder of something not converted).
fn placeholder(msg: &str) -> String {
    let msg = msg.replace("${{", "$ {{");
    format!(
        "echo {} >&2\nexit 1\n",
        sh_quote(&format!("import-gha: {msg}"))
    )
}

/// `${{ env.NAME }}` in a script becomes the shell's `${NAME}`: GitHub pastes the text
/// (which the shell then splits), and the variable is in the step's environment anyway.
fn env_refs_in_script(script: &str) -> String {
    let mut out = String::new();
    let mut rest = script;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let inner = after[..end].trim();
        let name = inner.strip_prefix("env.").filter(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        });
        match name {
            Some(n) => out.push_str(&format!("${{{n}}}")),
            None => out.push_str(&rest[i..i + 3 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn plain_name_glob(p: &str) -> String {
    p.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.*?".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `*` and `?` globbing of a name.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_whole_words_only() {
        assert_eq!(
            rename_word(
                "echo x >> $GITHUB_OUTPUT; echo $GITHUB_OUTPUTS ${GITHUB_ENV}",
                "GITHUB_OUTPUT",
                "AGENT_OUTPUT"
            ),
            "echo x >> $AGENT_OUTPUT; echo $GITHUB_OUTPUTS ${GITHUB_ENV}"
        );
        assert_eq!(
            env_refs_in_script("${{ env.CARGO }} build ${{ env.X-Y }} ${{ matrix.a }}"),
            "${CARGO} build ${{ env.X-Y }} ${{ matrix.a }}"
        );
        assert!(glob_match("coverage-node-*", "coverage-node-*-*"));
        assert!(!glob_match("cov?", "coverage"));
    }

    /// Guards sources whose flow sequence closes at the indentation of its key (GitHub
    /// reads them, strict YAML does not): read again with the bracket indented, with a
    /// note; positions stay on their lines.
    #[test]
    fn closing_bracket_at_the_keys_indentation_is_read() {
        let src = "on: push\njobs:\n  test:\n    strategy:\n      matrix:\n        python-version: [\n          \"3.11\",\n          \"3.12\",\n        ]\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/setup-python@v5\n        with:\n          python-version: ${{ matrix.python-version }}\n      - uses: nope/nope@v1\n";
        assert!(dsl::yaml::parse_str(src).is_err(), "strict YAML rejects it");
        let c = convert("ci.yml", src, "ci");
        let yaml = c.yaml.expect("converted");
        assert!(c.report.valid, "{yaml}");
        assert!(yaml.contains("- '3.11'\n          - '3.12'"), "{yaml}");
        assert!(
            yaml.contains("ci.yml:9:1: note: a closing bracket less indented than YAML allows is read as GitHub reads it"),
            "{yaml}"
        );
        assert!(
            yaml.contains("ci.yml:15:15: error: action `nope/nope@v1`"),
            "{yaml}"
        );
        assert_eq!(
            indent_closing_brackets("a: [\n  1,\n]\n"),
            Some(("a: [\n  1,\n  ]\n".into(), 3))
        );
        assert_eq!(indent_closing_brackets("a: [1]\nb: 2\n"), None);
    }

    const MATRIX_SRC: &str = r#"on: push
jobs:
  docs:
    runs-on: ubuntu-latest
    steps:
      - run: make docs
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make
  tests:
    needs: build
    strategy:
      matrix:
        python-version: ["3.9", "3.11", "3.12"]
        os: [ubuntu-latest, windows-latest]
        include:
          - python-version: "3.9"
            experimental: true
          - os: macos-latest
            python-version: "3.12"
        exclude:
          - python-version: "3.9"
            os: windows-latest
    runs-on: ${{ matrix.os }}
    steps:
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python-version }}
  legacy:
    strategy:
      matrix:
        python-version: ["2.7"]
    runs-on: ubuntu-latest
    steps:
      - run: python2 -m test
"#;

    fn narrowed(selection: Selection) -> Conversion {
        convert_selected("ci.yml", MATRIX_SRC, "ci", &selection)
    }

    /// Guards `--job`: only the jobs named and the jobs they need are converted; each job
    /// left out (or kept for another) is a note at its key, and the names found are
    /// reported as matched.
    #[test]
    fn selection_keeps_the_jobs_named_and_what_they_need() {
        let c = narrowed(Selection {
            jobs: vec!["tests".into(), "nope".into()],
            matrix: Vec::new(),
        });
        let yaml = c.yaml.expect("converted");
        assert!(c.report.valid, "{yaml}");
        assert!(yaml.contains("- name: build"), "{yaml}");
        assert!(yaml.contains("- name: tests"), "{yaml}");
        assert!(!yaml.contains("make docs"), "{yaml}");
        assert!(!yaml.contains("python2"), "{yaml}");
        assert!(
            yaml.contains("ci.yml:3:3: note: job `docs` left out: not selected by --job"),
            "{yaml}"
        );
        assert!(
            yaml.contains("ci.yml:7:3: note: job `build` kept: `tests` needs it"),
            "{yaml}"
        );
        let ids: Vec<&str> = c.report.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["build", "tests"]);
        assert!(c.matched.contains("job tests"));
        assert!(!c.matched.contains("job nope"));
    }

    /// Guards `--matrix`: an axis keeps only the values given (as written), `include` and
    /// `exclude` entries setting a value left out are dropped, a job whose axis keeps no
    /// value is left out, and each of these is a note.
    #[test]
    fn selection_narrows_matrix_axes() {
        let c = narrowed(Selection {
            jobs: Vec::new(),
            matrix: vec![
                ("python-version".into(), vec!["3.12".into(), "3.11".into()]),
                ("os".into(), vec!["ubuntu-latest".into()]),
            ],
        });
        let yaml = c.yaml.expect("converted");
        assert!(c.report.valid, "{yaml}");
        let body = &yaml[yaml.find("workflow:").unwrap()..];
        assert!(
            body.contains(
                "      matrix:\n        python-version:\n          - '3.11'\n          - '3.12'\n        os:\n          - ubuntu-latest\n      steps:"
            ),
            "{body}"
        );
        assert!(!body.contains("3.9"), "{body}");
        assert!(!body.contains("macos"), "{body}");
        assert!(!body.contains("python2"), "{body}");
        for note in [
            "note: matrix axis `python-version` narrowed by --matrix to 3.11, 3.12 (upstream: 3.9, 3.11, 3.12)",
            "note: matrix axis `os` narrowed by --matrix to ubuntu-latest (upstream: ubuntu-latest, windows-latest)",
            "note: --matrix drops 2 of the 2 `include` entries",
            "note: --matrix drops 1 of the 1 `exclude` entries",
            "note: job `legacy` left out: --matrix keeps no value of its axis `python-version`",
        ] {
            assert!(yaml.contains(note), "{note}\n{yaml}");
        }
        for m in [
            "matrix python-version",
            "matrix python-version=3.12",
            "matrix os=ubuntu-latest",
        ] {
            assert!(c.matched.contains(m), "{m}: {:?}", c.matched);
        }
        assert!(!c.matched.contains("matrix python-version=3.10"));
    }

    /// Guards the default: without a selection nothing is left out and nothing matched.
    #[test]
    fn no_selection_converts_everything() {
        let c = convert("ci.yml", MATRIX_SRC, "ci");
        let yaml = c.yaml.expect("converted");
        assert!(
            yaml.contains("python2") && yaml.contains("make docs") && yaml.contains("macos-latest")
        );
        assert!(!yaml.contains("--matrix") && !yaml.contains("--job"));
        assert!(c.matched.is_empty());
    }

    /// Guards `actions-rs/toolchain`: the `rust-toolchain` skill with its toolchain,
    /// target and components; `profile` dropped with a note.
    #[test]
    fn actions_rs_toolchain_is_the_rust_toolchain_skill() {
        let src = "on: push\njobs:\n  b:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions-rs/toolchain@v1\n        with:\n          profile: minimal\n          toolchain: nightly\n          target: thumbv6m-none-eabi\n          components: rustfmt, clippy\n          override: true\n";
        let c = convert("ci.yml", src, "ci");
        let yaml = c.yaml.expect("converted");
        assert!(c.report.converted && c.report.valid, "{yaml}");
        assert!(
            yaml.contains(
                "skill: rust-toolchain\n          parameters:\n            toolchain: nightly\n            targets: thumbv6m-none-eabi\n            components: rustfmt, clippy\n"
            ),
            "{yaml}"
        );
        assert!(
            yaml.contains("note: `actions-rs/toolchain` inputs dropped: `profile`"),
            "{yaml}"
        );
    }
}
