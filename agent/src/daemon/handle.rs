//! The contract between the daemon's parts: how the git watchers, cron, the inbound hooks and
//! the HTTP API talk to the scheduler actor, and what they may read directly.
//!
//! The scheduler ([`crate::daemon::scheduler`]) is the one owner of the queue and of run states
//! (others send it messages). Everybody else holds a cheap [`DaemonHandle`]:
//!
//! - **Triggers and cron** decide *what* to run and write it through the store's deduping
//!   writes through the store handle ([`Db::record_push`](crate::store::Db::record_push),
//!   [`Db::enqueue_scheduled_run`](crate::store::Db::enqueue_scheduled_run)), each with
//!   a dedup key, the commit to check out, the concurrency group and the overlap rule (the
//!   store decides `concurrency.overlap` in the transaction that queues), then call
//!   [`DaemonHandle::wake`] so the scheduler looks at the queue at once (it also looks every
//!   few seconds on its own) and cancels the runs a `cancel_previous` replaced.
//! - **The API** sends [`DaemonCommand::Enqueue`] (manual runs: the scheduler resolves the
//!   commit and checks the parameters against the workflow; the store decides the overlap),
//!   [`DaemonCommand::Cancel`] and [`DaemonCommand::Retry`]; it reads runs through
//!   the [`Store`](crate::store::Store) handle in [`Shared::store`], step logs from
//!   [`crate::state_dir::step_log_path`], and live events from [`Shared::events`].
//! - **Inbound push hooks** send [`DaemonCommand::FetchNow`]; the git watcher of that
//!   repository subscribes with [`Shared::fetch_requests`].
//!
//! Long-running parts stop when [`DaemonHandle::shutdown_requested`] resolves.
//!
//! The composition root (`crate::server`) starts the scheduler, the git watcher
//! (`triggers::git_watch::run(handle)`) and cron (`triggers::cron::run(handle)`), which
//! return after `handle.shutdown_requested()`, next to the API, the notifier and the monitor.
//! The handle carries commands and shared read-only state; metrics live in
//! `crate::monitor`, fed by the bus.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::bus::Shutdown;

use crate::config::Config;
use crate::engine::Engine;
use crate::store::{RunId, RunStatus, StoreError, TriggerKind};

/// Why the scheduler refused a command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    /// No configured repository has this name.
    #[error("unknown repository `{0}`")]
    UnknownRepo(String),
    /// No workflow of this name in the repository at the commit looked at.
    #[error("unknown workflow `{workflow}` in repository `{repo}`")]
    UnknownWorkflow {
        /// The workflow asked for.
        workflow: String,
        /// The repository searched.
        repo: String,
    },
    /// The workflow file does not load (its rendered diagnostics).
    #[error("workflow `{workflow}` is invalid:\n{diagnostics}")]
    InvalidWorkflow {
        /// The workflow's name (or file stem).
        workflow: String,
        /// Rendered diagnostics.
        diagnostics: String,
    },
    /// Parameters that do not fit the workflow's declarations (API: 422).
    #[error("invalid parameters: {}", .0.join("; "))]
    InvalidParameters(Vec<String>),
    /// No such run.
    #[error("run {0} not found")]
    RunNotFound(RunId),
    /// The run is in a state where the command makes no sense (API: 409).
    #[error("run {run} is {status}: {why}")]
    WrongState {
        /// The run.
        run: RunId,
        /// Its status.
        status: RunStatus,
        /// What was expected.
        why: &'static str,
    },
    /// `concurrency.overlap: skip` and a run of the same group is active: nothing was queued.
    #[error("skipped: run {0} of the same concurrency group is still active")]
    Skipped(RunId),
    /// The workflow says `on.manual: false`: it may not be triggered by hand (API: 403).
    #[error("workflow `{0}` has `on.manual: false`: it cannot be triggered by hand")]
    ManualDisabled(String),
    /// A git problem (mirror missing, commit unknown, ...).
    #[error("git: {0}")]
    Git(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The daemon is shutting down and admits nothing new.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// A run asked for by the API (or anyone else who wants the scheduler to check it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewRunRequest {
    /// The workflow's `name:`.
    pub workflow: String,
    /// The repository; `None` means the only one configured (an error when there are several).
    pub repo: Option<String>,
    /// Parameter values as given (JSON); checked and converted against the workflow.
    pub parameters: serde_json::Map<String, Value>,
    /// What asked for it (`manual` from the API, `webhook`, ...).
    pub trigger: TriggerKind,
    /// The commit to run; `None` means the head of the repository's default branch now.
    pub commit: Option<String>,
    /// The branch, if known (defaults to the repository's default branch).
    pub branch: Option<String>,
}

impl NewRunRequest {}

