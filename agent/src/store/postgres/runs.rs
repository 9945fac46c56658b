//! STUB: the PostgreSQL side of these operations is being written.

use chrono::{DateTime, Utc};

use crate::store::overlap::Admission;
use crate::store::{
    AttemptRecord, Enqueued, NewRun, Retention, RunFilter, RunFinish, RunId, RunRecord, RunSummary,
    StepFinish, StepRecord, StepStart, StoreError, TriggerKind,
};

use super::PgDb;

impl PgDb {
    /// Puts a run in the queue under its overlap rule (`run.overlap`,
    /// decided in this transaction). With a
    /// `dedup_key` already used, nothing is written and the existing run is returned as
    /// [`Enqueued::Duplicate`]; a run its rule skips is recorded as cancelled
    /// ([`Enqueued::Skipped`]).
    pub fn enqueue_run(&mut self, _run: &NewRun) -> Result<Enqueued, StoreError> {
        Err(super::unsupported("enqueue_run"))
    }

    /// Queues `run` under its overlap rule (`run.overlap`), deciding in the same transaction
    /// that inserts it: two concurrent enqueues of one group see each other. A run its rule
    /// skips is not written ([`overlap::Admission::Skipped`]: the caller answers the request).
    pub fn enqueue(&mut self, _run: &NewRun) -> Result<Admission, StoreError> {
        Err(super::unsupported("enqueue"))
    }

    /// The queued and running runs whose cancellation was requested (`cancel_previous`,
    /// [`SqliteDb::request_cancel`]), oldest first: the scheduler cancels them.
    pub fn cancel_requested_runs(&self) -> Result<Vec<RunId>, StoreError> {
        Err(super::unsupported("cancel_requested_runs"))
    }

    /// Records a run that failed before it could be queued (an invalid workflow file: the
    /// diagnostics go in `error`). Deduplicated like [`SqliteDb::enqueue_run`].
    pub fn record_failed_run(
        &mut self,
        _run: &NewRun,
        _error: &str,
    ) -> Result<Enqueued, StoreError> {
        Err(super::unsupported("record_failed_run"))
    }

    /// Claims up to `limit` queued runs for starting, in order: within a concurrency group,
    /// first in first out, and only when no run of the group is running or claimed; then by
    /// priority (highest first), then by age (oldest first). Claimed runs stay `queued` (with
    /// `claimed_at` set) until [`SqliteDb::mark_running`], and are not returned again;
    /// [`SqliteDb::release_claim`] hands one back. A run whose cancellation was requested is not
    /// claimed (it waits for its cancel, and keeps its place in its group meanwhile).
    pub fn claim(
        &mut self,
        _owner: &str,
        _limit: usize,
        _lease: std::time::Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        Err(super::unsupported("claim"))
    }

    /// Gives a claimed run back to the queue (the scheduler could not start it after all).
    pub fn release_claim(&mut self, _id: RunId) -> Result<(), StoreError> {
        Err(super::unsupported("release_claim"))
    }

    /// Marks a queued run as running and stamps its start time (a resumed run keeps the time
    /// it first started).
    pub fn mark_running(&mut self, _id: RunId) -> Result<RunRecord, StoreError> {
        Err(super::unsupported("mark_running"))
    }

    /// Records that a step started an attempt (the run must be running).
    pub fn record_step_started(&mut self, _id: RunId, _step: &StepStart) -> Result<(), StoreError> {
        Err(super::unsupported("record_step_started"))
    }

    /// Records how a step attempt ended (or that a step that never ran was skipped or
    /// cancelled), and saves the run's context as of this step. Accepted whatever the run's
    /// status, so the last reports of a run being cancelled are kept.
    pub fn record_step_finished(
        &mut self,
        _id: RunId,
        _step: &StepFinish,
    ) -> Result<(), StoreError> {
        Err(super::unsupported("record_step_finished"))
    }

