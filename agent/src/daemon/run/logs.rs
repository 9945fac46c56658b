//! Step log files: one file per step under `state_dir/logs/<run>/<step>.log`, capped, and
//! their retention.
//!
//! Output arrives from the engine in chunks of whole lines, already masked (secrets never
//! reach a file); each chunk is one `write`. A file holds at most about the cap: its first
//! half is written as the output comes (live followers read it as it grows), and past that
//! the last half-cap of output is kept in memory and appended when the step ends, after a
//! marker line saying how many bytes were dropped in between ([`dropped_marker`]). So the
//! start of a step's output and its end, where a failing step's error is, both survive.
//! The step's exit status is recorded in the store, which the cap does not affect.
//!
//! On a shared store (a fleet on PostgreSQL) the files are also copied into the store as they
//! grow, by a [`LogShipper`] ([`RunLogs::shipping`]), so every node serves them.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::log_ship::{LogShipper, SETTLE};
use crate::store::RunId;

/// The marker line that stands for the `dropped` bytes of output between a capped log's
/// head and its tail.
pub(crate) fn dropped_marker(dropped: u64) -> String {
    format!("[... {dropped} bytes dropped ...]")
}

pub(crate) use crate::state_dir::{run_log_dir, step_log_path};

/// Removes the logs of runs deleted by retention.
pub(crate) fn remove_run_logs(state_dir: &Path, runs: &[RunId]) {
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
    /// Bytes in the file.
    written: u64,
    /// Output past the head, newest last, at most the tail size.
    tail: VecDeque<u8>,
    /// Bytes of output past the head that left the tail.
    dropped: u64,
}

impl StepLog {
    /// Writes `bytes` to the file; a log that cannot be written is reported once and
    /// dropped, the run goes on.
    fn put(&mut self, step: &str, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(bytes) {
            Ok(()) => self.written += bytes.len() as u64,
            Err(err) => {
                tracing::warn!(step, error = %err, "cannot write step log");
                self.file = None;
            }
        }
    }
}

/// The log files of one run, written by the run's recorder.
pub(crate) struct RunLogs {
    dir: PathBuf,
    state_dir: PathBuf,
    run: RunId,
    /// Bytes written as they come.
    head: u64,
    /// Bytes kept from the end.
    tail: u64,
    open: HashMap<String, StepLog>,
    /// Copies the files into a shared store; `None` on a lone agent.
    shipper: Option<LogShipper>,
}

impl std::fmt::Debug for RunLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLogs")
            .field("dir", &self.dir)
            .field("head", &self.head)
            .field("tail", &self.tail)
            .finish()
    }
}

impl RunLogs {
    /// The logs of run `run`, each file capped at about `cap` bytes: the first half and the
    /// last half of a step's output, and a marker line between them.
    pub(crate) fn new(state_dir: &Path, run: RunId, cap: u64) -> RunLogs {
        RunLogs {
            dir: run_log_dir(state_dir, run),
            state_dir: state_dir.to_path_buf(),
            run,
            head: cap - cap / 2,
            tail: cap / 2,
            open: HashMap::new(),
            shipper: None,
        }
    }

    /// Copies the logs into the store through `shipper` as they are written (a fleet's
    /// shared store); a file started here is first filled with what the store holds of the
    /// step's log (written by the node that ran it before).
    pub(crate) fn shipping(mut self, shipper: Option<LogShipper>) -> RunLogs {
        self.shipper = shipper;
        self
    }

    /// Starts (or continues, on a retry or resume) the log of `step`; makes the file exist
    /// so readers see the step has a log. A retry (`attempt` above 1) begins with a marker
    /// line.
    pub(crate) fn start(&mut self, step: &str, attempt: u32) {
        self.entry(step);
        if attempt > 1 {
            self.line(step, &format!("[agent: attempt {attempt}]"));
        }
    }

    /// Appends one line (a newline is added).
    pub(crate) fn line(&mut self, step: &str, line: &str) {
        self.write(step, &format!("{line}\n"));
    }

    /// Appends output: whole lines, each ending with a newline. Never fails.
    pub(crate) fn write(&mut self, step: &str, text: &str) {
        self.append(step, text);
        if let Some(shipper) = &self.shipper
            && let Some(log) = self.open.get(step)
        {
            shipper.wrote(self.run, step, log.written);
        }
    }

