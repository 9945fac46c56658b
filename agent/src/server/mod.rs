//! The composition root: opens the store, does the process-wide setup once, starts the
//! daemon (scheduler, git watchers, cron), the API, the notifier and the monitor (metrics,
//! anomaly detection) on one bus, and orders their shutdown. `agent daemon` and the
//! in-process tests boot through [`run`] / [`run_until`]; nothing but the CLI imports this
//! module.
//!
//! Process-wide setup: [`prepare_process`] (the binary, before any thread exists) fences the
//! workspaces from the repository around the state directory (`GIT_CEILING_DIRECTORIES`) and
//! makes the process a child subreaper; the libgit2 network timeouts
//! (`limits.fetch_timeout`) are applied by [`run_until`] itself, so an in-process daemon
//! honours them too.
//!
//! The store: opened (and recovered) here once, on a blocking thread; its cloneable handle
//! goes to the daemon (through `Shared`), the API, the notifier and the monitor, and nothing
//! else opens the database. Shutdown order: the scheduler, the watchers, cron, the monitor,
//! the notifier and the API stop first; then one last empty write waits for every write sent
//! before it (the writer runs them in order), and the writer thread ends by itself when the
//! last handle is dropped (a run task still unwinding may hold one a little longer: each of
//! its writes is one transaction, committed or not at all).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::daemon::handle::{DaemonCommand, DaemonHandle};
use crate::daemon::run::workspace::Workspace;
use crate::daemon::scheduler;
use crate::daemon::state_lock;
use crate::daemon::triggers::{cron, git_watch};
use crate::engine::{AdmissionConfig, Engine, EngineConfig};
use crate::monitor::metrics::Metrics;
use crate::store::{Db, RunId, RunStatus, Store, StoreError};

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
    /// The libgit2 network timeouts cannot be set.
    #[error(transparent)]
    Git(#[from] crate::daemon::MirrorError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl crate::errors::CommandError for DaemonStartError {
    /// A daemon that cannot start (or stops with an error) fails; an invalid config file is
    /// reported before, with its diagnostics, as invalid input.
    fn exit_code(&self) -> i32 {
        crate::errors::EXIT_FAILED
    }
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
pub(crate) async fn run_until(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    hurry: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonStartError> {
    let daemon = start(config).await?;
    shutdown.await;
    daemon.stop(hurry).await;
    Ok(())
}

/// A daemon booted by [`start`]: every part running, until [`Daemon::stop`].
pub(crate) struct Daemon {
    handle: DaemonHandle,
    addr: std::net::SocketAddr,
    state_dir: PathBuf,
    shutdown: tokio::sync::watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    others: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    notifier: Option<tokio::task::JoinHandle<()>>,
    last_writes: Store,
    _lock: state_lock::StateLock,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("addr", &self.addr)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

/// Boots the daemon: the process setup that [`prepare_process`] does not do, the state
/// directory and its lock, the listener, the store (opened and recovered), then the
/// scheduler, the API, the git watchers, cron, the notifier and the monitor; answers once the
/// daemon listens and has had its first look at the repositories. [`run_until`] is this,
/// then [`Daemon::stop`] when its shutdown future resolves.
pub(crate) async fn start(mut config: Config) -> Result<Daemon, DaemonStartError> {
    let state_dir = absolute(&config.state_dir).map_err(|source| DaemonStartError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let run_user = run_user(&config)?;
    set_git_timeouts(config.limits.fetch_timeout)?;
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
    let lock = state_lock::StateLock::acquire(&state_dir)?;
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
    // Opening, migrating and recovering block: they run off the async runtime, on the
    // connection that then becomes the store's writer.
    let (store, recovered) = {
        let (dir, boot_config) = (state_dir.clone(), config.clone());
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let (mut db, pool) = open_store(&boot_config, &dir)?;
            let recovered = match pool {
                None => {
                    for path in crate::state_dir::db_files(&dir) {
                        set_mode(&path, 0o600);
                    }
                    scheduler::recovery::recover(&mut db, &dir)?
                }
                // A shared database: only lapsed claims and this node's own (a restarted
                // node with a fixed name takes its runs back at once); other nodes' live
                // runs are theirs.
                Some(_) => scheduler::recovery::recover_with(
                    &mut db,
                    &dir,
                    scheduler::recovery::Reclaim::Fleet {
                        now: chrono::Utc::now(),
                        own: boot_config.node.clone(),
                    },
                )?,
            };
            remove_stale_workspaces(&db, &boot_config);
            match pool {
                None => Ok((Store::from_db(db)?, recovered)),
                Some(pool) => Ok((Store::with_db_pool(db, pool)?, recovered)),
            }
        })
        .await
        .map_err(|e| StoreError::Backend {
            message: format!("store boot failed: {e}"),
            transient: false,
        })??
    };
    if !recovered.is_empty() {
        tracing::info!(runs = recovered.len(), "recovered interrupted runs");
    }
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
        cache: Some(Arc::new(crate::cache::DiskCache::new(
            &state_dir,
            config.limits.cache_max_bytes,
        ))),
        ..EngineConfig::default()
    }));
    let secrets = Arc::new(secrets);
    let config = Arc::new(config);
    let (handle, parts) = DaemonHandle::new(
        config.clone(),
        state_dir.clone(),
        store.clone(),
        engine,
        (*secrets).clone(),
    );
    let stopping = handle.shutdown();
    let metrics_registry = Arc::new(Metrics::default());
    // Subscribed before the scheduler starts, so they see every run.
    let metrics = tokio::spawn(crate::monitor::metrics::collect(
        metrics_registry.clone(),
        handle.shared.events.subscribe(),
        stopping.clone(),
    ));
    let anomalies = tokio::spawn(crate::monitor::anomaly::run(
        handle.clone(),
        handle.shared.events.subscribe(),
    ));
    let notifier = crate::notify::spawn(
        crate::notify::Context {
            config: config.clone(),
            store: store.clone(),
            secrets,
            shutdown: stopping.clone(),
        },
        &handle.shared.events,
    );
    let last_writes = store.clone();
    let scheduler = tokio::spawn(
        scheduler::Scheduler::new(handle.clone(), store, parts.commands)
            .with_address(
                config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{bound}")),
            )
            .run(),
    );
    let api = tokio::spawn(crate::api::serve(
        listener,
        handle.clone(),
        metrics_registry,
    ));
    let watch = tokio::spawn(git_watch::run(handle.clone()));
    let cron = tokio::spawn(cron::run(handle.clone()));
    // A remote's history is what it held when the daemon announced itself (at most 5 s late).
    git_watch::first_look(&handle, std::time::Duration::from_secs(5)).await;
    write_addr_file(&state_dir, bound);
    tracing::info!(addr = %bound, state_dir = %state_dir.display(),
        repos = handle.shared.config.repos.len(), "agent daemon listening");

    Ok(Daemon {
        handle,
        addr: bound,
        state_dir,
        shutdown: parts.shutdown,
        scheduler,
        api,
        others: vec![
            ("git watcher", watch),
            ("cron", cron),
            ("metrics", metrics),
            ("anomaly detection", anomalies),
        ],
        notifier,
        last_writes,
        _lock: lock,
    })
}

