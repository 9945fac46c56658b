//! The `agent` library behind the binary: CLI commands, engine, daemon, store, notify, api.

pub mod api;
pub mod bus;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod model;
pub mod notify;
pub mod store;
