//! The store's queue and run life cycle, against real database files in temp dirs.

use crate::common::backends::on_each_backend;
use agent::store::{
    Db, DeliveryOutcome, DeliveryStatus, Enqueued, NewDelivery, NewRun, Retention, RunFilter,
    RunFinish, RunId, RunStatus, StepFinish, StepStart, StepStatus, StoreError, Trigger,
    TriggerKind,
};
use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

fn manual(workflow: &str) -> NewRun {
    NewRun::new(workflow, Trigger::new(TriggerKind::Manual))
}

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open_in_dir(dir.path()).expect("open store")
}

#[test]
fn open_creates_wal_database_at_latest_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(
        store.schema_version().unwrap(),
        agent::store::migrations::LATEST_VERSION
    );
    assert!(dir.path().join("agent.sqlite3").exists());
    // Reopening is a no-op migration.
    drop(store);
    let again = open(&dir);
    assert_eq!(
        again.schema_version().unwrap(),
        agent::store::migrations::LATEST_VERSION
    );
    assert!(dir.path().join("agent.sqlite3-wal").exists());
}

#[test]
fn queue_is_fifo_within_a_group_then_priority_then_age() {
    on_each_backend(|b| {
        let mut store = b.open();
        let run = |name: &str, group: Option<&str>, priority: i64| NewRun {
            concurrency_group: group.map(str::to_string),
            priority,
            ..manual(name)
        };
        let a = store.enqueue_run(&run("a", Some("g"), 0)).unwrap().run_id();
        let b = store
            .enqueue_run(&run("b", Some("g"), 10))
            .unwrap()
            .run_id();
        let c = store.enqueue_run(&run("c", None, 5)).unwrap().run_id();
        let d = store.enqueue_run(&run("d", None, 0)).unwrap().run_id();
        let e = store.enqueue_run(&run("e", Some("h"), 0)).unwrap().run_id();

        let claimed: Vec<_> = store
            .claim("test", 10, std::time::Duration::from_secs(60))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        // b has the highest priority but waits behind a in group g.
        assert_eq!(claimed, vec![c, a, d, e]);
        // Claimed runs are not handed out twice; b stays blocked while a is claimed.
        assert!(
            store
                .claim("test", 10, std::time::Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );

        store.mark_running(a).unwrap();
        assert!(
            store
                .claim("test", 10, std::time::Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );
        store
            .finish_run(a, &RunFinish::new(RunStatus::Succeeded))
            .unwrap();
        let next: Vec<_> = store
            .claim("test", 10, std::time::Duration::from_secs(60))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(next, vec![b]);
    });
}

#[test]
fn claim_respects_the_limit_and_release_hands_a_run_back() {
    on_each_backend(|b| {
        let mut store = b.open();
        let ids: Vec<_> = (0..5)
            .map(|i| {
                store
                    .enqueue_run(&manual(&format!("w{i}")))
                    .unwrap()
                    .run_id()
            })
            .collect();
        let first = store
            .claim("test", 2, std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..2]);
        assert!(first.iter().all(|r| r.claimed_at.is_some()));
        assert!(
            store
                .claim("test", 0, std::time::Duration::from_secs(60))
                .unwrap()
                .is_empty()
        );
        store.release_claim(ids[0]).unwrap();
        let second = store
            .claim("test", 2, std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            second.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[0], ids[2]]
        );
    });
}

