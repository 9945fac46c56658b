//! Retry delays: `fixed`, `linear`, `exponential`, `fibonacci` and `adaptive` backoff with
//! `max_delay` and jitter (see "Retry policy" in docs/language.md).
//!
//! Attempt numbering: attempt 1 is the first try; `max_attempts` counts every try. The delay
//! *before* attempt `n + 1` is [`Backoff::delay`]`(n, ..)` with `n >= 1` (the number of the
//! attempt that just failed).
//!
//! Adaptive backoff keeps state per (workflow, error class) in an [`AdaptiveState`] shared by
//! every run of one [`Engine`](super::Engine): repeated failures of the same class lengthen
//! later delays, quick successes (on the first or second try) shorten them again. This
//! module owns only the arithmetic; the engine decides when to retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The shape of the delay sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum BackoffKind {
    /// The same delay every time.
    #[default]
    Fixed,
    /// `delay * n`.
    Linear,
    /// `delay * 2^(n-1)`.
    Exponential,
    /// `delay * fib(n)` with fib = 1, 1, 2, 3, 5, ...
    Fibonacci,
    /// Exponential, scaled by what this (workflow, error class) has seen lately.
    Adaptive,
}

/// Default base delay when a policy gives none.
pub(crate) const DEFAULT_DELAY: Duration = Duration::from_secs(1);
/// Cap used by `adaptive` when the policy gives no `max_delay` (60 s).
pub(crate) const ADAPTIVE_MAX_DELAY: Duration = Duration::from_secs(60);
/// Hard cap on any computed delay, so that arithmetic never overflows.
pub(crate) const ABSOLUTE_MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// A complete backoff description.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    /// The sequence shape.
    pub(crate) kind: BackoffKind,
    /// Base delay.
    pub(crate) delay: Duration,
    /// Upper bound of one delay (after jitter).
    pub(crate) max_delay: Option<Duration>,
    /// Jitter fraction in `[0, 1]`: the delay is spread uniformly over
    /// `delay * (1 - jitter) ..= delay * (1 + jitter)`. Zero means none.
    pub(crate) jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            kind: BackoffKind::Fixed,
            delay: DEFAULT_DELAY,
            max_delay: None,
            jitter: 0.0,
        }
    }
}

fn fib(n: u32) -> f64 {
    let (mut a, mut b) = (1.0f64, 1.0f64);
    for _ in 1..n {
        let c = a + b;
        a = b;
        b = c;
    }
    a
}

impl From<dsl::model::Backoff> for BackoffKind {
    fn from(b: dsl::model::Backoff) -> Self {
        use dsl::model::Backoff as B;
        match b {
            B::Fixed => BackoffKind::Fixed,
            B::Linear => BackoffKind::Linear,
            B::Exponential => BackoffKind::Exponential,
            B::Fibonacci => BackoffKind::Fibonacci,
            B::Adaptive => BackoffKind::Adaptive,
        }
    }
}

impl From<&dsl::model::Retry> for Backoff {
    fn from(r: &dsl::model::Retry) -> Self {
        Backoff {
            kind: r.backoff.into(),
            delay: r.delay,
            max_delay: r.max_delay,
            jitter: r.jitter,
        }
    }
}

impl Backoff {
    /// The delay before the next try, without jitter, after attempt `failed` (1-based) failed.
    /// `scale` is the adaptive factor (1.0 for the other kinds).
    pub(crate) fn base_delay(&self, failed: u32, scale: f64) -> Duration {
        let n = failed.max(1);
        let base = self.delay.as_secs_f64();
        let factor = match self.kind {
            BackoffKind::Fixed => 1.0,
            BackoffKind::Linear => f64::from(n),
            BackoffKind::Exponential => 2f64.powi(n.min(62) as i32 - 1),
            BackoffKind::Fibonacci => fib(n.min(90)),
            BackoffKind::Adaptive => 2f64.powi(n.min(62) as i32 - 1) * scale,
        };
        self.cap(base * factor)
    }

    /// The delay before the next try after attempt `failed` failed, with jitter drawn from
    /// `unit` (a uniform number in `[0, 1)`), capped by `max_delay`.
    pub(crate) fn delay(&self, failed: u32, scale: f64, unit: f64) -> Duration {
        let d = self.base_delay(failed, scale).as_secs_f64();
        let j = self.jitter.clamp(0.0, 1.0);
        let spread = if j > 0.0 {
            d * (1.0 - j + 2.0 * j * unit.clamp(0.0, 1.0))
        } else {
            d
        };
        self.cap(spread)
    }

    fn cap(&self, secs: f64) -> Duration {
        let max = match (self.max_delay, self.kind) {
            (Some(m), _) => m,
            (None, BackoffKind::Adaptive) => ADAPTIVE_MAX_DELAY,
            (None, _) => ABSOLUTE_MAX_DELAY,
        }
        .min(ABSOLUTE_MAX_DELAY);
        if !secs.is_finite() || secs <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(secs.min(max.as_secs_f64()))
    }
}

/// Learned state of one (workflow, error class).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ClassState {
    /// Failures of this class since the last success that followed one.
    recent_failures: u32,
    /// Multiplier on the exponential delay.
    scale: f64,
}

impl Default for ClassState {
    fn default() -> Self {
        ClassState {
            recent_failures: 0,
            scale: 1.0,
        }
    }
}

