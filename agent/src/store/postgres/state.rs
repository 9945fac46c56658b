//! STUB

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::store::overlap::Admission;
use crate::store::{CacheEntry, Enqueued, NewRun, StoreError};

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

    /// The latest slot claimed for a schedule.
    pub fn last_cron_fire(&self, _schedule_key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Err(super::unsupported("last_cron_fire"))
    }
}
