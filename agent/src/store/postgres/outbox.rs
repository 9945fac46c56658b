//! The webhook outbox on PostgreSQL: deliveries queued in the same transaction as the state
//! change they report, then attempted (and retried) by the notifier until delivered or given
//! up. Several agents may render and deliver at once: rendering takes each outbox event under
//! a row lock (`FOR UPDATE SKIP LOCKED`, inside a serializable transaction), so an event is
//! rendered into deliveries exactly once across the fleet.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;

use super::PgDb;
use crate::store::codec::{from_json, from_ms, from_ms_opt, now_ms, parse_enum, to_ms};
use crate::store::{
    Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryStatus, NewDelivery, RunId, RunRecord,
    StoreError,
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
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
}

impl RawDelivery {
    fn from_row(r: &postgres::Row) -> Result<RawDelivery, StoreError> {
        Ok(RawDelivery {
            id: r.try_get(0)?,
            webhook: r.try_get(1)?,
            event: r.try_get(2)?,
            run_id: r.try_get(3)?,
            body: r.try_get(4)?,
            status: r.try_get(5)?,
            attempts: r.try_get(6)?,
            next_attempt_at: r.try_get(7)?,
            last_error: r.try_get(8)?,
            created_at: r.try_get(9)?,
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
            attempts: attempt_number("attempts", self.attempts)?,
            next_attempt_at: from_ms_opt("next_attempt_at", self.next_attempt_at)?,
            last_error: self.last_error,
            created_at: from_ms("created_at", self.created_at)?,
            history: Vec::new(),
        })
    }
}

/// A stored attempt count back to its type.
fn attempt_number(column: &'static str, n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::BadValue {
        column,
        value: n.to_string(),
    })
}

/// Records one attempt of delivery `id` and its consequence inside `tx` (clearing its "being
/// sent" mark); returns the attempt number.
///
/// The delivery's row is locked while its attempt is counted: two agents recording an
/// attempt of one delivery at once number them one after the other.
pub(super) fn record_attempt_tx(
    tx: &mut postgres::Transaction<'_>,
    id: &str,
    outcome: &DeliveryOutcome,
) -> Result<u32, StoreError> {
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
    let status_code = status_code.map(i64::from);
    let attempts: Option<i64> = tx
        .query_opt(
            "SELECT attempts FROM deliveries WHERE id = $1 FOR UPDATE",
            &[&id],
        )?
        .map(|r| r.try_get(0))
        .transpose()?;
    let attempt = attempts.ok_or_else(|| StoreError::DeliveryNotFound(id.to_string()))? + 1;
    let now = now_ms();
    tx.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error)
         VALUES ($1, $2, $3, $4, $5)",
        &[&id, &attempt, &now, &status_code, &error],
    )?;
    let params: [&(dyn ToSql + Sync); 6] = [&id, &status.as_str(), &attempt, &next, &error, &now];
    tx.execute(
        "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4,
                               last_error = COALESCE($5, last_error), updated_at = $6,
                               sending_holder = NULL, sending_token = NULL
         WHERE id = $1",
        &params,
    )?;
    attempt_number("attempt", attempt)
}

/// The deliveries of the rows of a `SELECT {DELIVERY_COLUMNS}` query.
fn deliveries(rows: &[postgres::Row]) -> Result<Vec<Delivery>, StoreError> {
    rows.iter()
        .map(|r| RawDelivery::from_row(r)?.into_delivery())
        .collect()
}

/// An attempt row (`attempt, at, status_code, error`).
fn attempt_of(r: &postgres::Row) -> Result<DeliveryAttempt, StoreError> {
    let code: Option<i64> = r.try_get(2)?;
    Ok(DeliveryAttempt {
        attempt: attempt_number("attempt", r.try_get(0)?)?,
        at: from_ms("at", r.try_get(1)?)?,
        status_code: code.map(|c| u16::try_from(c).unwrap_or(0)),
        error: r.try_get(3)?,
    })
}

impl PgDb {
    /// Queues a webhook delivery, due now; returns its id (the `X-Agent-Delivery` header).
    pub(crate) fn enqueue_delivery(
        &mut self,
        delivery: &NewDelivery,
    ) -> Result<String, StoreError> {
        self.write(|tx| super::tx::insert_delivery_due(tx, delivery, 0))
    }

