//! The durable state of the daemon: runs and their steps, the queue, workflow contexts, the
//! step cache, the last commit seen per branch, cron slots already fired, the webhook outbox,
//! detected anomalies and the ids of inbound push hooks already handled (`monitoring.rs`).
//!
//! [`Store`] (a cloneable async handle over the connection [`Db`]) is the one interface to it; nothing outside this module writes SQL. SQLite
//! (bundled) is the embedded backend: WAL journal, a busy timeout, `BEGIN IMMEDIATE` for every
//! write (so writers queue on the lock instead of failing with `database is locked` when a read
//! transaction tries to upgrade), one transaction per state transition, and versioned
//! forward-only migrations (see [`migrations`]). Timestamps are stored as Unix milliseconds,
//! JSON columns as text.
//!
//! The API is shaped so that a shared backend (Postgres, for a fleet of agents) can sit behind
//! it later: the queue is claimed with [`Db::claim`] (an owner and a lease, renewed with
//! [`Db::renew`], taken back by [`Db::reclaim_expired`]) rather than read and then
//! updated, cancel requests wait on the run for its owner ([`Db::request_cancel`]), cron
//! slots are claimed with a unique constraint, and pushes are deduplicated by key. Writes go
//! to one writer thread in order, reads to pooled read connections on the blocking pool
//! (`handle.rs`), so no SQLite call runs on an async worker thread. The overlap rule is
//! [`overlap::decide`], applied inside every enqueue transaction (each [`NewRun`] carries
//! its mode: [`Db::enqueue`], [`Db::enqueue_run`], [`Db::record_push`],
//! [`Db::enqueue_scheduled_run`]). What the store does not own: the rest of the scheduling policy
//! (limits, admission), which belongs to the daemon's scheduler, and log files, which live
//! beside the database.
//!
//! Layout: `records.rs` (the row types), `error.rs` (no backend type in it), `sqlite/` (the
//! backend, one file per concern), `handle.rs` (the [`Store`] handle), `methods.rs` (its typed
//! methods), `readers.rs`, `overlap.rs`.

mod codec;
mod db;
mod dispatch;
mod error;
mod handle;
mod logs;
mod methods;
pub mod overlap;
mod postgres;
mod readers;
mod records;
mod sqlite;
#[doc(hidden)]
pub mod test_pg;

pub use db::Db;
pub use error::StoreError;
pub use handle::Store;
pub use logs::{LogAppend, LogRead};
pub(crate) use readers::Readers;

pub use records::{
    AttemptRecord, CacheEntry, Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryStatus,
    Enqueued, Fence, NewDelivery, NewRun, PullRequestEvent, Retention, RunEvent, RunFilter,
    RunFinish, RunId, RunRecord, RunStatus, RunSummary, StepFinish, StepRecord, StepStart,
    StepStatus, Trigger, TriggerKind,
};
pub(crate) use sqlite::{
    AnomalyRecord, BUSY_TIMEOUT, DB_FILE_NAME, HOOK_DELIVERY_TTL, NodeRecord, set_busy_timeout,
};
pub use sqlite::{
    ArtifactRecord, Heartbeat, NewAnomaly, NodeBeat, RunSample, StepDuration, StepHistory,
    StepOutputSample, migrations,
};
