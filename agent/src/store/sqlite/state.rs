//! Small keyed state: workflow contexts, the step cache, the last commit seen per branch and
//! the cron slots already fired.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::tx::{OnSkip, enqueue_tx, insert_run, save_context_tx};
use super::{
    CacheEntry, Enqueued, NewRun, RunId, RunStatus, SqliteDb, StoreError, from_json, from_ms,
    from_ms_opt, now_ms, to_json, to_ms,
};
use crate::store::overlap::Admission;

/// Records a fired cron slot inside `tx`; false if it was already claimed.
fn claim_slot_tx(
    tx: &Transaction<'_>,
    schedule_key: &str,
    slot: DateTime<Utc>,
    run_id: Option<RunId>,
) -> Result<bool, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO cron_fires (schedule_key, slot, fired_at, run_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (schedule_key, slot) DO NOTHING",
        )?
        .execute(params![
            schedule_key,
            to_ms(slot),
            now_ms(),
            run_id.map(|r| r.0)
        ])?;
    Ok(inserted == 1)
}

impl SqliteDb {
    /// The preserved context of a workflow (`context.preserve: true`), if one was saved.
    pub(crate) fn load_context(
        &self,
        repo: Option<&str>,
        workflow: &str,
    ) -> Result<Option<Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT context FROM contexts WHERE repo = ?1 AND workflow = ?2",
                params![repo.unwrap_or(""), workflow],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| from_json("context", &t)).transpose()
    }

    /// Saves a workflow's preserved context (normally done by [`SqliteDb::finish_run`]).
    pub(crate) fn save_context(
        &mut self,
        repo: Option<&str>,
        workflow: &str,
        context: &Value,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        save_context_tx(&tx, repo, workflow, context)?;
        tx.commit()?;
        Ok(())
    }

    /// A cache entry that has not expired at `now`.
    pub(crate) fn cache_get(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let row: Option<(String, i64, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT value, created_at, expires_at FROM cache_entries
                 WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![key, to_ms(now)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(value, created, expires)| {
            Ok(CacheEntry {
                key: key.to_string(),
                value: from_json("value", &value)?,
                created_at: from_ms("created_at", created)?,
                expires_at: from_ms_opt("expires_at", expires)?,
            })
        })
        .transpose()
    }

    /// Stores (or replaces) a cache entry.
    pub(crate) fn cache_put(
        &mut self,
        key: &str,
        value: &Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO cache_entries (key, value, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            key,
            to_json("value", value)?,
            now_ms(),
            expires_at.map(to_ms)
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes cache entries expired at `now`; returns how many.
    pub(crate) fn cache_prune(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let n = tx.execute(
            "DELETE FROM cache_entries WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![to_ms(now)],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The last commit the daemon handled on `branch` of `repo`.
    pub(crate) fn last_seen_commit(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT commit_id FROM repo_heads WHERE repo = ?1 AND branch = ?2",
                params![repo, branch],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every branch of `repo` with its last handled commit, by branch name.
    pub(crate) fn seen_branches(&self, repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT branch, commit_id FROM repo_heads WHERE repo = ?1 ORDER BY branch",
        )?;
        let rows = stmt
            .query_map(params![repo], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Records the last handled commit of a branch without queueing anything (first sight of
    /// a repository, or a commit no workflow matched).
    pub(crate) fn set_last_seen_commit(
        &mut self,
        repo: &str,
        branch: &str,
        commit: &str,
    ) -> Result<(), StoreError> {
        self.record_push(repo, branch, commit, &[], &[]).map(|_| ())
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
        let tx = self.write()?;
        let mut out = Vec::with_capacity(runs.len() + failed.len());
        for run in runs {
            out.push(match enqueue_tx(&tx, run, OnSkip::RecordCancelled)? {
                Admission::Queued { run, .. } => run,
                // Not reached: a skip is recorded as a cancelled run above.
                Admission::Skipped { active } => Enqueued::Duplicate(active),
            });
        }
        for (run, error) in failed {
            out.push(insert_run(&tx, run, RunStatus::Failed, Some(error))?);
        }
        tx.prepare_cached(
            "INSERT INTO repo_heads (repo, branch, commit_id, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (repo, branch) DO UPDATE SET
                 commit_id = excluded.commit_id, updated_at = excluded.updated_at",
        )?
        .execute(params![repo, branch, commit, now_ms()])?;
        tx.commit()?;
        Ok(out)
    }

    /// Claims a cron slot: true the first time `(schedule_key, slot)` is claimed, false every
    /// time after, also across restarts and processes. A slot skipped on purpose (overlap,
    /// catch-up) is claimed too, so it never fires later.
    pub(crate) fn claim_cron_slot(
        &mut self,
        schedule_key: &str,
        slot: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let claimed = claim_slot_tx(&tx, schedule_key, slot, None)?;
        tx.commit()?;
        Ok(claimed)
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
        let tx = self.write()?;
        if !claim_slot_tx(&tx, schedule_key, slot, None)? {
            return Ok(None);
        }
        let admission = enqueue_tx(&tx, run, OnSkip::Nothing)?;
        if let Admission::Queued {
            run: Enqueued::Created(id),
            ..
        } = &admission
        {
            tx.execute(
                "UPDATE cron_fires SET run_id = ?3 WHERE schedule_key = ?1 AND slot = ?2",
                params![schedule_key, to_ms(slot), id.0],
            )?;
        }
        tx.commit()?;
        Ok(Some(admission))
    }

    /// The latest slot claimed for a schedule.
    pub(crate) fn last_cron_fire(
        &self,
        schedule_key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let ms: Option<i64> = self.conn.query_row(
            "SELECT MAX(slot) FROM cron_fires WHERE schedule_key = ?1",
            params![schedule_key],
            |r| r.get(0),
        )?;
        from_ms_opt("slot", ms)
    }
}

/// Forgets claimed cron slots older than `before` inside `tx`, keeping each schedule's latest
/// one (the catch-up logic needs it). Returns how many were deleted.
pub(crate) fn prune_cron_fires_tx(
    tx: &Transaction<'_>,
    before: DateTime<Utc>,
) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM cron_fires AS c WHERE slot < ?1
           AND slot < (SELECT MAX(slot) FROM cron_fires AS l
                       WHERE l.schedule_key = c.schedule_key)",
        params![to_ms(before)],
    )?)
}
