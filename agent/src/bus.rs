//! The daemon's event bus. Lifecycle events (runs and steps starting and ending, retries,
//! rollbacks, anomalies) reach every subscriber without loss, in the order they were
//! published: metrics, anomaly detection and webhooks must see every one of them. Step
//! output travels separately, on its own lossy broadcast for live followers, so a step
//! printing gigabytes never crowds a lifecycle event out.
//!
//! Lifecycle events are few (a handful per step), so each subscriber gets an unbounded queue;
//! a subscriber that stops reading only grows its own queue by the events it skipped. Live
//! viewers that only need to be woken up (a log follower waiting for its step to end) use
//! [`Bus::watch`], a lossy copy that never holds anything up.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, watch};

use crate::engine::LogStream;
use crate::model::event::DaemonEvent;
use crate::store::RunId;

/// Slots of the lossy lifecycle copy ([`Bus::watch`]).
const WATCH_SLOTS: usize = 1024;
/// Slots of the log broadcast. A chunk is at most about a pipe read (tens of KiB), so a
/// lagging follower pins at most a few MiB.
const LOG_SLOTS: usize = 64;

/// Step output as written to the step's log file: whole lines, masked.
#[derive(Debug, Clone)]
#[expect(
    dead_code,
    reason = "the log broadcast has no subscriber that reads the text yet"
)]
pub(crate) struct LogChunk {
    /// The run.
    pub run_id: RunId,
    /// The step id.
    pub step: Arc<str>,
    /// Stdout or stderr.
    pub stream: LogStream,
    /// One or more lines, each ending with `\n`.
    pub text: Arc<str>,
}

/// Lossless lifecycle fan-out and a lossy log broadcast.
#[derive(Debug)]
pub(crate) struct Bus {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<DaemonEvent>>>,
    watch: broadcast::Sender<DaemonEvent>,
    logs: broadcast::Sender<LogChunk>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            subscribers: Mutex::new(Vec::new()),
            watch: broadcast::channel(WATCH_SLOTS).0,
            logs: broadcast::channel(LOG_SLOTS).0,
        }
    }
}

impl Bus {
    /// A bus with no subscribers.
    pub(crate) fn new() -> Bus {
        Bus::default()
    }

    /// Publishes a lifecycle event to every subscriber (none is ever dropped for a slow
    /// one) and to the live watchers.
    pub(crate) fn send(&self, event: DaemonEvent) {
        {
            let mut subs = self
                .subscribers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            subs.retain(|tx| tx.send(event.clone()).is_ok());
        }
        let _ = self.watch.send(event);
    }

    /// Every lifecycle event published from now on, none lost.
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<DaemonEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// A lossy copy of the lifecycle events, for live viewers: a slow one sees `Lagged`.
    pub(crate) fn watch(&self) -> broadcast::Receiver<DaemonEvent> {
        self.watch.subscribe()
    }

    /// Publishes step output that was just written to its log file; `chunk` is only built
    /// when someone follows.
    pub(crate) fn send_log(&self, chunk: impl FnOnce() -> LogChunk) {
        if self.logs.receiver_count() > 0 {
            let _ = self.logs.send(chunk());
        }
    }

    /// Step output from now on; a slow follower sees `Lagged` (the log files hold it all).
    pub(crate) fn logs(&self) -> broadcast::Receiver<LogChunk> {
        self.logs.subscribe()
    }
}

/// The daemon's shutdown, as every long-running part sees it: cheap to clone; resolves once
/// shutdown has begun.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A switch (send `true` to begin shutdown) and its token.
    pub(crate) fn pair() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub(crate) async fn requested(&self) {
        let mut rx = self.0.clone();
        // An error means the switch is gone: the daemon is stopping anyway.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// True once shutdown has begun.
    pub(crate) fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards that a subscriber that is not reading loses no lifecycle event, however many
    /// are published (the old shared 4,096-slot broadcast dropped the oldest).
    #[test]
    fn lifecycle_events_are_never_dropped() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let mut logs = bus.logs();
        for n in 0..20_000i64 {
            bus.send(DaemonEvent::RollbackStarted { run_id: RunId(n) });
            bus.send_log(|| LogChunk {
                run_id: RunId(n),
                step: "s".into(),
                stream: LogStream::Stdout,
                text: "x\n".into(),
            });
        }
        for n in 0..20_000i64 {
            match rx.try_recv() {
                Ok(DaemonEvent::RollbackStarted { run_id }) => assert_eq!(run_id, RunId(n)),
                other => panic!("event {n}: {other:?}"),
            }
        }
        assert!(matches!(
            logs.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }

    #[test]
    fn closed_subscribers_are_forgotten() {
        let bus = Bus::new();
        drop(bus.subscribe());
        let mut kept = bus.subscribe();
        bus.send(DaemonEvent::RollbackStarted { run_id: RunId(1) });
        assert!(kept.try_recv().is_ok());
        assert_eq!(bus.subscribers.lock().map(|s| s.len()).unwrap_or(0), 1);
    }
}
