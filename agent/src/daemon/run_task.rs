//! One run, from claimed to finished: workspace, workflow, engine, step records and logs.
//!
//! The scheduler starts one task per run it claims (and has already marked running). The
//! task prepares the run on a blocking thread (the mirror, a checkout of the run's exact
//! commit, the workflow file at that commit with its sub-workflows), runs it on the shared
//! [`Engine`](crate::engine::Engine), and hands every engine event to a recorder on another
//! blocking thread that owns the run's own store connection: each step transition is one
//! transaction, each chunk of output lines goes to the step's capped file in one write (and to
//! the bus's lossy log broadcast), each lifecycle event is republished as a [`DaemonEvent`].
//! The engine holds a step's pipe back while the run's output allowance is in flight, so
//! the recorder is never more than about a megabyte behind and memory stays flat. A resumed run (after a crash) or a retry gets the steps that succeeded
//! before as the engine's `resume` input, and the context saved with them.
//!
//! A run stopped by daemon shutdown ([`RunControl::abandon`]) writes no end: it stays
//! `running` in the store, so the next boot marks it interrupted and resumes it by the
//! recovery rules, as after a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dsl::model::{Step, StepKind};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::handle::{DaemonEvent, Shared};
use super::logs::RunLogs;
use super::mirror::Mirror;
use super::workspace::Workspace;
use crate::bus::LogChunk;
use crate::engine::{self, Cancel, EngineEvent, EventSender, RunRequest, StepReport};
use crate::store::{
    RunFinish, RunId, RunRecord, RunStatus, StepFinish, StepRecord, StepStart, StepStatus, Store,
};

/// How the scheduler steers a running run.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Cancels the engine run.
    pub cancel: Cancel,
    /// Set by shutdown: the run's end is not written (it resumes on the next boot).
    pub abandon: Arc<AtomicBool>,
}

/// What a run task reports to the scheduler when it ends.
#[derive(Debug)]
pub struct RunEnded {
    /// The run.
    pub run: RunId,
}

/// Runs one claimed, running run to its end and tells the scheduler.
pub async fn run(
    shared: Arc<Shared>,
    record: RunRecord,
    control: RunControl,
    done: mpsc::UnboundedSender<RunEnded>,
) {
    /// Tells the scheduler the run ended even if the task unwinds, so its slot is freed.
    struct Ended(RunId, mpsc::UnboundedSender<RunEnded>);
    impl Drop for Ended {
        fn drop(&mut self) {
            let _ = self.1.send(RunEnded { run: self.0 });
        }
    }
    let _ended = Ended(record.id, done);
    execute(&shared, record, &control).await;
}

/// Everything a run needs from git and the store before the engine starts.
struct Prepared {
    workspace: Workspace,
    loaded: dsl::Loaded,
    repo: Value,
    resume: Vec<StepReport>,
    context: Map<String, Value>,
    store: Store,
}

