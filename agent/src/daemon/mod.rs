//! The daemon: git watching, cron, the run queue, workspaces and recovery.
//!
//! Parts and who owns what:
//! - [`handle`]: the contract between the parts: [`DaemonHandle`] (commands to the scheduler,
//!   shared read-only state, events, shutdown).
//! - [`scheduler`]: the actor that owns the queue and run states; [`run::task`] runs one run
//!   (workspace, engine, step records, logs); [`scheduler::recovery`] decides on boot what happens
//!   to runs a crash interrupted; [`run::logs`] writes the capped step log files.
//! - [`triggers`] (git watching, push, cron): what to run, when (they write runs through the
//!   store's deduping writes and wake the scheduler).
//! - [`run::mirror`] and [`run::workspace`]: a cached bare mirror per repository and a checkout of an
//!   exact commit per run.
//! - The HTTP API lives in [`crate::api`].
//!
//! [`run`] is the entry point: it takes the config and a shutdown future, so tests can boot a
//! daemon in-process; `agent daemon` passes SIGTERM/SIGINT. Durable state lives in
//! [`crate::store`].

pub mod handle;
pub mod run;
pub mod scheduler;
pub mod state_lock;
pub mod store_health;
pub mod triggers;

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

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::Config;
pub use handle::{DaemonCommand, DaemonError, DaemonEvent, DaemonHandle, NewRunRequest, Shared};
pub use run::mirror::CommitInfo;
pub use run::mirror::{Mirror, MirrorError, WorkflowFile};
pub use run::workspace::{CheckoutMethod, Workspace};

use crate::engine::{AdmissionConfig, Engine, EngineConfig};
use crate::store::{RunId, RunStatus, Store, StoreError};

/// The file in `state_dir` holding the address the API listens on (written once bound, so
/// `listen: 127.0.0.1:0` can be used; removed on a clean exit).
pub const ADDR_FILE_NAME: &str = "daemon.addr";

/// How long the API may take to close its connections after the scheduler stopped.
const API_STOP_WAIT: Duration = Duration::from_secs(5);

