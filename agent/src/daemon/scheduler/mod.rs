//! The scheduler actor: the one owner of the queue and of run states (others send it messages).
//!
//! It claims queued runs from the store (FIFO within a concurrency group, then
//! `metadata.priority`, then age: the store's claim order) up to
//! `limits.max_concurrent_runs`, marks them running and starts a [`run_task`] for each; the
//! engine's admission then shares CPU and memory across all runs' steps. It answers the
//! [`DaemonCommand`]s of the API, the watchers and cron: manual runs are checked here
//! (repository, commit, workflow at that commit, parameters) before they are queued; cancels;
//! retries. `concurrency.overlap` (`skip`, `queue`, `cancel_previous`) is not applied here:
//! the store decides it in the transaction that queues each run, whoever queues it
//! ([`crate::store::overlap`]), and marks the runs `cancel_previous` ends; this actor cancels
//! those. It looks at the queue when woken and every few seconds in any case (runs written
//! straight to the store by triggers and cron), and prunes finished runs and their logs by
//! the retention policy once an hour ([`retention`]).
//!
//! Shutdown: no run is claimed any more; running runs get `limits.shutdown_grace` to finish
//! (a second [`DaemonCommand::Shutdown`] ends it at once), then are cancelled and abandoned: their end is not written, so the next boot finds them
//! running, marks them interrupted and resumes them (see [`super::recovery`]).

pub(crate) mod recovery;
pub(crate) mod retention;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::daemon::handle::{
    DaemonCommand, DaemonError, DaemonEvent, DaemonHandle, NewRunRequest, Shared,
};
use crate::daemon::run::task::{self, RunControl, RunEnded};
use crate::daemon::triggers::manual;
use crate::store::overlap;
use crate::store::{NewRun, RunFinish, RunId, RunRecord, RunStatus, Store, Trigger, TriggerKind};

/// How often the queue is looked at without being woken (a safety net: whoever writes runs
/// into the store wakes the scheduler).
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// After the grace period and the cancel, how long runs may take to end before the daemon
/// stops anyway (the engine kills step groups after its own grace).
const CANCEL_WAIT: Duration = Duration::from_secs(15);

/// A run being run.
struct Active {
    control: RunControl,
    workflow: String,
}

/// A manual run, checked, back from its blocking check.
struct Checked {
    run: NewRun,
    /// The summary line of the run's commit message, shown in run listings.
    message: Option<String>,
    reply: oneshot::Sender<Result<RunId, DaemonError>>,
}

/// The actor's state.
pub(crate) struct Scheduler {
    handle: DaemonHandle,
    store: Store,
    commands: mpsc::Receiver<DaemonCommand>,
    active: HashMap<RunId, Active>,
    done_tx: mpsc::UnboundedSender<RunEnded>,
    done_rx: mpsc::UnboundedReceiver<RunEnded>,
    checked_tx: mpsc::UnboundedSender<Checked>,
    checked_rx: mpsc::UnboundedReceiver<Checked>,
    admitting: bool,
    /// The highest run id looked at for announcing runs queued by others.
    seen: RunId,
    /// Runs queued here (already announced), not yet passed by `seen`.
    announced: std::collections::HashSet<RunId>,
    /// Active runs asked to cancel because a newer run of their group replaces them.
    cancelling: std::collections::HashSet<RunId>,
    /// Look for runs queued by others before the next claim.
    scan: bool,
    /// Shutdown: stop waiting for running runs.
    hurry: bool,
    /// When this daemon started (its node row's `started_at`).
    started_at: chrono::DateTime<chrono::Utc>,
    /// The API's address, shown in `agent nodes`.
    address: Option<String>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("active", &self.active.len())
            .field("admitting", &self.admitting)
            .finish()
    }
}

