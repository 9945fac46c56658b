//! Engine events: what a run does, as it happens. The engine sends them on a channel and
//! knows nothing of who listens (terminal progress, store, webhooks, metrics, log stream).
//!
//! Sending is cheap when nobody listens: an [`EventSender`] without a channel drops events
//! before they are built (callers pass a closure).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::model::report::{RunReport, RunStatus, StepReport, StepStatus};

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One thing that happened in a run. Ids are shared strings so that events stay cheap.
#[derive(Debug, Clone)]
#[expect(
    dead_code,
    reason = "every event carries its run id (and a step its credit); no consumer reads them yet"
)]
pub(crate) enum EngineEvent {
    /// The run started.
    RunStarted {
        /// Run id.
        run_id: Arc<str>,
        /// Workflow name.
        workflow: Arc<str>,
    },
    /// A stage started.
    StageStarted {
        /// Run id.
        run_id: Arc<str>,
        /// Stage name.
        stage: Arc<str>,
        /// Number of steps in the stage.
        steps: usize,
    },
    /// A stage finished.
    StageFinished {
        /// Run id.
        run_id: Arc<str>,
        /// Stage name.
        stage: Arc<str>,
        /// Its status.
        status: StepStatus,
        /// True when it failed only through failures the run tolerated (`continued` steps).
        continued: bool,
        /// Its wall time.
        duration: Duration,
    },
    /// A step try started.
    StepStarted {
        /// Run id.
        run_id: Arc<str>,
        /// Step id.
        step: Arc<str>,
        /// 1 for the first try.
        attempt: u32,
    },
    /// Step output: one or more whole lines, each ending with `\n`, already masked. Lines
    /// are batched (one chunk per read of the step's pipe, at most about
    /// [`LOG_CREDIT_BYTES`]), so a step printing a million lines makes a few hundred events.
    StepOutput {
        /// Run id.
        run_id: Arc<str>,
        /// Step id.
        step: Arc<str>,
        /// Where it came from.
        stream: LogStream,
        /// The lines.
        text: String,
        /// Holds the chunk's share of the run's output allowance until the event is
        /// dropped by its consumer (see [`EventSender`]).
        credit: LogCredit,
    },
    /// A step ended (after its last try), or was skipped.
    StepFinished {
        /// Run id.
        run_id: Arc<str>,
        /// The step's report entry.
        report: StepReport,
    },
    /// A step's context update was merged into the run's context (top-level steps only);
    /// the daemon saves it with the step so a resumed run gets it back.
    ContextChanged {
        /// Run id.
        run_id: Arc<str>,
        /// The whole context after the merge (unmasked: it stays inside the daemon).
        context: serde_json::Map<String, serde_json::Value>,
    },
    /// A failed try will be retried after `delay`.
    Retrying {
        /// Run id.
        run_id: Arc<str>,
        /// Step id.
        step: Arc<str>,
        /// The try that failed.
        attempt: u32,
        /// Its error class.
        error_class: String,
        /// Wait before the next try.
        delay: Duration,
    },
    /// The workflow's rollback steps start.
    RollbackStarted {
        /// Run id.
        run_id: Arc<str>,
    },
    /// The rollback ended.
    RollbackFinished {
        /// Run id.
        run_id: Arc<str>,
        /// `succeeded` or `failed`.
        status: StepStatus,
    },
    /// The compensation steps of `step` start.
    Compensating {
        /// Run id.
        run_id: Arc<str>,
        /// The step being undone.
        step: Arc<str>,
    },
    /// An error handler escalated a failure.
    Escalation {
        /// Run id.
        run_id: Arc<str>,
        /// Failing step.
        step: Arc<str>,
        /// Its error class.
        error_class: String,
        /// What happened.
        message: String,
    },
    /// An error handler with `notify: true` matched.
    HandlerNotify {
        /// Run id.
        run_id: Arc<str>,
        /// Failing step.
        step: Arc<str>,
        /// Its error class.
        error_class: String,
        /// The handler's action.
        action: String,
    },
    /// Sent (only by a sender made with [`EventSender::channel_with_barriers`]) right after
    /// a [`EngineEvent::StepStarted`] and before the step's process is spawned: the listener
    /// answers once everything sent before is durably recorded, and the engine waits for
    /// that answer. An error answer fails the step (class `StorageError`) without running
    /// it. A crashed daemon thus always knows which steps may have run.
    Barrier {
        /// Run id.
        run_id: Arc<str>,
        /// Where to answer.
        ack: BarrierAck,
    },
    /// The run ended; the final report.
    RunFinished {
        /// Run id.
        run_id: Arc<str>,
        /// Final status.
        status: RunStatus,
        /// The report.
        report: Box<RunReport>,
    },
}

/// The answer slot of an [`EngineEvent::Barrier`]: `Ok(())` once recorded, or why not.
#[derive(Debug, Clone)]
pub(crate) struct BarrierAck(Arc<std::sync::Mutex<Option<BarrierAnswer>>>);

