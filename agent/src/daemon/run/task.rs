//! One run, from claimed to finished: workspace, workflow, engine, step records and logs.
//!
//! The scheduler starts one task per run it claims (and has already marked running). The
//! task prepares the run on a blocking thread (the mirror, a checkout of the run's exact
//! commit, the workflow file at that commit with its sub-workflows), runs it on the shared
//! [`Engine`](crate::engine::Engine), and hands every engine event to a recorder on another
//! blocking thread that writes through the store handle: each step transition is one
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

use crate::bus::LogChunk;
use crate::daemon::handle::{DaemonEvent, Shared};
use crate::daemon::run::logs::RunLogs;
use crate::daemon::run::mirror::Mirror;
use crate::daemon::run::workspace::{CheckoutSpec, Workspace};
use crate::daemon::store_health::retry_write;
use crate::engine::{self, Cancel, EngineEvent, EventSender, RunRequest, StepReport};
use crate::model::event::EventKind;
use crate::model::report::RunReport;
use crate::store::{
    Db, RunFinish, RunId, RunRecord, RunStatus, StepFinish, StepRecord, StepStart, StepStatus,
    Store,
};

/// How the scheduler steers a running run.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunControl {
    /// Cancels the engine run.
    pub cancel: Cancel,
    /// Set by shutdown: the run's end is not written (it resumes on the next boot).
    pub abandon: Arc<AtomicBool>,
    /// Set with `abandon` when another node took the run back (this node's lease lapsed):
    /// nothing more of it is written here, not even its stopped steps.
    pub lost: Arc<AtomicBool>,
}

/// What a run task reports to the scheduler when it ends.
#[derive(Debug)]
pub(crate) struct RunEnded {
    /// The run.
    pub run: RunId,
}