impl Scheduler {
    /// The scheduler on the store handle and the daemon handle's inbox.
    pub(crate) fn new(
        handle: DaemonHandle,
        store: Store,
        commands: mpsc::Receiver<DaemonCommand>,
    ) -> Scheduler {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (checked_tx, checked_rx) = mpsc::unbounded_channel();
        Scheduler {
            handle,
            store,
            commands,
            active: HashMap::new(),
            done_tx,
            done_rx,
            checked_tx,
            checked_rx,
            admitting: true,
            seen: RunId(0),
            announced: Default::default(),
            cancelling: Default::default(),
            scan: true,
            hurry: false,
            started_at: chrono::Utc::now(),
            address: None,
        }
    }

    /// Names the API's address in the node's row.
    pub(crate) fn with_address(mut self, address: String) -> Scheduler {
        self.address = Some(address);
        self
    }

    /// This daemon's name on the claims it takes: its node name (config `node`).
    fn owner(&self) -> String {
        self.shared().config.node.clone()
    }

    /// How long its claims hold without a heartbeat (`limits.lease`).
    fn lease(&self) -> Duration {
        self.shared().config.limits.lease
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Runs until shutdown has begun and every run has ended or been abandoned.
    pub(crate) async fn run(mut self) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut retention = retention::timer();
        let mut heartbeat = heartbeat_timer(self.shared().config.limits.heartbeat);
        let shutdown_handle = self.handle.clone();
        let shutdown = shutdown_handle.shutdown_requested();
        tokio::pin!(shutdown);
        // Runs queued before this start are not announced again.
        self.seen = self
            .store
            .list_runs(crate::store::RunFilter::default(), 1)
            .await
            .ok()
            .and_then(|r| r.first().map(|r| r.id))
            .unwrap_or(RunId(0));
        loop {
            if std::mem::take(&mut self.scan) {
                self.look_at_new_runs().await;
            }
            self.fill().await;
            tokio::select! {
                _ = &mut shutdown => break,
                cmd = self.commands.recv() => match cmd {
                    Some(DaemonCommand::Shutdown) | None => break,
                    Some(cmd) => self.command(cmd).await,
                },
                Some(ended) = self.done_rx.recv() => {
                    self.active.remove(&ended.run);
                    self.cancelling.remove(&ended.run);
                }
                Some(checked) = self.checked_rx.recv() => self.enqueue_checked(checked).await,
                _ = poll.tick() => self.scan = true,
                _ = heartbeat.tick() => self.heartbeat(true).await,
                _ = retention.tick() => self.prune().await,
            }
        }
        self.shut_down().await;
    }