async fn execute(shared: &Arc<Shared>, record: RunRecord, control: &RunControl) {
    let id = record.id;
    let workflow_name: Arc<str> = record.workflow.as_str().into();
    publish(
        shared,
        DaemonEvent::RunStarted {
            run_id: id,
            workflow: workflow_name.clone(),
            repo: record.repo.as_deref().map(Arc::from),
        },
    );
    let prep = {
        let shared = shared.clone();
        let record = record.clone();
        tokio::task::spawn_blocking(move || prepare(&shared, &record)).await
    };
    let prepared = match prep {
        Ok(Ok(p)) => p,
        Ok(Err(message)) => {
            fail_before_start(shared, &record, &workflow_name, &message).await;
            return;
        }
        Err(join) => {
            fail_before_start(
                shared,
                &record,
                &workflow_name,
                &format!("internal error: {join}"),
            )
            .await;
            return;
        }
    };
    let Prepared {
        workspace,
        loaded,
        repo,
        resume,
        context,
        store,
    } = prepared;
    let preserve = loaded.workflow.context.preserve;
    let stages = stage_map(&loaded.workflow);
    let (events, rx) = EventSender::channel();
    let recorder = {
        let shared = shared.clone();
        let abandon = control.abandon.clone();
        tokio::task::spawn_blocking(move || {
            record_events(store, rx, id, &stages, &shared, &abandon)
        })
    };
    let request = RunRequest {
        workflow: Arc::new(loaded),
        parameters: record.parameters.as_object().cloned().unwrap_or_default(),
        run_id: id.to_string(),
        workdir: workspace.path().to_path_buf(),
        secrets: shared.secrets.clone(),
        repo,
        trigger: record.trigger.kind.as_str().to_string(),
        attempt: if record.retry_of.is_some() { 2 } else { 1 },
        context,
        events,
        cancel: control.cancel.clone(),
        resume,
    };
    let result = shared.engine.run(request).await;
    let store = match recorder.await {
        Ok(store) => store,
        Err(join) => {
            tracing::error!(run = %id, error = %join, "run recorder failed");
            return;
        }
    };
    if control.abandon.load(Ordering::SeqCst) {
        // Shutdown: leave the run `running`; the next boot resumes it.
        let _ = tokio::task::spawn_blocking(move || drop(workspace)).await;
        tracing::info!(run = %id, "run left for the next start (shutdown)");
        return;
    }
    let status = match result.report.status {
        engine::RunStatus::Succeeded => RunStatus::Succeeded,
        engine::RunStatus::Cancelled => RunStatus::Cancelled,
        _ => RunStatus::Failed,
    };
    let mut report = serde_json::to_value(&result.report).unwrap_or(Value::Null);
    if let Some(obj) = report.as_object_mut() {
        obj.insert("run_id".into(), json!(id.to_string()));
    }
    let finish = RunFinish {
        status,
        error: result.report.error.clone(),
        report: Some(report.clone()),
        preserved_context: preserve.then(|| Value::Object(result.context.clone())),
        // The run's end and its webhook deliveries are written together (outbox).
        deliveries: crate::notify::finish_deliveries(shared, &record, status, &report),
    };
    let keep = status == RunStatus::Failed && shared.config.keep_failed_workspaces;
    let finished = tokio::task::spawn_blocking(move || {
        let mut store = store;
        let written = store.finish_run(id, &finish);
        if keep {
            let path = workspace.into_kept_path();
            tracing::info!(run = %id, workspace = %path.display(), "kept the failed run's workspace");
        } else if let Err(err) = workspace.remove() {
            tracing::warn!(run = %id, error = %err, "cannot remove workspace");
        }
        written
    })
    .await;
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::error!(run = %id, error = %err, "cannot record the end of the run")
        }
        Err(err) => tracing::error!(run = %id, error = %err, "cannot record the end of the run"),
    }
    tracing::info!(run = %id, workflow = %workflow_name, status = %status, "run finished");
    publish(
        shared,
        DaemonEvent::RunFinished {
            run_id: id,
            workflow: workflow_name,
            status,
            report: Arc::new(report),
        },
    );
}

fn publish(shared: &Shared, event: DaemonEvent) {
    shared.events.send(event);
}

/// Ends a run that could not start (no repository, bad workflow file, git failure).
async fn fail_before_start(
    shared: &Arc<Shared>,
    record: &RunRecord,
    workflow: &Arc<str>,
    message: &str,
) {
    let id = record.id;
    tracing::warn!(run = %id, workflow = %workflow, error = %message, "run failed before it started");
    let report = json!({
        "run_id": id.to_string(),
        "workflow": workflow.as_ref(),
        "status": "failed",
        "stages": [],
        "error": message,
    });
    let path = shared.store_path.clone();
    let mut finish = RunFinish::new(RunStatus::Failed);
    finish.error = Some(message.to_string());
    finish.deliveries =
        crate::notify::finish_deliveries(shared, record, RunStatus::Failed, &report);
    let written = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&path)?;
        store.finish_run(id, &finish)
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::error!(run = %id, "cannot record the failure of the run");
    }
    publish(
        shared,
        DaemonEvent::RunFinished {
            run_id: id,
            workflow: workflow.clone(),
            status: RunStatus::Failed,
            report: Arc::new(report),
        },
    );
}

