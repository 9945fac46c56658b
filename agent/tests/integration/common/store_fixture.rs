//! What the store-fixture tests share: where the fixture database of a schema version lives
//! and how to read a closed database file's schema version.

use std::path::{Path, PathBuf};

use agent::store::{Db, NewRun, StepStart, Trigger, TriggerKind, migrations};

/// The committed fixture database written by the code of schema `version`.
pub fn fixture(version: i64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("store_v{version}.sqlite3"))
}

/// `PRAGMA user_version` straight from a closed file's header (bytes 60..64, big-endian).
pub fn header_version(path: &Path) -> i64 {
    let bytes = std::fs::read(path).expect("read fixture");
    i64::from(i32::from_be_bytes(
        bytes[60..64].try_into().expect("4 bytes"),
    ))
}

/// Writes the fixture of schema `version`: one run of `build` (repo `app`) interrupted in
/// its step `boom` by a crash, as the next boot leaves it. Only with `AGENT_WRITE_STORE_FIXTURE`
/// set, and only by the code of that schema version.
pub fn write_interrupted_run_fixture(version: i64) {
    if std::env::var_os("AGENT_WRITE_STORE_FIXTURE").is_none() {
        return;
    }
    assert_eq!(
        migrations::LATEST_VERSION,
        version,
        "the v{version} fixture must be written by the code of schema version {version}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite3");
    {
        let mut store = Db::open_at_version(&path, version).expect("open");
        let mut run = NewRun::new("build", Trigger::new(TriggerKind::Manual));
        run.repo = Some("app".into());
        let id = store.enqueue_run(&run).expect("enqueue").run_id();
        store.mark_running(id).expect("running");
        let step = StepStart {
            stage: "s".into(),
            step_id: "boom".into(),
            attempt: 1,
        };
        store.record_step_started(id, &step).expect("start");
        // A crash: the next boot interrupts the run and counts it on the step.
        store
            .reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            .expect("boot");
    }
    assert_eq!(header_version(&path), version);
    assert!(!path.with_extension("sqlite3-wal").exists());
    std::fs::copy(&path, fixture(version)).expect("copy fixture");
}
