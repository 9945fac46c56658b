//! `$AGENT_ENV` and `$AGENT_PATH`: files a step writes to change the environment of the
//! later steps of its run, in GitHub Actions' `GITHUB_ENV` / `GITHUB_PATH` formats.
//!
//! - `AGENT_ENV`: one `NAME=value` per line, or a heredoc `NAME<<DELIM` followed by the value's
//!   lines and a line holding exactly `DELIM`. Empty lines are ignored. Anything else (no `=`,
//!   an empty or invalid name, a heredoc without its end) fails the step, naming the line.
//! - `AGENT_PATH`: one directory per line; each is put first on `PATH`, so the last line
//!   written is searched first (as in GitHub Actions).
//!
//! The files are read after every try of a step (whatever its result) and apply to the steps
//! that start afterwards, including parallel siblings that start later. A variable set this
//! way is overridden by any `env:` (workflow, stage or step) naming it, as in GitHub Actions.
//! Values are masked like any step output: a value equal to a secret shows as `***`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use indexmap::IndexMap;

/// A parse error: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses an `AGENT_ENV` file's text into `(name, value)` pairs in file order.
pub(crate) fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, LineError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, raw)) = lines.next() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        let err = |message: String| LineError { line: n, message };
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let name = &line[..e];
                if !valid_name(name) {
                    return Err(err(format!("invalid variable name `{name}`")));
                }
                out.push((name.to_string(), line[e + 1..].to_string()));
            }
            (_, Some(h)) => {
                let name = &line[..h];
                let delim = &line[h + 2..];
                if !valid_name(name) {
                    return Err(err(format!("invalid variable name `{name}`")));
                }
                if delim.is_empty() {
                    return Err(err("a heredoc needs a delimiter after `<<`".to_string()));
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
                    return Err(err(format!(
                        "the heredoc of `{name}` is not closed by a line `{delim}`"
                    )));
                }
                out.push((name.to_string(), value.join("\n")));
            }
            _ => {
                return Err(err(format!(
                    "expected `NAME=value` or `NAME<<DELIMITER`, got `{line}`"
                )));
            }
        }
    }
    Ok(out)
}

/// Parses an `AGENT_PATH` file's text: the non-empty lines, in order.
pub(crate) fn parse_path_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What earlier steps of a run set through their files.
#[derive(Debug, Default)]
pub(crate) struct FileEnv {
    inner: Mutex<FileEnvState>,
}

#[derive(Debug, Default, Clone)]
struct FileEnvState {
    vars: IndexMap<String, String>,
    /// `AGENT_PATH` entries in the order written (the last is searched first).
    path: Vec<String>,
}

/// The two file paths of one step try.
#[derive(Debug, Clone)]
pub(crate) struct StepFiles {
    env: PathBuf,
    path: PathBuf,
}

impl StepFiles {
    /// Paths in `dir` for the try keyed `key` (unique within the run); nothing is created.
    pub(crate) fn new(dir: &Path, key: &str) -> StepFiles {
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        StepFiles {
            env: dir.join(format!("env-{safe}")),
            path: dir.join(format!("path-{safe}")),
        }
    }

