//! [`Store`]: the cloneable, async handle every part of the daemon holds.
//!
//! One writer thread owns the write connection ([`Db`]) and runs write jobs one at a time, in
//! the order they were sent; each job is one store method, so one transaction. Reads run on
//! the blocking pool with pooled read connections ([`Readers`]), so neither ever runs SQLite
//! on an async worker thread. The writer thread ends when the last handle is dropped (after
//! the jobs already sent have run).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::{Db, Readers, StoreError};

/// A write job: runs on the writer thread with the write connection.
type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The handle to the store: cheap to clone, usable from async code and from blocking threads.
#[derive(Debug, Clone)]
pub struct Store {
    writer: mpsc::Sender<Job>,
    readers: Readers,
    path: Arc<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) `state_dir/agent.sqlite3`, migrates it and starts the
    /// writer thread. Blocks: call it at boot, off the async runtime or before it.
    pub fn open_in_dir(state_dir: &Path) -> Result<Store, StoreError> {
        Store::from_db(Db::open_in_dir(state_dir)?)
    }

    /// Opens (creating if needed) the database file at `path`; see [`Store::open_in_dir`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::from_db(Db::open(path)?)
    }

    /// A handle whose writer thread owns `db`.
    pub fn from_db(db: Db) -> Result<Store, StoreError> {
        let path = db.path().to_path_buf();
        let (writer, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut db = db;
                while let Ok(job) = jobs.recv() {
                    // A panicking job drops its reply (its caller sees `Closed`); the writer
                    // goes on with the next one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut db)));
                }
            })
            .map_err(|e| StoreError::Backend {
                message: format!("cannot start the store's writer thread: {e}"),
                transient: false,
            })?;
        Ok(Store {
            writer,
            readers: Readers::new(path.clone()),
            path: Arc::new(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool of read connections.
    pub fn readers(&self) -> &Readers {
        &self.readers
    }

    fn send<T, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = tx.send(f(db));
        });
        self.writer.send(job).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Runs `f` on the writer thread (one transaction per store method) and waits for it.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for code already on a blocking thread (never call it on an async
    /// worker thread: it blocks until the writer has run `f`).
    pub fn blocking_write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(f)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs the read `f` on the blocking pool with a read connection.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Db) -> Result<T, E> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// [`Store::read`] answering the store's own error.
    pub async fn query<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// [`Store::read`] for code already on a blocking thread.
    pub fn blocking_read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(&Db) -> Result<T, E>,
    {
        self.readers.blocking(f)
    }
}
