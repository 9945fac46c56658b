//! What the daemon keeps to watch itself (schema version 2): detected anomalies, the delivery
//! ids of inbound push hooks already handled (so a replayed hook, even after a restart, is
//! ignored), and the read-only aggregates anomaly detection and `/metrics` need (recent run
//! durations and outcomes of a workflow, deliveries by status).
//!
//! What it does not own: the detection rules (`crate::monitor::anomaly`) and the HTTP side
//! (`crate::api`).

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde_json::Value;

use super::{
    RunId, RunStatus, SqliteDb, StoreError, from_json, from_ms, now_ms, parse_enum, to_json,
};

/// How long an inbound hook's delivery id is remembered (GitHub redelivers for days at most).
pub(crate) const HOOK_DELIVERY_TTL: chrono::Duration = chrono::Duration::days(30);

/// An anomaly to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAnomaly {
    /// What kind: `slow_run`, `failure_rate` or `step_memory`.
    pub kind: String,
    /// The workflow's name.
    pub workflow: String,
    /// Its repository, if any.
    pub repo: Option<String>,
    /// The run that showed it.
    pub run_id: Option<RunId>,
    /// The step, for `step_memory`.
    pub step: Option<String>,
    /// One line for people.
    pub message: String,
    /// The figures behind it (JSON object).
    pub details: Value,
}

/// A recorded anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRecord {
    /// Its id (increasing).
    pub id: i64,
    /// The anomaly itself.
    pub anomaly: NewAnomaly,
    /// When it was detected.
    pub created_at: DateTime<Utc>,
}

/// One finished run of a workflow, as anomaly detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSample {
    /// The run.
    pub id: RunId,
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    /// The engine's `duration_ms` from the run report, else finished minus started.
    pub duration_ms: Option<u64>,
}

impl SqliteDb {
    /// Remembers an inbound hook delivery id; false when it was already seen (a replay).
    /// Ids older than [`HOOK_DELIVERY_TTL`] are forgotten in the same transaction.
    pub(crate) fn record_hook_delivery(
        &mut self,
        source: &str,
        delivery_id: &str,
        repo: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let tx = self.write()?;
        tx.execute(
            "DELETE FROM hook_deliveries WHERE received_at < ?1",
            params![now - HOOK_DELIVERY_TTL.num_milliseconds()],
        )?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO hook_deliveries (source, delivery_id, repo, received_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![source, delivery_id, repo, now],
        )?;
        tx.commit()?;
        Ok(inserted == 1)
    }

    /// Records an anomaly; `None` when the same kind was already recorded for the same run
    /// (and step), so detection may safely look at a run twice.
    pub(crate) fn record_anomaly(
        &mut self,
        anomaly: &NewAnomaly,
    ) -> Result<Option<AnomalyRecord>, StoreError> {
        let now = now_ms();
        let tx = self.write()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO anomalies
                 (kind, workflow, repo, run_id, step_id, message, details, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                anomaly.kind,
                anomaly.workflow,
                anomaly.repo,
                anomaly.run_id.map(|r| r.0),
                anomaly.step.as_deref().unwrap_or(""),
                anomaly.message,
                to_json("details", &anomaly.details)?,
                now,
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        if inserted == 0 {
            return Ok(None);
        }
        Ok(Some(AnomalyRecord {
            id,
            anomaly: anomaly.clone(),
            created_at: from_ms("created_at", now)?,
        }))
    }

    /// Recorded anomalies, newest first, optionally of one workflow.
    pub(crate) fn list_anomalies(
        &self,
        workflow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AnomalyRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, workflow, repo, run_id, step_id, message, details, created_at
             FROM anomalies WHERE (?1 IS NULL OR workflow = ?1)
             ORDER BY id DESC LIMIT ?2",
        )?;
        type Raw = (
            i64,
            String,
            String,
            Option<String>,
            Option<i64>,
            String,
            String,
            String,
            i64,
        );
        let rows = stmt
            .query_map(params![workflow, limit], |r| r.try_into())?
            .collect::<rusqlite::Result<Vec<Raw>>>()?;
        rows.into_iter()
            .map(
                |(id, kind, workflow, repo, run_id, step, message, details, created_at)| {
                    Ok(AnomalyRecord {
                        id,
                        anomaly: NewAnomaly {
                            kind,
                            workflow,
                            repo,
                            run_id: run_id.map(RunId),
                            step: (!step.is_empty()).then_some(step),
                            message,
                            details: from_json("details", &details)?,
                        },
                        created_at: from_ms("created_at", created_at)?,
                    })
                },
            )
            .collect()
    }

    /// The latest `limit` succeeded or failed runs of `workflow` in `repo` with an id up to
    /// `up_to` (inclusive), newest first. With `succeeded_only`, failed runs are left out.
    pub(crate) fn recent_run_samples(
        &self,
        workflow: &str,
        repo: Option<&str>,
        up_to: RunId,
        succeeded_only: bool,
        limit: usize,
    ) -> Result<Vec<RunSample>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, status,
                    COALESCE(json_extract(report, '$.duration_ms'), finished_at - started_at)
             FROM runs
             WHERE workflow = ?1 AND repo IS ?2 AND id <= ?3
               AND (status = 'succeeded' OR (?4 = 0 AND status = 'failed'))
               AND finished_at IS NOT NULL
             ORDER BY id DESC LIMIT ?5",
        )?;
        let rows = stmt
            .query_map(
                params![workflow, repo, up_to.0, i64::from(succeeded_only), limit],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, status, duration)| {
                Ok(RunSample {
                    id: RunId(id),
                    status: parse_enum("status", &status)?,
                    duration_ms: duration.and_then(|d| u64::try_from(d).ok()),
                })
            })
            .collect()
    }

    /// The number of webhook deliveries in each status (`pending`, `delivered`, `failed`).
    pub(crate) fn count_deliveries_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.grouped_counts("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
    }

    /// The number of delivery attempts by outcome: `ok` (2xx), `http_4xx`, `http_5xx`,
    /// `error` (no answer: connection error or timeout).
    pub(crate) fn count_delivery_attempts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.grouped_counts(
            "SELECT CASE
                      WHEN status_code IS NULL THEN 'error'
                      WHEN status_code < 300 THEN 'ok'
                      WHEN status_code < 500 THEN 'http_4xx'
                      ELSE 'http_5xx' END AS outcome,
                    COUNT(*)
             FROM delivery_attempts GROUP BY outcome",
        )
    }

    /// The `(name, count)` rows of a `SELECT name, COUNT(*) ... GROUP BY` query.
    fn grouped_counts(&self, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}
