//! The state of one run as its stages and steps see it ([`RunCtx`]: the workflow, the
//! bookkeeping behind a mutex, the cancel handles) and the pure judgements on it (stage and
//! run status, the parts of the report). `run`, `stage` and `step` all build on this file;
//! it builds on none of them, so the only cycle left in the engine is the sub-workflow
//! recursion (a step runs a workflow).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use dsl::expr::JobStatus;
use dsl::model::Workflow;
use serde_json::{Map, Value, json};

use super::events::EventSender;
use super::failure::Disposition;
use super::scope::{RunData, env_text};
use super::{Cancel, Engine};
use crate::model::mask::Masker;
use crate::model::report::{
    CalledWorkflow, RollbackReport, RunStatus, StageReport, StepReport, StepStatus,
};

/// Longest time limit handed on (about 100 years): larger ones mean "none" in practice
/// and would overflow clock arithmetic.
pub(crate) const MAX_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Where a finished step's report goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A step of stage `stage` at position `index`.
    Stage { stage: usize, index: usize },
    /// A step run by a decision in stage `stage` (appended to that stage).
    Append { stage: usize },
    /// A step of the workflow's `rollback`.
    Rollback,
    /// A `compensate` step.
    Compensation,
    /// Error-handler steps: events only.
    Discard,
    /// Instance `pos` of the matrix step at `index` of stage `stage` (kept aside, then put
    /// in the step's place when the stage ends).
    Instance {
        stage: usize,
        index: usize,
        pos: usize,
    },
}

/// Mutable bookkeeping of a run (behind a mutex, never held across `.await`).
#[derive(Debug, Default)]
pub(crate) struct RunState {
    pub(crate) stages: Vec<StageReport>,
    pub(crate) rollback_steps: Vec<StepReport>,
    /// `compensate` steps as they ran.
    pub(crate) compensation_steps: Vec<StepReport>,
    /// Ids of succeeded top-level and branch steps, in completion order.
    pub(crate) completed: Vec<String>,
    pub(crate) failed: bool,
    pub(crate) error: Option<String>,
    /// The class of the first failure that failed the run.
    pub(crate) error_class: Option<String>,
    pub(crate) rollback_wanted: bool,
    pub(crate) compensate_wanted: bool,
    pub(crate) timed_out: bool,
    /// Steps whose compensation ran, in the order they were undone.
    pub(crate) compensated: Vec<String>,
    /// The rollback, when it ran.
    pub(crate) rollback: Option<RollbackReport>,
    /// Reports of matrix instances: (stage, step index, instance position, report).
    pub(crate) instances: Vec<(usize, usize, usize, StepReport)>,
    /// Reports of the instances of matrix stages, by the index of their stage: they take
    /// the stage's place in the report (see [`take_parts`]).
    pub(crate) expanded: Vec<(usize, Vec<StageReport>)>,
    /// The steps of stage-matrix instances by their ids (`ID (k=v, ...)`), for their
    /// compensation.
    pub(crate) instance_steps: std::collections::HashMap<String, dsl::model::Step>,
}

/// Everything the steps of one (sub-)run share.
pub(crate) struct RunCtx<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) set: &'a dsl::Loaded,
    pub(crate) wf: &'a Workflow,
    pub(crate) run_id: Arc<str>,
    /// Prefix of step ids in events (`call/` inside a sub-workflow called by step `call`).
    pub(crate) prefix: String,
    pub(crate) workdir: PathBuf,
    pub(crate) events: EventSender,
    pub(crate) cancel: Cancel,
    pub(crate) masker: Masker,
    pub(crate) rundir: Arc<runners::RunDir>,
    /// `AGENT_RUN_ID`, `AGENT_WORKSPACE`, the run's [`RunRequest::env`] and the workflow's
    /// `env`.
    pub(crate) base_env: Vec<(String, String)>,
    /// The run's [`RunRequest::env`], handed on to sub-workflows.
    pub(crate) run_env: Arc<[(String, String)]>,
    pub(crate) data: Mutex<RunData>,
    pub(crate) state: Mutex<RunState>,
    /// End of the workflow's `metadata.timeout` (or the caller's, whichever is earlier).
    pub(crate) deadline: Option<Instant>,
    pub(crate) depth: usize,
    pub(crate) marker: Arc<str>,
    /// The user the run's steps run as (the run's own uid with `run_as_uids`); `None`: the
    /// agent's own.
    pub(crate) run_user: Option<Arc<runners::RunUser>>,
    /// Reports of steps that succeeded or were skipped in an interrupted earlier attempt
    /// of this run (top-level run only): they are not run again.
    pub(crate) resume: std::collections::HashMap<String, StepReport>,
    /// What steps wrote to `$AGENT_ENV` and `$AGENT_PATH`, for the steps after them.
    pub(crate) file_env: super::env_files::FileEnv,
    /// Where step artifacts go (`None`: a step with `artifacts:` fails).
    pub(crate) artifacts: Option<super::archive::ArtifactStore>,
    seq: AtomicU64,
}