#[test]
fn a_run_goes_through_its_states_with_steps_and_attempts() {
    on_each_backend(|b| {
        let mut store = b.open();
        let mut new = manual("build");
        new.repo = Some("app".into());
        new.parameters = json!({"env": "prod", "n": 3});
        new.trigger = Trigger {
            kind: TriggerKind::Push,
            commit: Some("abc123".into()),
            branch: Some("main".into()),
            scheduled_for: None,
        };
        let id = store.enqueue_run(&new).unwrap().run_id();
        let queued = store.get_run(id).unwrap().unwrap();
        assert_eq!(queued.status, RunStatus::Queued);
        assert_eq!(queued.parameters, json!({"env": "prod", "n": 3}));
        assert_eq!(queued.trigger, new.trigger);
        assert!(queued.started_at.is_none());

        // Steps cannot be recorded before the run runs.
        let start = StepStart {
            stage: "s1".into(),
            step_id: "compile".into(),
            attempt: 1,
        };
        assert!(matches!(
            store.record_step_started(id, &start),
            Err(StoreError::InvalidTransition { .. })
        ));
        let running = store.mark_running(id).unwrap();
        assert_eq!(running.status, RunStatus::Running);
        assert!(running.started_at.is_some());
        assert!(matches!(
            store.mark_running(id),
            Err(StoreError::InvalidTransition {
                from: RunStatus::Running,
                ..
            })
        ));

        store.record_step_started(id, &start).unwrap();
        let mut failed = StepFinish::new("s1", "compile", 1, StepStatus::Failed);
        failed.exit_code = Some(2);
        failed.error_class = Some("ExitCode".into());
        store.record_step_finished(id, &failed).unwrap();
        store
            .record_step_started(
                id,
                &StepStart {
                    attempt: 2,
                    ..start.clone()
                },
            )
            .unwrap();
        let mut ok = StepFinish::new("s1", "compile", 2, StepStatus::Succeeded);
        ok.exit_code = Some(0);
        ok.outputs = Some(json!({"artifact": "app.tar"}));
        ok.context = Some(json!({"built": true}));
        store.record_step_finished(id, &ok).unwrap();
        store
            .record_step_finished(id, &StepFinish::new("s2", "deploy", 0, StepStatus::Skipped))
            .unwrap();

        let steps = store.get_steps(id).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].step_id, "compile");
        assert_eq!(steps[0].status, StepStatus::Succeeded);
        assert_eq!(steps[0].attempts, 2);
        assert_eq!(steps[0].exit_code, Some(0));
        assert_eq!(steps[0].error_class, None);
        assert_eq!(steps[0].outputs, Some(json!({"artifact": "app.tar"})));
        assert!(steps[0].started_at.is_some() && steps[0].finished_at.is_some());
        assert_eq!(steps[1].status, StepStatus::Skipped);
        assert_eq!(steps[1].attempts, 0);
        let attempts = store.get_attempts(id).unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status, StepStatus::Failed);
        assert_eq!(attempts[0].exit_code, Some(2));
        assert_eq!(attempts[1].status, StepStatus::Succeeded);
        assert_eq!(
            store.get_run(id).unwrap().unwrap().context,
            Some(json!({"built": true}))
        );

        let mut finish = RunFinish::new(RunStatus::Succeeded);
        finish.report = Some(json!({"run_id": id.to_string(), "status": "succeeded"}));
        finish.preserved_context = Some(json!({"built": true, "count": 1}));
        finish.deliveries.push(NewDelivery {
            webhook: "chat".into(),
            event: "run.finished".into(),
            run_id: Some(id),
            body: json!({"text": "build succeeded"}),
        });
        assert!(matches!(
            store.finish_run(id, &RunFinish::new(RunStatus::Running)),
            Err(StoreError::NotFinal(RunStatus::Running))
        ));
        store.finish_run(id, &finish).unwrap();
        let (done, steps) = store.get_run_with_steps(id).unwrap().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(done.status, RunStatus::Succeeded);
        assert!(done.finished_at.is_some());
        assert_eq!(done.report, finish.report);
        assert!(done.duration_ms(Utc::now()).unwrap() >= 0);
        assert_eq!(
            store.load_context(Some("app"), "build").unwrap(),
            Some(json!({"built": true, "count": 1}))
        );
        assert_eq!(store.list_deliveries(10).unwrap().len(), 1);
        // A finished run stays finished.
        assert!(matches!(
            store.finish_run(id, &RunFinish::new(RunStatus::Failed)),
            Err(StoreError::InvalidTransition { .. })
        ));
        assert!(matches!(
            store.mark_running(agent::store::RunId(9999)),
            Err(StoreError::RunNotFound(_))
        ));
    });
}

