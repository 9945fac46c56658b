//! The SQLite backend of the store: one file under the state directory, WAL journal, a busy
//! timeout, `BEGIN IMMEDIATE` for every write (so writers queue on the lock instead of failing
//! with `database is locked` when a read transaction tries to upgrade), one transaction per
//! state transition, and versioned forward-only migrations (see [`migrations`]). Timestamps
//! are stored as Unix milliseconds, JSON columns as text.
//!
//! Files by concern: `runs.rs` (the queue, claims and leases, run transitions), `journal.rs`
//! would be steps and attempts (kept in `runs.rs` for now), `state.rs` (contexts, cache,
//! pushes and cron slots), `outbox.rs` (webhook deliveries), `monitoring.rs` (anomalies,
//! inbound hook ids), `history.rs` (read-only opening and step history, for `agent plan`), `tx.rs` (the statements several of them run inside one transaction).

mod artifacts;
mod history;
mod leases;
mod logs;
pub mod migrations;
mod monitoring;
pub(crate) mod nodes;
pub(crate) mod outbox;
mod runs;
mod state;
mod tx;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub(crate) use super::StoreError;
pub(crate) use super::records::{
    AttemptRecord, CacheEntry, Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryStatus,
    Enqueued, NewDelivery, NewRun, Retention, RunFilter, RunFinish, RunId, RunRecord, RunStatus,
    RunSummary, StepFinish, StepRecord, StepStart, StepStatus, Trigger, TriggerKind,
};
pub use artifacts::ArtifactRecord;
pub use history::{StepDuration, StepHistory, StepOutputSample};
pub use monitoring::NewAnomaly;
pub use monitoring::RunSample;
pub(crate) use monitoring::{AnomalyRecord, HOOK_DELIVERY_TTL};
pub(crate) use nodes::NodeRecord;
pub use nodes::{Heartbeat, NodeBeat};

pub(crate) use super::codec::{
    from_json, from_json_opt, from_ms, from_ms_opt, now_ms, parse_enum, to_json, to_json_opt, to_ms,
};

/// The database file's name inside `state_dir`.
pub(crate) const DB_FILE_NAME: &str = "agent.sqlite3";

/// How long a writer waits for the lock before giving up with `database is locked`, unless
/// [`set_busy_timeout`] said otherwise.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The busy timeout of connections opened from now on, in milliseconds.
static BUSY_TIMEOUT_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(BUSY_TIMEOUT.as_millis() as u64);

/// Sets the busy timeout of every connection this process opens from now on (the daemon's
/// `limits.store_busy_timeout`).
pub(crate) fn set_busy_timeout(timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    BUSY_TIMEOUT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// The busy timeout new connections get.
fn busy_timeout() -> Duration {
    Duration::from_millis(BUSY_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// A connection to the store.
///
/// Each `SqliteDb` owns one SQLite connection; writes take `&mut self`. Open one per thread (or
/// per actor) on the same file: they coordinate through SQLite's locks.
#[derive(Debug)]
pub struct SqliteDb {
    conn: Connection,
    path: PathBuf,
}

/// Switches the file to WAL unless it already is.
///
/// Switching needs an exclusive lock, and SQLite answers `SQLITE_BUSY` at once, without
/// calling the busy handler, when another connection is switching or reading the same fresh
/// file at that moment (several processes opening a new state directory together). So the
/// switch is retried here, with short sleeps, for as long as the busy timeout.
fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + busy_timeout();
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = conn
            .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
            .and_then(|mode| {
                if mode.eq_ignore_ascii_case("wal") {
                    Ok(mode)
                } else {
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                }
            });
        match attempt {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl SqliteDb {
    /// Opens (creating if needed) `state_dir/agent.sqlite3` and brings its schema up to date.
    pub(crate) fn open_in_dir(state_dir: &Path) -> Result<SqliteDb, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        SqliteDb::open(&state_dir.join(DB_FILE_NAME))
    }

    /// Opens (creating if needed) the database file at `path` and migrates it to the latest
    /// schema version.
    pub(crate) fn open(path: &Path) -> Result<SqliteDb, StoreError> {
        SqliteDb::open_at_version(path, migrations::LATEST_VERSION)
    }

    /// Opens `path` migrating only up to schema `version`. For fixture databases in tests;
    /// the rest of the API assumes the latest version.
    #[doc(hidden)]
    pub(crate) fn open_at_version(path: &Path, version: i64) -> Result<SqliteDb, StoreError> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(busy_timeout())?;
        // WAL: readers never block the writer and a crash never corrupts committed state.
        // synchronous=NORMAL in WAL mode survives a process crash (kill -9) losslessly; only
        // an OS crash or power cut can lose the last transactions.
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn, version)?;
        Ok(SqliteDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file.
    pub(crate) fn schema_version(&self) -> Result<i64, StoreError> {
        migrations::current_version(&self.conn)
    }

    /// Runs SQLite's `quick_check`: `Ok(())` when the file is sound, else the problems found.
    pub(crate) fn check_integrity(&self) -> Result<Result<(), Vec<String>>, StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(Ok(()))
        } else {
            Ok(Err(rows))
        }
    }

    /// Starts a write transaction that holds the write lock from its first statement.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }
}

impl From<rusqlite::Error> for StoreError {
    /// SQLite's error, rendered; transient when the lock was held past the busy timeout, the
    /// disk is full, or the file could not be read or written. Logic errors are not.
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode;
        let transient = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _) if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
                    | ErrorCode::ReadOnly
            )
        );
        StoreError::Backend {
            message: e.to_string(),
            transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual(workflow: &str) -> NewRun {
        NewRun::new(workflow, Trigger::new(TriggerKind::Manual))
    }

    /// A transition cut short (the transaction dropped without commit, as when a statement
    /// fails half-way or the thread unwinds) leaves the state it started from.
    #[test]
    fn a_transaction_dropped_without_commit_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteDb::open_in_dir(dir.path()).expect("open");
        let first = store
            .enqueue_run(&manual("kept"))
            .expect("enqueue")
            .run_id();
        {
            let tx = store.write().expect("begin");
            tx::insert_run(&tx, &manual("lost"), RunStatus::Queued, None).expect("insert");
            tx.execute(
                "UPDATE runs SET status = 'running' WHERE id = ?1",
                rusqlite::params![first.0],
            )
            .expect("update");
            // Another connection waits for (or does not see) the uncommitted writes.
            let other = SqliteDb::open_in_dir(dir.path()).expect("second connection");
            let seen = other.list_runs(&RunFilter::default(), 10).expect("list");
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].status, RunStatus::Queued);
        }
        let runs = store.list_runs(&RunFilter::default(), 10).expect("list");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].workflow, "kept");
        assert_eq!(runs[0].status, RunStatus::Queued);
        // The lock was released: the next transition goes through.
        store.mark_running(first).expect("mark running");
    }

    #[test]
    fn a_store_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SqliteDb>();
    }

    #[test]
    fn status_texts_round_trip() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(*status));
        }
        for status in StepStatus::ALL {
            assert_eq!(status.as_str().parse::<StepStatus>(), Ok(*status));
        }
        for kind in TriggerKind::ALL {
            assert_eq!(kind.as_str().parse::<TriggerKind>(), Ok(*kind));
        }
        assert!("bogus".parse::<RunStatus>().is_err());
        assert_eq!("42".parse::<RunId>(), Ok(RunId(42)));
    }
}