impl RunCtx<'_> {
    /// Sets the run's extra environment: before the workflow's `env`, which may override it.
    pub(crate) fn set_run_env(&mut self, env: Arc<[(String, String)]>) {
        // `AGENT_RUN_ID` and `AGENT_WORKSPACE` come first; the workflow's `env` after.
        let at = self.base_env.len().min(2);
        self.base_env.splice(at..at, env.iter().cloned());
        self.run_env = env;
    }

    pub(super) fn data(&self) -> MutexGuard<'_, RunData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run-unique key for protocol file names.
    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The step id as events show it.
    pub(super) fn event_id(&self, id: &str) -> Arc<str> {
        if self.prefix.is_empty() {
            Arc::from(id)
        } else {
            Arc::from(format!("{}{id}", self.prefix))
        }
    }

    /// Whether the workflow timeout has passed.
    pub(super) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Stores a finished step's report.
    pub(super) fn store_report(&self, slot: Slot, report: StepReport) {
        let mut st = self.state();
        match slot {
            Slot::Stage { stage, index } => {
                if let Some(s) = st
                    .stages
                    .get_mut(stage)
                    .and_then(|s| s.steps.get_mut(index))
                {
                    *s = report;
                }
            }
            Slot::Append { stage } => {
                if let Some(s) = st.stages.get_mut(stage) {
                    s.steps.push(report);
                }
            }
            Slot::Rollback => st.rollback_steps.push(report),
            Slot::Compensation => st.compensation_steps.push(report),
            Slot::Discard => {}
            Slot::Instance { stage, index, pos } => {
                st.instances.push((stage, index, pos, report));
            }
        }
    }

    /// Applies a failure's disposition to the run.
    pub(super) fn apply(
        &self,
        disposition: Disposition,
        step_id: &str,
        class: &str,
        message: &str,
    ) {
        if !disposition.fails_run() {
            return;
        }
        {
            let mut st = self.state();
            if !st.failed {
                st.failed = true;
                st.error = Some(self.masker.mask(message).into_owned());
                st.error_class = Some(class.to_string());
            }
            match disposition {
                Disposition::Rollback if self.wf.rollback.is_some() => st.rollback_wanted = true,
                Disposition::Compensate => st.compensate_wanted = true,
                _ => {}
            }
        }
        let mut data = self.data();
        if data.status != Some(JobStatus::Cancelled) {
            data.status = Some(JobStatus::Failure);
        }
        let _ = step_id;
    }
}