#[test]
fn boot_marks_running_runs_interrupted_and_resume_requeues_them() {
    on_each_backend(|b| {
        let mut store = b.open();
        let running = store.enqueue_run(&manual("a")).unwrap().run_id();
        let claimed = store.enqueue_run(&manual("b")).unwrap().run_id();
        let queued = store.enqueue_run(&manual("c")).unwrap().run_id();
        let claim = store
            .claim("test", 2, std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(claim.len(), 2);
        store.mark_running(running).unwrap();
        let step = StepStart {
            stage: "s".into(),
            step_id: "one".into(),
            attempt: 1,
        };
        store.record_step_started(running, &step).unwrap();
        store
            .record_step_finished(
                running,
                &StepFinish::new("s", "one", 1, StepStatus::Succeeded),
            )
            .unwrap();
        store
            .record_step_started(
                running,
                &StepStart {
                    step_id: "two".into(),
                    ..step
                },
            )
            .unwrap();
        drop(store);

        // A new process boots.
        let mut store = b.open();
        let interrupted = store
            .reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            .unwrap();
        assert_eq!(
            interrupted.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![running]
        );
        assert_eq!(interrupted[0].status, RunStatus::Interrupted);
        let steps = store.get_steps(running).unwrap();
        assert_eq!(steps[0].status, StepStatus::Succeeded);
        assert_eq!(steps[1].status, StepStatus::Interrupted);
        assert_eq!(
            store.get_attempts(running).unwrap()[1].status,
            StepStatus::Interrupted
        );
        // The claim of the other process is gone: both queued runs can be claimed again.
        let again: Vec<_> = store
            .claim("test", 10, std::time::Duration::from_secs(60))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(again, vec![claimed, queued]);
        // Booting twice changes nothing more.
        assert!(
            store
                .reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)
                .unwrap()
                .is_empty()
        );

        store.resume_run(running).unwrap();
        assert_eq!(
            store.get_run(running).unwrap().unwrap().status,
            RunStatus::Queued
        );
        assert!(matches!(
            store.resume_run(running),
            Err(StoreError::InvalidTransition { .. })
        ));
        // Completed steps are kept for the resumed run, which keeps its first start time.
        assert_eq!(
            store.get_steps(running).unwrap()[0].status,
            StepStatus::Succeeded
        );
        let resumed = store.mark_running(running).unwrap();
        assert_eq!(resumed.started_at, interrupted[0].started_at);
    });
}

#[test]
fn list_runs_is_newest_first_and_filters() {
    on_each_backend(|b| {
        let mut store = b.open();
        let mut ids = Vec::new();
        for i in 0..6 {
            let mut run = manual(if i % 2 == 0 { "even" } else { "odd" });
            run.repo = Some(if i < 3 { "r1" } else { "r2" }.into());
            ids.push(store.enqueue_run(&run).unwrap().run_id());
        }
        store.mark_running(ids[4]).unwrap();
        let all = store.list_runs(&RunFilter::default(), 50).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            ids.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(store.list_runs(&RunFilter::default(), 2).unwrap().len(), 2);
        let even = RunFilter {
            workflow: Some("even".into()),
            ..Default::default()
        };
        assert_eq!(
            store
                .list_runs(&even, 50)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![ids[4], ids[2], ids[0]]
        );
        let running_even_r2 = RunFilter {
            workflow: Some("even".into()),
            status: Some(RunStatus::Running),
            repo: Some("r2".into()),
            ..RunFilter::default()
        };
        assert_eq!(
            store
                .list_runs(&running_even_r2, 50)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![ids[4]]
        );
        assert_eq!(store.count_active().unwrap(), (5, 1));
    });
}

