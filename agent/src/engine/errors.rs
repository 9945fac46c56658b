//! Errors of the engine that are not step failures: a step failure is data (an error class
//! in the report), these stop a run before or around its steps.

use std::path::PathBuf;

/// Why the engine could not start or finish a run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// The preserved context could not be read or written.
    #[error("context file {}: {message}", path.display())]
    Context {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A secrets file could not be read or has a bad line.
    #[error("secrets: {0}")]
    Secrets(String),
    /// Anything else from the outside world.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
