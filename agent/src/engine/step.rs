//! One step: whether it runs (`when`, the job status, cancellation, the workflow timeout),
//! rendering its parameters, env and script, its tries (admission, process, protocol files,
//! error class), retries with backoff, and what a failure leads to (error handlers, then
//! `on_failure`). Sub-workflow and decision steps are tries of their own kind.
//!
//! Per-step cost is kept small: templates are rendered once per step (not per try), nothing
//! is created on disk, events are built only when someone listens, and recording a result
//! inserts one entry into the `steps` root.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::Utc;
use dsl::expr::JobStatus;
use dsl::model::{Action, Step, StepKind};
use runners::{Request, StepCommand};
use serde_json::{Map, Value, json};

use super::Cancel;
use super::artifacts;
use super::backoff::{Backoff, BackoffKind};
use super::context;
use super::events::EngineEvent;
use super::failure::{Disposition, from_action};
use super::run::execute;
use super::run_ctx::{
    MAX_TIMEOUT, RunCtx, Slot, called_report, final_status, new_ctx, render_outputs,
};
use super::scope::{has_status_fn, truthy};
use super::script_env;
use super::step_cache::{self, CacheSource};
use super::{env_files, isolate, job_env, shell_script};
use crate::model::report::{CalledWorkflow, StepReport, StepStatus, rfc3339};

type StepFuture<'a> = Pin<Box<dyn Future<Output = StepStatus> + Send + 'a>>;

/// Deepest chain of sub-workflow calls.
pub(crate) const MAX_DEPTH: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A stage or decision-branch step: gated by the job status; failures are handled.
    Normal,
    /// Rollback, compensation and error-handler steps: run whatever happened before; a
    /// failure is recorded and nothing more.
    Cleanup,
}

/// Runs a stage (or decision branch) step.
pub(crate) fn run_step<'a>(ctx: &'a RunCtx<'a>, step: &'a Step, slot: Slot) -> StepFuture<'a> {
    Box::pin(step_inner(
        ctx,
        step,
        slot,
        Mode::Normal,
        &ctx.cancel,
        false,
    ))
}

/// Runs one instance of a matrix step (see `matrix.rs`) with the matrix's cancel handle:
/// the matrix step as a whole has passed the job-status gate, so an instance is not
/// skipped because a sibling instance failed the run (`fail_fast: false` lets them all
/// run; `fail_fast` cancels `cancel`).
pub(crate) fn run_instance<'a>(
    ctx: &'a RunCtx<'a>,
    step: &'a Step,
    slot: Slot,
    cancel: &'a Cancel,
) -> StepFuture<'a> {
    Box::pin(step_inner(ctx, step, slot, Mode::Normal, cancel, true))
}

/// Runs a rollback, compensation or error-handler step with its own cancel handle.
pub(crate) fn run_cleanup_step<'a>(
    ctx: &'a RunCtx<'a>,
    step: &'a Step,
    slot: Slot,
    cancel: &'a Cancel,
) -> StepFuture<'a> {
    Box::pin(step_inner(ctx, step, slot, Mode::Cleanup, cancel, false))
}

/// The outcome of one try.
#[derive(Debug, Default)]
struct Attempt {
    class: Option<String>,
    exit_code: Option<i32>,
    /// When the try's work began (a process: once admitted); `None` when it never began.
    began: Option<(chrono::DateTime<Utc>, Instant)>,
    /// Time the try waited for admission.
    queued: Duration,
    outputs: Map<String, Value>,
    context: Option<Map<String, Value>>,
    message: String,
    /// The called workflow's report (sub-workflow tries only).
    called: Option<Box<CalledWorkflow>>,
    /// The try's output, kept for a cached step.
    log: Option<String>,
}

impl Attempt {
    fn fail(class: &str, message: impl Into<String>) -> Attempt {
        Attempt {
            class: Some(class.to_string()),
            message: message.into(),
            ..Attempt::default()
        }
    }
}

/// What a step runs, prepared once for all its tries.
enum Prepared {
    Process {
        cmd: StepCommand,
        request: Request,
        error_codes: HashMap<i32, runners::ErrorClass>,
        /// What the step's cache key is made of.
        cache: Box<CacheSource>,
        /// Keep the output for a cache entry.
        capture: bool,
    },
    Workflow {
        name: String,
        params: Map<String, Value>,
    },
    Decision,
}

/// The step's admission request; `cpu: all` asks for every CPU slot of `capacity`.
fn request_for(step: &Step, default: Request, capacity: u32) -> Request {
    let Some(r) = &step.resources else {
        return default;
    };
    Request {
        cpu: r
            .cpu
            .as_ref()
            .map(|c| c.value.slots(capacity))
            .unwrap_or(default.cpu),
        memory_mb: r
            .memory_mb
            .as_ref()
            .map(|m| m.value)
            .unwrap_or(default.memory_mb),
    }
}

