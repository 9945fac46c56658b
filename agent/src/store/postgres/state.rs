//! Small keyed state on PostgreSQL: workflow contexts, the step cache, the last commit seen
//! per branch and the cron slots already fired (the same rows and meaning as SQLite's).

use chrono::{DateTime, Utc};
use postgres::Transaction;
use serde_json::Value;

use super::PgDb;
use crate::store::codec::{from_json, from_ms, from_ms_opt, now_ms, to_json, to_ms};
use crate::store::{CacheEntry, StoreError};

/// Records the last handled commit of a branch inside `tx`.
pub(crate) fn set_repo_head_tx(
    tx: &mut Transaction<'_>,
    repo: &str,
    branch: &str,
    commit: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO repo_heads (repo, branch, commit_id, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo, branch) DO UPDATE SET
             commit_id = excluded.commit_id, updated_at = excluded.updated_at",
        &[&repo, &branch, &commit, &now_ms()],
    )?;
    Ok(())
}

impl PgDb {
    /// The preserved context of a workflow (`context.preserve: true`), if one was saved.
    pub(crate) fn load_context(
        &self,
        repo: Option<&str>,
        workflow: &str,
    ) -> Result<Option<Value>, StoreError> {
        let text: Option<String> = self.read(|c| {
            Ok(c.query_opt(
                "SELECT context FROM contexts WHERE repo = $1 AND workflow = $2",
                &[&repo.unwrap_or(""), &workflow],
            )?
            .map(|r| r.get(0)))
        })?;
        text.map(|t| from_json("context", &t)).transpose()
    }

    /// Saves a workflow's preserved context (normally done by `finish_run`).
    pub(crate) fn save_context(
        &mut self,
        repo: Option<&str>,
        workflow: &str,
        context: &Value,
    ) -> Result<(), StoreError> {
        self.write(|tx| super::tx::save_context_tx(tx, repo, workflow, context))
    }

    /// A cache entry that has not expired at `now`.
    pub(crate) fn cache_get(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let row: Option<(String, i64, Option<i64>)> = self.read(|c| {
            Ok(c.query_opt(
                "SELECT value, created_at, expires_at FROM cache_entries
                 WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)",
                &[&key, &to_ms(now)],
            )?
            .map(|r| (r.get(0), r.get(1), r.get(2))))
        })?;
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
        let text = to_json("value", value)?;
        let expires = expires_at.map(to_ms);
        self.write(|tx| {
            tx.execute(
                "INSERT INTO cache_entries (key, value, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                     created_at = excluded.created_at, expires_at = excluded.expires_at",
                &[&key, &text, &now_ms(), &expires],
            )?;
            Ok(())
        })
    }

    /// Deletes cache entries expired at `now`; returns how many.
    pub(crate) fn cache_prune(&mut self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let n = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM cache_entries WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&to_ms(now)],
            )?)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The last commit the daemon handled on `branch` of `repo`.
    pub(crate) fn last_seen_commit(
        &self,
        repo: &str,
        branch: &str,
    ) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT commit_id FROM repo_heads WHERE repo = $1 AND branch = $2",
                &[&repo, &branch],
            )?
            .map(|r| r.get(0)))
        })
    }

    /// Every branch of `repo` with its last handled commit, by branch name.
    pub(crate) fn seen_branches(&self, repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            Ok(c.query(
                // Byte order, as SQLite's default collation sorts.
                "SELECT branch, commit_id FROM repo_heads WHERE repo = $1
                 ORDER BY branch COLLATE \"C\"",
                &[&repo],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    /// Records the last handled commit of a branch without queueing anything (first sight of
    /// a repository, or a commit no workflow matched).
    pub(crate) fn set_last_seen_commit(
        &mut self,
        repo: &str,
        branch: &str,
        commit: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| set_repo_head_tx(tx, repo, branch, commit))
    }

    /// The latest slot claimed for a schedule.
    pub(crate) fn last_cron_fire(
        &self,
        schedule_key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let ms: Option<i64> = self.read(|c| {
            Ok(c.query_one(
                "SELECT MAX(slot) FROM cron_fires WHERE schedule_key = $1",
                &[&schedule_key],
            )?
            .get(0))
        })?;
        from_ms_opt("slot", ms)
    }
}
