//! One run: builds the run's state, runs the stages in order, then the compensation and
//! rollback a failure asked for, sweeps stray processes, and assembles the report.
//!
//! A sub-workflow (`type: workflow`) is a nested run with its own [`RunCtx`] sharing the
//! engine, run id, protocol directory, masker and cancel handle of its caller.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::Utc;
use dsl::expr::JobStatus;
use dsl::model::Workflow;
use serde_json::{Map, Value, json};

use super::events::{EngineEvent, EventSender};
use super::failure::Disposition;
use super::scope::{RunData, env_text};
use super::{Cancel, Engine, RunRequest, RunResult, stage, step};
use crate::model::mask::Masker;
use crate::model::report::{
    CalledWorkflow, RollbackReport, RunReport, RunStatus, StageReport, StepReport, StepStatus,
    rfc3339,
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
}

/// Mutable bookkeeping of a run (behind a mutex, never held across `.await`).
#[derive(Debug, Default)]
pub(crate) struct RunState {
    pub stages: Vec<StageReport>,
    pub rollback_steps: Vec<StepReport>,
    /// `compensate` steps as they ran.
    pub compensation_steps: Vec<StepReport>,
    /// Ids of succeeded top-level and branch steps, in completion order.
    pub completed: Vec<String>,
    pub failed: bool,
    pub error: Option<String>,
    /// The class of the first failure that failed the run.
    pub error_class: Option<String>,
    pub rollback_wanted: bool,
    pub compensate_wanted: bool,
    pub timed_out: bool,
    /// Steps whose compensation ran, in the order they were undone.
    pub compensated: Vec<String>,
    /// The rollback, when it ran.
    pub rollback: Option<RollbackReport>,
}

/// Everything the steps of one (sub-)run share.
pub(crate) struct RunCtx<'a> {
    pub engine: &'a Engine,
    pub set: &'a dsl::Loaded,
    pub wf: &'a Workflow,
    pub run_id: Arc<str>,
    /// Prefix of step ids in events (`call/` inside a sub-workflow called by step `call`).
    pub prefix: String,
    pub workdir: PathBuf,
    pub events: EventSender,
    pub cancel: Cancel,
    pub masker: Masker,
    pub rundir: Arc<runners::RunDir>,
    /// `AGENT_RUN_ID`, `AGENT_WORKSPACE`, the run's [`RunRequest::env`] and the workflow's
    /// `env`.
    pub base_env: Vec<(String, String)>,
    /// The run's [`RunRequest::env`], handed on to sub-workflows.
    pub run_env: Arc<[(String, String)]>,
    pub data: Mutex<RunData>,
    pub state: Mutex<RunState>,
    /// End of the workflow's `metadata.timeout` (or the caller's, whichever is earlier).
    pub deadline: Option<Instant>,
    pub depth: usize,
    pub marker: Arc<str>,
    /// The user the run's steps run as (the run's own uid with `run_as_uids`); `None`: the
    /// agent's own.
    pub run_user: Option<Arc<runners::RunUser>>,
    /// Reports of steps that succeeded or were skipped in an interrupted earlier attempt
    /// of this run (top-level run only): they are not run again.
    pub resume: std::collections::HashMap<String, StepReport>,
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

    pub fn data(&self) -> MutexGuard<'_, RunData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run-unique key for protocol file names.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The step id as events show it.
    pub fn event_id(&self, id: &str) -> Arc<str> {
        if self.prefix.is_empty() {
            Arc::from(id)
        } else {
            Arc::from(format!("{}{id}", self.prefix))
        }
    }

    /// Whether the workflow timeout has passed.
    pub fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Stores a finished step's report.
    pub fn store_report(&self, slot: Slot, report: StepReport) {
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
        }
    }

    /// Applies a failure's disposition to the run.
    pub fn apply(&self, disposition: Disposition, step_id: &str, class: &str, message: &str) {
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
        seq: AtomicU64::new(0),
    })
}