/// Renders what the step needs; an error is the step's failure (class, message). With
/// `isolated` the step runs in that copy of the workspace.
fn prepare(
    ctx: &RunCtx<'_>,
    step: &Step,
    isolated: Option<&isolate::Isolated>,
) -> Result<Prepared, (String, String)> {
    let id = &step.id.value;
    let expr_err = |what: &str, e: dsl::expr::ExprError| {
        (
            "ExpressionError".to_string(),
            format!("step `{id}`: {what}: {e}"),
        )
    };
    let data = ctx.data();
    let base = data.step_view(&ctx.workdir, id);
    // Stage and step `env:` and what earlier steps wrote to `$AGENT_ENV`/`$AGENT_PATH`.
    // A matrix instance (`ID (k=v, ...)`) is in the stage of its step.
    let stage = job_env::stage_of(&ctx.wf.stages, id).or_else(|| {
        id.split_once(" (")
            .and_then(|(base, _)| job_env::stage_of(&ctx.wf.stages, base))
    });
    let layers = job_env::layers(ctx, stage, step, &base, data.roots.get("env"))
        .map_err(|(what, e)| expr_err(what, e))?;
    let step_env = layers.process_env;
    let view = match &layers.merged {
        Some(m) => base.with_env(m),
        None => base,
    };
    let cwd = job_env::working_dir(&ctx.workdir, stage, step, &view)
        .map_err(|e| ("ValidationError".to_string(), format!("step `{id}`: {e}")))?;
    let cwd = isolated.map_or(cwd.clone(), |i| i.rebase(&cwd));
    let params =
        dsl::model::render_map(&step.parameters, &view).map_err(|e| expr_err("parameters", e))?;
    let with_protocol = |mut cmd: StepCommand, always_stdin: bool| {
        cmd.cwd = Some(cwd.clone());
        // Nothing of the agent's own environment but the minimal base in `base_env`.
        cmd.inherit_env = false;
        cmd.env.extend(ctx.base_env.iter().cloned());
        cmd.env.extend(step_env.iter().cloned());
        if let Some(i) = isolated {
            cmd.env.push((
                "AGENT_WORKSPACE".into(),
                i.path().to_string_lossy().into_owned(),
            ));
        }
        cmd.env.push(("AGENT_STEP_ID".into(), id.clone()));
        cmd.env.push(("AGENT_STEP".into(), id.clone()));
        if always_stdin || !params.is_empty() {
            let p = Value::Object(params.clone());
            cmd.env.extend(runners::param_env(&p));
            cmd.stdin = p.to_string().into_bytes();
        }
        cmd.grace = ctx.engine.config().grace;
        // One pipe for both streams: lines keep the order they were written in (like CI
        // logs) and each step saves a pipe and a wake-up.
        cmd.merge_output = true;
        cmd.marker = Some(ctx.marker.to_string());
        cmd.user = ctx.run_user.clone();
        cmd
    };
    let capacity = ctx.engine.admission().cpu_capacity();
    match &step.kind {
        StepKind::Run(script) => {
            let shell = step.shell.as_ref().map(|s| s.value.as_str());
            let prepared = script_env::prepare(&script.template, shell, &view)
                .map_err(|e| expr_err("run", e))?;
            let plan = match shell {
                Some(sh) => shell_script::plan(ctx, id, sh, &prepared.text)
                    .map_err(|e| ("ValidationError".to_string(), format!("step `{id}`: {e}")))?,
                None => runners::plan_script(&prepared.text, None),
            };
            let cache = Box::new(CacheSource {
                definition: step_cache::script_definition(&prepared.text, shell, &prepared.env),
                parameters: params.clone(),
                env: step_env.clone(),
                ..CacheSource::default()
            });
            let mut cmd = StepCommand::from_plan(plan);
            cmd.env.extend(prepared.env);
            Ok(Prepared::Process {
                cmd: with_protocol(cmd, false),
                request: request_for(step, Request::default(), capacity),
                error_codes: HashMap::new(),
                cache,
                capture: false,
            })
        }
        StepKind::Skill(name) => {
            let skill =
                runners::find_skill(&name.value, &ctx.workdir, &ctx.engine.config().skills_dirs)
                    .map_err(|e| (e.class().as_str().to_string(), format!("step `{id}`: {e}")))?;
            let mut definition = Map::new();
            definition.insert("skill".into(), json!(name.value));
            let cache = Box::new(CacheSource {
                definition,
                skill_path: (skill.source != runners::SkillSource::Builtin)
                    .then(|| skill.path.clone()),
                deterministic: skill.manifest.as_ref().is_some_and(|m| m.deterministic),
                parameters: params.clone(),
                env: step_env.clone(),
            });
            Ok(Prepared::Process {
                cmd: with_protocol(skill.command(), true),
                request: request_for(step, skill.request(), capacity),
                error_codes: skill.error_codes(),
                cache,
                capture: false,
            })
        }
        StepKind::Workflow(name) => Ok(Prepared::Workflow {
            name: name.value.clone(),
            params,
        }),
        StepKind::Decision(_) => Ok(Prepared::Decision),
    }
}

