//! The daemon: git watching, cron, the run queue, workspaces and recovery.
//!
//! This module so far holds the git side the daemon stands on: [`mirror`] keeps a cached bare
//! mirror per repository (clone once, then fetch) and reads commits without a checkout;
//! [`workspace`] checks an exact commit out into a fresh directory per run. The scheduler, the
//! watchers and the HTTP API come later; durable state lives in [`crate::store`].

pub mod mirror;
pub mod workspace;

pub use mirror::CommitInfo;
pub use mirror::{Mirror, MirrorError, WorkflowFile};
pub use workspace::{CheckoutMethod, Workspace};