/// Where a barrier's answer goes.
type BarrierAnswer = oneshot::Sender<Result<(), String>>;

impl BarrierAck {
    /// Answers the waiting engine (only the first answer counts).
    pub(crate) fn answer(&self, result: Result<(), String>) {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }
}

/// Output bytes of one run that may be sent and not yet consumed (dropped by the receiver).
/// A step whose output would go beyond it is paused (its pipe is not read, so it blocks in
/// its own `write`) until the consumer catches up: memory stays flat whatever steps print.
pub(crate) const LOG_CREDIT_BYTES: usize = 1024 * 1024;

/// A [`EngineEvent::StepOutput`] chunk's share of its run's output allowance, given back
/// when the last clone of the event is dropped.
#[derive(Clone, Default)]
pub(crate) struct LogCredit(Option<Arc<OwnedSemaphorePermit>>);

impl std::fmt::Debug for LogCredit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.as_ref().map_or(0, |p| p.num_permits());
        write!(f, "LogCredit({n})")
    }
}

/// The sending side; `None` inside means nobody listens. Lifecycle events are never held
/// back or dropped; step output is limited to [`LOG_CREDIT_BYTES`] in flight per run.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventSender {
    tx: Option<mpsc::UnboundedSender<EngineEvent>>,
    credit: Option<Arc<Semaphore>>,
    /// With barriers: how long the engine waits for an answer before it fails the step.
    barriers: Option<Duration>,
}

impl EventSender {
    /// A sender that drops everything.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        EventSender {
            tx: None,
            barriers: None,
            credit: None,
        }
    }

    /// A connected sender and its receiver.
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<EngineEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Arc::new(Semaphore::new(LOG_CREDIT_BYTES));
        (
            EventSender {
                tx: Some(tx),
                credit: Some(credit),
                barriers: None,
            },
            rx,
        )
    }

    /// Like [`EventSender::channel`], and the engine waits on an [`EngineEvent::Barrier`]
    /// before each step process is spawned: for a listener that records steps durably. A
    /// step whose barrier is not answered within `timeout` fails (`StorageError`) unrun.
    pub(crate) fn channel_with_barriers(
        timeout: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<EngineEvent>) {
        let (mut sender, rx) = Self::channel();
        sender.barriers = Some(timeout);
        (sender, rx)
    }

    /// How long the engine waits for a barrier's answer; `None` without barriers.
    pub(crate) fn barrier_timeout(&self) -> Option<Duration> {
        self.barriers
    }

    /// Sends a barrier when this sender asks for them and someone listens; the receiver
    /// gets the listener's answer (an error when the listener went away without one).
    pub(crate) fn barrier(
        &self,
        run_id: &Arc<str>,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        self.barriers?;
        let tx = self.tx.as_ref().filter(|t| !t.is_closed())?;
        let (answer, wait) = oneshot::channel();
        let ack = BarrierAck(Arc::new(std::sync::Mutex::new(Some(answer))));
        tx.send(EngineEvent::Barrier {
            run_id: run_id.clone(),
            ack,
        })
        .ok()?;
        Some(wait)
    }

    /// A sink for one step try's output (see [`OutputChunks`]).
    pub(crate) fn output(
        &self,
        run_id: Arc<str>,
        step: Arc<str>,
        masker: crate::model::mask::Masker,
    ) -> OutputChunks {
        OutputChunks {
            events: self.clone(),
            run_id,
            step,
            masker,
            pending: [String::new(), String::new()],
        }
    }

    /// True when someone may listen.
    pub(crate) fn is_active(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| !t.is_closed())
    }

    /// Sends the event built by `f`, if anyone listens.
    pub(crate) fn emit(&self, f: impl FnOnce() -> EngineEvent) {
        if let Some(tx) = &self.tx
            && !tx.is_closed()
        {
            let _ = tx.send(f());
        }
    }
}

/// Batches one step try's output lines into [`EngineEvent::StepOutput`] chunks, masked on
/// whole lines (a secret never straddles a chunk), and holds the step's pipes back while
/// its run's output allowance is used up (a [`runners::OutputSink`]).
#[derive(Debug)]
pub(crate) struct OutputChunks {
    events: EventSender,
    run_id: Arc<str>,
    step: Arc<str>,
    masker: crate::model::mask::Masker,
    /// Unsent lines, stdout and stderr.
    pending: [String; 2],
}

const STREAMS: [LogStream; 2] = [LogStream::Stdout, LogStream::Stderr];

impl OutputChunks {
    fn event(&self, i: usize, text: String, credit: Option<OwnedSemaphorePermit>) -> EngineEvent {
        let text = match self.masker.mask(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(masked) => masked,
        };
        EngineEvent::StepOutput {
            run_id: self.run_id.clone(),
            step: self.step.clone(),
            stream: STREAMS[i],
            text,
            credit: LogCredit(credit.map(Arc::new)),
        }
    }

