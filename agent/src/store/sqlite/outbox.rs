//! The webhook outbox: deliveries queued in the same transaction as the state change they
//! report, then attempted (and retried) by the notifier until delivered or given up.

use chrono::{DateTime, Utc};
use rusqlite::{Row, Transaction, params};

use super::{
    Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryStatus, NewDelivery, RunId, SqliteDb,
    StoreError, from_json, from_ms, from_ms_opt, now_ms, parse_enum, to_json, to_ms,
};

const DELIVERY_COLUMNS: &str = "id, webhook, event, run_id, body, status, attempts, \
     next_attempt_at, last_error, created_at";

/// A delivery row before fallible conversions.
struct RawDelivery {
    id: String,
    webhook: String,
    event: String,
    run_id: Option<i64>,
    body: String,
    status: String,
    attempts: u32,
    next_attempt_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
}

impl RawDelivery {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawDelivery> {
        Ok(RawDelivery {
            id: r.get(0)?,
            webhook: r.get(1)?,
            event: r.get(2)?,
            run_id: r.get(3)?,
            body: r.get(4)?,
            status: r.get(5)?,
            attempts: r.get(6)?,
            next_attempt_at: r.get(7)?,
            last_error: r.get(8)?,
            created_at: r.get(9)?,
        })
    }

    fn into_delivery(self) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            id: self.id,
            webhook: self.webhook,
            event: self.event,
            run_id: self.run_id.map(RunId),
            body: from_json("body", &self.body)?,
            status: parse_enum("status", &self.status)?,
            attempts: self.attempts,
            next_attempt_at: from_ms_opt("next_attempt_at", self.next_attempt_at)?,
            last_error: self.last_error,
            created_at: from_ms("created_at", self.created_at)?,
            history: Vec::new(),
        })
    }
}

/// A fresh delivery id: 128 random bits as a UUID-shaped string (version 4 layout).
pub(crate) fn new_delivery_id() -> String {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// How long a delivery queued with a run's end (`finish_run`) waits for the notifier to
/// release it ([`SqliteDb::release_run_deliveries`]) before it is due anyway.
///
/// The notifier queues a run's earlier events (`run.started`, `step.failed`, ...) itself, a
/// moment after they happen; holding the run's end until the notifier has seen it keeps
/// every webhook's deliveries in the order of the events, while a crash between the two
/// still loses nothing (after the hold, the end is sent regardless).
pub(crate) const RUN_END_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// Queues a delivery inside `tx`, due `delay_ms` from now; returns its id.
fn insert_delivery_due(
    tx: &Transaction<'_>,
    delivery: &NewDelivery,
    delay_ms: i64,
) -> Result<String, StoreError> {
    let id = new_delivery_id();
    let now = now_ms();
    tx.prepare_cached(
        "INSERT INTO deliveries (id, webhook, event, run_id, body, status, attempts,
                                 next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, ?7)",
    )?
    .execute(params![
        id,
        delivery.webhook,
        delivery.event,
        delivery.run_id.map(|r| r.0),
        to_json("body", &delivery.body)?,
        now + delay_ms,
        now,
    ])?;
    Ok(id)
}

/// Queues a run's end delivery inside `finish_run`'s transaction, held for
/// [`RUN_END_HOLD`]; returns its id.
pub(crate) fn insert_delivery(
    tx: &Transaction<'_>,
    delivery: &NewDelivery,
) -> Result<String, StoreError> {
    let hold = i64::try_from(RUN_END_HOLD.as_millis()).unwrap_or(i64::MAX);
    insert_delivery_due(tx, delivery, hold)
}

impl SqliteDb {
    /// Queues a webhook delivery, due now; returns its id (the `X-Agent-Delivery` header).
    pub(crate) fn enqueue_delivery(
        &mut self,
        delivery: &NewDelivery,
    ) -> Result<String, StoreError> {
        let tx = self.write()?;
        let id = insert_delivery_due(&tx, delivery, 0)?;
        tx.commit()?;
        Ok(id)
    }