#[test]
fn dedup_keys_and_push_records_make_a_commit_run_once() {
    on_each_backend(|b| {
        let mut store = b.open();
        let push = |workflow: &str| NewRun {
            dedup_key: Some(format!("push:app:{workflow}:c1")),
            repo: Some("app".into()),
            ..NewRun::new(
                workflow,
                Trigger {
                    kind: TriggerKind::Push,
                    commit: Some("c1".into()),
                    branch: Some("main".into()),
                    scheduled_for: None,
                },
            )
        };
        assert_eq!(store.last_seen_commit("app", "main").unwrap(), None);
        let bad = (push("broken"), "broken.yaml:1:1: error: bad".to_string());
        let first = store
            .record_push(
                "app",
                "main",
                "c1",
                &[push("build"), push("test")],
                std::slice::from_ref(&bad),
            )
            .unwrap();
        assert!(first.iter().all(|e| matches!(e, Enqueued::Created(_))));
        assert_eq!(
            store.last_seen_commit("app", "main").unwrap().as_deref(),
            Some("c1")
        );
        let broken = store.get_run(first[2].run_id()).unwrap().unwrap();
        assert_eq!(broken.status, RunStatus::Failed);
        assert_eq!(broken.error.as_deref(), Some("broken.yaml:1:1: error: bad"));
        assert!(broken.finished_at.is_some());
        // Handling the same commit again (say after a crash) queues nothing new.
        let second = store
            .record_push("app", "main", "c1", &[push("build"), push("test")], &[bad])
            .unwrap();
        assert_eq!(
            second,
            first
                .iter()
                .map(|e| Enqueued::Duplicate(e.run_id()))
                .collect::<Vec<_>>()
        );
        assert_eq!(store.list_runs(&RunFilter::default(), 50).unwrap().len(), 3);
        store.set_last_seen_commit("app", "dev", "c9").unwrap();
        assert_eq!(
            store.seen_branches("app").unwrap(),
            vec![
                ("dev".to_string(), "c9".to_string()),
                ("main".to_string(), "c1".to_string())
            ]
        );
    });
}

#[test]
fn a_cron_slot_is_claimed_once() {
    on_each_backend(|b| {
        let mut store = b.open();
        let slot = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap();
        assert!(store.claim_cron_slot("app/nightly.yaml#0", slot).unwrap());
        assert!(!store.claim_cron_slot("app/nightly.yaml#0", slot).unwrap());
        // Another schedule, or another slot, is independent.
        assert!(store.claim_cron_slot("app/nightly.yaml#1", slot).unwrap());
        let next = slot + Duration::seconds(2);
        let run = NewRun::new(
            "nightly",
            Trigger {
                scheduled_for: Some(next),
                ..Trigger::new(TriggerKind::Schedule)
            },
        );
        let id = store
            .enqueue_scheduled_run("app/nightly.yaml#0", next, &run)
            .unwrap()
            .and_then(|admitted| admitted.queued())
            .expect("first claim queues a run");
        assert_eq!(
            store
                .enqueue_scheduled_run("app/nightly.yaml#0", next, &run)
                .unwrap(),
            None
        );
        drop(store);
        // Also across a restart.
        let mut store = b.open();
        assert!(!store.claim_cron_slot("app/nightly.yaml#0", slot).unwrap());
        assert_eq!(
            store.last_cron_fire("app/nightly.yaml#0").unwrap(),
            Some(next)
        );
        assert_eq!(
            store.get_run(id).unwrap().unwrap().trigger.scheduled_for,
            Some(next)
        );
        assert_eq!(store.list_runs(&RunFilter::default(), 10).unwrap().len(), 1);
        // Retention prunes fired slots but keeps each schedule's latest one: the pruned slot
        // could be claimed again, the latest ones cannot.
        store
            .prune_runs(&Retention {
                max_runs: None,
                finished_before: None,
                cron_fires_before: Some(next + Duration::days(1)),
            })
            .unwrap();
        assert_eq!(
            store.last_cron_fire("app/nightly.yaml#0").unwrap(),
            Some(next)
        );
        assert!(!store.claim_cron_slot("app/nightly.yaml#1", slot).unwrap());
        assert!(!store.claim_cron_slot("app/nightly.yaml#0", next).unwrap());
        assert!(store.claim_cron_slot("app/nightly.yaml#0", slot).unwrap());
    });
}

