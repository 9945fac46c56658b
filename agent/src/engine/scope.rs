//! What `${{ }}` expressions see during a run: the context roots (`parameters`, `steps`,
//! `context`, `env`, `secrets`, `run`, `repo`, `workflow`) and the job status.
//!
//! One [`RunData`] per run lives behind a mutex in the run; steps lock it only to render
//! their templates and to record their results (never across an `.await`). Recording a step
//! inserts one entry into `steps`: no step copies the outputs of the others.

use dsl::expr::{EvalContext, JobStatus};
use serde_json::{Map, Value};
use std::path::Path;

/// The expression roots of one run plus its job status.
#[derive(Debug, Default)]
pub(crate) struct RunData {
    /// Root name to value.
    pub(crate) roots: Map<String, Value>,
    /// What `success()`, `failure()` and `cancelled()` see.
    pub(crate) status: Option<JobStatus>,
    /// The environment steps start from, read by `env('NAME')` after the `env` root.
    pub(crate) base_env: Vec<(String, String)>,
    /// The `matrix` root of each running matrix instance, by the instance's step id.
    pub(crate) matrix: std::collections::HashMap<String, Value>,
    /// Steps of a stage-matrix instance: step id to (instance id, the step's id in the
    /// file). Their `${{ steps.X }}` reads the instance's own `steps` root.
    pub(crate) groups: std::collections::HashMap<String, (String, String)>,
    /// The `steps` root of each running stage-matrix instance: the run's steps when the
    /// instance started, plus the instance's own steps under their ids in the file.
    pub(crate) group_steps: std::collections::HashMap<String, Value>,
}

impl RunData {
    /// Builds the roots of a run.
    pub(crate) fn new(
        parameters: Map<String, Value>,
        secrets: Map<String, Value>,
        run: Value,
        repo: Value,
        workflow: Value,
        env: Map<String, Value>,
        context: Map<String, Value>,
    ) -> Self {
        let mut roots = Map::new();
        roots.insert("parameters".into(), Value::Object(parameters));
        roots.insert("secrets".into(), Value::Object(secrets));
        roots.insert("run".into(), run);
        roots.insert("repo".into(), repo);
        roots.insert("workflow".into(), workflow);
        roots.insert("env".into(), Value::Object(env));
        roots.insert("context".into(), Value::Object(context));
        roots.insert("steps".into(), Value::Object(Map::new()));
        RunData {
            roots,
            status: None,
            base_env: Vec::new(),
            matrix: Default::default(),
            groups: Default::default(),
            group_steps: Default::default(),
        }
    }

    /// The job status (success until something fails or the run is cancelled).
    pub(crate) fn job_status(&self) -> JobStatus {
        self.status.unwrap_or(JobStatus::Success)
    }

    /// Records a finished (or skipped) step that has no exit code or error class.
    pub(crate) fn record_step(&mut self, id: &str, status: &str, output: Map<String, Value>) {
        self.record_step_result(id, status, output, None, None);
    }

    /// Records a finished (or skipped) step for `steps.<id>.status`, `.output` (and its
    /// GitHub Actions spelling `.outputs`), `.exit_code` and `.error_class` (null when the
    /// step has none).
    pub(crate) fn record_step_result(
        &mut self,
        id: &str,
        status: &str,
        output: Map<String, Value>,
        exit_code: Option<i32>,
        error_class: Option<&str>,
    ) {
        let output = Value::Object(output);
        let mut entry = Map::new();
        entry.insert("status".into(), Value::String(status.to_string()));
        entry.insert("outputs".into(), output.clone());
        entry.insert("output".into(), output);
        entry.insert(
            "exit_code".into(),
            exit_code.map_or(Value::Null, Value::from),
        );
        entry.insert(
            "error_class".into(),
            error_class.map_or(Value::Null, |c| Value::String(c.to_string())),
        );
        self.record_entry(id, Value::Object(entry));
    }

    /// Sets `steps.<id>` to `entry` (and, for a step of a stage-matrix instance, the
    /// instance's `steps.<id in the file>`).
    pub(crate) fn record_entry(&mut self, id: &str, entry: Value) {
        if let Some((group, base)) = self.groups.get(id)
            && let Some(Value::Object(steps)) = self.group_steps.get_mut(group)
        {
            steps.insert(base.clone(), entry.clone());
        }
        if let Some(Value::Object(steps)) = self.roots.get_mut("steps") {
            steps.insert(id.to_string(), entry);
        }
    }

