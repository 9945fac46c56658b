//! One step = one process: skill lookup and manifests, spawning in a process group, the step
//! protocol files, timeouts and kill of the whole tree, and resource admission.
//!
//! This crate knows nothing of the workflow language: the engine (`agent/src/engine`)
//! resolves expressions and parameters and calls in here. What it offers:
//!
//! - [`run`]: spawns a [`StepCommand`] as the leader of its own process group, writes its
//!   stdin (the parameters JSON) and closes it, hands every stdout/stderr line to a callback
//!   as it arrives, and returns a [`ProcessOutcome`] (exit code or signal, timed out,
//!   cancelled, duration). On timeout or [`Cancel::request`]: SIGTERM to the group (and to
//!   processes of the step that left it), a grace period (default 10 s) while output is
//!   still drained, then SIGKILL; a second request kills at once.
//! - No process outlives a timed-out or cancelled step: every step's environment carries
//!   `AGENT_STEP_MARKER` (and `AGENT_RUN_MARKER` when [`StepCommand::marker`] is set);
//!   `/proc` is swept for it, which catches grandchildren that called `setsid`. The engine
//!   calls [`sweep_run`] when a run ends to end what steps left running on purpose; it looks
//!   only at this process's descendants and the run's process groups. The daemon and
//!   `agent exec` call [`become_subreaper`] at start-up, so that orphans that called `setsid`
//!   are among those descendants.
//! - [`plan_script`]: a `run:` script that is one simple command is executed directly (like
//!   GNU make), anything else through `bash --noprofile --norc -e -c` (or `sh -e -c`); a
//!   `shell:` overrides. Expression values go through the environment
//!   ([`expr_var_name`], [`StepCommand::for_script`]), never into the script text.
//! - The step protocol: [`RunDir`] (one private directory per run; no file is created for a
//!   step), [`parse_output_file`] (`key=value`, heredocs, or one JSON object),
//!   [`parse_context_file`], [`param_env`] (`AGENT_PARAM_*`), [`classify`] (the error class
//!   of a failed step).
//! - [`find_skill`]: skill lookup in the workspace, configured directories, then built-ins,
//!   with `skill.yaml` manifests ([`Manifest`]).
//! - [`Admission`]: the process-wide CPU/memory scheduler; `acquire` waits first come,
//!   first served, `try_acquire` is the synchronous fast path.
//!
//! Cost: the per-step path adds a few hundredths of a millisecond to a bare fork/exec
//! (`posix_spawn` with a prebuilt environment, a pidfd for the exit, stdin written into the
//! pipe before the spawn, no timer, thread, file or `/proc` scan unless a step times out or
//! is cancelled). The agent's own environment is read once, at the first spawn.
//! [`StepCommand::merge_output`] saves one more pipe. Measure with
//! `cargo run --release -p runners --example spawn_bench`.
//!
//! A typical step, as the engine would run it:
//!
//! ```no_run
//! # async fn step() -> Result<(), runners::RunnerError> {
//! use runners::*;
//! let admission = Admission::default();          // one per process, cloned into runs
//! let run_dir = RunDir::create("run-42")?;       // one per run
//! let params = serde_json::json!({"name": "web"});
//! let paths = run_dir.step_paths("build.1");
//! let mut cmd = StepCommand::from_plan(plan_script("make build", None))
//!     .cwd("/path/to/workspace")
//!     .stdin(params.to_string())
//!     .timeout(std::time::Duration::from_secs(60))
//!     .marker("run-42");
//! cmd.env.extend(param_env(&params));
//! cmd.env.extend(paths.env());
//! let _permit = admission.acquire(Request::default()).await?;
//! let cancel = Cancel::new();
//! let outcome = run(cmd, |stream, line| println!("{stream:?}: {line}"), cancel.clone()).await?;
//! let outputs = parse_output_file(&paths.output)?;
//! let class = classify(&outcome, outputs.as_ref(), &Default::default());
//! # let _ = class; Ok(()) }
//! ```

#![warn(missing_docs)]

mod admission;
mod errors;
mod isolation;
mod posix_spawn;
mod process_group;
mod protocol;
mod script;
mod shell_file;
mod skill;
mod spawn;

pub use admission::{Admission, AdmissionConfig, Permit, Request};
pub use errors::{ErrorClass, RunnerError};
pub use isolation::{
    CgroupSupport, RunScope, RunUser, cgroup_support, cgroup_unavailable_reason,
    chown_tree_to_self, kill_uid, remove_stale_run_cgroups, running_as_root,
};
pub use process_group::{
    RUN_MARKER_VAR, become_subreaper, is_subreaper, reap_orphans, sweep_run, sweep_run_async,
    sweep_var, sweep_var_prefix,
};
pub use protocol::{
    ContextUpdate, Outputs, RunDir, StepPaths, classify, param_env, parse_context_file,
    parse_output_file, safe_file_name,
};
pub use script::{ScriptPlan, expr_var_name, find_on_path, plan_script};
pub use shell_file::{plan_shell_file, script_file_suffix};
pub use skill::{
    BUILTINS, CommandSpec, IoSpec, Manifest, Resources, Skill, SkillSource, find_skill,
};
pub use spawn::{
    Cancel, DEFAULT_GRACE, MAX_LINE, OutputSink, ProcessOutcome, StepCommand, Stream, run,
    run_with_sink,
};