    /// Turns the un-rendered outbox events (of `run`, or all of them written at or before
    /// `written_by`) into deliveries, due now, in one transaction: `render` gets each event's
    /// run and event name and answers its deliveries; the event row goes with them, so a
    /// crash renders it again or not at all. Returns the deliveries queued.
    ///
    /// Agents rendering at once each take the events no other holds (`FOR UPDATE SKIP
    /// LOCKED`) and delete them before they commit: every event is rendered once.
    pub(crate) fn render_outbox_events(
        &mut self,
        run: Option<RunId>,
        written_by: Option<DateTime<Utc>>,
        mut render: impl FnMut(&RunRecord, &str) -> Vec<NewDelivery>,
    ) -> Result<Vec<NewDelivery>, StoreError> {
        let run = run.map(|r| r.0);
        let written_by = written_by.map(to_ms);
        self.write(|tx| {
            let events: Vec<(i64, i64, String)> = tx
                .query(
                    "SELECT id, run_id, event FROM outbox_events
                     WHERE ($1::BIGINT IS NULL OR run_id = $1)
                       AND ($2::BIGINT IS NULL OR created_at <= $2)
                     ORDER BY id FOR UPDATE SKIP LOCKED",
                    &[&run, &written_by],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<_, StoreError>>()?;
            let mut queued = Vec::new();
            for (id, run_id, event) in events {
                // Deleted first: an event another agent rendered and removed meanwhile makes
                // this transaction fail to serialize, and the retry no longer sees it.
                if tx.execute("DELETE FROM outbox_events WHERE id = $1", &[&id])? == 0 {
                    continue;
                }
                if let Some(record) = super::runs::load_run(tx, RunId(run_id))? {
                    for delivery in render(&record, &event) {
                        super::tx::insert_delivery_due(tx, &delivery, 0)?;
                        queued.push(delivery);
                    }
                }
            }
            Ok(queued)
        })
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
        let events: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        self.write(|tx| {
            let now = now_ms();
            // A new `seq` sorts the row after rows queued in the same millisecond.
            let n = tx.execute(
                "UPDATE deliveries
                 SET next_attempt_at = $2, created_at = $2, updated_at = $2,
                     seq = nextval(pg_get_serial_sequence('deliveries', 'seq'))
                 WHERE run_id = $1 AND status = 'pending' AND attempts = 0
                   AND next_attempt_at > $2 AND event = ANY($3)",
                &[&run.0, &now, &events],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Pending deliveries due at `now`, the most overdue first.
    pub(crate) fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE status = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, created_at, seq LIMIT $2"
        );
        let rows = self.read(|c| Ok(c.query(&sql, &[&to_ms(now), &super::limit(limit)])?))?;
        deliveries(&rows)
    }

    /// The oldest pending delivery of one webhook, due or not: the head of its FIFO queue
    /// (deliveries of a webhook are attempted one at a time, in the order they were queued).
    pub(crate) fn next_pending_delivery(
        &self,
        webhook: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE status = 'pending' AND webhook = $1
             ORDER BY created_at, seq LIMIT 1"
        );
        let rows = self.read(|c| Ok(c.query(&sql, &[&webhook])?))?;
        Ok(deliveries(&rows)?.pop())
    }

    /// Deletes delivered and failed deliveries (and their attempts) last touched before
    /// `before`; pending ones stay. Returns how many went.
    pub(crate) fn prune_deliveries(&mut self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let cutoff = to_ms(before);
        self.write(|tx| {
            tx.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (
                     SELECT id FROM deliveries WHERE status != 'pending' AND updated_at < $1)",
                &[&cutoff],
            )?;
            let n = tx.execute(
                "DELETE FROM deliveries WHERE status != 'pending' AND updated_at < $1",
                &[&cutoff],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// The latest attempt of a delivery, if it was attempted.
    pub(crate) fn last_delivery_attempt(
        &self,
        id: &str,
    ) -> Result<Option<DeliveryAttempt>, StoreError> {
        let row = self.read(|c| {
            Ok(c.query_opt(
                "SELECT attempt, at, status_code, error FROM delivery_attempts
                 WHERE delivery_id = $1 ORDER BY attempt DESC LIMIT 1",
                &[&id],
            )?)
        })?;
        row.as_ref().map(attempt_of).transpose()
    }

    /// The webhooks that have pending deliveries, with how many each.
    pub(crate) fn pending_delivery_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT webhook, COUNT(*) FROM deliveries WHERE status = 'pending'
                 GROUP BY webhook ORDER BY webhook COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    /// When the next pending delivery is due, so the notifier can sleep until then.
    pub(crate) fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let ms: Option<i64> = self.read(|c| {
            Ok(c.query_one(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'",
                &[],
            )?
            .try_get(0)?)
        })?;
        from_ms_opt("next_attempt_at", ms)
    }

    /// Records one attempt of a delivery and its consequence; returns the attempt number.
    ///
    /// The delivery's row is locked while its attempt is counted: two agents recording an
    /// attempt of one delivery at once number them one after the other.
    pub(crate) fn record_delivery_attempt(
        &mut self,
        id: &str,
        outcome: &DeliveryOutcome,
    ) -> Result<u32, StoreError> {
        self.write(|tx| record_attempt_tx(tx, id, outcome))
    }

    /// The newest deliveries first, each with its attempt history.
    pub(crate) fn list_deliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries ORDER BY created_at DESC, seq DESC LIMIT $1"
        );
        let (rows, attempts) = self.read(|c| {
            let rows = c.query(&sql, &[&super::limit(limit)])?;
            let ids: Vec<String> = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let attempts = c.query(
                "SELECT attempt, at, status_code, error, delivery_id FROM delivery_attempts
                 WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
                &[&ids],
            )?;
            Ok((rows, attempts))
        })?;
        let mut out = deliveries(&rows)?;
        for row in &attempts {
            let delivery_id: String = row.try_get(4)?;
            if let Some(d) = out.iter_mut().find(|d| d.id == delivery_id) {
                d.history.push(attempt_of(row)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStatus;

    /// A finished run and its end event, written as `finish_run` writes them.
    fn ended_run(db: &PgDb, n: i64) -> i64 {
        db.write(|tx| {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO runs (workflow, status, trigger_kind, created_at, finished_at)
                     VALUES ('w', 'succeeded', 'manual', $1, $1) RETURNING id",
                    &[&n],
                )?
                .get(0);
            tx.execute(
                "INSERT INTO outbox_events (run_id, event, created_at)
                 VALUES ($1, 'run.succeeded', $2)",
                &[&id, &n],
            )?;
            Ok(id)
        })
        .expect("insert")
    }

    /// Two agents render the outbox at once (two connections, two threads, while runs keep
    /// ending): every event becomes its delivery exactly once; an event is rendered with its
    /// run and only when written by the given time.
    /// (Without the row locks and the serializable retry, events are rendered twice.)
    #[test]
    fn concurrent_renderers_render_each_event_once() {
        const RUNS: i64 = 60;
        let url = crate::store::test_pg::database_url();
        let writer = PgDb::connect(&url).expect("connect");
        let first = ended_run(&writer, 1_000);
        let mut probe = writer.another();
        let none = probe
            .render_outbox_events(None, Some(from_ms("t", 999).expect("ms")), |_, _| {
                panic!("written later")
            })
            .expect("render");
        assert!(none.is_empty());
        let ended = std::sync::atomic::AtomicBool::new(false);
        let mut runs = vec![first];
        let rendered: Vec<Vec<i64>> = std::thread::scope(|scope| {
            let renderers: Vec<_> = (0..2)
                .map(|_| {
                    let mut own = writer.another();
                    let ended = &ended;
                    scope.spawn(move || {
                        let mut seen = Vec::new();
                        loop {
                            let last = ended.load(std::sync::atomic::Ordering::SeqCst);
                            let queued = own
                                .render_outbox_events(None, None, |record, event| {
                                    assert_eq!(record.status, RunStatus::Succeeded);
                                    vec![NewDelivery {
                                        webhook: "chat".into(),
                                        event: event.into(),
                                        run_id: Some(record.id),
                                        body: serde_json::json!({"run": record.id.0}),
                                    }]
                                })
                                .expect("render");
                            seen.extend(queued.iter().filter_map(|d| d.run_id.map(|r| r.0)));
                            if last {
                                return seen;
                            }
                        }
                    })
                })
                .collect();
            for n in 1..RUNS {
                runs.push(ended_run(&writer, 1_000 + n));
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
            renderers
                .into_iter()
                .map(|r| r.join().expect("renderer"))
                .collect()
        });
        let mut all = rendered.concat();
        all.sort();
        assert_eq!(all, runs, "each event rendered once");
        let deliveries = writer.list_deliveries(1000).expect("list");
        assert_eq!(deliveries.len(), runs.len());
        let left: i64 = writer
            .read(|c| {
                Ok(c.query_one("SELECT count(*) FROM outbox_events", &[])?
                    .get(0))
            })
            .expect("count");
        assert_eq!(left, 0);
    }

    /// A run's end queued held is not due; released, it goes behind a delivery queued in the
    /// same millisecond and keeps its id.
    #[test]
    fn a_released_run_end_goes_behind_earlier_deliveries() {
        let url = crate::store::test_pg::database_url();
        let mut db = PgDb::connect(&url).expect("connect");
        let run = ended_run(&db, 1);
        let new = |event: &str| NewDelivery {
            webhook: "chat".into(),
            event: event.into(),
            run_id: Some(RunId(run)),
            body: serde_json::json!({}),
        };
        let end = db
            .write(|tx| crate::store::postgres::tx::insert_delivery(tx, &new("run.failed")))
            .expect("held");
        let step = db.enqueue_delivery(&new("step.failed")).expect("queue");
        assert_eq!(
            db.due_deliveries(Utc::now(), 10).expect("due").len(),
            1,
            "the end is held"
        );
        assert_eq!(
            db.release_run_deliveries(RunId(run), &["run.failed"])
                .expect("release"),
            1
        );
        // Same millisecond as the step's delivery: the write order decides.
        db.write(|tx| {
            tx.execute("UPDATE deliveries SET created_at = 5", &[])?;
            Ok(())
        })
        .expect("same ms");
        let head = db
            .next_pending_delivery("chat")
            .expect("head")
            .expect("one");
        assert_eq!(head.id, step);
        db.record_delivery_attempt(&step, &DeliveryOutcome::Delivered { status_code: 200 })
            .expect("record");
        let head = db
            .next_pending_delivery("chat")
            .expect("head")
            .expect("one");
        assert_eq!(head.id, end);
    }
}
