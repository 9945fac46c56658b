//! `concurrency.overlap` decided by the store in the transaction that queues a run, against
//! each backend (a SQLite file, a PostgreSQL database): each mode for a push (`record_push`), a schedule slot
//! (`enqueue_scheduled_run`) and a manual run (`enqueue`), and two pushes racing on two
//! connections to one file.
//!
//! These guard the one rule: before it, push runs were queued first and fixed up by the
//! scheduler afterwards, and a cron slot read the active runs before it queued (two
//! transactions), so two racing enqueues of one group could both pass a `skip`.

use std::sync::{Arc, Barrier};

use crate::common::backends::on_each_backend;
use agent::store::overlap::{self, Admission, Overlap};
use agent::store::{Db, Enqueued, NewRun, RunId, RunStatus, Trigger, TriggerKind};
use chrono::{TimeZone, Utc};

/// A run of workflow `deploy` in repository `app`, group `deploy`, started by `kind` under
/// `mode`, with `key` as its dedup key.
fn run(kind: TriggerKind, mode: Overlap, key: &str) -> NewRun {
    NewRun {
        repo: Some("app".into()),
        concurrency_group: Some("deploy".into()),
        dedup_key: Some(key.to_string()),
        overlap: overlap::mode(Some(mode), kind),
        ..NewRun::new("deploy", Trigger::new(kind))
    }
}

/// Queues the first (active) run of the group, with no rule.
fn first_active(store: &mut Db) -> RunId {
    let mut first = run(TriggerKind::Manual, Overlap::Queue, "first");
    first.overlap = None;
    let id = store.enqueue_run(&first).expect("enqueue").run_id();
    store
        .claim("test", 1, std::time::Duration::from_secs(60))
        .expect("claim");
    store.mark_running(id).expect("running");
    id
}

fn status(store: &Db, id: RunId) -> (RunStatus, bool, Option<String>) {
    let r = store.get_run(id).expect("get").expect("run");
    (r.status, r.cancel_requested, r.error)
}

/// A push: `skip` records the run as cancelled, naming the active run (and queues nothing);
/// `queue` queues it beside the active one; `cancel_previous` queues it and marks the active
/// run for cancellation, in the same transaction.
#[test]
fn push_runs_follow_each_mode() {
    on_each_backend(|b| {
        let mut store = b.open();
        let active = first_active(&mut store);
        let push = |mode, key: &str| run(TriggerKind::Push, mode, key);

        let out = store
            .record_push("app", "main", "c1", &[push(Overlap::Skip, "p1")], &[])
            .unwrap();
        let Enqueued::Skipped {
            run: skipped,
            active: by,
        } = out[0]
        else {
            panic!("{out:?}");
        };
        assert_eq!(by, active);
        let (st, _, error) = status(&store, skipped);
        assert_eq!(st, RunStatus::Cancelled);
        assert_eq!(
            error.as_deref(),
            Some(
                format!("skipped: run {active} of concurrency group `deploy` is still active")
                    .as_str()
            )
        );
        // The same commit handled again (after a crash) records nothing twice.
        let again = store
            .record_push("app", "main", "c1", &[push(Overlap::Skip, "p1")], &[])
            .unwrap();
        assert_eq!(again, vec![Enqueued::Duplicate(skipped)]);

        let out = store
            .record_push("app", "main", "c2", &[push(Overlap::Queue, "p2")], &[])
            .unwrap();
        let Enqueued::Created(queued) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(status(&store, queued).0, RunStatus::Queued);
        assert!(!status(&store, active).1, "queue cancels nothing");

        let out = store
            .record_push(
                "app",
                "main",
                "c3",
                &[push(Overlap::CancelPrevious, "p3")],
                &[],
            )
            .unwrap();
        let Enqueued::Created(newest) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(status(&store, newest), (RunStatus::Queued, false, None));
        assert!(status(&store, active).1, "the running run is marked");
        assert!(status(&store, queued).1, "the queued run is marked");
        assert_eq!(store.cancel_requested_runs().unwrap(), vec![active, queued]);
    });
}