    fn append(&mut self, step: &str, text: &str) {
        let (head, tail) = (self.head, self.tail);
        let log = self.entry(step);
        let mut rest = text.as_bytes();
        if log.tail.is_empty() && log.dropped == 0 && log.written < head {
            // Whole lines while they fit in the head; the rest goes to the tail.
            let room = usize::try_from(head - log.written).unwrap_or(usize::MAX);
            let fit = if rest.len() <= room {
                rest.len()
            } else {
                rest[..room]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1)
            };
            log.put(step, &rest[..fit]);
            rest = &rest[fit..];
        }
        if rest.is_empty() {
            return;
        }
        let tail = usize::try_from(tail).unwrap_or(usize::MAX);
        if rest.len() >= tail {
            log.dropped += (log.tail.len() + rest.len() - tail) as u64;
            log.tail.clear();
            log.tail.extend(&rest[rest.len() - tail..]);
        } else {
            let over = (log.tail.len() + rest.len()).saturating_sub(tail);
            log.tail.drain(..over);
            log.dropped += over as u64;
            log.tail.extend(rest);
        }
    }

    /// Ends the log of a finished step: writes the kept tail (after the dropped-bytes
    /// marker when output was dropped) and closes the file.
    pub(crate) fn finish(&mut self, step: &str) {
        if let Some(mut log) = self.open.remove(step) {
            Self::flush_tail(step, &mut log);
            if let Some(shipper) = &self.shipper {
                shipper.ended(self.run, step, log.written);
            }
        }
    }

    /// On a shared store, waits (at most [`SETTLE`], or until `stop` says so) until the
    /// store holds the whole log of the finished `step`, so a node that sees the step ended
    /// in the store finds all of its log there. Answers at once on a lone agent; false when
    /// it stopped waiting first.
    pub(crate) fn settle(&self, step: &str, stop: &dyn Fn() -> bool) -> bool {
        match &self.shipper {
            Some(shipper) => shipper.settle(self.run, step, SETTLE, stop),
            None => true,
        }
    }

    fn flush_tail(step: &str, log: &mut StepLog) {
        let mut tail = std::mem::take(&mut log.tail);
        if log.dropped > 0 {
            // The tail starts at a line boundary.
            let cut = tail
                .iter()
                .position(|b| *b == b'\n')
                .map_or(tail.len(), |i| i + 1);
            if cut < tail.len() {
                tail.drain(..cut);
                log.dropped += cut as u64;
            }
            let marker = format!("{}\n", dropped_marker(log.dropped));
            log.put(step, marker.as_bytes());
        }
        let (a, b) = tail.as_slices();
        log.put(step, a);
        log.put(step, b);
        log.dropped = 0;
    }

    fn entry(&mut self, step: &str) -> &mut StepLog {
        if !self.open.contains_key(step) {
            let path = step_log_path(&self.state_dir, self.run, step);
            let file = std::fs::create_dir_all(&self.dir)
                .and_then(|()| File::options().create(true).append(true).open(&path));
            let (mut file, mut written) = match file {
                Ok(f) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    (Some(f), len)
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot open step log");
                    (None, 0)
                }
            };
            if let (Some(shipper), Some(f)) = (&self.shipper, file.as_mut()) {
                let stored = if written == 0 {
                    Self::seed(shipper, self.run, step, f)
                } else {
                    None
                };
                written += stored.unwrap_or(0);
                shipper.opened(self.run, step, path, written, stored);
            }
            self.open.insert(
                step.to_string(),
                StepLog {
                    file,
                    written,
                    tail: VecDeque::new(),
                    dropped: 0,
                },
            );
        }
        self.open
            .get_mut(step)
            .expect("the entry was inserted above")
    }
}

impl RunLogs {
    /// Fills a new log file with what the store holds of the step's log; answers how many
    /// bytes (`None`: the store could not be read, or the file not written).
    fn seed(shipper: &LogShipper, run: RunId, step: &str, file: &mut File) -> Option<u64> {
        let bytes = match shipper.stored(run, step) {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(run = %run, step, error = %err, "cannot read the step's log from the store");
                return None;
            }
        };
        match file.write_all(&bytes) {
            Ok(()) => Some(bytes.len() as u64),
            Err(err) => {
                tracing::warn!(run = %run, step, error = %err, "cannot write step log");
                None
            }
        }
    }
}

impl Drop for RunLogs {
    /// Steps still open when the recorder stops (a shutdown) keep their tails too.
    fn drop(&mut self) {
        for (step, log) in &mut self.open {
            Self::flush_tail(step, log);
            if let Some(shipper) = &self.shipper {
                shipper.ended(self.run, step, log.written);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_dir::step_log_read_path;

    /// Guards that a capped log keeps the end of the output (where a failing step's error
    /// is) as well as the start, and says how much was dropped between them.
    #[test]
    fn capped_logs_keep_head_and_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Head 30 bytes, tail 30 bytes.
        let mut logs = RunLogs::new(dir.path(), RunId(7), 60);
        logs.start("build", 1);
        logs.write("build", "head-1\nhead-2\n");
        for n in 0..100 {
            logs.write("build", &format!("middle {n}\n"));
        }
        logs.write("build", "error: it broke\n");
        logs.finish("build");
        let text = std::fs::read_to_string(step_log_path(dir.path(), RunId(7), "build"))
            .expect("read log");
        let total = 14
            + (0..100)
                .map(|n| format!("middle {n}\n").len())
                .sum::<usize>()
            + 16;
        let head = "head-1\nhead-2\nmiddle 0\n";
        let kept_tail = "middle 99\nerror: it broke\n";
        let dropped = total - head.len() - kept_tail.len();
        assert_eq!(
            text,
            format!("{head}{}\n{kept_tail}", dropped_marker(dropped as u64))
        );
    }

    /// A step whose output fits the cap is written whole, without a marker, even when part
    /// of it went through the tail.
    #[test]
    fn output_within_the_cap_is_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut logs = RunLogs::new(dir.path(), RunId(9), 40);
        logs.write("s", "0123456789012345678\n");
        logs.write("s", "abc\n");
        logs.write("s", "defghi\n");
        drop(logs);
        let text =
            std::fs::read_to_string(step_log_path(dir.path(), RunId(9), "s")).expect("read log");
        assert_eq!(text, "0123456789012345678\nabc\ndefghi\n");
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
