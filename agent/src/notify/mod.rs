//! Outbound webhooks (the config's `webhooks`): the daemon's events turned into HTTP requests to
//! chat services, commit statuses and custom receivers, through a durable outbox.
//!
//! Flow, and who owns what:
//! 1. **Events to deliveries.** [`spawn`] subscribes to the daemon's lossless event bus
//!    ([`DaemonEvent`]) before anything runs. A router task picks the events webhooks care
//!    about and hands them to a writer on a blocking thread with its own store connection,
//!    which builds a [`Notice`] (reading the run's record for repository, branch, commit),
//!    matches it against each webhook's `events`/`workflows` filters ([`event::Filter`]),
//!    renders it ([`format::render`], secrets masked with the engine's masker) and queues it
//!    in the store's outbox, then wakes that webhook's worker. A run's end is different: the
//!    daemon's `finish_run` writes an un-rendered outbox event in the same transaction as the
//!    run's final state, so a crash cannot lose one or invent one; the writer renders it into
//!    deliveries when it sees the run's end on the bus (after the run's earlier events) or,
//!    for ends written while no notifier ran, at start ([`Db::render_outbox_events`]).
//!    The notifier gets the config, the store and the shutdown token ([`Context`]), never
//!    the daemon's handle.
//! 2. **Deliveries to requests.** [`deliver::Worker`]: one task per webhook, FIFO, one
//!    request in flight, rate-limited, retried with backoff; every attempt recorded.
//!    Pending deliveries are picked up again after a restart. In a fleet only the node
//!    holding the `outbox` lease sends ([`keep_outbox_lease`]): each attempt is marked in the
//!    store with the lease's holder and fencing token before its request and recorded only
//!    while that token still holds the lease, so a node that lost it (paused, cut off) can
//!    neither record nor retry; the new holder sends the delivery again with the same
//!    `X-Agent-Delivery` id.
//!
//! Not here: the outbox tables and queries (`store::outbox`), the API's listing
//! (`api::deliveries`) and the `agent deliveries` command (`cli::client`).

pub(crate) mod deliver;
pub(crate) mod event;
pub(crate) mod format;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

pub(crate) use event::{EventKind, Filter, Notice};
pub(crate) use format::Rendered;

use crate::bus::{Bus, Shutdown};
use crate::config::{Config, WebhookConfig};
use crate::daemon::leases::{self, Held, Lease};
use crate::model::event::DaemonEvent;
use crate::model::mask::Masker;
use crate::store::{Db, NewDelivery, RunId, RunRecord, RunStatus, StepStatus, Store};

/// What the notifier works with: the config, the store, the secrets to mask, the shutdown.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The daemon config (webhooks, `public_url`, `listen`, `state_dir`, retention).
    pub(crate) config: Arc<Config>,
    /// The store.
    pub(crate) store: Store,
    /// Secret values by name, masked in every payload.
    pub(crate) secrets: Arc<indexmap::IndexMap<String, String>>,
    /// Resolves when the daemon stops.
    pub(crate) shutdown: Shutdown,
}

/// How long the notifier may take to stop once shutdown has begun.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(5);

/// The configured webhooks, each with a unique `name` (a second webhook with the name, or
/// URL, of an earlier one gets `#2` appended, and so on): the key of its deliveries.
pub(crate) fn webhooks(config: &Config) -> Vec<Arc<WebhookConfig>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    config
        .webhooks
        .iter()
        .map(|w| {
            let n = seen.entry(w.name.clone()).or_insert(0);
            *n += 1;
            let mut w = w.clone();
            if *n > 1 {
                w.name = format!("{}#{n}", w.name);
            }
            Arc::new(w)
        })
        .collect()
}

/// The base of links to runs: the configured `public_url`, else `http://ADDR` of the API as
/// bound (`state_dir/daemon.addr`), else of the configured `listen` address.
pub(crate) fn link_base(shared: &Context) -> String {
    if let Some(url) = &shared.config.public_url {
        return url.clone();
    }
    let addr_file = crate::state_dir::addr_file(&shared.config.state_dir);
    let addr = std::fs::read_to_string(addr_file)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| shared.config.listen.to_string());
    format!("http://{addr}")
}

fn masker(shared: &Context) -> Masker {
    Masker::new(shared.secrets.values().map(String::as_str))
}

fn full_name(config: &Config, run: &RunRecord) -> Option<String> {
    config.repo(run.repo.as_deref()?)?.full_name.clone()
}

