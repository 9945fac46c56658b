//! The schema version 4 fixture (steps count their crash interruptions) must open with the
//! current code. The v1 fixture and its rules live in `store_fixture.rs`.
//!
//! To (re)write it — only ever with the code of schema version 4 — run
//! `AGENT_WRITE_STORE_FIXTURE=1 cargo test -p agent --test integration -- --ignored store_fixture_v4::write_v4_fixture`.

use crate::common::store_fixture::{fixture, header_version, write_interrupted_run_fixture};
use agent::store::{Db, RunStatus, migrations};

#[test]
#[ignore = "writes the fixture; run by hand with AGENT_WRITE_STORE_FIXTURE=1"]
fn write_v4_fixture() {
    write_interrupted_run_fixture(4);
}

#[test]
fn v4_fixture_opens_with_current_code() {
    let source = fixture(4);
    assert_eq!(header_version(&source), 4);
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