#[test]
fn outbox_deliveries_retry_until_delivered() {
    crate::common::backends::on_each_backend(|b| {
        let mut store = b.open();
        let id = store
            .enqueue_delivery(&NewDelivery {
                webhook: "hook".into(),
                event: "run.started".into(),
                run_id: None,
                body: json!({"a": 1}),
            })
            .unwrap();
        assert_eq!(id.len(), 36);
        let now = Utc::now() + Duration::seconds(1);
        let due = store.due_deliveries(now, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].body, json!({"a": 1}));
        let later = now + Duration::seconds(30);
        store
            .record_delivery_attempt(
                &id,
                &DeliveryOutcome::Retry {
                    status_code: Some(503),
                    error: "service unavailable".into(),
                    next_attempt_at: later,
                },
            )
            .unwrap();
        assert!(store.due_deliveries(now, 10).unwrap().is_empty());
        assert_eq!(
            store
                .next_delivery_due()
                .unwrap()
                .map(|t| t.timestamp_millis()),
            Some(later.timestamp_millis())
        );
        assert_eq!(store.due_deliveries(later, 10).unwrap()[0].attempts, 1);
        assert_eq!(
            store
                .record_delivery_attempt(&id, &DeliveryOutcome::Delivered { status_code: 200 })
                .unwrap(),
            2
        );
        let listed = store.list_deliveries(10).unwrap();
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].status, DeliveryStatus::Delivered);
        assert_eq!(listed[0].history.len(), 2);
        assert_eq!(listed[0].history[0].status_code, Some(503));
        assert_eq!(listed[0].last_error.as_deref(), Some("service unavailable"));
        assert_eq!(store.next_delivery_due().unwrap(), None);
        assert!(matches!(
            store.record_delivery_attempt("nope", &DeliveryOutcome::Delivered { status_code: 200 }),
            Err(StoreError::DeliveryNotFound(_))
        ));
    });
}

#[test]
fn cache_entries_expire_and_contexts_persist() {
    crate::common::backends::on_each_backend(|b| {
        let mut store = b.open();
        let now = Utc::now();
        store
            .cache_put("k1", &json!({"out": 1}), Some(now + Duration::seconds(10)))
            .unwrap();
        store.cache_put("k2", &json!([1, 2]), None).unwrap();
        assert_eq!(
            store.cache_get("k1", now).unwrap().unwrap().value,
            json!({"out": 1})
        );
        assert!(
            store
                .cache_get("k1", now + Duration::seconds(11))
                .unwrap()
                .is_none()
        );
        assert_eq!(store.cache_prune(now + Duration::seconds(11)).unwrap(), 1);
        assert!(
            store
                .cache_get("k2", now + Duration::days(999))
                .unwrap()
                .is_some()
        );

        assert_eq!(store.load_context(None, "w").unwrap(), None);
        store.save_context(None, "w", &json!({"n": 1})).unwrap();
        store.save_context(None, "w", &json!({"n": 2})).unwrap();
        store
            .save_context(Some("r"), "w", &json!({"n": 3}))
            .unwrap();
        assert_eq!(
            store.load_context(None, "w").unwrap(),
            Some(json!({"n": 2}))
        );
        assert_eq!(
            store.load_context(Some("r"), "w").unwrap(),
            Some(json!({"n": 3}))
        );
    });
}

#[test]
fn retention_prunes_old_finished_runs_only() {
    on_each_backend(|b| {
        let mut store = b.open();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let id = store.enqueue_run(&manual("w")).unwrap().run_id();
            store.mark_running(id).unwrap();
            store
                .record_step_finished(id, &StepFinish::new("s", "x", 1, StepStatus::Succeeded))
                .unwrap();
            store
                .finish_run(id, &RunFinish::new(RunStatus::Succeeded))
                .unwrap();
            ids.push(id);
        }
        let active = store.enqueue_run(&manual("w")).unwrap().run_id();
        let pruned = store
            .prune_runs(&Retention {
                max_runs: Some(2),
                finished_before: None,
                cron_fires_before: None,
            })
            .unwrap();
        assert_eq!(pruned, ids[..3]);
        assert!(store.get_run(ids[0]).unwrap().is_none());
        assert!(store.get_steps(ids[0]).unwrap().is_empty());
        let pruned = store
            .prune_runs(&Retention {
                max_runs: None,
                finished_before: Some(Utc::now() + Duration::seconds(1)),
                cron_fires_before: None,
            })
            .unwrap();
        assert_eq!(pruned, ids[3..]);
        assert!(store.get_run(active).unwrap().is_some());
    });
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sqlite3");
    drop(Db::open(&path).unwrap());
    bump_user_version(&path);
    match Db::open(&path) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, supported + 1);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// Bumps `user_version` past what this build knows by patching the header of the closed
