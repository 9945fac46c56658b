//! The terminal sink: a compact live view of a run on stderr.
//!
//! On a terminal, each finished step prints one status line (status mark, id, duration,
//! attempt) and a single bottom line shows what is running now, rewritten in place. When
//! stderr is not a terminal, plain lines only. Step output lines are prefixed with the
//! step id in both modes. Lines arrive masked from the engine.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

use super::events::{EngineEvent, LogStream};
use super::report::{RunStatus, StepStatus};

/// Formats a duration compactly: `850ms`, `1.2s`, `3m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
        StepStatus::Running => "running",
        StepStatus::Pending => "pending",
    }
}

/// Renders events as text. Separate from the I/O so that it can be tested.
#[derive(Debug)]
pub struct ProgressView {
    tty: bool,
    running: Vec<(String, u32, Instant)>,
    status_line: bool,
}

impl ProgressView {
    /// A view; `tty` selects the live mode.
    pub fn new(tty: bool) -> Self {
        ProgressView {
            tty,
            running: Vec::new(),
            status_line: false,
        }
    }

    /// The text to write for one event (may be empty).
    pub fn render(&mut self, ev: &EngineEvent) -> String {
        let mut out = String::new();
        if self.tty && self.status_line {
            out.push_str("\r\x1b[K");
            self.status_line = false;
        }
        match ev {
            EngineEvent::RunStarted { workflow, run_id } => {
                out.push_str(&format!("run {run_id} of {workflow}\n"));
            }
            EngineEvent::StageStarted { stage, steps, .. } => {
                out.push_str(&format!("stage {stage} ({steps} steps)\n"));
            }
            EngineEvent::StageFinished {
                stage,
                status,
                duration,
                ..
            } => {
                out.push_str(&format!(
                    "stage {stage} {} in {}\n",
                    mark(*status),
                    fmt_duration(*duration)
                ));
            }
            EngineEvent::StepStarted { step, attempt, .. } => {
                self.running.retain(|(s, _, _)| s != &**step);
                self.running
                    .push((step.to_string(), *attempt, Instant::now()));
                if !self.tty {
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
                for line in text.split_terminator('\n') {
                    out.push_str("  ");
                    out.push_str(step);
                    out.push_str(sep);
                    out.push_str(line);
                    out.push('\n');
                }
            }
            EngineEvent::StepFinished { report, .. } => {
                self.running.retain(|(s, _, _)| s != &report.id);
                let mut line = format!("  {}: {}", report.id, mark(report.status));
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
                out.push_str(&format!("rollback {}\n", mark(*status)));
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
            EngineEvent::ContextChanged { .. } => {}
            EngineEvent::RunFinished { status, report, .. } => {
                let d = report
                    .duration_ms
                    .map(|ms| fmt_duration(Duration::from_millis(ms)))
                    .unwrap_or_default();
                let word = match status {
                    RunStatus::Succeeded => "succeeded",
                    RunStatus::Failed => "failed",
                    RunStatus::Cancelled => "cancelled",
                    other => other.as_str(),
                };
                out.push_str(&format!("run {word} in {d}"));
                if let Some(e) = &report.error {
                    out.push_str(&format!(": {e}"));
                }
                out.push('\n');
            }
        }
        if self.tty && !self.running.is_empty() {
            out.push_str(&self.status());
            self.status_line = true;
        }
        out
    }

    /// Redraws the "running" line (terminal mode); empty when nothing runs.
    pub fn refresh(&mut self) -> String {
        if !self.tty || self.running.is_empty() {
            return String::new();
        }
        let mut out = String::from("\r\x1b[K");
        out.push_str(&self.status());
        self.status_line = true;
        out
    }

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
        // Keep the line short enough for one terminal row.
        const SHOWN: usize = 5;
        let more = parts.len().saturating_sub(SHOWN);
        let mut line = parts.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            line.push_str(&format!(", +{more} more"));
        }
        format!("\x1b[2mrunning: {line}\x1b[0m")
    }
}

/// Writes events to stderr until the channel closes. Returns when the last sender is gone.
/// On a terminal the "running" line is refreshed every 250 ms so durations tick.
pub async fn run_stderr_sink(mut rx: UnboundedReceiver<EngineEvent>) {
    let tty = std::io::stderr().is_terminal();
    let mut view = ProgressView::new(tty);
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
            _ = tick.tick(), if tty => view.refresh(),
        };
        if text.is_empty() {
            continue;
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
    }
    if tty && view.status_line {
        let _ = std::io::stderr().write_all(b"\r\x1b[K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::report::StepReport;

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

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(5)), "5ms");
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(185)), "3m05s");
    }
}
