//! Runs, the queue, steps and attempts.
//!
//! State transitions of a run, each one transaction:
//! `enqueue` -> queued -> (`claim`: claimed, with owner and lease) -> `mark_running` -> running ->
//! `finish_run` -> succeeded | failed | cancelled. A queued or interrupted run may also be
//! finished directly (cancelled). `reclaim_expired` turns running runs whose lease lapsed into
//! interrupted ones and releases claims; `resume_run` puts an interrupted run back in the
//! queue with its finished steps kept.

use crate::store::overlap;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::tx::{OnSkip, enqueue_tx, insert_run};
use super::{
    AttemptRecord, Enqueued, NewRun, Retention, RunFilter, RunFinish, RunId, RunRecord, RunStatus,
    RunSummary, SqliteDb, StepFinish, StepRecord, StepStart, StepStatus, StoreError, Trigger,
    TriggerKind, from_json, from_json_opt, from_ms, from_ms_opt, now_ms, parse_enum, to_json,
    to_json_opt, to_ms,
};

/// The columns `RawRun::from_row` reads, in order.
pub(crate) const RUN_COLUMNS: &str = "id, workflow, repo, status, trigger_kind, trigger_commit, \
     trigger_branch, scheduled_for, parameters, created_at, started_at, finished_at, claimed_at, \
     error, priority, concurrency_group, dedup_key, retry_of, context, report, workflow_file, \
     claim_owner, lease_expires_at, cancel_requested, trigger_event";

/// A run row as SQLite returns it, before the conversions that can fail with a `StoreError`.
struct RawRun {
    id: i64,
    workflow: String,
    repo: Option<String>,
    status: String,
    trigger_kind: String,
    trigger_commit: Option<String>,
    trigger_branch: Option<String>,
    scheduled_for: Option<i64>,
    parameters: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    claimed_at: Option<i64>,
    error: Option<String>,
    priority: i64,
    concurrency_group: Option<String>,
    dedup_key: Option<String>,
    retry_of: Option<i64>,
    context: Option<String>,
    report: Option<String>,
    workflow_file: Option<String>,
    claim_owner: Option<String>,
    lease_expires_at: Option<i64>,
    cancel_requested: bool,
    trigger_event: Option<String>,
}

impl RawRun {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawRun> {
        Ok(RawRun {
            id: row.get(0)?,
            workflow: row.get(1)?,
            repo: row.get(2)?,
            status: row.get(3)?,
            trigger_kind: row.get(4)?,
            trigger_commit: row.get(5)?,
            trigger_branch: row.get(6)?,
            scheduled_for: row.get(7)?,
            parameters: row.get(8)?,
            created_at: row.get(9)?,
            started_at: row.get(10)?,
            finished_at: row.get(11)?,
            claimed_at: row.get(12)?,
            error: row.get(13)?,
            priority: row.get(14)?,
            concurrency_group: row.get(15)?,
            dedup_key: row.get(16)?,
            retry_of: row.get(17)?,
            context: row.get(18)?,
            report: row.get(19)?,
            workflow_file: row.get(20)?,
            claim_owner: row.get(21)?,
            lease_expires_at: row.get(22)?,
            cancel_requested: row.get(23)?,
            trigger_event: row.get(24)?,
        })
    }

    fn into_record(self) -> Result<RunRecord, StoreError> {
        Ok(RunRecord {
            id: RunId(self.id),
            workflow: self.workflow,
            repo: self.repo,
            status: parse_enum("status", &self.status)?,
            trigger: trigger_of(
                &self.trigger_kind,
                self.trigger_commit,
                self.trigger_branch,
                self.scheduled_for,
            )?,
            parameters: from_json("parameters", &self.parameters)?,
            created_at: from_ms("created_at", self.created_at)?,
            started_at: from_ms_opt("started_at", self.started_at)?,
            finished_at: from_ms_opt("finished_at", self.finished_at)?,
            claimed_at: from_ms_opt("claimed_at", self.claimed_at)?,
            error: self.error,
            priority: self.priority,
            concurrency_group: self.concurrency_group,
            dedup_key: self.dedup_key,
            retry_of: self.retry_of.map(RunId),
            context: from_json_opt("context", self.context)?,
            report: from_json_opt("report", self.report)?,
            workflow_file: self.workflow_file,
            claim_owner: self.claim_owner,
            lease_expires_at: from_ms_opt("lease_expires_at", self.lease_expires_at)?,
            cancel_requested: self.cancel_requested,
            event: self
                .trigger_event
                .map(|t| serde_json::from_str(&t).map_err(StoreError::json("trigger_event")))
                .transpose()?,
        })
    }
}

