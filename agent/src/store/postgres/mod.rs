//! The PostgreSQL backend of the store, for a fleet of agents on one database.
//!
//! The same operations as the SQLite backend, method for method (`runs.rs`, `state.rs`,
//! `outbox.rs`, `monitoring.rs`, `artifacts.rs`, `history.rs` mirror the SQLite files), over
//! `postgres` (the blocking client of `tokio-postgres`): the store already calls its backend
//! from its writer thread and the blocking pool only, never from an async worker.
//!
//! Concurrency: several agents write at once, so every write transaction runs `SERIALIZABLE`
//! and is retried when PostgreSQL reports a serialization failure or a deadlock
//! ([`PgDb::write`]); the logic ported from SQLite, where one writer at a time was the rule,
//! keeps its meaning. Claims take rows with `FOR UPDATE SKIP LOCKED` so that agents claiming
//! together never wait on each other.
//!
//! The connection is opened lazily and again after it broke (the server restarted, the
//! network dropped it): every call first checks it. A failure to connect or a broken
//! connection is a transient [`StoreError`], which the daemon retries with backoff.
//! Timestamps are `BIGINT` Unix milliseconds and JSON columns `TEXT`, as in SQLite, and every
//! integer column is `BIGINT` (Rust `i64`).

mod artifacts;
mod history;
mod leases;
mod logs;
pub(crate) mod migrations;
mod monitoring;
mod nodes;
mod outbox;
mod runs;
mod state;
mod tx;

use std::cell::RefCell;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Transaction};

use super::StoreError;

/// How long opening a connection may take before it counts as failed.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a write transaction is tried when PostgreSQL aborts it for a conflict
/// with a concurrent one (serialization failure, deadlock).
const CONFLICT_TRIES: u32 = 30;

/// A connection to the store on PostgreSQL.
///
/// Like the SQLite connection, one `PgDb` is used by one thread at a time (the writer thread,
/// or a reader taken from the pool); reads take `&self`, so the client sits in a `RefCell`.
pub struct PgDb {
    client: RefCell<Option<Client>>,
    config: postgres::Config,
}

impl std::fmt::Debug for PgDb {
    /// Never shows the URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb")
            .field("connected", &self.client.borrow().is_some())
            .finish()
    }
}

