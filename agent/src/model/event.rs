//! The daemon's lifecycle events ([`DaemonEvent`]: what the bus carries to metrics, anomaly
//! detection, live viewers and webhooks) and the names webhooks subscribe to ([`EventKind`]).
//! Plain data, no I/O.

use std::sync::Arc;

use serde_json::Value;

use crate::model::{RunId, RunStatus, StepStatus};

/// An event a webhook can subscribe to (its `events:` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventKind {
    /// A run entered the queue.
    RunQueued,
    /// A run started (or resumed).
    RunStarted,
    /// A run succeeded.
    RunSucceeded,
    /// A run failed.
    RunFailed,
    /// A run was cancelled.
    RunCancelled,
    /// A step failed (after its last try).
    StepFailed,
    /// A failed try of a step will be retried.
    StepRetrying,
    /// The workflow's rollback steps started.
    RollbackStarted,
    /// The rollback ended.
    RollbackFinished,
    /// An error handler escalated a failure.
    Escalation,
    /// An error handler with `notify: true` matched.
    HandlerNotify,
    /// The anomaly detector raised an anomaly.
    Anomaly,
}

impl EventKind {
    /// Every event kind, in the documented order.
    pub(crate) const ALL: &'static [EventKind] = &[
        EventKind::RunQueued,
        EventKind::RunStarted,
        EventKind::RunSucceeded,
        EventKind::RunFailed,
        EventKind::RunCancelled,
        EventKind::StepFailed,
        EventKind::StepRetrying,
        EventKind::RollbackStarted,
        EventKind::RollbackFinished,
        EventKind::Escalation,
        EventKind::HandlerNotify,
        EventKind::Anomaly,
    ];

    /// The name used in configs, payloads and the `X-Agent-Event` header.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::RunQueued => "run.queued",
            EventKind::RunStarted => "run.started",
            EventKind::RunSucceeded => "run.succeeded",
            EventKind::RunFailed => "run.failed",
            EventKind::RunCancelled => "run.cancelled",
            EventKind::StepFailed => "step.failed",
            EventKind::StepRetrying => "step.retrying",
            EventKind::RollbackStarted => "rollback.started",
            EventKind::RollbackFinished => "rollback.finished",
            EventKind::Escalation => "escalation",
            EventKind::HandlerNotify => "handler.notify",
            EventKind::Anomaly => "anomaly",
        }
    }

    /// The event reporting that a run ended in `status` (none for non-final states).
    pub(crate) fn for_run_end(status: RunStatus) -> Option<EventKind> {
        match status {
            RunStatus::Succeeded => Some(EventKind::RunSucceeded),
            RunStatus::Failed => Some(EventKind::RunFailed),
            RunStatus::Cancelled => Some(EventKind::RunCancelled),
            _ => None,
        }
    }

    /// The name of the outbox event a run's end writes when webhooks are configured (the
    /// notifier renders it into deliveries later), or `None`.
    pub(crate) fn outbox_run_end(webhooks: bool, status: RunStatus) -> Option<String> {
        webhooks
            .then(|| EventKind::for_run_end(status))
            .flatten()
            .map(|k| k.as_str().to_string())
    }

    /// True for `run.succeeded`, `run.failed` and `run.cancelled`.
    pub(crate) fn is_run_end(self) -> bool {
        matches!(
            self,
            EventKind::RunSucceeded | EventKind::RunFailed | EventKind::RunCancelled
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened in the daemon, for SSE, metrics and notifications.
#[derive(Debug, Clone)]
#[expect(
    dead_code,
    reason = "`workflow` and `attempt` are part of the event; no consumer reads them yet"
)]
pub(crate) enum DaemonEvent {
    /// A run entered the queue.
    RunQueued {
        /// The run.
        run_id: RunId,
        /// Its workflow.
        workflow: Arc<str>,
    },
    /// A run started (or resumed).
    RunStarted {
        /// The run.
        run_id: RunId,
        /// Its workflow.
        workflow: Arc<str>,
        /// Its repository.
        repo: Option<Arc<str>>,
    },
    /// A step try started.
    StepStarted {
        /// The run.
        run_id: RunId,
        /// The step id.
        step: Arc<str>,
        /// 1 for the first try.
        attempt: u32,
    },
    /// A step ended (or was skipped).
    StepFinished {
        /// The run.
        run_id: RunId,
        /// The step id.
        step: Arc<str>,
        /// How it ended.
        status: StepStatus,
    },
    /// A run reached a final state (or `interrupted`).
    RunFinished {
        /// The run.
        run_id: RunId,
        /// Its workflow.
        workflow: Arc<str>,
        /// Its final status.
        status: RunStatus,
        /// The run report (what `agent exec --json` prints), secrets masked.
        report: Arc<crate::model::report::RunReport>,
    },
    /// A failed try of a step will be retried after `delay` (`step.retrying` webhooks).
    StepRetrying {
        /// The run.
        run_id: RunId,
        /// The step id.
        step: Arc<str>,
        /// The try that failed.
        attempt: u32,
        /// Its error class.
        error_class: Arc<str>,
        /// The wait before the next try.
        delay: std::time::Duration,
    },
    /// The workflow's rollback steps started.
    RollbackStarted {
        /// The run.
        run_id: RunId,
    },
    /// The rollback ended.
    RollbackFinished {
        /// The run.
        run_id: RunId,
        /// True when every rollback step succeeded.
        succeeded: bool,
    },
    /// An error handler escalated a step's failure.
    Escalation {
        /// The run.
        run_id: RunId,
        /// The failing step.
        step: Arc<str>,
        /// Its error class.
        error_class: Arc<str>,
        /// What the handler said.
        message: Arc<str>,
    },
    /// An error handler with `notify: true` matched a step's failure.
    HandlerNotify {
        /// The run.
        run_id: RunId,
        /// The failing step.
        step: Arc<str>,
        /// Its error class.
        error_class: Arc<str>,
        /// The handler's action.
        action: Arc<str>,
    },
    /// An anomaly was detected and stored ([`crate::monitor::anomaly`]); the notifier sends it as
    /// an `anomaly` event.
    Anomaly {
        /// `slow_run`, `failure_rate` or `step_memory`.
        kind: Arc<str>,
        /// The workflow.
        workflow: Arc<str>,
        /// The run that showed it, if any.
        run_id: Option<RunId>,
        /// The anomaly as `GET /api/v1/anomalies` lists it: `id`, `kind`, `workflow`,
        /// `repo`, `run_id`, `step`, `message`, `details` (the figures), `created_at`.
        anomaly: Arc<Value>,
    },
    /// A cron schedule fired (counted by the metrics).
    CronFired,
    /// Fetching a watched repository failed (counted by the metrics).
    FetchFailed {
        /// The repository's configured name.
        repo: Arc<str>,
    },
}
