//! The records the store reads and writes: runs, steps, attempts, deliveries, cache entries.
//!
//! These are plain data; the SQL that maps them lives in the sibling modules.

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use crate::model::status::{DeliveryStatus, TriggerKind};
pub use crate::model::{RunId, RunStatus, StepStatus};

/// What started a run, with the commit and time it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The kind of trigger.
    pub kind: TriggerKind,
    /// The commit the run checks out, if any.
    pub commit: Option<String>,
    /// The branch the commit was seen on, if any.
    pub branch: Option<String>,
    /// For schedule triggers, the cron slot the run stands for.
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Trigger {
    /// A trigger of `kind` with no commit, branch or slot.
    pub fn new(kind: TriggerKind) -> Self {
        Trigger {
            kind,
            commit: None,
            branch: None,
            scheduled_for: None,
        }
    }
}

/// What a run's trigger says beyond its kind, commit and branch (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RunEvent {
    /// The full ref the run is for when it is not the branch's, such as `refs/tags/v1.2.0`
    /// (a tag push) or `refs/pull/7/head` (a pull request).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The pull request of a `pull_request` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestEvent>,
}

/// The pull request a `pull_request` run builds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PullRequestEvent {
    /// Its number on the forge.
    pub number: u64,
    /// The hook's action (`opened`, `synchronize`, `reopened`).
    pub action: String,
    /// The branch it merges into.
    pub base: String,
    /// The branch it comes from (in the head repository).
    pub head: String,
    /// The head commit (the one the run checks out).
    pub head_sha: String,
    /// `owner/name` of the repository the head branch lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_repo: Option<String>,
    /// The head lives in another repository than the base (a fork): the run gets no secrets
    /// unless the repository's `secrets_for_forks` says so.
    pub fork: bool,
}

/// A run to put in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The workflow's `name:`.
    pub workflow: String,
    /// The configured repository name, if the run belongs to one.
    pub repo: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// Parameter values (a JSON object).
    pub parameters: Value,
    /// `metadata.priority`: higher runs first among runs that may start.
    pub priority: i64,
    /// `concurrency.group`: runs of one group run one at a time, first in first out.
    pub concurrency_group: Option<String>,
    /// A key that makes the enqueue idempotent: a second run with the same key is not
    /// created (for example `push:<repo>:<workflow>:<commit>`).
    pub dedup_key: Option<String>,
    /// The run this one retries, for `agent retry`.
    pub retry_of: Option<RunId>,
    /// The workflow file (relative to the repository root, or the path given to the daemon)
    /// that this run executes. Two files may share a `name:`; the file decides.
    pub workflow_file: Option<String>,
    /// What the run does when runs of its group are still active, decided by the store in
    /// the transaction that queues it ([`super::overlap`]); `None`: no rule, it just queues.
    /// Set from the workflow by [`super::overlap::mode`].
    pub overlap: Option<super::overlap::Overlap>,
    /// The pushed ref and pull request, for tag and pull-request runs.
    pub event: Option<RunEvent>,
}

impl NewRun {
    /// A run of `workflow` with no repository, empty parameters and default priority.
    pub fn new(workflow: impl Into<String>, trigger: Trigger) -> Self {
        NewRun {
            workflow: workflow.into(),
            repo: None,
            trigger,
            parameters: Value::Object(Default::default()),
            priority: 0,
            concurrency_group: None,
            dedup_key: None,
            retry_of: None,
            workflow_file: None,
            overlap: None,
            event: None,
        }
    }
}

/// What `enqueue_run` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new run was queued.
    Created(RunId),
    /// A run with the same dedup key already existed; nothing was written.
    Duplicate(RunId),
    /// The run's overlap rule (`skip`) found `active` still going: the run was recorded as
    /// cancelled (`run`, its error saying why) instead of queued.
    Skipped {
        /// The recorded, cancelled run.
        run: RunId,
        /// The active run of its group that made it skip.
        active: RunId,
    },
}

