//! The end-to-end tests of the `agent` binary, in one test binary: one module per topic, the
//! shared helpers in `common`. One binary links once (not once per topic) and lets
//! `cargo test -p agent-tests <topic>::` select a topic.
//!
//! Every topic shares this process: a test must not change process-wide state (environment,
//! current directory, umask); it passes what it needs to the child processes it starts.

mod common;

mod anomaly_memory;
mod anomaly_slow;
mod architecture;
mod artifacts;
mod bus_flood;
mod checkout;
mod daemon_api;
mod daemon_core;
mod daemon_crash;
mod daemon_isolation;
mod daemon_output;
mod daemon_overlap;
mod daemon_report;
mod daemon_triggers;
mod dashboard;
mod examples;
mod examples_ci;
mod exec_basics;
mod exec_cache;
mod exec_env;
mod exec_failure;
mod exec_isolate;
mod exec_matrix;
mod exec_parallel;
mod exec_report;
mod exec_secrets;
mod exec_services;
mod exec_stage_matrix;
mod fleet_leases;
mod fleet_logs;
mod fleet_nodes;
mod fleet_pg;
mod fleet_soak;
mod hooks_push;
mod import_gha;
mod import_gha_upstream;
mod init_plan;
mod metrics_scrape;
mod notify_delivery;
mod notify_events;
mod notify_https;
mod notify_slack;
mod run_logs;
mod toolchain_skills;
mod triggers_forge;
mod validate;
