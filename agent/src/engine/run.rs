//! One run: builds the run's state, runs the stages in order, then the compensation and
//! rollback a failure asked for, sweeps stray processes, and assembles the report.
//!
//! A sub-workflow (`type: workflow`) is a nested run with its own [`RunCtx`] sharing the
//! engine, run id, protocol directory, masker and cancel handle of its caller.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use dsl::model::Workflow;
use serde_json::{Map, Value, json};

use super::events::{EngineEvent, EventSender};
use super::run_ctx::{RunCtx, RunParts, Slot, final_status, new_ctx, render_outputs, take_parts};
use super::{Cancel, Engine, RunRequest, RunResult, services, stage, step};
use crate::model::mask::Masker;
use crate::model::report::{RollbackReport, RunReport, RunStatus, StepReport, StepStatus, rfc3339};
/// Runs the stages, then the compensation and rollback asked for, with the workflow's
/// services up around all of it.
pub(crate) async fn execute(ctx: &RunCtx<'_>) {
    services::scoped(ctx, &ctx.wf.services, None, execute_stages(ctx)).await;
}

async fn execute_stages(ctx: &RunCtx<'_>) {
    for (i, st) in ctx.wf.stages.iter().enumerate() {
        let run = stage::run_stage(ctx, i, st);
        services::scoped(ctx, &st.services, Some((i, st)), run).await;
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
        // A step of a stage-matrix instance (`ID (k=v, ...)`) is a renamed copy.
        let copy = ctx.state().instance_steps.get(id).cloned();
        let Some(step) = ctx.wf.step(id).or(copy.as_ref()) else {
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
            .is_some_and(|w| super::scope::has_status_fn(&w.text))
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
    let mut run_value = json!({
        "id": req.run_id,
        "attempt": req.attempt,
        "trigger": req.trigger,
        "workspace": req.workdir.to_string_lossy(),
    });
    if let Value::Object(map) = &mut run_value {
        for (k, v) in &req.event {
            map.insert(k.clone(), v.clone());
        }
    }
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
    ctx.artifacts = req.artifacts.clone();
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