impl Daemon {
    /// The daemon's handle (commands to the scheduler, the store, the bus).
    #[cfg(test)]
    pub(crate) fn handle(&self) -> &DaemonHandle {
        &self.handle
    }

    /// The address the API listens on.
    #[cfg(test)]
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops the daemon: no new runs are started, running steps get
    /// `limits.shutdown_grace` (ended at once when `hurry` resolves), then every part stops
    /// in order and the store's last writes are committed.
    pub(crate) async fn stop(self, hurry: impl Future<Output = ()> + Send + 'static) {
        let Daemon {
            handle,
            state_dir,
            shutdown,
            scheduler,
            api,
            others,
            notifier,
            last_writes,
            _lock,
            ..
        } = self;
        tracing::info!("shutting down: no new runs are started");
        let _ = shutdown.send(true);
        let hurry_handle = handle.clone();
        let hurry = tokio::spawn(async move {
            hurry.await;
            tracing::info!("second stop request: cancelling running runs now");
            hurry_handle.send(DaemonCommand::Shutdown).await;
        });
        if let Err(err) = scheduler.await {
            tracing::error!(error = %err, "scheduler stopped abnormally");
        }
        for (name, task) in others {
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
        // Every write sent so far is committed once this one has run (the writer keeps order).
        if let Err(err) = last_writes.write(|_| Ok(())).await {
            tracing::warn!(error = %err, "the store's writer stopped before the daemon");
        }
        drop(last_writes);
        drop(handle);
        let _ = std::fs::remove_file(crate::state_dir::addr_file(&state_dir));
        tracing::info!("agent daemon stopped");
    }
}

/// The libgit2 network timeouts last set in this process.
static GIT_TIMEOUTS: Mutex<Option<Duration>> = Mutex::new(None);

/// Applies `limits.fetch_timeout` to libgit2 (process-wide globals) when it differs from
/// what this process set last: once for the binary, and again only for an in-process daemon
/// booted with another value.
fn set_git_timeouts(timeout: Duration) -> Result<(), crate::daemon::MirrorError> {
    let mut last = GIT_TIMEOUTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *last != Some(timeout) {
        crate::daemon::run::mirror::set_network_timeouts(timeout)?;
        *last = Some(timeout);
    }
    Ok(())
}

/// Process-wide setup `agent daemon` does before its runtime (or any other thread) starts:
/// the workspaces fence and the libgit2 timeouts (plain globals), then the child subreaper
/// (which starts a thread).
pub(crate) fn prepare_process(config: &Config) -> Result<(), DaemonStartError> {
    fence_workspaces(config);
    set_git_timeouts(config.limits.fetch_timeout)?;
    // Orphans a step leaves behind are re-parented to the daemon instead of init: they stay
    // in its tree, are reaped, and the sweep at a run's end only looks at the daemon's own
    // descendants instead of every process on the machine.
    if let Err(err) = runners::become_subreaper() {
        tracing::warn!(error = %err, "cannot become a child subreaper; processes a step left behind with setsid may outlive the run");
    }
    Ok(())
}

/// Workspaces hold no `.git`; with the state directory inside a repository (the embedded
/// defaults put it in `./.agent/`), a step running `git` in its workspace would find that
/// repository above it and act on it. `GIT_CEILING_DIRECTORIES`, which every step gets
/// (it is in the minimal step environment, `engine::step_env`), stops git's search at the
/// workspaces directory. Changes the environment: only before other threads exist.
fn fence_workspaces(config: &Config) {
    let Ok(state_dir) = absolute(&config.state_dir) else {
        return;
    };
    let fence = crate::state_dir::workspaces_dir(&state_dir);
    let value = match std::env::var_os("GIT_CEILING_DIRECTORIES") {
        Some(old) if !old.is_empty() => {
            let mut v = fence.into_os_string();
            v.push(":");
            v.push(old);
            v
        }
        _ => fence.into_os_string(),
    };
    // SAFETY: called before the runtime (or any other thread) starts.
    unsafe {
        std::env::set_var("GIT_CEILING_DIRECTORIES", value);
    }
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
    let workspaces = crate::state_dir::workspaces_dir(state_dir);
    std::fs::create_dir_all(&workspaces)?;
    std::fs::set_permissions(&workspaces, std::fs::Permissions::from_mode(0o711))?;
    for entry in std::fs::read_dir(state_dir)? {
        let entry = entry?;
        if entry.file_name() == crate::state_dir::WORKSPACES_DIR {
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
    let tmp = crate::state_dir::addr_tmp_file(state_dir);
    let written = std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, crate::state_dir::addr_file(state_dir)));
    if let Err(err) = written {
        tracing::warn!(error = %err, "cannot write the address file");
    }
}

/// Workspaces left by runs that ended while the daemon was down (or by a crash) go, except
/// failed runs' workspaces when `keep_failed_workspaces` is on.
/// How long the first connection to PostgreSQL is retried at boot before the daemon gives up.
const FIRST_CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Opens the configured store (blocking): the SQLite file under `state_dir`, or the
/// PostgreSQL database whose URL `store.url_env` holds, with the read pool's size. The
/// first connection to PostgreSQL is retried with backoff for [`FIRST_CONNECT_PATIENCE`]
/// while it fails for a transient reason (server down, starting up, unreachable); the URL
/// is never logged.
fn open_store(
    config: &Config,
    state_dir: &std::path::Path,
) -> Result<(Db, Option<usize>), StoreError> {
    let pool = match &config.store {
        crate::config::StoreConfig::Sqlite => return Ok((Db::open_in_dir(state_dir)?, None)),
        crate::config::StoreConfig::Postgres { pool, .. } => *pool,
    };
    let url = match config.store.postgres_url() {
        Some(Ok(url)) => url,
        Some(Err(message)) => {
            return Err(StoreError::Backend {
                message,
                transient: false,
            });
        }
        None => return Ok((Db::open_in_dir(state_dir)?, None)),
    };
    let deadline = std::time::Instant::now() + FIRST_CONNECT_PATIENCE;
    let mut pause = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match Db::connect_postgres(&url) {
            Ok(db) => {
                if tries > 1 {
                    tracing::info!(tries, "connected to the PostgreSQL store");
                }
                return Ok((db, Some(pool)));
            }
            Err(err) if err.is_transient() && std::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, tries, retry_in = ?pause,
                    "cannot connect to the PostgreSQL store (`store.url_env`); retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                tracing::error!(error = %err, tries, "cannot connect to the PostgreSQL store; giving up");
                return Err(err);
            }
        }
    }
}

fn remove_stale_workspaces(store: &Db, config: &Config) {
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
mod api_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that cannot start exits with the failure code of the exit-code table.
    #[test]
    fn a_start_error_is_a_failure() {
        use crate::errors::CommandError;
        let err = DaemonStartError::RunAs {
            user: "x".into(),
            why: "y".into(),
        };
        assert_eq!(err.exit_code(), crate::errors::EXIT_FAILED);
    }

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
        let addr_file = crate::state_dir::addr_file(&dir.path().join("state"));
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