/// Smallest adaptive scale: the factor never drops below 0.5.
pub(crate) const ADAPTIVE_MIN_SCALE: f64 = 0.5;
/// Largest adaptive scale.
pub(crate) const ADAPTIVE_MAX_SCALE: f64 = 8.0;
/// Failures of one class after which each further one lengthens delays by half.
pub(crate) const ADAPTIVE_FAILURE_THRESHOLD: u32 = 2;

/// Adaptive backoff memory, keyed by (workflow name, error class). Shared by all runs.
#[derive(Debug, Default)]
pub(crate) struct AdaptiveState {
    classes: Mutex<HashMap<(String, String), ClassState>>,
}

impl AdaptiveState {
    /// A fresh memory.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The current delay multiplier for (workflow, class).
    pub(crate) fn scale(&self, workflow: &str, class: &str) -> f64 {
        let map = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(workflow.to_string(), class.to_string()))
            .map_or(1.0, |s| s.scale)
    }

    /// Records a failure of `class`: after more than
    /// [`ADAPTIVE_FAILURE_THRESHOLD`] of them, each one multiplies later delays by 1.5.
    pub(crate) fn record_failure(&self, workflow: &str, class: &str) {
        let mut map = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let st = map
            .entry((workflow.to_string(), class.to_string()))
            .or_default();
        st.recent_failures += 1;
        if st.recent_failures > ADAPTIVE_FAILURE_THRESHOLD {
            st.scale = (st.scale * 1.5).min(ADAPTIVE_MAX_SCALE);
        }
    }

    /// Records a success on attempt `attempt` after failures of `class`. A quick success
    /// (first or second try) shortens later delays by 10 %; any success resets the count of
    /// recent failures.
    pub(crate) fn record_success(&self, workflow: &str, class: &str, attempt: u32) {
        let mut map = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        let st = map
            .entry((workflow.to_string(), class.to_string()))
            .or_default();
        st.recent_failures = 0;
        if attempt <= 2 {
            st.scale = (st.scale * 0.9).max(ADAPTIVE_MIN_SCALE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(kind: BackoffKind) -> Backoff {
        Backoff {
            kind,
            delay: Duration::from_secs(1),
            max_delay: None,
            jitter: 0.0,
        }
    }

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn sequences() {
        let seq = |k| {
            (1..=6)
                .map(|n| secs(b(k).base_delay(n, 1.0)))
                .collect::<Vec<_>>()
        };
        assert_eq!(seq(BackoffKind::Fixed), [1.0; 6]);
        assert_eq!(seq(BackoffKind::Linear), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            seq(BackoffKind::Exponential),
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
        );
        assert_eq!(seq(BackoffKind::Fibonacci), [1.0, 1.0, 2.0, 3.0, 5.0, 8.0]);
        assert_eq!(seq(BackoffKind::Adaptive), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]);
    }

    #[test]
    fn max_delay_caps_and_huge_attempts_do_not_overflow() {
        let mut p = b(BackoffKind::Exponential);
        p.max_delay = Some(Duration::from_secs(5));
        assert_eq!(secs(p.base_delay(10, 1.0)), 5.0);
        assert_eq!(p.base_delay(u32::MAX, 1.0), Duration::from_secs(5));
        let p = b(BackoffKind::Exponential);
        assert_eq!(p.base_delay(u32::MAX, 1.0), ABSOLUTE_MAX_DELAY);
        assert_eq!(
            b(BackoffKind::Adaptive).base_delay(20, 1.0),
            ADAPTIVE_MAX_DELAY
        );
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let mut p = b(BackoffKind::Fixed);
        p.jitter = 0.5;
        assert_eq!(secs(p.delay(1, 1.0, 0.0)), 0.5);
        assert_eq!(secs(p.delay(1, 1.0, 0.5)), 1.0);
        assert!((secs(p.delay(1, 1.0, 0.999_999)) - 1.5).abs() < 1e-3);
        p.max_delay = Some(Duration::from_millis(1200));
        assert_eq!(secs(p.delay(1, 1.0, 0.999)), 1.2);
    }

    #[test]
    fn zero_delay_is_zero() {
        let mut p = b(BackoffKind::Exponential);
        p.delay = Duration::ZERO;
        assert_eq!(p.delay(3, 1.0, 0.3), Duration::ZERO);
    }

    #[test]
    fn adaptive_lengthens_after_repeated_failures_and_shortens_after_quick_success() {
        let st = AdaptiveState::new();
        assert_eq!(st.scale("w", "Timeout"), 1.0);
        st.record_failure("w", "Timeout");
        st.record_failure("w", "Timeout");
        assert_eq!(st.scale("w", "Timeout"), 1.0);
        st.record_failure("w", "Timeout");
        assert_eq!(st.scale("w", "Timeout"), 1.5);
        st.record_failure("w", "Timeout");
        assert_eq!(st.scale("w", "Timeout"), 2.25);
        // Other classes and workflows are independent.
        assert_eq!(st.scale("w", "ExitCode"), 1.0);
        assert_eq!(st.scale("v", "Timeout"), 1.0);
        st.record_success("w", "Timeout", 2);
        assert!((st.scale("w", "Timeout") - 2.025).abs() < 1e-9);
        for _ in 0..100 {
            st.record_success("w", "Timeout", 1);
        }
        assert_eq!(st.scale("w", "Timeout"), ADAPTIVE_MIN_SCALE);
        for _ in 0..100 {
            st.record_failure("w", "Timeout");
        }
        assert_eq!(st.scale("w", "Timeout"), ADAPTIVE_MAX_SCALE);
        let p = b(BackoffKind::Adaptive);
        assert_eq!(secs(p.base_delay(2, 1.5)), 3.0);
    }
}