/// Runs the stages, then the compensation and rollback asked for.
pub(crate) async fn execute(ctx: &RunCtx<'_>) {
    for (i, st) in ctx.wf.stages.iter().enumerate() {
        stage::run_stage(ctx, i, st).await;
    }
    let (compensate, rollback) = {
        let st = ctx.state();
        (st.compensate_wanted, st.rollback_wanted)
    };
    if !(compensate || rollback) {
        return;
    }
    // Cleanup steps get their own cancel handle: a graceful cancel of the run must not stop
    // its own undoing; a kill (second Ctrl-C) still does.
    let cleanup = Cancel::new();
    let work = async {
        let compensated = if compensate {
            compensate_steps(ctx, &cleanup).await
        } else {
            Vec::new()
        };
        let rb = if rollback {
            Some(run_rollback(ctx, &cleanup).await)
        } else {
            None
        };
        (compensated, rb)
    };
    tokio::pin!(work);
    let kill = ctx.cancel.immediate_token().clone();
    let (compensated, rb) = tokio::select! {
        r = &mut work => r,
        _ = kill.cancelled() => {
            cleanup.kill_now();
            work.await
        }
    };
    let mut st = ctx.state();
    st.compensated = compensated;
    st.rollback = rb;
}

/// Runs the `compensate` steps of every completed step, latest completion first.
async fn compensate_steps(ctx: &RunCtx<'_>, cancel: &Cancel) -> Vec<String> {
    let completed: Vec<String> = ctx.state().completed.clone();
    let mut undone = Vec::new();
    for id in completed.iter().rev() {
        let Some(step) = ctx.wf.step(id) else {
            continue;
        };
        if step.compensate.is_empty() {
            continue;
        }
        ctx.events.emit(|| EngineEvent::Compensating {
            run_id: ctx.run_id.clone(),
            step: ctx.event_id(id),
        });
        for c in &step.compensate {
            step::run_cleanup_step(ctx, c, Slot::Compensation, cancel).await;
        }
        undone.push(id.clone());
    }
    undone
}