/// Why the daemon could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum DaemonStartError {
    /// The state directory cannot be made or used.
    #[error("state directory `{path}`: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another daemon holds the state directory (or its lock file cannot be used).
    #[error(transparent)]
    Locked(#[from] state_lock::LockError),
    /// `run_as` cannot be used.
    #[error("run_as `{user}`: {why}")]
    RunAs {
        /// The configured user.
        user: String,
        /// Why.
        why: String,
    },
    /// The store cannot be opened or recovered.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A configured secret cannot be read.
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` resolves: recovers interrupted runs, starts the
/// scheduler, the git watchers, cron and the API, then, on shutdown, stops admitting runs,
/// gives running steps `limits.shutdown_grace` to finish and cancels the rest (they resume
/// on the next start).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonStartError> {
    run_until(config, shutdown, std::future::pending()).await
}

/// [`run`], with a second future that, once shutdown has begun, ends the grace period at
/// once (a second SIGTERM or Ctrl-C): running runs are cancelled and resume on the next
/// start.
pub async fn run_until(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send,
    hurry: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonStartError> {
    let state_dir = absolute(&config.state_dir).map_err(|source| DaemonStartError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let run_user = run_user(&config)?;
    if run_user.is_some() {
        // Everything the daemon writes from now on (database, logs, mirrors, token) is
        // private to its user; steps get a umask of 022 back.
        // SAFETY: umask only changes this process's file creation mask.
        unsafe { libc::umask(0o077) };
    }
    state_lock::create_state_dir(&state_dir).map_err(|source| DaemonStartError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    protect_state_dir(&state_dir, run_user.is_some()).map_err(|source| {
        DaemonStartError::StateDir {
            path: state_dir.clone(),
            source,
        }
    })?;
    // Before anything reads or changes the state: a second daemon on the same directory
    // would otherwise recover (and then run again) the first one's live runs.
    let _lock = state_lock::StateLock::acquire(&state_dir)?;
    config.state_dir = state_dir.clone();
    // Bound before recovery, so a daemon that cannot listen changes nothing.
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonStartError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| DaemonStartError::Bind {
            addr: listen,
            source,
        })?;
    let secrets = config.load_secrets()?;
    crate::store::set_busy_timeout(config.limits.store_busy_timeout);
    let mut store = Store::open_in_dir(&state_dir)?;
    for name in [
        crate::store::DB_FILE_NAME.to_string(),
        format!("{}-wal", crate::store::DB_FILE_NAME),
        format!("{}-shm", crate::store::DB_FILE_NAME),
    ] {
        set_mode(&state_dir.join(name), 0o600);
    }
    let store_path = store.path().to_path_buf();
    let recovered = scheduler::recovery::recover(&mut store, &state_dir)?;
    if !recovered.is_empty() {
        tracing::info!(runs = recovered.len(), "recovered interrupted runs");
    }
    remove_stale_workspaces(&store, &config);
    // After recovery ended the interrupted runs' processes: their cgroups go too.
    let stale_cgroups = runners::remove_stale_run_cgroups();
    if stale_cgroups > 0 {
        tracing::info!(
            count = stale_cgroups,
            "removed the cgroups of a previous daemon's runs"
        );
    }
    let mut admission = AdmissionConfig::default();
    if let Some(reserve) = config.limits.memory_reserve_mb {
        admission.memory_reserve_mb = reserve;
    }
    // `max_parallel_steps` caps the CPU slots shared by every run's steps (an I/O-bound step,
    // `cpu: 0`, takes none).
    if let Some(n) = config.limits.max_parallel_steps {
        admission.cpu = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    let max_run_processes = config.limits.max_run_processes;
    if let Some(why) = runners::cgroup_unavailable_reason() {
        if run_user.is_some() {
            tracing::warn!(reason = %why, limit = max_run_processes,
                "no per-run cgroup: the run user's processes are limited as a whole (RLIMIT_NPROC)");
        } else {
            tracing::warn!(reason = %why,
                "no per-run cgroup and no run user: a run's processes are not limited");
        }
    }
    let engine = Arc::new(Engine::new(EngineConfig {
        skills_dirs: config.skills_dirs.clone(),
        admission,
        marker_scope: Some(scheduler::recovery::marker_scope(&state_dir)),
        env_passthrough: config.env_passthrough.clone(),
        run_user: run_user.map(Arc::new),
        run_uids: config.run_as_uids,
        max_run_processes: Some(max_run_processes),
        ..EngineConfig::default()
    }));
    let (handle, parts) = DaemonHandle::new(config, state_dir.clone(), store_path, engine, secrets);
    // Subscribed before the scheduler starts, so they see every run.
    let metrics = tokio::spawn(crate::monitor::metrics::collect(
        handle.clone(),
        handle.shared.events.subscribe(),
    ));
    let anomalies = tokio::spawn(crate::monitor::anomaly::run(
        handle.clone(),
        handle.shared.events.subscribe(),
    ));
    let notifier = crate::notify::spawn(&handle);
    let scheduler =
        tokio::spawn(scheduler::Scheduler::new(handle.clone(), store, parts.commands).run());
    let api = tokio::spawn(crate::api::serve(listener, handle.clone()));
    let watch = tokio::spawn(triggers::git_watch::run(handle.clone()));
    let cron = tokio::spawn(triggers::cron::run(handle.clone()));
    // A remote's history is what it held when the daemon announced itself (at most 5 s late).
    triggers::git_watch::first_look(&handle, std::time::Duration::from_secs(5)).await;
    write_addr_file(&state_dir, bound);
    tracing::info!(addr = %bound, state_dir = %state_dir.display(),
        repos = handle.shared.config.repos.len(), "agent daemon listening");

    shutdown.await;
    tracing::info!("shutting down: no new runs are started");
    let _ = parts.shutdown.send(true);
    let hurry_handle = handle.clone();
    let hurry = tokio::spawn(async move {
        hurry.await;
        tracing::info!("second stop request: cancelling running runs now");
        hurry_handle.send(DaemonCommand::Shutdown).await;
    });
    if let Err(err) = scheduler.await {
        tracing::error!(error = %err, "scheduler stopped abnormally");
    }
    for (name, task) in [
        ("git watcher", watch),
        ("cron", cron),
        ("metrics", metrics),
        ("anomaly detection", anomalies),
    ] {
        if tokio::time::timeout(API_STOP_WAIT, task).await.is_err() {
            tracing::warn!("{name} did not stop in time");
        }
    }
    if let Some(task) = notifier
        && tokio::time::timeout(crate::notify::STOP_WAIT, task)
            .await
            .is_err()
    {
        tracing::warn!("webhook notifier did not stop in time");
    }
    match tokio::time::timeout(API_STOP_WAIT, api).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::error!(error = %err, "API server failed"),
        Ok(Err(err)) => tracing::error!(error = %err, "API server stopped abnormally"),
        Err(_) => tracing::warn!("API server did not stop in time"),
    }
    hurry.abort();
    let _ = std::fs::remove_file(state_dir.join(ADDR_FILE_NAME));
    tracing::info!("agent daemon stopped");
    Ok(())
}

/// The user steps run as: `run_as` from the config (which needs a daemon running as root),
/// or none. A root daemon without `run_as` runs steps as root, with a loud warning.
fn run_user(config: &Config) -> Result<Option<runners::RunUser>, DaemonStartError> {
    let root = runners::running_as_root();
    if let Some((first, last)) = config.run_as_uids {
        match &config.run_as {
            None => {
                return Err(DaemonStartError::RunAs {
                    user: format!("(none; run_as_uids {first}-{last})"),
                    why: "`run_as_uids` needs `run_as` (their group and home)".into(),
                });
            }
            Some(name) => {
                if let Ok(user) = runners::RunUser::lookup(name)
                    && (first..=last).contains(&user.uid)
                {
                    return Err(DaemonStartError::RunAs {
                        user: name.clone(),
                        why: format!("its uid {} is in `run_as_uids` {first}-{last}", user.uid),
                    });
                }
            }
        }
    }
    match &config.run_as {
        Some(name) if !root => Err(DaemonStartError::RunAs {
            user: name.clone(),
            why: "the daemon must run as root to start steps as another user".into(),
        }),
        Some(name) => match runners::RunUser::lookup(name) {
            Ok(user) if user.uid == 0 => Err(DaemonStartError::RunAs {
                user: name.clone(),
                why: "that is root: steps would see and change the daemon's state".into(),
            }),
            Ok(user) => {
                tracing::info!(user = %user.name, uid = user.uid, "steps run as an unprivileged user");
                Ok(Some(user))
            }
            Err(err) => Err(DaemonStartError::RunAs {
                user: name.clone(),
                why: err.to_string(),
            }),
        },
        None if root => {
            tracing::warn!(
                "the daemon runs as root and `run_as` is not set: steps run as root and can read \
                 the API token, the database and every secret, and change other runs; set \
                 `run_as: USER` to an unprivileged user"
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Makes the state directory private to the daemon's user: 0700, or, when steps run as
/// another user, 0711 with `workspaces/` 0711 as well (they may pass through to their own
/// workspace, owned by them, but list nothing) and every other entry 0700/0600.
fn protect_state_dir(state_dir: &std::path::Path, run_user: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let traverse = if run_user { 0o711 } else { 0o700 };
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(traverse))?;
    if !run_user {
        return Ok(());
    }
    let workspaces = state_dir.join("workspaces");
    std::fs::create_dir_all(&workspaces)?;
    std::fs::set_permissions(&workspaces, std::fs::Permissions::from_mode(0o711))?;
    for entry in std::fs::read_dir(state_dir)? {
        let entry = entry?;
        if entry.file_name() == "workspaces" {
            continue;
        }
        let meta = entry.metadata()?;
        let mode = if meta.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Best effort `chmod` of a file the daemon created (absent files are fine).
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if path.exists()
        && let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    {
        tracing::warn!(path = %path.display(), error = %err, "cannot restrict the file's mode");
    }
}

fn absolute(path: &std::path::Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// Writes the bound address atomically (readers never see half a line).
fn write_addr_file(state_dir: &std::path::Path, addr: std::net::SocketAddr) {
    let tmp = state_dir.join(format!("{ADDR_FILE_NAME}.tmp"));
    let written = std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, state_dir.join(ADDR_FILE_NAME)));
    if let Err(err) = written {
        tracing::warn!(error = %err, "cannot write the address file");
    }
}

/// Workspaces left by runs that ended while the daemon was down (or by a crash) go, except
/// failed runs' workspaces when `keep_failed_workspaces` is on.
fn remove_stale_workspaces(store: &Store, config: &Config) {
    let keep = |name: &str| {
        config.keep_failed_workspaces
            && name.parse::<RunId>().ok().is_some_and(
                |id| matches!(store.get_run(id), Ok(Some(r)) if r.status == RunStatus::Failed),
            )
    };
    match Workspace::remove_stale(&config.state_dir, keep) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(count = removed.len(), "removed stale workspaces");
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot remove stale workspaces"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry point boots in-process on a free port and stops when its shutdown future
    /// resolves, so tests need no separate process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn boots_in_process_and_stops_on_its_shutdown_future() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            state_dir: dir.path().join("state"),
            listen: "127.0.0.1:0".parse().expect("address"),
            api_token: Some("t".into()),
            ..Config::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(config, async move {
            let _ = stopped.await;
        }));
        let addr_file = dir.path().join("state").join(ADDR_FILE_NAME);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let addr: std::net::SocketAddr = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse()
            {
                break addr;
            }
            assert!(tokio::time::Instant::now() < deadline, "no address file");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_ne!(addr.port(), 0);
        let conn = tokio::net::TcpStream::connect(addr).await;
        assert!(conn.is_ok(), "API not listening");
        drop(conn);
        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(20), daemon)
            .await
            .expect("daemon stops")
            .expect("daemon task");
        assert!(result.is_ok(), "{result:?}");
        assert!(!addr_file.exists(), "address file left behind");
    }
}