    /// The node's heartbeat (every `limits.heartbeat`): writes its row and renews the lease
    /// on every active run in one transaction; cancels the runs whose cancellation was
    /// requested (on any node), and stops without writing their end the runs it lost (its
    /// lease lapsed while it could not reach the database and another node took them back).
    /// Then, with `reclaim`, takes back the runs of other nodes whose lease lapsed and
    /// applies the recovery rules to them. While the heartbeat fails, `/health` says so.
    async fn heartbeat(&mut self, reclaim: bool) {
        let held: Vec<RunId> = self.active.keys().copied().collect();
        let config = &self.shared().config;
        let beat = crate::store::NodeBeat {
            name: self.owner(),
            started_at: self.started_at,
            lease: config.limits.lease,
            capacity: config.limits.max_concurrent_runs,
            address: self.address.clone(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        };
        let answer = self
            .store
            .write(move |db| db.heartbeat_node(&beat, &held, chrono::Utc::now()))
            .await;
        let answer = match answer {
            Ok(answer) => {
                self.shared().store_health.heartbeat_failed(None);
                answer
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot write the node's heartbeat (run leases not renewed)");
                self.shared()
                    .store_health
                    .heartbeat_failed(Some(err.to_string()));
                return;
            }
        };
        for id in answer.lost {
            // A run that just ended here (its end written, its task not yet reported) is
            // not held any more either: only a run taken by another node is stopped.
            let ended_here = matches!(
                self.store.get_run(id).await,
                Ok(Some(run)) if run.status.is_final()
                    || run.claim_owner.as_deref() == Some(self.owner().as_str())
            );
            if !ended_here {
                self.abandon(id, "another node took the run back: its lease lapsed");
            }
        }
        // Runs already being cancelled (`cancel_previous`) are not asked again.
        for id in answer.cancel {
            if !self.cancelling.contains(&id) {
                let _ = self.cancel(id, "cancelled by request").await;
            }
        }
        if reclaim && self.admitting {
            self.reclaim_lapsed().await;
        }
    }

    /// Stops a run here without writing its end: it belongs to another node now.
    fn abandon(&mut self, id: RunId, why: &str) {
        if let Some(active) = self.active.get(&id) {
            tracing::warn!(run = %id, workflow = %active.workflow, "{why}; stopping it here");
            active
                .control
                .lost
                .store(true, std::sync::atomic::Ordering::SeqCst);
            active
                .control
                .abandon
                .store(true, std::sync::atomic::Ordering::SeqCst);
            active.control.cancel.request();
        }
    }

    /// Takes back the runs of other nodes whose lease lapsed (a node killed or cut off) and
    /// resumes them by the recovery rules; their processes ran elsewhere and are left alone.
    async fn reclaim_lapsed(&mut self) {
        let state_dir = self.shared().state_dir.clone();
        let now = chrono::Utc::now();
        let recovered = self
            .store
            .write(move |db| recovery::recover_with(db, &state_dir, recovery::Reclaim::Lapsed(now)))
            .await;
        match recovered {
            Ok(recovered) => {
                for (run, what) in recovered {
                    // Only if this node's own lease lapsed too (the heartbeat above failed
                    // to reach the database for that long).
                    self.abandon(run.id, "this node's lease on the run lapsed");
                    if what == recovery::Recovered::Resumed {
                        self.scan = true;
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot take back the runs of lost nodes"),
        }
    }

    /// Claims and starts queued runs while there is room.
    async fn fill(&mut self) {
        if !self.admitting {
            return;
        }
        let max = self.shared().config.limits.max_concurrent_runs.max(1);
        while self.active.len() < max {
            let free = max - self.active.len();
            let claimed = self.store.claim(self.owner(), free, self.lease()).await;
            let claimed = match claimed {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(error = %err, "cannot claim queued runs");
                    return;
                }
            };
            if claimed.is_empty() {
                return;
            }
            for run in claimed {
                self.start(run).await;
            }
        }
    }

    async fn start(&mut self, run: RunRecord) {
        let id = run.id;
        let record = match self.store.mark_running(id).await {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(run = %id, error = %err, "cannot mark the run running");
                let _ = self.store.release_claim(id).await;
                return;
            }
        };
        tracing::info!(run = %id, workflow = %record.workflow, "run started");
        let control = RunControl::default();
        self.active.insert(
            id,
            Active {
                control: control.clone(),
                workflow: record.workflow.clone(),
            },
        );
        tokio::spawn(task::run(
            self.shared().clone(),
            record,
            control,
            self.done_tx.clone(),
        ));
    }

    async fn command(&mut self, cmd: DaemonCommand) {
        match cmd {
            DaemonCommand::Enqueue(request, reply) => self.check(*request, reply),
            DaemonCommand::Cancel(id, reply) => {
                let _ = reply.send(self.cancel(id, "cancelled by request").await);
            }
            DaemonCommand::Retry(id, reply) => {
                let _ = reply.send(self.retry(id).await);
            }
            DaemonCommand::Wake => self.scan = true,
            DaemonCommand::FetchNow(repo) => self.handle.fetch_now(&repo),
            DaemonCommand::PullRequest(request, reply) => self.pull_request(*request, reply),
            DaemonCommand::Shutdown => {}
        }
    }

    /// Queues a pull request's runs on a blocking thread (git fetch and reads); the answer
    /// goes straight back to the hook, and the scheduler is woken when runs were queued.
    fn pull_request(
        &mut self,
        (repo, pr): (String, crate::store::PullRequestEvent),
        reply: oneshot::Sender<Result<Vec<RunId>, DaemonError>>,
    ) {
        if !self.admitting {
            let _ = reply.send(Err(DaemonError::ShuttingDown));
            return;
        }
        let shared = self.shared().clone();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let queued = tokio::task::spawn_blocking(move || {
                let config = shared
                    .config
                    .repo(&repo)
                    .ok_or_else(|| DaemonError::UnknownRepo(repo.clone()))?;
                crate::daemon::triggers::pull_request::queue_pull_request(&shared, config, &pr)
                    .map(|scan| scan.queued)
                    .map_err(|e| DaemonError::Git(e.to_string()))
            })
            .await
            .unwrap_or_else(|join| Err(DaemonError::Git(format!("internal error: {join}"))));
            if queued.as_ref().is_ok_and(|q| !q.is_empty()) {
                handle.wake();
            }
            let _ = reply.send(queued);
        });
    }