impl PgDb {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` string) and
    /// brings its schema up to date.
    pub(crate) fn connect(url: &str) -> Result<PgDb, StoreError> {
        PgDb::connect_at_version(url, migrations::LATEST_VERSION)
    }

    /// [`PgDb::connect`] migrating only up to `version` (for tests of the migrations).
    #[doc(hidden)]
    pub(crate) fn connect_at_version(url: &str, version: i64) -> Result<PgDb, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| StoreError::Backend {
            // The parser's message never repeats the URL.
            message: format!("invalid PostgreSQL URL: {e}"),
            transient: false,
        })?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("agent");
        let db = PgDb {
            client: RefCell::new(None),
            config,
        };
        {
            let mut client = db.client()?;
            let client = client.as_mut().ok_or(StoreError::Closed)?;
            migrations::migrate(client, version)?;
        }
        Ok(db)
    }

    /// The open client, connecting first when there is none or the last one broke.
    fn client(&self) -> Result<std::cell::RefMut<'_, Option<Client>>, StoreError> {
        let mut slot = self.client.borrow_mut();
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(self.config.connect(NoTls)?);
        }
        Ok(slot)
    }

    /// Runs the read `f` on the connection (each statement sees the latest committed state).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client()?;
        let client = slot.as_mut().ok_or(StoreError::Closed)?;
        f(client)
    }

    /// Runs `f` in one `SERIALIZABLE` transaction and commits it; a transaction PostgreSQL
    /// aborts for a conflict with a concurrent one is run again from the start (so `f` must
    /// have no effect outside the transaction).
    pub(crate) fn write<T>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(IsolationLevel::Serializable, f)
    }

    /// [`PgDb::write`] at `READ COMMITTED`: for statements that lock the rows they change
    /// themselves (claims with `FOR UPDATE SKIP LOCKED`).
    pub(crate) fn write_read_committed<T>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(IsolationLevel::ReadCommitted, f)
    }

    fn transaction<T>(
        &self,
        isolation: IsolationLevel,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client()?;
        let client = slot.as_mut().ok_or(StoreError::Closed)?;
        let mut pause = Duration::from_millis(2);
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = (|| {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .start()?;
                let value = f(&mut tx)?;
                tx.commit()?;
                Ok::<T, Conflict>(value)
            })();
            match attempt {
                Ok(value) => return Ok(value),
                Err(Conflict::Retry(_)) if tries < CONFLICT_TRIES => {
                    // Jitter keeps two agents that collided from colliding again in step.
                    let jitter = rand::random_range(0..=pause.as_micros() as u64);
                    std::thread::sleep(pause + Duration::from_micros(jitter));
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(Conflict::Retry(e)) | Err(Conflict::Store(e)) => return Err(e),
            }
        }
    }

    /// The schema version of the database.
    pub(crate) fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(migrations::current_version)
    }
}

/// A transaction's failure: one to try again (a conflict with a concurrent transaction), or
/// any other.
enum Conflict {
    Retry(StoreError),
    Store(StoreError),
}

impl From<StoreError> for Conflict {
    fn from(e: StoreError) -> Conflict {
        match e {
            StoreError::Backend {
                ref message,
                transient: true,
            } if message.starts_with(CONFLICT_PREFIX) => Conflict::Retry(e),
            e => Conflict::Store(e),
        }
    }
}

impl From<postgres::Error> for Conflict {
    fn from(e: postgres::Error) -> Conflict {
        Conflict::from(StoreError::from(e))
    }
}

/// How the message of a conflict between transactions starts (see [`Conflict`]).
const CONFLICT_PREFIX: &str = "conflict with a concurrent transaction: ";

impl From<postgres::Error> for StoreError {
    /// PostgreSQL's error, rendered. Transient: the connection could not be opened or broke,
    /// the server is starting or shutting down, out of resources, or the transaction
    /// conflicted with a concurrent one. Logic errors (a constraint, a syntax error) are not.
    fn from(e: postgres::Error) -> StoreError {
        let Some(db) = e.as_db_error() else {
            // No server answer: I/O, a closed connection, a timeout while connecting.
            return StoreError::Backend {
                message: format!("PostgreSQL: {e}"),
                transient: true,
            };
        };
        let code = db.code();
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return StoreError::Backend {
                message: format!("{CONFLICT_PREFIX}{}", db.message()),
                transient: true,
            };
        }
        let class = &code.code()[..2];
        // 08: connection exception, 53: insufficient resources, 57: operator intervention
        // (admin shutdown, cannot connect now), 58: system error.
        let transient = matches!(class, "08" | "53" | "57" | "58");
        StoreError::Backend {
            message: format!("PostgreSQL: {} ({})", db.message(), code.code()),
            transient,
        }
    }
}

/// A `usize` limit as a query parameter.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Drop for PgDb {
    /// Closing the client blocks on its own runtime, which panics on a thread that drives
    /// async tasks (the last `Store` handle dropped by an async task takes the read pool's
    /// connections with it): there the client is closed on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(client));
        }
    }
}

impl PgDb {
    /// Another connection to the same database, opened on first use (for the read pool; the
    /// schema is already migrated).
    pub(crate) fn another(&self) -> PgDb {
        PgDb {
            client: RefCell::new(None),
            config: self.config.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database gets the latest schema; connecting again (a second agent) finds it and
    /// migrates nothing; the read path answers its version.
    #[test]
    fn connects_migrates_once_and_reads_its_version() {
        let url = crate::store::test_pg::database_url();
        let first = PgDb::connect(&url).expect("connect");
        assert_eq!(
            first.schema_version().expect("version"),
            migrations::LATEST_VERSION
        );
        let second = PgDb::connect(&url).expect("connect again");
        assert_eq!(
            second.schema_version().expect("version"),
            migrations::LATEST_VERSION
        );
        let value = first
            .write(|tx| {
                Ok(tx
                    .query_one("SELECT count(*) FROM runs", &[])?
                    .get::<_, i64>(0))
            })
            .expect("write");
        assert_eq!(value, 0);
        assert_eq!(limit(usize::MAX), i64::MAX);
    }

    /// A URL that does not parse is refused at once with a message that does not repeat it.
    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let err = PgDb::connect("postgres://user:s3cret@[nope").expect_err("bad url");
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    /// A server nobody listens on is a transient error (the daemon retries it).
    #[test]
    fn an_unreachable_server_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let err = PgDb::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"))
            .expect_err("nobody listens");
        assert!(err.is_transient(), "{err}");
    }
}
