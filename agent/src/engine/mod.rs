//! The execution engine: runs a validated workflow's stages and steps with real processes
//! (through the `runners` crate), with conditions, parallelism, retries, timeouts,
//! cancellation, error handlers, rollback, compensation, secrets and resource admission.
//!
//! One [`Engine`] is created per process and shared by every run (`agent exec` makes one
//! run; the daemon many): it owns the resource [`Admission`] and the adaptive-backoff
//! memory. A run is described by a [`RunRequest`] and yields a [`RunResult`] (the
//! [`RunReport`] of `agent exec --json`, the final context, the workflow's outputs). While it runs,
//! the engine sends [`EngineEvent`]s to whoever listens; it knows nothing of terminals,
//! stores or webhooks, and it reads and writes no file of its own (the caller loads and
//! saves a preserved context: `agent exec` through `cli::exec::context`).
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
//!   appear as events only (the report has no place for them); compensation steps are in
//!   `compensation`, rollback steps in `rollback.steps`; the steps a decision ran are
//!   appended to its stage. A handler's `retry` tries `max_retries` more times with the step's backoff,
//!   then does `then` (default `abort`).
//! - A sub-workflow runs as a nested run sharing the run id, cancel handle and secrets; it
//!   starts with a copy of the caller's context and its context updates stay inside it; its
//!   step ids appear in events as `call/step`, and its report (stages, rollback,
//!   compensation, error) is nested in the call step's report as `workflow`.
//! - The workflow timeout caps every step's time limit and every backoff wait; when it
//!   passes, running steps fail as `Timeout` and nothing more starts.
//! - A step that writes `error_class=Cancelled` itself without a cancel simply failed.
//! - A resumed or retried run takes over the steps that succeeded before and judges every
//!   other step again (see [`RunRequest::resume`]).
//! - A step's time starts when its first try begins (a process: once admitted); the wait
//!   for admission before it is the report's `queued_ms`.
//! - A failure that `continue` absorbed is marked `continued` in the report.
//!
//! Layout: `run_ctx.rs` (a run's state and the judgements on it, shared by the next three),
//! `run.rs` (one run: stages, failure actions, rollback, compensation, report),
//! `stage.rs` (scheduling inside a stage), `step.rs` (one step: `when`, rendering, tries,
//! retries, error handlers), `step_cache.rs` (serving and saving cached steps), `failure.rs` (what a failure leads to), `script_env.rs` (no
//! script injection), `step_env.rs` (the minimal step environment), `services.rs` (services around a scope), `artifacts.rs` (a step's artifacts; their archives in `archive.rs`), `scope.rs` (expression roots), plus the pure helpers `backoff.rs`,
//! `mask.rs`, `context.rs` (context merging), `report.rs`, `events.rs` and the failure recap
//! `recap.rs`. The terminal sink, the secrets file and the preserved-context file belong to
//! `agent exec` (`cli::exec`).

pub(crate) mod archive;
mod artifacts;
pub(crate) mod backoff;
pub(crate) mod context;
pub(crate) mod env_files;
pub(crate) mod errors;
pub(crate) mod events;
mod failure;
mod isolate;
mod job_env;
mod matrix;
pub(crate) mod recap;
mod run;
mod run_ctx;
pub(crate) mod scope;
pub(crate) mod script_env;
mod services;
mod shell_script;
mod stage;
mod step;
pub(crate) mod step_cache;
pub(crate) mod step_env;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Map, Value};

pub(crate) use crate::model::report::{RunReport, RunStatus, StepReport};
pub(crate) use events::{EngineEvent, EventSender, LogStream};
pub(crate) use runners::{Admission, AdmissionConfig, Cancel};
/// Deepest chain of sub-workflow calls.
pub(crate) use step::MAX_DEPTH as MAX_CALL_DEPTH;

