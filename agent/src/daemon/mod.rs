//! The daemon: git watching, cron, the run queue, workspaces and recovery.
//!
//! Parts and who owns what:
//! - [`config`]: the config file (DESIGN §6) and the embedded defaults.
//! - [`handle`]: the contract between the parts: [`DaemonHandle`] (commands to the scheduler,
//!   shared read-only state, events, shutdown).
//! - [`mirror`] and [`workspace`]: a cached bare mirror per repository and a checkout of an
//!   exact commit per run.
//! - `scheduler`: the actor that owns the queue and run states (added next).
//!
//! Durable state lives in [`crate::store`].

pub mod config;
pub mod cron;
pub mod git_watch;
pub mod handle;
pub mod mirror;
pub mod triggers;
pub mod workspace;

pub use config::Config;
pub use handle::{DaemonCommand, DaemonError, DaemonEvent, DaemonHandle, NewRunRequest, Shared};
pub use mirror::CommitInfo;
pub use mirror::{Mirror, MirrorError, WorkflowFile};
pub use workspace::{CheckoutMethod, Workspace};
