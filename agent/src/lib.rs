//! The `agent` library behind the binary.
//!
//! Data flow of the daemon half, and the import direction (a module imports only those to
//! its left; `.ci/import-graph` and the `architecture` tests of `tests/` check there is no
//! circle, and that every module below opens with a doc comment saying what it owns):
//!
//! ```text
//! model ← config ← store ← bus ← daemon, monitor, notify, api ← server ← cli
//! ```
//!
//! - [`model`]: the run contract (lifecycle events and their names), no I/O.
//! - [`config`]: the daemon config and its secrets; [`state_dir`]: every path under the
//!   state directory; [`errors`]: the exit-code table.
//! - [`engine`]: runs one workflow (imports only `dsl`, `runners` and its own parts).
//! - [`cache`]: the step cache on disk behind the engine's cache interface.
//! - [`store`]: durable state; [`bus`]: lifecycle events (lossless), log lines (lossy) and
//!   the shutdown token.
//! - [`daemon`]: what to run, when, and running it; [`monitor`]: metrics and anomalies;
//!   [`notify`]: outbox events to webhook deliveries; [`api`]: HTTP.
//! - [`gha`]: GitHub Actions workflows converted into ours (pure, imports only `dsl`).
//! - [`server`]: the composition root that starts them all; [`cli`]: the commands.

pub(crate) mod api;
pub(crate) mod bus;
pub(crate) mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub(crate) mod engine;
pub(crate) mod errors;
pub mod gha;
pub(crate) mod model;
pub(crate) mod monitor;
pub(crate) mod notify;
pub mod server;
pub mod state_dir;
pub mod store;