/// Mirror, checkout, workflow, resume input (blocking).
fn prepare(shared: &Shared, record: &RunRecord) -> Result<Prepared, String> {
    let id = record.id;
    let store = Store::open(&shared.store_path).map_err(|e| e.to_string())?;
    let repo_name = record
        .repo
        .as_deref()
        .ok_or_else(|| "the run belongs to no repository".to_string())?;
    let repo = shared
        .config
        .repo(repo_name)
        .ok_or_else(|| format!("repository `{repo_name}` is not configured any more"))?;
    let mut mirror = open_mirror(shared, repo).map_err(|e| e.to_string())?;
    let spec = match (&record.trigger.commit, &record.trigger.branch) {
        (Some(c), _) => c.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => mirror.default_branch().unwrap_or_else(|| "HEAD".into()),
    };
    let oid = match mirror.resolve_commit(&spec) {
        Ok(oid) => oid,
        Err(_) => {
            mirror.fetch().map_err(|e| e.to_string())?;
            mirror.resolve_commit(&spec).map_err(|e| e.to_string())?
        }
    };
    let workspace =
        Workspace::for_run(&mirror, oid, &shared.state_dir, id).map_err(|e| e.to_string())?;
    let info = mirror.commit_info(oid).map_err(|e| e.to_string())?;
    let file = find_workflow_file(workspace.path(), &record.workflow)?;
    let loaded = dsl::load_workflow(&file).map_err(|d| d.render())?;
    let branch = record
        .trigger
        .branch
        .clone()
        .or_else(|| mirror.default_branch());
    let repo_value = json!({
        "name": repo.name,
        "url": repo.source.clone_url(),
        "branch": branch,
        "commit": info.id,
        "message": info.message.trim_end(),
        "author": info.author,
    });
    // Resume input: what this run finished before a crash, or, for a retry, what the run
    // it retries finished.
    let own = store.get_steps(id).map_err(|e| e.to_string())?;
    let (steps, saved_context) = if own.is_empty()
        && let Some(orig) = record.retry_of
    {
        let prior = store.get_steps(orig).map_err(|e| e.to_string())?;
        let ctx = store
            .get_run(orig)
            .map_err(|e| e.to_string())?
            .and_then(|r| r.context);
        (prior, ctx)
    } else {
        (own, record.context.clone())
    };
    let resume: Vec<StepReport> = steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped))
        .map(step_report)
        .collect();
    let mut context = saved_context
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    if context.is_empty() && loaded.workflow.context.preserve {
        context = store
            .load_context(record.repo.as_deref(), &record.workflow)
            .map_err(|e| e.to_string())?
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
    }
    Ok(Prepared {
        workspace,
        loaded,
        repo: repo_value,
        resume,
        context,
        store,
    })
}

/// Opens a repository's mirror, cloning it first if it does not exist yet. Clones are
/// serialised within the process (many runs and checks may ask at once; a clone goes through
/// a temporary directory named after the process).
pub fn open_mirror(
    shared: &Shared,
    repo: &super::config::RepoConfig,
) -> Result<Mirror, super::mirror::MirrorError> {
    static CLONING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Ok(m) = Mirror::open(&shared.state_dir, &repo.name) {
        return Ok(m.with_credentials(repo.credentials.clone()));
    }
    let _guard = CLONING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Mirror::open_or_clone_with(
        &shared.state_dir,
        &repo.name,
        &repo.source.clone_url(),
        repo.credentials.as_ref(),
    )
}

/// The file under `workspace/.workflows` whose workflow is called `name` (by its `name:`,
/// else by its file stem).
pub fn find_workflow_file(workspace: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = workspace.join(".workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list `.workflows`: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut by_stem = None;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok((wf, _)) = dsl::parse_str(&file_name, &text)
            && wf.name.value == name
        {
            return Ok(path.clone());
        }
        if path.file_stem().is_some_and(|s| s == name) && by_stem.is_none() {
            by_stem = Some(path.clone());
        }
    }
    by_stem.ok_or_else(|| format!("no workflow named `{name}` in `.workflows/` at this commit"))
}

/// A stored step as the engine's report of it.
fn step_report(s: &StepRecord) -> StepReport {
    let status = match s.status {
        StepStatus::Succeeded => engine::StepStatus::Succeeded,
        StepStatus::Skipped => engine::StepStatus::Skipped,
        StepStatus::Failed => engine::StepStatus::Failed,
        StepStatus::Cancelled | StepStatus::Interrupted => engine::StepStatus::Cancelled,
        StepStatus::Running => engine::StepStatus::Running,
    };
    let duration_ms = match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => u64::try_from((b - a).num_milliseconds()).ok(),
        _ => None,
    };
    StepReport {
        id: s.step_id.clone(),
        status,
        cached: s.cached,
        attempts: s.attempts,
        exit_code: s.exit_code,
        error_class: s.error_class.clone(),
        outputs: s
            .outputs
            .as_ref()
            .and_then(|o| o.as_object().cloned())
            .unwrap_or_default(),
        started_at: s.started_at.map(engine::report::rfc3339),
        finished_at: s.finished_at.map(engine::report::rfc3339),
        duration_ms,
    }
}

/// Step id to stage name, for every step a stage holds (decision branches included).
fn stage_map(wf: &dsl::Workflow) -> HashMap<String, String> {
    fn add(steps: &[Step], stage: &str, out: &mut HashMap<String, String>) {
        for step in steps {
            out.entry(step.id.value.clone())
                .or_insert_with(|| stage.to_string());
            if let StepKind::Decision(d) = &step.kind {
                for b in &d.branches {
                    add(&b.steps, stage, out);
                }
            }
        }
    }
    let mut out = HashMap::new();
    for stage in &wf.stages {
        add(&stage.steps, &stage.name.value, &mut out);
    }
    out
}

