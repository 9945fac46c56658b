//! Versioned, forward-only schema migrations.
//!
//! `PRAGMA user_version` holds the schema version of a database file. Migration `n` (1-based,
//! `MIGRATIONS[n - 1]`) takes a database from version `n - 1` to `n`, in its own
//! `BEGIN IMMEDIATE` transaction that also bumps `user_version`, so a crash mid-migration
//! leaves the file at the previous version. Never edit a migration that has shipped: add a new
//! one. Every version keeps a fixture database under `agent/tests/fixtures/` that must open.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The schema, one entry per version.
const MIGRATIONS: &[&str] = &[
    // Version 1: the first schema.
    r#"
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow          TEXT    NOT NULL,
    repo              TEXT,
    status            TEXT    NOT NULL CHECK (status IN
                        ('queued','running','succeeded','failed','cancelled','interrupted')),
    trigger_kind      TEXT    NOT NULL,
    trigger_commit    TEXT,
    trigger_branch    TEXT,
    scheduled_for     INTEGER,
    parameters        TEXT    NOT NULL DEFAULT '{}',
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    claimed_at        INTEGER,
    error             TEXT,
    priority          INTEGER NOT NULL DEFAULT 0,
    concurrency_group TEXT,
    dedup_key         TEXT    UNIQUE,
    retry_of          INTEGER,
    context           TEXT,
    report            TEXT
);
CREATE INDEX runs_by_status   ON runs (status, id);
CREATE INDEX runs_by_group    ON runs (concurrency_group, status, id)
    WHERE concurrency_group IS NOT NULL;
CREATE INDEX runs_by_workflow ON runs (workflow, id);

CREATE TABLE steps (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT    NOT NULL,
    stage       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    exit_code   INTEGER,
    error_class TEXT,
    outputs     TEXT,
    cached      INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER,
    finished_at INTEGER,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    exit_code   INTEGER,
    error_class TEXT,
    error       TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE contexts (
    repo       TEXT    NOT NULL,
    workflow   TEXT    NOT NULL,
    context    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo, workflow)
);

CREATE TABLE cache_entries (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);

CREATE TABLE repo_heads (
    repo       TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    commit_id  TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo, branch)
);

CREATE TABLE cron_fires (
    schedule_key TEXT    NOT NULL,
    slot         INTEGER NOT NULL,
    fired_at     INTEGER NOT NULL,
    run_id       INTEGER,
    PRIMARY KEY (schedule_key, slot)
);

CREATE TABLE deliveries (
    id              TEXT    PRIMARY KEY,
    webhook         TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    run_id          INTEGER,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending','delivered','failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id TEXT    NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
"#,
    // Version 2: anomalies, and the delivery ids of inbound push hooks already handled.
    r#"
CREATE TABLE anomalies (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    workflow   TEXT    NOT NULL,
    repo       TEXT,
    run_id     INTEGER,
    step_id    TEXT    NOT NULL DEFAULT '',
    message    TEXT    NOT NULL,
    details    TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX anomalies_once ON anomalies (kind, run_id, step_id);
CREATE INDEX anomalies_by_workflow ON anomalies (workflow, id);

CREATE TABLE hook_deliveries (
    source      TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    repo        TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX hook_deliveries_by_age ON hook_deliveries (received_at);
"#,
    // Version 3: how long a step waited for admission before its first process started.
    r#"
ALTER TABLE steps ADD COLUMN queued_ms INTEGER;
"#,
    // Version 4: how many times a step was cut off by a daemon crash (recovery stops
    // resuming a run that keeps dying in the same step).
    r#"
ALTER TABLE steps ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0;
"#,
    // Version 5: run listings filtered by repository read an index instead of every run.
    r#"
CREATE INDEX runs_by_repo ON runs (repo, id);
"#,
    // Version 6: a run records the workflow file it executes; a claim carries its owner and a
    // lease expiry, and a cancel request waits on the run for its owner to see it.
    r#"
ALTER TABLE runs ADD COLUMN workflow_file    TEXT;
ALTER TABLE runs ADD COLUMN claim_owner      TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_by_lease ON runs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
"#,
    // Version 7: a run's end is queued un-rendered in the outbox, in the transaction that
    // ends the run; the notifier renders it into deliveries later.
    r#"
CREATE TABLE outbox_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
"#,
    TRIGGER_EVENT,
    COMMIT_MESSAGES,
    // Version 10: step artifacts (the archives are files named by `digest` beside the
    // database; a row goes with its run, or earlier at `expires_at`).
    r#"
CREATE TABLE artifacts (
    run_id          INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id         TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    files           INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    from_workflow   TEXT,
    from_run        TEXT,
    from_name       TEXT,
    PRIMARY KEY (run_id, step_id, name)
);
CREATE INDEX artifacts_by_name ON artifacts (name, run_id);
CREATE INDEX artifacts_by_expiry ON artifacts (expires_at) WHERE expires_at IS NOT NULL;
"#,
    // Version 11: the fleet's tables, also kept by a lone agent: `nodes` (each agent's
    // heartbeat, for `agent nodes`) and `leases` (named, time-limited roles with a fencing
    // token: who evaluates cron, who polls a repository, who delivers webhooks).
    r#"
CREATE TABLE nodes (
    name         TEXT   PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    lease_ms     INTEGER NOT NULL,
    capacity     INTEGER NOT NULL,
    running      INTEGER NOT NULL DEFAULT 0,
    address      TEXT,
    version      TEXT
);

CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    token      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // Version 12: step logs kept in the store, in pieces keyed by their byte offset (a fleet
    // on a shared store serves any node's logs; a lone agent keeps them in files only).
    r#"
CREATE TABLE log_chunks (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT    NOT NULL,
    byte_offset INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id, byte_offset)
);
"#,
    // Version 13: a delivery being sent is marked with the outbox lease's holder and fencing
    // token before its HTTP request, and the mark is cleared with the attempt's record.
    r#"
ALTER TABLE deliveries ADD COLUMN sending_holder TEXT;
ALTER TABLE deliveries ADD COLUMN sending_token INTEGER;
"#,
];

/// Version 8: what a run's trigger says beyond kind, commit and branch (the ref pushed, e.g.
/// a tag, and the pull request: number, base, head, fork), as JSON.
const TRIGGER_EVENT: &str = r#"
ALTER TABLE runs ADD COLUMN trigger_event TEXT;
"#;

/// Version 9: a run shows its commit's message (the summary line; in a table of its own, so
/// listings never read past a run's large report to find it), and run listings filtered by
/// branch or trigger kind read an index instead of every run.
const COMMIT_MESSAGES: &str = r#"
CREATE TABLE run_messages (
    run_id  INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    message TEXT    NOT NULL
);
CREATE INDEX runs_by_branch  ON runs (trigger_branch, id);
CREATE INDEX runs_by_trigger ON runs (trigger_kind, id);
"#;

/// The schema version this build writes.
pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// Reads `PRAGMA user_version`.
pub(crate) fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Applies every migration above the file's version, up to `target`, one transaction each.
pub(crate) fn migrate(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    let found = current_version(conn)?;
    if found > LATEST_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: LATEST_VERSION,
        });
    }
    for version in (found + 1)..=target.min(LATEST_VERSION) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the write lock.
        if current_version(&tx)? >= version {
            continue;
        }
        let index = usize::try_from(version - 1).expect("versions start at 1");
        tx.execute_batch(MIGRATIONS[index])?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}