/// (checkpointed) file: bytes 60..64, big-endian.
fn bump_user_version(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let version = i32::from_be_bytes(bytes[60..64].try_into().unwrap());
    bytes[60..64].copy_from_slice(&(version + 1).to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Claims carry their owner and a lease: renewing extends only the owner's lease and reports
/// cancel requests; `reclaim_expired` takes back only lapsed leases (a running run becomes
/// interrupted, a claimed queued run goes back to the queue), never a live one.
#[test]
fn claims_have_an_owner_a_lease_and_see_cancel_requests_on_renew() {
    on_each_backend(|b| {
        let mut store = b.open();
        let lease = std::time::Duration::from_secs(60);
        let a = store.enqueue_run(&manual("a")).unwrap().run_id();
        let b = store.enqueue_run(&manual("b")).unwrap().run_id();
        let claimed = store.claim("node-1", 2, lease).unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(claimed[0].claim_owner.as_deref(), Some("node-1"));
        let expiry = claimed[0].lease_expires_at.expect("a lease");
        assert!(expiry > Utc::now());
        let running = store.mark_running(a).unwrap();
        assert_eq!(running.claim_owner.as_deref(), Some("node-1"));

        // Nothing has lapsed yet.
        assert!(store.reclaim_expired(Utc::now()).unwrap().is_empty());

        // A cancel request reaches the owner on renew, not another node.
        assert!(store.request_cancel(a).unwrap());
        assert!(store.renew("node-2", &[a, b], lease).unwrap().is_empty());
        assert_eq!(store.renew("node-1", &[a, b], lease).unwrap(), vec![a]);
        assert!(store.get_run(a).unwrap().unwrap().cancel_requested);

        // Past the lease: the running run is interrupted, the claimed one is queued again.
        let later = Utc::now() + Duration::seconds(120);
        let reclaimed = store.reclaim_expired(later).unwrap();
        assert_eq!(reclaimed.len(), 1);
        assert_eq!(reclaimed[0].id, a);
        assert_eq!(reclaimed[0].status, RunStatus::Interrupted);
        let b_now = store.get_run(b).unwrap().unwrap();
        assert_eq!(b_now.status, RunStatus::Queued);
        assert_eq!(b_now.claim_owner, None);
        assert_eq!(b_now.claimed_at, None);
        let again = store.claim("node-2", 5, lease).unwrap();
        assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
        // A finished run cannot be asked to cancel.
        store
            .finish_run(a, &RunFinish::new(RunStatus::Cancelled))
            .unwrap();
        assert!(!store.request_cancel(a).unwrap());
    });
}

/// A pull-request run keeps its pull request (number, base, head, fork) and ref across the
/// store, also in a new connection; other runs have none.
#[test]
fn a_runs_trigger_event_round_trips() {
    on_each_backend(|b| {
        use agent::store::{PullRequestEvent, RunEvent};
        let mut store = b.open();
        let event = RunEvent {
            git_ref: Some("refs/pull/7/head".into()),
            pull_request: Some(PullRequestEvent {
                number: 7,
                action: "opened".into(),
                base: "main".into(),
                head: "topic".into(),
                head_sha: "abc".into(),
                head_repo: Some("you/app".into()),
                fork: true,
            }),
        };
        let pr = NewRun {
            event: Some(event.clone()),
            dedup_key: Some("pr:app:w.yaml:7:abc".into()),
            ..NewRun::new("w", Trigger::new(TriggerKind::PullRequest))
        };
        let id = store.enqueue_run(&pr).unwrap().run_id();
        assert_eq!(
            store.enqueue_run(&pr).unwrap(),
            Enqueued::Duplicate(id),
            "the same head queues once"
        );
        let plain = store.enqueue_run(&manual("m")).unwrap().run_id();
        drop(store);
        let store = b.open();
        let got = store.get_run(id).unwrap().expect("run");
        assert_eq!(got.event, Some(event));
        assert_eq!(got.trigger.kind, TriggerKind::PullRequest);
        assert_eq!(store.get_run(plain).unwrap().expect("run").event, None);
    });
}

/// Each boot that finds a step running counts one interruption on it (kept when the
/// step runs again); a step stopped by shutdown is not counted.
#[test]
fn boots_count_crash_interruptions_per_step() {
    on_each_backend(|b| {
        let mut store = b.open();
        let id = store.enqueue_run(&manual("w")).expect("enqueue").run_id();
        let start = |store: &mut Db| {
            store.mark_running(id).expect("running");
            let step = StepStart {
                stage: "s".into(),
                step_id: "boom".into(),
                attempt: 1,
            };
            store.record_step_started(id, &step).expect("start");
        };
        for n in 1..=2 {
            start(&mut store);
            store
                .reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)
                .expect("boot");
            assert_eq!(
                store.interrupted_steps(id).expect("steps"),
                [("boom".to_string(), n)]
            );
            store.resume_run(id).expect("resume");
        }
        start(&mut store);
        store.mark_steps_stopped(id).expect("stopped by shutdown");
        assert_eq!(
            store
                .reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)
                .expect("boot")
                .len(),
            1
        );
        assert_eq!(
            store.interrupted_steps(id).expect("steps"),
            [("boom".to_string(), 2)]
        );
    });
}

