//! The terminal sink: a compact live view of a run on stderr.
//!
//! On a terminal, each finished step prints one status line (status mark, id, duration,
//! attempt; the mark green, red or yellow) and a single bottom line shows what is running
//! now, rewritten in place and cut to the terminal's width so that it always fits one row.
//! When stderr is not a terminal, `TERM` is `dumb` or `NO_COLOR` is set (to anything but
//! the empty string), plain lines only and no escape sequences. Step output lines are
//! prefixed with the step id in every mode. Lines arrive masked from the engine.
//!
//! When steps failed, the run's last line is followed by a recap (see [`crate::engine::recap`]):
//! each failed step with its error and its last lines, then one line naming them all.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::events::{EngineEvent, LogStream};
use crate::engine::recap::{self, FailedStep, Tail};
use crate::model::fmt::duration as fmt_duration;
use crate::model::report::{CalledWorkflow, RunStatus, StepStatus};

fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
        StepStatus::Running => "running",
        StepStatus::Pending => "pending",
        StepStatus::Interrupted => "interrupted",
    }
}

/// The mark of a failure the run tolerated (`on_failure: continue`).
const CONTINUED: &str = "failed (continued)";

/// The mark of a step served from the cache.
const CACHED: &str = "cached";

/// The colour escape of a status (green success, red failure, yellow the rest).
fn status_color(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "\x1b[32m",
        StepStatus::Failed => "\x1b[31m",
        _ => "\x1b[33m",
    }
}

/// How the view writes: a live bottom line or plain lines, colours or none, and the width
/// of the terminal in columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    /// Keep a "running" line at the bottom, rewritten in place.
    pub(crate) live: bool,
    /// Colour status marks.
    pub(crate) color: bool,
    /// Terminal columns.
    pub(crate) width: usize,
}

/// Columns assumed when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;

impl Style {
    /// The style for a stream: live with colours on a terminal, plain lines when it is
    /// not one, `term` is `dumb` or `no_color` is set and not empty (the `NO_COLOR`
    /// convention).
    fn for_terminal(
        is_terminal: bool,
        term: Option<&str>,
        no_color: Option<&str>,
        width: Option<usize>,
    ) -> Style {
        let dumb = term.is_some_and(|t| t.trim() == "dumb");
        let no_color = no_color.is_some_and(|v| !v.is_empty());
        let live = is_terminal && !dumb && !no_color;
        Style {
            live,
            color: live,
            width: width.filter(|w| *w > 0).unwrap_or(DEFAULT_WIDTH),
        }
    }

    /// The style of this process's stderr.
    pub(crate) fn detect() -> Style {
        let term = std::env::var("TERM").ok();
        let no_color = std::env::var("NO_COLOR").ok();
        Style::for_terminal(
            std::io::stderr().is_terminal(),
            term.as_deref(),
            no_color.as_deref(),
            stderr_width(),
        )
    }
}