/// The effective time limit of a try: the step's `timeout` and what is left of the
/// workflow's. The flag tells whether the workflow's limit is the binding one.
fn time_limit(ctx: &RunCtx<'_>, step: &Step) -> (Option<Duration>, bool) {
    let own = step.timeout.as_ref().map(|t| t.value.min(MAX_TIMEOUT));
    let left = ctx
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()));
    match (own, left) {
        (Some(o), Some(l)) if l < o => (Some(l), true),
        (Some(o), _) => (Some(o), false),
        (None, Some(l)) => (Some(l), true),
        (None, None) => (None, false),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of a prepared process step, passed apart so that tries share them"
)]
async fn run_process(
    ctx: &RunCtx<'_>,
    step: &Step,
    cmd: &StepCommand,
    request: Request,
    error_codes: &HashMap<i32, runners::ErrorClass>,
    attempt: u32,
    cancel: &Cancel,
    capture: bool,
) -> Attempt {
    let id = &step.id.value;
    let admission = ctx.engine.admission();
    let waiting = Instant::now();
    let permit = match admission.try_acquire(request) {
        Ok(Some(p)) => p,
        Ok(None) => {
            let waited = |a: Attempt| Attempt {
                queued: waiting.elapsed(),
                ..a
            };
            tokio::select! {
                p = admission.acquire(request) => match p {
                    Ok(p) => p,
                    Err(e) => return waited(Attempt::fail(e.class().as_str(), format!("step `{id}`: {e}"))),
                },
                _ = cancel.graceful_token().cancelled() => {
                    return waited(Attempt::fail("Cancelled", format!("step `{id}` cancelled")));
                }
            }
        }
        Err(e) => return Attempt::fail(e.class().as_str(), format!("step `{id}`: {e}")),
    };
    let queued = waiting.elapsed();
    let began = Some((Utc::now(), Instant::now()));
    let paths = ctx
        .rundir
        .step_paths(&format!("{}.{attempt}", ctx.next_seq()));
    let mut cmd = cmd.clone();
    cmd.env.extend(paths.env());
    let files =
        env_files::StepFiles::new(ctx.rundir.path(), &format!("{}.{attempt}", ctx.next_seq()));
    cmd.env.extend(files.env());
    cmd.env.push(("AGENT_ATTEMPT".into(), attempt.to_string()));
    let (limit, by_deadline) = time_limit(ctx, step);
    cmd.timeout = limit;
    let eid = ctx.event_id(id);
    ctx.events.emit(|| EngineEvent::StepStarted {
        run_id: ctx.run_id.clone(),
        step: eid.clone(),
        attempt,
    });
    // A listener that records steps durably answers once this start is on disk: the
    // process is spawned only then, so after a crash a step that may have run is known.
    if let Some(recorded) = ctx.events.barrier(&ctx.run_id) {
        let limit = ctx.events.barrier_timeout().unwrap_or_default();
        tokio::select! {
            answer = recorded => {
                if let Ok(Err(e)) = answer {
                    return Attempt::fail("StorageError", format!("step `{id}`: {e}"));
                }
            }
            _ = tokio::time::sleep(limit) => {
                tracing::error!(run = %ctx.run_id, step = %eid,
                    "the step's start could not be recorded in time: failing it unrun");
                return Attempt::fail(
                    "StorageError",
                    format!(
                        "step `{id}`: storage error: its start could not be recorded within {}",
                        crate::model::fmt::duration(limit)
                    ),
                );
            }
            _ = cancel.graceful_token().cancelled() => {
                return Attempt::fail("Cancelled", format!("step `{id}` cancelled"));
            }
        }
    }
    let mut output = ctx
        .events
        .output(ctx.run_id.clone(), eid.clone(), ctx.masker.clone());
    let mut log = capture.then(String::new);
    let outcome = match log.as_mut() {
        Some(log) => {
            let mut tee = step_cache::Tee {
                inner: &mut output,
                log,
            };
            runners::run_with_sink(cmd, &mut tee, cancel.clone()).await
        }
        None => runners::run_with_sink(cmd, &mut output, cancel.clone()).await,
    };
    drop(permit);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            return Attempt {
                began,
                queued,
                ..Attempt::fail(e.class().as_str(), format!("step `{id}`: {e}"))
            };
        }
    };
    if outcome.timed_out && by_deadline {
        ctx.state().timed_out = true;
    }
    if let Err(e) = ctx.file_env.absorb(&files) {
        return Attempt {
            exit_code: outcome.exit_code,
            began,
            queued,
            ..Attempt::fail("ValidationError", format!("step `{id}`: {e}"))
        };
    }
    let mut result = Attempt {
        exit_code: outcome.exit_code,
        began,
        queued,
        log: log.map(|l| ctx.masker.mask(&l).into_owned()),
        ..Attempt::default()
    };
    let outputs = runners::parse_output_file(&paths.output);
    let update = runners::parse_context_file(&paths.context);
    let wrote = matches!(outputs, Ok(Some(_)) | Err(_)) || matches!(update, Ok(Some(_)) | Err(_));
    if wrote {
        paths.remove();
    }
    let outputs = match outputs {
        Ok(o) => o,
        Err(e) => {
            return Attempt {
                exit_code: outcome.exit_code,
                began,
                queued,
                ..Attempt::fail("ValidationError", format!("step `{id}`: {e}"))
            };
        }
    };
    match update {
        Ok(u) => result.context = u,
        Err(e) => {
            return Attempt {
                exit_code: outcome.exit_code,
                began,
                queued,
                ..Attempt::fail("ValidationError", format!("step `{id}`: {e}"))
            };
        }
    }
    result.class =
        runners::classify(&outcome, outputs.as_ref(), error_codes).map(|c| c.as_str().to_string());
    // A failing step may explain itself in one line: `error_message` in its outputs.
    let explained = outputs
        .as_ref()
        .and_then(|o| o.get("error_message"))
        .and_then(Value::as_str)
        .map(|m| m.lines().next().unwrap_or_default().trim().to_string())
        .filter(|m| !m.is_empty());
    if let Some(o) = outputs {
        result.outputs = o.into_iter().collect();
    }
    if let Some(class) = &result.class {
        result.message = match (class.as_str(), outcome.exit_code) {
            ("Timeout", _) => format!(
                "step `{id}` timed out after {}",
                crate::model::fmt::duration(limit.unwrap_or_default())
            ),
            ("Cancelled", _) => format!("step `{id}` cancelled"),
            (c, Some(code)) => format!("step `{id}` failed: {c} (exit code {code})"),
            (c, None) => format!(
                "step `{id}` failed: {c} (signal {})",
                outcome.signal.unwrap_or(0)
            ),
        };
        if let Some(m) = explained {
            result.message = format!("{}: {m}", result.message);
        }
    }
    result
}