/// A schedule slot: claiming the slot and deciding its run is one transaction. `skip` claims
/// the slot without a run; `queue` queues; `cancel_previous` queues and marks the active run.
/// Without a `concurrency` section a slot skips when a run of its workflow is active.
#[test]
fn schedule_slots_follow_each_mode() {
    on_each_backend(|b| {
        let mut store = b.open();
        let active = first_active(&mut store);
        let slot = |s: u32| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, s).unwrap();
        let key = "app/deploy.yaml#0";

        let skip = run(TriggerKind::Schedule, Overlap::Skip, "s1");
        let out = store.enqueue_scheduled_run(key, slot(1), &skip).unwrap();
        assert_eq!(out, Some(Admission::Skipped { active }));
        assert_eq!(store.last_cron_fire(key).unwrap(), Some(slot(1)));
        // The slot is claimed: firing it again does nothing.
        assert_eq!(
            store.enqueue_scheduled_run(key, slot(1), &skip).unwrap(),
            None
        );

        let queue = run(TriggerKind::Schedule, Overlap::Queue, "s2");
        let Some(Admission::Queued {
            run: Enqueued::Created(queued),
            cancel,
        }) = store.enqueue_scheduled_run(key, slot(2), &queue).unwrap()
        else {
            panic!("not queued");
        };
        assert!(cancel.is_empty());
        assert_eq!(status(&store, queued).0, RunStatus::Queued);

        let newest = run(TriggerKind::Schedule, Overlap::CancelPrevious, "s3");
        let Some(Admission::Queued {
            run: Enqueued::Created(_),
            cancel,
        }) = store.enqueue_scheduled_run(key, slot(3), &newest).unwrap()
        else {
            panic!("not queued");
        };
        assert_eq!(cancel, vec![active, queued]);
        assert_eq!(store.cancel_requested_runs().unwrap(), vec![active, queued]);

        // No `concurrency` section: no group, the schedule's default (`skip`) looks at the
        // workflow's runs in the repository.
        let mut plain = NewRun {
            repo: Some("app".into()),
            dedup_key: Some("s4".into()),
            ..NewRun::new("deploy", Trigger::new(TriggerKind::Schedule))
        };
        plain.overlap = overlap::mode(None, TriggerKind::Schedule);
        assert_eq!(
            store.enqueue_scheduled_run(key, slot(4), &plain).unwrap(),
            Some(Admission::Skipped { active })
        );
    });
}

/// A manual run: `skip` writes nothing and names the active run (the API answers 409);
/// `queue` queues; `cancel_previous` queues and marks every older active run.
#[test]
fn manual_runs_follow_each_mode() {
    on_each_backend(|b| {
        let mut store = b.open();
        let active = first_active(&mut store);
        let manual = |mode, key: &str| run(TriggerKind::Manual, mode, key);

        let before = store.list_runs(&Default::default(), 100).unwrap().len();
        assert_eq!(
            store.enqueue(&manual(Overlap::Skip, "m1")).unwrap(),
            Admission::Skipped { active }
        );
        assert_eq!(
            store.list_runs(&Default::default(), 100).unwrap().len(),
            before
        );

        let Admission::Queued {
            run: Enqueued::Created(queued),
            cancel,
        } = store.enqueue(&manual(Overlap::Queue, "m2")).unwrap()
        else {
            panic!("not queued");
        };
        assert!(cancel.is_empty());

        let Admission::Queued { cancel, .. } = store
            .enqueue(&manual(Overlap::CancelPrevious, "m3"))
            .unwrap()
        else {
            panic!("not queued");
        };
        assert_eq!(cancel, vec![active, queued]);
        assert!(status(&store, active).1 && status(&store, queued).1);
    });
}

/// Two pushes of one group under `skip`, on two connections to one database (on each
/// backend), released together: the decision is made in the transaction that inserts, so in every round exactly
/// one run is queued and the other is recorded as skipped, naming it.
#[test]
fn two_racing_pushes_under_skip_queue_exactly_one_run() {
    on_each_backend(|b| {
        drop(b.open());
        for round in 0..20 {
            let barrier = Arc::new(Barrier::new(2));
            let threads: Vec<_> = ["main", "dev"]
                .into_iter()
                .map(|branch| {
                    let mut store = b.open();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let commit = format!("{branch}-{round}");
                        let push = run(TriggerKind::Push, Overlap::Skip, &commit);
                        barrier.wait();
                        store
                            .record_push("app", branch, &commit, &[push], &[])
                            .expect("record push")[0]
                    })
                })
                .collect();
            let results: Vec<Enqueued> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let queued: Vec<RunId> = results
                .iter()
                .filter_map(|e| match e {
                    Enqueued::Created(id) => Some(*id),
                    _ => None,
                })
                .collect();
            let skipped: Vec<RunId> = results
                .iter()
                .filter_map(|e| match e {
                    Enqueued::Skipped { active, .. } => Some(*active),
                    _ => None,
                })
                .collect();
            assert_eq!(queued.len(), 1, "round {round}: {results:?}");
            assert_eq!(
                skipped, queued,
                "round {round}: the skipped one names the queued run"
            );
            // Ends the round's run so the next round starts with an empty group.
            let mut store = b.open();
            store
                .finish_run(
                    queued[0],
                    &agent::store::RunFinish::new(RunStatus::Cancelled),
                )
                .unwrap();
        }
    });
}

/// A queued run that `cancel_previous` marked is never claimed (it would start only to be
/// cancelled): the claim waits until the scheduler has ended it, then takes the new run.
#[test]
fn a_run_marked_by_cancel_previous_is_not_claimed() {
    on_each_backend(|b| {
        let mut store = b.open();
        let lease = std::time::Duration::from_secs(60);
        let old = store
            .enqueue(&run(TriggerKind::Push, Overlap::Queue, "old"))
            .unwrap()
            .queued()
            .expect("queued");
        let new = store
            .enqueue(&run(TriggerKind::Push, Overlap::CancelPrevious, "new"))
            .unwrap()
            .queued()
            .expect("queued");
        assert!(store.claim("test", 10, lease).unwrap().is_empty());
        store
            .finish_run(old, &agent::store::RunFinish::new(RunStatus::Cancelled))
            .unwrap();
        let claimed: Vec<RunId> = store
            .claim("test", 10, lease)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(claimed, vec![new]);
    });
}