    /// Turns the un-rendered outbox events (of `run`, or all of them written at or before
    /// `written_by`) into deliveries, due now, in one transaction: `render` gets each event's run and event name and answers
    /// its deliveries; the event row goes with them, so a crash renders it again or not at
    /// all. Returns the deliveries queued.
    pub(crate) fn render_outbox_events(
        &mut self,
        run: Option<RunId>,
        written_by: Option<DateTime<Utc>>,
        mut render: impl FnMut(&super::RunRecord, &str) -> Vec<NewDelivery>,
    ) -> Result<Vec<NewDelivery>, StoreError> {
        let tx = self.write()?;
        let events: Vec<(i64, i64, String)> = {
            let mut stmt = tx.prepare(
                "SELECT id, run_id, event FROM outbox_events
                 WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR created_at <= ?2)
                 ORDER BY id",
            )?;
            stmt.query_map(params![run.map(|r| r.0), written_by.map(to_ms)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut queued = Vec::new();
        for (id, run_id, event) in events {
            if let Some(record) = super::runs::load_run(&tx, RunId(run_id))? {
                for delivery in render(&record, &event) {
                    insert_delivery_due(&tx, &delivery, 0)?;
                    queued.push(delivery);
                }
            }
            tx.execute("DELETE FROM outbox_events WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Releases the held, never-attempted deliveries of `run` whose event is one of
    /// `events` (a run's end, queued by `finish_run`): each is due now and moves to the back
    /// of its webhook's queue (same id, `created_at` now), behind the run's earlier events.
    /// Returns how many were released.
    pub(crate) fn release_run_deliveries(
        &mut self,
        run: RunId,
        events: &[&str],
    ) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let now = now_ms();
        let held: Vec<RawDelivery> = {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE run_id = ?1 AND status = 'pending' AND attempts = 0
                   AND next_attempt_at > ?2
                 ORDER BY created_at, rowid"
            );
            let mut stmt = tx.prepare(&sql)?;
            stmt.query_map(params![run.0, now], RawDelivery::from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut released = 0;
        for d in held.iter().filter(|d| events.contains(&d.event.as_str())) {
            // Delete and insert again so that the row also sorts after rows queued in the
            // same millisecond (ties are broken by rowid).
            tx.execute("DELETE FROM deliveries WHERE id = ?1", params![d.id])?;
            tx.execute(
                "INSERT INTO deliveries (id, webhook, event, run_id, body, status, attempts,
                                         next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)",
                params![d.id, d.webhook, d.event, d.run_id, d.body, now],
            )?;
            released += 1;
        }
        tx.commit()?;
        Ok(released)
    }

    /// Pending deliveries due at `now`, the most overdue first.
    pub(crate) fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, created_at LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let raw = stmt
            .query_map(params![to_ms(now), limit], RawDelivery::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(RawDelivery::into_delivery).collect()
    }

    /// The oldest pending delivery of one webhook, due or not: the head of its FIFO queue
    /// (deliveries of a webhook are attempted one at a time, in the order they were queued).
    pub(crate) fn next_pending_delivery(
        &self,
        webhook: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE status = 'pending' AND webhook = ?1
             ORDER BY created_at, rowid LIMIT 1"
        );
        let raw = rusqlite::OptionalExtension::optional(self.conn.query_row(
            &sql,
            params![webhook],
            RawDelivery::from_row,
        ))?;
        raw.map(RawDelivery::into_delivery).transpose()
    }

    /// Deletes delivered and failed deliveries (and their attempts) last touched before
    /// `before`; pending ones stay. Returns how many went.
    pub(crate) fn prune_deliveries(&mut self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let cutoff = to_ms(before);
        tx.execute(
            "DELETE FROM delivery_attempts WHERE delivery_id IN (
                 SELECT id FROM deliveries WHERE status != 'pending' AND updated_at < ?1)",
            params![cutoff],
        )?;
        let n = tx.execute(
            "DELETE FROM deliveries WHERE status != 'pending' AND updated_at < ?1",
            params![cutoff],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The latest attempt of a delivery, if it was attempted.
    pub(crate) fn last_delivery_attempt(
        &self,
        id: &str,
    ) -> Result<Option<DeliveryAttempt>, StoreError> {
        let row = rusqlite::OptionalExtension::optional(self.conn.query_row(
            "SELECT attempt, at, status_code, error FROM delivery_attempts
             WHERE delivery_id = ?1 ORDER BY attempt DESC LIMIT 1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<u16>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        ))?;
        row.map(|(attempt, at, status_code, error)| {
            Ok(DeliveryAttempt {
                attempt,
                at: from_ms("at", at)?,
                status_code,
                error,
            })
        })
        .transpose()
    }

    /// The webhooks that have pending deliveries, with how many each.
    pub(crate) fn pending_delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT webhook, COUNT(*) FROM deliveries WHERE status = 'pending'
             GROUP BY webhook ORDER BY webhook",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// When the next pending delivery is due, so the notifier can sleep until then.
    pub(crate) fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let ms: Option<i64> = self.conn.query_row(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        from_ms_opt("next_attempt_at", ms)
    }

    /// Records one attempt of a delivery and its consequence; returns the attempt number.
    pub(crate) fn record_delivery_attempt(
        &mut self,
        id: &str,
        outcome: &DeliveryOutcome,
    ) -> Result<u32, StoreError> {
        let tx = self.write()?;
        let attempt = record_attempt_tx(&tx, id, outcome)?;
        tx.commit()?;
        Ok(attempt)
    }

    /// The newest deliveries first, each with its attempt history.
    pub(crate) fn list_deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY created_at DESC, rowid DESC LIMIT ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let raw = stmt
            .query_map(params![limit], RawDelivery::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: Vec<Delivery> = raw
            .into_iter()
            .map(RawDelivery::into_delivery)
            .collect::<Result<_, _>>()?;
        let mut attempts = self.conn.prepare_cached(
            "SELECT attempt, at, status_code, error FROM delivery_attempts
             WHERE delivery_id = ?1 ORDER BY attempt",
        )?;
        for delivery in &mut out {
            let rows = attempts
                .query_map(params![delivery.id], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<u16>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            delivery.history = rows
                .into_iter()
                .map(|(attempt, at, status_code, error)| {
                    Ok(DeliveryAttempt {
                        attempt,
                        at: from_ms("at", at)?,
                        status_code,
                        error,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
        }
        Ok(out)
    }
}

/// Records one attempt of a delivery and its consequence inside `tx` (clearing its "being
/// sent" mark); returns the attempt number.
pub(super) fn record_attempt_tx(
    tx: &Transaction<'_>,
    id: &str,
    outcome: &DeliveryOutcome,
) -> Result<u32, StoreError> {
    let attempts: Option<u32> = rusqlite::OptionalExtension::optional(tx.query_row(
        "SELECT attempts FROM deliveries WHERE id = ?1",
        params![id],
        |r| r.get(0),
    ))?;
    let attempt = attempts.ok_or_else(|| StoreError::DeliveryNotFound(id.to_string()))? + 1;
    let now = now_ms();
    let (status, status_code, error, next) = match outcome {
        DeliveryOutcome::Delivered { status_code } => {
            (DeliveryStatus::Delivered, Some(*status_code), None, None)
        }
        DeliveryOutcome::Retry {
            status_code,
            error,
            next_attempt_at,
        } => (
            DeliveryStatus::Pending,
            *status_code,
            Some(error.as_str()),
            Some(to_ms(*next_attempt_at)),
        ),
        DeliveryOutcome::GaveUp { status_code, error } => (
            DeliveryStatus::Failed,
            *status_code,
            Some(error.as_str()),
            None,
        ),
    };
    tx.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, attempt, now, status_code, error],
    )?;
    tx.execute(
        "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4,
                               last_error = COALESCE(?5, last_error), updated_at = ?6,
                               sending_holder = NULL, sending_token = NULL
         WHERE id = ?1",
        params![id, status.as_str(), attempt, next, error, now],
    )?;
    Ok(attempt)
}
