//! Named leases with fencing tokens on PostgreSQL (see the SQLite file of the same name for
//! their rules). Taking a lease is one `INSERT .. ON CONFLICT .. DO UPDATE .. WHERE` statement:
//! PostgreSQL locks the row, so of several agents asking at once exactly one gets a lease
//! nobody holds. Fenced writes check the lease in the `SERIALIZABLE` transaction that writes,
//! so a takeover committed concurrently makes one of the two retry and see the other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::GenericClient;

use crate::store::{DeliveryOutcome, Fence, StoreError};

use super::PgDb;

/// A time as stored.
fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A token as stored.
fn stored(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

/// Whether `fence` holds its lease at `now`.
fn held<C: GenericClient>(
    c: &mut C,
    fence: &Fence,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let row = c.query_opt(
        "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > $4",
        &[&fence.lease, &fence.holder, &stored(fence.token), &ms(now)],
    )?;
    Ok(row.is_some())
}

/// Refuses with [`StoreError::LeaseLost`] unless `fence` holds its lease at `now`.
fn check<C: GenericClient>(c: &mut C, fence: &Fence, now: DateTime<Utc>) -> Result<(), StoreError> {
    if held(c, fence, now)? {
        Ok(())
    } else {
        Err(fence.lost())
    }
}

impl PgDb {
    /// Takes lease `name` for `holder` until `now + ttl` and answers its fencing token, or
    /// `None` while another holder has it. A lease nobody holds (new, expired or released)
    /// goes to `holder` with the token one higher than the last holder's (1 for a new one);
    /// a holder that asks again (renews) keeps its token.
    pub(crate) fn acquire_lease(
        &mut self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = ms(now).saturating_add(ttl);
        self.write_read_committed(|tx| {
            let row = tx.query_opt(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (name) DO UPDATE SET
                     token = CASE WHEN leases.holder = excluded.holder THEN leases.token
                                  ELSE leases.token + 1 END,
                     holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
                 RETURNING token",
                &[&name, &holder, &expires, &ms(now)],
            )?;
            Ok(row.map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
        })
    }

    /// Gives lease `name` up if `holder` has it; answers whether it did.
    pub(crate) fn release_lease(&mut self, name: &str, holder: &str) -> Result<bool, StoreError> {
        self.write_read_committed(|tx| {
            let n = tx.execute(
                "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )?;
            Ok(n == 1)
        })
    }

    /// Whether `holder` has lease `name` with `token` at `now`.
    pub(crate) fn lease_is_held(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let fence = Fence {
            lease: name.to_string(),
            holder: holder.to_string(),
            token,
        };
        self.read(|c| held(c, &fence, now))
    }

    /// Marks pending delivery `id` as being sent by `fence`; answers the mark an earlier
    /// sender left, if any (see the SQLite method of the same name).
    pub(crate) fn begin_delivery_attempt(
        &mut self,
        id: &str,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, u64)>, StoreError> {
        self.write(|tx| {
            check(tx, fence, now)?;
            let Some(row) = tx.query_opt(
                "SELECT sending_holder, sending_token FROM deliveries
                 WHERE id = $1 AND status = 'pending'",
                &[&id],
            )?
            else {
                return Err(StoreError::DeliveryNotFound(id.to_string()));
            };
            let earlier: (Option<String>, Option<i64>) = (row.get(0), row.get(1));
            tx.execute(
                "UPDATE deliveries SET sending_holder = $2, sending_token = $3 WHERE id = $1",
                &[&id, &fence.holder, &stored(fence.token)],
            )?;
            Ok(match earlier {
                (Some(h), Some(t))
                    if (h.as_str(), t) != (fence.holder.as_str(), stored(fence.token)) =>
                {
                    Some((h, u64::try_from(t).unwrap_or(0)))
                }
                _ => None,
            })
        })
    }

    /// Records one attempt of delivery `id`, fenced by the outbox lease: refused with
    /// [`StoreError::LeaseLost`] (nothing written) unless `fence` holds its lease at `now`.
    pub(crate) fn record_delivery_attempt_fenced(
        &mut self,
        id: &str,
        outcome: &DeliveryOutcome,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        self.write(|tx| {
            check(tx, fence, now)?;
            super::outbox::record_attempt_tx(tx, id, outcome)
        })
    }
}
