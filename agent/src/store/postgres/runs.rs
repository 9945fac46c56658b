//! Runs, the queue, steps and attempts on PostgreSQL: the same state transitions as
//! `sqlite/runs.rs`, each one transaction.
//!
//! What differs: several agents share the database. Writes run `SERIALIZABLE` and are
//! retried on conflicts ([`PgDb::write`]), so a transition that read a row another node
//! changed meanwhile is tried again from the start. [`PgDb::claim`] locks the runs it takes
//! with `FOR UPDATE SKIP LOCKED` at `READ COMMITTED`: two nodes claiming at once never wait
//! on each other and never take the same run; only the first queued run of a concurrency
//! group is a candidate, checked again under a transaction lock of its group, so they never
//! take two runs of one group either.
//! [`PgDb::reclaim_expired`] runs serializable: when two nodes reclaim the same lapsed run at
//! once, one of them is retried and no longer finds it lapsed.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use postgres::{GenericClient, IsolationLevel, Row, Transaction};

use super::PgDb;
use super::tx::{OnSkip, enqueue_tx, insert_run};
use crate::store::codec::{
    from_json, from_json_opt, from_ms, from_ms_opt, now_ms, parse_enum, to_json, to_json_opt, to_ms,
};
use crate::store::overlap::Admission;
use crate::store::{
    AttemptRecord, Enqueued, NewRun, Retention, RunFilter, RunFinish, RunId, RunRecord, RunStatus,
    RunSummary, StepFinish, StepRecord, StepStart, StepStatus, StoreError, Trigger, TriggerKind,
};

/// The columns [`run_of`] reads, in order.
const RUN_COLUMNS: &str = "id, workflow, repo, status, trigger_kind, trigger_commit, \
     trigger_branch, scheduled_for, parameters, created_at, started_at, finished_at, claimed_at, \
     error, priority, concurrency_group, dedup_key, retry_of, context, report, workflow_file, \
     claim_owner, lease_expires_at, cancel_requested, trigger_event";

/// [`RUN_COLUMNS`] of the table aliased `r`.
const R_RUN_COLUMNS: &str = "r.id, r.workflow, r.repo, r.status, r.trigger_kind, \
     r.trigger_commit, r.trigger_branch, r.scheduled_for, r.parameters, r.created_at, \
     r.started_at, r.finished_at, r.claimed_at, r.error, r.priority, r.concurrency_group, \
     r.dedup_key, r.retry_of, r.context, r.report, r.workflow_file, r.claim_owner, \
     r.lease_expires_at, r.cancel_requested, r.trigger_event";

/// A run row (of [`RUN_COLUMNS`]) as a record.
fn run_of(row: &Row) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: RunId(row.try_get(0)?),
        workflow: row.try_get(1)?,
        repo: row.try_get(2)?,
        status: parse_enum("status", row.try_get(3)?)?,
        trigger: trigger_of(
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
        )?,
        parameters: from_json("parameters", row.try_get(8)?)?,
        created_at: from_ms("created_at", row.try_get(9)?)?,
        started_at: from_ms_opt("started_at", row.try_get(10)?)?,
        finished_at: from_ms_opt("finished_at", row.try_get(11)?)?,
        claimed_at: from_ms_opt("claimed_at", row.try_get(12)?)?,
        error: row.try_get(13)?,
        priority: row.try_get(14)?,
        concurrency_group: row.try_get(15)?,
        dedup_key: row.try_get(16)?,
        retry_of: row.try_get::<_, Option<i64>>(17)?.map(RunId),
        context: from_json_opt("context", row.try_get(18)?)?,
        report: from_json_opt("report", row.try_get(19)?)?,
        workflow_file: row.try_get(20)?,
        claim_owner: row.try_get(21)?,
        lease_expires_at: from_ms_opt("lease_expires_at", row.try_get(22)?)?,
        cancel_requested: row.try_get::<_, i64>(23)? != 0,
        event: row
            .try_get::<_, Option<String>>(24)?
            .map(|t| serde_json::from_str(&t).map_err(StoreError::json("trigger_event")))
            .transpose()?,
    })
}

/// A lease length in milliseconds, saturating.
fn lease_ms(lease: std::time::Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// A `u32` counter as stored.
fn count_of(column: &'static str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::BadValue {
        column,
        value: n.to_string(),
    })
}