/// A message to the scheduler actor.
#[derive(Debug)]
pub(crate) enum DaemonCommand {
    /// Queue a run after checking it; answers its id.
    Enqueue(
        Box<NewRunRequest>,
        oneshot::Sender<Result<RunId, DaemonError>>,
    ),
    /// Cancel a queued or running run.
    Cancel(RunId, oneshot::Sender<Result<(), DaemonError>>),
    /// Queue a new run that retries a failed, cancelled or interrupted one from its first
    /// unfinished step (an interrupted run is resumed in place, keeping its id).
    Retry(RunId, oneshot::Sender<Result<RunId, DaemonError>>),
    /// The store's queue changed (a push or cron run was written): look now.
    Wake,
    /// Fetch this repository now (an inbound push hook); forwarded on
    /// [`Shared::fetch_requests`].
    FetchNow(String),
    /// Queue the runs of a pull request (an inbound `pull_request` hook) of the repository
    /// of this name; answers the runs newly queued (none when its head was queued before).
    PullRequest(
        Box<(String, crate::store::PullRequestEvent)>,
        oneshot::Sender<Result<Vec<RunId>, DaemonError>>,
    ),
    /// Stop admitting runs, let running steps finish within the grace period, then cancel.
    Shutdown,
}

pub(crate) use crate::model::event::DaemonEvent;

/// What the daemon knows of one workflow of a repository (for `GET /api/v1/workflows`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkflowInfo {
    /// The workflow's `name:` (the file stem when the file is invalid).
    pub name: String,
    /// Its path in the repository.
    pub file: String,
    /// Its `on:` section as JSON (`push`, `schedule`, `manual`), or null.
    pub triggers: Value,
    /// The next cron fire time, if it has schedules.
    pub next_fire: Option<DateTime<Utc>>,
    /// The file's diagnostics when it does not load.
    pub error: Option<String>,
    /// The declared parameters, `[{name, type, required, default, enum, description}]`
    /// (empty for an invalid file); the dashboard's trigger form is built from them.
    pub parameters: Vec<Value>,
}

/// Runtime information about one configured repository (kept by the git watcher and cron).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RepoInfo {
    /// The default branch, once known.
    pub default_branch: Option<String>,
    /// The head of the default branch last looked at.
    pub head: Option<String>,
    /// The workflows at that head.
    pub workflows: Vec<WorkflowInfo>,
}

/// Per-repository runtime info, internally synchronised: written by the watchers and cron,
/// read by the API. Holds plain data only; never hold the lock across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct RepoRegistry {
    inner: RwLock<BTreeMap<String, RepoInfo>>,
    workflows_changed: tokio::sync::Notify,
}

impl RepoRegistry {
    /// Pinged (`notify_one`) by the git watcher when a repository's default-branch head or
    /// workflows changed; cron waits on it to re-read the schedules.
    pub(crate) fn workflows_changed(&self) -> &tokio::sync::Notify {
        &self.workflows_changed
    }

    /// A snapshot of every repository's info, by name.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, RepoInfo> {
        match self.inner.read() {
            Ok(map) => map.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// One repository's info.
    #[cfg(test)]
    pub(crate) fn get(&self, repo: &str) -> Option<RepoInfo> {
        match self.inner.read() {
            Ok(map) => map.get(repo).cloned(),
            Err(poisoned) => poisoned.into_inner().get(repo).cloned(),
        }
    }

    /// Changes one repository's info in place (created empty if absent).
    pub(crate) fn update(&self, repo: &str, f: impl FnOnce(&mut RepoInfo)) {
        let mut map = match self.inner.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(map.entry(repo.to_string()).or_default());
    }
}

/// State every part may read: set at boot, or internally synchronised.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The parsed daemon config.
    pub config: Arc<Config>,
    /// The state directory (absolute).
    pub state_dir: PathBuf,
    /// The store (a cloneable handle; nothing else opens the database).
    pub store: crate::store::Store,
    /// The one engine of the process (admission across all runs).
    pub engine: Arc<Engine>,
    /// Run and step lifecycle events (lossless: `events.subscribe()`, or the lossy
    /// `events.watch()` for live viewers) and step output (`events.logs()`, lossy).
    pub events: crate::bus::Bus,
    /// Per-repository runtime info (workflows, next cron fire).
    pub repos: RepoRegistry,
    /// Repository names whose fetch was asked for by an inbound hook (`FetchNow`).
    pub fetch_requests: broadcast::Sender<String>,
    /// Secret values by name (from the config's env variables and files), for masking.
    pub secrets: indexmap::IndexMap<String, String>,
    /// Whether run records are being written (`GET /health`).
    pub store_health: crate::daemon::store_health::StoreHealth,
    /// Copies step logs into the store when it is shared (PostgreSQL); `None` on SQLite.
    pub log_shipper: Option<crate::daemon::run::log_ship::LogShipper>,
    shutdown: Shutdown,
}

/// Cheap to clone; how the watchers, cron and the API talk to the scheduler actor.
#[derive(Debug, Clone)]
pub(crate) struct DaemonHandle {
    tx: mpsc::Sender<DaemonCommand>,
    /// What everybody may read.
    pub shared: Arc<Shared>,
}

/// The daemon-side ends made with a handle: the scheduler's inbox and the shutdown switch.
#[derive(Debug)]
pub(crate) struct HandleParts {
    /// The scheduler's inbox.
    pub commands: mpsc::Receiver<DaemonCommand>,
    /// Set to true to begin shutdown (every `shutdown_requested()` resolves).
    pub shutdown: watch::Sender<bool>,
}