impl Enqueued {
    /// The run's id, new or existing.
    pub fn run_id(self) -> RunId {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) | Enqueued::Skipped { run: id, .. } => {
                id
            }
        }
    }
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Its id.
    pub id: RunId,
    /// The workflow's name.
    pub workflow: String,
    /// The repository, if any.
    pub repo: Option<String>,
    /// Current status.
    pub status: RunStatus,
    /// What started it.
    pub trigger: Trigger,
    /// Parameter values.
    pub parameters: Value,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it (last) started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the scheduler claimed it (queued runs only; cleared on boot).
    pub claimed_at: Option<DateTime<Utc>>,
    /// The error that ended it, if any.
    pub error: Option<String>,
    /// Its priority.
    pub priority: i64,
    /// Its concurrency group.
    pub concurrency_group: Option<String>,
    /// Its dedup key.
    pub dedup_key: Option<String>,
    /// The run it retries.
    pub retry_of: Option<RunId>,
    /// The workflow context as of the last finished step (restored on resume).
    pub context: Option<Value>,
    /// The final run report (the JSON of `agent exec --json`), once finished.
    pub report: Option<Value>,
    /// The workflow file this run executes (`None` for runs queued before files were
    /// recorded: they execute the workflow found by name).
    pub workflow_file: Option<String>,
    /// Who holds the claim on this run (a queued run claimed, or a running run), if anyone.
    pub claim_owner: Option<String>,
    /// When the owner's claim lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Someone asked the owner to cancel this run; the owner sees it on its next renew.
    pub cancel_requested: bool,
    /// The pushed ref and pull request, for tag and pull-request runs.
    pub event: Option<RunEvent>,
}

impl RunRecord {
    /// Milliseconds between start and finish (or `now` while running), if it started.
    pub fn duration_ms(&self, now: DateTime<Utc>) -> Option<i64> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or(now);
        Some((end - start).num_milliseconds().max(0))
    }

    /// What a run listing shows of it.
    #[cfg(test)]
    pub(crate) fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id,
            workflow: self.workflow.clone(),
            repo: self.repo.clone(),
            status: self.status,
            trigger: self.trigger.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            error: self.error.clone(),
            retry_of: self.retry_of,
            commit_message: None,
        }
    }
}

/// What a run listing shows of a run: everything but its parameters, context and report,
/// which `list_run_summaries` never reads.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Its id.
    pub id: RunId,
    /// The workflow's name.
    pub workflow: String,
    /// The repository, if any.
    pub repo: Option<String>,
    /// Current status.
    pub status: RunStatus,
    /// What started it.
    pub trigger: Trigger,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it (last) started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The error that ended it, if any.
    pub error: Option<String>,
    /// The run it retries.
    pub retry_of: Option<RunId>,
    /// The summary line of the commit's message, when the daemon recorded it (push runs);
    /// `None` from [`RunRecord::summary`], which does not read it.
    pub commit_message: Option<String>,
}

impl RunSummary {
    /// Milliseconds between start and finish (or `now` while running), if it started.
    pub(crate) fn duration_ms(&self, now: DateTime<Utc>) -> Option<i64> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or(now);
        Some((end - start).num_milliseconds().max(0))
    }
}

/// Which runs `list_runs` returns; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this repository.
    pub repo: Option<String>,
    /// Only runs of commits seen on this branch.
    pub branch: Option<String>,
    /// Only runs started by this kind of trigger.
    pub trigger: Option<TriggerKind>,
    /// Only runs whose workflow name or commit message contains this text (ASCII letters
    /// matched without regard to case).
    pub text: Option<String>,
}

/// A step starting an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStart {
    /// The stage it belongs to.
    pub stage: String,
    /// The step's id.
    pub step_id: String,
    /// The attempt number, 1 for the first try.
    pub attempt: u32,
}

/// A step attempt ending (or a step that never ran being marked skipped/cancelled).
#[derive(Debug, Clone, PartialEq)]
pub struct StepFinish {
    /// The stage it belongs to.
    pub stage: String,
    /// The step's id.
    pub step_id: String,
    /// The attempt number that ended (0 for a step that never started).
    pub attempt: u32,
    /// How it ended.
    pub status: StepStatus,
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The error class of a failure.
    pub error_class: Option<String>,
    /// A one-line error text.
    pub error: Option<String>,
    /// The step's outputs (a JSON object), if any.
    pub outputs: Option<Value>,
    /// Whether the result came from the cache.
    pub cached: bool,
    /// The run's context after this step; saved on the run so a resumed run gets it back.
    pub context: Option<Value>,
    /// How long the step waited for admission before its first process started.
    pub queued_ms: Option<u64>,
}

impl StepFinish {
    /// A finish record with just the status; the optional fields empty.
    pub fn new(
        stage: impl Into<String>,
        step_id: impl Into<String>,
        attempt: u32,
        status: StepStatus,
    ) -> Self {
        StepFinish {
            stage: stage.into(),
            step_id: step_id.into(),
            attempt,
            status,
            exit_code: None,
            error_class: None,
            error: None,
            outputs: None,
            cached: false,
            context: None,
            queued_ms: None,
        }
    }
}

