//! The daemon: what to run, when, and running it (git watching, cron, manual runs, the run
//! queue, workspaces and recovery). It owns run state through the scheduler.
//!
//! Parts and who owns what:
//! - [`handle`]: the contract between the parts: [`DaemonHandle`] (commands to the scheduler,
//!   shared read-only state, events, shutdown).
//! - [`scheduler`]: the actor that owns the queue and run states; [`run::task`] runs one run
//!   (workspace, engine, step records, logs); [`scheduler::recovery`] decides on boot what happens
//!   to runs a crash interrupted; [`run::logs`] writes the capped step log files.
//! - [`triggers`] (git watching, push, cron, manual and hook requests): what to run, when
//!   (they write runs through the store's deduping writes and wake the scheduler).
//! - [`catalog`]: the workflows at a commit, by file and by name, parsed once per commit.
//! - [`run::mirror`] and [`run::workspace`]: a cached bare mirror per repository and a checkout of an
//!   exact commit per run.
//!
//! The daemon imports neither the API nor the notifier: `crate::server` starts it next to
//! them. Durable state lives in [`crate::store`].

pub(crate) mod catalog;
pub(crate) mod handle;
pub(crate) mod leases;
pub mod run;
pub(crate) mod scheduler;
pub(crate) mod state_lock;
pub(crate) mod store_health;
pub(crate) mod triggers;

pub(crate) use crate::config::Config;
pub use run::mirror::CommitInfo;
pub use run::mirror::{Mirror, MirrorError, WorkflowFile};
pub use run::workspace::{CheckoutMethod, CheckoutSpec, Workspace, add_git};

/// Helpers shared by the daemon modules' tests against real repositories.
#[cfg(test)]
pub(crate) mod test_git {
    use std::path::Path;
    use std::process::Command;

    /// Runs the git CLI in `dir` with a fixed identity; panics (fails the test) when git
    /// fails, with its stderr. Returns stdout, trimmed.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
