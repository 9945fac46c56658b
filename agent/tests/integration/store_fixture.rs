//! Fixture databases, one per schema version, must open with the current code.
//!
//! `fixtures/store_v1.sqlite3` was written by schema version 1. To (re)write it — only ever
//! with the code of that version — run
//! `AGENT_WRITE_STORE_FIXTURE=1 cargo test -p agent --test integration -- --ignored store_fixture::write_v1_fixture`.
//! When a migration is added, keep this file and add a `store_v2.sqlite3` the same way.

use crate::common::store_fixture::{fixture, header_version};
use agent::store::{
    Db, DeliveryOutcome, DeliveryStatus, NewDelivery, NewRun, RunFilter, RunFinish, RunStatus,
    StepFinish, StepStart, StepStatus, Trigger, TriggerKind, migrations,
};
use chrono::{TimeZone, Utc};
use serde_json::json;

#[test]
#[ignore = "writes the fixture; run by hand with AGENT_WRITE_STORE_FIXTURE=1"]
fn write_v1_fixture() {
    if std::env::var_os("AGENT_WRITE_STORE_FIXTURE").is_none() {
        return;
    }
    assert_eq!(
        migrations::LATEST_VERSION,
        1,
        "the v1 fixture must be written by the code of schema version 1"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    {
        let mut store = Db::open_at_version(&path, 1).unwrap();
        // A finished push run with two steps (one retried) and a preserved context.
        let mut push = NewRun::new(
            "build",
            Trigger {
                kind: TriggerKind::Push,
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                branch: Some("main".into()),
                scheduled_for: None,
            },
        );
        push.repo = Some("app".into());
        push.parameters = json!({"target": "release", "jobs": 4});
        push.priority = 5;
        push.concurrency_group = Some("deploy".into());
        push.dedup_key = Some("push:app:build:0123456789abcdef0123456789abcdef01234567".into());
        let built = store
            .record_push(
                "app",
                "main",
                "0123456789abcdef0123456789abcdef01234567",
                std::slice::from_ref(&push),
                &[],
            )
            .unwrap()[0]
            .run_id();
        store.mark_running(built).unwrap();
        let start = StepStart {
            stage: "build".into(),
            step_id: "compile".into(),
            attempt: 1,
        };
        store.record_step_started(built, &start).unwrap();
        let mut failed = StepFinish::new("build", "compile", 1, StepStatus::Failed);
        failed.exit_code = Some(1);
        failed.error_class = Some("ExitCode".into());
        failed.error = Some("exit status 1".into());
        store.record_step_finished(built, &failed).unwrap();
        store
            .record_step_started(
                built,
                &StepStart {
                    attempt: 2,
                    ..start
                },
            )
            .unwrap();
        let mut ok = StepFinish::new("build", "compile", 2, StepStatus::Succeeded);
        ok.exit_code = Some(0);
        ok.outputs = Some(json!({"artifact": "app.tar.gz"}));
        ok.context = Some(json!({"builds": 1}));
        store.record_step_finished(built, &ok).unwrap();
        store
            .record_step_finished(
                built,
                &StepFinish::new("ship", "upload", 0, StepStatus::Skipped),
            )
            .unwrap();
        let mut finish = RunFinish::new(RunStatus::Succeeded);
        finish.report = Some(json!({"run_id": "1", "workflow": "build", "status": "succeeded"}));
        finish.preserved_context = Some(json!({"builds": 1}));
        finish.deliveries.push(NewDelivery {
            webhook: "chat".into(),
            event: "run.finished".into(),
            run_id: Some(built),
            body: json!({"text": "build succeeded"}),
        });
        store.finish_run(built, &finish).unwrap();
        let delivery = store.list_deliveries(1).unwrap()[0].id.clone();
        store
            .record_delivery_attempt(&delivery, &DeliveryOutcome::Delivered { status_code: 204 })
            .unwrap();

        // A scheduled run left queued, and a run that was running when the daemon died.
        let slot = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 0).unwrap();
        let nightly = NewRun::new(
            "nightly",
            Trigger {
                scheduled_for: Some(slot),
                ..Trigger::new(TriggerKind::Schedule)
            },
        );
        store
            .enqueue_scheduled_run("app/.workflows/nightly.yaml#0", slot, &nightly)
            .unwrap()
            .unwrap();
        let manual = store
            .enqueue_run(&NewRun::new("deploy", Trigger::new(TriggerKind::Manual)))
            .unwrap()
            .run_id();
        store.mark_running(manual).unwrap();
        store
            .record_step_started(
                manual,
                &StepStart {
                    stage: "go".into(),
                    step_id: "push".into(),
                    attempt: 1,
                },
            )
            .unwrap();
        store
            .cache_put("compile-abc", &json!({"artifact": "app.tar.gz"}), None)
            .unwrap();
    }
    assert_eq!(header_version(&path), 1);
    assert!(!path.with_extension("sqlite3-wal").exists());
    std::fs::copy(&path, fixture(1)).unwrap();
}

#[test]
fn v1_fixture_opens_with_current_code() {
    let source = fixture(1);
    assert_eq!(header_version(&source), 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sqlite3");
    std::fs::copy(&source, &path).unwrap();

    let mut store = Db::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), migrations::LATEST_VERSION);

    let runs = store.list_runs(&RunFilter::default(), 10).unwrap();
    let names: Vec<_> = runs.iter().map(|r| r.workflow.as_str()).collect();
    assert_eq!(names, ["deploy", "nightly", "build"]);

    let build = &runs[2];
    assert_eq!(build.status, RunStatus::Succeeded);
    assert_eq!(build.repo.as_deref(), Some("app"));
    assert_eq!(build.trigger.kind, TriggerKind::Push);
    assert_eq!(build.trigger.branch.as_deref(), Some("main"));
    assert_eq!(build.parameters, json!({"target": "release", "jobs": 4}));
    assert_eq!(build.priority, 5);
    assert_eq!(build.concurrency_group.as_deref(), Some("deploy"));
    assert!(build.started_at.is_some() && build.finished_at.is_some());
    assert_eq!(build.report.as_ref().unwrap()["status"], "succeeded");
    let steps = store.get_steps(build.id).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].step_id, "compile");
    assert_eq!(steps[0].attempts, 2);
    assert_eq!(steps[0].outputs, Some(json!({"artifact": "app.tar.gz"})));
    assert_eq!(steps[1].status, StepStatus::Skipped);
    let attempts = store.get_attempts(build.id).unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].error.as_deref(), Some("exit status 1"));
    assert_eq!(
        store.load_context(Some("app"), "build").unwrap(),
        Some(json!({"builds": 1}))
    );
    assert_eq!(
        store.last_seen_commit("app", "main").unwrap().as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    let deliveries = store.list_deliveries(10).unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, DeliveryStatus::Delivered);
    assert_eq!(deliveries[0].history[0].status_code, Some(204));
    assert!(
        store
            .cache_get("compile-abc", Utc::now())
            .unwrap()
            .is_some()
    );

    let nightly = &runs[1];
    let slot = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 0).unwrap();
    assert_eq!(nightly.trigger.scheduled_for, Some(slot));
    assert!(
        !store
            .claim_cron_slot("app/.workflows/nightly.yaml#0", slot)
            .unwrap()
    );

    // The old file goes on working: boot recovery, then the queue.
    let interrupted = store
        .reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].workflow, "deploy");
    let claimed = store
        .claim("test", 10, std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].workflow, "nightly");
}
