//! Recovery on boot: what happens to runs that were running when the daemon died.
//!
//! The store marks them interrupted ([`Store::mark_interrupted_on_boot`], which also marks
//! their running steps interrupted and releases every claim). Then, by rule, never blindly:
//! a run whose interrupted steps are all idempotent (the default) goes back to the queue and
//! resumes from its first unfinished step (the finished steps' reports, outputs and the
//! saved context are handed to the engine); a run with an interrupted step marked
//! `idempotent: false` stays `interrupted` until `agent retry`. Queued and finished runs need
//! nothing: they are durable as they are.

use std::path::Path;

use dsl::model::{Step, StepKind};

use super::mirror::Mirror;
use crate::store::{RunRecord, StepStatus, Store, StoreError};

/// What recovery did with one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Back in the queue, to resume.
    Resumed,
    /// Left interrupted: these steps were running and are not idempotent.
    Waiting(Vec<String>),
}

/// Marks running runs interrupted and resumes those that may be resumed. Returns each
/// interrupted run with what was done.
pub fn recover(
    store: &mut Store,
    state_dir: &Path,
) -> Result<Vec<(RunRecord, Recovered)>, StoreError> {
    let interrupted = store.mark_interrupted_on_boot()?;
    let mut out = Vec::new();
    for run in interrupted {
        let steps = store.get_steps(run.id)?;
        let cut: Vec<String> = steps
            .iter()
            .filter(|s| s.status == StepStatus::Interrupted)
            .map(|s| s.step_id.clone())
            .collect();
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

/// The ids of the `idempotent: false` steps of the run's workflow at its commit, or `None`
/// when the workflow cannot be read (the resumed run then fails with the reason).
fn non_idempotent_steps(state_dir: &Path, run: &RunRecord) -> Option<Vec<String>> {
    let repo = run.repo.as_deref()?;
    let commit = run.trigger.commit.as_deref()?;
    let mirror = Mirror::open(state_dir, repo).ok()?;
    let oid = mirror.resolve_commit(commit).ok()?;
    let files = mirror.read_workflow_files(oid).ok()?;
    let wf = files.iter().find_map(|f| {
        dsl::parse_str(&f.path, &f.text)
            .ok()
            .map(|(wf, _)| wf)
            .filter(|wf| wf.name.value == run.workflow)
    })?;
    fn walk(steps: &[Step], out: &mut Vec<String>) {
        for s in steps {
            if !s.idempotent.value {
                out.push(s.id.value.clone());
            }
            if let StepKind::Decision(d) = &s.kind {
                for b in &d.branches {
                    walk(&b.steps, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for stage in &wf.stages {
        walk(&stage.steps, &mut out);
    }
    Some(out)
}
