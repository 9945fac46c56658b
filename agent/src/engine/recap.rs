//! The recap of a run's failures: every failed step with its error and the last lines of
//! its log, headed per step, and one closing line naming them all. `agent exec` prints it
//! at the end of its progress (from the events it saw) and `agent logs RUN` at the end of
//! the logs (from the report and the log files), so that when many parallel steps fail,
//! each failure can be found without reading the interleaved output.
//!
//! This module only formats; it keeps no state beyond a bounded [`Tail`] per step.

use std::collections::VecDeque;

/// How many of a failed step's last log lines the recap shows.
pub(crate) const TAIL_LINES: usize = 20;

/// Longest line the recap shows in full (longer ones are cut, marked with `…`).
const LONGEST_LINE: usize = 1000;

/// The last [`TAIL_LINES`] lines of a log, and how many lines it had in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
    total: usize,
}

impl Tail {
    /// An empty tail.
    pub(crate) fn new() -> Tail {
        Tail::default()
    }

    /// The tail of a whole log text.
    pub(crate) fn of_text(text: &str) -> Tail {
        let mut tail = Tail::new();
        for line in text.lines() {
            tail.push(line);
        }
        tail
    }

    /// Adds one line (without its newline), dropping the oldest past [`TAIL_LINES`].
    pub(crate) fn push(&mut self, line: &str) {
        self.total += 1;
        // The oldest line's buffer is reused: a chatty step costs no allocation per line.
        let mut buf = if self.lines.len() == TAIL_LINES {
            self.lines.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        buf.clear();
        // No more bytes than the limit means no more characters: no need to count them.
        let cut = if line.len() <= LONGEST_LINE {
            None
        } else {
            line.char_indices().nth(LONGEST_LINE)
        };
        match cut {
            Some((cut, _)) => {
                buf.push_str(&line[..cut]);
                buf.push('…');
            }
            None => buf.push_str(line),
        }
        self.lines.push_back(buf);
    }

    /// The kept lines, oldest first.
    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// How many lines the log had.
    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

/// One failed step for the recap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailedStep {
    /// The step id as logs name it (`CALL/ID` inside a called workflow).
    pub(crate) id: String,
    /// Its error: the class and exit code (see [`describe`]).
    pub(crate) error: String,
    /// The end of its log.
    pub(crate) tail: Tail,
}

/// A step's error as the recap shows it: `ExitCode, exit code 3`, `Timeout`, or `failed`
/// when nothing more is known.
pub(crate) fn describe(error_class: Option<&str>, exit_code: Option<i32>) -> String {
    match (error_class, exit_code) {
        (Some(c), Some(code)) => format!("{c}, exit code {code}"),
        (Some(c), None) => c.to_string(),
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "failed".to_string(),
    }
}

/// The recap text (empty when nothing failed): per step a heading line and its last lines,
/// then `failed steps (N): a, b`. `color` paints the headings red.
pub(crate) fn render(failed: &[FailedStep], color: bool) -> String {
    if failed.is_empty() {
        return String::new();
    }
    let (red, bold, reset) = if color {
        ("\x1b[31m", "\x1b[1m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let mut out = String::from("\n");
    for f in failed {
        let what = match (f.tail.total(), f.tail.lines.len()) {
            (0, _) => "no output".to_string(),
            (1, 1) => "its only line".to_string(),
            (n, k) if n == k => format!("all {n} lines"),
            (n, k) => format!("last {k} of {n} lines"),
        };
        out.push_str(&format!(
            "{red}{bold}--- failed: {} ({}), {what} ---{reset}\n",
            f.id, f.error
        ));
        for line in f.tail.lines() {
            out.push_str(line);
            out.push('\n');
        }
    }
    let names: Vec<&str> = failed.iter().map(|f| f.id.as_str()).collect();
    out.push_str(&format!(
        "\n{red}{bold}failed steps ({}): {}{reset}\n",
        failed.len(),
        names.join(", ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_lines_and_counts_all() {
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let tail = Tail::of_text(&text);
        assert_eq!(tail.total(), 50);
        let kept: Vec<&str> = tail.lines().collect();
        assert_eq!(kept.len(), TAIL_LINES);
        assert_eq!(kept[0], "line 31");
        assert_eq!(kept[TAIL_LINES - 1], "line 50");
        let mut long = Tail::new();
        long.push(&"é".repeat(LONGEST_LINE + 5));
        assert_eq!(
            long.lines().next().expect("line").chars().count(),
            LONGEST_LINE + 1
        );
    }

    #[test]
    fn every_failure_is_headed_and_named_at_the_end() {
        let failed = vec![
            FailedStep {
                id: "unit".into(),
                error: describe(Some("ExitCode"), Some(3)),
                tail: Tail::of_text(&(1..=25).map(|i| format!("u{i}\n")).collect::<String>()),
            },
            FailedStep {
                id: "ci/lint".into(),
                error: describe(Some("Timeout"), None),
                tail: Tail::new(),
            },
            FailedStep {
                id: "x".into(),
                error: describe(None, None),
                tail: Tail::of_text("a\nb\n"),
            },
        ];
        let text = render(&failed, false);
        assert!(
            text.contains(
                "--- failed: unit (ExitCode, exit code 3), last 20 of 25 lines ---\nu6\n"
            ),
            "{text}"
        );
        assert!(text.contains("u25\n--- failed: ci/lint (Timeout), no output ---\n--- failed: x (failed), all 2 lines ---\na\nb\n"), "{text}");
        assert!(
            text.ends_with("\nfailed steps (3): unit, ci/lint, x\n"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        assert!(render(&failed, true).contains("\x1b[31m"));
        assert_eq!(render(&[], true), "");
    }
}
