//! Engine events: what a run does, as it happens. The engine sends them on a channel and
//! knows nothing of who listens (terminal progress, store, webhooks, metrics, log stream).
//!
//! Sending is cheap when nobody listens: an [`EventSender`] without a channel drops events
//! before they are built (callers pass a closure).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::report::{RunReport, RunStatus, StepReport, StepStatus};

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One thing that happened in a run. Ids are shared strings so that events stay cheap.
#[derive(Debug, Clone)]
pub enum EngineEvent {
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
    /// A line of step output (already masked, without the newline).
    StepLog {
        /// Run id.
        run_id: Arc<str>,
        /// Step id.
        step: Arc<str>,
        /// Where it came from.
        stream: LogStream,
        /// The text.
        line: String,
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
pub struct BarrierAck(Arc<std::sync::Mutex<Option<BarrierAnswer>>>);

/// Where a barrier's answer goes.
type BarrierAnswer = oneshot::Sender<Result<(), String>>;

impl BarrierAck {
    /// Answers the waiting engine (only the first answer counts).
    pub fn answer(&self, result: Result<(), String>) {
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

/// The sending side; `None` inside means nobody listens.
#[derive(Debug, Clone, Default)]
pub struct EventSender {
    tx: Option<mpsc::UnboundedSender<EngineEvent>>,
    /// With barriers: how long the engine waits for an answer before it fails the step.
    barriers: Option<Duration>,
}

impl EventSender {
    /// A sender that drops everything.
    pub fn none() -> Self {
        EventSender {
            tx: None,
            barriers: None,
        }
    }

    /// A connected sender and its receiver.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<EngineEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            EventSender {
                tx: Some(tx),
                barriers: None,
            },
            rx,
        )
    }

    /// Like [`EventSender::channel`], and the engine waits on an [`EngineEvent::Barrier`]
    /// before each step process is spawned: for a listener that records steps durably. A
    /// step whose barrier is not answered within `timeout` fails (`StorageError`) unrun.
    pub fn channel_with_barriers(
        timeout: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<EngineEvent>) {
        let (mut sender, rx) = Self::channel();
        sender.barriers = Some(timeout);
        (sender, rx)
    }

    /// How long the engine waits for a barrier's answer; `None` without barriers.
    pub fn barrier_timeout(&self) -> Option<Duration> {
        self.barriers
    }

    /// Sends a barrier when this sender asks for them and someone listens; the receiver
    /// gets the listener's answer (an error when the listener went away without one).
    pub fn barrier(&self, run_id: &Arc<str>) -> Option<oneshot::Receiver<Result<(), String>>> {
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

    /// True when someone may listen.
    pub fn is_active(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| !t.is_closed())
    }

    /// Sends the event built by `f`, if anyone listens.
    pub fn emit(&self, f: impl FnOnce() -> EngineEvent) {
        if let Some(tx) = &self.tx
            && !tx.is_closed()
        {
            let _ = tx.send(f());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_never_builds_events() {
        let s = EventSender::none();
        s.emit(|| panic!("must not be built"));
        assert!(!s.is_active());
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
