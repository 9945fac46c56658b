//! Writing run records while the database refuses writes (a lock held past the busy
//! timeout, a full disk): the write is retried with backoff instead of being dropped, and
//! `GET /health` answers 503 `degraded` while any write keeps failing or the node's
//! heartbeat cannot reach the database.
//!
//! A dropped write would leave a run `running` forever, and a step whose end was not
//! recorded would run again after the next restart. So the recorder retries a step's end and
//! a run's end until they are written or the run is abandoned by shutdown (the next boot then
//! resumes it by the recovery rules). A step's start must be on disk before its process is
//! spawned: the engine waits for it (behind any earlier write still being retried) for
//! `limits.record_timeout`, then fails the step with `StorageError` without running it, and
//! the run fails with that error once its end can be written.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// First pause between two tries of a failed write.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Whether the daemon's writes currently fail, for `/health`.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    /// Writes that failed and are being retried now.
    failing: AtomicUsize,
    /// The latest failure's text.
    last_error: Mutex<Option<String>>,
    /// The node's last heartbeat failed with this (the database is unreachable).
    heartbeat_error: Mutex<Option<String>>,
}

impl StoreHealth {
    /// `Some(error)` while at least one write is failing and being retried.
    pub(crate) fn degraded(&self) -> Option<String> {
        if self.failing.load(Ordering::SeqCst) == 0 {
            return self
                .heartbeat_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
        }
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Some(last.unwrap_or_else(|| "database writes fail".to_string()))
    }

    /// Records the outcome of the node's last heartbeat: `Some(error)` while it fails (the
    /// daemon is degraded until one succeeds again).
    pub(crate) fn heartbeat_failed(&self, error: Option<String>) {
        *self
            .heartbeat_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    fn note(&self, err: &StoreError) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.to_string());
    }
}

/// Counts one failing write in [`StoreHealth`] while it lives.
struct Failing<'a>(&'a StoreHealth);

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.0.failing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `write` (blocking) until it succeeds. A transient failure
/// ([`StoreError::is_transient`]) is retried with exponential backoff (50 ms doubling up to
/// 2 s) until `deadline` passes or `stop()` says the caller gives up; then, or at once for
/// any other error, the last error is returned. `what` names the write in the logs.
pub(crate) fn retry_write<T>(
    health: &StoreHealth,
    what: &str,
    deadline: Option<Instant>,
    stop: &dyn Fn() -> bool,
    mut write: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut pause = FIRST_PAUSE;
    let mut failing: Option<Failing<'_>> = None;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let err = match write() {
            Ok(value) => {
                if failing.is_some() {
                    tracing::info!(tries, "{what}: recorded after all");
                }
                return Ok(value);
            }
            Err(err) => err,
        };
        if !err.is_transient() {
            return Err(err);
        }
        health.note(&err);
        if failing.is_none() {
            health.failing.fetch_add(1, Ordering::SeqCst);
            failing = Some(Failing(health));
            tracing::error!(error = %err, "{what}: the database refuses the write; retrying");
        }
        let now = Instant::now();
        if stop() || deadline.is_some_and(|d| now >= d) {
            tracing::error!(error = %err, tries, "{what}: giving up");
            return Err(err);
        }
        let nap = match deadline {
            Some(d) => pause.min(d.saturating_duration_since(now)),
            None => pause,
        };
        std::thread::sleep(nap);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> StoreError {
        StoreError::Backend {
            message: "database is locked".into(),
            transient: true,
        }
    }

    /// A write that fails twice with a lock error is tried again and succeeds; health is
    /// degraded only while it fails.
    #[test]
    fn transient_failures_are_retried_and_reported_meanwhile() {
        let health = StoreHealth::default();
        let mut n = 0;
        let mut seen_degraded = false;
        let out = retry_write(&health, "test", None, &|| false, || {
            n += 1;
            if n > 1 {
                seen_degraded = health.degraded().is_some();
            }
            if n < 3 { Err(busy()) } else { Ok(n) }
        });
        assert_eq!(out.expect("written"), 3);
        assert!(seen_degraded);
        assert_eq!(health.degraded(), None);
    }

    /// A logic error is not retried; a deadline ends the retries.
    #[test]
    fn logic_errors_and_deadlines_end_the_retries() {
        let health = StoreHealth::default();
        let mut n = 0;
        let out: Result<(), _> = retry_write(&health, "test", None, &|| false, || {
            n += 1;
            Err(StoreError::RunNotFound(crate::store::RunId(1)))
        });
        assert!(out.is_err());
        assert_eq!(n, 1);
        let deadline = Some(Instant::now() + Duration::from_millis(120));
        let out: Result<(), _> = retry_write(&health, "test", deadline, &|| false, || Err(busy()));
        assert!(out.expect_err("gave up").is_transient());
        assert_eq!(health.degraded(), None);
    }
}
