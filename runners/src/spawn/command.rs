//! The command of one step process: what to run, with which environment, stdin, limits and
//! run marker, and what its child must do before exec (run user, cgroup).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::isolation::{self, ChildSetup, RunUser};
use crate::script::ScriptPlan;

/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default time to keep reading output after the step's main process exited, for pipes
/// still held open by processes it left in the background.
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_millis(100);

/// One process to run for a step. Its `Debug` output shows environment variable names
/// but not their values, and the size of stdin but not its bytes: both may hold secrets.
#[derive(Clone)]
pub struct StepCommand {
    /// Program (looked up on `PATH` when it contains no `/`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment added to the inherited one (later entries win).
    pub env: Vec<(String, String)>,
    /// Whether the agent's own environment is inherited (the default). The engine turns it
    /// off for steps: they get `env` and nothing else, so the variables behind secrets and
    /// credentials never reach a workflow's processes.
    pub inherit_env: bool,
    /// Working directory (inherited when `None`).
    pub cwd: Option<PathBuf>,
    /// Bytes written to stdin, which is then closed (stdin is `/dev/null` when empty).
    pub stdin: Vec<u8>,
    /// Time limit from spawn; `None` for none.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL on timeout or cancel.
    pub grace: Duration,
    /// How long to keep reading output after the main process exited while some background
    /// process still holds the pipes; after that the output is drained in the background and
    /// dropped, so the background process is not killed by a closed pipe.
    pub linger: Duration,
    /// Run marker put in the environment as `AGENT_RUN_MARKER` (see [`crate::sweep_run`]).
    pub marker: Option<String>,
    /// Send stderr into the same pipe as stdout: lines keep the exact order the process
    /// wrote them in and all arrive as [`Stream::Stdout`]. One pipe less per step (a pipe
    /// costs several microseconds to create and tear down), like CI systems' merged logs.
    pub merge_output: bool,
    /// Behave like a shell when the program cannot be started: a missing program gives exit
    /// code 127 and "command not found" on stderr, a non-executable one 126. Set for direct
    /// exec of `run:` scripts so the result matches the shell's.
    pub shell_errors: bool,
    /// Run the process as this user (the agent must be root): its groups, gid and uid, and
    /// `HOME`, `USER` and `LOGNAME` of that user. `None` runs it as the agent's user.
    pub user: Option<Arc<RunUser>>,
}

impl std::fmt::Debug for StepCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StepCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &env_names)
            .field("inherit_env", &self.inherit_env)
            .field("cwd", &self.cwd)
            .field("stdin_bytes", &self.stdin.len())
            .field("timeout", &self.timeout)
            .field("grace", &self.grace)
            .field("linger", &self.linger)
            .field("marker", &self.marker)
            .field("merge_output", &self.merge_output)
            .field("shell_errors", &self.shell_errors)
            .field("user", &self.user.as_ref().map(|u| u.name.as_str()))
            .finish()
    }
}

impl StepCommand {
    /// A command running `program` with no arguments and default settings.
    pub fn new(program: impl Into<String>) -> StepCommand {
        StepCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_env: true,
            cwd: None,
            stdin: Vec::new(),
            timeout: None,
            grace: DEFAULT_GRACE,
            linger: DEFAULT_LINGER,
            marker: None,
            merge_output: false,
            shell_errors: false,
            user: None,
        }
    }

    /// The command for a planned `run:` script (see [`crate::plan_script`]).
    pub fn from_plan(plan: ScriptPlan) -> StepCommand {
        let mut cmd = StepCommand::new(plan.program);
        cmd.args = plan.args;
        cmd.shell_errors = plan.direct;
        cmd
    }

    /// The command for a `run:` script whose `${{ }}` expressions the engine replaced by
    /// references to `$AGENT_EXPR_0`, `$AGENT_EXPR_1`, ... ([`crate::expr_var_name`]):
    /// `expr_values[n]` is passed as the environment variable `AGENT_EXPR_<n>`, so a value is
    /// never parsed as shell text. `shell` is the step's `shell:` (see [`crate::plan_script`]).
    pub fn for_script(script: &str, shell: Option<&str>, expr_values: &[String]) -> StepCommand {
        let mut cmd = StepCommand::from_plan(crate::script::plan_script(script, shell));
        cmd.env.extend(
            expr_values
                .iter()
                .enumerate()
                .map(|(n, v)| (crate::script::expr_var_name(n), v.clone())),
        );
        cmd
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the stdin bytes.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the grace period between SIGTERM and SIGKILL.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets the run marker.
    pub fn marker(mut self, marker: impl Into<String>) -> Self {
        self.marker = Some(marker.into());
        self
    }
}

/// What the step's child must do before exec: switch to `cmd.user` (whose `HOME`, `USER`
/// and `LOGNAME` are added to its environment), join its run's cgroup, or, with no cgroup
/// but a run user, take the run's process limit as `RLIMIT_NPROC`. Fails when the run's
/// cgroup exists but cannot be opened: the step never runs outside its limit.
pub(super) fn child_setup(cmd: &mut StepCommand) -> std::io::Result<ChildSetup> {
    let mut setup = ChildSetup {
        user: cmd.user.clone(),
        ..ChildSetup::default()
    };
    if let Some(user) = &setup.user {
        cmd.env
            .push(("HOME".into(), user.home.to_string_lossy().into_owned()));
        cmd.env.push(("USER".into(), user.name.clone()));
        cmd.env.push(("LOGNAME".into(), user.name.clone()));
    }
    if let Some((cgroup, max)) = cmd.marker.as_deref().and_then(isolation::scope_of) {
        match cgroup {
            Some(dir) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?;
                setup.cgroup_procs = Some(file.into());
            }
            None if setup.user.is_some() => setup.max_user_processes = max.map(u64::from),
            None => {}
        }
    }
    Ok(setup)
}