/// Process-wide engine settings.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// Skill directories searched after `<workspace>/.workflows/skills/`.
    pub(crate) skills_dirs: Vec<PathBuf>,
    /// Time between SIGTERM and SIGKILL when a step times out or is cancelled.
    pub(crate) grace: Duration,
    /// CPU and memory capacity for admission.
    pub(crate) admission: AdmissionConfig,
    /// What a run's `AGENT_RUN_MARKER` is scoped by (see [`run_marker`]); `None`: this
    /// process's pid, which is enough for `agent exec`. The daemon gives one derived from its
    /// state directory, so that a restarted daemon finds the processes of its interrupted
    /// runs again.
    pub(crate) marker_scope: Option<String>,
    /// Variables of the agent's environment that steps see besides the minimal ones
    /// ([`step_env`]).
    pub(crate) env_passthrough: Vec<String>,
    /// The user step processes run as (the agent must be root); `None`: the agent's own.
    pub(crate) run_user: Option<Arc<runners::RunUser>>,
    /// With `run_user`: the uids runs take one each (`FIRST..=LAST`), so that runs running
    /// at the same time cannot reach each other's processes or workspaces; `None`: every
    /// run's steps run as `run_user`'s own uid.
    pub(crate) run_uids: Option<(u32, u32)>,
    /// Processes one run may have at once (a cgroup per run where one can be made; else
    /// `RLIMIT_NPROC` of the run user); `None`: no limit.
    pub(crate) max_run_processes: Option<u32>,
    /// The step cache (`cache:` steps and deterministic skills); `None`: every step runs.
    pub(crate) cache: Option<Arc<dyn step_cache::CacheBackend>>,
    /// On a cache miss, work out what changed against the step's last entry (the step
    /// reports' `cache_note`, printed by `agent exec --explain-cache`).
    pub(crate) explain_cache: bool,
}

/// The `AGENT_RUN_MARKER` value every process of run `run_id` carries:
/// `agent-<scope>-<run id>`, the scope being [`EngineConfig::marker_scope`] or the pid.
pub(crate) fn run_marker(scope: Option<&str>, run_id: &str) -> String {
    match scope {
        Some(scope) => format!("agent-{scope}-{run_id}"),
        None => format!("agent-{}-{run_id}", std::process::id()),
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            skills_dirs: Vec::new(),
            grace: runners::DEFAULT_GRACE,
            admission: AdmissionConfig::default(),
            marker_scope: None,
            env_passthrough: Vec::new(),
            run_user: None,
            run_uids: None,
            max_run_processes: None,
            cache: None,
            explain_cache: false,
        }
    }
}

/// The engine shared by every run of a process.
#[derive(Debug)]
pub(crate) struct Engine {
    config: EngineConfig,
    admission: Admission,
    adaptive: backoff::AdaptiveState,
    /// The base environment of every step, read once at creation ([`step_env::base_env`]).
    step_env: Vec<(String, String)>,
    /// The slots of `run_uids` in use (offsets from FIRST) and the next one to try.
    uid_slots: std::sync::Mutex<(u64, std::collections::HashSet<u32>)>,
}

/// A run's own uid, taken from [`EngineConfig::run_uids`] and given back when dropped.
pub(crate) struct UidLease<'a> {
    engine: &'a Engine,
    slot: u32,
    /// The run user with the run's uid.
    pub(crate) user: Arc<runners::RunUser>,
}

impl Drop for UidLease<'_> {
    fn drop(&mut self) {
        let mut slots = self
            .engine
            .uid_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slots.1.remove(&self.slot);
    }
}

/// Everything a run needs.
#[derive(Debug)]
pub(crate) struct RunRequest {
    /// The workflow and the sub-workflows it calls, loaded and validated.
    pub workflow: Arc<dsl::Loaded>,
    /// Parameters, already checked and converted (`dsl::params`).
    pub parameters: Map<String, Value>,
    /// The run id (used in events, the report and `AGENT_RUN_ID`).
    pub run_id: String,
    /// Extra environment for every step (the daemon's git committer identity), set before
    /// the workflow's `env`, which may override it. Empty for `agent exec`.
    pub env: Vec<(String, String)>,
    /// The workspace: every step's working directory.
    pub workdir: PathBuf,
    /// Secret values by name (`secrets.NAME`), masked in everything that leaves the engine.
    pub secrets: IndexMap<String, String>,
    /// `repo.*`: `url`, `branch`, `commit`, `message`, `author` (or null).
    pub repo: Value,
    /// `run.trigger`: `manual`, `push`, `schedule`, ...
    pub trigger: String,
    /// More of the `run` context, added to `id`, `attempt`, `trigger` and `workspace`:
    /// `event` (`AGENT_EVENT`), `ref` (`AGENT_REF`) and, for pull requests, `pull_request`,
    /// `pr_number`, `pr_base` and `pr_head` (`AGENT_PR_*`). Empty for `agent exec`.
    pub event: Map<String, Value>,
    /// `run.attempt`: 1 unless the run is a retry of an earlier one.
    pub attempt: u32,
    /// The context the run starts with (a preserved one, or empty).
    pub context: Map<String, Value>,
    /// Where events go.
    pub events: EventSender,
    /// Cancels the run: the first request gracefully, a second kills at once.
    pub cancel: Cancel,
    /// When resuming an interrupted run or retrying a failed one: the step reports of the
    /// earlier attempt (every finished one, failed included). Stage and decision steps whose
    /// report says `succeeded` are not run again; their report (and outputs, as recorded)
    /// are taken over. Skipped steps are judged again (a step skipped by its own `when`
    /// stays skipped, one skipped after a failure runs), and after a failure so are the
    /// steps whose `when` uses a status function. Empty for a fresh run. The caller decides
    /// what to do about steps that were running (`idempotent: false`).
    pub resume: Vec<StepReport>,
    /// Where step artifacts are kept and how `from:` finds another workflow's (see
    /// [`archive`]); `None`: a step with `artifacts:` fails.
    pub artifacts: Option<archive::ArtifactStore>,
}