/// A lease length in milliseconds, saturating.
fn lease_ms(lease: std::time::Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// The trigger of a run row, from its four trigger columns.
fn trigger_of(
    kind: &str,
    commit: Option<String>,
    branch: Option<String>,
    scheduled_for: Option<i64>,
) -> Result<Trigger, StoreError> {
    Ok(Trigger {
        kind: parse_enum("trigger_kind", kind)?,
        commit,
        branch,
        scheduled_for: from_ms_opt("scheduled_for", scheduled_for)?,
    })
}

/// The columns `RawSummary::from_row` reads, in order.
const SUMMARY_COLUMNS: &str = "id, workflow, repo, status, trigger_kind, trigger_commit, \
     trigger_branch, scheduled_for, created_at, started_at, finished_at, error, retry_of, \
     (SELECT message FROM run_messages WHERE run_messages.run_id = runs.id)";

/// A summary row as SQLite returns it.
struct RawSummary {
    id: i64,
    workflow: String,
    repo: Option<String>,
    status: String,
    trigger_kind: String,
    trigger_commit: Option<String>,
    trigger_branch: Option<String>,
    scheduled_for: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    error: Option<String>,
    retry_of: Option<i64>,
    commit_message: Option<String>,
}

impl RawSummary {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawSummary> {
        Ok(RawSummary {
            id: row.get(0)?,
            workflow: row.get(1)?,
            repo: row.get(2)?,
            status: row.get(3)?,
            trigger_kind: row.get(4)?,
            trigger_commit: row.get(5)?,
            trigger_branch: row.get(6)?,
            scheduled_for: row.get(7)?,
            created_at: row.get(8)?,
            started_at: row.get(9)?,
            finished_at: row.get(10)?,
            error: row.get(11)?,
            retry_of: row.get(12)?,
            commit_message: row.get(13)?,
        })
    }

    fn into_summary(self) -> Result<RunSummary, StoreError> {
        Ok(RunSummary {
            id: RunId(self.id),
            workflow: self.workflow,
            repo: self.repo,
            status: parse_enum("status", &self.status)?,
            trigger: trigger_of(
                &self.trigger_kind,
                self.trigger_commit,
                self.trigger_branch,
                self.scheduled_for,
            )?,
            created_at: from_ms("created_at", self.created_at)?,
            started_at: from_ms_opt("started_at", self.started_at)?,
            finished_at: from_ms_opt("finished_at", self.finished_at)?,
            error: self.error,
            retry_of: self.retry_of.map(RunId),
            commit_message: self.commit_message,
        })
    }
}

/// The query of a run listing: `columns` of the runs matching `filter` (and below `before`),
/// newest first, at most `limit`, with its parameters in order. Only the filters given
/// become conditions, so SQLite can answer from the index of the one that narrows most
/// (`runs_by_workflow`, `runs_by_status`, `runs_by_repo`, `runs_by_branch`, `runs_by_trigger`)
/// instead of scanning every run.
fn listing_sql(
    columns: &str,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: usize,
) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as Sql;
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Sql> = Vec::new();
    let mut bind = |condition: &str, value: Sql| {
        values.push(value);
        conditions.push(format!("{condition} ?{}", values.len()));
    };
    if let Some(workflow) = &filter.workflow {
        bind("workflow =", Sql::Text(workflow.clone()));
    }
    if let Some(status) = filter.status {
        bind("status =", Sql::Text(status.as_str().to_string()));
    }
    if let Some(repo) = &filter.repo {
        bind("repo =", Sql::Text(repo.clone()));
    }
    if let Some(branch) = &filter.branch {
        bind("trigger_branch =", Sql::Text(branch.clone()));
    }
    if let Some(kind) = filter.trigger {
        bind("trigger_kind =", Sql::Text(kind.as_str().to_string()));
    }
    if let Some(before) = before {
        bind("id <", Sql::Integer(before.0));
    }
    if let Some(text) = &filter.text {
        // `%`, `_` and `\` in the text are matched as themselves.
        let mut pattern = String::from("%");
        for c in text.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        values.push(Sql::Text(pattern));
        let n = values.len();
        conditions.push(format!(
            // The matching ids are collected first (from the workflow index and the
            // messages), then looked up: a rare text never walks every run's row.
            "id IN (SELECT id FROM runs INDEXED BY runs_by_workflow \
             WHERE workflow LIKE ?{n} ESCAPE '\\' \
             UNION SELECT run_id FROM run_messages WHERE message LIKE ?{n} ESCAPE '\\')"
        ));
    }
    values.push(Sql::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let limit_param = values.len();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (
        format!("SELECT {columns} FROM runs{filter} ORDER BY id DESC LIMIT ?{limit_param}"),
        values,
    )
}

/// Runs a query returning run rows and converts them.
pub(crate) fn query_runs(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let raw = stmt
        .query_map(params, RawRun::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter().map(RawRun::into_record).collect()
}

/// Reads one run inside a transaction (or on the connection).
pub(crate) fn load_run(
    conn: &rusqlite::Connection,
    id: RunId,
) -> Result<Option<RunRecord>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    Ok(query_runs(conn, &sql, params![id.0])?.pop())
}

/// The status of a run, or `RunNotFound`.
fn status_of(tx: &Transaction<'_>, id: RunId) -> Result<RunStatus, StoreError> {
    let text: Option<String> = tx
        .query_row(
            "SELECT status FROM runs WHERE id = ?1",
            params![id.0],
            |r| r.get(0),
        )
        .optional()?;
    match text {
        Some(text) => parse_enum("status", &text),
        None => Err(StoreError::RunNotFound(id)),
    }
}

/// Checks that run `id` is in status `expected` before it moves `to` another.
fn require_status(
    tx: &Transaction<'_>,
    id: RunId,
    expected: RunStatus,
    to: RunStatus,
) -> Result<(), StoreError> {
    let from = status_of(tx, id)?;
    if from != expected {
        return Err(StoreError::InvalidTransition { run: id, from, to });
    }
    Ok(())
}

impl SqliteDb {
    /// Puts a run in the queue under its overlap rule (`run.overlap`,
    /// decided in this transaction). With a
    /// `dedup_key` already used, nothing is written and the existing run is returned as
    /// [`Enqueued::Duplicate`]; a run its rule skips is recorded as cancelled
    /// ([`Enqueued::Skipped`]).
    pub(crate) fn enqueue_run(&mut self, run: &NewRun) -> Result<Enqueued, StoreError> {
        let tx = self.write()?;
        let admission = enqueue_tx(&tx, run, OnSkip::RecordCancelled)?;
        tx.commit()?;
        Ok(match admission {
            overlap::Admission::Queued { run, .. } => run,
            // Not reached: a skip is recorded above.
            overlap::Admission::Skipped { active } => Enqueued::Duplicate(active),
        })
    }

    /// Queues `run` under its overlap rule (`run.overlap`), deciding in the same transaction
    /// that inserts it: two concurrent enqueues of one group see each other. A run its rule
    /// skips is not written ([`overlap::Admission::Skipped`]: the caller answers the request).
    pub(crate) fn enqueue(&mut self, run: &NewRun) -> Result<overlap::Admission, StoreError> {
        let tx = self.write()?;
        let admission = enqueue_tx(&tx, run, OnSkip::Nothing)?;
        tx.commit()?;
        Ok(admission)
    }

    /// The queued and running runs whose cancellation was requested (`cancel_previous`,
    /// [`SqliteDb::request_cancel`]), oldest first: the scheduler cancels them.
    pub(crate) fn cancel_requested_runs(&self) -> Result<Vec<RunId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM runs
             WHERE cancel_requested = 1 AND status IN ('queued', 'running') ORDER BY id",
        )?;
        let ids = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.into_iter().map(RunId).collect())
    }

    /// Records a run that failed before it could be queued (an invalid workflow file: the
    /// diagnostics go in `error`). Deduplicated like [`SqliteDb::enqueue_run`].
    pub(crate) fn record_failed_run(
        &mut self,
        run: &NewRun,
        error: &str,
    ) -> Result<Enqueued, StoreError> {
        let tx = self.write()?;
        let result = insert_run(&tx, run, RunStatus::Failed, Some(error))?;
        tx.commit()?;
        Ok(result)
    }

    /// Claims up to `limit` queued runs for starting, in order: within a concurrency group,
    /// first in first out, and only when no run of the group is running or claimed; then by
    /// priority (highest first), then by age (oldest first). Claimed runs stay `queued` (with
    /// `claimed_at` set) until [`SqliteDb::mark_running`], and are not returned again;
    /// [`SqliteDb::release_claim`] hands one back. A run whose cancellation was requested is not
    /// claimed (it waits for its cancel, and keeps its place in its group meanwhile).
    pub(crate) fn claim(
        &mut self,
        owner: &str,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let tx = self.write()?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs AS r
             WHERE r.status = 'queued' AND r.claimed_at IS NULL AND r.cancel_requested = 0
               AND (r.concurrency_group IS NULL OR (
                    NOT EXISTS (SELECT 1 FROM runs AS o
                                WHERE o.concurrency_group = r.concurrency_group
                                  AND (o.status = 'running'
                                       OR (o.status = 'queued' AND o.claimed_at IS NOT NULL)))
                    AND r.id = (SELECT MIN(q.id) FROM runs AS q
                                WHERE q.concurrency_group = r.concurrency_group
                                  AND q.status = 'queued')))
             ORDER BY r.priority DESC, r.id ASC
             LIMIT ?1"
        );
        let mut runs = query_runs(&tx, &sql, params![limit])?;
        let now = now_ms();
        let expires = now.saturating_add(lease_ms(lease));
        {
            let mut claim = tx.prepare_cached(
                "UPDATE runs SET claimed_at = ?2, claim_owner = ?3, lease_expires_at = ?4
                 WHERE id = ?1",
            )?;
            for run in &mut runs {
                claim.execute(params![run.id.0, now, owner, expires])?;
                run.claimed_at = Some(from_ms("claimed_at", now)?);
                run.claim_owner = Some(owner.to_string());
                run.lease_expires_at = Some(from_ms("lease_expires_at", expires)?);
            }
        }
        tx.commit()?;
        Ok(runs)
    }

    /// Gives a claimed run back to the queue (the scheduler could not start it after all).
    pub(crate) fn release_claim(&mut self, id: RunId) -> Result<(), StoreError> {
        let tx = self.write()?;
        require_status(&tx, id, RunStatus::Queued, RunStatus::Queued)?;
        tx.execute(
            "UPDATE runs SET claimed_at = NULL, claim_owner = NULL, lease_expires_at = NULL
             WHERE id = ?1",
            params![id.0],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a queued run as running and stamps its start time (a resumed run keeps the time
    /// it first started).
    pub(crate) fn mark_running(&mut self, id: RunId) -> Result<RunRecord, StoreError> {
        let tx = self.write()?;
        require_status(&tx, id, RunStatus::Queued, RunStatus::Running)?;
        tx.execute(
            "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?2),
                             claimed_at = NULL
             WHERE id = ?1",
            params![id.0, now_ms()],
        )?;
        let run = load_run(&tx, id)?.ok_or(StoreError::RunNotFound(id))?;
        tx.commit()?;
        Ok(run)
    }

    /// Records that a step started an attempt (the run must be running).
    pub(crate) fn record_step_started(
        &mut self,
        id: RunId,
        step: &StepStart,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        require_status(&tx, id, RunStatus::Running, RunStatus::Running)?;
        let now = now_ms();
        tx.prepare_cached(
            "INSERT INTO steps (run_id, step_id, stage, status, attempts, started_at, seq)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?1))
             ON CONFLICT (run_id, step_id) DO UPDATE SET
                 status = 'running', attempts = excluded.attempts, finished_at = NULL,
                 exit_code = NULL, error_class = NULL,
                 started_at = COALESCE(steps.started_at, excluded.started_at)",
        )?
        .execute(params![id.0, step.step_id, step.stage, step.attempt, now])?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO attempts (run_id, step_id, attempt, status, started_at)
             VALUES (?1, ?2, ?3, 'running', ?4)",
        )?
        .execute(params![id.0, step.step_id, step.attempt, now])?;
        tx.commit()?;
        Ok(())
    }

    /// Records how a step attempt ended (or that a step that never ran was skipped or
    /// cancelled), and saves the run's context as of this step. Accepted whatever the run's
    /// status, so the last reports of a run being cancelled are kept.
    pub(crate) fn record_step_finished(
        &mut self,
        id: RunId,
        step: &StepFinish,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        status_of(&tx, id)?;
        let now = now_ms();
        let outputs = to_json_opt("outputs", step.outputs.as_ref())?;
        tx.prepare_cached(
            "INSERT INTO steps (run_id, step_id, stage, status, attempts, exit_code, error_class,
                                outputs, cached, finished_at, queued_ms, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?1))
             ON CONFLICT (run_id, step_id) DO UPDATE SET
                 status = excluded.status, attempts = MAX(steps.attempts, excluded.attempts),
                 exit_code = excluded.exit_code, error_class = excluded.error_class,
                 outputs = excluded.outputs, cached = excluded.cached,
                 finished_at = excluded.finished_at,
                 queued_ms = COALESCE(excluded.queued_ms, steps.queued_ms)",
        )?
        .execute(params![
            id.0,
            step.step_id,
            step.stage,
            step.status.as_str(),
            step.attempt,
            step.exit_code,
            step.error_class,
            outputs,
            step.cached,
            now,
            step.queued_ms.and_then(|q| i64::try_from(q).ok()),
        ])?;
        if step.attempt > 0 {
            tx.prepare_cached(
                "INSERT INTO attempts (run_id, step_id, attempt, status, exit_code, error_class,
                                       error, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET
                     status = excluded.status, exit_code = excluded.exit_code,
                     error_class = excluded.error_class, error = excluded.error,
                     finished_at = excluded.finished_at",
            )?
            .execute(params![
                id.0,
                step.step_id,
                step.attempt,
                step.status.as_str(),
                step.exit_code,
                step.error_class,
                step.error,
                now,
            ])?;
        }
        if let Some(context) = &step.context {
            tx.execute(
                "UPDATE runs SET context = ?2 WHERE id = ?1",
                params![id.0, to_json("context", context)?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that a step attempt failed and will be retried: its status, error class and
    /// end time (the wait until the next attempt starts is the retry's backoff). An attempt
    /// already ended is left as it is.
    pub(crate) fn record_attempt_failed(
        &mut self,
        id: RunId,
        step_id: &str,
        attempt: u32,
        error_class: &str,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.prepare_cached(
            "UPDATE attempts SET status = 'failed', error_class = ?4, finished_at = ?5
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3 AND finished_at IS NULL",
        )?
        .execute(params![id.0, step_id, attempt, error_class, now_ms()])?;
        tx.commit()?;
        Ok(())
    }

    /// Ends a run: status, error, report, the preserved context and the webhook deliveries it
    /// triggers, all in one transaction. Allowed from running, queued and interrupted.
    pub(crate) fn finish_run(&mut self, id: RunId, finish: &RunFinish) -> Result<(), StoreError> {
        if !finish.status.is_final() {
            return Err(StoreError::NotFinal(finish.status));
        }
        let tx = self.write()?;
        let from = status_of(&tx, id)?;
        if from.is_final() {
            return Err(StoreError::InvalidTransition {
                run: id,
                from,
                to: finish.status,
            });
        }
        let now = finish.finished_at.map(to_ms).unwrap_or_else(now_ms);
        tx.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, claimed_at = NULL, error = ?4,
                             report = ?5, claim_owner = NULL, lease_expires_at = NULL
             WHERE id = ?1",
            params![
                id.0,
                finish.status.as_str(),
                now,
                finish.error,
                to_json_opt("report", finish.report.as_ref())?,
            ],
        )?;
        // Steps still marked running (a cancel) end with the run.
        let end = if finish.status == RunStatus::Cancelled {
            StepStatus::Cancelled
        } else {
            StepStatus::Failed
        };
        tx.execute(
            "UPDATE steps SET status = ?2, finished_at = ?3 WHERE run_id = ?1 AND status = 'running'",
            params![id.0, end.as_str(), now],
        )?;
        tx.execute(
            "UPDATE attempts SET status = ?2, finished_at = ?3
             WHERE run_id = ?1 AND status = 'running'",
            params![id.0, end.as_str(), now],
        )?;
        if let Some(context) = &finish.preserved_context {
            let (workflow, repo): (String, Option<String>) = tx.query_row(
                "SELECT workflow, repo FROM runs WHERE id = ?1",
                params![id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            super::tx::save_context_tx(&tx, repo.as_deref(), &workflow, context)?;
        }
        for delivery in &finish.deliveries {
            super::outbox::insert_delivery(&tx, delivery)?;
        }
        if let Some(event) = &finish.event {
            tx.execute(
                "INSERT INTO outbox_events (run_id, event, created_at) VALUES (?1, ?2, ?3)",
                params![id.0, event, now],
            )?;
        }
        tx.commit()?;
        Ok(())
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
    pub(crate) fn reclaim_expired(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let tx = self.write()?;
        let cutoff = to_ms(now);
        const LAPSED: &str = "(lease_expires_at IS NULL OR lease_expires_at <= ?1)";
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND {LAPSED} ORDER BY id"
        );
        let mut runs = query_runs(&tx, &sql, params![cutoff])?;
        let stamp = now_ms();
        let lapsed_running = format!("SELECT id FROM runs WHERE status = 'running' AND {LAPSED}");
        tx.execute(
            &format!(
                "UPDATE steps SET status = 'interrupted', finished_at = ?2,
                                  interruptions = interruptions + 1
                 WHERE status = 'running' AND run_id IN ({lapsed_running})"
            ),
            params![cutoff, stamp],
        )?;
        tx.execute(
            &format!(
                "UPDATE attempts SET status = 'interrupted', finished_at = ?2
                 WHERE status = 'running' AND run_id IN ({lapsed_running})"
            ),
            params![cutoff, stamp],
        )?;
        tx.execute(
            &format!(
                "UPDATE runs SET status = 'interrupted', claimed_at = NULL, claim_owner = NULL,
                                 lease_expires_at = NULL
                 WHERE status = 'running' AND {LAPSED}"
            ),
            params![cutoff],
        )?;
        tx.execute(
            &format!(
                "UPDATE runs SET claimed_at = NULL, claim_owner = NULL, lease_expires_at = NULL
                 WHERE status = 'queued' AND claimed_at IS NOT NULL AND {LAPSED}"
            ),
            params![cutoff],
        )?;
        tx.commit()?;
        for run in &mut runs {
            run.status = RunStatus::Interrupted;
            run.claimed_at = None;
            run.claim_owner = None;
            run.lease_expires_at = None;
        }
        Ok(runs)
    }

    /// Extends `owner`'s lease on `ids` (claimed or running runs it holds) to `lease` from
    /// now. Answers the ids among them whose cancellation was requested
    /// ([`SqliteDb::request_cancel`]): the owner is expected to cancel them.
    pub(crate) fn renew(
        &mut self,
        owner: &str,
        ids: &[RunId],
        lease: std::time::Duration,
    ) -> Result<Vec<RunId>, StoreError> {
        let tx = self.write()?;
        let expires = now_ms().saturating_add(lease_ms(lease));
        let mut cancel = Vec::new();
        {
            let mut renew = tx.prepare_cached(
                "UPDATE runs SET lease_expires_at = ?3
                 WHERE id = ?1 AND claim_owner = ?2 AND status IN ('queued', 'running')
                 RETURNING cancel_requested",
            )?;
            for id in ids {
                let requested: Option<bool> = renew
                    .query_row(params![id.0, owner, expires], |r| r.get(0))
                    .optional()?;
                if requested == Some(true) {
                    cancel.push(*id);
                }
            }
        }
        tx.commit()?;
        Ok(cancel)
    }

    /// Asks the owner of a queued or running run to cancel it; the owner sees the request on
    /// its next [`SqliteDb::renew`]. Answers whether the run was still active.
    pub(crate) fn request_cancel(&mut self, id: RunId) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let changed = tx.execute(
            "UPDATE runs SET cancel_requested = 1
             WHERE id = ?1 AND status IN ('queued', 'running')",
            params![id.0],
        )?;
        tx.commit()?;
        Ok(changed > 0)
    }

    /// On shutdown, for a run left `running` for the next boot: its running steps (and
    /// attempts), stopped by the shutdown, become interrupted now. The boot then finds the
    /// run running and interrupts it, but counts no crash against these steps.
    pub(crate) fn mark_steps_stopped(&mut self, id: RunId) -> Result<(), StoreError> {
        let tx = self.write()?;
        let now = now_ms();
        tx.execute(
            "UPDATE steps SET status = 'interrupted', finished_at = ?2
             WHERE run_id = ?1 AND status = 'running'",
            params![id.0, now],
        )?;
        tx.execute(
            "UPDATE attempts SET status = 'interrupted', finished_at = ?2
             WHERE run_id = ?1 AND status = 'running'",
            params![id.0, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The interrupted steps of a run with how many times each was interrupted by a boot
    /// ([`SqliteDb::reclaim_expired`] counts), in the order they were first recorded.
    pub(crate) fn interrupted_steps(&self, id: RunId) -> Result<Vec<(String, u32)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT step_id, interruptions FROM steps
             WHERE run_id = ?1 AND status = 'interrupted' ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![id.0], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Puts an interrupted run back in the queue (to resume from its first unfinished step;
    /// finished steps and the saved context stay). Keeps its place: the queue orders by id.
    pub(crate) fn resume_run(&mut self, id: RunId) -> Result<(), StoreError> {
        let tx = self.write()?;
        require_status(&tx, id, RunStatus::Interrupted, RunStatus::Queued)?;
        tx.execute(
            "UPDATE runs SET status = 'queued', claimed_at = NULL, claim_owner = NULL,
                             lease_expires_at = NULL, cancel_requested = 0
             WHERE id = ?1",
            params![id.0],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One run, or `None`.
    pub(crate) fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        load_run(&self.conn, id)
    }

    /// A run with its steps, read in one snapshot (the API's run report).
    pub(crate) fn get_run_with_steps(
        &self,
        id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        // A read transaction: both reads see the same committed state.
        let tx = self.conn.unchecked_transaction()?;
        let result = match load_run(&tx, id)? {
            Some(run) => Some((run, self.get_steps(id)?)),
            None => None,
        };
        tx.finish()?;
        Ok(result)
    }

    /// A run and what its report is built from, read in one snapshot: a finished run that
    /// has its engine report comes without its steps (the report holds them), any other
    /// with its recorded steps.
    pub(crate) fn get_run_for_report(
        &self,
        id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let result = match load_run(&tx, id)? {
            Some(run)
                if run.status.is_final()
                    && run
                        .report
                        .as_ref()
                        .is_some_and(serde_json::Value::is_object) =>
            {
                Some((run, Vec::new()))
            }
            Some(run) => Some((run, self.get_steps(id)?)),
            None => None,
        };
        tx.finish()?;
        Ok(result)
    }

    /// Runs matching `filter`, newest created first, at most `limit`.
    pub(crate) fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (sql, values) = listing_sql(RUN_COLUMNS, filter, None, limit);
        query_runs(&self.conn, &sql, rusqlite::params_from_iter(values))
    }

    /// Summaries of the runs matching `filter` with an id below `before` (all when `None`),
    /// newest created first, at most `limit`. Reads the summary columns only: never a run's
    /// parameters, context or report.
    pub(crate) fn list_run_summaries(
        &self,
        filter: &RunFilter,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let (sql, values) = listing_sql(SUMMARY_COLUMNS, filter, before, limit);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let raw = stmt
            .query_map(rusqlite::params_from_iter(values), RawSummary::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(RawSummary::into_summary).collect()
    }

    /// The wall times in milliseconds of the last `limit` finished (succeeded or failed)
    /// runs of `workflow` in `repo`, oldest first: a sparkline's points.
    pub(crate) fn recent_durations(
        &self,
        repo: Option<&str>,
        workflow: &str,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT finished_at - started_at FROM runs
             WHERE workflow = ?1 AND repo IS ?2 AND status IN ('succeeded', 'failed')
               AND started_at IS NOT NULL AND finished_at IS NOT NULL
             ORDER BY id DESC LIMIT ?3",
        )?;
        let mut out = stmt
            .query_map(
                params![workflow, repo, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get::<_, i64>(0),
            )?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        out.reverse();
        Ok(out.into_iter().map(|d| d.max(0)).collect())
    }

    /// Records the summary line of the commit's message on these runs (the runs a push
    /// queued, which share its commit).
    pub(crate) fn set_commit_message(
        &mut self,
        runs: &[RunId],
        message: &str,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO run_messages (run_id, message) VALUES (?1, ?2)",
            )?;
            for id in runs {
                stmt.execute(params![id.0, message])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Queued and running runs of a concurrency group, oldest first (for `overlap` rules).
    #[cfg(test)]
    pub(crate) fn active_runs_in_group(&self, group: &str) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE concurrency_group = ?1 AND status IN ('queued', 'running')
             ORDER BY id"
        );
        query_runs(&self.conn, &sql, params![group])
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
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM runs
             WHERE repo = ?1 AND workflow = ?2 AND trigger_kind = ?3 AND created_at >= ?4",
            params![repo, workflow, kind.as_str(), to_ms(since)],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// How many runs are in each non-final state: (queued, running).
    pub(crate) fn count_active(&self) -> Result<(usize, usize), StoreError> {
        let (queued, running): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(status = 'queued'), 0), COALESCE(SUM(status = 'running'), 0)
             FROM runs WHERE status IN ('queued', 'running')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((
            usize::try_from(queued).unwrap_or(0),
            usize::try_from(running).unwrap_or(0),
        ))
    }

    /// The steps of a run, in the order they were first recorded.
    pub(crate) fn get_steps(&self, id: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT stage, step_id, status, attempts, exit_code, error_class, outputs, cached,
                    started_at, finished_at, queued_ms
             FROM steps WHERE run_id = ?1 ORDER BY seq",
        )?;
        type RawStep = (
            String,
            String,
            String,
            u32,
            Option<i32>,
            Option<String>,
            Option<String>,
            bool,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows = stmt
            .query_map(params![id.0], |r| r.try_into())?
            .collect::<rusqlite::Result<Vec<RawStep>>>()?;
        rows.into_iter()
            .map(
                |(
                    stage,
                    step_id,
                    status,
                    attempts,
                    exit_code,
                    error_class,
                    outputs,
                    cached,
                    s,
                    f,
                    q,
                )| {
                    Ok(StepRecord {
                        run_id: id,
                        stage,
                        step_id,
                        status: parse_enum("status", &status)?,
                        attempts,
                        exit_code,
                        error_class,
                        outputs: from_json_opt("outputs", outputs)?,
                        cached,
                        started_at: from_ms_opt("started_at", s)?,
                        finished_at: from_ms_opt("finished_at", f)?,
                        queued_ms: q.and_then(|q| u64::try_from(q).ok()),
                    })
                },
            )
            .collect()
    }

    /// Every attempt of every step of a run, by step then attempt number.
    pub(crate) fn get_attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.step_id, a.attempt, a.status, a.exit_code, a.error_class, a.error,
                    a.started_at, a.finished_at
             FROM attempts AS a LEFT JOIN steps AS s
                  ON s.run_id = a.run_id AND s.step_id = a.step_id
             WHERE a.run_id = ?1 ORDER BY s.seq, a.attempt",
        )?;
        type RawAttempt = (
            String,
            u32,
            String,
            Option<i32>,
            Option<String>,
            Option<String>,
            i64,
            Option<i64>,
        );
        let rows = stmt
            .query_map(params![id.0], |r| r.try_into())?
            .collect::<rusqlite::Result<Vec<RawAttempt>>>()?;
        rows.into_iter()
            .map(
                |(step_id, attempt, status, exit_code, error_class, error, s, f)| {
                    Ok(AttemptRecord {
                        run_id: id,
                        step_id,
                        attempt,
                        status: parse_enum("status", &status)?,
                        exit_code,
                        error_class,
                        error,
                        started_at: from_ms("started_at", s)?,
                        finished_at: from_ms_opt("finished_at", f)?,
                    })
                },
            )
            .collect()
    }

    /// Deletes finished runs by the retention policy (with their steps and attempts) and old
    /// cron slots, and returns the deleted runs' ids, so the caller can delete their log files.
    pub(crate) fn prune_runs(&mut self, retention: &Retention) -> Result<Vec<RunId>, StoreError> {
        let tx = self.write()?;
        let mut doomed: Vec<i64> = Vec::new();
        if let Some(before) = retention.finished_before {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM runs
                 WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?1",
            )?;
            doomed.extend(
                stmt.query_map(params![to_ms(before)], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            );
        }
        if let Some(max) = retention.max_runs {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                 ORDER BY id DESC LIMIT -1 OFFSET ?1",
            )?;
            doomed.extend(
                stmt.query_map(params![max], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            );
        }
        doomed.sort_unstable();
        doomed.dedup();
        {
            let mut delete = tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?;
            for id in &doomed {
                delete.execute(params![id])?;
            }
        }
        if let Some(before) = retention.cron_fires_before {
            super::state::prune_cron_fires_tx(&tx, before)?;
        }
        tx.commit()?;
        Ok(doomed.into_iter().map(RunId).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TriggerKind;

    /// The query plan of a listing, one line per step, as `EXPLAIN QUERY PLAN` prints it.
    fn query_plan(store: &SqliteDb, filter: &RunFilter, before: Option<RunId>) -> String {
        let (sql, values) = listing_sql(SUMMARY_COLUMNS, filter, before, 50);
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("rows");
        rows.join("\n")
    }

    /// Every listing filter reads an index (or the primary key, newest first) and never
    /// scans the whole table or sorts it: with filters written as `(?1 IS NULL OR col = ?1)`
    /// SQLite scanned every run.
    #[test]
    fn listing_filters_use_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteDb::open_in_dir(dir.path()).expect("open");
        let by =
            |workflow: Option<&str>, status: Option<RunStatus>, repo: Option<&str>| RunFilter {
                workflow: workflow.map(str::to_string),
                status,
                repo: repo.map(str::to_string),
                ..RunFilter::default()
            };
        let cases = [
            (by(Some("w"), None, None), "runs_by_workflow"),
            (by(None, Some(RunStatus::Failed), None), "runs_by_status"),
            (by(None, None, Some("r")), "runs_by_repo"),
            (
                RunFilter {
                    branch: Some("main".into()),
                    ..RunFilter::default()
                },
                "runs_by_branch",
            ),
            (
                RunFilter {
                    trigger: Some(TriggerKind::Push),
                    ..RunFilter::default()
                },
                "runs_by_trigger",
            ),
        ];
        for (filter, index) in cases {
            for before in [None, Some(RunId(100))] {
                let plan = query_plan(&store, &filter, before);
                assert!(plan.contains(index), "{filter:?} {before:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: sorts: {plan}");
            }
        }
        // Several filters: one of their indexes, no sort.
        let plan = query_plan(
            &store,
            &by(Some("w"), Some(RunStatus::Failed), Some("r")),
            None,
        );
        assert!(plan.contains("USING INDEX runs_by_"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        // A text: the matching ids from the workflow index and the messages, each looked up
        // by its key; never a walk over every run's row.
        let text = RunFilter {
            text: Some("x".into()),
            ..RunFilter::default()
        };
        let plan = query_plan(&store, &text, None);
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
        assert!(plan.contains("runs_by_workflow"), "{plan}");
        assert!(!plan.lines().any(|l| l.trim() == "SCAN runs"), "{plan}");
        // No filter: the primary key backwards; with a cursor, a range of it.
        let plan_all = query_plan(&store, &RunFilter::default(), None);
        assert!(!plan_all.contains("TEMP B-TREE"), "{plan_all}");
        let plan_before = query_plan(&store, &RunFilter::default(), Some(RunId(5)));
        assert!(plan_before.contains("INTEGER PRIMARY KEY"), "{plan_before}");
    }
}
