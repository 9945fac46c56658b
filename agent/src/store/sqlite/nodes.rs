//! The fleet's nodes (schema version 11): one row per agent, written at every heartbeat
//! ([`SqliteDb::heartbeat_node`]) together with the leases of the runs the agent holds, and
//! read by `agent nodes` ([`SqliteDb::list_nodes`]). A lone agent on SQLite keeps its row
//! too, so the command answers the same everywhere.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{RunId, SqliteDb, StoreError, from_ms, to_ms};

/// What a node writes at each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    /// The node's name (config `node`): also the owner of the runs it claims.
    pub name: String,
    /// When this daemon started.
    pub started_at: DateTime<Utc>,
    /// Its `limits.lease`: how long its claims hold without a heartbeat.
    pub lease: Duration,
    /// Its `limits.max_concurrent_runs`.
    pub capacity: usize,
    /// Its API's address (`http://127.0.0.1:8420`).
    pub address: Option<String>,
    /// The agent's version.
    pub version: Option<String>,
}

/// One node's row, as `agent nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// When its daemon started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Its lease: a node silent for longer is lost.
    pub lease: Duration,
    /// Runs it may run at once.
    pub capacity: u64,
    /// Runs it holds now (claimed or running, by the runs' own claims).
    pub runs: u64,
    /// Its API's address.
    pub address: Option<String>,
    /// Its version.
    pub version: Option<String>,
}

impl NodeRecord {
    /// Lost: no heartbeat for longer than its lease at `now`.
    pub fn lost(&self, now: DateTime<Utc>) -> bool {
        let silent = now.signed_duration_since(self.heartbeat_at);
        silent.to_std().is_ok_and(|silent| silent > self.lease)
    }
}

/// What a heartbeat answers about the runs the node said it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// Runs whose cancellation was requested (on any node): the holder cancels them.
    pub cancel: Vec<RunId>,
    /// Runs the node no longer holds (another node took them back after its lease lapsed,
    /// or they ended elsewhere): the node stops them without writing their end.
    pub lost: Vec<RunId>,
}

/// A lease as stored: milliseconds.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A stored lease back to a duration (a negative one counts as none).
pub(crate) fn ms_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The columns [`SqliteDb::list_nodes`] reads, `runs` counted from the runs' claims.
pub(crate) const NODE_COLUMNS: &str = "n.name, n.started_at, n.heartbeat_at, n.lease_ms,
    n.capacity, (SELECT COUNT(*) FROM runs r
                 WHERE r.claim_owner = n.name AND r.status IN ('queued', 'running')),
    n.address, n.version";

impl SqliteDb {
    /// The node's heartbeat at `now`, in one transaction: writes (or refreshes) its row and
    /// extends its lease on `held` (the runs it is running or has claimed) to `now + lease`.
    /// Answers which of them to cancel (requested on any node) and which it lost.
    pub(crate) fn heartbeat_node(
        &mut self,
        beat: &NodeBeat,
        held: &[RunId],
        now: DateTime<Utc>,
    ) -> Result<Heartbeat, StoreError> {
        let tx = self.write()?;
        let at = to_ms(now);
        let expires = at.saturating_add(duration_ms(beat.lease));
        let mut answer = Heartbeat::default();
        {
            let mut renew = tx.prepare_cached(
                "UPDATE runs SET lease_expires_at = ?3
                 WHERE id = ?1 AND claim_owner = ?2 AND status IN ('queued', 'running')
                 RETURNING cancel_requested",
            )?;
            for id in held {
                match renew
                    .query_row(params![id.0, beat.name, expires], |r| r.get::<_, bool>(0))
                    .optional()?
                {
                    None => answer.lost.push(*id),
                    Some(true) => answer.cancel.push(*id),
                    Some(false) => {}
                }
            }
        }
        let running = i64::try_from(held.len() - answer.lost.len()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO nodes (name, started_at, heartbeat_at, lease_ms, capacity, running,
                                address, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (name) DO UPDATE SET
                 started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                 lease_ms = excluded.lease_ms, capacity = excluded.capacity,
                 running = excluded.running, address = excluded.address,
                 version = excluded.version",
            params![
                beat.name,
                to_ms(beat.started_at),
                at,
                duration_ms(beat.lease),
                i64::try_from(beat.capacity).unwrap_or(i64::MAX),
                running,
                beat.address,
                beat.version,
            ],
        )?;
        tx.commit()?;
        Ok(answer)
    }

    /// Every node's row, by name.
    pub(crate) fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes n ORDER BY n.name"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(node_record).collect()
    }

    /// Makes every claim of `owner` lapse now (a node restarting under the same name: its
    /// earlier process is gone), so [`SqliteDb::reclaim_expired`] takes those runs back.
    /// Answers how many claims lapsed.
    pub(crate) fn lapse_claims_of(&mut self, owner: &str) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let n = tx.execute(
            "UPDATE runs SET lease_expires_at = 0
             WHERE claim_owner = ?1 AND status IN ('queued', 'running')",
            params![owner],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Removes a node's row (its daemon stopped cleanly); answers whether there was one.
    pub(crate) fn remove_node(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let n = tx.execute("DELETE FROM nodes WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

/// A row of [`NODE_COLUMNS`] as a record.
#[allow(clippy::type_complexity)]
pub(crate) fn node_record(
    (name, started, beat, lease, capacity, runs, address, version): (
        String,
        i64,
        i64,
        i64,
        i64,
        i64,
        Option<String>,
        Option<String>,
    ),
) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        name,
        started_at: from_ms("nodes.started_at", started)?,
        heartbeat_at: from_ms("nodes.heartbeat_at", beat)?,
        lease: ms_duration(lease),
        capacity: u64::try_from(capacity).unwrap_or(0),
        runs: u64::try_from(runs).unwrap_or(0),
        address,
        version,
    })
}
