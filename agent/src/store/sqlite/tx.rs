//! Statements that more than one concern runs inside the same transaction (a run inserted by
//! a push, a cron slot or the queue; a context saved when a run finishes). They live here so
//! that the concern files import this one and never each other.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{Enqueued, NewRun, RunId, RunStatus, StoreError, now_ms, to_json, to_ms};
use crate::store::overlap::{self, Admission, Decision};

/// What an enqueue does with a run its overlap rule skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnSkip {
    /// Write nothing: the caller answers whoever asked (a manual or hook request, a slot).
    Nothing,
    /// Record the run as cancelled, its error saying which run it gave way to (a push: no
    /// one is waiting for an answer, the run list shows it).
    RecordCancelled,
}

/// Queues `run` inside `tx` under its overlap rule (`run.overlap`, [`overlap::decide`]):
/// the active runs of its group are read in the same transaction that inserts it, so two
/// enqueues of one group always see each other. A duplicate (same dedup key) is answered
/// as such before any rule. `cancel_previous` marks the older active runs
/// `cancel_requested` here too, so their cancellation survives a crash.
pub(crate) fn enqueue_tx(
    tx: &Transaction<'_>,
    run: &NewRun,
    on_skip: OnSkip,
) -> Result<Admission, StoreError> {
    if let Some(id) = duplicate_of(tx, run)? {
        return Ok(Admission::Queued {
            run: Enqueued::Duplicate(id),
            cancel: Vec::new(),
        });
    }
    let decision = match run.overlap {
        Some(mode) => overlap::decide(mode, &active_in_scope(tx, run)?),
        None => Decision::Enqueue,
    };
    match decision {
        Decision::Enqueue => Ok(Admission::Queued {
            run: insert_run(tx, run, RunStatus::Queued, None)?,
            cancel: Vec::new(),
        }),
        Decision::EnqueueAndCancel(cancel) => {
            let mut mark =
                tx.prepare_cached("UPDATE runs SET cancel_requested = 1 WHERE id = ?1")?;
            for id in &cancel {
                mark.execute(params![id.0])?;
            }
            Ok(Admission::Queued {
                run: insert_run(tx, run, RunStatus::Queued, None)?,
                cancel,
            })
        }
        Decision::Skip { active } => {
            if on_skip == OnSkip::RecordCancelled {
                let why = match &run.concurrency_group {
                    Some(group) => {
                        format!(
                            "skipped: run {active} of concurrency group `{group}` is still active"
                        )
                    }
                    None => format!(
                        "skipped: run {active} of workflow `{}` is still active",
                        run.workflow
                    ),
                };
                let recorded = insert_run(tx, run, RunStatus::Cancelled, Some(&why))?;
                return Ok(Admission::Queued {
                    run: Enqueued::Skipped {
                        run: recorded.run_id(),
                        active,
                    },
                    cancel: Vec::new(),
                });
            }
            Ok(Admission::Skipped { active })
        }
    }
}

/// The run already queued under `run`'s dedup key, if any.
fn duplicate_of(tx: &Transaction<'_>, run: &NewRun) -> Result<Option<RunId>, StoreError> {
    let Some(key) = &run.dedup_key else {
        return Ok(None);
    };
    Ok(tx
        .query_row(
            "SELECT id FROM runs WHERE dedup_key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()?
        .map(RunId))
}

/// The queued and running runs an overlap rule of `run` looks at, oldest first: those of its
/// concurrency group, or without a group those of its workflow in its repository.
fn active_in_scope(tx: &Transaction<'_>, run: &NewRun) -> Result<Vec<RunId>, StoreError> {
    let ids = match &run.concurrency_group {
        Some(group) => tx
            .prepare_cached(
                "SELECT id FROM runs
                 WHERE concurrency_group = ?1 AND status IN ('queued', 'running') ORDER BY id",
            )?
            .query_map(params![group], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => tx
            .prepare_cached(
                "SELECT id FROM runs
                 WHERE workflow = ?1 AND repo IS ?2 AND status IN ('queued', 'running')
                 ORDER BY id",
            )?
            .query_map(params![run.workflow, run.repo], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(ids.into_iter().map(RunId).collect())
}

/// Inserts a run (deduplicated by key) inside `tx`, with the given status, whatever its
/// overlap rule (a failed run; queued runs go through [`enqueue_tx`]).
pub(crate) fn insert_run(
    tx: &Transaction<'_>,
    run: &NewRun,
    status: RunStatus,
    error: Option<&str>,
) -> Result<Enqueued, StoreError> {
    if let Some(key) = &run.dedup_key {
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM runs WHERE dedup_key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(Enqueued::Duplicate(RunId(id)));
        }
    }
    let now = now_ms();
    let finished_at = status.is_final().then_some(now);
    tx.prepare_cached(
        "INSERT INTO runs (workflow, repo, status, trigger_kind, trigger_commit, trigger_branch, \
         scheduled_for, parameters, created_at, finished_at, error, priority, concurrency_group, \
         dedup_key, retry_of, workflow_file) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        run.workflow,
        run.repo,
        status.as_str(),
        run.trigger.kind.as_str(),
        run.trigger.commit,
        run.trigger.branch,
        run.trigger.scheduled_for.map(to_ms),
        to_json("parameters", &run.parameters)?,
        now,
        finished_at,
        error,
        run.priority,
        run.concurrency_group,
        run.dedup_key,
        run.retry_of.map(|r| r.0),
        run.workflow_file,
    ])?;
    let id = tx.last_insert_rowid();
    if let Some(event) = &run.event {
        tx.execute(
            "UPDATE runs SET trigger_event = ?1 WHERE id = ?2",
            params![
                serde_json::to_string(event).map_err(StoreError::json("trigger_event"))?,
                id
            ],
        )?;
    }
    Ok(Enqueued::Created(RunId(id)))
}

/// Saves a workflow's preserved context inside `tx`. Runs without a repository share the key
/// `""`.
pub(crate) fn save_context_tx(
    tx: &Transaction<'_>,
    repo: Option<&str>,
    workflow: &str,
    context: &Value,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO contexts (repo, workflow, context, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repo, workflow) DO UPDATE SET
             context = excluded.context, updated_at = excluded.updated_at",
    )?
    .execute(params![
        repo.unwrap_or(""),
        workflow,
        to_json("context", context)?,
        now_ms()
    ])?;
    Ok(())
}