/// The standard variables every step of a run sees, from `repo.*` (`name`, `full_name`,
/// `commit`, `branch`; missing ones are empty) and `run.trigger`: `CI`, `AGENT`,
/// `AGENT_REPO`, `AGENT_REPO_FULL_NAME`, `AGENT_SHA`, `AGENT_REF`, `AGENT_BRANCH`,
/// `AGENT_EVENT`, `AGENT_WORKFLOW` and `AGENT_TEMP`; for pull requests (`run.pull_request`)
/// also `AGENT_PR_NUMBER`, `AGENT_PR_BASE` and `AGENT_PR_HEAD`. `run.ref` (a tag, a pull
/// request's head ref) wins over the branch's ref for `AGENT_REF`.
pub(crate) fn standard_env(
    workflow: &str,
    repo: &Value,
    run: &Value,
    temp: &std::path::Path,
) -> Vec<(String, String)> {
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let branch = text(repo, "branch");
    // The run's own ref (a tag, a pull request's head) when it has one, else the branch's.
    let reference = match run.get("ref").and_then(Value::as_str) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ if branch.is_empty() => String::new(),
        _ => format!("refs/heads/{branch}"),
    };
    // `run.event` names pull requests (`pull_request`); else the trigger.
    let event = match run.get("event").and_then(Value::as_str) {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => text(run, "trigger"),
    };
    let pr = run.get("pull_request").filter(|p| p.is_object());
    let pr_text = |k: &str| {
        pr.and_then(|p| p.get(k))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    [
        ("CI", "true".to_string()),
        ("AGENT", "true".to_string()),
        ("AGENT_REPO", text(repo, "name")),
        ("AGENT_REPO_FULL_NAME", text(repo, "full_name")),
        ("AGENT_SHA", text(repo, "commit")),
        ("AGENT_REF", reference),
        ("AGENT_BRANCH", branch),
        ("AGENT_EVENT", event),
        ("AGENT_WORKFLOW", workflow.to_string()),
        ("AGENT_TEMP", temp.to_string_lossy().into_owned()),
    ]
    .into_iter()
    .chain(
        pr.map(|_| {
            [
                ("AGENT_PR_NUMBER", pr_text("number")),
                ("AGENT_PR_BASE", pr_text("base")),
                ("AGENT_PR_HEAD", pr_text("head")),
            ]
        })
        .into_iter()
        .flatten(),
    )
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Builds the context of a (sub-)run.
#[expect(clippy::too_many_arguments, reason = "internal constructor")]
pub(crate) fn new_ctx<'a>(
    engine: &'a Engine,
    set: &'a dsl::Loaded,
    wf: &'a Workflow,
    run_id: Arc<str>,
    prefix: String,
    workdir: PathBuf,
    events: EventSender,
    cancel: Cancel,
    masker: Masker,
    rundir: Arc<runners::RunDir>,
    parameters: Map<String, Value>,
    secrets: &Map<String, Value>,
    repo: Value,
    run_value: Value,
    context: Map<String, Value>,
    deadline: Option<Instant>,
    depth: usize,
    marker: Arc<str>,
    run_user: Option<Arc<runners::RunUser>>,
) -> Result<RunCtx<'a>, String> {
    let mut workflow = Map::new();
    workflow.insert("name".into(), json!(wf.name.value));
    workflow.insert(
        "version".into(),
        wf.version.as_ref().map_or(Value::Null, |v| json!(v.value)),
    );
    // `AGENT_TEMP`: inside the run directory, so it goes with it at the run's end.
    let temp = rundir.path().join("tmp");
    if std::fs::create_dir_all(&temp).is_ok()
        && let Some(user) = &run_user
        && let Err(err) = user.chown(&temp)
    {
        tracing::warn!(dir = %temp.display(), error = %err, "cannot give AGENT_TEMP to the run user");
    }
    let standard = standard_env(&wf.name.value, &repo, &run_value, &temp);
    let mut data = RunData::new(
        parameters,
        secrets.clone(),
        run_value,
        repo,
        Value::Object(workflow),
        Map::new(),
        context,
    );
    // The minimal environment first: the protocol variables and `env:` values win over it.
    let mut base_env = engine.step_env().to_vec();
    base_env.extend([
        ("AGENT_RUN_ID".to_string(), run_id.to_string()),
        (
            "AGENT_WORKSPACE".to_string(),
            workdir.to_string_lossy().into_owned(),
        ),
    ]);
    base_env.extend(standard);
    // `env('NAME')` falls back to this, never to the agent's own environment.
    data.base_env = base_env.clone();
    // The workflow's env, rendered once against parameters and the rest.
    if !wf.env.is_empty() {
        let env = {
            let view = data.view(&workdir);
            dsl::model::render_map(&wf.env, &view).map_err(|e| format!("workflow `env`: {e}"))?
        };
        for (k, v) in &env {
            base_env.push((k.clone(), env_text(v)));
        }
        data.roots.insert("env".into(), Value::Object(env));
    }
    // A timeout too large to represent is no timeout.
    let own = wf
        .metadata
        .timeout
        .as_ref()
        .and_then(|t| Instant::now().checked_add(t.value.min(MAX_TIMEOUT)));
    let deadline = match (deadline, own) {
        (Some(d), Some(o)) => Some(d.min(o)),
        (d, o) => d.or(o),
    };
    let stages = wf
        .stages
        .iter()
        .map(|s| StageReport {
            name: s.name.value.clone(),
            status: StepStatus::Pending,
            steps: s
                .steps
                .iter()
                .map(|st| StepReport {
                    name: st.name.as_ref().map(|n| n.value.clone()),
                    ..StepReport::pending(st.id.value.clone())
                })
                .collect(),
        })
        .collect();
    Ok(RunCtx {
        engine,
        set,
        wf,
        run_id,
        prefix,
        workdir,
        events,
        cancel,
        masker,
        rundir,
        base_env,
        run_env: Arc::from(Vec::new()),
        data: Mutex::new(data),
        state: Mutex::new(RunState {
            stages,
            ..RunState::default()
        }),
        deadline,
        depth,
        marker,
        run_user,
        resume: Default::default(),
        file_env: Default::default(),
        artifacts: None,
        seq: AtomicU64::new(0),
    })
}