    /// Records `steps.<id>.artifacts` (name to the directory holding its files) for a step
    /// recorded before.
    pub(crate) fn record_artifacts(&mut self, id: &str, dirs: Map<String, Value>) {
        if let Some(Value::Object(steps)) = self.roots.get_mut("steps")
            && let Some(Value::Object(entry)) = steps.get_mut(id)
        {
            entry.insert("artifacts".into(), Value::Object(dirs));
        }
    }

    /// The context map (mutable), for merging step updates.
    pub(crate) fn context_mut(&mut self) -> &mut Map<String, Value> {
        let slot = self
            .roots
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => m,
            _ => unreachable!("just made an object"),
        }
    }

    /// The context map.
    pub(crate) fn context(&self) -> Map<String, Value> {
        match self.roots.get("context") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        }
    }

    /// An evaluation view with this workdir.
    pub(crate) fn view<'a>(&'a self, workdir: &'a Path) -> Scope<'a> {
        Scope {
            data: self,
            workdir,
            env: None,
            matrix: None,
            steps: None,
        }
    }

    /// The evaluation view of step `id`: with its `matrix` root when it is a matrix
    /// instance.
    pub(crate) fn step_view<'a>(&'a self, workdir: &'a Path, id: &str) -> Scope<'a> {
        Scope {
            matrix: self.matrix.get(id),
            steps: self
                .groups
                .get(id)
                .and_then(|(group, _)| self.group_steps.get(group)),
            ..self.view(workdir)
        }
    }
}

/// An [`EvalContext`] over a [`RunData`], optionally with a step's own `env` root.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    data: &'a RunData,
    workdir: &'a Path,
    env: Option<&'a Value>,
    matrix: Option<&'a Value>,
    /// The `steps` root of a stage-matrix instance's step.
    steps: Option<&'a Value>,
}

impl<'a> Scope<'a> {
    /// The same view with `env` replaced (a step's merged environment).
    pub(crate) fn with_env(mut self, env: &'a Value) -> Self {
        self.env = Some(env);
        self
    }
}

impl EvalContext for Scope<'_> {
    fn root(&self, name: &str) -> Option<&Value> {
        if name == "env"
            && let Some(env) = self.env
        {
            return Some(env);
        }
        if name == "matrix" {
            return self.matrix;
        }
        if name == "steps"
            && let Some(steps) = self.steps
        {
            return Some(steps);
        }
        self.data.roots.get(name)
    }

    fn job_status(&self) -> JobStatus {
        self.data.job_status()
    }

    fn workdir(&self) -> Option<&Path> {
        Some(self.workdir)
    }

    fn base_env(&self, name: &str) -> Option<String> {
        self.data
            .base_env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// Truthiness of a `when` value: `false`, `null`, `0` and `""` are false.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Text of a value for an environment variable: strings as they are, `null` empty, anything
/// else as JSON.
pub(crate) fn env_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether a `when` text uses a status function (then it decides alone; otherwise an
/// implicit `success()` applies, as in GitHub Actions).
pub(crate) fn has_status_fn(text: &str) -> bool {
    ["success(", "failure(", "always(", "cancelled("]
        .iter()
        .any(|f| text.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_and_view() {
        let mut d = RunData::new(
            Map::new(),
            Map::new(),
            json!({"id": "r"}),
            Value::Null,
            json!({"name": "w"}),
            Map::new(),
            Map::new(),
        );
        let mut out = Map::new();
        out.insert("k".into(), json!("v"));
        d.record_step("a", "succeeded", out);
        let wd = Path::new("/tmp");
        let s = d.view(wd);
        assert_eq!(s.root("steps").expect("steps")["a"]["output"]["k"], "v");
        assert_eq!(s.root("steps").expect("steps")["a"]["outputs"]["k"], "v");
        assert_eq!(
            s.root("steps").expect("steps")["a"]["exit_code"],
            Value::Null
        );
        assert_eq!(s.job_status(), JobStatus::Success);
        d.context_mut().insert("x".into(), json!(1));
        assert_eq!(d.context()["x"], 1);
    }

    #[test]
    fn truthiness_and_env_text() {
        assert!(!truthy(&json!(false)) && !truthy(&json!(0)) && !truthy(&json!("")));
        assert!(truthy(&json!("no")) && truthy(&json!([])) && truthy(&json!(2)));
        assert_eq!(env_text(&json!("a b")), "a b");
        assert_eq!(env_text(&json!(1.5)), "1.5");
        assert_eq!(env_text(&json!(null)), "");
        assert_eq!(env_text(&json!({"a":1})), r#"{"a":1}"#);
    }
}