/// Guards the runs page's filters: branch, trigger kind and a text search over workflow
/// names and recorded commit messages narrow the listing in SQL (with `%` and `_`
/// matched as themselves), and a workflow's recent durations come oldest first.
#[test]
fn branch_trigger_and_text_filters_and_recent_durations() {
    on_each_backend(|b| {
        let mut store = b.open();
        let mut ids = Vec::new();
        for (workflow, branch, kind) in [
            ("build", "main", TriggerKind::Push),
            ("build", "feature", TriggerKind::Push),
            ("deploy", "main", TriggerKind::Manual),
        ] {
            let mut run = NewRun::new(workflow, Trigger::new(kind));
            run.repo = Some("app".into());
            run.trigger.branch = Some(branch.into());
            run.trigger.commit = Some(format!("c-{}", ids.len()));
            ids.push(store.enqueue_run(&run).expect("enqueue").run_id());
        }
        store
            .set_commit_message(&ids[1..2], "Fix the 100% CPU_loop")
            .expect("message");
        let list = |f: RunFilter| -> Vec<RunId> {
            store
                .list_run_summaries(&f, None, 50)
                .expect("list")
                .iter()
                .map(|r| r.id)
                .collect()
        };
        let text = |t: &str| RunFilter {
            text: Some(t.into()),
            ..RunFilter::default()
        };
        assert_eq!(
            list(RunFilter {
                branch: Some("main".into()),
                ..RunFilter::default()
            }),
            vec![ids[2], ids[0]]
        );
        assert_eq!(
            list(RunFilter {
                trigger: Some(TriggerKind::Manual),
                ..RunFilter::default()
            }),
            vec![ids[2]]
        );
        assert_eq!(list(text("DEPLOY")), vec![ids[2]]);
        assert_eq!(list(text("cpu_loop")), vec![ids[1]]);
        assert_eq!(list(text("100%")), vec![ids[1]]);
        assert_eq!(list(text("0_C")), Vec::<RunId>::new());
        assert_eq!(list(text("%")), vec![ids[1]]);
        let found = store
            .list_run_summaries(&text("cpu"), None, 50)
            .expect("list");
        assert_eq!(
            found[0].commit_message.as_deref(),
            Some("Fix the 100% CPU_loop")
        );

        // Durations: finished runs only, oldest first.
        for (i, id) in ids.iter().enumerate() {
            store.mark_running(*id).expect("start");
            let mut finish = RunFinish::new(RunStatus::Succeeded);
            finish.finished_at =
                Some(Utc::now() + chrono::Duration::milliseconds(1000 * (i as i64 + 1)));
            store.finish_run(*id, &finish).expect("finish");
        }
        let d = store
            .recent_durations(Some("app"), "build", 20)
            .expect("durations");
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0] < d[1], "{d:?}");
        assert!(
            store
                .recent_durations(None, "build", 20)
                .expect("none")
                .is_empty()
        );
    });
}

