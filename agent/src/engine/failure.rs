//! What a step failure leads to, once the step's own `retry` is used up: the first
//! `error_handlers` entry matching its class decides, else its `on_failure`.

use dsl::model::{Action, OnFailure};

/// The effect of a failure on the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Record the failure; the run goes on and can still succeed.
    Continue,
    /// The run fails; later steps do not start.
    Abort,
    /// Like abort, then the workflow's `rollback` steps run.
    Rollback,
    /// Like abort, then completed steps are compensated in reverse completion order.
    Compensate,
}

impl Disposition {
    /// Whether the run fails.
    pub(crate) fn fails_run(self) -> bool {
        self != Disposition::Continue
    }
}

impl From<OnFailure> for Disposition {
    fn from(o: OnFailure) -> Self {
        match o {
            OnFailure::Abort => Disposition::Abort,
            OnFailure::Continue => Disposition::Continue,
            OnFailure::Rollback => Disposition::Rollback,
            OnFailure::Compensate => Disposition::Compensate,
        }
    }
}

/// The disposition of a terminal handler action (`retry` is not terminal: the caller
/// retries and then applies `then`; `escalate` fails the run after its event).
pub(crate) fn from_action(a: Action) -> Disposition {
    match a {
        Action::Abort | Action::Escalate | Action::Retry => Disposition::Abort,
        Action::Continue => Disposition::Continue,
        Action::Rollback => Disposition::Rollback,
        Action::Compensate => Disposition::Compensate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(
            Disposition::from(OnFailure::Continue),
            Disposition::Continue
        );
        assert!(!Disposition::Continue.fails_run());
        assert_eq!(from_action(Action::Escalate), Disposition::Abort);
        assert_eq!(from_action(Action::Rollback), Disposition::Rollback);
        assert!(from_action(Action::Compensate).fails_run());
    }
}