/// Renders `notice` for every webhook whose filters match it.
fn deliveries_for(
    hooks: &[(Arc<WebhookConfig>, Filter)],
    notice: &Notice,
    masker: &Masker,
) -> Vec<NewDelivery> {
    let mut out = Vec::new();
    for (webhook, filter) in hooks {
        if !filter.matches(notice.kind, &notice.workflow) {
            continue;
        }
        match format::render(webhook, notice, masker) {
            Ok(Some(rendered)) => out.push(NewDelivery {
                webhook: webhook.name.clone(),
                event: notice.kind.as_str().to_string(),
                run_id: notice.run_id,
                body: rendered.to_envelope(),
            }),
            Ok(None) => {}
            Err(err) => tracing::error!(webhook = %webhook.name, event = %notice.kind,
                error = %err, "cannot render a webhook delivery; it is not sent"),
        }
    }
    out
}

/// The notice of a run's end (`run.succeeded`, `run.failed`, `run.cancelled`).
pub(crate) fn run_end_notice(
    shared: &Context,
    run: &RunRecord,
    status: RunStatus,
    report: event::NoticeReport,
) -> Option<Notice> {
    let kind = EventKind::for_run_end(status)?;
    let mut notice = Notice::new(kind, run.workflow.clone());
    notice.run_id = Some(run.id);
    // `duration_ms` is the run's, from `started_at` to `finished_at`, as the API shows it.
    notice.run = Some(event::run_summary(run, status, &link_base(shared)));
    // A succeeded run has no deciding step (a tolerated failure did not decide it).
    if status != RunStatus::Succeeded {
        // A report that is not the engine's (a run cancelled before it started) names no step.
        notice.step = report.full().and_then(event::failing_step);
    }
    notice.error = report
        .error()
        .map(str::to_string)
        .or_else(|| run.error.clone());
    notice.report = Some(report);
    notice.repo_full_name = full_name(&shared.config, run);
    Some(notice)
}

/// The deliveries announcing that `run` ended (`event`: `run.succeeded`, ...), rendered from
/// the un-rendered outbox event its end wrote ([`Db::render_outbox_events`]).
fn run_end_deliveries(
    shared: &Context,
    targets: &[(Arc<WebhookConfig>, Filter)],
    masker: &Masker,
    run: &RunRecord,
) -> Vec<NewDelivery> {
    // A run that failed before it started, or was cancelled while queued, has no report:
    // the notice gets the same minimal one the API shows.
    match run_end_notice(shared, run, run.status, event::NoticeReport::of(run)) {
        Some(notice) => deliveries_for(targets, &notice, masker),
        None => Vec::new(),
    }
}