/// Guards the timeline's attempts: an attempt that failed and is retried gets its end
/// and error class recorded, so each attempt has its own span; the last one ends with
/// the step.
#[test]
fn a_retried_attempt_records_its_end() {
    on_each_backend(|b| {
        let mut store = b.open();
        let id = store
            .enqueue_run(&NewRun::new("w", Trigger::new(TriggerKind::Manual)))
            .expect("enqueue")
            .run_id();
        store.mark_running(id).expect("running");
        let start = |n: u32| StepStart {
            stage: "s".into(),
            step_id: "flaky".into(),
            attempt: n,
        };
        store.record_step_started(id, &start(1)).expect("start 1");
        store
            .record_attempt_failed(id, "flaky", 1, "Timeout")
            .expect("failed 1");
        store.record_step_started(id, &start(2)).expect("start 2");
        store
            .record_step_finished(id, &StepFinish::new("s", "flaky", 2, StepStatus::Succeeded))
            .expect("finish");
        let attempts = store.get_attempts(id).expect("attempts");
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status, StepStatus::Failed);
        assert_eq!(attempts[0].error_class.as_deref(), Some("Timeout"));
        assert!(attempts[0].finished_at.is_some());
        assert!(attempts[0].finished_at <= Some(attempts[1].started_at));
        assert_eq!(attempts[1].status, StepStatus::Succeeded);
    });
}

/// The report of a finished run is read without its step rows (the stored report holds
/// the steps); a running run's report is built from them.
#[test]
fn a_finished_report_skips_the_step_rows() {
    on_each_backend(|b| {
        let mut store = b.open();
        let run = NewRun::new("w", Trigger::new(TriggerKind::Manual));
        let id = store.enqueue_run(&run).expect("enqueue").run_id();
        store.mark_running(id).expect("running");
        let finish = StepFinish::new("s", "a", 1, StepStatus::Succeeded);
        store.record_step_finished(id, &finish).expect("step");
        let (_, steps) = store.get_run_for_report(id).expect("read").expect("found");
        assert_eq!(steps.len(), 1);
        let mut done = RunFinish::new(RunStatus::Succeeded);
        done.report = Some(serde_json::json!({"stages": []}));
        store.finish_run(id, &done).expect("finish");
        let (run, steps) = store.get_run_for_report(id).expect("read").expect("found");
        assert!(steps.is_empty());
        assert_eq!(run.report, done.report);
        assert!(store.get_run_for_report(RunId(99)).expect("read").is_none());
    });
}

/// Summaries page through the whole history with `before`, newest first, filters kept.
#[test]
fn summaries_page_with_before() {
    on_each_backend(|b| {
        let mut store = b.open();
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut run = NewRun::new(
                if i % 2 == 0 { "even" } else { "odd" },
                Trigger::new(TriggerKind::Manual),
            );
            run.repo = Some("r".into());
            ids.push(store.enqueue_run(&run).expect("enqueue").run_id());
        }
        let even = RunFilter {
            workflow: Some("even".into()),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store.list_run_summaries(&even, before, 2).expect("page");
            if page.is_empty() {
                break;
            }
            before = page.last().map(|r| r.id);
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen, vec![ids[6], ids[4], ids[2], ids[0]]);
        let all = store
            .list_run_summaries(&RunFilter::default(), Some(ids[3]), 50)
            .expect("all");
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[2], ids[1], ids[0]]
        );
        assert_eq!(all[0].workflow, "even");
        assert_eq!(all[0].repo.as_deref(), Some("r"));
        assert_eq!(all[0].status, RunStatus::Queued);
    });
}
