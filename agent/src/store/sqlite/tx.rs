//! Statements that more than one concern runs inside the same transaction (a run inserted by
//! a push, a cron slot or the queue; a context saved when a run finishes). They live here so
//! that the concern files import this one and never each other.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{Enqueued, NewRun, RunId, RunStatus, StoreError, now_ms, to_json, to_ms};

/// Inserts a run (deduplicated by key) inside `tx`, with the given status.
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
