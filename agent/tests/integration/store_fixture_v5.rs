//! The schema version 5 fixture (runs indexed by repository; the last version whose claims
//! carry no owner or lease) must open with the current code. The v1 fixture and its rules
//! live in `store_fixture.rs`.
//!
//! To (re)write it — only ever with the code of schema version 5 — run
//! `AGENT_WRITE_STORE_FIXTURE=1 cargo test -p agent --test integration -- --ignored store_fixture_v5::write_v5_fixture`.

use crate::common::store_fixture::{fixture, header_version, write_interrupted_run_fixture};
use agent::store::{Db, RunStatus, migrations};

#[test]
#[ignore = "writes the fixture; run by hand with AGENT_WRITE_STORE_FIXTURE=1"]
fn write_v5_fixture() {
    write_interrupted_run_fixture(5);
}

#[test]
fn v5_fixture_opens_with_current_code() {
    let source = fixture(5);
    assert_eq!(header_version(&source), 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.sqlite3");
    std::fs::copy(&source, &path).expect("copy");
    let store = Db::open(&path).expect("open");
    assert_eq!(
        store.schema_version().expect("version"),
        migrations::LATEST_VERSION
    );
    let runs = store
        .list_runs(&agent::store::RunFilter::default(), 10)
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Interrupted);
    assert_eq!(
        store.interrupted_steps(runs[0].id).expect("steps"),
        [("boom".to_string(), 1)]
    );
}

/// Migration 6 on a version-5 file: runs gain no workflow file (they find theirs by name),
/// no claim owner, no lease and no cancel request; a run claimed by a version-5 daemon
/// (a claim without lease) counts as lapsed and is reclaimed.
#[test]
fn v5_runs_open_without_file_owner_or_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.sqlite3");
    std::fs::copy(fixture(5), &path).expect("copy");
    {
        // As a version-5 daemon killed mid-run leaves it: the run running, no lease.
        let old = rusqlite::Connection::open(&path).expect("open at 5");
        old.execute("UPDATE runs SET status = 'running'", [])
            .expect("running");
    }
    let mut store = Db::open(&path).expect("open");
    let runs = store
        .list_runs(&agent::store::RunFilter::default(), 10)
        .expect("runs");
    assert_eq!(runs.len(), 1);
    for run in &runs {
        assert_eq!(run.workflow_file, None);
        assert_eq!(run.claim_owner, None);
        assert_eq!(run.lease_expires_at, None);
        assert!(!run.cancel_requested);
    }
    let reclaimed = store.reclaim_expired(chrono::Utc::now()).expect("reclaim");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].workflow, "build");
}
