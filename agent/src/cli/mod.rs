//! Command-line interface: argument definitions (clap) and dispatch to one module per
//! command. Each command returns the process exit code documented in the README.

pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod daemon;
pub(crate) mod exec;
pub(crate) mod import_gha;
pub(crate) mod init;
pub(crate) mod plan;
pub(crate) mod schema;
pub(crate) mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub(crate) use crate::errors::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "A self-hosted workflow daemon: git-triggered and cron-scheduled workflows"
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check workflow files (or directories of them) and print every problem found.
    Validate {
        /// Files or directories. A directory means its `.workflows/*.y{a,}ml`, or every YAML
        /// file with a top-level `workflow:` key when it has no `.workflows/`.
        #[arg(required_unless_present = "config")]
        paths: Vec<PathBuf>,
        /// Also check this daemon config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of the workflow file format.
    Schema,
    /// Run one workflow locally with real processes (progress on stderr).
    Exec(exec::ExecArgs),
    /// Print a workflow's execution plan and optimizer suggestions, without running it.
    Plan(plan::PlanArgs),
    /// Write a starter workflow (and its skills) into `.workflows/`.
    Init(init::InitArgs),
    /// Convert GitHub Actions workflows (default `.github/workflows/`) into `.workflows/`.
    ImportGha(import_gha::ImportGhaArgs),
    /// Run the daemon: watch repositories, run workflows on commits and schedules, serve the API.
    Daemon(daemon::DaemonArgs),
    /// List the daemon's runs (newest first), or show one run with its steps.
    Runs(client::RunsArgs),
    /// Print a run's step logs; `-f` follows them live.
    Logs(client::LogsArgs),
    /// Queue a run of a workflow on the daemon.
    Trigger(client::TriggerArgs),
    /// Cancel a queued or running run.
    Cancel(client::RunArgs),
    /// Retry a failed, cancelled or interrupted run from its first unfinished step.
    Retry(client::RunArgs),
    /// List webhook deliveries (newest first) with their status and attempts.
    Deliveries(client::DeliveriesArgs),
    /// List the agents sharing the daemon's store: last heartbeat, runs held, capacity, lost.
    Nodes(client::NodesArgs),
    /// List a run's artifacts, or download one and unpack it into a directory.
    Artifacts(client::ArtifactsArgs),
    /// List, remove or prune step cache entries.
    Cache(cache::CacheArgs),
}

/// Runs one parsed command line and returns its exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Validate { paths, config } => validate::run(&paths, config.as_deref()),
        Command::Schema => schema::run(),
        Command::Exec(args) => exec::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Init(args) => init::run(args),
        Command::ImportGha(args) => import_gha::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Runs(args) => client::runs(args),
        Command::Logs(args) => client::logs(args),
        Command::Trigger(args) => client::trigger(args),
        Command::Cancel(args) => client::cancel(args),
        Command::Retry(args) => client::retry(args),
        Command::Deliveries(args) => client::deliveries(args),
        Command::Nodes(args) => client::nodes(args),
        Command::Artifacts(args) => client::artifacts(args),
        Command::Cache(args) => cache::run(args),
    }
}
