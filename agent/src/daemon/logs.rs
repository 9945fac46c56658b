//! Step log files: one file per step under `state_dir/logs/<run>/<step>.log`, capped, and
//! their retention.
//!
//! Lines arrive already masked from the engine (secrets never reach a file). A file stops
//! growing at the cap: one marker line says it was truncated and how much was dropped is
//! counted; the step's exit status is still recorded in the store, which is not affected by
//! the cap. Readers (the API's log route) read the files as they grow.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::RunId;

/// The marker line written once when a step's log reaches the cap.
pub const TRUNCATED_MARKER: &str = "[agent: log truncated: the step wrote more than the cap]";

/// The directory of run `run`'s logs.
pub fn run_log_dir(state_dir: &Path, run: RunId) -> PathBuf {
    state_dir.join("logs").join(run.to_string())
}

/// The log file of step `step` of run `run` (the step id as events name it: `CALL/ID`
/// inside a called workflow). The file name keeps ASCII letters, digits, `_` and `-` and
/// writes every other byte as `%XX`, so distinct ids never share a file (`x/y` is
/// `x%2Fy.log`, `x_y` is `x_y.log`) and no id can name a path outside the run's directory.
/// A name longer than 200 bytes is cut and ends in a hash of the whole id.
pub fn step_log_path(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    use std::fmt::Write as _;
    const LONGEST: usize = 200;
    let mut name = String::with_capacity(step.len() + 4);
    for b in step.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') {
            name.push(char::from(b));
        } else {
            let _ = write!(name, "%{b:02X}");
        }
    }
    if name.is_empty() {
        name.push('_');
    }
    if name.len() > LONGEST {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(step.as_bytes());
        name.truncate(LONGEST - 34);
        name.push('~');
        for b in &hash[..16] {
            let _ = write!(name, "{b:02x}");
        }
    }
    name.push_str(".log");
    run_log_dir(state_dir, run).join(name)
}

/// The file name earlier versions gave a step's log (every character outside ASCII letters,
/// digits, `_` and `-` became `_`, so `x/y` and `x_y` shared one file): read for runs
/// logged before the change.
fn legacy_step_log_path(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    let mut name: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    name.push_str(".log");
    run_log_dir(state_dir, run).join(name)
}

/// Where to read the log of `step`: [`step_log_path`], or the file an earlier version
/// wrote when only that one exists.
pub fn step_log_read_path(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    let path = step_log_path(state_dir, run, step);
    if !path.exists() {
        let legacy = legacy_step_log_path(state_dir, run, step);
        if legacy != path && legacy.exists() {
            return legacy;
        }
    }
    path
}

/// Removes the logs of runs deleted by retention.
pub fn remove_run_logs(state_dir: &Path, runs: &[RunId]) {
    for run in runs {
        let dir = run_log_dir(state_dir, *run);
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot remove run logs");
        }
    }
}

/// One open step log.
struct StepLog {
    file: Option<File>,
    written: u64,
    truncated: bool,
}

/// The log files of one run, written by the run's recorder.
pub struct RunLogs {
    dir: PathBuf,
    state_dir: PathBuf,
    run: RunId,
    cap: u64,
    open: HashMap<String, StepLog>,
}

impl std::fmt::Debug for RunLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLogs")
            .field("dir", &self.dir)
            .field("cap", &self.cap)
            .finish()
    }
}

impl RunLogs {
    /// The logs of run `run`, each file capped at `cap` bytes.
    pub fn new(state_dir: &Path, run: RunId, cap: u64) -> RunLogs {
        RunLogs {
            dir: run_log_dir(state_dir, run),
            state_dir: state_dir.to_path_buf(),
            run,
            cap,
            open: HashMap::new(),
        }
    }

    /// Starts (or continues, on a retry or resume) the log of `step`; makes the file exist
    /// so readers see the step has a log. A retry (`attempt` above 1) begins with a marker
    /// line.
    pub fn start(&mut self, step: &str, attempt: u32) {
        self.entry(step);
        if attempt > 1 {
            self.line(step, &format!("[agent: attempt {attempt}]"));
        }
    }

    /// Appends one line (a newline is added). Never fails: a log that cannot be written is
    /// reported once and dropped, the run goes on.
    pub fn line(&mut self, step: &str, line: &str) {
        let cap = self.cap;
        let log = self.entry(step);
        let Some(file) = log.file.as_mut() else {
            return;
        };
        if log.truncated {
            return;
        }
        let len = line.len() as u64 + 1;
        if log.written + len > cap {
            log.truncated = true;
            let _ = writeln!(file, "{TRUNCATED_MARKER}");
            return;
        }
        log.written += len;
        if let Err(err) = writeln!(file, "{line}") {
            tracing::warn!(step, error = %err, "cannot write step log");
            log.file = None;
        }
    }

