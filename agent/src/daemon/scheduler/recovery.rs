//! Recovery on boot: what happens to runs that were running when the daemon died.
//!
//! The store marks them interrupted ([`Db::reclaim_expired`], which also marks
//! their running steps interrupted, counts the interruption on each of those steps and
//! releases every claim). Then, for each of them:
//! - Processes the dead daemon's steps left behind are ended first (SIGKILL). A step that
//!   printed nothing does not notice its daemon's death; left alone it would run on beside
//!   its resumed copy. They are found by their `AGENT_RUN_MARKER`, which the daemon scopes
//!   by its state directory (not its pid: see [`marker_scope`]), so a restarted daemon
//!   finds them; each is re-checked through a pidfd before it is signalled.
//! - A run whose cancellation had been requested (a newer run of its group replaced it with
//!   `overlap: cancel_previous`, marked in the transaction that queued that run) ends
//!   cancelled instead of resuming.
//! - A run that was interrupted [`MAX_INTERRUPTIONS`] times during the same step fails
//!   ("interrupted 3 times during step X; not resumed again"): a step that takes the
//!   daemon down with it would otherwise be resumed, and crash it, forever.
//! - By rule, never blindly: a run whose interrupted steps are all idempotent (the default)
//!   goes back to the queue and resumes from its first unfinished step (the finished
//!   steps' reports, outputs and the saved context are handed to the engine); a run with an
//!   interrupted step marked `idempotent: false` stays `interrupted` until `agent retry`.
//!   A step's start is recorded before its process is spawned, so a step that may have run
//!   is always seen here.
//!
//! Queued and finished runs need nothing: they are durable as they are.

use std::path::Path;

use dsl::model::{Step, StepKind};

use crate::daemon::catalog::Catalog;
use crate::daemon::run::mirror::Mirror;
use crate::store::{Db, RunFinish, RunRecord, RunStatus, StoreError};

/// How many times a run may be cut off by a crash during the same step: at the last of
/// them it fails instead of being resumed again.
pub(crate) const MAX_INTERRUPTIONS: u32 = 3;

/// What recovery did with one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// Back in the queue, to resume.
    Resumed,
    /// Left interrupted: these steps were running and are not idempotent.
    Waiting(Vec<String>),
    /// Failed: interrupted [`MAX_INTERRUPTIONS`] times during this step.
    GaveUp(String),
    /// Cancelled: its cancellation had been requested (a newer run of its group with
    /// `overlap: cancel_previous`) before the daemon stopped.
    Cancelled,
}

/// The scope of the run markers of the daemon on `state_dir` (see
/// [`EngineConfig::marker_scope`](crate::engine::EngineConfig::marker_scope)): `s` and a
/// 64-bit FNV-1a hash of the directory's canonical path, stable across restarts and builds,
/// and different for two daemons on two state directories.
pub(crate) fn marker_scope(state_dir: &Path) -> String {
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("s{hash:016x}")
}

/// Marks running runs interrupted, ends what their steps left running, and resumes those
/// that may be resumed. Returns each interrupted run with what was done.
pub(crate) fn recover(
    store: &mut Db,
    state_dir: &Path,
) -> Result<Vec<(RunRecord, Recovered)>, StoreError> {
    recover_with(store, state_dir, Reclaim::All)
}

/// Which running runs recovery takes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// Every one: the boot of a daemon on its own SQLite file. The state-dir lock is held,
    /// so whoever claimed runs before this boot is gone and every lease found has lapsed.
    All,
    /// The boot of a node on a shared database: the claims whose lease lapsed at `now`, and
    /// every claim of `own` (this node's name: a restarted node takes its runs back at once).
    /// Processes this state directory's previous daemon left are ended.
    Fleet {
        /// The time leases are compared with.
        now: chrono::DateTime<chrono::Utc>,
        /// This node's name.
        own: String,
    },
    /// A running node's periodic look: the claims of other nodes whose lease lapsed at
    /// `now`. Their processes ran on another node: nothing local is ended.
    Lapsed(chrono::DateTime<chrono::Utc>),
}

