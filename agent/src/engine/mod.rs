//! The execution engine: runs a validated workflow's stages and steps with real processes
//! (through the `runners` crate), with conditions, parallelism, retries, timeouts,
//! cancellation, error handlers, rollback, compensation, secrets and resource admission.
//!
//! One [`Engine`] is created per process and shared by every run (`agent exec` makes one
//! run; the daemon many): it owns the resource [`Admission`] and the adaptive-backoff
//! memory. A run is described by a [`RunRequest`] and yields a [`RunResult`] (the
//! [`RunReport`] of DESIGN §5, the final context, the workflow's outputs). While it runs,
//! the engine sends [`EngineEvent`]s to whoever listens; it knows nothing of terminals,
//! stores or webhooks, and it reads and writes no file of its own (the caller loads and
//! saves a preserved context: `agent exec` through [`context::load`]/[`context::save`]).
//!
//! Semantics the file format leaves open, decided here:
//! - A step runs while nothing has failed the run. A `when` that uses none of `success()`,
//!   `failure()`, `always()`, `cancelled()` gets an implicit `success()` (as `if:` in GitHub
//!   Actions); one that uses them decides alone, so `when: failure()` steps run after a
//!   failure and `when: always()` / `cancelled()` steps even after a cancel (with a cancel
//!   handle of their own that only a kill reaches).
//! - A failure that fails the run (`abort`, `rollback`, `compensate`, `escalate`) stops new
//!   steps from starting; steps already running in a parallel stage finish. The
//!   compensation (reverse completion order) and then the rollback that a failure asked
//!   for run after the stages, even when the run is cancelled meanwhile (a second Ctrl-C
//!   kills them too). A cancelled step is not a failure: it triggers no handler.
//!   `continue` keeps the run green.
//! - Error-handler `steps` run when the handler fires, before its action; their results
//!   and those of compensation steps appear as events only (the report has no place for
//!   them); rollback steps are in `rollback.steps`; the steps a decision ran are appended to
//!   its stage. A handler's `retry` tries `max_retries` more times with the step's backoff,
//!   then does `then` (default `abort`).
//! - A sub-workflow runs as a nested run sharing the run id, cancel handle and secrets; it
//!   starts with a copy of the caller's context and its context updates stay inside it; its
//!   step ids appear in events as `call/step`.
//! - The workflow timeout caps every step's time limit and every backoff wait; when it
//!   passes, running steps fail as `Timeout` and nothing more starts.
//! - A step that writes `error_class=Cancelled` itself without a cancel simply failed.
//!
//! Layout: `run.rs` (one run: stages, failure actions, rollback, compensation, report),
//! `stage.rs` (scheduling inside a stage), `step.rs` (one step: `when`, rendering, tries,
//! retries, error handlers), `failure.rs` (what a failure leads to), `script_env.rs` (no
//! script injection), `scope.rs` (expression roots), plus the pure helpers `backoff.rs`,
//! `mask.rs`, `context.rs`, `secrets.rs`, `report.rs`, `events.rs` and the
//! terminal sink `progress.rs`.

pub mod backoff;
pub mod context;
pub mod errors;
pub mod events;
mod failure;
pub mod mask;
pub mod progress;
pub mod report;
mod run;
pub mod scope;
pub mod script_env;
pub mod secrets;
mod stage;
mod step;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Map, Value};

pub use errors::EngineError;
pub use events::{EngineEvent, EventSender, LogStream};
pub use report::{RollbackReport, RunReport, RunStatus, StageReport, StepReport, StepStatus};
pub use runners::{Admission, AdmissionConfig, Cancel};

/// Process-wide engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Skill directories searched after `<workspace>/.workflows/skills/`.
    pub skills_dirs: Vec<PathBuf>,
    /// Time between SIGTERM and SIGKILL when a step times out or is cancelled.
    pub grace: Duration,
    /// CPU and memory capacity for admission.
    pub admission: AdmissionConfig,
    /// The user step processes run as (the agent must be root); `None`: the agent's own.
    pub run_user: Option<Arc<runners::RunUser>>,
    /// Processes one run may have at once (a cgroup per run where one can be made; else
    /// `RLIMIT_NPROC` of the run user); `None`: no limit.
    pub max_run_processes: Option<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            skills_dirs: Vec::new(),
            grace: runners::DEFAULT_GRACE,
            admission: AdmissionConfig::default(),
            run_user: None,
            max_run_processes: None,
        }
    }
}

/// The engine shared by every run of a process.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    admission: Admission,
    adaptive: backoff::AdaptiveState,
}

