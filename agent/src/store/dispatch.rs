//! The store's operations on either backend: each method of [`Db`] runs the same-named method of
//! the SQLite or the PostgreSQL connection it holds (one transaction each). Generated shape: keep
//! one method per backend method, same name and signature.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Db;
use super::overlap::Admission;
use super::{
    AnomalyRecord, ArtifactRecord, AttemptRecord, CacheEntry, Delivery, DeliveryAttempt,
    DeliveryOutcome, Enqueued, NewAnomaly, NewDelivery, NewRun, Retention, RunFilter, RunFinish,
    RunId, RunRecord, RunSample, RunSummary, StepFinish, StepHistory, StepRecord, StepStart,
    StoreError, TriggerKind,
};
use super::{Heartbeat, NodeBeat, NodeRecord};

impl Db {
    /// Records the artifacts a step kept (replacing what an earlier try of the same step
    /// recorded under the same names).
    pub fn record_artifacts(&mut self, artifacts: &[ArtifactRecord]) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.record_artifacts(artifacts),
            Db::Postgres(db) => db.record_artifacts(artifacts),
        }
    }

    /// The artifacts of a run that retention has not removed, in the order they were kept.
    pub fn list_artifacts(&self, run: RunId) -> Result<Vec<ArtifactRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.list_artifacts(run),
            Db::Postgres(db) => db.list_artifacts(run),
        }
    }

    /// Artifact `name` of the newest succeeded run of `workflow` in repository `repo` on
    /// `branch` that kept one (not expired).
    pub fn latest_artifact(
        &self,
        workflow: &str,
        repo: Option<&str>,
        branch: Option<&str>,
        name: &str,
    ) -> Result<Option<ArtifactRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.latest_artifact(workflow, repo, branch, name),
            Db::Postgres(db) => db.latest_artifact(workflow, repo, branch, name),
        }
    }

    /// Deletes the artifacts whose `expires_at` has passed; answers how many.
    pub fn prune_artifacts(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(db) => db.prune_artifacts(now),
            Db::Postgres(db) => db.prune_artifacts(now),
        }
    }

    /// Every digest a kept artifact names.
    pub fn artifact_digests(&self) -> Result<HashSet<String>, StoreError> {
        match self {
            Db::Sqlite(db) => db.artifact_digests(),
            Db::Postgres(db) => db.artifact_digests(),
        }
    }

    /// The step history of `workflow`: its succeeded runs, the mean duration of each step
    /// and the outputs of its recent executions (cached results left out).
    pub fn step_history(&self, workflow: &str) -> Result<StepHistory, StoreError> {
        match self {
            Db::Sqlite(db) => db.step_history(workflow),
            Db::Postgres(db) => db.step_history(workflow),
        }
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        match self {
            Db::Sqlite(db) => db.schema_version(),
            Db::Postgres(db) => db.schema_version(),
        }
    }

    /// Remembers an inbound hook delivery id; false when it was already seen (a replay).
    /// Ids older than [`HOOK_DELIVERY_TTL`] are forgotten in the same transaction.
    pub fn record_hook_delivery(
        &mut self,
        source: &str,
        delivery_id: &str,
        repo: Option<&str>,
    ) -> Result<bool, StoreError> {
        match self {
            Db::Sqlite(db) => db.record_hook_delivery(source, delivery_id, repo),
            Db::Postgres(db) => db.record_hook_delivery(source, delivery_id, repo),
        }
    }

    /// Records an anomaly; `None` when the same kind was already recorded for the same run
    /// (and step), so detection may safely look at a run twice.
    pub fn record_anomaly(
        &mut self,
        anomaly: &NewAnomaly,
    ) -> Result<Option<AnomalyRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.record_anomaly(anomaly),
            Db::Postgres(db) => db.record_anomaly(anomaly),
        }
    }

    /// Recorded anomalies, newest first, optionally of one workflow.
    pub fn list_anomalies(
        &self,
        workflow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AnomalyRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.list_anomalies(workflow, limit),
            Db::Postgres(db) => db.list_anomalies(workflow, limit),
        }
    }

    /// The latest `limit` succeeded or failed runs of `workflow` in `repo` with an id up to
    /// `up_to` (inclusive), newest first. With `succeeded_only`, failed runs are left out.
    pub fn recent_run_samples(
        &self,
        workflow: &str,
        repo: Option<&str>,
        up_to: RunId,
        succeeded_only: bool,
        limit: usize,
    ) -> Result<Vec<RunSample>, StoreError> {
        match self {
            Db::Sqlite(db) => db.recent_run_samples(workflow, repo, up_to, succeeded_only, limit),
            Db::Postgres(db) => db.recent_run_samples(workflow, repo, up_to, succeeded_only, limit),
        }
    }

    /// The number of webhook deliveries in each status (`pending`, `delivered`, `failed`).
    pub fn count_deliveries_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.count_deliveries_by_status(),
            Db::Postgres(db) => db.count_deliveries_by_status(),
        }
    }

    /// The number of delivery attempts by outcome: `ok` (2xx), `http_4xx`, `http_5xx`,
    /// `error` (no answer: connection error or timeout).
    pub fn count_delivery_attempts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.count_delivery_attempts(),
            Db::Postgres(db) => db.count_delivery_attempts(),
        }
    }

    /// Queues a webhook delivery, due now; returns its id (the `X-Agent-Delivery` header).
    pub fn enqueue_delivery(&mut self, delivery: &NewDelivery) -> Result<String, StoreError> {
        match self {
            Db::Sqlite(db) => db.enqueue_delivery(delivery),
            Db::Postgres(db) => db.enqueue_delivery(delivery),
        }
    }

    /// Turns the un-rendered outbox events (of `run`, or all of them written at or before
    /// `written_by`) into deliveries, due now, in one transaction: `render` gets each event's run and event name and answers
    /// its deliveries; the event row goes with them, so a crash renders it again or not at
    /// all. Returns the deliveries queued.
    pub fn render_outbox_events(
        &mut self,
        run: Option<RunId>,
        written_by: Option<DateTime<Utc>>,
        render: impl FnMut(&RunRecord, &str) -> Vec<NewDelivery>,
    ) -> Result<Vec<NewDelivery>, StoreError> {
        match self {
            Db::Sqlite(db) => db.render_outbox_events(run, written_by, render),
            Db::Postgres(db) => db.render_outbox_events(run, written_by, render),
        }
    }

    /// Releases the held, never-attempted deliveries of `run` whose event is one of
    /// `events` (a run's end, queued by `finish_run`): each is due now and moves to the back
    /// of its webhook's queue (same id, `created_at` now), behind the run's earlier events.
    /// Returns how many were released.
    pub fn release_run_deliveries(
        &mut self,
        run: RunId,
        events: &[&str],
    ) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(db) => db.release_run_deliveries(run, events),
            Db::Postgres(db) => db.release_run_deliveries(run, events),
        }
    }

    /// Pending deliveries due at `now`, the most overdue first.
    pub fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Db::Sqlite(db) => db.due_deliveries(now, limit),
            Db::Postgres(db) => db.due_deliveries(now, limit),
        }
    }

    /// The oldest pending delivery of one webhook, due or not: the head of its FIFO queue
    /// (deliveries of a webhook are attempted one at a time, in the order they were queued).
    pub fn next_pending_delivery(&self, webhook: &str) -> Result<Option<Delivery>, StoreError> {
        match self {
            Db::Sqlite(db) => db.next_pending_delivery(webhook),
            Db::Postgres(db) => db.next_pending_delivery(webhook),
        }
    }

    /// Deletes delivered and failed deliveries (and their attempts) last touched before
    /// `before`; pending ones stay. Returns how many went.
    pub fn prune_deliveries(&mut self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(db) => db.prune_deliveries(before),
            Db::Postgres(db) => db.prune_deliveries(before),
        }
    }

    /// The latest attempt of a delivery, if it was attempted.
    pub fn last_delivery_attempt(&self, id: &str) -> Result<Option<DeliveryAttempt>, StoreError> {
        match self {
            Db::Sqlite(db) => db.last_delivery_attempt(id),
            Db::Postgres(db) => db.last_delivery_attempt(id),
        }
    }

    /// The webhooks that have pending deliveries, with how many each.
    pub fn pending_delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.pending_delivery_counts(),
            Db::Postgres(db) => db.pending_delivery_counts(),
        }
    }

    /// When the next pending delivery is due, so the notifier can sleep until then.
    pub fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self {
            Db::Sqlite(db) => db.next_delivery_due(),
            Db::Postgres(db) => db.next_delivery_due(),
        }
    }

    /// Records one attempt of a delivery and its consequence; returns the attempt number.
    pub fn record_delivery_attempt(
        &mut self,
        id: &str,
        outcome: &DeliveryOutcome,
    ) -> Result<u32, StoreError> {
        match self {
            Db::Sqlite(db) => db.record_delivery_attempt(id, outcome),
            Db::Postgres(db) => db.record_delivery_attempt(id, outcome),
        }
    }

    /// The newest deliveries first, each with its attempt history.
    pub fn list_deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        match self {
            Db::Sqlite(db) => db.list_deliveries(limit),
            Db::Postgres(db) => db.list_deliveries(limit),
        }
    }

    /// Puts a run in the queue under its overlap rule (`run.overlap`,
    /// decided in this transaction). With a
    /// `dedup_key` already used, nothing is written and the existing run is returned as
    /// [`Enqueued::Duplicate`]; a run its rule skips is recorded as cancelled
    /// ([`Enqueued::Skipped`]).
    pub fn enqueue_run(&mut self, run: &NewRun) -> Result<Enqueued, StoreError> {
        match self {
            Db::Sqlite(db) => db.enqueue_run(run),
            Db::Postgres(db) => db.enqueue_run(run),
        }
    }

    /// Queues `run` under its overlap rule (`run.overlap`), deciding in the same transaction
    /// that inserts it: two concurrent enqueues of one group see each other. A run its rule
    /// skips is not written ([`overlap::Admission::Skipped`]: the caller answers the request).
    pub fn enqueue(&mut self, run: &NewRun) -> Result<Admission, StoreError> {
        match self {
            Db::Sqlite(db) => db.enqueue(run),
            Db::Postgres(db) => db.enqueue(run),
        }
    }

    /// The queued and running runs whose cancellation was requested (`cancel_previous`,
    /// [`SqliteDb::request_cancel`]), oldest first: the scheduler cancels them.
    pub fn cancel_requested_runs(&self) -> Result<Vec<RunId>, StoreError> {
        match self {
            Db::Sqlite(db) => db.cancel_requested_runs(),
            Db::Postgres(db) => db.cancel_requested_runs(),
        }
    }

    /// Records a run that failed before it could be queued (an invalid workflow file: the
    /// diagnostics go in `error`). Deduplicated like [`SqliteDb::enqueue_run`].
    pub(crate) fn record_failed_run(
        &mut self,
        run: &NewRun,
        error: &str,
    ) -> Result<Enqueued, StoreError> {
        match self {
            Db::Sqlite(db) => db.record_failed_run(run, error),
            Db::Postgres(db) => db.record_failed_run(run, error),
        }
    }

    /// Claims up to `limit` queued runs for starting, in order: within a concurrency group,
    /// first in first out, and only when no run of the group is running or claimed; then by
    /// priority (highest first), then by age (oldest first). Claimed runs stay `queued` (with
    /// `claimed_at` set) until [`SqliteDb::mark_running`], and are not returned again;
    /// [`SqliteDb::release_claim`] hands one back. A run whose cancellation was requested is not
    /// claimed (it waits for its cancel, and keeps its place in its group meanwhile).
    pub fn claim(
        &mut self,
        owner: &str,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.claim(owner, limit, lease),
            Db::Postgres(db) => db.claim(owner, limit, lease),
        }
    }

    /// Gives a claimed run back to the queue (the scheduler could not start it after all).
    pub fn release_claim(&mut self, id: RunId) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.release_claim(id),
            Db::Postgres(db) => db.release_claim(id),
        }
    }

    /// Marks a queued run as running and stamps its start time (a resumed run keeps the time
    /// it first started).
    pub fn mark_running(&mut self, id: RunId) -> Result<RunRecord, StoreError> {
        match self {
            Db::Sqlite(db) => db.mark_running(id),
            Db::Postgres(db) => db.mark_running(id),
        }
    }

    /// Records that a step started an attempt (the run must be running).
    pub fn record_step_started(&mut self, id: RunId, step: &StepStart) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.record_step_started(id, step),
            Db::Postgres(db) => db.record_step_started(id, step),
        }
    }

    /// Records how a step attempt ended (or that a step that never ran was skipped or
    /// cancelled), and saves the run's context as of this step. Accepted whatever the run's
    /// status, so the last reports of a run being cancelled are kept.
    pub fn record_step_finished(&mut self, id: RunId, step: &StepFinish) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.record_step_finished(id, step),
            Db::Postgres(db) => db.record_step_finished(id, step),
        }
    }

    /// Records that a step attempt failed and will be retried: its status, error class and
    /// end time (the wait until the next attempt starts is the retry's backoff). An attempt
    /// already ended is left as it is.
    pub fn record_attempt_failed(
        &mut self,
        id: RunId,
        step_id: &str,
        attempt: u32,
        error_class: &str,
    ) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.record_attempt_failed(id, step_id, attempt, error_class),
            Db::Postgres(db) => db.record_attempt_failed(id, step_id, attempt, error_class),
        }
    }

    /// Ends a run: status, error, report, the preserved context and the webhook deliveries it
    /// triggers, all in one transaction. Allowed from running, queued and interrupted.
    pub fn finish_run(&mut self, id: RunId, finish: &RunFinish) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.finish_run(id, finish),
            Db::Postgres(db) => db.finish_run(id, finish),
        }
    }

    /// Takes back the claims whose lease has lapsed at `now`: a running run whose owner
    /// stopped renewing becomes interrupted (its running steps and attempts too, each step
    /// counting one interruption), and a claimed queued run goes back to the queue. A claim
    /// without a lease (written before leases existed) counts as lapsed. Returns the
    /// interrupted runs, oldest first, for the caller to resume or leave waiting.
    ///
    /// With SQLite one daemon owns a state directory at a time (its lock file proves every
    /// earlier owner is gone), so at boot the daemon passes the end of time: every claim
    /// found then is an earlier owner's and has lapsed.
    pub fn reclaim_expired(&mut self, now: DateTime<Utc>) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.reclaim_expired(now),
            Db::Postgres(db) => db.reclaim_expired(now),
        }
    }

    /// Extends `owner`'s lease on `ids` (claimed or running runs it holds) to `lease` from
    /// now. Answers the ids among them whose cancellation was requested
    /// ([`SqliteDb::request_cancel`]): the owner is expected to cancel them.
    pub fn renew(
        &mut self,
        owner: &str,
        ids: &[RunId],
        lease: std::time::Duration,
    ) -> Result<Vec<RunId>, StoreError> {
        match self {
            Db::Sqlite(db) => db.renew(owner, ids, lease),
            Db::Postgres(db) => db.renew(owner, ids, lease),
        }
    }

    /// Asks the owner of a queued or running run to cancel it; the owner sees the request on
    /// its next [`SqliteDb::renew`]. Answers whether the run was still active.
    pub fn request_cancel(&mut self, id: RunId) -> Result<bool, StoreError> {
        match self {
            Db::Sqlite(db) => db.request_cancel(id),
            Db::Postgres(db) => db.request_cancel(id),
        }
    }

    /// On shutdown, for a run left `running` for the next boot: its running steps (and
    /// attempts), stopped by the shutdown, become interrupted now. The boot then finds the
    /// run running and interrupts it, but counts no crash against these steps.
    pub fn mark_steps_stopped(&mut self, id: RunId) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.mark_steps_stopped(id),
            Db::Postgres(db) => db.mark_steps_stopped(id),
        }
    }

    /// The interrupted steps of a run with how many times each was interrupted by a boot
    /// ([`SqliteDb::reclaim_expired`] counts), in the order they were first recorded.
    pub fn interrupted_steps(&self, id: RunId) -> Result<Vec<(String, u32)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.interrupted_steps(id),
            Db::Postgres(db) => db.interrupted_steps(id),
        }
    }

    /// Puts an interrupted run back in the queue (to resume from its first unfinished step;
    /// finished steps and the saved context stay). Keeps its place: the queue orders by id.
    pub fn resume_run(&mut self, id: RunId) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.resume_run(id),
            Db::Postgres(db) => db.resume_run(id),
        }
    }

    /// One run, or `None`.
    pub fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.get_run(id),
            Db::Postgres(db) => db.get_run(id),
        }
    }

    /// A run with its steps, read in one snapshot (the API's run report).
    pub fn get_run_with_steps(
        &self,
        id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.get_run_with_steps(id),
            Db::Postgres(db) => db.get_run_with_steps(id),
        }
    }

    /// A run and what its report is built from, read in one snapshot: a finished run that
    /// has its engine report comes without its steps (the report holds them), any other
    /// with its recorded steps.
    pub fn get_run_for_report(
        &self,
        id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.get_run_for_report(id),
            Db::Postgres(db) => db.get_run_for_report(id),
        }
    }

    /// Runs matching `filter`, newest created first, at most `limit`.
    pub fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.list_runs(filter, limit),
            Db::Postgres(db) => db.list_runs(filter, limit),
        }
    }

    /// Summaries of the runs matching `filter` with an id below `before` (all when `None`),
    /// newest created first, at most `limit`. Reads the summary columns only: never a run's
    /// parameters, context or report.
    pub fn list_run_summaries(
        &self,
        filter: &RunFilter,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError> {
        match self {
            Db::Sqlite(db) => db.list_run_summaries(filter, before, limit),
            Db::Postgres(db) => db.list_run_summaries(filter, before, limit),
        }
    }

    /// The wall times in milliseconds of the last `limit` finished (succeeded or failed)
    /// runs of `workflow` in `repo`, oldest first: a sparkline's points.
    pub fn recent_durations(
        &self,
        repo: Option<&str>,
        workflow: &str,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        match self {
            Db::Sqlite(db) => db.recent_durations(repo, workflow, limit),
            Db::Postgres(db) => db.recent_durations(repo, workflow, limit),
        }
    }

    /// Records the summary line of the commit's message on these runs (the runs a push
    /// queued, which share its commit).
    pub fn set_commit_message(&mut self, runs: &[RunId], message: &str) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.set_commit_message(runs, message),
            Db::Postgres(db) => db.set_commit_message(runs, message),
        }
    }

    /// Queued and running runs of a concurrency group, oldest first (for `overlap` rules).
    #[cfg(test)]
    pub(crate) fn active_runs_in_group(&self, group: &str) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.active_runs_in_group(group),
            Db::Postgres(db) => db.active_runs_in_group(group),
        }
    }

    /// How many runs of `workflow` in `repo` were triggered by `kind` since `since` (the
    /// per-workflow rate limit of push runs).
    pub(crate) fn count_runs_since(
        &self,
        repo: &str,
        workflow: &str,
        kind: TriggerKind,
        since: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(db) => db.count_runs_since(repo, workflow, kind, since),
            Db::Postgres(db) => db.count_runs_since(repo, workflow, kind, since),
        }
    }

    /// How many runs are in each non-final state: (queued, running).
    pub fn count_active(&self) -> Result<(usize, usize), StoreError> {
        match self {
            Db::Sqlite(db) => db.count_active(),
            Db::Postgres(db) => db.count_active(),
        }
    }

    /// The steps of a run, in the order they were first recorded.
    pub fn get_steps(&self, id: RunId) -> Result<Vec<StepRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.get_steps(id),
            Db::Postgres(db) => db.get_steps(id),
        }
    }

    /// Every attempt of every step of a run, by step then attempt number.
    pub fn get_attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.get_attempts(id),
            Db::Postgres(db) => db.get_attempts(id),
        }
    }

    /// Deletes finished runs by the retention policy (with their steps and attempts) and old
    /// cron slots, and returns the deleted runs' ids, so the caller can delete their log files.
    pub fn prune_runs(&mut self, retention: &Retention) -> Result<Vec<RunId>, StoreError> {
        match self {
            Db::Sqlite(db) => db.prune_runs(retention),
            Db::Postgres(db) => db.prune_runs(retention),
        }
    }

    /// The preserved context of a workflow (`context.preserve: true`), if one was saved.
    pub fn load_context(
        &self,
        repo: Option<&str>,
        workflow: &str,
    ) -> Result<Option<Value>, StoreError> {
        match self {
            Db::Sqlite(db) => db.load_context(repo, workflow),
            Db::Postgres(db) => db.load_context(repo, workflow),
        }
    }

    /// Saves a workflow's preserved context (normally done by [`SqliteDb::finish_run`]).
    pub fn save_context(
        &mut self,
        repo: Option<&str>,
        workflow: &str,
        context: &Value,
    ) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.save_context(repo, workflow, context),
            Db::Postgres(db) => db.save_context(repo, workflow, context),
        }
    }

    /// A cache entry that has not expired at `now`.
    pub fn cache_get(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<CacheEntry>, StoreError> {
        match self {
            Db::Sqlite(db) => db.cache_get(key, now),
            Db::Postgres(db) => db.cache_get(key, now),
        }
    }

    /// Stores (or replaces) a cache entry.
    pub fn cache_put(
        &mut self,
        key: &str,
        value: &Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.cache_put(key, value, expires_at),
            Db::Postgres(db) => db.cache_put(key, value, expires_at),
        }
    }

    /// Deletes cache entries expired at `now`; returns how many.
    pub fn cache_prune(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(db) => db.cache_prune(now),
            Db::Postgres(db) => db.cache_prune(now),
        }
    }

    /// The last commit the daemon handled on `branch` of `repo`.
    pub fn last_seen_commit(&self, repo: &str, branch: &str) -> Result<Option<String>, StoreError> {
        match self {
            Db::Sqlite(db) => db.last_seen_commit(repo, branch),
            Db::Postgres(db) => db.last_seen_commit(repo, branch),
        }
    }

    /// Every branch of `repo` with its last handled commit, by branch name.
    pub fn seen_branches(&self, repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.seen_branches(repo),
            Db::Postgres(db) => db.seen_branches(repo),
        }
    }

    /// Records the last handled commit of a branch without queueing anything (first sight of
    /// a repository, or a commit no workflow matched).
    pub fn set_last_seen_commit(
        &mut self,
        repo: &str,
        branch: &str,
        commit: &str,
    ) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(db) => db.set_last_seen_commit(repo, branch, commit),
            Db::Postgres(db) => db.set_last_seen_commit(repo, branch, commit),
        }
    }

    /// Handles a new commit in one transaction: queues `runs`, each under its overlap rule
    /// (decided in this transaction; a run its rule skips is recorded as cancelled,
    /// [`Enqueued::Skipped`]), records `failed` runs (invalid workflow files, with their
    /// diagnostics) and moves the branch's last seen commit. Each run should carry a dedup
    /// key (such as `push:<repo>:<workflow>:<commit>`), so a commit handled again after a
    /// crash queues nothing twice.
    pub fn record_push(
        &mut self,
        repo: &str,
        branch: &str,
        commit: &str,
        runs: &[NewRun],
        failed: &[(NewRun, String)],
    ) -> Result<Vec<Enqueued>, StoreError> {
        match self {
            Db::Sqlite(db) => db.record_push(repo, branch, commit, runs, failed),
            Db::Postgres(db) => db.record_push(repo, branch, commit, runs, failed),
        }
    }

    /// Claims a cron slot: true the first time `(schedule_key, slot)` is claimed, false every
    /// time after, also across restarts and processes. A slot skipped on purpose (overlap,
    /// catch-up) is claimed too, so it never fires later.
    pub fn claim_cron_slot(
        &mut self,
        schedule_key: &str,
        slot: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self {
            Db::Sqlite(db) => db.claim_cron_slot(schedule_key, slot),
            Db::Postgres(db) => db.claim_cron_slot(schedule_key, slot),
        }
    }

    /// Claims a cron slot and queues its run under its overlap rule, in one transaction:
    /// `None` (and nothing written) if the slot was already claimed; otherwise the slot is
    /// claimed and the answer says what became of its run ([`Admission::Skipped`]: no run,
    /// the slot stays claimed so it never fires later; a duplicate run key: no new run).
    pub fn enqueue_scheduled_run(
        &mut self,
        schedule_key: &str,
        slot: DateTime<Utc>,
        run: &NewRun,
    ) -> Result<Option<Admission>, StoreError> {
        match self {
            Db::Sqlite(db) => db.enqueue_scheduled_run(schedule_key, slot, run),
            Db::Postgres(db) => db.enqueue_scheduled_run(schedule_key, slot, run),
        }
    }

    /// The latest slot claimed for a schedule.
    pub fn last_cron_fire(&self, schedule_key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self {
            Db::Sqlite(db) => db.last_cron_fire(schedule_key),
            Db::Postgres(db) => db.last_cron_fire(schedule_key),
        }
    }
    /// The node's heartbeat at `now`: writes its row and renews its lease on the runs it
    /// holds, in one transaction; answers which of them to cancel and which it lost.
    pub fn heartbeat_node(
        &mut self,
        beat: &NodeBeat,
        held: &[RunId],
        now: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        match self {
            Db::Sqlite(db) => db.heartbeat_node(beat, held, now),
            Db::Postgres(db) => db.heartbeat_node(beat, held, now),
        }
    }

    /// Every node's row, by name.
    pub fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        match self {
            Db::Sqlite(db) => db.list_nodes(),
            Db::Postgres(db) => db.list_nodes(),
        }
    }

    /// Removes a node's row (its daemon stopped cleanly); answers whether there was one.
    pub fn remove_node(&mut self, name: &str) -> Result<bool, StoreError> {
        match self {
            Db::Sqlite(db) => db.remove_node(name),
            Db::Postgres(db) => db.remove_node(name),
        }
    }

    /// Makes every claim of `owner` lapse now, so [`Db::reclaim_expired`] takes those runs
    /// back (a node restarting under the same name). Answers how many claims lapsed.
    pub(crate) fn lapse_claims_of(&mut self, owner: &str) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(db) => db.lapse_claims_of(owner),
            Db::Postgres(db) => db.lapse_claims_of(owner),
        }
    }

    /// Appends pieces of step logs (see [`super::LogAppend`]), in one transaction: each piece
    /// where its log ends (the part already stored is skipped, a piece past the end is not
    /// written). Answers each piece's log's stored length after it (`None`: no such run).
    pub fn append_log(
        &mut self,
        pieces: &[super::LogAppend],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        match self {
            Db::Sqlite(db) => db.append_log(pieces),
            Db::Postgres(db) => db.append_log(pieces),
        }
    }

    /// The stored log of a step from byte `from`, at most `max` bytes, and its stored length.
    pub fn read_log(
        &self,
        run: RunId,
        step: &str,
        from: u64,
        max: usize,
    ) -> Result<super::LogRead, StoreError> {
        match self {
            Db::Sqlite(db) => db.read_log(run, step, from, max),
            Db::Postgres(db) => db.read_log(run, step, from, max),
        }
    }

    /// Takes lease `name` for `holder` until `now + ttl` and answers its fencing token, or
    /// `None` while another holder has it. A lease nobody holds (new, expired or released)
    /// goes to `holder` with the token one higher than the last holder's (1 for a new one);
    /// a holder that asks again (renews) keeps its token.
    pub fn acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        match self {
            Db::Sqlite(db) => db.acquire_lease(name, holder, ttl, now),
            Db::Postgres(db) => db.acquire_lease(name, holder, ttl, now),
        }
    }

    /// Gives lease `name` up if `holder` has it (the next holder gets it at once, with the
    /// next token); answers whether it did.
    pub fn release_lease(&mut self, name: &str, holder: &str) -> Result<bool, StoreError> {
        match self {
            Db::Sqlite(db) => db.release_lease(name, holder),
            Db::Postgres(db) => db.release_lease(name, holder),
        }
    }

    /// Whether `holder` has lease `name` with `token` at `now` (not expired, not taken over).
    pub fn lease_is_held(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self {
            Db::Sqlite(db) => db.lease_is_held(name, holder, token, now),
            Db::Postgres(db) => db.lease_is_held(name, holder, token, now),
        }
    }

    /// Marks pending delivery `id` as being sent by `fence` (checked in the same
    /// transaction: [`StoreError::LeaseLost`] when stale); answers the mark an earlier sender
    /// left without recording its attempt (it lost the lease or died mid-request), if any.
    pub fn begin_delivery_attempt(
        &mut self,
        id: &str,
        fence: &super::Fence,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, u64)>, StoreError> {
        match self {
            Db::Sqlite(db) => db.begin_delivery_attempt(id, fence, now),
            Db::Postgres(db) => db.begin_delivery_attempt(id, fence, now),
        }
    }

    /// Records one attempt of delivery `id` (clearing its "being sent" mark), refused with
    /// [`StoreError::LeaseLost`] and nothing written unless `fence` holds its lease at `now`.
    pub fn record_delivery_attempt_fenced(
        &mut self,
        id: &str,
        outcome: &DeliveryOutcome,
        fence: &super::Fence,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        match self {
            Db::Sqlite(db) => db.record_delivery_attempt_fenced(id, outcome, fence, now),
            Db::Postgres(db) => db.record_delivery_attempt_fenced(id, outcome, fence, now),
        }
    }
}