/// [`recover`] for the runs `reclaim` names.
pub(crate) fn recover_with(
    store: &mut Db,
    state_dir: &Path,
    reclaim: Reclaim,
) -> Result<Vec<(RunRecord, Recovered)>, StoreError> {
    let (interrupted, sweep) = match &reclaim {
        Reclaim::All => (
            store.reclaim_expired(chrono::DateTime::<chrono::Utc>::MAX_UTC)?,
            true,
        ),
        Reclaim::Fleet { now, own } => {
            // Whatever this state directory's previous daemon left running is an orphan now,
            // also the steps of runs another node has taken over meanwhile (that node runs
            // them again): every process carrying this scope's run marker ends before any
            // run starts here.
            let prefix = crate::engine::run_marker(Some(&marker_scope(state_dir)), "");
            let killed = runners::sweep_var_prefix(runners::RUN_MARKER_VAR, &prefix, libc::SIGKILL);
            if killed > 0 {
                tracing::warn!(
                    processes = killed,
                    "ended processes the previous daemon of this state directory left running"
                );
            }
            store.lapse_claims_of(own)?;
            (store.reclaim_expired(*now)?, false)
        }
        Reclaim::Lapsed(now) => (store.reclaim_expired(*now)?, false),
    };
    let scope = marker_scope(state_dir);
    let mut out = Vec::new();
    for run in interrupted {
        // Every process carrying the run's marker, wherever it went (setsid included).
        if sweep {
            let marker = crate::engine::run_marker(Some(&scope), &run.id.to_string());
            let killed = runners::sweep_var(runners::RUN_MARKER_VAR, &marker, libc::SIGKILL);
            if killed > 0 {
                tracing::warn!(run = %run.id, processes = killed,
                    "ended processes the interrupted run's steps left running");
            }
        } else {
            tracing::warn!(run = %run.id, workflow = %run.workflow,
                "took back a run whose node stopped renewing its lease");
        }
        if run.cancel_requested {
            let message = "cancelled by a newer run (cancel_previous) before the daemon stopped";
            tracing::info!(run = %run.id, workflow = %run.workflow, "{message}");
            let mut finish = RunFinish::new(RunStatus::Cancelled);
            finish.error = Some(message.into());
            store.finish_run(run.id, &finish)?;
            out.push((run, Recovered::Cancelled));
            continue;
        }
        let steps = store.interrupted_steps(run.id)?;
        if let Some((step, _)) = steps.iter().find(|(_, n)| *n >= MAX_INTERRUPTIONS) {
            let message = format!(
                "interrupted {MAX_INTERRUPTIONS} times during step {step}; not resumed again"
            );
            tracing::error!(run = %run.id, workflow = %run.workflow, "{message}");
            let mut finish = RunFinish::new(RunStatus::Failed);
            finish.error = Some(message);
            store.finish_run(run.id, &finish)?;
            out.push((run, Recovered::GaveUp(step.clone())));
            continue;
        }
        let cut: Vec<String> = steps.into_iter().map(|(id, _)| id).collect();
        let unsafe_steps: Vec<String> = match non_idempotent_steps(state_dir, &run) {
            Some(ids) => cut.into_iter().filter(|s| ids.contains(s)).collect(),
            None => Vec::new(),
        };
        if unsafe_steps.is_empty() {
            store.resume_run(run.id)?;
            tracing::info!(run = %run.id, workflow = %run.workflow, "resuming interrupted run");
            out.push((run, Recovered::Resumed));
        } else {
            tracing::warn!(run = %run.id, workflow = %run.workflow, steps = ?unsafe_steps,
                "interrupted run waits for `agent retry`: a non-idempotent step was running");
            out.push((run, Recovered::Waiting(unsafe_steps)));
        }
    }
    Ok(out)
}