    /// Closes the file of a finished step.
    pub fn finish(&mut self, step: &str) {
        self.open.remove(step);
    }

    fn entry(&mut self, step: &str) -> &mut StepLog {
        if !self.open.contains_key(step) {
            let path = step_log_path(&self.state_dir, self.run, step);
            let file = std::fs::create_dir_all(&self.dir)
                .and_then(|()| File::options().create(true).append(true).open(&path));
            let (file, written) = match file {
                Ok(f) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    (Some(f), len)
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot open step log");
                    (None, 0)
                }
            };
            self.open.insert(
                step.to_string(),
                StepLog {
                    file,
                    written,
                    truncated: written >= self.cap && self.cap > 0,
                },
            );
        }
        self.open
            .get_mut(step)
            .expect("the entry was inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_capped_with_a_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut logs = RunLogs::new(dir.path(), RunId(7), 20);
        logs.start("build", 1);
        logs.line("build", "0123456789");
        logs.line("build", "abcdefghij");
        logs.line("build", "more");
        logs.finish("build");
        let text = std::fs::read_to_string(step_log_path(dir.path(), RunId(7), "build"))
            .expect("read log");
        assert_eq!(text, format!("0123456789\n{TRUNCATED_MARKER}\n"));
    }

    #[test]
    fn retries_are_marked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut logs = RunLogs::new(dir.path(), RunId(8), 1000);
        logs.start("t", 1);
        logs.line("t", "first try");
        logs.start("t", 2);
        logs.line("t", "second try");
        logs.finish("t");
        let text =
            std::fs::read_to_string(step_log_path(dir.path(), RunId(8), "t")).expect("read log");
        assert_eq!(text, "first try\n[agent: attempt 2]\nsecond try\n");
    }

    #[test]
    fn step_names_stay_inside_the_run_dir() {
        let p = step_log_path(Path::new("/s"), RunId(1), "../x/y");
        assert_eq!(p, PathBuf::from("/s/logs/1/%2E%2E%2Fx%2Fy.log"));
        for id in [
            "..",
            ".",
            "",
            "a/../../b",
            "\u{e9}t\u{e9}",
            &"z".repeat(600),
        ] {
            let p = step_log_path(Path::new("/s"), RunId(1), id);
            assert_eq!(p.parent(), Some(Path::new("/s/logs/1")), "{id}");
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            assert!(name.len() <= 204 && name.ends_with(".log"), "{name}");
            assert!(!name.starts_with('.'), "{name}");
        }
    }

    /// A called workflow's step `y` of the call step `x` and a step named `x_y` once wrote
    /// into one file; distinct ids now always get distinct files, long ones included.
    #[test]
    fn distinct_steps_never_share_a_log_file() {
        let ids = [
            "x/y".to_string(),
            "x_y".to_string(),
            "x.y".to_string(),
            "x%2Fy".to_string(),
            "x-y".to_string(),
            format!("{}a", "s".repeat(300)),
            format!("{}b", "s".repeat(300)),
        ];
        let paths: std::collections::HashSet<PathBuf> = ids
            .iter()
            .map(|id| step_log_path(Path::new("/s"), RunId(1), id))
            .collect();
        assert_eq!(paths.len(), ids.len(), "{paths:?}");
        assert_eq!(
            step_log_path(Path::new("/s"), RunId(1), "build-1_a"),
            PathBuf::from("/s/logs/1/build-1_a.log"),
            "plain ids keep their names"
        );
    }

    #[test]
    fn logs_written_before_the_naming_change_are_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("logs/4/call_inner.log");
        std::fs::create_dir_all(old.parent().expect("parent")).expect("mkdir");
        std::fs::write(&old, "old\n").expect("write");
        assert_eq!(step_log_read_path(dir.path(), RunId(4), "call/inner"), old);
        let mut logs = RunLogs::new(dir.path(), RunId(4), 100);
        logs.start("call/inner", 1);
        logs.finish("call/inner");
        assert_eq!(
            step_log_read_path(dir.path(), RunId(4), "call/inner"),
            dir.path().join("logs/4/call%2Finner.log")
        );
    }
}