async fn run_subworkflow(
    ctx: &RunCtx<'_>,
    step: &Step,
    name: &str,
    given: &Map<String, Value>,
    cancel: &Cancel,
) -> Attempt {
    let id = &step.id.value;
    let Some(sub) = ctx.set.subworkflow(name) else {
        return Attempt::fail(
            "ValidationError",
            format!("step `{id}`: sub-workflow `{name}` is not loaded"),
        );
    };
    if ctx.depth + 1 > MAX_DEPTH {
        return Attempt::fail(
            "ValidationError",
            format!("step `{id}`: sub-workflows nest deeper than {MAX_DEPTH}"),
        );
    }
    let params = match dsl::params::resolve_json(sub, given) {
        Ok(p) => p,
        Err(errs) => {
            let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
            return Attempt::fail(
                "ValidationError",
                format!("step `{id}`: sub-workflow `{name}`: {}", text.join("; ")),
            );
        }
    };
    let (secrets, repo, run_value, context_now) = {
        let data = ctx.data();
        let obj = |k: &str| match data.roots.get(k) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        (
            obj("secrets"),
            data.roots.get("repo").cloned().unwrap_or(Value::Null),
            data.roots.get("run").cloned().unwrap_or(Value::Null),
            data.context(),
        )
    };
    let (limit, _) = time_limit(ctx, step);
    let deadline = limit.and_then(|l| Instant::now().checked_add(l));
    let sub_ctx = match new_ctx(
        ctx.engine,
        ctx.set,
        sub,
        ctx.run_id.clone(),
        format!("{}{id}/", ctx.prefix),
        ctx.workdir.clone(),
        ctx.events.clone(),
        cancel.clone(),
        ctx.masker.clone(),
        ctx.rundir.clone(),
        params,
        &secrets,
        repo,
        run_value,
        context_now,
        deadline,
        ctx.depth + 1,
        ctx.marker.clone(),
        ctx.run_user.clone(),
    ) {
        Ok(c) => c,
        Err(e) => return Attempt::fail("ExpressionError", format!("step `{id}`: {e}")),
    };
    let mut sub_ctx = sub_ctx;
    sub_ctx.set_run_env(ctx.run_env.clone());
    sub_ctx.artifacts = ctx.artifacts.clone();
    let eid = ctx.event_id(id);
    ctx.events.emit(|| EngineEvent::StepStarted {
        run_id: ctx.run_id.clone(),
        step: eid.clone(),
        attempt: 1,
    });
    let fut: Pin<Box<dyn Future<Output = ()> + Send + '_>> = Box::pin(execute(&sub_ctx));
    fut.await;
    let status = final_status(&sub_ctx);
    let outputs = render_outputs(&sub_ctx);
    let (class, message) = {
        let st = sub_ctx.state();
        (st.error_class.clone(), st.error.clone().unwrap_or_default())
    };
    let called = Some(Box::new(called_report(&sub_ctx, status)));
    let attempt = match (status, outputs) {
        (super::RunStatus::Succeeded, Ok(o)) => Attempt {
            outputs: o,
            ..Attempt::default()
        },
        (super::RunStatus::Succeeded, Err(e)) => {
            Attempt::fail("ExpressionError", format!("step `{id}`: {e}"))
        }
        (super::RunStatus::Cancelled, _) => {
            Attempt::fail("Cancelled", format!("step `{id}` cancelled"))
        }
        (_, _) => Attempt::fail(
            class.as_deref().unwrap_or("ExitCode"),
            format!("step `{id}`: sub-workflow `{name}` failed: {message}"),
        ),
    };
    Attempt { called, ..attempt }
}