    /// Records that a step attempt failed and will be retried: its status, error class and
    /// end time (the wait until the next attempt starts is the retry's backoff). An attempt
    /// already ended is left as it is.
    pub fn record_attempt_failed(
        &mut self,
        _id: RunId,
        _step_id: &str,
        _attempt: u32,
        _error_class: &str,
    ) -> Result<(), StoreError> {
        Err(super::unsupported("record_attempt_failed"))
    }

    /// Ends a run: status, error, report, the preserved context and the webhook deliveries it
    /// triggers, all in one transaction. Allowed from running, queued and interrupted.
    pub fn finish_run(&mut self, _id: RunId, _finish: &RunFinish) -> Result<(), StoreError> {
        Err(super::unsupported("finish_run"))
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
    pub fn reclaim_expired(&mut self, _now: DateTime<Utc>) -> Result<Vec<RunRecord>, StoreError> {
        Err(super::unsupported("reclaim_expired"))
    }

    /// Extends `owner`'s lease on `ids` (claimed or running runs it holds) to `lease` from
    /// now. Answers the ids among them whose cancellation was requested
    /// ([`SqliteDb::request_cancel`]): the owner is expected to cancel them.
    pub fn renew(
        &mut self,
        _owner: &str,
        _ids: &[RunId],
        _lease: std::time::Duration,
    ) -> Result<Vec<RunId>, StoreError> {
        Err(super::unsupported("renew"))
    }

    /// Asks the owner of a queued or running run to cancel it; the owner sees the request on
    /// its next [`SqliteDb::renew`]. Answers whether the run was still active.
    pub fn request_cancel(&mut self, _id: RunId) -> Result<bool, StoreError> {
        Err(super::unsupported("request_cancel"))
    }

    /// On shutdown, for a run left `running` for the next boot: its running steps (and
    /// attempts), stopped by the shutdown, become interrupted now. The boot then finds the
    /// run running and interrupts it, but counts no crash against these steps.
    pub fn mark_steps_stopped(&mut self, _id: RunId) -> Result<(), StoreError> {
        Err(super::unsupported("mark_steps_stopped"))
    }

    /// The interrupted steps of a run with how many times each was interrupted by a boot
    /// ([`SqliteDb::reclaim_expired`] counts), in the order they were first recorded.
    pub fn interrupted_steps(&self, _id: RunId) -> Result<Vec<(String, u32)>, StoreError> {
        Err(super::unsupported("interrupted_steps"))
    }

    /// Puts an interrupted run back in the queue (to resume from its first unfinished step;
    /// finished steps and the saved context stay). Keeps its place: the queue orders by id.
    pub fn resume_run(&mut self, _id: RunId) -> Result<(), StoreError> {
        Err(super::unsupported("resume_run"))
    }

    /// One run, or `None`.
    pub fn get_run(&self, _id: RunId) -> Result<Option<RunRecord>, StoreError> {
        Err(super::unsupported("get_run"))
    }

    /// A run with its steps, read in one snapshot (the API's run report).
    pub fn get_run_with_steps(
        &self,
        _id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        Err(super::unsupported("get_run_with_steps"))
    }

    /// A run and what its report is built from, read in one snapshot: a finished run that
    /// has its engine report comes without its steps (the report holds them), any other
    /// with its recorded steps.
    pub fn get_run_for_report(
        &self,
        _id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        Err(super::unsupported("get_run_for_report"))
    }

    /// Runs matching `filter`, newest created first, at most `limit`.
    pub fn list_runs(
        &self,
        _filter: &RunFilter,
        _limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        Err(super::unsupported("list_runs"))
    }

    /// Summaries of the runs matching `filter` with an id below `before` (all when `None`),
    /// newest created first, at most `limit`. Reads the summary columns only: never a run's
    /// parameters, context or report.
    pub fn list_run_summaries(
        &self,
        _filter: &RunFilter,
        _before: Option<RunId>,
        _limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError> {
        Err(super::unsupported("list_run_summaries"))
    }

    /// The wall times in milliseconds of the last `limit` finished (succeeded or failed)
    /// runs of `workflow` in `repo`, oldest first: a sparkline's points.
    pub fn recent_durations(
        &self,
        _repo: Option<&str>,
        _workflow: &str,
        _limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        Err(super::unsupported("recent_durations"))
    }

    /// Records the summary line of the commit's message on these runs (the runs a push
    /// queued, which share its commit).
    pub fn set_commit_message(
        &mut self,
        _runs: &[RunId],
        _message: &str,
    ) -> Result<(), StoreError> {
        Err(super::unsupported("set_commit_message"))
    }

    /// Queued and running runs of a concurrency group, oldest first (for `overlap` rules).
    pub fn active_runs_in_group(&self, _group: &str) -> Result<Vec<RunRecord>, StoreError> {
        Err(super::unsupported("active_runs_in_group"))
    }

    /// How many runs of `workflow` in `repo` were triggered by `kind` since `since` (the
    /// per-workflow rate limit of push runs).
    pub fn count_runs_since(
        &self,
        _repo: &str,
        _workflow: &str,
        _kind: TriggerKind,
        _since: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Err(super::unsupported("count_runs_since"))
    }

    /// How many runs are in each non-final state: (queued, running).
    pub fn count_active(&self) -> Result<(usize, usize), StoreError> {
        Err(super::unsupported("count_active"))
    }

    /// The steps of a run, in the order they were first recorded.
    pub fn get_steps(&self, _id: RunId) -> Result<Vec<StepRecord>, StoreError> {
        Err(super::unsupported("get_steps"))
    }

    /// Every attempt of every step of a run, by step then attempt number.
    pub fn get_attempts(&self, _id: RunId) -> Result<Vec<AttemptRecord>, StoreError> {
        Err(super::unsupported("get_attempts"))
    }

    /// Deletes finished runs by the retention policy (with their steps and attempts) and old
    /// cron slots, and returns the deleted runs' ids, so the caller can delete their log files.
    pub fn prune_runs(&mut self, _retention: &Retention) -> Result<Vec<RunId>, StoreError> {
        Err(super::unsupported("prune_runs"))
    }

    /// Handles a new commit in one transaction: queues `runs`, each under its overlap rule
    /// (decided in this transaction; a run its rule skips is recorded as cancelled,
    /// [`Enqueued::Skipped`]), records `failed` runs (invalid workflow files, with their
    /// diagnostics) and moves the branch's last seen commit. Each run should carry a dedup
    /// key (such as `push:<repo>:<workflow>:<commit>`), so a commit handled again after a
    /// crash queues nothing twice.
    pub fn record_push(
        &mut self,
        _repo: &str,
        _branch: &str,
        _commit: &str,
        _runs: &[NewRun],
        _failed: &[(NewRun, String)],
    ) -> Result<Vec<Enqueued>, StoreError> {
        Err(super::unsupported("record_push"))
    }

    /// Claims a cron slot: true the first time `(schedule_key, slot)` is claimed, false every
    /// time after, also across restarts and processes. A slot skipped on purpose (overlap,
    /// catch-up) is claimed too, so it never fires later.
    pub fn claim_cron_slot(
        &mut self,
        _schedule_key: &str,
        _slot: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Err(super::unsupported("claim_cron_slot"))
    }

    /// Claims a cron slot and queues its run under its overlap rule, in one transaction:
    /// `None` (and nothing written) if the slot was already claimed; otherwise the slot is
    /// claimed and the answer says what became of its run ([`Admission::Skipped`]: no run,
    /// the slot stays claimed so it never fires later; a duplicate run key: no new run).
    pub fn enqueue_scheduled_run(
        &mut self,
        _schedule_key: &str,
        _slot: DateTime<Utc>,
        _run: &NewRun,
    ) -> Result<Option<Admission>, StoreError> {
        Err(super::unsupported("enqueue_scheduled_run"))
    }
}
