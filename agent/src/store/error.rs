//! The store's error type.

use super::records::{RunId, RunStatus};

/// Everything that can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption, a lock held past the busy timeout...).
    /// The backend's own error is rendered into `message`; no backend type leaks out.
    #[error("database error: {message}")]
    Backend {
        /// The backend's description of the failure.
        message: String,
        /// Whether trying again later may succeed (see [`StoreError::is_transient`]).
        transient: bool,
    },
    /// The store's writer thread is gone (the process is shutting down or it panicked).
    #[error("the store is closed")]
    Closed,
    /// The state directory could not be created.
    #[error("cannot create `{path}`: {source}")]
    CreateDir {
        /// The directory we tried to create.
        path: std::path::PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON column could not be encoded or decoded.
    #[error("invalid json in column `{column}`: {source}")]
    Json {
        /// The column (or value) concerned.
        column: &'static str,
        /// The underlying serde error.
        source: serde_json::Error,
    },
    /// The database was written by a newer agent; we refuse to guess at its schema.
    #[error(
        "database schema version {found} is newer than this agent supports ({supported}); upgrade the agent"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored value is not one this build understands (a status string, a timestamp...).
    #[error("unexpected value `{value}` in column `{column}`")]
    BadValue {
        /// The column concerned.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// No run with this id.
    #[error("run {0} not found")]
    RunNotFound(RunId),
    /// The run is not in a state that allows this transition.
    #[error("run {run} is {from}, cannot become {to}")]
    InvalidTransition {
        /// The run.
        run: RunId,
        /// Its current status.
        from: RunStatus,
        /// The status asked for.
        to: RunStatus,
    },
    /// `finish_run` was asked for a status that is not final.
    #[error("`{0}` is not a final run status")]
    NotFinal(RunStatus),
    /// No delivery with this id.
    #[error("delivery `{0}` not found")]
    DeliveryNotFound(String),
    /// A write fenced by a lease found the lease taken over (expired and acquired by another
    /// holder, or released): the writer lost its role and must not write.
    #[error("lease `{lease}` is no longer held by `{holder}` with token {token}")]
    LeaseLost {
        /// The lease's name.
        lease: String,
        /// The holder that wanted to write.
        holder: String,
        /// Its fencing token.
        token: u64,
    },
}

impl StoreError {
    /// Whether trying the same write again later may succeed: the lock was held past the
    /// busy timeout, the disk is full, or the file could not be read or written. Logic
    /// errors (a wrong state, a missing run) are not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Backend { transient, .. } => *transient,
            StoreError::CreateDir { .. } => true,
            _ => false,
        }
    }

    /// Builds a [`StoreError::Json`] for `column`.
    pub(crate) fn json(column: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |source| StoreError::Json { column, source }
    }
}