async fn run_decision(
    ctx: &RunCtx<'_>,
    step: &Step,
    slot: Slot,
    mode: Mode,
    cancel: &Cancel,
) -> Attempt {
    let StepKind::Decision(d) = &step.kind else {
        return Attempt::default();
    };
    let id = &step.id.value;
    let mut chosen = None;
    {
        let data = ctx.data();
        let view = data.step_view(&ctx.workdir, id);
        for (i, b) in d.branches.iter().enumerate() {
            if b.default {
                continue;
            }
            if let Some(w) = &b.when {
                match w.render(&view) {
                    Ok(v) if truthy(&v) => {
                        chosen = Some(i);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Attempt::fail(
                            "ExpressionError",
                            format!("step `{id}`: branch {} `when`: {e}", i + 1),
                        );
                    }
                }
            }
        }
    }
    let chosen = chosen.or_else(|| d.branches.iter().position(|b| b.default));
    let branch_slot = match slot {
        Slot::Stage { stage, .. } | Slot::Append { stage } | Slot::Instance { stage, .. } => {
            Slot::Append { stage }
        }
        other => other,
    };
    if let Some(i) = chosen {
        for s in &d.branches[i].steps {
            match mode {
                Mode::Normal => run_step(ctx, s, branch_slot).await,
                Mode::Cleanup => run_cleanup_step(ctx, s, branch_slot, cancel).await,
            };
        }
    }
    let mut outputs = Map::new();
    outputs.insert("branch".into(), chosen.map_or(Value::Null, |i| json!(i)));
    Attempt {
        outputs,
        ..Attempt::default()
    }
}

async fn try_once(
    ctx: &RunCtx<'_>,
    step: &Step,
    prepared: &Prepared,
    attempt: u32,
    slot: Slot,
    mode: Mode,
    cancel: &Cancel,
) -> Attempt {
    if ctx.deadline_passed() {
        ctx.state().timed_out = true;
        return Attempt::fail(
            "Timeout",
            format!("step `{}`: the workflow timeout passed", step.id.value),
        );
    }
    let began = Some((Utc::now(), Instant::now()));
    match prepared {
        Prepared::Process {
            cmd,
            request,
            error_codes,
            capture,
            ..
        } => {
            run_process(
                ctx,
                step,
                cmd,
                *request,
                error_codes,
                attempt,
                cancel,
                *capture,
            )
            .await
        }
        Prepared::Workflow { name, params } => Attempt {
            began,
            ..run_subworkflow(ctx, step, name, params, cancel).await
        },
        Prepared::Decision => Attempt {
            began,
            ..run_decision(ctx, step, slot, mode, cancel).await
        },
    }
}

/// Sleeps before a retry; false when cancelled (or the workflow timeout passed) meanwhile.
async fn backoff_sleep(ctx: &RunCtx<'_>, delay: Duration, cancel: &Cancel) -> bool {
    let delay = match ctx.deadline {
        Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
        None => delay,
    };
    tokio::select! {
        _ = tokio::time::sleep(delay) => !ctx.deadline_passed(),
        _ = cancel.graceful_token().cancelled() => false,
    }
}

fn retry_delay(ctx: &RunCtx<'_>, backoff: &Backoff, failed: u32, class: &str) -> Duration {
    let scale = if backoff.kind == BackoffKind::Adaptive {
        ctx.engine.adaptive.scale(&ctx.wf.name.value, class)
    } else {
        1.0
    };
    let unit = if backoff.jitter > 0.0 {
        rand::random::<f64>()
    } else {
        0.0
    };
    backoff.delay(failed, scale, unit)
}

/// A cancel handle that a graceful cancel of `parent` does not reach but a kill does, for
/// steps that run after a cancellation on purpose (`when: cancelled()` or `always()`).
struct Detached {
    cancel: Cancel,
    watcher: tokio::task::JoinHandle<()>,
}

