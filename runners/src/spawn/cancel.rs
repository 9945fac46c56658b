//! Cancellation of a step or a run: graceful first, immediate on a second request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

/// Cancellation of a step or run: the first [`Cancel::request`] ends processes gracefully
/// (SIGTERM, grace period, SIGKILL), a second one kills at once. Cheap to clone; clones
/// share state; [`Cancel::child`] gives one that is also cancelled by its parent (a run's
/// cancel reaches all its steps).
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    graceful: CancellationToken,
    immediate: CancellationToken,
    requests: Arc<AtomicU8>,
}

impl Cancel {
    /// A new, not yet cancelled, handle.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks for cancellation: the first call is graceful, the second kills at once (a second
    /// Ctrl-C).
    pub fn request(&self) {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            self.graceful.cancel();
        } else {
            self.kill_now();
        }
    }

    /// Kills at once, without a grace period.
    pub fn kill_now(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.graceful.cancel();
        self.immediate.cancel();
    }

    /// Whether cancellation was requested (gracefully or not).
    pub fn is_cancelled(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// A handle cancelled when this one is (either level), which can also be cancelled on
    /// its own.
    pub fn child(&self) -> Cancel {
        Cancel {
            graceful: self.graceful.child_token(),
            immediate: self.immediate.child_token(),
            requests: Arc::new(AtomicU8::new(0)),
        }
    }

    /// The token cancelled on the first request (for `select!` in the engine).
    pub fn graceful_token(&self) -> &CancellationToken {
        &self.graceful
    }

    /// The token cancelled by an immediate kill.
    pub fn immediate_token(&self) -> &CancellationToken {
        &self.immediate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_escalates() {
        let c = Cancel::new();
        let child = c.child();
        assert!(!c.is_cancelled());
        c.request();
        assert!(c.is_cancelled() && !c.immediate_token().is_cancelled());
        assert!(child.is_cancelled() && !child.immediate_token().is_cancelled());
        c.request();
        assert!(c.immediate_token().is_cancelled() && child.immediate_token().is_cancelled());
    }
}