/// What a finished run hands back.
#[derive(Debug, Clone)]
#[expect(
    dead_code,
    reason = "the rendered `outputs` are part of the result; nothing reads them yet"
)]
pub(crate) struct RunResult {
    /// The report (secrets masked).
    pub report: RunReport,
    /// The context at the end of the run (to save when `preserve: true`).
    pub context: Map<String, Value>,
    /// The workflow's `outputs`, rendered at the end (empty when rendering failed).
    pub outputs: Map<String, Value>,
}

impl Engine {
    /// Creates the engine (measures CPU capacity once).
    pub(crate) fn new(config: EngineConfig) -> Self {
        let admission = Admission::new(config.admission.clone());
        let step_env = step_env::base_env(&config.env_passthrough);
        Engine {
            config,
            admission,
            adaptive: backoff::AdaptiveState::new(),
            step_env,
            uid_slots: Default::default(),
        }
    }

    /// A uid of its own for a new run: `Ok(None)` without `run_uids`, an error when every
    /// uid of the range is taken by a running run. Slots are tried round-robin from where
    /// the last run's was, so a uid is reused as late as possible.
    pub(crate) fn claim_uid(&self) -> Result<Option<UidLease<'_>>, String> {
        let (Some(base), Some((first, last))) = (&self.config.run_user, self.config.run_uids)
        else {
            return Ok(None);
        };
        let size = u64::from(last - first) + 1;
        let mut slots = self.uid_slots.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..size {
            let slot = (slots.0 % size) as u32;
            slots.0 = slots.0.wrapping_add(1);
            if slots.1.insert(slot) {
                return Ok(Some(UidLease {
                    engine: self,
                    slot,
                    user: Arc::new(base.with_uid(first + slot)),
                }));
            }
        }
        Err(format!(
            "every uid of `run_as_uids` ({first}-{last}) is taken by a running run"
        ))
    }

    /// The admission scheduler shared by all runs.
    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The environment every step starts from (see [`step_env`]).
    pub(crate) fn step_env(&self) -> &[(String, String)] {
        &self.step_env
    }

    /// The settings.
    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Runs a workflow to the end and returns its result. Never panics on user input: a
    /// step's failure is part of the report.
    pub(crate) async fn run(&self, request: RunRequest) -> RunResult {
        run::run(self, request).await
    }
}

/// A fresh run id: time-ordered, 16 hex digits of milliseconds plus 6 random ones.
pub(crate) fn new_run_id() -> String {
    let ms = chrono::Utc::now().timestamp_millis().max(0);
    let r: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{ms:012x}{r:06x}")
}

