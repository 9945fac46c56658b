//! The schema version 2 fixture (anomalies, inbound hook delivery ids) must open with the
//! current code. The v1 fixture and its rules live in `store_fixture.rs`.
//!
//! To (re)write it — only ever with the code of schema version 2 — run
//! `AGENT_WRITE_STORE_FIXTURE=1 cargo test -p agent --test integration -- --ignored store_fixture_v2::write_v2_fixture`.

use crate::common::store_fixture::{fixture, header_version};
use agent::store::{
    Db, NewAnomaly, NewRun, RunFilter, RunFinish, RunId, RunStatus, Trigger, TriggerKind,
    migrations,
};
use serde_json::json;

fn slow(run: RunId) -> NewAnomaly {
    NewAnomaly {
        kind: "slow_run".into(),
        workflow: "build".into(),
        repo: Some("app".into()),
        run_id: Some(run),
        step: None,
        message: "run 1 of `build` took 3.00 s".into(),
        details: json!({"duration_ms": 3000, "p95_ms": 1000}),
    }
}

#[test]
#[ignore = "writes the fixture; run by hand with AGENT_WRITE_STORE_FIXTURE=1"]
fn write_v2_fixture() {
    if std::env::var_os("AGENT_WRITE_STORE_FIXTURE").is_none() {
        return;
    }
    assert_eq!(
        migrations::LATEST_VERSION,
        2,
        "the v2 fixture must be written by the code of schema version 2"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite3");
    {
        let mut store = Db::open_at_version(&path, 2).expect("open");
        let mut run = NewRun::new("build", Trigger::new(TriggerKind::Manual));
        run.repo = Some("app".into());
        let id = store.enqueue_run(&run).expect("enqueue").run_id();
        store.mark_running(id).expect("running");
        let mut finish = RunFinish::new(RunStatus::Succeeded);
        finish.report = Some(json!({"duration_ms": 3000}));
        store.finish_run(id, &finish).expect("finish");
        store
            .record_anomaly(&slow(id))
            .expect("anomaly")
            .expect("new");
        assert!(
            store
                .record_hook_delivery(
                    "github",
                    "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                    Some("app")
                )
                .expect("hook")
        );
    }
    assert_eq!(header_version(&path), 2);
    assert!(!path.with_extension("sqlite3-wal").exists());
    std::fs::copy(&path, fixture(2)).expect("copy fixture");
}

#[test]
fn v2_fixture_opens_with_current_code() {
    let source = fixture(2);
    assert_eq!(header_version(&source), 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.sqlite3");
    std::fs::copy(&source, &path).expect("copy");
    let mut store = Db::open(&path).expect("open");
    assert_eq!(
        store.schema_version().expect("version"),
        migrations::LATEST_VERSION
    );
    let runs = store.list_runs(&RunFilter::default(), 10).expect("runs");
    assert_eq!(runs.len(), 1);
    let run = runs[0].id;
    let listed = store.list_anomalies(None, 10).expect("anomalies");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].anomaly, slow(run));
    // The same anomaly is not recorded twice; the known delivery is a replay.
    assert!(store.record_anomaly(&slow(run)).expect("again").is_none());
    assert!(
        !store
            .record_hook_delivery("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958", None)
            .expect("replay")
    );
    let samples = store
        .recent_run_samples("build", Some("app"), run, true, 5)
        .expect("samples");
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].duration_ms, Some(3000));
}
