//! The `agent` library behind the binary: CLI commands, engine, daemon, store, notify, api.

pub mod cli;