/// Tests: a run request of the workflow `yaml` (file `w.yaml`), triggered manually, run in
/// `workdir`, with no events, secrets, resume or artifact store.
#[cfg(test)]
pub(crate) fn test_request(yaml: &str, workdir: &std::path::Path) -> RunRequest {
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
        env: Vec::new(),
        workdir: workdir.to_path_buf(),
        secrets: IndexMap::new(),
        repo: Value::Null,
        trigger: "manual".into(),
        event: Map::new(),
        attempt: 1,
        context: Map::new(),
        events: EventSender::none(),
        cancel: Cancel::new(),
        resume: Vec::new(),
        artifacts: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::report::StepStatus;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Send + Sync>() {}

    /// A run request of the workflow `yaml`, triggered manually, in the temp directory.
    fn request(yaml: &str) -> RunRequest {
        test_request(yaml, &std::env::temp_dir())
    }

    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    }

    /// Guards the per-run uids: a run takes a uid of the range no running run has,
    /// round-robin; a full range is an error; a given-back uid can be taken again; without
    /// `run_as_uids` nothing is taken.
    #[test]
    fn runs_take_distinct_uids_from_the_range() {
        let base = runners::RunUser {
            name: "steps".into(),
            uid: 500,
            gid: 600,
            groups: vec![600, 700],
            home: PathBuf::from("/home/steps"),
        };
        let engine = Engine::new(EngineConfig {
            run_user: Some(Arc::new(base.clone())),
            run_uids: Some((200_000, 200_002)),
            ..EngineConfig::default()
        });
        let a = engine.claim_uid().expect("free").expect("a lease");
        let b = engine.claim_uid().expect("free").expect("a lease");
        let c = engine.claim_uid().expect("free").expect("a lease");
        assert_eq!(
            [a.user.uid, b.user.uid, c.user.uid],
            [200_000, 200_001, 200_002]
        );
        assert_eq!(
            (a.user.gid, &a.user.groups, &a.user.home),
            (600, &base.groups, &base.home)
        );
        let full = engine.claim_uid().err().expect("every uid taken");
        assert!(full.contains("200000-200002"), "{full}");
        drop(b);
        let again = engine.claim_uid().expect("free").expect("a lease");
        assert_eq!(again.user.uid, 200_001);
        let plain = Engine::new(EngineConfig {
            run_user: Some(Arc::new(base)),
            ..EngineConfig::default()
        });
        assert!(plain.claim_uid().expect("no range").is_none());
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

    /// The caller's `env` reaches every step (the daemon's committer identity, the loop
    /// guard of self-pushing workflows), and the workflow's `env` may override it.
    #[test]
    fn the_run_env_reaches_steps_and_the_workflow_env_overrides_it() {
        let engine = Engine::new(EngineConfig::default());
        let req = RunRequest {
            env: vec![
                ("GIT_COMMITTER_NAME".into(), "Agent".into()),
                (
                    "GIT_COMMITTER_EMAIL".into(),
                    "agent-run-7@agent.invalid".into(),
                ),
            ],
            ..request(
                "workflow:\n  name: w\n  env:\n    GIT_COMMITTER_EMAIL: me@example.com\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: test \"$GIT_COMMITTER_NAME/$GIT_COMMITTER_EMAIL\" = Agent/me@example.com\n",
            )
        };
        let result = block_on(engine.run(req));
        assert_eq!(
            result.report.status,
            RunStatus::Succeeded,
            "{:?}",
            result.report
        );
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
            event: Map::new(),
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

    /// Guards resumed runs against false success: only succeeded steps are taken over; a
    /// step skipped after the earlier failure runs, one skipped by its own `when` stays
    /// skipped, and an `always()` step runs again for the new outcome.
    #[test]
    fn resume_runs_what_the_failure_skipped() {
        let engine = Engine::new(EngineConfig::default());
        let report = |id: &str, status: StepStatus, attempts: u32| {
            let mut r = StepReport::pending(id);
            r.status = status;
            r.attempts = attempts;
            r.started_at = Some("2000-01-01T00:00:00.000Z".into());
            r
        };
        let prior = vec![
            report("a", StepStatus::Succeeded, 1),
            report("b", StepStatus::Failed, 1),
            report("c", StepStatus::Skipped, 0),
            report("d", StepStatus::Skipped, 0),
            report("e", StepStatus::Skipped, 0),
            report("f", StepStatus::Succeeded, 1),
        ];
        let req = RunRequest {
            trigger: "retry".into(),
            event: Map::new(),
            attempt: 2,
            resume: prior.clone(),
            ..request(
                "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: exit 1\n        - id: b\n          run: 'true'\n        - id: c\n          run: 'true'\n        - id: d\n          when: ${{ 1 == 2 }}\n          run: exit 1\n    - name: t\n      steps:\n        - id: e\n          run: 'true'\n        - id: f\n          when: ${{ always() }}\n          run: 'true'\n",
            )
        };
        let result = block_on(engine.run(req));
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(r.stages[0].steps[0], prior[0]);
        for step in [
            &r.stages[0].steps[1],
            &r.stages[0].steps[2],
            &r.stages[1].steps[0],
        ] {
            assert_eq!(step.status, StepStatus::Succeeded, "{step:?}");
            assert_eq!(step.attempts, 1, "{step:?}");
        }
        assert_eq!(r.stages[0].steps[3].status, StepStatus::Skipped);
        assert_ne!(
            r.stages[1].steps[1], prior[5],
            "the always() step ran again"
        );
        assert_eq!(r.stages[1].steps[1].status, StepStatus::Succeeded);
    }

    /// Guards crash resume: with no failure before the interruption, a succeeded step whose
    /// `when` uses a status function is taken over like any other, and a step skipped by
    /// its own `when` stays skipped.
    #[test]
    fn resume_without_failure_takes_over_status_gated_steps() {
        let engine = Engine::new(EngineConfig::default());
        let mut prior = StepReport::pending("a");
        prior.status = StepStatus::Succeeded;
        prior.attempts = 1;
        let mut skipped = StepReport::pending("b");
        skipped.status = StepStatus::Skipped;
        let req = RunRequest {
            resume: vec![prior.clone(), skipped],
            ..request(
                "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          when: ${{ always() }}\n          run: exit 1\n        - id: b\n          when: ${{ 1 == 2 }}\n          run: exit 1\n        - id: c\n          run: 'true'\n",
            )
        };
        let result = block_on(engine.run(req));
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(r.stages[0].steps[0], prior);
        assert_eq!(r.stages[0].steps[1].status, StepStatus::Skipped);
        assert_eq!(r.stages[0].steps[2].status, StepStatus::Succeeded);
    }

    /// Guards the documented step fields: `exit_code`, `error_class` and `outputs` of a
    /// step that failed with `on_failure: continue` are there for a later `when`.
    #[test]
    fn step_fields_reach_later_expressions() {
        let engine = Engine::new(EngineConfig::default());
        let req = request(
            "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          name: Fetch\n          on_failure: continue\n          run: |\n            echo k=v >> \"$AGENT_OUTPUT\"\n            echo error_class=NetworkError >> \"$AGENT_OUTPUT\"\n            exit 3\n        - id: b\n          when: ${{ steps.a.error_class == 'NetworkError' && steps.a.exit_code == 3 && steps.a.outputs.k == 'v' }}\n          run: 'true'\n        - id: c\n          when: ${{ steps.b.exit_code == 0 && steps.b.error_class == null }}\n          run: 'true'\n",
        );
        let result = block_on(engine.run(req));
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        let a = &r.stages[0].steps[0];
        assert_eq!(a.status, StepStatus::Failed);
        assert!(a.continued, "{a:?}");
        assert_eq!(a.name.as_deref(), Some("Fetch"));
        assert_eq!(r.stages[0].steps[1].status, StepStatus::Succeeded, "{r:?}");
        assert!(!r.stages[0].steps[1].continued);
        assert_eq!(r.stages[0].steps[2].status, StepStatus::Succeeded, "{r:?}");
    }

    /// Guards step times against the wait for admission: with one CPU slot, the second of
    /// two parallel steps reports its wait as `queued_ms` and starts when its process does.
    #[test]
    fn admission_wait_is_reported_apart() {
        let engine = Engine::new(EngineConfig {
            admission: AdmissionConfig {
                cpu: Some(1),
                ..AdmissionConfig::default()
            },
            ..EngineConfig::default()
        });
        let req = request(
            "workflow:\n  name: w\n  stages:\n    - name: s\n      parallel: true\n      steps:\n        - id: a\n          run: sleep 0.6\n        - id: b\n          run: sleep 0.6\n",
        );
        let result = block_on(engine.run(req));
        let r = &result.report;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        let mut steps = r.stages[0].steps.clone();
        steps.sort_by(|x, y| x.started_at.cmp(&y.started_at));
        let (first, second) = (&steps[0], &steps[1]);
        let at = |s: &StepReport| {
            chrono::DateTime::parse_from_rfc3339(s.started_at.as_deref().expect("started"))
                .expect("time")
        };
        assert!(
            (at(second) - at(first)).num_milliseconds() >= 500,
            "the second step starts when admitted: {steps:?}"
        );
        assert!(second.queued_ms.expect("queued") >= 500, "{steps:?}");
        assert!(first.queued_ms.is_some() && second.duration_ms.expect("duration") >= 600);
    }
}
