//! Statements that more than one concern runs inside the same transaction (a run inserted by
//! a push, a cron slot or the queue; a context saved when a run finishes; a run's end
//! delivery; old cron slots pruned with old runs). They live here so that the concern files
//! import this one and never each other. The PostgreSQL twin of `sqlite/tx.rs`.

use chrono::{DateTime, Utc};
use postgres::Transaction;
use serde_json::Value;

use crate::store::codec::{now_ms, to_json, to_ms};
use crate::store::overlap::{self, Admission, Decision};
use crate::store::{Enqueued, NewDelivery, NewRun, RunId, RunStatus, StoreError};

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
/// the active runs of its group are read in the same (serializable) transaction that
/// inserts it, so two enqueues of one group, on any node, always see each other (one of them
/// is retried). A duplicate (same dedup key) is answered as such before any rule.
/// `cancel_previous` marks the older active runs `cancel_requested` here too, so their
/// cancellation survives a crash.
pub(crate) fn enqueue_tx(
    tx: &mut Transaction<'_>,
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
            for id in &cancel {
                tx.execute(
                    "UPDATE runs SET cancel_requested = 1 WHERE id = $1",
                    &[&id.0],
                )?;
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
fn duplicate_of(tx: &mut Transaction<'_>, run: &NewRun) -> Result<Option<RunId>, StoreError> {
    let Some(key) = &run.dedup_key else {
        return Ok(None);
    };
    Ok(tx
        .query_opt("SELECT id FROM runs WHERE dedup_key = $1", &[key])?
        .map(|r| RunId(r.get::<_, i64>(0))))
}

/// The queued and running runs an overlap rule of `run` looks at, oldest first: those of its
/// concurrency group, or without a group those of its workflow in its repository.
fn active_in_scope(tx: &mut Transaction<'_>, run: &NewRun) -> Result<Vec<RunId>, StoreError> {
    let rows = match &run.concurrency_group {
        Some(group) => tx.query(
            "SELECT id FROM runs
             WHERE concurrency_group = $1 AND status IN ('queued', 'running') ORDER BY id",
            &[group],
        )?,
        None => tx.query(
            "SELECT id FROM runs
             WHERE workflow = $1 AND repo IS NOT DISTINCT FROM $2
               AND status IN ('queued', 'running')
             ORDER BY id",
            &[&run.workflow, &run.repo],
        )?,
    };
    Ok(rows.iter().map(|r| RunId(r.get::<_, i64>(0))).collect())
}

/// Inserts a run (deduplicated by key) inside `tx`, with the given status, whatever its
/// overlap rule (a failed run; queued runs go through [`enqueue_tx`]).
pub(crate) fn insert_run(
    tx: &mut Transaction<'_>,
    run: &NewRun,
    status: RunStatus,
    error: Option<&str>,
) -> Result<Enqueued, StoreError> {
    if let Some(id) = duplicate_of(tx, run)? {
        return Ok(Enqueued::Duplicate(id));
    }
    let now = now_ms();
    let finished_at = status.is_final().then_some(now);
    let event = run
        .event
        .as_ref()
        .map(|e| serde_json::to_string(e).map_err(StoreError::json("trigger_event")))
        .transpose()?;
    let row = tx.query_one(
        "INSERT INTO runs (workflow, repo, status, trigger_kind, trigger_commit, trigger_branch,
             scheduled_for, parameters, created_at, finished_at, error, priority,
             concurrency_group, dedup_key, retry_of, workflow_file, trigger_event)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         RETURNING id",
        &[
            &run.workflow,
            &run.repo,
            &status.as_str(),
            &run.trigger.kind.as_str(),
            &run.trigger.commit,
            &run.trigger.branch,
            &run.trigger.scheduled_for.map(to_ms),
            &to_json("parameters", &run.parameters)?,
            &now,
            &finished_at,
            &error,
            &run.priority,
            &run.concurrency_group,
            &run.dedup_key,
            &run.retry_of.map(|r| r.0),
            &run.workflow_file,
            &event,
        ],
    )?;
    Ok(Enqueued::Created(RunId(row.get::<_, i64>(0))))
}

/// Saves a workflow's preserved context inside `tx`. Runs without a repository share the key
/// `""`.
pub(crate) fn save_context_tx(
    tx: &mut Transaction<'_>,
    repo: Option<&str>,
    workflow: &str,
    context: &Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO contexts (repo, workflow, context, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo, workflow) DO UPDATE SET
             context = excluded.context, updated_at = excluded.updated_at",
        &[
            &repo.unwrap_or(""),
            &workflow,
            &to_json("context", context)?,
            &now_ms(),
        ],
    )?;
    Ok(())
}

/// Queues a webhook delivery inside `tx`, due `delay_ms` from now; returns its id.
pub(crate) fn insert_delivery_due(
    tx: &mut Transaction<'_>,
    delivery: &NewDelivery,
    delay_ms: i64,
) -> Result<String, StoreError> {
    let id = crate::store::sqlite::outbox::new_delivery_id();
    let now = now_ms();
    tx.execute(
        "INSERT INTO deliveries (id, webhook, event, run_id, body, status, attempts,
                                 next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7)",
        &[
            &id,
            &delivery.webhook,
            &delivery.event,
            &delivery.run_id.map(|r| r.0),
            &to_json("body", &delivery.body)?,
            &now.saturating_add(delay_ms),
            &now,
        ],
    )?;
    Ok(id)
}

/// Queues a run's end delivery inside `finish_run`'s transaction, held for the same time as
/// on SQLite (`RUN_END_HOLD`); returns its id.
pub(crate) fn insert_delivery(
    tx: &mut Transaction<'_>,
    delivery: &NewDelivery,
) -> Result<String, StoreError> {
    let hold =
        i64::try_from(crate::store::sqlite::outbox::RUN_END_HOLD.as_millis()).unwrap_or(i64::MAX);
    insert_delivery_due(tx, delivery, hold)
}

/// Records a fired cron slot inside `tx`; false if it was already claimed.
pub(crate) fn claim_slot_tx(
    tx: &mut Transaction<'_>,
    schedule_key: &str,
    slot: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<bool, StoreError> {
    let inserted = tx.execute(
        "INSERT INTO cron_fires (schedule_key, slot, fired_at, run_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (schedule_key, slot) DO NOTHING",
        &[&schedule_key, &to_ms(slot), &now_ms(), &run_id.map(|r| r.0)],
    )?;
    Ok(inserted == 1)
}

/// Forgets claimed cron slots older than `before` inside `tx`, keeping each schedule's latest
/// one (the catch-up logic needs it). Returns how many were deleted.
pub(crate) fn prune_cron_fires_tx(
    tx: &mut Transaction<'_>,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(tx.execute(
        "DELETE FROM cron_fires AS c WHERE slot < $1
           AND slot < (SELECT MAX(slot) FROM cron_fires AS l
                       WHERE l.schedule_key = c.schedule_key)",
        &[&to_ms(before)],
    )?)
}