/// Runs one claimed, running run to its end and tells the scheduler.
pub(crate) async fn run(
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
    let stages = stage_map(&loaded);
    let matrix_stages: std::collections::HashSet<String> = loaded
        .workflow
        .stages
        .iter()
        .filter(|s| s.matrix.is_some())
        .map(|s| s.name.value.clone())
        .collect();
    // With barriers: a step's process is spawned only once the recorder has its start on
    // disk (see `record_events`).
    let (events, rx) = EventSender::channel_with_barriers(shared.config.limits.record_timeout);
    let recorder = {
        let shared = shared.clone();
        let abandon = control.abandon.clone();
        tokio::task::spawn_blocking(move || {
            record_events(store, rx, id, (&stages, &matrix_stages), &shared, &abandon)
        })
    };
    let artifacts = crate::daemon::run::artifacts::store_for_run(
        &shared.state_dir,
        shared.store.clone(),
        record.repo.clone(),
        record.trigger.branch.clone(),
    );
    let request = RunRequest {
        workflow: Arc::new(loaded),
        parameters: record.parameters.as_object().cloned().unwrap_or_default(),
        run_id: id.to_string(),
        env: crate::daemon::run::committer::committer_env(id),
        workdir: workspace.path().to_path_buf(),
        secrets: run_secrets(shared, &record),
        repo,
        trigger: record.trigger.kind.as_str().to_string(),
        event: event_values(&record),
        attempt: if record.retry_of.is_some() { 2 } else { 1 },
        context,
        events,
        cancel: control.cancel.clone(),
        resume,
        artifacts: Some(artifacts),
    };
    let result = shared.engine.run(request).await;
    let store = match recorder.await {
        Ok(store) => store,
        Err(join) => {
            tracing::error!(run = %id, error = %join, "run recorder failed");
            return;
        }
    };
    if control.lost.load(Ordering::SeqCst) {
        // Another node runs it now: its records are that node's.
        let _ = tokio::task::spawn_blocking(move || drop(workspace)).await;
        tracing::warn!(run = %id, "run stopped here: another node took it back");
        return;
    }
    if control.abandon.load(Ordering::SeqCst) {
        // Shutdown: leave the run `running`; the next boot resumes it. Its steps that were
        // running are marked interrupted now, so that boot does not count a daemon crash
        // against them (only crashes count towards the resume limit).
        if let Err(err) = store.mark_steps_stopped(id).await {
            tracing::warn!(run = %id, error = %err, "cannot mark the stopped steps");
        }
        let _ = tokio::task::spawn_blocking(move || drop(workspace)).await;
        tracing::info!(run = %id, "run left for the next start (shutdown)");
        return;
    }
    let status = result.report.status.finished();
    let mut typed = result.report.clone();
    typed.run_id = id.to_string();
    let report = serde_json::to_value(&typed).unwrap_or(Value::Null);
    // One end time for the store and the webhooks: one `duration_ms` everywhere.
    let mut ended = record.clone();
    ended.finished_at = Some(chrono::Utc::now());
    let finish = RunFinish {
        status,
        error: result.report.error.clone(),
        report: Some(report),
        preserved_context: preserve.then(|| Value::Object(result.context.clone())),
        deliveries: Vec::new(),
        // The run's end and its webhook event are written together (outbox).
        event: EventKind::outbox_run_end(!shared.config.webhooks.is_empty(), status),
        finished_at: ended.finished_at,
    };
    let keep = status == RunStatus::Failed && shared.config.keep_failed_workspaces;
    let health_of = shared.clone();
    let abandon = control.abandon.clone();
    let run_user = shared.engine.config().run_user.is_some();
    let finished = tokio::task::spawn_blocking(move || {
        // Retried until written: a run whose end is dropped stays `running` for ever. Only
        // shutdown stops the retries (the next boot resumes the run).
        let written = retry_write(
            &health_of.store_health,
            "recording the end of the run",
            None,
            &|| abandon.load(Ordering::SeqCst),
            || {
                let finish = finish.clone();
                store.blocking_write(move |db| db.finish_run(id, &finish))
            },
        );
        if keep {
            let path = workspace.into_kept_path();
            // The run is over: its steps' user no longer writes there (later runs run as the
            // same user).
            if run_user
                && let Err(err) = runners::chown_tree_to_self(&path)
            {
                tracing::warn!(run = %id, error = %err, "cannot take the kept workspace back");
            }
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
            report: Arc::new(typed),
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
    let report = RunReport::ended_early(
        id.to_string(),
        workflow.as_ref(),
        RunStatus::Failed,
        message,
    );
    let store = shared.store.clone();
    let mut finish = RunFinish::new(RunStatus::Failed);
    finish.error = Some(message.to_string());
    finish.event = EventKind::outbox_run_end(!shared.config.webhooks.is_empty(), RunStatus::Failed);
    let health_of = shared.clone();
    let written = tokio::task::spawn_blocking(move || {
        // Retried for a while rather than dropped (the run would stay `running`).
        let deadline = std::time::Instant::now() + health_of.config.limits.record_timeout;
        retry_write(
            &health_of.store_health,
            "recording the failure of the run",
            Some(deadline),
            &|| false,
            || {
                let finish = finish.clone();
                store.blocking_write(move |db| db.finish_run(id, &finish))
            },
        )
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
    let store = shared.store.clone();
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
    // The file the run recorded; runs queued before files were recorded find it by name.
    let file = match &record.workflow_file {
        Some(path) => workspace.path().join(path),
        None => find_workflow_file(workspace.path(), &record.workflow)?,
    };
    let loaded = dsl::load_workflow(&file).map_err(|d| d.render())?;
    // A tag run is on no branch; any other run without one is on the default branch.
    let tag = tag_of(record);
    let pull_request = record.event.as_ref().and_then(|e| e.pull_request.as_ref());
    let branch = match (&tag, pull_request) {
        (Some(_), _) => None,
        (None, Some(pr)) => Some(pr.head.clone()),
        (None, None) => record
            .trigger
            .branch
            .clone()
            .or_else(|| mirror.default_branch()),
    };
    // The workflow's `checkout` lays the tree out and gives it its `.git`.
    let checkout = loaded.workflow.checkout.clone().unwrap_or_default();
    let spec = CheckoutSpec {
        disabled: !checkout.enabled,
        // A pull request's head branch lives in the head repository: not written as a local
        // branch (HEAD is detached at the head commit).
        branch: branch.clone().filter(|_| pull_request.is_none()),
        tag: tag.clone(),
        depth: checkout.depth,
        tags: checkout.tags,
        submodules: checkout.submodules,
        path: checkout.path.as_ref().map(|p| p.value.clone()),
    };
    workspace
        .arrange(&mirror, &spec)
        .map_err(|e| format!("checkout: {e}"))?;
    // Steps running as the run user own (and may write) their workspace.
    if let Some(user) = &shared.engine.config().run_user {
        user.chown_tree(workspace.path()).map_err(|e| {
            format!(
                "cannot give the workspace `{}` to user `{}`: {e}",
                workspace.path().display(),
                user.name
            )
        })?;
    }
    let repo_value = json!({
        "name": repo.name,
        "full_name": repo.full_name,
        "url": repo.source.clone_url(),
        "branch": branch,
        "ref": record.event.as_ref().and_then(|e| e.git_ref.clone()),
        "commit": info.id,
        "message": info.message.trim_end(),
        "author": info.author,
    });
    // Resume input: what this run finished before a crash, or, for a retry, what the run
    // it retries finished.
    let own = store
        .blocking_read(|db: &Db| db.get_steps(id))
        .map_err(|e| e.to_string())?;
    let mut from_run = id;
    let (steps, saved_context) = if own.is_empty()
        && let Some(orig) = record.retry_of
    {
        from_run = orig;
        let prior = store
            .blocking_read(|db: &Db| db.get_steps(orig))
            .map_err(|e| e.to_string())?;
        let ctx = store
            .blocking_read(|db: &Db| db.get_run(orig))
            .map_err(|e| e.to_string())?
            .and_then(|r| r.context);
        (prior, ctx)
    } else {
        (own, record.context.clone())
    };
    // Every finished step goes to the engine, which takes over the succeeded ones and judges
    // the rest again; interrupted steps were not finished and say nothing about the outcome.
    let mut resume: Vec<StepReport> = steps
        .iter()
        .filter(|s| {
            matches!(
                s.status,
                StepStatus::Succeeded
                    | StepStatus::Skipped
                    | StepStatus::Failed
                    | StepStatus::Cancelled
            )
        })
        .map(step_report)
        .collect();
    if !resume.is_empty() {
        let kept = store
            .blocking_read(|db: &Db| db.list_artifacts(from_run))
            .map_err(|e| e.to_string())?;
        crate::daemon::run::artifacts::attach(&mut resume, &kept);
    }
    let mut context = saved_context
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    if context.is_empty() && loaded.workflow.context.preserve {
        context = store
            .blocking_read(|db: &Db| db.load_context(record.repo.as_deref(), &record.workflow))
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

/// The tag a run is for (`refs/tags/NAME` in its event), without `refs/tags/`.
fn tag_of(record: &RunRecord) -> Option<String> {
    record
        .event
        .as_ref()
        .and_then(|e| e.git_ref.as_deref())
        .and_then(|r| r.strip_prefix("refs/tags/"))
        .map(str::to_string)
}

/// The secrets a run gets: the daemon's, except for runs of pull requests from forks (also
/// their retries), which get none unless their repository sets `secrets_for_forks: true`.
fn run_secrets(shared: &Shared, record: &RunRecord) -> indexmap::IndexMap<String, String> {
    let fork = record
        .event
        .as_ref()
        .and_then(|e| e.pull_request.as_ref())
        .is_some_and(|pr| pr.fork);
    let allowed = record
        .repo
        .as_deref()
        .and_then(|r| shared.config.repo(r))
        .is_some_and(|r| r.secrets_for_forks);
    if fork && !allowed {
        tracing::info!(run = %record.id, "pull request from a fork: the run gets no secrets");
        return indexmap::IndexMap::new();
    }
    shared.secrets.clone()
}

/// `run.ref`, `run.event` and, for pull-request runs, `run.pull_request` with `number`,
/// `base`, `head`, `head_sha` and `fork` (and the flat `pr_number`, `pr_base`, `pr_head`).
fn event_values(record: &RunRecord) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let event = record.event.clone().unwrap_or_default();
    let kind = match (&event.pull_request, record.trigger.kind) {
        // A retry of a pull-request run is still about the pull request.
        (Some(_), _) => "pull_request".to_string(),
        (None, kind) => kind.as_str().to_string(),
    };
    out.insert("event".into(), Value::String(kind));
    let git_ref = event.git_ref.clone().or_else(|| {
        record
            .trigger
            .branch
            .as_ref()
            .map(|b| format!("refs/heads/{b}"))
    });
    out.insert("ref".into(), git_ref.map_or(Value::Null, Value::String));
    if let Some(pr) = &event.pull_request {
        out.insert(
            "pull_request".into(),
            json!({
                "number": pr.number,
                "base": pr.base,
                "head": pr.head,
                "head_sha": pr.head_sha,
                "head_repo": pr.head_repo,
                "fork": pr.fork,
            }),
        );
        out.insert("pr_number".into(), json!(pr.number));
        out.insert("pr_base".into(), json!(pr.base));
        out.insert("pr_head".into(), json!(pr.head));
    }
    out
}

/// Opens a repository's mirror, cloning it first if it does not exist yet. Clones are
/// serialised within the process (many runs and checks may ask at once; a clone goes through
/// a temporary directory named after the process).
pub(crate) fn open_mirror(
    shared: &Shared,
    repo: &crate::config::RepoConfig,
) -> Result<Mirror, crate::daemon::run::mirror::MirrorError> {
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
pub(crate) fn find_workflow_file(workspace: &Path, name: &str) -> Result<PathBuf, String> {
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
    // A step the daemon's death stopped is, to the engine resuming the run, cancelled.
    let status = match s.status {
        StepStatus::Interrupted => StepStatus::Cancelled,
        other => other,
    };
    let duration_ms = match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => u64::try_from((b - a).num_milliseconds()).ok(),
        _ => None,
    };
    StepReport {
        id: s.step_id.clone(),
        name: None,
        status,
        cached: s.cached,
        cache: None,
        attempts: s.attempts,
        exit_code: s.exit_code,
        error_class: s.error_class.clone(),
        continued: false,
        queued_ms: s.queued_ms,
        outputs: s
            .outputs
            .as_ref()
            .and_then(|o| o.as_object().cloned())
            .unwrap_or_default(),
        started_at: s.started_at.map(crate::model::rfc3339),
        finished_at: s.finished_at.map(crate::model::rfc3339),
        duration_ms,
        workflow: None,
        matrix: None,
        artifacts: None,
    }
}

/// Step id (as events name it) to the section a live report shows it in: its stage for
/// every step a stage holds (decision branches included), `compensation` and `rollback`
/// for those steps, and for a called workflow's steps `CALL/STAGE` (ids `CALL/ID`), as in
/// the finished report's listing.
fn stage_map(loaded: &dsl::Loaded) -> HashMap<String, String> {
    fn add(
        set: &dsl::Loaded,
        steps: &[Step],
        section: &str,
        prefix: &str,
        depth: usize,
        out: &mut HashMap<String, String>,
    ) {
        for step in steps {
            let id = format!("{prefix}{}", step.id.value);
            out.entry(id.clone()).or_insert_with(|| section.to_string());
            match &step.kind {
                StepKind::Decision(d) => {
                    for b in &d.branches {
                        add(set, &b.steps, section, prefix, depth, out);
                    }
                }
                StepKind::Workflow(name) if depth < engine::MAX_CALL_DEPTH => {
                    if let Some(sub) = set.subworkflow(&name.value) {
                        add_workflow(set, sub, &format!("{id}/"), depth + 1, out);
                    }
                }
                _ => {}
            }
            add(
                set,
                &step.compensate,
                &format!("{prefix}compensation"),
                prefix,
                depth,
                out,
            );
        }
    }
    fn add_workflow(
        set: &dsl::Loaded,
        wf: &dsl::Workflow,
        prefix: &str,
        depth: usize,
        out: &mut HashMap<String, String>,
    ) {
        for stage in &wf.stages {
            let section = format!("{prefix}{}", stage.name.value);
            add(set, &stage.steps, &section, prefix, depth, out);
        }
        if let Some(rb) = &wf.rollback {
            let section = format!("{prefix}rollback");
            add(set, &rb.steps, &section, prefix, depth, out);
        }
    }
    let mut out = HashMap::new();
    add_workflow(loaded, &loaded.workflow, "", 0, &mut out);
    out
}

/// The section of step `step` (as events name it): a matrix instance (`ID (k=v, ...)`) is
/// in the stage of its matrix step, and a step of a matrix stage's instance in that
/// instance (`STAGE (k=v, ...)`, the values being the id's first group).
fn section_of(
    stages: &HashMap<String, String>,
    matrix_stages: &std::collections::HashSet<String>,
    step: &str,
) -> String {
    if let Some(s) = stages.get(step) {
        return s.clone();
    }
    let Some((base, rest)) = step.split_once(" (") else {
        return "-".to_string();
    };
    match stages.get(base) {
        Some(s) if matrix_stages.contains(s) => {
            let group = rest
                .split_once(") (")
                .map_or_else(|| rest.strip_suffix(')').unwrap_or(rest), |(g, _)| g);
            format!("{s} ({group})")
        }
        Some(s) => s.clone(),
        None => "-".to_string(),
    }
}

/// The recorder: engine events to the store, the log files and the daemon's event bus.
/// Returns the store handle for the run's last write.
fn record_events(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<EngineEvent>,
    id: RunId,
    (stages, matrix_stages): (&HashMap<String, String>, &std::collections::HashSet<String>),
    shared: &Shared,
    abandon: &AtomicBool,
) -> Store {
    let mut logs = RunLogs::new(&shared.state_dir, id, shared.config.limits.max_log_bytes)
        .shipping(shared.log_shipper.clone());
    let stage_of = |step: &str| section_of(stages, matrix_stages, step);
    // The run's context after the latest update, saved with the next step's end.
    let mut context: Option<Value> = None;
    let health = &shared.store_health;
    let stop = || abandon.load(Ordering::SeqCst);
    // Why the latest step start could not be recorded (a logic error: transient ones are
    // retried); the barrier that follows every start hands it to the engine, which then
    // fails the step without spawning it.
    let mut start_error: Option<String> = None;
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
                // Retried until written (or shutdown); the engine stops waiting for it after
                // `limits.record_timeout` and fails the step unrun.
                let written = retry_write(
                    health,
                    &format!("recording the start of step `{step}` of run {id}"),
                    None,
                    &stop,
                    || {
                        let start = start.clone();
                        store.blocking_write(move |db| db.record_step_started(id, &start))
                    },
                );
                start_error = written.err().map(|err| {
                    tracing::error!(run = %id, step = %step, error = %err, "cannot record step start");
                    format!("storage error: cannot record the step's start: {err}")
                });
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
                // On a shared store: the log is there before the step's end.
                logs.settle(&report.id, &stop);
                if abandon.load(Ordering::SeqCst) && report.status == StepStatus::Cancelled {
                    // Stopped by shutdown: leave it as it was, for the next boot to judge.
                    continue;
                }
                let status = match report.status {
                    StepStatus::Running | StepStatus::Pending | StepStatus::Interrupted => continue,
                    finished => finished,
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
                    queued_ms: report.queued_ms,
                };
                // Retried until written (or shutdown): a step whose end is lost would run
                // again when the run resumes.
                let written = retry_write(
                    health,
                    &format!("recording the end of step `{}` of run {id}", report.id),
                    None,
                    &stop,
                    || {
                        let finish = finish.clone();
                        store.blocking_write(move |db| db.record_step_finished(id, &finish))
                    },
                );
                if let Err(err) = written {
                    tracing::error!(run = %id, step = %report.id, error = %err, "cannot record step end");
                }
                let kept = crate::daemon::run::artifacts::records(id, &report);
                if !kept.is_empty()
                    && let Err(err) = retry_write(
                        health,
                        &format!(
                            "recording the artifacts of step `{}` of run {id}",
                            report.id
                        ),
                        None,
                        &stop,
                        || {
                            let kept = kept.clone();
                            store.blocking_write(move |db| db.record_artifacts(&kept))
                        },
                    )
                {
                    tracing::error!(run = %id, step = %report.id, error = %err, "cannot record artifacts");
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
            } => {
                // The failed attempt's end (the timeline draws it and the backoff after it);
                // losing it loses only that drawing.
                let (s, class) = (step.to_string(), error_class.clone());
                if let Err(err) = store
                    .blocking_write(move |db| db.record_attempt_failed(id, &s, attempt, &class))
                {
                    tracing::warn!(run = %id, step = %step, error = %err, "cannot record a failed attempt");
                }
                publish(
                    shared,
                    DaemonEvent::StepRetrying {
                        run_id: id,
                        step,
                        attempt,
                        error_class: error_class.into(),
                        delay,
                    },
                )
            }
            EngineEvent::RollbackStarted { .. } => {
                publish(shared, DaemonEvent::RollbackStarted { run_id: id })
            }
            EngineEvent::RollbackFinished { status, .. } => publish(
                shared,
                DaemonEvent::RollbackFinished {
                    run_id: id,
                    succeeded: status == StepStatus::Succeeded,
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
            EngineEvent::Barrier { ack, .. } => {
                // Events are handled in order: everything before this barrier is written.
                ack.answer(start_error.take().map_or(Ok(()), Err));
            }
            EngineEvent::RunFinished { .. } => break,
            _ => {}
        }
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the live report's sections of matrix stages: a step of an instance is shown
    /// in that instance (`s (n=1, os=linux)`), as in the finished report.
    #[test]
    fn steps_of_matrix_stage_instances_are_in_their_instance() {
        let stages: HashMap<String, String> = [("t", "s"), ("m", "plain")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let matrix: std::collections::HashSet<String> = ["s".to_string()].into_iter().collect();
        for (step, section) in [
            ("t", "s"),
            ("t (n=1, os=linux)", "s (n=1, os=linux)"),
            ("t (n=1) (k=2)", "s (n=1)"),
            ("m (k=2)", "plain"),
            ("zz", "-"),
        ] {
            assert_eq!(section_of(&stages, &matrix, step), section, "{step}");
        }
    }

    /// While a run runs, its report is built from the recorded steps grouped by this map: a
    /// called workflow's steps, compensation and rollback steps once all fell under `-`;
    /// they now get the sections the finished report's listing shows.
    #[test]
    fn called_compensation_and_rollback_steps_get_sections() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("child.yaml"),
            "workflow:\n  name: child\n  stages:\n    - name: test\n      steps:\n        - id: unit\n          run: 'true'\n",
        )
        .expect("write child");
        let parent = dir.path().join("parent.yaml");
        std::fs::write(
            &parent,
            "workflow:\n  name: parent\n  stages:\n    - name: ci\n      steps:\n        - id: setup\n          run: 'true'\n          compensate:\n            - id: undo\n              run: 'true'\n        - id: x\n          type: workflow\n          workflow: child\n  rollback:\n    steps:\n      - id: restore\n        run: 'true'\n",
        )
        .expect("write parent");
        let loaded = dsl::load_workflow(&parent).expect("valid workflow");
        let map = stage_map(&loaded);
        for (step, section) in [
            ("setup", "ci"),
            ("x", "ci"),
            ("x/unit", "x/test"),
            ("undo", "compensation"),
            ("restore", "rollback"),
        ] {
            assert_eq!(map.get(step).map(String::as_str), Some(section), "{step}");
        }
    }
}