/// A stored step: its latest state over all attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The run.
    pub run_id: RunId,
    /// The stage.
    pub stage: String,
    /// The step's id.
    pub step_id: String,
    /// Current status.
    pub status: StepStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// Error class of the last failed attempt.
    pub error_class: Option<String>,
    /// Outputs of the last attempt.
    pub outputs: Option<Value>,
    /// Whether it was served from the cache.
    pub cached: bool,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last attempt finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it waited for admission before its first process started (when known).
    pub queued_ms: Option<u64>,
}

/// A stored attempt of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The run.
    pub run_id: RunId,
    /// The step's id.
    pub step_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// How it went.
    pub status: StepStatus,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Error class.
    pub error_class: Option<String>,
    /// Error text.
    pub error: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: Option<DateTime<Utc>>,
}

/// How a run ended, for `finish_run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFinish {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// The error text, if it failed.
    pub error: Option<String>,
    /// The run report (the JSON of `agent exec --json`).
    pub report: Option<Value>,
    /// With `context.preserve: true`, the context to keep for the workflow's next run.
    pub preserved_context: Option<Value>,
    /// Webhook deliveries to queue in the same transaction (the outbox pattern: a finished
    /// run and its notifications are written together or not at all).
    pub deliveries: Vec<NewDelivery>,
    /// The lifecycle event the run's end announces (`run.succeeded`, ...), queued
    /// un-rendered in the outbox in the same transaction; the notifier renders it into
    /// deliveries ([`Db::render_outbox_events`](crate::store::Db::render_outbox_events)).
    pub event: Option<String>,
    /// When the run ended (default: when the end is written). The run task sets it to the
    /// time its webhook notices were built with, so the API's `duration_ms` and the
    /// webhooks' are one figure.
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunFinish {
    /// A finish with `status` and nothing else.
    pub fn new(status: RunStatus) -> Self {
        RunFinish {
            status,
            error: None,
            report: None,
            preserved_context: None,
            deliveries: Vec::new(),
            event: None,
            finished_at: None,
        }
    }
}

/// A webhook delivery to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The configured webhook's name or URL.
    pub webhook: String,
    /// The event (`run.finished`, ...).
    pub event: String,
    /// The run it is about, if any.
    pub run_id: Option<RunId>,
    /// The payload (already rendered for the target format).
    pub body: Value,
}

/// A stored webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The id, sent as `X-Agent-Delivery` on every attempt.
    pub id: String,
    /// The webhook.
    pub webhook: String,
    /// The event.
    pub event: String,
    /// The run it is about.
    pub run_id: Option<RunId>,
    /// The payload.
    pub body: Value,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// Each attempt made, oldest first (filled by `list_deliveries` only).
    pub history: Vec<DeliveryAttempt>,
}

/// One attempt to deliver a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// From 1.
    pub attempt: u32,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The HTTP status, if one came back.
    pub status_code: Option<u16>,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// What happened to a delivery attempt, for `record_delivery_attempt`.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// The receiver accepted it.
    Delivered {
        /// The HTTP status.
        status_code: u16,
    },
    /// It failed; try again at `next_attempt_at`.
    Retry {
        /// The HTTP status, if any.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
    },
    /// It failed for good.
    GaveUp {
        /// The HTTP status, if any.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// A cached step result.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    /// The cache key.
    pub key: String,
    /// The cached value (the step's outputs).
    pub value: Value,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which finished runs `prune_runs` deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many finished runs (the newest).
    pub max_runs: Option<usize>,
    /// Delete finished runs that finished before this time.
    pub finished_before: Option<DateTime<Utc>>,
    /// Forget cron slots fired before this time, keeping each schedule's latest one (the
    /// catch-up after a restart starts from it).
    pub cron_fires_before: Option<DateTime<Utc>>,
}

/// A lease as its holder has it: name, holder and fencing token. Writes fenced by it are
/// refused ([`StoreError::LeaseLost`](super::StoreError::LeaseLost)) once another holder
/// took the lease over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name (`cron`, `outbox`, `poll:<repo>`).
    pub lease: String,
    /// Who holds it (the node's name).
    pub holder: String,
    /// The token the holder got when it took the lease.
    pub token: u64,
}

impl Fence {
    /// The error a write fenced by this stale lease answers.
    pub(crate) fn lost(&self) -> super::StoreError {
        super::StoreError::LeaseLost {
            lease: self.lease.clone(),
            holder: self.holder.clone(),
            token: self.token,
        }
    }
}