/// Everything a run needs.
#[derive(Debug)]
pub struct RunRequest {
    /// The workflow and the sub-workflows it calls, loaded and validated.
    pub workflow: Arc<dsl::Loaded>,
    /// Parameters, already checked and converted (`dsl::params`).
    pub parameters: Map<String, Value>,
    /// The run id (used in events, the report and `AGENT_RUN_ID`).
    pub run_id: String,
    /// The workspace: every step's working directory.
    pub workdir: PathBuf,
    /// Secret values by name (`secrets.NAME`), masked in everything that leaves the engine.
    pub secrets: IndexMap<String, String>,
    /// `repo.*`: `url`, `branch`, `commit`, `message`, `author` (or null).
    pub repo: Value,
    /// `run.trigger`: `manual`, `push`, `schedule`, ...
    pub trigger: String,
    /// `run.attempt`: 1 unless the run is a retry of an earlier one.
    pub attempt: u32,
    /// The context the run starts with (a preserved one, or empty).
    pub context: Map<String, Value>,
    /// Where events go.
    pub events: EventSender,
    /// Cancels the run: the first request gracefully, a second kills at once.
    pub cancel: Cancel,
    /// When resuming an interrupted run: the step reports it had. Stage and decision steps
    /// whose report says `succeeded` or `skipped` are not run again; their report (and
    /// outputs, as recorded) are taken over. Empty for a fresh run. The caller decides
    /// what to do about steps that were running (`idempotent: false`).
    pub resume: Vec<StepReport>,
}

/// What a finished run hands back.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The report (secrets masked).
    pub report: RunReport,
    /// The context at the end of the run (to save when `preserve: true`).
    pub context: Map<String, Value>,
    /// The workflow's `outputs`, rendered at the end (empty when rendering failed).
    pub outputs: Map<String, Value>,
}

impl Engine {
    /// Creates the engine (measures CPU capacity once).
    pub fn new(config: EngineConfig) -> Self {
        let admission = Admission::new(config.admission.clone());
        Engine {
            config,
            admission,
            adaptive: backoff::AdaptiveState::new(),
        }
    }

    /// The admission scheduler shared by all runs.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Runs a workflow to the end and returns its result. Never panics on user input: a
    /// step's failure is part of the report.
    pub async fn run(&self, request: RunRequest) -> RunResult {
        run::run(self, request).await
    }
}

/// A fresh run id: time-ordered, 16 hex digits of milliseconds plus 6 random ones.
pub fn new_run_id() -> String {
    let ms = chrono::Utc::now().timestamp_millis().max(0);
    let r: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{ms:012x}{r:06x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Send + Sync>() {}

    /// A run request of the workflow `yaml`, triggered manually, in the temp directory.
    fn request(yaml: &str) -> RunRequest {
        let (wf, _) = dsl::parse_str("w.yaml", yaml).expect("valid workflow");
        let loaded = dsl::Loaded {
            workflow: wf,
            subworkflows: Default::default(),
            warnings: dsl::Diagnostics(Vec::new()),
            source: dsl::SourceFile::new("w.yaml", None),
        };
        RunRequest {
            workflow: Arc::new(loaded),
            parameters: Map::new(),
            run_id: new_run_id(),
            workdir: std::env::temp_dir(),
            secrets: IndexMap::new(),
            repo: Value::Null,
            trigger: "manual".into(),
            attempt: 1,
            context: Map::new(),
            events: EventSender::none(),
            cancel: Cancel::new(),
            resume: Vec::new(),
        }
    }

    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    }

    #[test]
    fn engine_is_shareable_and_runs_are_spawnable() {
        assert_sync::<Engine>();
        let engine = Engine::new(EngineConfig::default());
        let req = request(
            "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: 'true'\n",
        );
        let fut = engine.run(req);
        assert_send(&fut);
        let result = block_on(fut);
        assert_eq!(result.report.status, RunStatus::Succeeded);
        assert_eq!(result.report.stages[0].steps[0].attempts, 1);
    }

    #[test]
    fn resume_skips_steps_done_before() {
        let engine = Engine::new(EngineConfig::default());
        let mut prior = StepReport::pending("a");
        prior.status = StepStatus::Succeeded;
        prior.attempts = 1;
        prior.outputs.insert("x".into(), Value::from(1));
        let req = RunRequest {
            trigger: "retry".into(),
            attempt: 2,
            resume: vec![prior.clone()],
            ..request(
                "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: exit 1\n        - id: b\n          run: test \"${{ steps.a.output.x }}\" = 1\n",
            )
        };
        let result = block_on(engine.run(req));
        assert_eq!(
            result.report.status,
            RunStatus::Succeeded,
            "{:?}",
            result.report
        );
        assert_eq!(result.report.stages[0].steps[0], prior);
        assert_eq!(
            result.report.stages[0].steps[1].status,
            StepStatus::Succeeded
        );
    }
}
