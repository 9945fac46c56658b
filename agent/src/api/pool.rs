//! Read connections to the store for request handlers.
//!
//! SQLite calls block, so each read runs on tokio's blocking pool with a connection taken
//! from a small stack of idle ones (opened on demand, at most [`MAX_IDLE`] kept). This holds
//! no daemon state: the scheduler owns the runs and writes them through its own connection;
//! the API only reads (WAL lets reads run beside the writer).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::error::ApiError;
use crate::store::Store;

/// Idle connections kept for reuse.
pub const MAX_IDLE: usize = 4;

/// A pool of read connections to one database file.
#[derive(Debug)]
pub struct StorePool {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
}

impl StorePool {
    /// A pool for the database at `path` (nothing is opened yet).
    pub fn new(path: PathBuf) -> Arc<StorePool> {
        Arc::new(StorePool {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` with a connection on the blocking pool.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let store = pool.take()?;
            let result = f(&store);
            pool.put(store);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("store reader stopped: {e}")))?
    }

    fn take(&self) -> Result<Store, ApiError> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match reused {
            Some(store) => Ok(store),
            None => Ok(Store::open(&self.path)?),
        }
    }

    fn put(&self, store: Store) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(store);
        }
    }
}