/// The width of the terminal on stderr, if it is one and says.
fn stderr_width() -> Option<usize> {
    // SAFETY: `winsize` is plain old data; TIOCGWINSZ only writes into the struct we pass,
    // and fails harmlessly (returns -1) when fd 2 is not a terminal.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Columns a character takes on a terminal: 0 for controls and combining marks, 2 for the
/// wide East Asian ranges and emoji, else 1.
fn char_width(c: char) -> usize {
    let u = u32::from(c);
    if c.is_control() || (0x300..=0x36F).contains(&u) || (0x200B..=0x200F).contains(&u) {
        0
    } else if (0x1100..=0x115F).contains(&u)
        || (0x2E80..=0xA4CF).contains(&u)
        || (0xAC00..=0xD7A3).contains(&u)
        || (0xF900..=0xFAFF).contains(&u)
        || (0xFE30..=0xFE4F).contains(&u)
        || (0xFF00..=0xFF60).contains(&u)
        || (0xFFE0..=0xFFE6).contains(&u)
        || (0x1F300..=0x1F64F).contains(&u)
        || (0x1F900..=0x1F9FF).contains(&u)
        || (0x20000..=0x3FFFD).contains(&u)
    {
        2
    } else {
        1
    }
}

/// `text` cut to at most `cols` columns; a cut text ends in `…`.
pub(crate) fn clip(text: &str, cols: usize) -> String {
    let total: usize = text.chars().map(char_width).sum();
    if total <= cols {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w + 1 > cols {
            break;
        }
        used += w;
        out.push(c);
    }
    if cols > 0 {
        out.push('…');
    }
    out
}

/// True when a called workflow (or one it called) has a failed step of its own.
fn has_failed_step(called: &CalledWorkflow) -> bool {
    let failed = |s: &crate::model::report::StepReport| {
        s.status == StepStatus::Failed || s.workflow.as_deref().is_some_and(has_failed_step)
    };
    called.stages.iter().flat_map(|st| &st.steps).any(failed)
        || called.compensation.iter().any(failed)
        || called
            .rollback
            .as_ref()
            .is_some_and(|r| r.steps.iter().any(failed))
}

/// Renders events as text. Separate from the I/O so that it can be tested.
#[derive(Debug)]
struct ProgressView {
    style: Style,
    running: Vec<(String, u32, Instant)>,
    status_line: bool,
    /// The last lines of every running step.
    tails: HashMap<String, Tail>,
    /// Failed steps, in the order they ended, for the recap.
    failed: Vec<FailedStep>,
}

impl ProgressView {
    /// A view; `tty` selects the live mode with colours (80 columns).
    #[cfg(test)]
    pub(crate) fn new(tty: bool) -> Self {
        ProgressView::with_style(Style {
            live: tty,
            color: tty,
            width: DEFAULT_WIDTH,
        })
    }

    /// A view in the given style.
    fn with_style(style: Style) -> Self {
        ProgressView {
            style,
            running: Vec::new(),
            status_line: false,
            tails: HashMap::new(),
            failed: Vec::new(),
        }
    }

    /// The terminal was resized.
    fn set_width(&mut self, width: usize) {
        if width > 0 {
            self.style.width = width;
        }
    }

    /// A status word, coloured on a colour terminal.
    fn paint(&self, status: StepStatus, word: &str) -> String {
        if self.style.color {
            format!("{}{word}\x1b[0m", status_color(status))
        } else {
            word.to_string()
        }
    }

    /// The text to write for one event (may be empty).
    pub(crate) fn render(&mut self, ev: &EngineEvent) -> String {
        let mut out = String::new();
        if self.style.live && self.status_line {
            out.push_str("\r\x1b[K");
            self.status_line = false;
        }
        match ev {
            EngineEvent::RunStarted { workflow, run_id } => {
                out.push_str(&format!("run {run_id} of {workflow}\n"));
            }
            EngineEvent::StageStarted { stage, steps, .. } => {
                let noun = if *steps == 1 { "step" } else { "steps" };
                out.push_str(&format!("stage {stage} ({steps} {noun})\n"));
            }
            EngineEvent::StageFinished {
                stage,
                status,
                continued,
                duration,
                ..
            } => {
                let mark = if *continued { CONTINUED } else { mark(*status) };
                out.push_str(&format!(
                    "stage {stage} {} in {}\n",
                    self.paint(*status, mark),
                    fmt_duration(*duration)
                ));
            }
            EngineEvent::StepStarted { step, attempt, .. } => {
                self.running.retain(|(s, _, _)| s != &**step);
                self.running
                    .push((step.to_string(), *attempt, Instant::now()));
                if *attempt > 1
                    && let Some(tail) = self.tails.get_mut(&**step)
                {
                    tail.push(&format!("[agent: attempt {attempt}]"));
                }
                if !self.style.live {
                    if *attempt > 1 {
                        out.push_str(&format!("  {step}: started (attempt {attempt})\n"));
                    } else {
                        out.push_str(&format!("  {step}: started\n"));
                    }
                }
            }
            EngineEvent::StepOutput {
                step, text, stream, ..
            } => {
                let sep = match stream {
                    LogStream::Stdout => " | ",
                    LogStream::Stderr => " ! ",
                };
                // One lookup per chunk, not per line.
                if !self.tails.contains_key(&**step) {
                    self.tails.insert(step.to_string(), Tail::new());
                }
                let mut tail = self.tails.get_mut(&**step);
                for line in text.split_terminator('\n') {
                    out.push_str("  ");
                    out.push_str(step);
                    out.push_str(sep);
                    out.push_str(line);
                    out.push('\n');
                    if let Some(tail) = tail.as_deref_mut() {
                        tail.push(line);
                    }
                }
            }
            EngineEvent::StepFinished { report, .. } => {
                self.running.retain(|(s, _, _)| s != &report.id);
                let tail = self.tails.remove(&report.id).unwrap_or_default();
                // A call whose called steps failed is recapped through them.
                if report.status == StepStatus::Failed
                    && report
                        .workflow
                        .as_deref()
                        .is_none_or(|w| !has_failed_step(w))
                {
                    self.failed.push(FailedStep {
                        id: report.id.clone(),
                        error: recap::describe(report.error_class.as_deref(), report.exit_code),
                        tail,
                    });
                }
                let shown = if report.continued {
                    CONTINUED
                } else if report.cached {
                    CACHED
                } else {
                    mark(report.status)
                };
                let shown = self.paint(report.status, shown);
                let mut line = match &report.name {
                    Some(name) => format!("  {} ({name}): {shown}", report.id),
                    None => format!("  {}: {shown}", report.id),
                };
                if let Some(ms) = report.duration_ms {
                    line.push_str(&format!(" in {}", fmt_duration(Duration::from_millis(ms))));
                }
                if report.attempts > 1 {
                    line.push_str(&format!(" (attempt {})", report.attempts));
                }
                if let Some(c) = &report.error_class {
                    line.push_str(&format!(" [{c}"));
                    if let Some(code) = report.exit_code {
                        line.push_str(&format!(", exit {code}"));
                    }
                    line.push(']');
                }
                line.push('\n');
                out.push_str(&line);
            }
            EngineEvent::Retrying {
                step,
                attempt,
                error_class,
                delay,
                ..
            } => {
                out.push_str(&format!(
                    "  {step}: attempt {attempt} failed ({error_class}), retrying in {}\n",
                    fmt_duration(*delay)
                ));
            }
            EngineEvent::RollbackStarted { .. } => out.push_str("rollback\n"),
            EngineEvent::RollbackFinished { status, .. } => {
                out.push_str(&format!(
                    "rollback {}\n",
                    self.paint(*status, mark(*status))
                ));
            }
            EngineEvent::Compensating { step, .. } => {
                out.push_str(&format!("compensating {step}\n"));
            }
            EngineEvent::Escalation {
                step,
                error_class,
                message,
                ..
            } => {
                out.push_str(&format!("ESCALATION {step} [{error_class}]: {message}\n"));
            }
            EngineEvent::HandlerNotify {
                step,
                error_class,
                action,
                ..
            } => {
                out.push_str(&format!(
                    "notify: {step} failed with {error_class}, handler action {action}\n"
                ));
            }
            EngineEvent::ContextChanged { .. } | EngineEvent::Barrier { .. } => {}
            EngineEvent::RunFinished { status, report, .. } => {
                let d = report
                    .duration_ms
                    .map(|ms| fmt_duration(Duration::from_millis(ms)))
                    .unwrap_or_default();
                let (word, as_step) = match status {
                    RunStatus::Succeeded => ("succeeded", StepStatus::Succeeded),
                    RunStatus::Failed => ("failed", StepStatus::Failed),
                    RunStatus::Cancelled => ("cancelled", StepStatus::Cancelled),
                    other => (other.as_str(), StepStatus::Cancelled),
                };
                out.push_str(&format!("run {} in {d}", self.paint(as_step, word)));
                if let Some(e) = &report.error {
                    out.push_str(&format!(": {e}"));
                }
                out.push('\n');
                self.running.clear();
                self.tails.clear();
                out.push_str(&recap::render(&self.failed, self.style.color));
            }
        }
        if self.style.live && !self.running.is_empty() {
            out.push_str(&self.status());
            self.status_line = true;
        }
        out
    }

    /// Redraws the "running" line (terminal mode); empty when nothing runs.
    fn refresh(&mut self) -> String {
        if !self.style.live || self.running.is_empty() {
            return String::new();
        }
        let mut out = String::from("\r\x1b[K");
        out.push_str(&self.status());
        self.status_line = true;
        out
    }

    /// The bottom line: what runs now, cut to one column less than the terminal is wide
    /// (the cursor never reaches the last column, so the line never wraps).
    fn status(&self) -> String {
        let parts: Vec<String> = self
            .running
            .iter()
            .map(|(s, a, t)| {
                let mut p = format!("{s} {}", fmt_duration(t.elapsed()));
                if *a > 1 {
                    p.push_str(&format!(" #{a}"));
                }
                p
            })
            .collect();
        const SHOWN: usize = 5;
        let more = parts.len().saturating_sub(SHOWN);
        let mut line = parts.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            line.push_str(&format!(", +{more} more"));
        }
        let line = clip(
            &format!("running: {line}"),
            self.style.width.saturating_sub(1),
        );
        if self.style.color {
            format!("\x1b[2m{line}\x1b[0m")
        } else {
            line
        }
    }

    /// Whether the bottom line is on screen (it must be cleared before exiting).
    fn has_status_line(&self) -> bool {
        self.status_line
    }
}

