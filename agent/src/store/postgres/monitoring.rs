//! STUB: the PostgreSQL side of these operations is being written.

use crate::store::{AnomalyRecord, NewAnomaly, RunId, RunSample, StoreError};

use super::PgDb;

impl PgDb {
    /// Remembers an inbound hook delivery id; false when it was already seen (a replay).
    /// Ids older than [`HOOK_DELIVERY_TTL`] are forgotten in the same transaction.
    pub fn record_hook_delivery(
        &mut self,
        _source: &str,
        _delivery_id: &str,
        _repo: Option<&str>,
    ) -> Result<bool, StoreError> {
        Err(super::unsupported("record_hook_delivery"))
    }

    /// Records an anomaly; `None` when the same kind was already recorded for the same run
    /// (and step), so detection may safely look at a run twice.
    pub fn record_anomaly(
        &mut self,
        _anomaly: &NewAnomaly,
    ) -> Result<Option<AnomalyRecord>, StoreError> {
        Err(super::unsupported("record_anomaly"))
    }

    /// Recorded anomalies, newest first, optionally of one workflow.
    pub fn list_anomalies(
        &self,
        _workflow: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<AnomalyRecord>, StoreError> {
        Err(super::unsupported("list_anomalies"))
    }

    /// The latest `limit` succeeded or failed runs of `workflow` in `repo` with an id up to
    /// `up_to` (inclusive), newest first. With `succeeded_only`, failed runs are left out.
    pub fn recent_run_samples(
        &self,
        _workflow: &str,
        _repo: Option<&str>,
        _up_to: RunId,
        _succeeded_only: bool,
        _limit: usize,
    ) -> Result<Vec<RunSample>, StoreError> {
        Err(super::unsupported("recent_run_samples"))
    }

    /// The number of webhook deliveries in each status (`pending`, `delivered`, `failed`).
    pub fn count_deliveries_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(super::unsupported("count_deliveries_by_status"))
    }

    /// The number of delivery attempts by outcome: `ok` (2xx), `http_4xx`, `http_5xx`,
    /// `error` (no answer: connection error or timeout).
    pub fn count_delivery_attempts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(super::unsupported("count_delivery_attempts"))
    }
}
