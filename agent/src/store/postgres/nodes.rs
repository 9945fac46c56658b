//! The fleet's nodes on PostgreSQL: the same operations as the SQLite backend's `nodes.rs`
//! (one row per agent, written at every heartbeat with the leases of the runs it holds).

use chrono::{DateTime, Utc};

use crate::store::sqlite::nodes::{NODE_COLUMNS, duration_ms, node_record};
use crate::store::sqlite::to_ms;
use crate::store::{Heartbeat, NodeBeat, NodeRecord, RunId, StoreError};

use super::PgDb;

impl PgDb {
    /// The node's heartbeat at `now`, in one transaction: writes (or refreshes) its row and
    /// extends its lease on `held` to `now + lease`. Answers which of them to cancel and
    /// which it lost (see the SQLite backend).
    pub(crate) fn heartbeat_node(
        &mut self,
        beat: &NodeBeat,
        held: &[RunId],
        now: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        let at = to_ms(now);
        let expires = at.saturating_add(duration_ms(beat.lease));
        let ids: Vec<i64> = held.iter().map(|id| id.0).collect();
        // Each run's row is locked by its update, so READ COMMITTED is enough and a renewal
        // never conflicts with a reclaim: whichever commits first wins, the other sees it.
        self.write_read_committed(|tx| {
            let renewed = tx.query(
                "UPDATE runs SET lease_expires_at = $3
                 WHERE id = ANY($1) AND claim_owner = $2 AND status IN ('queued', 'running')
                 RETURNING id, cancel_requested",
                &[&ids, &beat.name, &expires],
            )?;
            let mut answer = Heartbeat::default();
            let mut kept = std::collections::HashSet::new();
            for row in renewed {
                let id: i64 = row.get(0);
                let cancel: i64 = row.get(1);
                kept.insert(id);
                if cancel != 0 {
                    answer.cancel.push(RunId(id));
                }
            }
            answer.cancel.sort();
            answer.lost = held
                .iter()
                .filter(|id| !kept.contains(&id.0))
                .copied()
                .collect();
            let running = i64::try_from(kept.len()).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO nodes (name, started_at, heartbeat_at, lease_ms, capacity, running,
                                    address, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO UPDATE SET
                     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                     lease_ms = excluded.lease_ms, capacity = excluded.capacity,
                     running = excluded.running, address = excluded.address,
                     version = excluded.version",
                &[
                    &beat.name,
                    &to_ms(beat.started_at),
                    &at,
                    &duration_ms(beat.lease),
                    &i64::try_from(beat.capacity).unwrap_or(i64::MAX),
                    &running,
                    &beat.address,
                    &beat.version,
                ],
            )?;
            Ok(answer)
        })
    }

    /// Every node's row, by name.
    pub(crate) fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(|client| {
            let rows = client.query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes n ORDER BY n.name"),
                &[],
            )?;
            rows.into_iter()
                .map(|r| {
                    node_record((
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                        r.get(7),
                    ))
                })
                .collect()
        })
    }

    /// Makes every claim of `owner` lapse now, so `reclaim_expired` takes those runs back.
    /// Answers how many claims lapsed.
    pub(crate) fn lapse_claims_of(&mut self, owner: &str) -> Result<usize, StoreError> {
        self.write_read_committed(|tx| {
            let n = tx.execute(
                "UPDATE runs SET lease_expires_at = 0
                 WHERE claim_owner = $1 AND status IN ('queued', 'running')",
                &[&owner],
            )?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Removes a node's row (its daemon stopped cleanly); answers whether there was one.
    pub(crate) fn remove_node(&mut self, name: &str) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM nodes WHERE name = $1", &[&name])? > 0))
    }
}
