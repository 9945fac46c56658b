//! What the daemon keeps to watch itself, on PostgreSQL: detected anomalies, the delivery
//! ids of inbound push hooks already handled (a replay is ignored whichever agent of the
//! fleet receives it), and the aggregates anomaly detection and `/metrics` need.

use super::PgDb;
use crate::store::codec::{from_json, from_ms, now_ms, parse_enum, to_json};
use crate::store::{AnomalyRecord, HOOK_DELIVERY_TTL, NewAnomaly, RunId, RunSample, StoreError};

impl PgDb {
    /// Remembers an inbound hook delivery id; false when it was already seen (a replay).
    /// Ids older than [`HOOK_DELIVERY_TTL`] are forgotten in the same transaction.
    pub(crate) fn record_hook_delivery(
        &mut self,
        source: &str,
        delivery_id: &str,
        repo: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let now = now_ms();
            tx.execute(
                "DELETE FROM hook_deliveries WHERE received_at < $1",
                &[&(now - HOOK_DELIVERY_TTL.num_milliseconds())],
            )?;
            let inserted = tx.execute(
                "INSERT INTO hook_deliveries (source, delivery_id, repo, received_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&source, &delivery_id, &repo, &now],
            )?;
            Ok(inserted == 1)
        })
    }

    /// Records an anomaly; `None` when the same kind was already recorded for the same run
    /// (and step), so detection may safely look at a run twice.
    pub(crate) fn record_anomaly(
        &mut self,
        anomaly: &NewAnomaly,
    ) -> Result<Option<AnomalyRecord>, StoreError> {
        let details = to_json("details", &anomaly.details)?;
        let (id, now) = self.write(|tx| {
            let now = now_ms();
            let id: Option<i64> = tx
                .query_opt(
                    "INSERT INTO anomalies
                         (kind, workflow, repo, run_id, step_id, message, details, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT DO NOTHING RETURNING id",
                    &[
                        &anomaly.kind,
                        &anomaly.workflow,
                        &anomaly.repo,
                        &anomaly.run_id.map(|r| r.0),
                        &anomaly.step.as_deref().unwrap_or(""),
                        &anomaly.message,
                        &details,
                        &now,
                    ],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            Ok((id, now))
        })?;
        let Some(id) = id else {
            return Ok(None);
        };
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
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT id, kind, workflow, repo, run_id, step_id, message, details, created_at
                 FROM anomalies WHERE ($1::TEXT IS NULL OR workflow = $1)
                 ORDER BY id DESC LIMIT $2",
                &[&workflow, &super::limit(limit)],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                let step: String = r.try_get(5)?;
                let details: String = r.try_get(7)?;
                Ok(AnomalyRecord {
                    id: r.try_get(0)?,
                    anomaly: NewAnomaly {
                        kind: r.try_get(1)?,
                        workflow: r.try_get(2)?,
                        repo: r.try_get(3)?,
                        run_id: r.try_get::<_, Option<i64>>(4)?.map(RunId),
                        step: (!step.is_empty()).then_some(step),
                        message: r.try_get(6)?,
                        details: from_json("details", &details)?,
                    },
                    created_at: from_ms("created_at", r.try_get(8)?)?,
                })
            })
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
        let rows = self.read(|c| {
            Ok(c.query(
                "SELECT id, status,
                        COALESCE(
                            CASE WHEN jsonb_typeof(report::jsonb -> 'duration_ms') = 'number'
                                 THEN (report::jsonb ->> 'duration_ms')::NUMERIC::BIGINT END,
                            finished_at - started_at)
                 FROM runs
                 WHERE workflow = $1 AND repo IS NOT DISTINCT FROM $2 AND id <= $3
                   AND (status = 'succeeded' OR ($4::BIGINT = 0 AND status = 'failed'))
                   AND finished_at IS NOT NULL
                 ORDER BY id DESC LIMIT $5",
                &[
                    &workflow,
                    &repo,
                    &up_to.0,
                    &i64::from(succeeded_only),
                    &super::limit(limit),
                ],
            )?)
        })?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(1)?;
                let duration: Option<i64> = r.try_get(2)?;
                Ok(RunSample {
                    id: RunId(r.try_get(0)?),
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
        self.read(|c| {
            c.query(sql, &[])?
                .iter()
                .map(|r| {
                    let n: i64 = r.try_get(1)?;
                    Ok((r.try_get(0)?, u64::try_from(n).unwrap_or(0)))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStatus;

    /// Run samples on PostgreSQL: the report's `duration_ms` first (a number only), else
    /// finished minus started; failed runs only when asked; the repository compared with
    /// NULL as equal.
    #[test]
    fn run_samples_read_the_report_duration() {
        let db = PgDb::connect(&crate::store::test_pg::database_url()).expect("connect");
        let ids: Vec<i64> = [
            ("succeeded", Some(r#"{"duration_ms": 100}"#)),
            ("failed", Some(r#"{"duration_ms": 200.4}"#)),
            ("succeeded", Some(r#"{"duration_ms": "x"}"#)),
            ("succeeded", None),
        ]
        .into_iter()
        .map(|(status, report)| {
            db.write(|tx| {
                Ok(tx
                    .query_one(
                        "INSERT INTO runs (workflow, repo, status, trigger_kind, created_at,
                                           started_at, finished_at, report)
                         VALUES ('w', 'app', $1, 'manual', 0, 10, 60, $2) RETURNING id",
                        &[&status, &report],
                    )?
                    .get(0))
            })
            .expect("insert")
        })
        .collect();
        let all = db
            .recent_run_samples("w", Some("app"), RunId(ids[3]), false, 10)
            .expect("samples");
        let got: Vec<_> = all.iter().map(|s| (s.status, s.duration_ms)).collect();
        assert_eq!(
            got,
            [
                (RunStatus::Succeeded, Some(50)),
                (RunStatus::Succeeded, Some(50)),
                (RunStatus::Failed, Some(200)),
                (RunStatus::Succeeded, Some(100)),
            ]
        );
        let ok = db
            .recent_run_samples("w", Some("app"), RunId(ids[1]), true, 10)
            .expect("samples");
        assert_eq!(ok.len(), 1);
        assert!(
            db.recent_run_samples("w", None, RunId(ids[3]), false, 10)
                .expect("samples")
                .is_empty()
        );
    }
}
