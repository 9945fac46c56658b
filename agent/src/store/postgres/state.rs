//! STUB: the PostgreSQL side of these operations is being written.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::store::{CacheEntry, StoreError};

use super::PgDb;

impl PgDb {
    /// The preserved context of a workflow (`context.preserve: true`), if one was saved.
    pub fn load_context(
        &self,
        _repo: Option<&str>,
        _workflow: &str,
    ) -> Result<Option<Value>, StoreError> {
        Err(super::unsupported("load_context"))
    }

    /// Saves a workflow's preserved context (normally done by [`SqliteDb::finish_run`]).
    pub fn save_context(
        &mut self,
        _repo: Option<&str>,
        _workflow: &str,
        _context: &Value,
    ) -> Result<(), StoreError> {
        Err(super::unsupported("save_context"))
    }

    /// A cache entry that has not expired at `now`.
    pub fn cache_get(
        &self,
        _key: &str,
        _now: DateTime<Utc>,
    ) -> Result<Option<CacheEntry>, StoreError> {
        Err(super::unsupported("cache_get"))
    }

    /// Stores (or replaces) a cache entry.
    pub fn cache_put(
        &mut self,
        _key: &str,
        _value: &Value,
        _expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        Err(super::unsupported("cache_put"))
    }

    /// Deletes cache entries expired at `now`; returns how many.
    pub fn cache_prune(&mut self, _now: DateTime<Utc>) -> Result<usize, StoreError> {
        Err(super::unsupported("cache_prune"))
    }

    /// The last commit the daemon handled on `branch` of `repo`.
    pub fn last_seen_commit(
        &self,
        _repo: &str,
        _branch: &str,
    ) -> Result<Option<String>, StoreError> {
        Err(super::unsupported("last_seen_commit"))
    }

    /// Every branch of `repo` with its last handled commit, by branch name.
    pub fn seen_branches(&self, _repo: &str) -> Result<Vec<(String, String)>, StoreError> {
        Err(super::unsupported("seen_branches"))
    }

    /// Records the last handled commit of a branch without queueing anything (first sight of
    /// a repository, or a commit no workflow matched).
    pub fn set_last_seen_commit(
        &mut self,
        _repo: &str,
        _branch: &str,
        _commit: &str,
    ) -> Result<(), StoreError> {
        Err(super::unsupported("set_last_seen_commit"))
    }

    /// The latest slot claimed for a schedule.
    pub fn last_cron_fire(&self, _schedule_key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Err(super::unsupported("last_cron_fire"))
    }
}