/// Runs the workflow's `rollback` steps, one after another, all of them.
async fn run_rollback(ctx: &RunCtx<'_>, cancel: &Cancel) -> RollbackReport {
    ctx.events.emit(|| EngineEvent::RollbackStarted {
        run_id: ctx.run_id.clone(),
    });
    let mut ok = true;
    if let Some(rb) = &ctx.wf.rollback {
        for s in &rb.steps {
            let status = step::run_cleanup_step(ctx, s, Slot::Rollback, cancel).await;
            ok &= matches!(status, StepStatus::Succeeded | StepStatus::Skipped);
        }
    }
    let status = if ok {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    ctx.events.emit(|| EngineEvent::RollbackFinished {
        run_id: ctx.run_id.clone(),
        status,
    });
    let steps = std::mem::take(&mut ctx.state().rollback_steps);
    RollbackReport { status, steps }
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
type RunParts = (
    Vec<StageReport>,
    Option<RollbackReport>,
    Vec<String>,
    Vec<StepReport>,
    Option<String>,
);

/// Takes the report parts out of a finished (sub-)run.
pub(crate) fn take_parts(ctx: &RunCtx<'_>, status: RunStatus) -> RunParts {
    let mut st = ctx.state();
    let mut error = st.error.take();
    if st.timed_out && error.is_none() {
        error = Some("workflow timed out".into());
    }
    if status == RunStatus::Cancelled && error.is_none() {
        error = Some("run cancelled".into());
    }
    (
        std::mem::take(&mut st.stages),
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

/// The steps of an earlier attempt that a resumed run takes over instead of running them:
/// those that succeeded. Everything else runs (or is judged) again: failed and cancelled
/// steps, and skipped ones, whose `when` is evaluated anew, so a step skipped because an
/// earlier step failed runs now while one skipped by its own `when` stays skipped. When the
/// earlier attempt had a failed or cancelled step, steps whose `when` uses a status
/// function (`failure()`, `always()`, ...) also run again: they belong to the outcome of
/// this attempt, not of the one before.
fn resumed_steps(
    wf: &Workflow,
    prior: &[StepReport],
) -> std::collections::HashMap<String, StepReport> {
    let troubled = prior
        .iter()
        .any(|r| matches!(r.status, StepStatus::Failed | StepStatus::Cancelled));
    let status_gated = |id: &str| {
        wf.step(id)
            .and_then(|s| s.when.as_ref())
            .is_some_and(|w| step::has_status_fn(&w.text))
    };
    prior
        .iter()
        .filter(|r| r.status == StepStatus::Succeeded)
        .filter(|r| !(troubled && status_gated(&r.id)))
        .map(|r| (r.id.clone(), r.clone()))
        .collect()
}

/// Runs a whole top-level run (see [`Engine::run`]).
pub(crate) async fn run(engine: &Engine, req: RunRequest) -> RunResult {
    let started = Utc::now();
    let t0 = Instant::now();
    let wf = &req.workflow.workflow;
    let run_id: Arc<str> = Arc::from(req.run_id.as_str());
    let masker = Masker::new(req.secrets.values().map(String::as_str));
    let secrets: Map<String, Value> = req
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    req.events.emit(|| EngineEvent::RunStarted {
        run_id: run_id.clone(),
        workflow: Arc::from(wf.name.value.as_str()),
    });
    let marker: Arc<str> = Arc::from(super::run_marker(
        engine.config().marker_scope.as_deref(),
        &req.run_id,
    ));
    // Every step of the run (sub-workflows included: they share the marker) joins the run's
    // process scope: its cgroup and process limit. Closed after the sweep at the end.
    let scope = runners::RunScope::open(&marker, engine.config().max_run_processes);
    let masked_params = {
        let mut p = Value::Object(req.parameters.clone());
        masker.mask_value(&mut p);
        match p {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    };
    let finish = |status: RunStatus,
                  (stages, rollback, compensated, compensation, error): RunParts| {
        let finished = Utc::now();
        RunReport {
            run_id: req.run_id.clone(),
            workflow: wf.name.value.clone(),
            status,
            started_at: Some(rfc3339(started)),
            finished_at: Some(rfc3339(finished)),
            duration_ms: Some(t0.elapsed().as_millis() as u64),
            parameters: masked_params.clone(),
            stages,
            rollback,
            compensated,
            compensation,
            error: error.map(|e| masker.mask(&e).into_owned()),
        }
    };
    // With `run_as_uids` the run has a uid of its own: it alone may enter its workspace and
    // protocol directory (0700), and no other run's process can read its processes.
    let lease = match engine.claim_uid() {
        Ok(lease) => lease,
        Err(e) => {
            let report = finish(
                RunStatus::Failed,
                (Vec::new(), None, Vec::new(), Vec::new(), Some(e)),
            );
            return finish_run(&req.events, run_id, report, req.context, Map::new());
        }
    };
    let run_user = match &lease {
        Some(lease) => Some(lease.user.clone()),
        None => engine.config().run_user.clone(),
    };
    if let Some(lease) = &lease
        && let Err(e) = own_privately(&lease.user, &req.workdir)
    {
        let message = format!(
            "cannot give the workspace `{}` to uid {}: {e}",
            req.workdir.display(),
            lease.user.uid
        );
        let report = finish(
            RunStatus::Failed,
            (Vec::new(), None, Vec::new(), Vec::new(), Some(message)),
        );
        return finish_run(&req.events, run_id, report, req.context, Map::new());
    }
    let rundir = match runners::RunDir::create(&req.run_id).and_then(|d| {
        // The run user writes its steps' protocol files here.
        if let Some(user) = &run_user {
            let private = lease.is_some();
            user.chown(d.path())
                .and_then(|()| {
                    if private {
                        std::fs::set_permissions(d.path(), PermissionsExt::from_mode(0o700))
                    } else {
                        Ok(())
                    }
                })
                .map_err(|source| runners::RunnerError::RunDir {
                    path: d.path().to_path_buf(),
                    source,
                })?;
        }
        Ok(d)
    }) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            let report = finish(
                RunStatus::Failed,
                (
                    Vec::new(),
                    None,
                    Vec::new(),
                    Vec::new(),
                    Some(e.to_string()),
                ),
            );
            return finish_run(&req.events, run_id, report, req.context, Map::new());
        }
    };
    let run_value = json!({
        "id": req.run_id,
        "attempt": req.attempt,
        "trigger": req.trigger,
        "workspace": req.workdir.to_string_lossy(),
    });
    let ctx = match new_ctx(
        engine,
        &req.workflow,
        wf,
        run_id.clone(),
        String::new(),
        req.workdir.clone(),
        req.events.clone(),
        req.cancel.clone(),
        masker.clone(),
        rundir,
        req.parameters.clone(),
        &secrets,
        req.repo.clone(),
        run_value,
        req.context.clone(),
        None,
        0,
        marker.clone(),
        run_user,
    ) {
        Ok(c) => c,
        Err(e) => {
            let report = finish(
                RunStatus::Failed,
                (Vec::new(), None, Vec::new(), Vec::new(), Some(e)),
            );
            return finish_run(&req.events, run_id, report, req.context, Map::new());
        }
    };
    let mut ctx = ctx;
    ctx.set_run_env(Arc::from(req.env.clone()));
    ctx.resume = resumed_steps(wf, &req.resume);
    execute(&ctx).await;
    // Nothing a step started may outlive the run.
    let m = marker.to_string();
    let run_uid = lease.as_ref().map(|l| l.user.uid);
    let workdir = req.workdir.clone();
    let _ = tokio::task::spawn_blocking(move || {
        runners::sweep_run(&m);
        if let Some(uid) = run_uid {
            // The uid is the run's alone: whatever of it is left is the run's, however it
            // hid. The workspace goes back to the agent (0700), so a later run given the
            // same uid cannot enter it.
            runners::kill_uid(uid);
            if let Err(err) = std::os::unix::fs::lchown(&workdir, Some(0), Some(0))
                .and_then(|()| std::fs::set_permissions(&workdir, PermissionsExt::from_mode(0o700)))
            {
                tracing::warn!(workspace = %workdir.display(), error = %err,
                    "cannot take the workspace back from the run's uid");
            }
        }
        drop(scope);
    })
    .await;
    // Only now may another run take the uid.
    drop(lease);

    let status = final_status(&ctx);
    let outputs = render_outputs(&ctx);
    let (stages, rollback, compensated, compensation, mut error) = take_parts(&ctx, status);
    let outputs = match outputs {
        Ok(o) => o,
        Err(e) => {
            if error.is_none() && status == RunStatus::Succeeded {
                error = Some(e);
            }
            Map::new()
        }
    };
    let context = ctx.data().context();
    let report = finish(status, (stages, rollback, compensated, compensation, error));
    finish_run(&req.events, run_id, report, context, outputs)
}

/// Gives the workspace `dir` (and everything in it) to the run's own uid, and makes it
/// 0700: a run with another uid can neither enter nor list it.
fn own_privately(user: &runners::RunUser, dir: &std::path::Path) -> std::io::Result<()> {
    user.chown_tree(dir)?;
    std::fs::set_permissions(dir, PermissionsExt::from_mode(0o700))
}

fn finish_run(
    events: &EventSender,
    run_id: Arc<str>,
    report: RunReport,
    context: Map<String, Value>,
    outputs: Map<String, Value>,
) -> RunResult {
    events.emit(|| EngineEvent::RunFinished {
        run_id,
        status: report.status,
        report: Box::new(report.clone()),
    });
    RunResult {
        report,
        context,
        outputs,
    }
}