/// The status of a stage from its steps.
pub(crate) fn stage_status(steps: &[StepReport], started: bool) -> StepStatus {
    if !started {
        return StepStatus::Skipped;
    }
    if steps.iter().any(|s| s.status == StepStatus::Failed) {
        StepStatus::Failed
    } else if steps.iter().any(|s| s.status == StepStatus::Cancelled) {
        StepStatus::Cancelled
    } else if !steps.is_empty() && steps.iter().all(|s| s.status == StepStatus::Skipped) {
        StepStatus::Skipped
    } else {
        StepStatus::Succeeded
    }
}

/// The final status of a (sub-)run.
pub(crate) fn final_status(ctx: &RunCtx<'_>) -> RunStatus {
    let st = ctx.state();
    if ctx.cancel.is_cancelled() {
        RunStatus::Cancelled
    } else if st.failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    }
}

/// What a (sub-)run leaves for its report: stages, rollback, compensated ids,
/// compensation steps and the error (a timeout or cancel without one gets its text).
pub(crate) type RunParts = (
    Vec<StageReport>,
    Option<RollbackReport>,
    Vec<String>,
    Vec<StepReport>,
    Option<String>,
);

/// Takes the report parts out of a finished (sub-)run; a matrix stage is listed as its
/// instances, each a stage of its own (`NAME (k=v, ...)`).
pub(crate) fn take_parts(ctx: &RunCtx<'_>, status: RunStatus) -> RunParts {
    let mut st = ctx.state();
    let mut error = st.error.take();
    if st.timed_out && error.is_none() {
        error = Some("workflow timed out".into());
    }
    if status == RunStatus::Cancelled && error.is_none() {
        error = Some("run cancelled".into());
    }
    let mut stages = std::mem::take(&mut st.stages);
    // Last stage first, so that the earlier indices stay valid.
    let mut expanded = std::mem::take(&mut st.expanded);
    expanded.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (index, instances) in expanded {
        if index < stages.len() {
            stages.splice(index..=index, instances);
        }
    }
    (
        stages,
        st.rollback.take(),
        std::mem::take(&mut st.compensated),
        std::mem::take(&mut st.compensation_steps),
        error,
    )
}

/// The report of a finished sub-run, for the step that called it.
pub(crate) fn called_report(ctx: &RunCtx<'_>, status: RunStatus) -> CalledWorkflow {
    let (stages, rollback, compensated, compensation, error) = take_parts(ctx, status);
    CalledWorkflow {
        name: ctx.wf.name.value.clone(),
        status,
        stages,
        rollback,
        compensated,
        compensation,
        error: error.map(|e| ctx.masker.mask(&e).into_owned()),
    }
}

/// The workflow's `outputs`, rendered against the end state of the run.
pub(crate) fn render_outputs(ctx: &RunCtx<'_>) -> Result<Map<String, Value>, String> {
    if ctx.wf.outputs.is_empty() {
        return Ok(Map::new());
    }
    let data = ctx.data();
    let view = data.view(&ctx.workdir);
    dsl::model::render_map(&ctx.wf.outputs, &view).map_err(|e| format!("workflow `outputs`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(run: Value) -> std::collections::HashMap<String, String> {
        let repo = json!({"name": "app", "branch": "topic", "commit": "abc"});
        standard_env("w", &repo, &run, std::path::Path::new("/tmp"))
            .into_iter()
            .collect()
    }

    /// A tag or pull-request run's own ref wins over the branch's; pull requests add
    /// `AGENT_PR_*` and `AGENT_EVENT=pull_request`; other runs have no `AGENT_PR_*`.
    #[test]
    fn refs_events_and_pull_requests_reach_the_environment() {
        let push = env_of(json!({"trigger": "push"}));
        assert_eq!(push["AGENT_REF"], "refs/heads/topic");
        assert_eq!(push["AGENT_EVENT"], "push");
        assert!(!push.contains_key("AGENT_PR_NUMBER"));
        let tag = env_of(json!({"trigger": "push", "event": "push", "ref": "refs/tags/v1"}));
        assert_eq!(tag["AGENT_REF"], "refs/tags/v1");
        let pr = env_of(json!({
            "trigger": "retry",
            "event": "pull_request",
            "ref": "refs/pull/7/head",
            "pull_request": {"number": 7, "base": "main", "head": "topic"},
        }));
        assert_eq!(pr["AGENT_EVENT"], "pull_request");
        assert_eq!(pr["AGENT_REF"], "refs/pull/7/head");
        assert_eq!(
            (
                pr["AGENT_PR_NUMBER"].as_str(),
                pr["AGENT_PR_BASE"].as_str(),
                pr["AGENT_PR_HEAD"].as_str()
            ),
            ("7", "main", "topic")
        );
    }
}