/// An exit code as stored back to the record's type.
fn exit_code_of(code: Option<i64>) -> Result<Option<i32>, StoreError> {
    code.map(|c| {
        i32::try_from(c).map_err(|_| StoreError::BadValue {
            column: "exit_code",
            value: c.to_string(),
        })
    })
    .transpose()
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

/// The columns [`summary_of`] reads, in order.
const SUMMARY_COLUMNS: &str = "id, workflow, repo, status, trigger_kind, trigger_commit, \
     trigger_branch, scheduled_for, created_at, started_at, finished_at, error, retry_of, \
     (SELECT message FROM run_messages WHERE run_messages.run_id = runs.id)";

/// A summary row as a summary.
fn summary_of(row: &Row) -> Result<RunSummary, StoreError> {
    Ok(RunSummary {
        id: RunId(row.try_get(0)?),
        workflow: row.try_get(1)?,
        repo: row.try_get(2)?,
        status: parse_enum("status", row.try_get(3)?)?,
        trigger: trigger_of(
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
        )?,
        created_at: from_ms("created_at", row.try_get(8)?)?,
        started_at: from_ms_opt("started_at", row.try_get(9)?)?,
        finished_at: from_ms_opt("finished_at", row.try_get(10)?)?,
        error: row.try_get(11)?,
        retry_of: row.try_get::<_, Option<i64>>(12)?.map(RunId),
        commit_message: row.try_get(13)?,
    })
}

/// A query parameter of a listing.
type Param = Box<dyn ToSql + Sync>;

/// The query of a run listing: `columns` of the runs matching `filter` (and below `before`),
/// newest first, at most `limit`, with its parameters in order. Only the filters given
/// become conditions. The text search is case-insensitive for ASCII, as SQLite's `LIKE`.
fn listing_sql(
    columns: &str,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: usize,
) -> (String, Vec<Param>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Param> = Vec::new();
    let mut bind = |condition: &str, value: Param| {
        values.push(value);
        conditions.push(format!("{condition} ${}", values.len()));
    };
    if let Some(workflow) = &filter.workflow {
        bind("workflow =", Box::new(workflow.clone()));
    }
    if let Some(status) = filter.status {
        bind("status =", Box::new(status.as_str().to_string()));
    }
    if let Some(repo) = &filter.repo {
        bind("repo =", Box::new(repo.clone()));
    }
    if let Some(branch) = &filter.branch {
        bind("trigger_branch =", Box::new(branch.clone()));
    }
    if let Some(kind) = filter.trigger {
        bind("trigger_kind =", Box::new(kind.as_str().to_string()));
    }
    if let Some(before) = before {
        bind("id <", Box::new(before.0));
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
        values.push(Box::new(pattern));
        let n = values.len();
        conditions.push(format!(
            "id IN (SELECT id FROM runs WHERE lower(workflow) LIKE lower(${n}) ESCAPE '\\' \
             UNION SELECT run_id FROM run_messages WHERE lower(message) LIKE lower(${n}) \
             ESCAPE '\\')"
        ));
    }
    values.push(Box::new(super::limit(limit)));
    let limit_param = values.len();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (
        format!("SELECT {columns} FROM runs{filter} ORDER BY id DESC LIMIT ${limit_param}"),
        values,
    )
}

/// The parameters of a listing as the client takes them.
fn param_refs(values: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v.as_ref()).collect()
}

/// Runs a query returning run rows and converts them.
fn query_runs(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<RunRecord>, StoreError> {
    client.query(sql, params)?.iter().map(run_of).collect()
}

/// Reads one run.
pub(super) fn load_run(
    client: &mut impl GenericClient,
    id: RunId,
) -> Result<Option<RunRecord>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    Ok(query_runs(client, &sql, &[&id.0])?.pop())
}

/// The status of a run, or `RunNotFound`.
fn status_of(tx: &mut Transaction<'_>, id: RunId) -> Result<RunStatus, StoreError> {
    match tx.query_opt("SELECT status FROM runs WHERE id = $1", &[&id.0])? {
        Some(row) => parse_enum("status", row.try_get(0)?),
        None => Err(StoreError::RunNotFound(id)),
    }
}

