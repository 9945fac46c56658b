//! [`Db`]: one connection to the store, on SQLite (the embedded default) or PostgreSQL (a
//! fleet of agents on one database). Its operations are in `dispatch.rs`.

use std::path::Path;

use super::StoreError;
use super::postgres::PgDb;
use super::sqlite::SqliteDb;

/// A connection to the store, on one of its backends.
// A few hundred bytes per connection, and a connection lives as long as its thread: boxing
// the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Db {
    /// The embedded SQLite file.
    Sqlite(SqliteDb),
    /// A PostgreSQL database shared by a fleet (boxed: its client is much larger than a
    /// SQLite connection).
    Postgres(Box<PgDb>),
}

impl Db {
    /// Opens (creating if needed) `state_dir/agent.sqlite3` and brings its schema up to date.
    pub fn open_in_dir(state_dir: &Path) -> Result<Db, StoreError> {
        SqliteDb::open_in_dir(state_dir).map(Db::Sqlite)
    }

    /// Opens (creating if needed) the SQLite file at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        SqliteDb::open(path).map(Db::Sqlite)
    }

    /// Opens the SQLite file at `path` migrating only up to schema `version` (fixtures).
    #[doc(hidden)]
    pub fn open_at_version(path: &Path, version: i64) -> Result<Db, StoreError> {
        SqliteDb::open_at_version(path, version).map(Db::Sqlite)
    }

    /// Opens an existing SQLite file read-only: nothing is created, migrated or written.
    pub(crate) fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        SqliteDb::open_read_only(path).map(Db::Sqlite)
    }

    /// Connects to the PostgreSQL database at `url` and migrates it.
    pub fn connect_postgres(url: &str) -> Result<Db, StoreError> {
        PgDb::connect(url).map(|db| Db::Postgres(Box::new(db)))
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// SQLite's `quick_check` (`Ok(())` when sound, else the problems found); PostgreSQL
    /// keeps its own pages sound, so it always answers `Ok(())`.
    pub fn check_integrity(&self) -> Result<Result<(), Vec<String>>, StoreError> {
        match self {
            Db::Sqlite(db) => db.check_integrity(),
            Db::Postgres(_) => Ok(Ok(())),
        }
    }

    /// Another connection to the same store (for the read pool).
    pub(crate) fn another(&self) -> Result<Db, StoreError> {
        match self {
            Db::Sqlite(db) => SqliteDb::open(db.path()).map(Db::Sqlite),
            Db::Postgres(db) => Ok(Db::Postgres(Box::new(db.another()))),
        }
    }
}