impl DaemonHandle {
    /// The workflow a run executed: its recorded file (or, for runs that recorded none, the
    /// workflow of its name) at its commit, read from the repository's mirror. Blocking (git
    /// reads). `None` when the run has no repository or commit, the mirror or the commit is
    /// gone, or the file is not a valid workflow there.
    pub(crate) fn workflow_of_run(
        &self,
        record: &crate::store::RunRecord,
    ) -> Option<dsl::Workflow> {
        use crate::daemon::catalog::{Catalog, ParsedFile};
        let repo = record.repo.as_deref()?;
        let commit = git2::Oid::from_str(record.trigger.commit.as_deref()?).ok()?;
        let mirror = crate::daemon::run::mirror::Mirror::open(&self.shared.state_dir, repo).ok()?;
        let catalog = Catalog::at(&mirror, commit).ok()?;
        match record.workflow_file.as_deref() {
            Some(file) => match catalog.by_file(file)? {
                ParsedFile::Valid { workflow, .. } => Some((**workflow).clone()),
                ParsedFile::Invalid { .. } => None,
            },
            None => catalog.by_name(&record.workflow).map(|(_, w)| w.clone()),
        }
    }

    /// Builds a handle and the ends the daemon keeps.
    pub(crate) fn new(
        config: impl Into<Arc<Config>>,
        state_dir: PathBuf,
        store: crate::store::Store,
        engine: Arc<Engine>,
        secrets: indexmap::IndexMap<String, String>,
    ) -> (DaemonHandle, HandleParts) {
        let (tx, commands) = mpsc::channel(1024);
        let events = crate::bus::Bus::new();
        let (fetch_requests, _) = broadcast::channel(64);
        let (shutdown_tx, shutdown) = Shutdown::pair();
        let log_shipper = crate::daemon::run::log_ship::LogShipper::for_store(&store);
        let shared = Shared {
            config: config.into(),
            state_dir,
            store,
            engine,
            events,
            repos: RepoRegistry::default(),
            fetch_requests,
            secrets,
            store_health: Default::default(),
            log_shipper,
            shutdown,
        };
        (
            DaemonHandle {
                tx,
                shared: Arc::new(shared),
            },
            HandleParts {
                commands,
                shutdown: shutdown_tx,
            },
        )
    }

    /// Sends a command; false when the scheduler is gone (the daemon is stopping).
    pub(crate) async fn send(&self, command: DaemonCommand) -> bool {
        self.tx.send(command).await.is_ok()
    }

    /// Queues a run through the scheduler (checked, overlap applied); answers its id.
    pub(crate) async fn enqueue(&self, request: NewRunRequest) -> Result<RunId, DaemonError> {
        let (tx, rx) = oneshot::channel();
        if !self
            .send(DaemonCommand::Enqueue(Box::new(request), tx))
            .await
        {
            return Err(DaemonError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(DaemonError::ShuttingDown))
    }

    /// Queues the runs of a pull request of repository `repo` (see
    /// [`crate::daemon::triggers::pull_request`]); answers the runs newly queued.
    pub(crate) async fn pull_request(
        &self,
        repo: &str,
        pr: crate::store::PullRequestEvent,
    ) -> Result<Vec<RunId>, DaemonError> {
        let (tx, rx) = oneshot::channel();
        let request = Box::new((repo.to_string(), pr));
        if !self.send(DaemonCommand::PullRequest(request, tx)).await {
            return Err(DaemonError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(DaemonError::ShuttingDown))
    }

    /// Cancels a queued or running run.
    pub(crate) async fn cancel(&self, run: RunId) -> Result<(), DaemonError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DaemonCommand::Cancel(run, tx)).await {
            return Err(DaemonError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(DaemonError::ShuttingDown))
    }

    /// Retries a failed, cancelled or interrupted run; answers the id of the run that will
    /// carry on (the same id for an interrupted run that is resumed).
    pub(crate) async fn retry(&self, run: RunId) -> Result<RunId, DaemonError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(DaemonCommand::Retry(run, tx)).await {
            return Err(DaemonError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(DaemonError::ShuttingDown))
    }

    /// Tells the scheduler the queue changed (never blocks; a full inbox already means it
    /// will look soon).
    pub(crate) fn wake(&self) {
        let _ = self.tx.try_send(DaemonCommand::Wake);
    }

    /// Asks the watcher of `repo` to fetch now (inbound push hook).
    pub(crate) fn fetch_now(&self, repo: &str) {
        let _ = self.shared.fetch_requests.send(repo.to_string());
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub(crate) async fn shutdown_requested(&self) {
        self.shared.shutdown.requested().await;
    }

    /// True once shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_requested()
    }

    /// The shutdown token, for parts that need nothing else of the handle.
    pub(crate) fn shutdown(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    /// Publishes an event (dropped when nobody listens).
    pub(crate) fn emit(&self, event: DaemonEvent) {
        self.shared.events.send(event);
    }
}
