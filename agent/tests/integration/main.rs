//! The integration tests of the `agent` library, in one test binary: one module per topic, the
//! shared helpers in `common`. One binary links the library once (not once per topic); select
//! a topic with `cargo test -p agent --test integration <topic>::`.
//!
//! Every topic shares this process: a test must not change process-wide state (environment,
//! current directory, umask, libgit2 options) unless every test in the binary wants the same
//! value; see `common::mirror::network_timeouts`.

mod common;

mod import_gha;

mod mirror_credentials;
mod mirror_https;
mod mirror_timeout;
mod notify_outbox;
mod server_fetch_timeout;
mod store_concurrency;
mod store_fixture;
mod store_fixture_v2;
mod store_fixture_v3;
mod store_fixture_v4;
mod store_fixture_v5;
mod store_leases;
mod store_logs;
mod store_nodes;
mod store_overlap;
mod store_queue;
mod store_state;
mod workspace_git;