/// Checks that run `id` is in status `expected` before it moves `to` another.
fn require_status(
    tx: &mut Transaction<'_>,
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

/// The steps of a run, in the order they were first recorded.
fn steps_of(client: &mut impl GenericClient, id: RunId) -> Result<Vec<StepRecord>, StoreError> {
    let rows = client.query(
        "SELECT stage, step_id, status, attempts, exit_code, error_class, outputs, cached,
                started_at, finished_at, queued_ms
         FROM steps WHERE run_id = $1 ORDER BY seq",
        &[&id.0],
    )?;
    rows.iter()
        .map(|r| {
            Ok(StepRecord {
                run_id: id,
                stage: r.try_get(0)?,
                step_id: r.try_get(1)?,
                status: parse_enum("status", r.try_get(2)?)?,
                attempts: count_of("attempts", r.try_get(3)?)?,
                exit_code: exit_code_of(r.try_get(4)?)?,
                error_class: r.try_get(5)?,
                outputs: from_json_opt("outputs", r.try_get(6)?)?,
                cached: r.try_get::<_, i64>(7)? != 0,
                started_at: from_ms_opt("started_at", r.try_get(8)?)?,
                finished_at: from_ms_opt("finished_at", r.try_get(9)?)?,
                queued_ms: r
                    .try_get::<_, Option<i64>>(10)?
                    .and_then(|q| u64::try_from(q).ok()),
            })
        })
        .collect()
}

/// Of the claim candidates `runs` (locked, in claim order), the ones still free to claim once
/// their groups are locked: a grouped run is kept only while it is the oldest queued run of
/// its group and no run of the group is claimed or running, as seen after the group's lock.
///
/// The candidate query decides on its statement's snapshot, and run ids can become visible
/// out of order (an enqueue that took a lower id may commit later), so two nodes claiming at
/// once could each see a different oldest run of one group. The transaction-scoped lock per
/// group (taken in name order, so two claims never deadlock) makes the second claim of a
/// group wait for the first to commit, and its check then sees that claim.
fn keep_free_group_heads(
    tx: &mut Transaction<'_>,
    runs: Vec<RunRecord>,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut groups: Vec<String> = runs
        .iter()
        .filter_map(|r| r.concurrency_group.clone())
        .collect();
    if groups.is_empty() {
        return Ok(runs);
    }
    groups.sort_unstable();
    groups.dedup();
    for group in &groups {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[group],
        )?;
    }
    let mut kept = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(group) = &run.concurrency_group else {
            kept.push(run);
            continue;
        };
        let free: bool = tx
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM runs AS o
                                    WHERE o.concurrency_group = $2 AND o.id <> $1
                                      AND (o.status = 'running'
                                           OR (o.status = 'queued'
                                               AND o.claimed_at IS NOT NULL)))
                        AND $1 = (SELECT MIN(q.id) FROM runs AS q
                                  WHERE q.concurrency_group = $2 AND q.status = 'queued')",
                &[&run.id.0, group],
            )?
            .try_get(0)?;
        if free {
            kept.push(run);
        }
    }
    Ok(kept)
}