    /// The `AGENT_ENV` and `AGENT_PATH` environment entries.
    pub(crate) fn env(&self) -> [(String, String); 2] {
        [
            ("AGENT_ENV".into(), self.env.to_string_lossy().into_owned()),
            (
                "AGENT_PATH".into(),
                self.path.to_string_lossy().into_owned(),
            ),
        ]
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let _ = std::fs::remove_file(path);
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

impl FileEnv {
    fn state(&self) -> std::sync::MutexGuard<'_, FileEnvState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what a try wrote to its files and keeps it for later steps. The error is the
    /// message of the step's failure (a malformed `AGENT_ENV` line, by number).
    pub(crate) fn absorb(&self, files: &StepFiles) -> Result<(), String> {
        let env = read_optional(&files.env)?;
        let path = read_optional(&files.path)?;
        let vars = match env {
            Some(text) => parse_env_file(&text)
                .map_err(|e| format!("$AGENT_ENV line {}: {}", e.line, e.message))?,
            None => Vec::new(),
        };
        let dirs = path.map(|t| parse_path_file(&t)).unwrap_or_default();
        if vars.is_empty() && dirs.is_empty() {
            return Ok(());
        }
        let mut st = self.state();
        for (k, v) in vars {
            st.vars.shift_remove(&k);
            st.vars.insert(k, v);
        }
        for d in dirs {
            st.path.retain(|p| *p != d);
            st.path.push(d);
        }
        Ok(())
    }

    /// The variables set so far that no `env:` in scope names (`declared`), and `PATH` with
    /// the added entries first when there are any (`path` is the `PATH` the step has
    /// otherwise). Empty when no step wrote a file.
    pub(crate) fn step_env(
        &self,
        declared: impl Fn(&str) -> bool,
        path: Option<&str>,
    ) -> Vec<(String, String)> {
        let st = self.state();
        let mut out: Vec<(String, String)> = st
            .vars
            .iter()
            .filter(|(k, _)| !declared(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !st.path.is_empty() {
            let mut parts: Vec<&str> = st.path.iter().rev().map(String::as_str).collect();
            let rest = out
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone());
            let rest = rest.as_deref().or(path).unwrap_or("");
            if !rest.is_empty() {
                parts.push(rest);
            }
            out.push(("PATH".into(), parts.join(":")));
        }
        out
    }

    /// The variables set so far, for the `env` context of expressions.
    pub(crate) fn vars(&self) -> IndexMap<String, String> {
        self.state().vars.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the `GITHUB_ENV` format: plain lines, heredocs, `=` inside values, CRLF.
    #[test]
    fn env_file_plain_and_heredoc() {
        let text = "A=1\n\nB=x=y\r\nMULTI<<EOF\nline one\nline two\nEOF\nC=\n";
        let got = parse_env_file(text).unwrap();
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("MULTI".into(), "line one\nline two".into()),
                ("C".into(), String::new()),
            ]
        );
        // A value may contain `<<` after the `=`.
        assert_eq!(
            parse_env_file("D=a<<b").unwrap(),
            vec![("D".into(), "a<<b".into())]
        );
    }

    /// Guards the errors: the line number of the bad line, an unclosed heredoc.
    #[test]
    fn env_file_errors_name_the_line() {
        let e = parse_env_file("A=1\nnot a line\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("NAME=value"), "{}", e.message);
        let e = parse_env_file("A=1\n\nX<<END\nv\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not closed"), "{}", e.message);
        assert_eq!(parse_env_file("1X=2").unwrap_err().line, 1);
        assert_eq!(parse_env_file("=2").unwrap_err().line, 1);
        assert_eq!(parse_env_file("X<<").unwrap_err().line, 1);
    }

    /// Guards `GITHUB_PATH`: non-empty lines; the last written is searched first.
    #[test]
    fn path_entries_prepend_in_reverse() {
        assert_eq!(parse_path_file("/a\n\n /b \n"), vec!["/a", "/b"]);
        let dir = tempfile::tempdir().unwrap();
        let files = StepFiles::new(dir.path(), "s.1");
        std::fs::write(&files.path, "/a\n/b\n").unwrap();
        std::fs::write(&files.env, "K=v\nPATHLESS=1\n").unwrap();
        let fe = FileEnv::default();
        fe.absorb(&files).unwrap();
        assert!(!files.env.exists(), "the file is consumed");
        let env = fe.step_env(|k| k == "PATHLESS", Some("/usr/bin"));
        assert_eq!(
            env,
            vec![
                ("K".to_string(), "v".to_string()),
                ("PATH".to_string(), "/b:/a:/usr/bin".to_string())
            ]
        );
    }
}
