//! The step protocol files and variables (README, "Skills and the step protocol"):
//! `AGENT_OUTPUT` and `AGENT_CONTEXT` parsing, `AGENT_PARAM_*` variables, the per-run
//! directory the files live in, and the error class of a failed step.
//!
//! No file is created for a step: the engine hands out paths inside one per-run directory
//! ([`RunDir`], created once per run) and a step that writes nothing costs no file system
//! work beyond one failed `open` per file after it exits.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use indexmap::IndexMap;
use serde_json::Value;

use crate::errors::{ErrorClass, RunnerError};
use crate::spawn::ProcessOutcome;

/// A step's outputs: `key -> value`. Values are strings unless the step wrote JSON.
pub type Outputs = IndexMap<String, Value>;

/// A context update written by a step: one JSON object.
pub type ContextUpdate = serde_json::Map<String, Value>;

/// Parses the text of an `AGENT_OUTPUT` file read from `path` (named in errors).
///
/// Accepted forms: the whole text is one JSON object (values keep their JSON types), or
/// lines of `key=value` and heredocs `key<<DELIM` ... `DELIM` (any delimiter; the value is
/// the lines in between joined by `\n`). Blank lines are ignored; `\r\n` endings are fine; a
/// key written twice keeps the last value. Anything else is an error naming the line.
fn parse_output_at(text: &str, path: &Path) -> Result<Outputs, RunnerError> {
    let err = |line: usize, message: String| RunnerError::OutputFormat {
        path: path.to_path_buf(),
        line,
        message,
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text)
    {
        return Ok(map.into_iter().collect());
    }
    let mut out = Outputs::new();
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((idx, raw)) = lines.next() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let key = &line[..e];
                check_key(key).map_err(|m| err(idx + 1, m))?;
                out.insert(key.to_string(), Value::String(line[e + 1..].to_string()));
            }
            (_, Some(h)) => {
                let key = &line[..h];
                check_key(key).map_err(|m| err(idx + 1, m))?;
                let delim = &line[h + 2..];
                if delim.is_empty() {
                    return Err(err(idx + 1, format!("heredoc `{key}<<` has no delimiter")));
                }
                let mut value: Vec<&str> = Vec::new();
                let mut closed = false;
                for (_, raw) in lines.by_ref() {
                    let l = raw.strip_suffix('\r').unwrap_or(raw);
                    if l == delim {
                        closed = true;
                        break;
                    }
                    value.push(l);
                }
                if !closed {
                    return Err(err(
                        idx + 1,
                        format!("heredoc `{key}` is not closed by a line `{delim}`"),
                    ));
                }
                out.insert(key.to_string(), Value::String(value.join("\n")));
            }
            _ => {
                return Err(err(
                    idx + 1,
                    format!(
                        "expected `key=value`, `key<<DELIMITER` or one JSON object, found `{}`",
                        truncate(line, 60)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("empty key".to_string());
    }
    if key.trim() != key {
        return Err(format!("key `{key}` has surrounding spaces"));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// Parses the text of an `AGENT_CONTEXT` file read from `path` (named in errors): one JSON
/// object (whitespace only means an empty update).
fn parse_context_at(text: &str, path: &Path) -> Result<ContextUpdate, RunnerError> {
    if text.trim().is_empty() {
        return Ok(ContextUpdate::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(RunnerError::ContextFormat {
            path: path.to_path_buf(),
            message: format!("expected one JSON object, found {}", json_kind(&other)),
        }),
        Err(e) => Err(RunnerError::ContextFormat {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a file if it exists; `None` when the step did not write it.
fn read_optional(path: &Path) -> Result<Option<String>, RunnerError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunnerError::ReadFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses the `AGENT_OUTPUT` file at `path`; `Ok(None)` when the step did not write it.
pub fn parse_output_file(path: &Path) -> Result<Option<Outputs>, RunnerError> {
    read_optional(path)?
        .map(|text| parse_output_at(&text, path))
        .transpose()
}

/// Parses the `AGENT_CONTEXT` file at `path`; `Ok(None)` when the step did not write it
/// (which is different from writing `{}`: with `merge_strategy: replace` the latter clears
/// the context).
pub fn parse_context_file(path: &Path) -> Result<Option<ContextUpdate>, RunnerError> {
    read_optional(path)?
        .map(|text| parse_context_at(&text, path))
        .transpose()
}

/// The name of the environment variable for parameter `name`: `AGENT_PARAM_` + the name
/// upper-cased with every character outside `A-Z`, `0-9`, `_` turned into `_`.
pub(crate) fn param_var_name(name: &str) -> String {
    let mut var = String::with_capacity(12 + name.len());
    var.push_str("AGENT_PARAM_");
    for c in name.chars() {
        let u = c.to_ascii_uppercase();
        var.push(
            if u.is_ascii_uppercase() || u.is_ascii_digit() || u == '_' {
                u
            } else {
                '_'
            },
        );
    }
    var
}

/// `AGENT_PARAM_<NAME>` variables for the top-level scalar parameters of `params` (a JSON
/// object; anything else gives none). Strings are passed as they are, numbers and booleans
/// as JSON text (`21`, `1.5`, `true`); `null`, arrays and objects get no variable (they are
/// on stdin).
pub fn param_env(params: &Value) -> Vec<(String, String)> {
    let Value::Object(map) = params else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((param_var_name(name), text))
        })
        .collect()
}

/// The error class of a finished step, or `None` when it succeeded (exit 0, not timed out
/// or cancelled). Order: the `error_class` key of its outputs, the manifest's
/// `error_codes` for its exit code, `Timeout`, `Cancelled`, else `ExitCode`.
pub fn classify(
    outcome: &ProcessOutcome,
    outputs: Option<&Outputs>,
    error_codes: &HashMap<i32, ErrorClass>,
) -> Option<ErrorClass> {
    if outcome.success() {
        return None;
    }
    if let Some(class) = outputs
        .and_then(|o| o.get("error_class"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        return Some(ErrorClass::from_name(class));
    }
    if let Some(class) = outcome.exit_code.and_then(|c| error_codes.get(&c)) {
        return Some(class.clone());
    }
    if outcome.timed_out {
        return Some(ErrorClass::Timeout);
    }
    if outcome.cancelled {
        return Some(ErrorClass::Cancelled);
    }
    Some(ErrorClass::ExitCode)
}

/// A private directory for one run's protocol files, removed (with its content) on drop.
///
/// Created once per run (one `mkdir`), under `$XDG_RUNTIME_DIR` when set (a tmpfs), else the
/// system temp directory. Steps get paths inside it from [`RunDir::step_paths`]; no file is
/// created for them.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

/// The protocol file paths of one step attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPaths {
    /// Value for `AGENT_OUTPUT`.
    pub output: PathBuf,
    /// Value for `AGENT_CONTEXT`.
    pub context: PathBuf,
}

impl StepPaths {
    /// The `AGENT_OUTPUT` and `AGENT_CONTEXT` environment entries.
    pub fn env(&self) -> [(String, String); 2] {
        [
            (
                "AGENT_OUTPUT".to_string(),
                self.output.to_string_lossy().into_owned(),
            ),
            (
                "AGENT_CONTEXT".to_string(),
                self.context.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// Removes both files if they exist (before a retry reuses the paths).
    pub fn remove(&self) {
        for p in [&self.output, &self.context] {
            // Not existing is the common case; any other error surfaces when the step
            // writes or we read.
            let _ = std::fs::remove_file(p);
        }
    }
}

impl RunDir {
    /// Creates a fresh private (0700) directory whose name contains `run_id` (sanitised).
    pub fn create(run_id: &str) -> Result<RunDir, RunnerError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        RunDir::create_in(&base, run_id)
    }

    /// Like [`RunDir::create`] but inside `base`.
    pub fn create_in(base: &Path, run_id: &str) -> Result<RunDir, RunnerError> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let safe: String = run_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("agent-run-{safe}-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last_err = Some(e),
                Err(source) => return Err(RunnerError::RunDir { path, source }),
            }
        }
        Err(RunnerError::RunDir {
            path: base.to_path_buf(),
            source: last_err.unwrap_or_else(|| std::io::Error::other("no free name")),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Paths for one attempt of one step. `step_key` should be unique within the run (for
    /// example `<step id>.<attempt>`); characters other than `A-Za-z0-9-_.` become `_`.
    pub fn step_paths(&self, step_key: &str) -> StepPaths {
        let safe = safe_file_name(step_key);
        StepPaths {
            output: self.path.join(format!("{safe}.output")),
            context: self.path.join(format!("{safe}.context")),
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Best effort: a step may have left files; nothing useful to do on failure.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `name` with every character other than `A-Za-z0-9-_.` replaced by `_`, for use as one
/// path component chosen from user-controlled text (step ids, workflow names).
pub fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_output(text: &str) -> Result<Outputs, RunnerError> {
        parse_output_at(text, Path::new(""))
    }

    fn parse_context(text: &str) -> Result<ContextUpdate, RunnerError> {
        parse_context_at(text, Path::new(""))
    }
    use serde_json::json;

    #[test]
    fn key_value_and_heredoc() {
        let text = "a=1\nb=x=y\r\n\nmsg<<EOF\nline one\nline=two\nEOF\nc<<END_1\nEND_1\nd=\n";
        let out = parse_output(text).expect("parse");
        assert_eq!(out["a"], json!("1"));
        assert_eq!(out["b"], json!("x=y"));
        assert_eq!(out["msg"], json!("line one\nline=two"));
        assert_eq!(out["c"], json!(""));
        assert_eq!(out["d"], json!(""));
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            vec!["a", "b", "msg", "c", "d"]
        );
    }

    #[test]
    fn equals_before_heredoc_marker_is_a_value() {
        let out = parse_output("cmd=a<<b\n").expect("parse");
        assert_eq!(out["cmd"], json!("a<<b"));
    }

    #[test]
    fn json_object_keeps_types() {
        let out = parse_output("  {\"n\": 3, \"ok\": true, \"l\": [1]}\n").expect("parse");
        assert_eq!(out["n"], json!(3));
        assert_eq!(out["ok"], json!(true));
        assert_eq!(out["l"], json!([1]));
    }

    #[test]
    fn bad_output_names_the_line() {
        let err = parse_output("a=1\nnot a pair\n").expect_err("must fail");
        assert!(
            matches!(err, RunnerError::OutputFormat { line: 2, .. }),
            "{err}"
        );
        let err = parse_output("x<<EOF\nabc\n").expect_err("must fail");
        assert!(err.to_string().contains("not closed"), "{err}");
        let err = parse_output("=1\n").expect_err("must fail");
        assert!(err.to_string().contains("empty key"), "{err}");
    }

    #[test]
    fn context_is_one_object() {
        assert_eq!(
            parse_context("{\"a\":{\"b\":1}}").expect("ok")["a"],
            json!({"b":1})
        );
        assert!(parse_context(" \n").expect("ok").is_empty());
        assert!(parse_context("[1]").is_err());
        assert!(parse_context("{").is_err());
    }

    #[test]
    fn param_env_scalars_only() {
        let env = param_env(&json!({
            "name": "web app", "replicas": 21, "ratio": 1.5, "dry-run": true,
            "list": [1], "obj": {}, "none": null, "é x": "u"
        }));
        assert_eq!(
            env,
            vec![
                ("AGENT_PARAM_NAME".to_string(), "web app".to_string()),
                ("AGENT_PARAM_REPLICAS".into(), "21".into()),
                ("AGENT_PARAM_RATIO".into(), "1.5".into()),
                ("AGENT_PARAM_DRY_RUN".into(), "true".into()),
                ("AGENT_PARAM___X".into(), "u".into()),
            ]
        );
    }

    #[test]
    fn classification_order() {
        let failed = ProcessOutcome {
            exit_code: Some(3),
            ..ProcessOutcome::default()
        };
        let mut codes = HashMap::new();
        assert_eq!(classify(&failed, None, &codes), Some(ErrorClass::ExitCode));
        codes.insert(3, ErrorClass::from_name("NetworkError"));
        assert_eq!(
            classify(&failed, None, &codes),
            Some(ErrorClass::Other("NetworkError".into()))
        );
        let outs: Outputs = [("error_class".to_string(), json!("Flaky"))]
            .into_iter()
            .collect();
        assert_eq!(
            classify(&failed, Some(&outs), &codes),
            Some(ErrorClass::Other("Flaky".into()))
        );
        let timed_out = ProcessOutcome {
            signal: Some(15),
            timed_out: true,
            ..ProcessOutcome::default()
        };
        assert_eq!(
            classify(&timed_out, None, &codes),
            Some(ErrorClass::Timeout)
        );
        let ok = ProcessOutcome {
            exit_code: Some(0),
            ..ProcessOutcome::default()
        };
        assert_eq!(classify(&ok, Some(&outs), &codes), None);
    }

    #[test]
    fn run_dir_lifecycle() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = RunDir::create_in(base.path(), "run/1").expect("create");
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        let paths = dir.step_paths("build.1");
        assert!(!paths.output.exists());
        assert_eq!(
            parse_output_file(&paths.output).expect("missing is ok"),
            None
        );
        std::fs::write(&paths.output, "k=v\n").expect("write");
        assert_eq!(
            parse_output_file(&paths.output).expect("parse"),
            Some([("k".to_string(), json!("v"))].into_iter().collect())
        );
        drop(dir);
        assert!(!path.exists());
    }
}
