//! The schema version 3 fixture (a step's `queued_ms`) must open with the current code and
//! keep what it holds. The v1 fixture and its rules live in `store_fixture.rs`.
//!
//! To (re)write it — only ever with the code of schema version 3 — run
//! `AGENT_WRITE_STORE_FIXTURE=1 cargo test -p agent --test integration -- --ignored store_fixture_v3::write_v3_fixture`.

use crate::common::store_fixture::{fixture, header_version};
use agent::store::{
    Db, NewRun, RunFilter, RunFinish, RunStatus, StepFinish, StepStart, StepStatus, Trigger,
    TriggerKind, migrations,
};

#[test]
#[ignore = "writes the fixture; run by hand with AGENT_WRITE_STORE_FIXTURE=1"]
fn write_v3_fixture() {
    if std::env::var_os("AGENT_WRITE_STORE_FIXTURE").is_none() {
        return;
    }
    assert_eq!(
        migrations::LATEST_VERSION,
        3,
        "the v3 fixture must be written by the code of schema version 3"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite3");
    {
        let mut store = Db::open_at_version(&path, 3).expect("open");
        let mut run = NewRun::new("build", Trigger::new(TriggerKind::Manual));
        run.repo = Some("app".into());
        let id = store.enqueue_run(&run).expect("enqueue").run_id();
        store.mark_running(id).expect("running");
        let start = StepStart {
            stage: "s".into(),
            step_id: "compile".into(),
            attempt: 1,
        };
        store.record_step_started(id, &start).expect("start");
        let mut finish = StepFinish::new("s", "compile", 1, StepStatus::Succeeded);
        finish.queued_ms = Some(1250);
        store
            .record_step_finished(id, &finish)
            .expect("finish step");
        store
            .finish_run(id, &RunFinish::new(RunStatus::Succeeded))
            .expect("finish");
    }
    assert_eq!(header_version(&path), 3);
    assert!(!path.with_extension("sqlite3-wal").exists());
    std::fs::copy(&path, fixture(3)).expect("copy fixture");
}

/// Guards the step's stored admission wait across versions.
#[test]
fn v3_fixture_opens_with_current_code() {
    let source = fixture(3);
    assert_eq!(header_version(&source), 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.sqlite3");
    std::fs::copy(&source, &path).expect("copy");
    let store = Db::open(&path).expect("open");
    assert_eq!(
        store.schema_version().expect("version"),
        migrations::LATEST_VERSION
    );
    let runs = store.list_runs(&RunFilter::default(), 10).expect("runs");
    assert_eq!(runs.len(), 1);
    let steps = store.get_steps(runs[0].id).expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].step_id, "compile");
    assert_eq!(steps[0].queued_ms, Some(1250));
    assert!(steps[0].started_at.is_some());
}