/// The ids of the `idempotent: false` steps of the run's workflow at its commit (steps of
/// the sub-workflows it calls as `call/step`, as the engine names them), or `None` when the
/// workflow cannot be read (the resumed run then fails with the reason, before any step).
fn non_idempotent_steps(state_dir: &Path, run: &RunRecord) -> Option<Vec<String>> {
    let repo = run.repo.as_deref()?;
    let mirror = Mirror::open(state_dir, repo).ok()?;
    // The commit the run checks out (as the run task resolves it).
    let spec = match (&run.trigger.commit, &run.trigger.branch) {
        (Some(c), _) => c.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => mirror.default_branch().unwrap_or_else(|| "HEAD".into()),
    };
    let oid = mirror.resolve_commit(&spec).ok()?;
    let catalog = Catalog::at(&mirror, oid).ok()?;
    let parsed: Vec<(String, dsl::Workflow)> = catalog
        .valid()
        .filter_map(|(path, wf)| {
            let stem = Path::new(path).file_stem()?.to_string_lossy().into_owned();
            Some((stem, wf.clone()))
        })
        .collect();
    let (_, wf) = catalog.by_name(&run.workflow)?;
    /// Sub-workflows nest at most this deep here (a cycle is invalid anyway).
    const MAX_DEPTH: usize = 8;
    fn walk(
        steps: &[Step],
        prefix: &str,
        depth: usize,
        files: &[(String, dsl::Workflow)],
        out: &mut Vec<String>,
    ) {
        for s in steps {
            let id = format!("{prefix}{}", s.id.value);
            if !s.idempotent.value {
                out.push(id.clone());
            }
            match &s.kind {
                StepKind::Decision(d) => {
                    for b in &d.branches {
                        walk(&b.steps, prefix, depth, files, out);
                    }
                }
                StepKind::Workflow(name) if depth < MAX_DEPTH => {
                    if let Some((_, sub)) = files.iter().find(|(stem, _)| *stem == name.value) {
                        let inner = format!("{id}/");
                        for stage in &sub.stages {
                            walk(&stage.steps, &inner, depth + 1, files, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for stage in &wf.stages {
        walk(&stage.steps, "", 0, &parsed, &mut out);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The marker scope depends on the state directory only: the same after a restart (so
    /// leftover processes are found), different for another directory (so another daemon's
    /// processes are never touched).
    #[test]
    fn marker_scopes_follow_the_state_directory() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        assert_eq!(marker_scope(a.path()), marker_scope(a.path()));
        assert_ne!(marker_scope(a.path()), marker_scope(b.path()));
        assert!(marker_scope(a.path()).starts_with('s'));
        assert_eq!(marker_scope(a.path()).len(), 17);
    }

    /// A running run that a newer run's `cancel_previous` marked before the daemon died is
    /// cancelled at boot, not resumed; an unmarked one of another group resumes.
    #[test]
    fn a_run_marked_for_cancel_is_cancelled_at_boot_not_resumed() {
        use crate::store::overlap::Overlap;
        use crate::store::{NewRun, Trigger, TriggerKind};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open_in_dir(dir.path()).expect("open");
        let grouped = |group: &str, overlap: Option<Overlap>| NewRun {
            concurrency_group: Some(group.into()),
            overlap,
            ..NewRun::new("w", Trigger::new(TriggerKind::Manual))
        };
        let lease = std::time::Duration::from_secs(60);
        let mut running = Vec::new();
        for group in ["a", "b"] {
            let id = db
                .enqueue_run(&grouped(group, None))
                .expect("enqueue")
                .run_id();
            db.claim("old-daemon", 1, lease).expect("claim");
            db.mark_running(id).expect("running");
            running.push(id);
        }
        let newer = db
            .enqueue(&grouped("a", Some(Overlap::CancelPrevious)))
            .expect("enqueue");
        assert!(newer.queued().is_some());
        let recovered = recover(&mut db, dir.path()).expect("recover");
        let by_id = |id| {
            recovered
                .iter()
                .find(|(r, _)| r.id == id)
                .map(|(_, what)| what.clone())
        };
        assert_eq!(by_id(running[0]), Some(Recovered::Cancelled));
        assert_eq!(by_id(running[1]), Some(Recovered::Resumed));
        let run = db.get_run(running[0]).expect("get").expect("run");
        assert_eq!(run.status, RunStatus::Cancelled);
    }
}