impl Detached {
    fn new(parent: &Cancel) -> Detached {
        let cancel = Cancel::new();
        let kill = parent.immediate_token().clone();
        let mine = cancel.clone();
        let watcher = tokio::spawn(async move {
            kill.cancelled().await;
            mine.kill_now();
        });
        Detached { cancel, watcher }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

async fn step_inner(
    ctx: &RunCtx<'_>,
    step: &Step,
    slot: Slot,
    mode: Mode,
    cancel: &Cancel,
    instance: bool,
) -> StepStatus {
    let id = &step.id.value;
    let eid = ctx.event_id(id);
    let mut report = StepReport::pending(id.clone());
    report.name = step.name.as_ref().map(|n| n.value.clone());

    // 0. Done in an interrupted earlier attempt of this run?
    if mode == Mode::Normal
        && let Some(prior) = ctx.resume.get(id)
    {
        let mut prior = prior.clone();
        prior.name = report.name.clone();
        let status = prior.status;
        ctx.data().record_step_result(
            id,
            status.as_str(),
            prior.outputs.clone(),
            prior.exit_code,
            prior.error_class.as_deref(),
        );
        if status == StepStatus::Succeeded {
            ctx.state().completed.push(id.clone());
        }
        if let Some(kept) = &prior.artifacts {
            artifacts::restore(ctx, id, kept).await;
        }
        finish(ctx, slot, &eid, prior);
        return status;
    }

    // 1. Does it run?
    let explicit = step.when.as_ref().is_some_and(|w| has_status_fn(&w.text));
    let mut gate_error: Option<(String, String)> = None;
    let skip: Option<StepStatus> = {
        let mut skip = None;
        if mode == Mode::Normal {
            if cancel.is_cancelled() && !explicit {
                skip = Some(StepStatus::Cancelled);
            } else if ctx.deadline_passed() {
                ctx.state().timed_out = true;
                ctx.apply(Disposition::Abort, id, "Timeout", "workflow timed out");
                skip = Some(StepStatus::Skipped);
            } else if !instance && ctx.data().job_status() != JobStatus::Success && !explicit {
                skip = Some(StepStatus::Skipped);
            }
        }
        if skip.is_none()
            && let Some(w) = &step.when
        {
            let data = ctx.data();
            match w.render(&data.step_view(&ctx.workdir, id)) {
                Ok(v) if !truthy(&v) => skip = Some(StepStatus::Skipped),
                Ok(_) => {}
                Err(e) => {
                    gate_error = Some((
                        "ExpressionError".into(),
                        format!("step `{id}`: `when`: {e}"),
                    ))
                }
            }
        }
        skip
    };
    if let Some(status) = skip {
        report.status = status;
        ctx.data().record_step(id, status.as_str(), Map::new());
        finish(ctx, slot, &eid, report);
        return status;
    }

    // 2. Prepare once, then try.
    let detached;
    let cancel = if mode == Mode::Normal && cancel.is_cancelled() {
        // Only a step whose `when` asked to run after a cancel gets here.
        detached = Detached::new(cancel);
        &detached.cancel
    } else {
        cancel
    };
    // The step is ready now; its time starts when its first try begins (a process: once
    // admitted), so the wait for admission is reported apart (`queued_ms`).
    let ready = (Utc::now(), Instant::now());
    let mut first_begin: Option<(chrono::DateTime<Utc>, Instant)> = None;
    let mut queued_total = Duration::ZERO;
    // `isolate: true`: a private copy of the workspace for this step's process, removed
    // when the step ends.
    let mut isolated = None;
    if gate_error.is_none()
        && step.isolate.value
        && matches!(step.kind, StepKind::Run(_) | StepKind::Skill(_))
    {
        match isolate::for_step(ctx, id).await {
            Ok(i) => isolated = Some(i),
            Err(message) => gate_error = Some(("ResourceUnavailable".into(), message)),
        }
    }
    let mut prepared = match gate_error {
        Some(err) => Err(err),
        None => prepare(ctx, step, isolated.as_ref()),
    };
    // 2a. A cached step: served from its entry, or run and saved.
    let cache = match &mut prepared {
        Ok(Prepared::Process { cache, capture, .. }) if mode == Mode::Normal => {
            let found = step_cache::consult(ctx, step, &eid, cache).await;
            *capture = found.is_some();
            found
        }
        _ => None,
    };
    if let Some(c) = &cache {
        step_cache::warn(ctx, &eid, c);
        if let Some(outputs) = step_cache::serve_hit(ctx, &eid, c, &mut report).await {
            return cached_step(ctx, id, slot, &eid, report, outputs);
        }
        report.cache = step_cache::miss_report(c);
    }
    let retry = ctx.wf.retry_for(step);
    let backoff = Backoff::from(&retry);
    let mut attempts = 0u32;
    let mut retried_class: Option<String> = None;
    let mut last = match &prepared {
        Err((class, message)) => Attempt::fail(class, message.clone()),
        Ok(p) => loop {
            attempts += 1;
            let a = try_once(ctx, step, p, attempts, slot, mode, cancel).await;
            if first_begin.is_none() {
                queued_total += a.queued;
                first_begin = a.began;
            }
            let Some(class) = a.class.clone() else {
                break a;
            };
            if backoff.kind == BackoffKind::Adaptive {
                ctx.engine
                    .adaptive
                    .record_failure(&ctx.wf.name.value, &class);
            }
            retried_class = Some(class.clone());
            if attempts < retry.max_attempts
                && retry.retries(&class)
                && !cancel.is_cancelled()
                && !ctx.deadline_passed()
            {
                let delay = retry_delay(ctx, &backoff, attempts, &class);
                ctx.events.emit(|| EngineEvent::Retrying {
                    run_id: ctx.run_id.clone(),
                    step: eid.clone(),
                    attempt: attempts,
                    error_class: class.clone(),
                    delay,
                });
                if backoff_sleep(ctx, delay, cancel).await {
                    continue;
                }
            }
            break a;
        },
    };

    // 2b. A succeeded step's artifacts; a collection that fails fails the step.
    let mut collected = collect_artifacts(ctx, step, isolated.as_ref(), &mut last).await;

    // 3. A failure: error handler first, then on_failure.
    let mut disposition = Disposition::Continue;
    if mode == Mode::Normal
        && let Some(class) = last.class.clone()
        && !(class == "Cancelled" && cancel.is_cancelled())
    {
        disposition = step.on_failure.value.into();
        if let Some(h) = ctx.wf.handler_for(&class) {
            let action = h.action.value;
            if h.notify.as_ref().is_some_and(|n| n.value) {
                ctx.events.emit(|| EngineEvent::HandlerNotify {
                    run_id: ctx.run_id.clone(),
                    step: eid.clone(),
                    error_class: class.clone(),
                    action: action.as_str().to_string(),
                });
            }
            for hs in &h.steps {
                run_cleanup_step(ctx, hs, Slot::Discard, cancel).await;
            }
            let mut terminal = action;
            if action == Action::Retry {
                let extra = h.max_retries.as_ref().map_or(1, |m| m.value);
                if let Ok(p) = &prepared {
                    for _ in 0..extra {
                        if cancel.is_cancelled() || ctx.deadline_passed() {
                            break;
                        }
                        let cls = last.class.clone().unwrap_or_default();
                        let delay = retry_delay(ctx, &backoff, attempts, &cls);
                        ctx.events.emit(|| EngineEvent::Retrying {
                            run_id: ctx.run_id.clone(),
                            step: eid.clone(),
                            attempt: attempts,
                            error_class: cls.clone(),
                            delay,
                        });
                        if !backoff_sleep(ctx, delay, cancel).await {
                            break;
                        }
                        attempts += 1;
                        last = try_once(ctx, step, p, attempts, slot, mode, cancel).await;
                        if first_begin.is_none() {
                            queued_total += last.queued;
                            first_begin = last.began;
                        }
                        if last.class.is_none() {
                            break;
                        }
                    }
                }
                terminal = match h.then.as_ref().map(|t| t.value) {
                    Some(Action::Retry) | None => Action::Abort,
                    Some(t) => t,
                };
            }
            if last.class.is_some() {
                if terminal == Action::Escalate {
                    let message = ctx.masker.mask(&last.message).into_owned();
                    ctx.events.emit(|| EngineEvent::Escalation {
                        run_id: ctx.run_id.clone(),
                        step: eid.clone(),
                        error_class: class.clone(),
                        message,
                    });
                }
                disposition = from_action(terminal);
            }
        }
    }

    // 3b. A handler's retry that succeeded: its artifacts (a failure to collect them is
    // judged by `on_failure`; the handler has acted already).
    if collected.is_none() && last.class.is_none() {
        collected = collect_artifacts(ctx, step, isolated.as_ref(), &mut last).await;
        if last.class.is_some() && mode == Mode::Normal {
            disposition = step.on_failure.value.into();
        }
    }

    // 4. Record.
    report.attempts = attempts;
    report.exit_code = last.exit_code;
    // Without a try that began (a failed render, an admission that failed or was
    // cancelled), the step's time is what is left after its wait.
    let (start_utc, start) = first_begin.unwrap_or_else(|| {
        let wait = queued_total.min(ready.1.elapsed());
        (
            ready.0 + chrono::Duration::from_std(wait).unwrap_or_default(),
            ready.1 + wait,
        )
    });
    report.queued_ms = Some(start.saturating_duration_since(ready.1).as_millis() as u64);
    report.started_at = Some(rfc3339(start_utc));
    report.finished_at = Some(rfc3339(Utc::now()));
    report.duration_ms = Some(start.elapsed().as_millis() as u64);
    let status = match last.class.as_deref() {
        None => StepStatus::Succeeded,
        // A step that calls itself cancelled while nobody cancelled the run just failed.
        Some("Cancelled") if cancel.is_cancelled() => StepStatus::Cancelled,
        Some(_) => StepStatus::Failed,
    };
    report.status = status;
    report.error_class = last.class.clone();
    report.continued = mode == Mode::Normal
        && status == StepStatus::Failed
        && disposition == Disposition::Continue;
    report.workflow = last.called.take();
    if status == StepStatus::Succeeded
        && let Some(c) = &cache
    {
        let log = last.log.take().unwrap_or_default();
        step_cache::save(ctx, &eid, c, &last.outputs, last.exit_code, log).await;
    }
    let mut shown = Value::Object(last.outputs.clone());
    ctx.masker.mask_value(&mut shown);
    if let Value::Object(m) = shown {
        report.outputs = m;
    }
    {
        let mut data = ctx.data();
        if let Some(update) = last.context.take() {
            context::merge(
                data.context_mut(),
                Value::Object(update),
                ctx.wf.context.merge(),
            );
            if ctx.prefix.is_empty() {
                ctx.events.emit(|| EngineEvent::ContextChanged {
                    run_id: ctx.run_id.clone(),
                    context: data.context().clone(),
                });
            }
        }
        // A matrix instance cancelled by `fail_fast` does not make the job cancelled.
        if status == StepStatus::Cancelled && ctx.cancel.is_cancelled() {
            data.status = Some(JobStatus::Cancelled);
        }
        data.record_step_result(
            id,
            status.as_str(),
            std::mem::take(&mut last.outputs),
            last.exit_code,
            last.class.as_deref(),
        );
        if let Some(c) = collected {
            data.record_artifacts(id, c.dirs);
            report.artifacts = Some(Box::new(c.reports));
        }
    }
    match status {
        StepStatus::Succeeded => {
            if mode == Mode::Normal {
                ctx.state().completed.push(id.clone());
            }
            if backoff.kind == BackoffKind::Adaptive
                && let Some(class) = &retried_class
            {
                ctx.engine
                    .adaptive
                    .record_success(&ctx.wf.name.value, class, attempts);
            }
        }
        StepStatus::Cancelled => {
            if mode == Mode::Normal {
                let mut st = ctx.state();
                if !st.failed && st.error.is_none() && ctx.cancel.is_cancelled() {
                    st.error = Some(format!("step `{id}` cancelled"));
                }
            }
        }
        _ => {
            if mode == Mode::Normal {
                let class = last.class.as_deref().unwrap_or("ExitCode");
                ctx.apply(disposition, id, class, &last.message);
            }
        }
    }
    if let Some(i) = isolated {
        i.remove().await;
    }
    finish(ctx, slot, &eid, report);
    status
}

/// Collects the artifacts of a step whose last try succeeded; a collection that fails turns
/// `last` into a failure of class `ArtifactError` (outputs and context update kept).
async fn collect_artifacts(
    ctx: &RunCtx<'_>,
    step: &Step,
    isolated: Option<&isolate::Isolated>,
    last: &mut Attempt,
) -> Option<artifacts::Collected> {
    if last.class.is_some() || step.artifacts.is_empty() {
        return None;
    }
    let root = isolated.map_or(ctx.workdir.as_path(), |i| i.path());
    match artifacts::collect(ctx, step, root).await {
        Ok(c) => Some(c),
        Err(e) => {
            *last = Attempt {
                exit_code: last.exit_code,
                began: last.began,
                outputs: std::mem::take(&mut last.outputs),
                context: last.context.take(),
                ..Attempt::fail(artifacts::ARTIFACT_ERROR, e)
            };
            None
        }
    }
}

/// Records a step served from the cache as succeeded.
fn cached_step(
    ctx: &RunCtx<'_>,
    id: &str,
    slot: Slot,
    eid: &std::sync::Arc<str>,
    report: StepReport,
    outputs: Map<String, Value>,
) -> StepStatus {
    ctx.data()
        .record_step_result(id, "succeeded", outputs, report.exit_code, None);
    ctx.state().completed.push(id.to_string());
    finish(ctx, slot, eid, report);
    StepStatus::Succeeded
}

pub(crate) fn finish(ctx: &RunCtx<'_>, slot: Slot, eid: &std::sync::Arc<str>, report: StepReport) {
    if ctx.events.is_active() {
        let mut shown = report.clone();
        if !ctx.prefix.is_empty() {
            shown.id = eid.to_string();
        }
        ctx.events.emit(|| EngineEvent::StepFinished {
            run_id: ctx.run_id.clone(),
            report: shown,
        });
    }
    ctx.store_report(slot, report);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_functions() {
        assert!(has_status_fn("${{ always() }}"));
        assert!(has_status_fn("failure() && x"));
        assert!(!has_status_fn("parameters.run_tests"));
    }
}