    /// Checks a manual run on a blocking thread (git reads); the result comes back through
    /// `checked_rx`.
    fn check(
        &mut self,
        request: NewRunRequest,
        reply: oneshot::Sender<Result<RunId, DaemonError>>,
    ) {
        if !self.admitting {
            let _ = reply.send(Err(DaemonError::ShuttingDown));
            return;
        }
        let shared = self.shared().clone();
        let back = self.checked_tx.clone();
        tokio::spawn(async move {
            let checked = tokio::task::spawn_blocking(move || {
                let run = manual::check_request(&shared, &request)?;
                let message = commit_message(&shared, &run);
                Ok((run, message))
            })
            .await
            .unwrap_or_else(|e| Err(DaemonError::Git(format!("internal error: {e}"))));
            match checked {
                Ok((run, message)) => {
                    let _ = back.send(Checked {
                        run,
                        message,
                        reply,
                    });
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            }
        });
    }

    async fn enqueue_checked(&mut self, checked: Checked) {
        let Checked {
            run,
            message,
            reply,
        } = checked;
        let queued = self.enqueue(run).await;
        if let (Ok(id), Some(message)) = (&queued, message) {
            let id = *id;
            // Only the listing misses a message that cannot be written.
            if let Err(err) = self
                .store
                .write(move |db| db.set_commit_message(&[id], &message))
                .await
            {
                tracing::warn!(run = %id, error = %err, "cannot record the commit message");
            }
        }
        let _ = reply.send(queued);
    }

    /// Queues a checked run; the store decides its overlap rule in the same transaction.
    async fn enqueue(&mut self, run: NewRun) -> Result<RunId, DaemonError> {
        if !self.admitting {
            return Err(DaemonError::ShuttingDown);
        }
        let workflow = run.workflow.clone();
        let id = match self.store.enqueue(run).await? {
            overlap::Admission::Skipped { active } => return Err(DaemonError::Skipped(active)),
            overlap::Admission::Queued { run, cancel } => {
                for other in cancel {
                    self.cancel_replaced(other).await;
                }
                run.run_id()
            }
        };
        self.announced.insert(id);
        self.handle.emit(DaemonEvent::RunQueued {
            run_id: id,
            workflow: workflow.as_str().into(),
        });
        Ok(id)
    }

    /// Announces every run queued by others (pushes, cron) since the last look, and cancels
    /// the runs whose cancellation the store recorded (`cancel_previous` of a newer run of
    /// their group, decided when that run was queued).
    async fn look_at_new_runs(&mut self) {
        if !self.admitting {
            return;
        }
        match self.store.cancel_requested_runs().await {
            Ok(ids) => {
                for id in ids {
                    if !self.cancelling.contains(&id) {
                        self.cancel_replaced(id).await;
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the runs to cancel"),
        }
        let filter = crate::store::RunFilter {
            status: Some(RunStatus::Queued),
            ..Default::default()
        };
        let queued = match self.store.list_runs(filter, 1000).await {
            Ok(q) => q,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list queued runs");
                return;
            }
        };
        let seen = self.seen;
        let mut new: Vec<RunRecord> = queued.into_iter().filter(|r| r.id > seen).collect();
        new.sort_by_key(|r| r.id);
        for run in new {
            self.seen = self.seen.max(run.id);
            if self.announced.remove(&run.id) {
                continue;
            }
            self.handle.emit(DaemonEvent::RunQueued {
                run_id: run.id,
                workflow: run.workflow.as_str().into(),
            });
        }
        // Ids are given in commit order: every run older than one queued here was visible
        // to the list above, so the look can move past the runs queued here.
        if let Some(max) = self.announced.drain().max() {
            self.seen = self.seen.max(max);
        }
    }

    /// Cancels a run that a newer run of its group replaces (`cancel_previous`).
    async fn cancel_replaced(&mut self, id: RunId) {
        if self.active.contains_key(&id) {
            self.cancelling.insert(id);
        }
        if let Err(err) = self
            .cancel(id, "cancelled by a newer run (cancel_previous)")
            .await
        {
            tracing::warn!(run = %id, error = %err, "cannot cancel previous run");
        }
    }

    async fn cancel(&mut self, id: RunId, why: &str) -> Result<(), DaemonError> {
        if let Some(active) = self.active.get(&id) {
            tracing::info!(run = %id, workflow = %active.workflow, "{why}");
            active.control.cancel.request();
            return Ok(());
        }
        let run = self
            .store
            .get_run(id)
            .await?
            .ok_or(DaemonError::RunNotFound(id))?;
        // Held by another node of the fleet: it cancels the run at its next heartbeat.
        if matches!(run.status, RunStatus::Queued | RunStatus::Running)
            && run.claim_owner.as_ref().is_some_and(|o| *o != self.owner())
        {
            tracing::info!(run = %id, workflow = %run.workflow, owner = ?run.claim_owner,
                "{why}: asking the node that holds the run");
            self.store.write(move |db| db.request_cancel(id)).await?;
            return Ok(());
        }
        match run.status {
            RunStatus::Queued | RunStatus::Interrupted | RunStatus::Running => {
                let report = crate::model::report::RunReport::ended_early(
                    id.to_string(),
                    run.workflow.as_str(),
                    RunStatus::Cancelled,
                    why,
                );
                let mut finish = RunFinish::new(RunStatus::Cancelled);
                finish.error = Some(why.to_string());
                finish.event = crate::model::event::EventKind::outbox_run_end(
                    !self.shared().config.webhooks.is_empty(),
                    RunStatus::Cancelled,
                );
                self.store.finish_run(id, finish).await?;
                self.handle.emit(DaemonEvent::RunFinished {
                    run_id: id,
                    workflow: run.workflow.as_str().into(),
                    status: RunStatus::Cancelled,
                    report: Arc::new(report),
                });
                Ok(())
            }
            status => Err(DaemonError::WrongState {
                run: id,
                status,
                why: "only a queued, running or interrupted run can be cancelled",
            }),
        }
    }

    async fn retry(&mut self, id: RunId) -> Result<RunId, DaemonError> {
        if !self.admitting {
            return Err(DaemonError::ShuttingDown);
        }
        let run = self
            .store
            .get_run(id)
            .await?
            .ok_or(DaemonError::RunNotFound(id))?;
        match run.status {
            RunStatus::Interrupted => {
                self.store.resume_run(id).await?;
                tracing::info!(run = %id, "interrupted run resumed by request");
                Ok(id)
            }
            RunStatus::Failed | RunStatus::Cancelled => {
                let new = NewRun {
                    workflow: run.workflow.clone(),
                    repo: run.repo.clone(),
                    trigger: Trigger {
                        kind: TriggerKind::Retry,
                        commit: run.trigger.commit.clone(),
                        branch: run.trigger.branch.clone(),
                        scheduled_for: None,
                    },
                    parameters: run.parameters.clone(),
                    priority: run.priority,
                    concurrency_group: run.concurrency_group.clone(),
                    dedup_key: None,
                    retry_of: Some(id),
                    workflow_file: run.workflow_file.clone(),
                    overlap: None,
                    // A retry of a tag or pull-request run is one too (refs, secrets rule).
                    event: run.event.clone(),
                };
                let new_id = self.store.enqueue_run(new).await?.run_id();
                self.announced.insert(new_id);
                self.handle.emit(DaemonEvent::RunQueued {
                    run_id: new_id,
                    workflow: run.workflow.as_str().into(),
                });
                Ok(new_id)
            }
            status => Err(DaemonError::WrongState {
                run: id,
                status,
                why: "only a failed, cancelled or interrupted run can be retried",
            }),
        }
    }

    async fn prune(&mut self) {
        retention::prune(&self.store, &self.handle.shared).await;
    }

    async fn shut_down(&mut self) {
        self.admitting = false;
        self.stop_runs().await;
        // A clean stop takes the node out of `agent nodes`; its abandoned runs keep their
        // claims (they resume when it restarts under the same name, or elsewhere once their
        // lease lapses).
        let name = self.owner();
        if let Err(err) = self.store.write(move |db| db.remove_node(&name)).await {
            tracing::warn!(error = %err, "cannot remove the node's row");
        }
    }

    /// Waits for running runs for the grace period, then cancels and abandons the rest.
    async fn stop_runs(&mut self) {
        let grace = self.shared().config.limits.shutdown_grace;
        if !self.active.is_empty() {
            tracing::info!(
                runs = self.active.len(),
                grace = ?grace,
                "shutting down: waiting for running runs"
            );
        }
        self.wait_active(Instant::now() + grace).await;
        if self.active.is_empty() {
            return;
        }
        tracing::info!(
            runs = self.active.len(),
            "grace period over: cancelling the runs left (they resume on the next start)"
        );
        for active in self.active.values() {
            active
                .control
                .abandon
                .store(true, std::sync::atomic::Ordering::SeqCst);
            active.control.cancel.request();
        }
        self.wait_active(Instant::now() + CANCEL_WAIT).await;
        if !self.active.is_empty() {
            for active in self.active.values() {
                active.control.cancel.kill_now();
            }
            self.wait_active(Instant::now() + Duration::from_secs(2))
                .await;
        }
    }

    /// Waits for active runs to end until `deadline` (or a second stop request), answering
    /// commands meanwhile.
    async fn wait_active(&mut self, deadline: Instant) {
        // The leases of the runs still running are renewed meanwhile.
        let mut heartbeat = heartbeat_timer(self.shared().config.limits.heartbeat);
        while !self.active.is_empty() && !std::mem::take(&mut self.hurry) {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = heartbeat.tick() => self.heartbeat(false).await,
                Some(ended) = self.done_rx.recv() => {
                    self.active.remove(&ended.run);
                }
                Some(cmd) = self.commands.recv() => self.refuse(cmd).await,
                Some(checked) = self.checked_rx.recv() => {
                    let _ = checked.reply.send(Err(DaemonError::ShuttingDown));
                }
            }
        }
    }

    /// During shutdown: cancels still work, everything new is refused.
    async fn refuse(&mut self, cmd: DaemonCommand) {
        match cmd {
            DaemonCommand::Enqueue(_, reply) => {
                let _ = reply.send(Err(DaemonError::ShuttingDown));
            }
            DaemonCommand::Retry(_, reply) => {
                let _ = reply.send(Err(DaemonError::ShuttingDown));
            }
            DaemonCommand::PullRequest(_, reply) => {
                let _ = reply.send(Err(DaemonError::ShuttingDown));
            }
            DaemonCommand::Cancel(id, reply) => {
                let _ = reply.send(self.cancel(id, "cancelled by request").await);
            }
            // A second stop request: the grace period ends now.
            DaemonCommand::Shutdown => self.hurry = true,
            DaemonCommand::Wake | DaemonCommand::FetchNow(_) => {}
        }
    }
}

/// The summary line of the message of a checked run's commit (blocking: a git read).
fn commit_message(shared: &crate::daemon::handle::Shared, run: &NewRun) -> Option<String> {
    let repo = run.repo.as_deref()?;
    let commit = git2::Oid::from_str(run.trigger.commit.as_deref()?).ok()?;
    let mirror = crate::daemon::run::mirror::Mirror::open(&shared.state_dir, repo).ok()?;
    let info = mirror.commit_info(commit).ok()?;
    Some(crate::daemon::triggers::push::commit_summary(&info.message))
}

/// A timer ticking every `period`, at once first (a node announces itself when it starts).
fn heartbeat_timer(period: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval(period.max(Duration::from_millis(10)));
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}