/// Renders every pending outbox event (of `run`, or all) and wakes the webhooks' workers.
fn render_outbox(
    shared: &Context,
    targets: &Arc<Vec<(Arc<WebhookConfig>, Filter)>>,
    wakes: &HashMap<String, Arc<Notify>>,
    masker: &Masker,
    run: Option<RunId>,
    written_by: Option<chrono::DateTime<chrono::Utc>>,
) {
    let (ctx, targets, masker) = (shared.clone(), targets.clone(), masker.clone());
    match shared.store.blocking_write(move |db| {
        db.render_outbox_events(run, written_by, |record, _event| {
            run_end_deliveries(&ctx, &targets, &masker, record)
        })
    }) {
        Ok(queued) => {
            for delivery in queued {
                if let Some(w) = wakes.get(&delivery.webhook) {
                    w.notify_one();
                }
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot render the runs' end deliveries"),
    }
}

/// What the writer does next.
#[derive(Debug)]
enum Pending {
    /// Turn this event into deliveries.
    Event(DaemonEvent),
    /// Render the run ends written to the outbox before this time that nobody rendered (their
    /// node stopped before it could): the `outbox` lease's holder sweeps them up.
    Sweep(chrono::DateTime<chrono::Utc>),
}

/// Starts the notifier if webhooks are configured: subscribes to the daemon's events at once
/// (so nothing emitted after this call is missed), checks the webhooks' filters and
/// templates, starts one delivery worker per webhook and the event router. The task ends
/// after shutdown.
pub(crate) fn spawn(context: Context, bus: &Bus) -> Option<tokio::task::JoinHandle<()>> {
    let hooks = webhooks(&context.config);
    if hooks.is_empty() {
        return None;
    }
    let events = bus.subscribe();
    let subscribed = chrono::Utc::now();
    Some(tokio::spawn(async move {
        run(context, hooks, events, subscribed).await
    }))
}

async fn run(
    handle: Context,
    hooks: Vec<Arc<WebhookConfig>>,
    mut events: mpsc::UnboundedReceiver<DaemonEvent>,
    subscribed: chrono::DateTime<chrono::Utc>,
) {
    let client = match deliver::http_client() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook HTTP client; no webhook is sent");
            return;
        }
    };
    let mut targets = Vec::new();
    let mut wakes: HashMap<String, Arc<Notify>> = HashMap::new();
    let mut workers = Vec::new();
    let (fence_tx, fence) = tokio::sync::watch::channel(None);
    for webhook in hooks {
        let (filter, problems) = Filter::new(&webhook);
        for p in problems {
            tracing::warn!(webhook = %webhook.name, "{p}");
        }
        if let Some(t) = &webhook.template
            && let Err(err) = format::check_template(t)
        {
            tracing::error!(webhook = %webhook.name, error = %err, "invalid webhook template");
        }
        let wake = Arc::new(Notify::new());
        wakes.insert(webhook.name.clone(), wake.clone());
        workers.push(tokio::spawn(
            deliver::Worker {
                webhook: webhook.clone(),
                wake,
                client: client.clone(),
                store: handle.store.clone(),
                shutdown: handle.shutdown.clone(),
                fence: fence.clone(),
            }
            .run(),
        ));
        targets.push((webhook, filter));
    }
    let (tx, rx) = mpsc::unbounded_channel::<Pending>();
    workers.push(tokio::spawn(keep_outbox_lease(
        handle.clone(),
        fence_tx,
        wakes.values().cloned().collect(),
        tx.clone(),
    )));
    report_orphans(&handle, &wakes).await;
    workers.push(tokio::spawn(prune(handle.clone())));
    let writer = {
        let shared = handle.clone();
        let wakes = wakes.clone();
        tokio::task::spawn_blocking(move || {
            write_deliveries(&shared, &targets, &wakes, rx, subscribed)
        })
    };
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = handle.shutdown.requested() => break,
        };
        match event {
            Some(
                event @ (DaemonEvent::RunFinished { .. }
                | DaemonEvent::RunQueued { .. }
                | DaemonEvent::RunStarted { .. }
                | DaemonEvent::StepFinished {
                    status: StepStatus::Failed,
                    ..
                }
                | DaemonEvent::StepRetrying { .. }
                | DaemonEvent::RollbackStarted { .. }
                | DaemonEvent::RollbackFinished { .. }
                | DaemonEvent::Escalation { .. }
                | DaemonEvent::HandlerNotify { .. }
                | DaemonEvent::Anomaly { .. }),
            ) => {
                if tx.send(Pending::Event(event)).is_err() {
                    break;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(STOP_WAIT, writer).await;
    for w in workers {
        let _ = tokio::time::timeout(STOP_WAIT, w).await;
    }
}

/// The lease of the node that sends the webhook deliveries.
pub(crate) const OUTBOX_LEASE: &str = "outbox";

/// Takes and renews the `outbox` lease every tick until shutdown (then gives it up), and
/// tells the workers whether, and under which fence, this node sends: only the holder does.
/// A node that takes the lease over wakes them at once. The holder also renders, when it
/// takes the lease and every [`SWEEP_EVERY`] ticks, the run ends another node wrote to the
/// outbox more than a lease's time ago and never rendered (it stopped first); a live node
/// renders its own within moments, after its run's earlier events.
async fn keep_outbox_lease(
    handle: Context,
    fence: tokio::sync::watch::Sender<Option<crate::store::Fence>>,
    wakes: Vec<Arc<Notify>>,
    writer: mpsc::UnboundedSender<Pending>,
) {
    let mut lease = Lease::new(
        OUTBOX_LEASE,
        leases::holder(&handle.store, &handle.config),
        leases::ttl(&handle.config),
    );
    let mut ticks: u32 = 0;
    loop {
        let held = lease.tick(&handle.store).await;
        fence.send_replace(lease.fence());
        if let Held::Gained(token) = held {
            tracing::info!(token, "webhook deliveries are sent by this node");
            for wake in &wakes {
                wake.notify_one();
            }
            ticks = 0;
        }
        if held.is_held() {
            if ticks.is_multiple_of(SWEEP_EVERY) {
                let ttl =
                    chrono::Duration::from_std(leases::ttl(&handle.config)).unwrap_or_default();
                let _ = writer.send(Pending::Sweep(chrono::Utc::now() - ttl));
            }
            ticks = ticks.wrapping_add(1);
        }
        tokio::select! {
            () = tokio::time::sleep(leases::tick(&handle.config)) => {}
            () = handle.shutdown.requested() => break,
        }
    }
    fence.send_replace(None);
    lease.release(&handle.store).await;
}

/// Every how many lease ticks the `outbox` lease's holder sweeps up run ends nobody rendered.
const SWEEP_EVERY: u32 = 12;

/// How often finished deliveries older than `retention.max_age` are deleted.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes finished deliveries older than `retention.max_age`, at start and every
/// [`PRUNE_EVERY`], until shutdown.
async fn prune(handle: Context) {
    let Some(max_age) = handle.config.retention.max_age else {
        return;
    };
    let age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    loop {
        // A `max_age` reaching back before the calendar's start keeps everything.
        let Some(before) = chrono::Utc::now().checked_sub_signed(age) else {
            return;
        };
        let pruned = handle
            .store
            .write(move |db| db.prune_deliveries(before))
            .await;
        match pruned {
            Ok(n) if n > 0 => tracing::info!(deliveries = n, "pruned old webhook deliveries"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot prune webhook deliveries"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = handle.shutdown.requested() => return,
        }
    }
}

/// Logs pending deliveries of webhooks that are no longer configured (they stay queued).
async fn report_orphans(handle: &Context, wakes: &HashMap<String, Arc<Notify>>) {
    let counts = handle
        .store
        .read(|db: &Db| db.pending_delivery_counts())
        .await;
    if let Ok(counts) = counts {
        for (webhook, n) in counts {
            if !wakes.contains_key(&webhook) {
                tracing::warn!(webhook = %webhook, pending = n,
                    "pending deliveries for a webhook that is no longer configured are kept, not sent");
            }
        }
    }
}

/// The writer (blocking thread): events to notices to queued deliveries.
fn write_deliveries(
    shared: &Context,
    targets: &[(Arc<WebhookConfig>, Filter)],
    wakes: &HashMap<String, Arc<Notify>>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    subscribed: chrono::DateTime<chrono::Utc>,
) {
    let store = &shared.store;
    let targets = Arc::new(targets.to_vec());
    let masker = masker(shared);
    // Run ends written before the notifier subscribed (a crash, a restart): their
    // `RunFinished` will not come. Later ones are rendered when it does, after the run's
    // earlier events.
    render_outbox(shared, &targets, wakes, &masker, None, Some(subscribed));
    while let Some(pending) = rx.blocking_recv() {
        let event = match pending {
            Pending::Event(event) => event,
            Pending::Sweep(before) => {
                render_outbox(shared, &targets, wakes, &masker, None, Some(before));
                continue;
            }
        };
        if let DaemonEvent::RunFinished { run_id, .. } = &event {
            // Every earlier event of the run is queued by now: its end goes after them.
            render_outbox(shared, &targets, wakes, &masker, Some(*run_id), None);
            // Its deliveries were written with the run's end, held until now: every earlier
            // event of the run is queued before them, so they can go.
            let ends: Vec<&str> = EventKind::ALL
                .iter()
                .filter(|k| k.is_run_end())
                .map(|k| k.as_str())
                .collect();
            let (id, ends): (RunId, Vec<String>) =
                (*run_id, ends.iter().map(|e| e.to_string()).collect());
            let released = store.blocking_write(move |db| {
                let ends: Vec<&str> = ends.iter().map(String::as_str).collect();
                db.release_run_deliveries(id, &ends)
            });
            if let Err(err) = released {
                tracing::warn!(run = %run_id, error = %err,
                    "cannot release the run's end deliveries; they go after the hold");
            }
            for wake in wakes.values() {
                wake.notify_one();
            }
            continue;
        }
        let notice = match store.blocking_read(|db: &Db| build_notice(shared, db, &event)) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot build a notification");
                continue;
            }
        };
        for delivery in deliveries_for(&targets, &notice, &masker) {
            let (webhook, event_name) = (delivery.webhook.clone(), delivery.event.clone());
            match store.blocking_write(move |db| db.enqueue_delivery(&delivery)) {
                Ok(_) => {
                    if let Some(w) = wakes.get(&webhook) {
                        w.notify_one();
                    }
                }
                Err(err) => tracing::error!(webhook = %webhook, event = %event_name,
                    error = %err, "cannot queue a webhook delivery"),
            }
        }
    }
}

/// The run's record and a notice of `kind` about it (`None` when the run is gone).
fn run_notice(
    shared: &Context,
    store: &Db,
    kind: EventKind,
    run_id: RunId,
) -> Result<Option<(Notice, RunRecord)>, crate::store::StoreError> {
    let Some(run) = store.get_run(run_id)? else {
        return Ok(None);
    };
    let mut notice = Notice::new(kind, run.workflow.clone());
    notice.run_id = Some(run_id);
    notice.run = Some(event::run_summary(&run, run.status, &link_base(shared)));
    notice.repo_full_name = full_name(&shared.config, &run);
    Ok(Some((notice, run)))
}

/// The notice of a daemon event (`None` for events no webhook hears of).
fn build_notice(
    shared: &Context,
    store: &Db,
    event: &DaemonEvent,
) -> Result<Option<Notice>, crate::store::StoreError> {
    let notice = match event {
        DaemonEvent::RunQueued { run_id, .. } => {
            run_notice(shared, store, EventKind::RunQueued, *run_id)?.map(|(mut n, _)| {
                if let Some(run) = n.run.as_mut() {
                    run.status = RunStatus::Queued;
                }
                n
            })
        }
        DaemonEvent::RunStarted { run_id, .. } => {
            run_notice(shared, store, EventKind::RunStarted, *run_id)?.map(|(mut n, _)| {
                if let Some(run) = n.run.as_mut() {
                    run.status = RunStatus::Running;
                }
                n
            })
        }
        DaemonEvent::StepFinished { run_id, step, .. } => {
            let Some((mut n, _)) = run_notice(shared, store, EventKind::StepFailed, *run_id)?
            else {
                return Ok(None);
            };
            let record = store
                .get_steps(*run_id)?
                .into_iter()
                .rev()
                .find(|s| s.step_id == step.as_ref());
            let (attempts, exit_code, class) = record
                .map(|r| (r.attempts, r.exit_code, r.error_class))
                .unwrap_or((0, None, None));
            n.step = Some(json!({
                "id": step.as_ref(), "status": "failed", "attempt": attempts,
                "exit_code": exit_code, "error_class": class,
            }));
            n.error = Some(match (&class, exit_code) {
                (Some(c), Some(x)) => format!("step `{step}` failed ({c}, exit code {x})"),
                (Some(c), None) => format!("step `{step}` failed ({c})"),
                (None, Some(x)) => format!("step `{step}` failed (exit code {x})"),
                (None, None) => format!("step `{step}` failed"),
            });
            Some(n)
        }
        DaemonEvent::StepRetrying {
            run_id,
            step,
            attempt,
            error_class,
            delay,
        } => run_notice(shared, store, EventKind::StepRetrying, *run_id)?.map(|(mut n, _)| {
            n.step = Some(json!({
                "id": step.as_ref(), "status": "running", "attempt": attempt,
                "error_class": error_class.as_ref(),
                "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            }));
            n.error = Some(format!(
                "attempt {attempt} of step `{step}` failed ({error_class})"
            ));
            n
        }),
        DaemonEvent::RollbackStarted { run_id } => {
            run_notice(shared, store, EventKind::RollbackStarted, *run_id)?.map(|(n, _)| n)
        }
        DaemonEvent::RollbackFinished { run_id, succeeded } => {
            run_notice(shared, store, EventKind::RollbackFinished, *run_id)?.map(|(mut n, _)| {
                let status = if *succeeded { "succeeded" } else { "failed" };
                n.details = Some(json!({ "status": status }));
                n
            })
        }
        DaemonEvent::Escalation {
            run_id,
            step,
            error_class,
            message,
        } => run_notice(shared, store, EventKind::Escalation, *run_id)?.map(|(mut n, _)| {
            n.step = Some(json!({"id": step.as_ref(), "status": "failed",
                                 "error_class": error_class.as_ref()}));
            n.error = Some(message.to_string());
            n.details = Some(json!({"error_class": error_class.as_ref(),
                                    "message": message.as_ref()}));
            n
        }),
        DaemonEvent::HandlerNotify {
            run_id,
            step,
            error_class,
            action,
        } => run_notice(shared, store, EventKind::HandlerNotify, *run_id)?.map(|(mut n, _)| {
            n.step = Some(json!({"id": step.as_ref(), "status": "failed",
                                 "error_class": error_class.as_ref()}));
            n.details = Some(json!({"error_class": error_class.as_ref(),
                                    "action": action.as_ref()}));
            n
        }),
        DaemonEvent::Anomaly {
            workflow,
            run_id,
            anomaly,
            ..
        } => {
            let mut n = match run_id {
                Some(id) => run_notice(shared, store, EventKind::Anomaly, *id)?
                    .map(|(n, _)| n)
                    .unwrap_or_else(|| Notice::new(EventKind::Anomaly, workflow.as_ref())),
                None => Notice::new(EventKind::Anomaly, workflow.as_ref()),
            };
            n.workflow = workflow.to_string();
            n.details = Some(anomaly.as_ref().clone());
            n.error = anomaly
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string);
            Some(n)
        }
        _ => None,
    };
    Ok(notice)
}