/// The recorder: engine events to the store, the log files and the daemon's event bus.
/// Returns the store connection for the run's last write.
fn record_events(
    mut store: Store,
    mut rx: mpsc::UnboundedReceiver<EngineEvent>,
    id: RunId,
    stages: &HashMap<String, String>,
    shared: &Shared,
    abandon: &AtomicBool,
) -> Store {
    let mut logs = RunLogs::new(&shared.state_dir, id, shared.config.limits.max_log_bytes);
    let stage_of = |step: &str| stages.get(step).cloned().unwrap_or_else(|| "-".to_string());
    // The run's context after the latest update, saved with the next step's end.
    let mut context: Option<Value> = None;
    while let Some(event) = rx.blocking_recv() {
        match event {
            EngineEvent::ContextChanged { context: c, .. } => context = Some(Value::Object(c)),
            EngineEvent::StepStarted { step, attempt, .. } => {
                logs.start(&step, attempt);
                let start = StepStart {
                    stage: stage_of(&step),
                    step_id: step.to_string(),
                    attempt,
                };
                if let Err(err) = store.record_step_started(id, &start) {
                    tracing::warn!(run = %id, step = %step, error = %err, "cannot record step start");
                }
                publish(
                    shared,
                    DaemonEvent::StepStarted {
                        run_id: id,
                        step,
                        attempt,
                    },
                );
            }
            EngineEvent::StepOutput {
                step, stream, text, ..
            } => {
                logs.write(&step, &text);
                // The event (and its share of the run's output allowance) is dropped here,
                // once the chunk is in the file.
                shared.events.send_log(|| LogChunk {
                    run_id: id,
                    step,
                    stream,
                    text: text.into(),
                });
            }
            EngineEvent::StepFinished { report, .. } => {
                logs.finish(&report.id);
                if abandon.load(Ordering::SeqCst) && report.status == engine::StepStatus::Cancelled
                {
                    // Stopped by shutdown: leave it as it was, for the next boot to judge.
                    continue;
                }
                let status = match report.status {
                    engine::StepStatus::Succeeded => StepStatus::Succeeded,
                    engine::StepStatus::Failed => StepStatus::Failed,
                    engine::StepStatus::Skipped => StepStatus::Skipped,
                    engine::StepStatus::Cancelled => StepStatus::Cancelled,
                    engine::StepStatus::Running | engine::StepStatus::Pending => continue,
                };
                let finish = StepFinish {
                    stage: stage_of(&report.id),
                    step_id: report.id.clone(),
                    attempt: report.attempts,
                    status,
                    exit_code: report.exit_code,
                    error_class: report.error_class.clone(),
                    error: None,
                    outputs: Some(Value::Object(report.outputs.clone())),
                    cached: report.cached,
                    context: context.take(),
                };
                if let Err(err) = store.record_step_finished(id, &finish) {
                    tracing::warn!(run = %id, step = %report.id, error = %err, "cannot record step end");
                }
                publish(
                    shared,
                    DaemonEvent::StepFinished {
                        run_id: id,
                        step: report.id.as_str().into(),
                        status,
                    },
                );
            }
            EngineEvent::Retrying {
                step,
                attempt,
                error_class,
                delay,
                ..
            } => publish(
                shared,
                DaemonEvent::StepRetrying {
                    run_id: id,
                    step,
                    attempt,
                    error_class: error_class.into(),
                    delay,
                },
            ),
            EngineEvent::RollbackStarted { .. } => {
                publish(shared, DaemonEvent::RollbackStarted { run_id: id })
            }
            EngineEvent::RollbackFinished { status, .. } => publish(
                shared,
                DaemonEvent::RollbackFinished {
                    run_id: id,
                    succeeded: status == engine::StepStatus::Succeeded,
                },
            ),
            EngineEvent::Escalation {
                step,
                error_class,
                message,
                ..
            } => publish(
                shared,
                DaemonEvent::Escalation {
                    run_id: id,
                    step,
                    error_class: error_class.into(),
                    message: message.into(),
                },
            ),
            EngineEvent::HandlerNotify {
                step,
                error_class,
                action,
                ..
            } => publish(
                shared,
                DaemonEvent::HandlerNotify {
                    run_id: id,
                    step,
                    error_class: error_class.into(),
                    action: action.into(),
                },
            ),
            EngineEvent::RunFinished { .. } => break,
            _ => {}
        }
    }
    store
}
