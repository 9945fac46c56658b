//! Read connections to the store, used off the async runtime.
//!
//! Backend calls block, so each read runs on tokio's blocking pool with a connection taken
//! from a small stack of idle ones (opened on demand from a seed connection, at most
//! `max_idle` kept: [`MAX_IDLE`] for SQLite, the configured pool size for PostgreSQL). In
//! SQLite's WAL mode these reads never wait for a writer, also one in another process
//! holding the write lock.

use std::sync::{Arc, Mutex};

use super::{Db, StoreError};

/// Idle connections kept for reuse.
pub(super) const MAX_IDLE: usize = 4;

/// A cloneable pool of read connections to one database file.
#[derive(Debug, Clone)]
pub(crate) struct Readers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A connection new ones are opened like ([`Db::another`]); never used for reads.
    seed: Mutex<Db>,
    idle: Mutex<Vec<Db>>,
    max_idle: usize,
}

impl Readers {
    /// A pool of connections like `seed`, keeping at most `max_idle` idle ones.
    pub(crate) fn new(seed: Db, max_idle: usize) -> Readers {
        Readers {
            inner: Arc::new(Inner {
                seed: Mutex::new(seed),
                idle: Mutex::new(Vec::new()),
                max_idle: max_idle.max(1),
            }),
        }
    }

    /// Runs `f` with a connection on the blocking pool, never on an async worker thread.
    pub(crate) async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Db) -> Result<T, E> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let store = inner.take()?;
            let result = f(&store);
            inner.put(store);
            result
        })
        .await
        .map_err(|_| E::from(StoreError::Closed))?
    }
}

impl Readers {
    /// Runs `f` with a connection on the current thread (which must not be an async worker).
    pub(crate) fn blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(&Db) -> Result<T, E>,
    {
        let db = self.inner.take()?;
        let result = f(&db);
        self.inner.put(db);
        result
    }
}

impl Inner {
    fn take(&self) -> Result<Db, StoreError> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match reused {
            Some(store) => Ok(store),
            None => self
                .seed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .another(),
        }
    }

    fn put(&self, store: Db) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(store);
        }
    }
}
