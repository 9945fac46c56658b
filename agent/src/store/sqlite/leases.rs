//! Named leases with fencing tokens: time-limited roles one holder at a time has (who
//! evaluates cron, who polls a repository, who sends webhooks). A holder renews its lease
//! before it expires; a lease that expired or was released goes to the next holder that asks,
//! with the token one higher, so a write fenced by the old token is refused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::outbox::record_attempt_tx;
use super::{DeliveryOutcome, SqliteDb, StoreError, to_ms};
use crate::store::Fence;

/// A lease's expiry `ttl` after `now`, in stored milliseconds.
fn expiry(now: DateTime<Utc>, ttl: Duration) -> i64 {
    let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    to_ms(now).saturating_add(ttl)
}

/// Whether `fence` still holds its lease at `now`, inside `tx`.
fn held_tx(
    tx: &rusqlite::Connection,
    fence: &Fence,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let token = i64::try_from(fence.token).unwrap_or(i64::MAX);
    let found: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3
               AND expires_at > ?4",
            params![fence.lease, fence.holder, token, to_ms(now)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// Refuses with [`StoreError::LeaseLost`] unless `fence` holds its lease at `now`.
fn check_tx(tx: &Transaction<'_>, fence: &Fence, now: DateTime<Utc>) -> Result<(), StoreError> {
    if held_tx(tx, fence, now)? {
        Ok(())
    } else {
        Err(fence.lost())
    }
}

impl SqliteDb {
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
        let tx = self.write()?;
        let token: Option<i64> = tx
            .query_row(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     token = CASE WHEN leases.holder = excluded.holder THEN leases.token
                                  ELSE leases.token + 1 END,
                     holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4
                 RETURNING token",
                params![name, holder, expiry(now, ttl), to_ms(now)],
                |r| r.get(0),
            )
            .optional()?;
        tx.commit()?;
        Ok(token.map(|t| u64::try_from(t).unwrap_or(0)))
    }

    /// Gives lease `name` up if `holder` has it (the next holder gets it at once, with the
    /// next token); answers whether it did.
    pub(crate) fn release_lease(&mut self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let n = tx.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Whether `holder` has lease `name` with `token` at `now` (not expired, not taken over).
    pub(crate) fn lease_is_held(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        held_tx(
            &self.conn,
            &Fence {
                lease: name.to_string(),
                holder: holder.to_string(),
                token,
            },
            now,
        )
    }

    /// Marks pending delivery `id` as being sent by `fence` (its holder and token), in the
    /// transaction that checks the fence: answers the mark an earlier sender left (an attempt
    /// whose outcome was never recorded: that sender lost the lease or died), `None` if none.
    /// Refuses with [`StoreError::LeaseLost`] when the fence is stale and with
    /// [`StoreError::DeliveryNotFound`] when no pending delivery has this id.
    pub(crate) fn begin_delivery_attempt(
        &mut self,
        id: &str,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let tx = self.write()?;
        check_tx(&tx, fence, now)?;
        let earlier: Option<(Option<String>, Option<i64>)> = tx
            .query_row(
                "SELECT sending_holder, sending_token FROM deliveries
                 WHERE id = ?1 AND status = 'pending'",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some(earlier) = earlier else {
            return Err(StoreError::DeliveryNotFound(id.to_string()));
        };
        tx.execute(
            "UPDATE deliveries SET sending_holder = ?2, sending_token = ?3 WHERE id = ?1",
            params![
                id,
                fence.holder,
                i64::try_from(fence.token).unwrap_or(i64::MAX)
            ],
        )?;
        tx.commit()?;
        Ok(match earlier {
            (Some(h), Some(t))
                if (h.as_str(), t) != (fence.holder.as_str(), fence.token as i64) =>
            {
                Some((h, u64::try_from(t).unwrap_or(0)))
            }
            _ => None,
        })
    }

    /// [`SqliteDb::record_delivery_attempt`] fenced by the outbox lease: refused with
    /// [`StoreError::LeaseLost`] (nothing written) unless `fence` still holds its lease at
    /// `now`, checked in the same transaction.
    pub(crate) fn record_delivery_attempt_fenced(
        &mut self,
        id: &str,
        outcome: &DeliveryOutcome,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let tx = self.write()?;
        check_tx(&tx, fence, now)?;
        let attempt = record_attempt_tx(&tx, id, outcome)?;
        tx.commit()?;
        Ok(attempt)
    }
}
