//! Running one run: [`task`] (prepare → engine → finish), [`artifacts`] (step artifacts in
//! the store), [`committer`] (the committer
//! identity of its steps' commits), [`logs`] (the capped step log files), [`workspace`] (a checkout of an exact commit per run) and [`mirror`] (a cached
//! bare mirror per repository, and the redaction of credentials in its URLs).

pub(crate) mod artifacts;
pub(crate) mod committer;
pub(crate) mod log_ship;
pub(crate) mod logs;
pub mod mirror;
pub(crate) mod task;
pub(crate) mod workspace;