/// Writes events to stderr until the channel closes. Returns when the last sender is gone.
/// In the live mode the "running" line is refreshed every 250 ms so durations tick, and
/// the terminal's width is read again then.
pub(crate) async fn run_stderr_sink(mut rx: UnboundedReceiver<EngineEvent>) {
    let style = Style::detect();
    let live = style.live;
    let mut view = ProgressView::with_style(style);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let text = tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let mut text = view.render(&ev);
                // Drain what is already queued to write in one go.
                while let Ok(ev) = rx.try_recv() {
                    text.push_str(&view.render(&ev));
                }
                text
            }
            _ = tick.tick(), if live => {
                if let Some(w) = stderr_width() {
                    view.set_width(w);
                }
                view.refresh()
            }
        };
        if text.is_empty() {
            continue;
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
    if live && view.has_status_line() {
        let _ = std::io::stderr().write_all(b"\r\x1b[K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::StepReport;

    #[test]
    fn plain_lines() {
        let mut v = ProgressView::new(false);
        let s = v.render(&EngineEvent::StepStarted {
            run_id: "r".into(),
            step: "build".into(),
            attempt: 1,
        });
        assert_eq!(s, "  build: started\n");
        let s = v.render(&EngineEvent::StepOutput {
            run_id: "r".into(),
            step: "build".into(),
            stream: LogStream::Stdout,
            text: "hello\n\nworld\n".into(),
            credit: Default::default(),
        });
        assert_eq!(s, "  build | hello\n  build | \n  build | world\n");
        let mut rep = StepReport::pending("build");
        rep.status = StepStatus::Failed;
        rep.duration_ms = Some(1500);
        rep.attempts = 2;
        rep.error_class = Some("ExitCode".into());
        rep.exit_code = Some(3);
        let s = v.render(&EngineEvent::StepFinished {
            run_id: "r".into(),
            report: rep,
        });
        assert_eq!(
            s,
            "  build: FAILED in 1.5s (attempt 2) [ExitCode, exit 3]\n"
        );
    }

    /// Guards what a tolerated failure and a step's `name` look like.
    #[test]
    fn tolerated_failures_and_names() {
        let mut v = ProgressView::new(false);
        let mut rep = StepReport::pending("probe");
        rep.name = Some("Probe the mirror".into());
        rep.status = StepStatus::Failed;
        rep.continued = true;
        rep.duration_ms = Some(20);
        let s = v.render(&EngineEvent::StepFinished {
            run_id: "r".into(),
            report: rep,
        });
        assert_eq!(
            s,
            "  probe (Probe the mirror): failed (continued) in 20ms\n"
        );
        let s = v.render(&EngineEvent::StageFinished {
            run_id: "r".into(),
            stage: "checks".into(),
            status: StepStatus::Failed,
            continued: true,
            duration: Duration::from_millis(30),
        });
        assert_eq!(s, "stage checks failed (continued) in 30ms\n");
    }

    /// "stage s (1 steps)" read badly.
    #[test]
    fn one_step_is_singular() {
        let mut v = ProgressView::new(false);
        let stage = |steps| EngineEvent::StageStarted {
            run_id: "r".into(),
            stage: "s".into(),
            steps,
        };
        assert_eq!(v.render(&stage(1)), "stage s (1 step)\n");
        assert_eq!(v.render(&stage(2)), "stage s (2 steps)\n");
    }

    #[test]
    fn tty_status_line() {
        let mut v = ProgressView::new(true);
        let s = v.render(&EngineEvent::StepStarted {
            run_id: "r".into(),
            step: "a".into(),
            attempt: 2,
        });
        assert!(s.contains("running: a 0ms #2"), "{s:?}");
        let s = v.render(&EngineEvent::RollbackStarted { run_id: "r".into() });
        assert!(s.starts_with("\r\x1b[Krollback\n"), "{s:?}");
    }

    /// Visible columns of rendered text: escape sequences take none.
    fn visible_width(text: &str) -> usize {
        let mut width = 0;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                width += char_width(c);
            }
        }
        width
    }

    /// A status line wider than the terminal wrapped, and each rewrite left the wrapped rows
    /// behind; it is now cut to one column less than the width, whatever runs.
    #[test]
    fn the_running_line_fits_the_terminal() {
        for width in [1, 10, 24, 40, 80] {
            let mut v = ProgressView::with_style(Style {
                live: true,
                color: true,
                width,
            });
            for i in 0..8 {
                let s = v.render(&EngineEvent::StepStarted {
                    run_id: "r".into(),
                    step: format!("a_rather_long_step_id_{i}_ビルド").into(),
                    attempt: 1,
                });
                let status = s.rsplit('\n').next().expect("last row");
                assert!(
                    visible_width(status) < width.max(2),
                    "{width}: {status:?} is {} columns",
                    visible_width(status)
                );
            }
            let r = v.refresh();
            let status = r.trim_start_matches("\r\x1b[K");
            assert!(visible_width(status) < width.max(2), "{width}: {status:?}");
        }
        assert_eq!(clip("running: abc", 12), "running: abc");
        assert_eq!(clip("running: abcd", 12), "running: ab…");
        assert_eq!(clip("ビルドビルド", 7), "ビルド…");
    }

    #[test]
    fn dumb_terminals_and_no_color_get_plain_lines() {
        let live = Style::for_terminal(true, Some("xterm-256color"), None, Some(120));
        assert_eq!(
            live,
            Style {
                live: true,
                color: true,
                width: 120
            }
        );
        assert_eq!(
            Style::for_terminal(true, Some("xterm"), Some(""), None),
            Style {
                live: true,
                color: true,
                width: 80
            },
            "an empty NO_COLOR does not count"
        );
        for (tty, term, no_color) in [
            (true, Some("dumb"), None),
            (true, Some("xterm"), Some("1")),
            (false, Some("xterm"), None),
        ] {
            let style = Style::for_terminal(tty, term, no_color, Some(100));
            assert!(!style.live && !style.color, "{tty} {term:?} {no_color:?}");
            let mut v = ProgressView::with_style(style);
            let mut text = v.render(&EngineEvent::StepStarted {
                run_id: "r".into(),
                step: "build".into(),
                attempt: 1,
            });
            let mut rep = StepReport::pending("build");
            rep.status = StepStatus::Failed;
            text.push_str(&v.render(&EngineEvent::StepFinished {
                run_id: "r".into(),
                report: rep,
            }));
            text.push_str(&v.refresh());
            assert!(!text.contains('\x1b'), "{text:?}");
            assert_eq!(text, "  build: started\n  build: FAILED\n");
        }
    }

    #[test]
    fn statuses_are_green_and_red_on_a_colour_terminal() {
        let mut v = ProgressView::new(true);
        let mut ok = StepReport::pending("a");
        ok.status = StepStatus::Succeeded;
        let s = v.render(&EngineEvent::StepFinished {
            run_id: "r".into(),
            report: ok,
        });
        assert!(s.contains("a: \x1b[32mok\x1b[0m"), "{s:?}");
        let mut bad = StepReport::pending("b");
        bad.status = StepStatus::Failed;
        let s = v.render(&EngineEvent::StepFinished {
            run_id: "r".into(),
            report: bad,
        });
        assert!(s.contains("b: \x1b[31mFAILED\x1b[0m"), "{s:?}");
    }

    fn finished(id: &str, status: StepStatus, class: Option<&str>) -> EngineEvent {
        let mut rep = StepReport::pending(id);
        rep.status = status;
        rep.error_class = class.map(str::to_string);
        rep.exit_code = class.map(|_| 1);
        EngineEvent::StepFinished {
            run_id: "r".into(),
            report: rep,
        }
    }

    fn log(step: &str, line: &str) -> EngineEvent {
        EngineEvent::StepOutput {
            run_id: "r".into(),
            step: step.into(),
            stream: LogStream::Stdout,
            text: format!("{line}\n"),
            credit: Default::default(),
        }
    }

    /// With parallel failures, the run's last line named only the first; the run now ends
    /// with every failed step, its error and its last lines, and a call whose called steps
    /// failed is shown through them.
    #[test]
    fn the_run_ends_with_a_recap_of_every_failure() {
        use crate::model::report::{CalledWorkflow, RunReport, StageReport};
        let mut v = ProgressView::new(false);
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&v.render(&log("unit", &format!("unit line {i}"))));
            text.push_str(&v.render(&log("lint", &format!("lint line {i}"))));
            text.push_str(&v.render(&log("ci/test", &format!("test line {i}"))));
        }
        text.push_str(&v.render(&finished("lint", StepStatus::Succeeded, None)));
        text.push_str(&v.render(&finished("unit", StepStatus::Failed, Some("ExitCode"))));
        text.push_str(&v.render(&finished("ci/test", StepStatus::Failed, Some("Timeout"))));
        let mut inner = StepReport::pending("test");
        inner.status = StepStatus::Failed;
        let mut call = StepReport::pending("ci");
        call.status = StepStatus::Failed;
        call.error_class = Some("Timeout".into());
        call.workflow = Some(Box::new(CalledWorkflow {
            name: "ci".into(),
            status: RunStatus::Failed,
            stages: vec![StageReport {
                name: "s".into(),
                status: StepStatus::Failed,
                steps: vec![inner],
            }],
            rollback: None,
            compensated: Vec::new(),
            compensation: Vec::new(),
            error: None,
        }));
        text.push_str(&v.render(&EngineEvent::StepFinished {
            run_id: "r".into(),
            report: call,
        }));
        let report = RunReport {
            run_id: "r".into(),
            workflow: "w".into(),
            status: RunStatus::Failed,
            started_at: None,
            finished_at: None,
            duration_ms: Some(10),
            parameters: Default::default(),
            stages: Vec::new(),
            rollback: None,
            compensated: Vec::new(),
            compensation: Vec::new(),
            error: Some("step `unit` failed".into()),
        };
        let end = v.render(&EngineEvent::RunFinished {
            run_id: "r".into(),
            status: RunStatus::Failed,
            report: Box::new(report),
        });
        assert!(
            end.starts_with("run failed in 10ms: step `unit` failed\n\n"),
            "{end}"
        );
        assert!(
            end.contains(
                "--- failed: unit (ExitCode, exit code 1), last 20 of 30 lines ---\nunit line 10\n"
            ),
            "{end}"
        );
        assert!(
            end.contains("--- failed: ci/test (Timeout, exit code 1), last 20 of 30 lines ---\ntest line 10\n"),
            "{end}"
        );
        assert!(!end.contains("lint line"), "{end}");
        assert!(
            end.ends_with("\nfailed steps (2): unit, ci/test\n"),
            "{end}"
        );
    }
}