    fn send(&mut self, i: usize, credit: Option<OwnedSemaphorePermit>) {
        let text = std::mem::take(&mut self.pending[i]);
        let event = self.event(i, text, credit);
        if let Some(tx) = &self.events.tx {
            let _ = tx.send(event);
        }
    }

    /// The allowance a chunk of `len` bytes takes (a chunk larger than the whole allowance
    /// takes all of it).
    fn permits(len: usize) -> u32 {
        u32::try_from(len.min(LOG_CREDIT_BYTES)).unwrap_or(u32::MAX)
    }
}

impl runners::OutputSink for OutputChunks {
    fn line(&mut self, stream: runners::Stream, line: &str) {
        if !self.events.is_active() {
            return;
        }
        let buf = &mut self.pending[usize::from(stream == runners::Stream::Stderr)];
        buf.push_str(line);
        buf.push('\n');
    }

    fn lines(&mut self, stream: runners::Stream, lines: &str) {
        if self.events.is_active() {
            self.pending[usize::from(stream == runners::Stream::Stderr)].push_str(lines);
        }
    }

    fn end_of_read(&mut self) -> bool {
        for i in 0..2 {
            if self.pending[i].is_empty() {
                continue;
            }
            match &self.events.credit {
                None => self.send(i, None),
                Some(sem) => {
                    let n = Self::permits(self.pending[i].len());
                    match sem.clone().try_acquire_many_owned(n) {
                        Ok(permit) => self.send(i, Some(permit)),
                        Err(_) => return false,
                    }
                }
            }
        }
        true
    }

    async fn ready(&mut self) {
        for i in 0..2 {
            if self.pending[i].is_empty() {
                continue;
            }
            let permit = match &self.events.credit {
                // Cancel-safe: nothing is taken before the permit is there.
                Some(sem) => sem
                    .clone()
                    .acquire_many_owned(Self::permits(self.pending[i].len()))
                    .await
                    .ok(),
                None => None,
            };
            self.send(i, permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mask::Masker;

    #[test]
    fn none_never_builds_events() {
        let s = EventSender::none();
        s.emit(|| panic!("must not be built"));
        assert!(!s.is_active());
    }

    /// Guards the output allowance: chunks not yet consumed hold the run's credit, the
    /// sink then asks the reader to wait, and it may go on once the consumer dropped them.
    #[tokio::test]
    async fn output_waits_for_the_consumer() {
        use runners::{OutputSink, Stream};
        let (s, mut rx) = EventSender::channel();
        let mut out = s.output("r".into(), "st".into(), Masker::default());
        let line = "x".repeat(1000);
        let mut sent = 0;
        loop {
            for _ in 0..16 {
                out.line(Stream::Stdout, &line);
            }
            if !out.end_of_read() {
                break;
            }
            sent += 16 * 1001;
            assert!(sent <= LOG_CREDIT_BYTES, "{sent} bytes sent unconsumed");
        }
        assert!(sent + 16 * 1001 > LOG_CREDIT_BYTES);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), out.ready());
        assert!(waiting.await.is_err(), "ready while nothing was consumed");
        let mut got = 0;
        while let Ok(EngineEvent::StepOutput { text, .. }) = rx.try_recv() {
            got += text.len();
        }
        assert_eq!(got, sent);
        out.ready().await;
        assert!(matches!(rx.try_recv(), Ok(EngineEvent::StepOutput { .. })));
    }

    /// Masking applies to whole lines: a secret the step wrote in two pieces (two reads)
    /// is still masked, and each chunk holds only whole lines.
    #[tokio::test]
    async fn output_chunks_are_masked_whole_lines() {
        use runners::StepCommand;
        let (s, mut rx) = EventSender::channel();
        let mut out = s.output("r".into(), "st".into(), Masker::new(["hunter22"]));
        let cmd = StepCommand::for_script(
            "printf 'pw=hun'; sleep 0.05; printf 'ter22 end\\n'; echo bad hunter22 >&2",
            None,
            &[],
        );
        let outcome = runners::run_with_sink(cmd, &mut out, runners::Cancel::new())
            .await
            .expect("run");
        assert!(outcome.success());
        drop(out);
        drop(s);
        let mut stdout = String::new();
        let mut stderr = String::new();
        while let Some(ev) = rx.recv().await {
            if let EngineEvent::StepOutput { text, stream, .. } = ev {
                assert!(text.ends_with('\n'), "{text:?}");
                match stream {
                    LogStream::Stdout => stdout.push_str(&text),
                    LogStream::Stderr => stderr.push_str(&text),
                }
            }
        }
        assert_eq!(stdout, "pw=*** end\n");
        assert_eq!(stderr, "bad ***\n");
    }

    #[tokio::test]
    async fn channel_delivers() {
        let (s, mut rx) = EventSender::channel();
        s.emit(|| EngineEvent::RollbackStarted { run_id: "r".into() });
        assert!(matches!(
            rx.recv().await,
            Some(EngineEvent::RollbackStarted { .. })
        ));
        drop(rx);
        s.emit(|| panic!("closed: must not be built"));
    }
}