impl PgDb {
    /// Runs the reads of `f` in one read-only snapshot.
    fn snapshot<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.read(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let value = f(&mut tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    /// Puts a run in the queue under its overlap rule (`run.overlap`,
    /// decided in this transaction). With a
    /// `dedup_key` already used, nothing is written and the existing run is returned as
    /// [`Enqueued::Duplicate`]; a run its rule skips is recorded as cancelled
    /// ([`Enqueued::Skipped`]).
    pub(crate) fn enqueue_run(&mut self, run: &NewRun) -> Result<Enqueued, StoreError> {
        let admission = self.write(|tx| enqueue_tx(tx, run, OnSkip::RecordCancelled))?;
        Ok(match admission {
            Admission::Queued { run, .. } => run,
            // Not reached: a skip is recorded above.
            Admission::Skipped { active } => Enqueued::Duplicate(active),
        })
    }

    /// Queues `run` under its overlap rule (`run.overlap`), deciding in the same transaction
    /// that inserts it: two concurrent enqueues of one group see each other. A run its rule
    /// skips is not written ([`Admission::Skipped`]: the caller answers the request).
    pub(crate) fn enqueue(&mut self, run: &NewRun) -> Result<Admission, StoreError> {
        self.write(|tx| enqueue_tx(tx, run, OnSkip::Nothing))
    }

    /// The queued and running runs whose cancellation was requested (`cancel_previous`,
    /// [`PgDb::request_cancel`]), oldest first: the scheduler cancels them.
    pub(crate) fn cancel_requested_runs(&self) -> Result<Vec<RunId>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT id FROM runs
                 WHERE cancel_requested = 1 AND status IN ('queued', 'running') ORDER BY id",
                &[],
            )?;
            Ok(rows.iter().map(|r| RunId(r.get::<_, i64>(0))).collect())
        })
    }

    /// Records a run that failed before it could be queued (an invalid workflow file: the
    /// diagnostics go in `error`). Deduplicated like [`PgDb::enqueue_run`].
    pub(crate) fn record_failed_run(
        &mut self,
        run: &NewRun,
        error: &str,
    ) -> Result<Enqueued, StoreError> {
        self.write(|tx| insert_run(tx, run, RunStatus::Failed, Some(error)))
    }

    /// Claims up to `limit` queued runs for starting, in order: within a concurrency group,
    /// first in first out, and only when no run of the group is running or claimed; then by
    /// priority (highest first), then by age (oldest first). Claimed runs stay `queued` (with
    /// `claimed_at` set) until [`PgDb::mark_running`], and are not returned again;
    /// [`PgDb::release_claim`] hands one back. A run whose cancellation was requested is not
    /// claimed (it waits for its cancel, and keeps its place in its group meanwhile).
    ///
    /// The candidates are locked with `FOR UPDATE SKIP LOCKED`: a run another node is
    /// claiming at this moment is passed over, and a run another node claimed since this
    /// statement's snapshot is checked again on its new version (and dropped). Only the
    /// oldest queued run of a group is a candidate, checked again under a lock of its group
    /// ([`keep_free_group_heads`]), so two nodes cannot take two runs of one group.
    pub(crate) fn claim(
        &mut self,
        owner: &str,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = super::limit(limit);
        let sql = format!(
            "SELECT {R_RUN_COLUMNS} FROM runs AS r
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
             LIMIT $1
             FOR UPDATE OF r SKIP LOCKED"
        );
        self.write_read_committed(|tx| {
            let candidates = query_runs(tx, &sql, &[&limit])?;
            let mut runs = keep_free_group_heads(tx, candidates)?;
            let now = now_ms();
            let expires = now.saturating_add(lease_ms(lease));
            for run in &mut runs {
                tx.execute(
                    "UPDATE runs SET claimed_at = $2, claim_owner = $3, lease_expires_at = $4
                     WHERE id = $1",
                    &[&run.id.0, &now, &owner, &expires],
                )?;
                run.claimed_at = Some(from_ms("claimed_at", now)?);
                run.claim_owner = Some(owner.to_string());
                run.lease_expires_at = Some(from_ms("lease_expires_at", expires)?);
            }
            Ok(runs)
        })
    }

    /// Gives a claimed run back to the queue (the scheduler could not start it after all).
    pub(crate) fn release_claim(&mut self, id: RunId) -> Result<(), StoreError> {
        self.write(|tx| {
            require_status(tx, id, RunStatus::Queued, RunStatus::Queued)?;
            tx.execute(
                "UPDATE runs SET claimed_at = NULL, claim_owner = NULL, lease_expires_at = NULL
                 WHERE id = $1",
                &[&id.0],
            )?;
            Ok(())
        })
    }

    /// Marks a queued run as running and stamps its start time (a resumed run keeps the time
    /// it first started).
    pub(crate) fn mark_running(&mut self, id: RunId) -> Result<RunRecord, StoreError> {
        self.write(|tx| {
            require_status(tx, id, RunStatus::Queued, RunStatus::Running)?;
            tx.execute(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, $2),
                                 claimed_at = NULL
                 WHERE id = $1",
                &[&id.0, &now_ms()],
            )?;
            load_run(tx, id)?.ok_or(StoreError::RunNotFound(id))
        })
    }

    /// Records that a step started an attempt (the run must be running).
    pub(crate) fn record_step_started(
        &mut self,
        id: RunId,
        step: &StepStart,
    ) -> Result<(), StoreError> {
        let attempt = i64::from(step.attempt);
        self.write(|tx| {
            require_status(tx, id, RunStatus::Running, RunStatus::Running)?;
            let now = now_ms();
            tx.execute(
                "INSERT INTO steps (run_id, step_id, stage, status, attempts, started_at, seq)
                 VALUES ($1, $2, $3, 'running', $4, $5,
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = $1))
                 ON CONFLICT (run_id, step_id) DO UPDATE SET
                     status = 'running', attempts = excluded.attempts, finished_at = NULL,
                     exit_code = NULL, error_class = NULL,
                     started_at = COALESCE(steps.started_at, excluded.started_at)",
                &[&id.0, &step.step_id, &step.stage, &attempt, &now],
            )?;
            // A new row, as SQLite's `INSERT OR REPLACE`.
            tx.execute(
                "INSERT INTO attempts (run_id, step_id, attempt, status, started_at)
                 VALUES ($1, $2, $3, 'running', $4)
                 ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET
                     status = 'running', exit_code = NULL, error_class = NULL, error = NULL,
                     started_at = excluded.started_at, finished_at = NULL",
                &[&id.0, &step.step_id, &attempt, &now],
            )?;
            Ok(())
        })
    }

    /// Records how a step attempt ended (or that a step that never ran was skipped or
    /// cancelled), and saves the run's context as of this step. Accepted whatever the run's
    /// status, so the last reports of a run being cancelled are kept.
    pub(crate) fn record_step_finished(
        &mut self,
        id: RunId,
        step: &StepFinish,
    ) -> Result<(), StoreError> {
        let outputs = to_json_opt("outputs", step.outputs.as_ref())?;
        let context = step
            .context
            .as_ref()
            .map(|c| to_json("context", c))
            .transpose()?;
        let attempt = i64::from(step.attempt);
        let exit_code = step.exit_code.map(i64::from);
        let cached = i64::from(step.cached);
        let queued_ms = step.queued_ms.and_then(|q| i64::try_from(q).ok());
        self.write(|tx| {
            status_of(tx, id)?;
            let now = now_ms();
            tx.execute(
                "INSERT INTO steps (run_id, step_id, stage, status, attempts, exit_code,
                                    error_class, outputs, cached, finished_at, queued_ms, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = $1))
                 ON CONFLICT (run_id, step_id) DO UPDATE SET
                     status = excluded.status,
                     attempts = GREATEST(steps.attempts, excluded.attempts),
                     exit_code = excluded.exit_code, error_class = excluded.error_class,
                     outputs = excluded.outputs, cached = excluded.cached,
                     finished_at = excluded.finished_at,
                     queued_ms = COALESCE(excluded.queued_ms, steps.queued_ms)",
                &[
                    &id.0,
                    &step.step_id,
                    &step.stage,
                    &step.status.as_str(),
                    &attempt,
                    &exit_code,
                    &step.error_class,
                    &outputs,
                    &cached,
                    &now,
                    &queued_ms,
                ],
            )?;
            if step.attempt > 0 {
                tx.execute(
                    "INSERT INTO attempts (run_id, step_id, attempt, status, exit_code,
                                           error_class, error, started_at, finished_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                     ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET
                         status = excluded.status, exit_code = excluded.exit_code,
                         error_class = excluded.error_class, error = excluded.error,
                         finished_at = excluded.finished_at",
                    &[
                        &id.0,
                        &step.step_id,
                        &attempt,
                        &step.status.as_str(),
                        &exit_code,
                        &step.error_class,
                        &step.error,
                        &now,
                    ],
                )?;
            }
            if let Some(context) = &context {
                tx.execute(
                    "UPDATE runs SET context = $2 WHERE id = $1",
                    &[&id.0, context],
                )?;
            }
            Ok(())
        })
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
        let attempt = i64::from(attempt);
        self.write(|tx| {
            tx.execute(
                "UPDATE attempts SET status = 'failed', error_class = $4, finished_at = $5
                 WHERE run_id = $1 AND step_id = $2 AND attempt = $3 AND finished_at IS NULL",
                &[&id.0, &step_id, &attempt, &error_class, &now_ms()],
            )?;
            Ok(())
        })
    }

    /// Ends a run: status, error, report, the preserved context and the webhook deliveries it
    /// triggers, all in one transaction. Allowed from running, queued and interrupted.
    pub(crate) fn finish_run(&mut self, id: RunId, finish: &RunFinish) -> Result<(), StoreError> {
        if !finish.status.is_final() {
            return Err(StoreError::NotFinal(finish.status));
        }
        let report = to_json_opt("report", finish.report.as_ref())?;
        // Steps still marked running (a cancel) end with the run.
        let end = if finish.status == RunStatus::Cancelled {
            StepStatus::Cancelled
        } else {
            StepStatus::Failed
        };
        self.write(|tx| {
            let from = status_of(tx, id)?;
            if from.is_final() {
                return Err(StoreError::InvalidTransition {
                    run: id,
                    from,
                    to: finish.status,
                });
            }
            let now = finish.finished_at.map(to_ms).unwrap_or_else(now_ms);
            tx.execute(
                "UPDATE runs SET status = $2, finished_at = $3, claimed_at = NULL, error = $4,
                                 report = $5, claim_owner = NULL, lease_expires_at = NULL
                 WHERE id = $1",
                &[&id.0, &finish.status.as_str(), &now, &finish.error, &report],
            )?;
            tx.execute(
                "UPDATE steps SET status = $2, finished_at = $3
                 WHERE run_id = $1 AND status = 'running'",
                &[&id.0, &end.as_str(), &now],
            )?;
            tx.execute(
                "UPDATE attempts SET status = $2, finished_at = $3
                 WHERE run_id = $1 AND status = 'running'",
                &[&id.0, &end.as_str(), &now],
            )?;
            if let Some(context) = &finish.preserved_context {
                let row =
                    tx.query_one("SELECT workflow, repo FROM runs WHERE id = $1", &[&id.0])?;
                let workflow: String = row.try_get(0)?;
                let repo: Option<String> = row.try_get(1)?;
                super::tx::save_context_tx(tx, repo.as_deref(), &workflow, context)?;
            }
            for delivery in &finish.deliveries {
                super::tx::insert_delivery(tx, delivery)?;
            }
            if let Some(event) = &finish.event {
                tx.execute(
                    "INSERT INTO outbox_events (run_id, event, created_at) VALUES ($1, $2, $3)",
                    &[&id.0, event, &now],
                )?;
            }
            Ok(())
        })
    }

    /// Takes back the claims whose lease has lapsed at `now`: a running run whose owner
    /// stopped renewing becomes interrupted (its running steps and attempts too, each step
    /// counting one interruption), and a claimed queued run goes back to the queue. A claim
    /// without a lease (written before leases existed) counts as lapsed. Returns the
    /// interrupted runs, oldest first, for the caller to resume or leave waiting.
    ///
    /// Several nodes may call this at once: the transaction is serializable, so of two
    /// nodes that found the same lapsed run one is retried, finds it interrupted already,
    /// and does not return it. Each lapsed run is returned to exactly one caller.
    pub(crate) fn reclaim_expired(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let cutoff = to_ms(now);
        const LAPSED: &str = "(lease_expires_at IS NULL OR lease_expires_at <= $1)";
        let select = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND {LAPSED} ORDER BY id"
        );
        let mut runs = self.write(|tx| {
            let runs = query_runs(tx, &select, &[&cutoff])?;
            if runs.is_empty()
                && tx
                    .query_opt(
                        &format!(
                            "SELECT 1 FROM runs
                             WHERE status = 'queued' AND claimed_at IS NOT NULL AND {LAPSED}
                             LIMIT 1"
                        ),
                        &[&cutoff],
                    )?
                    .is_none()
            {
                return Ok(runs);
            }
            let ids: Vec<i64> = runs.iter().map(|r| r.id.0).collect();
            let stamp = now_ms();
            tx.execute(
                "UPDATE steps SET status = 'interrupted', finished_at = $2,
                                  interruptions = interruptions + 1
                 WHERE status = 'running' AND run_id = ANY($1)",
                &[&ids, &stamp],
            )?;
            tx.execute(
                "UPDATE attempts SET status = 'interrupted', finished_at = $2
                 WHERE status = 'running' AND run_id = ANY($1)",
                &[&ids, &stamp],
            )?;
            tx.execute(
                "UPDATE runs SET status = 'interrupted', claimed_at = NULL, claim_owner = NULL,
                                 lease_expires_at = NULL
                 WHERE id = ANY($1)",
                &[&ids],
            )?;
            tx.execute(
                &format!(
                    "UPDATE runs SET claimed_at = NULL, claim_owner = NULL,
                                     lease_expires_at = NULL
                     WHERE status = 'queued' AND claimed_at IS NOT NULL AND {LAPSED}"
                ),
                &[&cutoff],
            )?;
            Ok(runs)
        })?;
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
    /// ([`PgDb::request_cancel`]): the owner is expected to cancel them.
    pub(crate) fn renew(
        &mut self,
        owner: &str,
        ids: &[RunId],
        lease: std::time::Duration,
    ) -> Result<Vec<RunId>, StoreError> {
        let raw: Vec<i64> = ids.iter().map(|id| id.0).collect();
        self.write(|tx| {
            let expires = now_ms().saturating_add(lease_ms(lease));
            let rows = tx.query(
                "UPDATE runs SET lease_expires_at = $3
                 WHERE id = ANY($1) AND claim_owner = $2 AND status IN ('queued', 'running')
                 RETURNING id, cancel_requested",
                &[&raw, &owner, &expires],
            )?;
            let requested: std::collections::HashSet<i64> = rows
                .iter()
                .filter(|r| r.get::<_, i64>(1) != 0)
                .map(|r| r.get::<_, i64>(0))
                .collect();
            // In the order asked, as on SQLite.
            Ok(ids
                .iter()
                .filter(|id| requested.contains(&id.0))
                .copied()
                .collect())
        })
    }

    /// Asks the owner of a queued or running run to cancel it; the owner sees the request on
    /// its next [`PgDb::renew`]. Answers whether the run was still active.
    pub(crate) fn request_cancel(&mut self, id: RunId) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE runs SET cancel_requested = 1
                 WHERE id = $1 AND status IN ('queued', 'running')",
                &[&id.0],
            )?;
            Ok(changed > 0)
        })
    }

    /// On shutdown, for a run left `running` for the next boot: its running steps (and
    /// attempts), stopped by the shutdown, become interrupted now. The boot then finds the
    /// run running and interrupts it, but counts no crash against these steps.
    pub(crate) fn mark_steps_stopped(&mut self, id: RunId) -> Result<(), StoreError> {
        self.write(|tx| {
            let now = now_ms();
            tx.execute(
                "UPDATE steps SET status = 'interrupted', finished_at = $2
                 WHERE run_id = $1 AND status = 'running'",
                &[&id.0, &now],
            )?;
            tx.execute(
                "UPDATE attempts SET status = 'interrupted', finished_at = $2
                 WHERE run_id = $1 AND status = 'running'",
                &[&id.0, &now],
            )?;
            Ok(())
        })
    }

    /// The interrupted steps of a run with how many times each was interrupted by a boot
    /// ([`PgDb::reclaim_expired`] counts), in the order they were first recorded.
    pub(crate) fn interrupted_steps(&self, id: RunId) -> Result<Vec<(String, u32)>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT step_id, interruptions FROM steps
                 WHERE run_id = $1 AND status = 'interrupted' ORDER BY seq",
                &[&id.0],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, count_of("interruptions", r.try_get(1)?)?)))
            .collect()
        })
    }

    /// Puts an interrupted run back in the queue (to resume from its first unfinished step;
    /// finished steps and the saved context stay). Keeps its place: the queue orders by id.
    pub(crate) fn resume_run(&mut self, id: RunId) -> Result<(), StoreError> {
        self.write(|tx| {
            require_status(tx, id, RunStatus::Interrupted, RunStatus::Queued)?;
            tx.execute(
                "UPDATE runs SET status = 'queued', claimed_at = NULL, claim_owner = NULL,
                                 lease_expires_at = NULL, cancel_requested = 0
                 WHERE id = $1",
                &[&id.0],
            )?;
            Ok(())
        })
    }

    /// One run, or `None`.
    pub(crate) fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.read(|c| load_run(c, id))
    }

    /// A run with its steps, read in one snapshot (the API's run report).
    pub(crate) fn get_run_with_steps(
        &self,
        id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        self.snapshot(|tx| match load_run(tx, id)? {
            Some(run) => Ok(Some((run, steps_of(tx, id)?))),
            None => Ok(None),
        })
    }

    /// A run and what its report is built from, read in one snapshot: a finished run that
    /// has its engine report comes without its steps (the report holds them), any other
    /// with its recorded steps.
    pub(crate) fn get_run_for_report(
        &self,
        id: RunId,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, StoreError> {
        self.snapshot(|tx| match load_run(tx, id)? {
            Some(run)
                if run.status.is_final()
                    && run
                        .report
                        .as_ref()
                        .is_some_and(serde_json::Value::is_object) =>
            {
                Ok(Some((run, Vec::new())))
            }
            Some(run) => Ok(Some((run, steps_of(tx, id)?))),
            None => Ok(None),
        })
    }

    /// Runs matching `filter`, newest created first, at most `limit`.
    pub(crate) fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let (sql, values) = listing_sql(RUN_COLUMNS, filter, None, limit);
        self.read(|c| query_runs(c, &sql, &param_refs(&values)))
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
        self.read(|c| {
            c.query(&sql, &param_refs(&values))?
                .iter()
                .map(summary_of)
                .collect()
        })
    }

    /// The wall times in milliseconds of the last `limit` finished (succeeded or failed)
    /// runs of `workflow` in `repo`, oldest first: a sparkline's points.
    pub(crate) fn recent_durations(
        &self,
        repo: Option<&str>,
        workflow: &str,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        self.read(|c| {
            let rows = c.query(
                "SELECT finished_at - started_at FROM runs
                 WHERE workflow = $1 AND repo IS NOT DISTINCT FROM $2
                   AND status IN ('succeeded', 'failed')
                   AND started_at IS NOT NULL AND finished_at IS NOT NULL
                 ORDER BY id DESC LIMIT $3",
                &[&workflow, &repo, &super::limit(limit)],
            )?;
            let mut out = rows
                .iter()
                .map(|r| r.try_get::<_, i64>(0).map(|d| d.max(0)))
                .collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
        })
    }

    /// Records the summary line of the commit's message on these runs (the runs a push
    /// queued, which share its commit).
    pub(crate) fn set_commit_message(
        &mut self,
        runs: &[RunId],
        message: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            for id in runs {
                tx.execute(
                    "INSERT INTO run_messages (run_id, message) VALUES ($1, $2)
                     ON CONFLICT (run_id) DO UPDATE SET message = excluded.message",
                    &[&id.0, &message],
                )?;
            }
            Ok(())
        })
    }

    /// Queued and running runs of a concurrency group, oldest first (for `overlap` rules).
    #[cfg(test)]
    pub(crate) fn active_runs_in_group(&self, group: &str) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE concurrency_group = $1 AND status IN ('queued', 'running')
             ORDER BY id"
        );
        self.read(|c| query_runs(c, &sql, &[&group]))
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
        self.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM runs
                     WHERE repo = $1 AND workflow = $2 AND trigger_kind = $3
                       AND created_at >= $4",
                    &[&repo, &workflow, &kind.as_str(), &to_ms(since)],
                )?
                .try_get(0)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// How many runs are in each non-final state: (queued, running).
    pub(crate) fn count_active(&self) -> Result<(usize, usize), StoreError> {
        self.read(|c| {
            let row = c.query_one(
                "SELECT COUNT(*) FILTER (WHERE status = 'queued'),
                        COUNT(*) FILTER (WHERE status = 'running')
                 FROM runs WHERE status IN ('queued', 'running')",
                &[],
            )?;
            let queued: i64 = row.try_get(0)?;
            let running: i64 = row.try_get(1)?;
            Ok((
                usize::try_from(queued).unwrap_or(0),
                usize::try_from(running).unwrap_or(0),
            ))
        })
    }

    /// The steps of a run, in the order they were first recorded.
    pub(crate) fn get_steps(&self, id: RunId) -> Result<Vec<StepRecord>, StoreError> {
        self.read(|c| steps_of(c, id))
    }

    /// Every attempt of every step of a run, by step then attempt number.
    pub(crate) fn get_attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT a.step_id, a.attempt, a.status, a.exit_code, a.error_class, a.error,
                        a.started_at, a.finished_at
                 FROM attempts AS a LEFT JOIN steps AS s
                      ON s.run_id = a.run_id AND s.step_id = a.step_id
                 WHERE a.run_id = $1 ORDER BY s.seq, a.attempt",
                &[&id.0],
            )?
            .iter()
            .map(|r| {
                Ok(AttemptRecord {
                    run_id: id,
                    step_id: r.try_get(0)?,
                    attempt: count_of("attempt", r.try_get(1)?)?,
                    status: parse_enum("status", r.try_get(2)?)?,
                    exit_code: exit_code_of(r.try_get(3)?)?,
                    error_class: r.try_get(4)?,
                    error: r.try_get(5)?,
                    started_at: from_ms("started_at", r.try_get(6)?)?,
                    finished_at: from_ms_opt("finished_at", r.try_get(7)?)?,
                })
            })
            .collect()
        })
    }

    /// Deletes finished runs by the retention policy (with their steps and attempts) and old
    /// cron slots, and returns the deleted runs' ids, so the caller can delete their log files.
    pub(crate) fn prune_runs(&mut self, retention: &Retention) -> Result<Vec<RunId>, StoreError> {
        self.write(|tx| {
            let mut doomed: Vec<i64> = Vec::new();
            if let Some(before) = retention.finished_before {
                let rows = tx.query(
                    "SELECT id FROM runs
                     WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < $1",
                    &[&to_ms(before)],
                )?;
                doomed.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
            }
            if let Some(max) = retention.max_runs {
                let rows = tx.query(
                    "SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                     ORDER BY id DESC OFFSET $1",
                    &[&super::limit(max)],
                )?;
                doomed.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
            }
            doomed.sort_unstable();
            doomed.dedup();
            tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&doomed])?;
            if let Some(before) = retention.cron_fires_before {
                super::tx::prune_cron_fires_tx(tx, before)?;
            }
            Ok(doomed.into_iter().map(RunId).collect())
        })
    }

    /// Handles a new commit in one transaction: queues `runs`, each under its overlap rule
    /// (decided in this transaction; a run its rule skips is recorded as cancelled,
    /// [`Enqueued::Skipped`]), records `failed` runs (invalid workflow files, with their
    /// diagnostics) and moves the branch's last seen commit. Each run should carry a dedup
    /// key (such as `push:<repo>:<workflow>:<commit>`), so a commit handled again after a
    /// crash queues nothing twice.
    pub(crate) fn record_push(
        &mut self,
        repo: &str,
        branch: &str,
        commit: &str,
        runs: &[NewRun],
        failed: &[(NewRun, String)],
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(runs.len() + failed.len());
            for run in runs {
                out.push(match enqueue_tx(tx, run, OnSkip::RecordCancelled)? {
                    Admission::Queued { run, .. } => run,
                    // Not reached: a skip is recorded as a cancelled run above.
                    Admission::Skipped { active } => Enqueued::Duplicate(active),
                });
            }
            for (run, error) in failed {
                out.push(insert_run(tx, run, RunStatus::Failed, Some(error))?);
            }
            tx.execute(
                "INSERT INTO repo_heads (repo, branch, commit_id, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo, branch) DO UPDATE SET
                     commit_id = excluded.commit_id, updated_at = excluded.updated_at",
                &[&repo, &branch, &commit, &now_ms()],
            )?;
            Ok(out)
        })
    }

    /// Claims a cron slot: true the first time `(schedule_key, slot)` is claimed, false every
    /// time after, also across restarts and processes. A slot skipped on purpose (overlap,
    /// catch-up) is claimed too, so it never fires later.
    pub(crate) fn claim_cron_slot(
        &mut self,
        schedule_key: &str,
        slot: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| super::tx::claim_slot_tx(tx, schedule_key, slot, None))
    }

    /// Claims a cron slot and queues its run under its overlap rule, in one transaction:
    /// `None` (and nothing written) if the slot was already claimed; otherwise the slot is
    /// claimed and the answer says what became of its run ([`Admission::Skipped`]: no run,
    /// the slot stays claimed so it never fires later; a duplicate run key: no new run).
    pub(crate) fn enqueue_scheduled_run(
        &mut self,
        schedule_key: &str,
        slot: DateTime<Utc>,
        run: &NewRun,
    ) -> Result<Option<Admission>, StoreError> {
        self.write(|tx| {
            if !super::tx::claim_slot_tx(tx, schedule_key, slot, None)? {
                return Ok(None);
            }
            let admission = enqueue_tx(tx, run, OnSkip::Nothing)?;
            if let Admission::Queued {
                run: Enqueued::Created(id),
                ..
            } = &admission
            {
                tx.execute(
                    "UPDATE cron_fires SET run_id = $3 WHERE schedule_key = $1 AND slot = $2",
                    &[&schedule_key, &to_ms(slot), &id.0],
                )?;
            }
            Ok(Some(admission))
        })
    }
}
