//! The one overlap rule: what a new run does when runs of its group are still queued or
//! running. The store decides it in the transaction that queues the run, for every trigger
//! (push, schedule, manual, hook): a run's [`NewRun::overlap`](super::NewRun::overlap) says
//! the mode, [`decide`] says what it means, so two runs queued at once always see each other.
//!
//! The default, for every trigger ([`mode`]): a workflow with a `concurrency` section and no
//! `overlap` queues (`queue`). A workflow without the section has no group, so its push,
//! manual and hook runs never wait for each other; its schedule still does not pile up runs:
//! a slot finding the previous run of the workflow (in its repository) active is skipped
//! ([`SCHEDULE_DEFAULT`]). A retry has no rule.
//!
//! The group a rule looks at: the run's `concurrency_group`, or without one the runs of the
//! same workflow in the same repository. `cancel_previous` marks the older active runs
//! `cancel_requested` in the same transaction; the scheduler ends them.

use super::{RunId, TriggerKind};
pub use dsl::model::Overlap;

/// What a slot does without a `concurrency` section when a run of its workflow is active.
pub(crate) const SCHEDULE_DEFAULT: Overlap = Overlap::Skip;

/// The overlap mode of a new run of a workflow whose `concurrency.overlap` is `configured`
/// (`None`: the workflow has no `concurrency` section), started by `kind`. See the module
/// docs for the defaults.
pub fn mode(configured: Option<Overlap>, kind: TriggerKind) -> Option<Overlap> {
    match (configured, kind) {
        (_, TriggerKind::Retry) => None,
        (Some(mode), _) => Some(mode),
        (None, TriggerKind::Schedule) => Some(SCHEDULE_DEFAULT),
        (None, _) => None,
    }
}

/// What to do with a new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Queue it; nothing else changes.
    Enqueue,
    /// Do not run it: `active` (the oldest active run of the group) is still going.
    Skip {
        /// The active run that made it skip.
        active: RunId,
    },
    /// Queue it and cancel these older active runs.
    EnqueueAndCancel(Vec<RunId>),
}

/// What an enqueue under an overlap rule did (decided in the transaction that queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The run was queued (or was a duplicate); `cancel` are the older active runs of its
    /// group that `cancel_previous` ends (already marked `cancel_requested` in the same
    /// transaction; the scheduler cancels them).
    Queued {
        /// The queued run.
        run: super::Enqueued,
        /// Older active runs to cancel.
        cancel: Vec<RunId>,
    },
    /// Nothing was queued: `active` (the oldest active run of the group) is still going.
    /// Nothing was written either (the caller answers the request that asked for it).
    Skipped {
        /// The active run that made it skip.
        active: RunId,
    },
}

impl Admission {
    /// The queued (or duplicate) run's id; `None` when skipped.
    pub fn queued(&self) -> Option<RunId> {
        match self {
            Admission::Queued { run, .. } => Some(run.run_id()),
            Admission::Skipped { .. } => None,
        }
    }
}

/// Decides by `overlap` for a new run, given the runs of its group that are active and
/// older than it (`active`, oldest first).
pub(crate) fn decide(overlap: Overlap, active: &[RunId]) -> Decision {
    match (overlap, active.first()) {
        (_, None) | (Overlap::Queue, _) => Decision::Enqueue,
        (Overlap::Skip, Some(first)) => Decision::Skip { active: *first },
        (Overlap::CancelPrevious, Some(_)) => Decision::EnqueueAndCancel(active.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mode with and without active runs: nothing active always queues; `skip` names the
    /// oldest active run; `cancel_previous` cancels all of them; `queue` leaves them.
    #[test]
    fn one_rule_for_every_mode() {
        let active = [RunId(3), RunId(5)];
        for mode in [Overlap::Skip, Overlap::Queue, Overlap::CancelPrevious] {
            assert_eq!(decide(mode, &[]), Decision::Enqueue);
        }
        assert_eq!(decide(Overlap::Queue, &active), Decision::Enqueue);
        assert_eq!(
            decide(Overlap::Skip, &active),
            Decision::Skip { active: RunId(3) }
        );
        assert_eq!(
            decide(Overlap::CancelPrevious, &active),
            Decision::EnqueueAndCancel(active.to_vec())
        );
    }

    /// The defaults: a configured mode holds for every trigger but a retry; without a
    /// `concurrency` section only a schedule has a rule (`skip`).
    #[test]
    fn one_default_for_every_trigger() {
        for kind in [
            TriggerKind::Push,
            TriggerKind::Schedule,
            TriggerKind::Manual,
            TriggerKind::Webhook,
        ] {
            assert_eq!(mode(Some(Overlap::Queue), kind), Some(Overlap::Queue));
            assert_eq!(
                mode(Some(Overlap::CancelPrevious), kind),
                Some(Overlap::CancelPrevious)
            );
        }
        assert_eq!(mode(None, TriggerKind::Schedule), Some(Overlap::Skip));
        assert_eq!(mode(None, TriggerKind::Push), None);
        assert_eq!(mode(None, TriggerKind::Manual), None);
        assert_eq!(mode(Some(Overlap::Skip), TriggerKind::Retry), None);
    }
}
