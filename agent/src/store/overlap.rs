//! The one overlap rule: what a new run does when runs of its concurrency group (for a
//! schedule: of its workflow in its repository) are still queued or running. Push, schedule,
//! manual and hook runs all decide through [`decide`]; the triggers differ only in when they
//! ask (a manual run before it is queued, a push or hook run as soon as the scheduler sees
//! it, a schedule when its slot fires).
//!
//! The default, for every trigger: a workflow with a `concurrency` section and no `overlap`
//! queues (`queue`). A workflow without the section has no group, so its push, manual and
//! hook runs never wait for each other; its schedule still does not pile up runs: a slot
//! finding the previous scheduled run active is skipped ([`SCHEDULE_DEFAULT`]).

use super::RunId;
pub use dsl::model::Overlap;

/// What a slot does without a `concurrency` section when a run of its workflow is active.
pub const SCHEDULE_DEFAULT: Overlap = Overlap::Skip;

/// What to do with a new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
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
    /// group that `cancel_previous` ends (the caller cancels them).
    Queued {
        /// The queued run.
        run: super::Enqueued,
        /// Older active runs to cancel.
        cancel: Vec<RunId>,
    },
    /// Nothing was queued: `active` (the oldest active run of the group) is still going.
    Skipped {
        /// The active run that made it skip.
        active: RunId,
    },
}

/// Decides by `overlap` for a new run, given the runs of its group that are active and
/// older than it (`active`, oldest first).
pub fn decide(overlap: Overlap, active: &[RunId]) -> Decision {
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
}
