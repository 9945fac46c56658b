//! What an expression reads while it is evaluated: the [`EvalContext`] trait, the job's
//! [`JobStatus`], and [`MapContext`], a context over a JSON object.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// What an expression can read while it is evaluated.
pub trait EvalContext {
    /// The value of a context root: `parameters`, `steps`, `context`, `env`, `secrets`,
    /// `run`, `repo` or `workflow`. `None` means the root is not available here.
    fn root(&self, name: &str) -> Option<&Value>;
    /// The state of the job so far, for `success()`, `failure()` and `cancelled()`.
    fn job_status(&self) -> JobStatus;
    /// The directory `file_exists()` and `hash_files()` resolve relative paths against.
    /// `None` makes them fail on relative paths.
    fn workdir(&self) -> Option<&Path>;
    /// The variable `name` of the environment steps start from, read by `env('NAME')` when
    /// the `env` root does not have it. Never this process's own environment as a whole:
    /// that is where the agent keeps the sources of secrets and credentials. The default
    /// has no variables.
    fn base_env(&self, _name: &str) -> Option<String> {
        None
    }
}

/// The state of the job so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Nothing failed so far.
    Success,
    /// An earlier step failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

/// A simple [`EvalContext`] over a JSON object whose keys are the roots.
#[derive(Debug, Clone)]
pub struct MapContext {
    /// Root name to value.
    pub values: Map<String, Value>,
    /// What `success()` and friends see.
    pub status: JobStatus,
    /// Base directory for `file_exists()` and `hash_files()`.
    pub workdir: Option<PathBuf>,
    /// What `env('NAME')` reads after the `env` root (later entries win).
    pub base_env: Vec<(String, String)>,
}

impl MapContext {
    /// A context over `values`, status [`JobStatus::Success`] and no workdir.
    pub fn new(values: Map<String, Value>) -> Self {
        MapContext {
            values,
            status: JobStatus::Success,
            workdir: None,
            base_env: Vec::new(),
        }
    }

    /// A context over a JSON value; anything but an object gives an empty context.
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Object(map) => Self::new(map),
            _ => Self::new(Map::new()),
        }
    }

    /// Sets the variables `env('NAME')` reads after the `env` root.
    #[must_use]
    pub fn with_base_env(mut self, vars: Vec<(String, String)>) -> Self {
        self.base_env = vars;
        self
    }

    /// Sets one root.
    pub fn insert(&mut self, root: &str, value: Value) {
        self.values.insert(root.to_string(), value);
    }
}

impl EvalContext for MapContext {
    fn root(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn base_env(&self, name: &str) -> Option<String> {
        self.base_env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn job_status(&self) -> JobStatus {
        self.status
    }

    fn workdir(&self) -> Option<&Path> {
        self.workdir.as_deref()
    }
}
