//! Running one step process: spawn it as the leader of its own process group, feed stdin,
//! hand stdout/stderr lines to a callback as they arrive, and end it on timeout or cancel
//! (SIGTERM to the group, a grace period while still draining output, then SIGKILL to the
//! group and a sweep of its marker).
//!
//! The happy path is kept cheap (it runs once per step, and a trivial step costs about
//! 0.5 ms of fork/exec): `posix_spawn` with a prebuilt environment (`posix_spawn.rs`), the
//! pipes registered with the tokio reactor, the exit waited for through a pidfd (no SIGCHLD
//! handler, no other child's status touched), stdin written into the pipe before the spawn
//! when it fits, no timer, thread, file or `/proc` scan per step.
//!
//! Kill-the-tree policy lives in `process_group.rs`; what the step's files mean lives in
//! `protocol.rs`.

use std::io::ErrorKind;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe::{Receiver, Sender};
use tokio_util::sync::CancellationToken;

use crate::errors::RunnerError;
use crate::isolation::{self, ChildSetup, RunUser};
use crate::posix_spawn::{self, SpawnSpec, StdinSource};
use crate::process_group::{self, RUN_MARKER_VAR, STEP_MARKER_VAR};
use crate::script::ScriptPlan;

/// Default grace period between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default time to keep reading output after the step's main process exited, for pipes
/// still held open by processes it left in the background.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);
/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How long a step's output pipes go unwatched before its output is streamed (see `run`).
const STREAM_AFTER: Duration = Duration::from_millis(5);
/// Longest line handed to the callback; longer lines are split.
pub const MAX_LINE: usize = 64 * 1024;
/// Stdin up to this size is written into the pipe before the spawn. POSIX guarantees that a
/// write of at most `PIPE_BUF` bytes into an empty pipe completes at once.
const PREFILL_MAX: usize = libc::PIPE_BUF;

/// A pipe whose write end already holds `bytes` and is closed: the read end is the child's
/// stdin. Only for `bytes.len() <= PREFILL_MAX`: such a write into a new, empty pipe (whose
/// capacity is at least one page, `PIPE_BUF`) completes at once even in blocking mode.
fn prefilled_pipe(bytes: &[u8]) -> std::io::Result<std::io::PipeReader> {
    use std::io::Write;
    let (reader, mut writer) = std::io::pipe()?;
    writer.write_all(bytes)?;
    Ok(reader)
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// Where a step's output goes. The reader hands over every line as it is read, then asks
/// [`OutputSink::end_of_read`] whether the sink can take more; when it cannot, the step's
/// pipes are not read until [`OutputSink::ready`] resolves. A step that writes faster than
/// its output is consumed then blocks in its own `write` (a full pipe), like a program
/// piped into a slow reader, and memory stays flat whatever it prints. Timeouts, cancels
/// and the step's exit are still handled while the reader waits.
pub trait OutputSink: Send {
    /// One line of output, without its line ending (invalid UTF-8 replaced; lines longer
    /// than [`MAX_LINE`] split).
    fn line(&mut self, stream: Stream, line: &str);

    /// Several whole lines at once, as most reads bring them: `lines` holds one or more
    /// lines, each ending with `\n` (valid UTF-8, no `\r`, none longer than [`MAX_LINE`]).
    /// By default each goes to [`OutputSink::line`].
    fn lines(&mut self, stream: Stream, lines: &str) {
        for line in lines.split_terminator('\n') {
            self.line(stream, line);
        }
    }

    /// The lines of one read have all been handed over. False when the sink holds output
    /// it cannot pass on yet: the reader then waits for [`OutputSink::ready`].
    fn end_of_read(&mut self) -> bool {
        true
    }

    /// Resolves once the sink has passed on what it held. Must be cancel-safe: dropped
    /// before it resolves, it loses nothing.
    fn ready(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// A closure as an [`OutputSink`] that always takes more.
struct FnSink<F>(F);

impl<F: FnMut(Stream, &str) + Send> OutputSink for FnSink<F> {
    fn line(&mut self, stream: Stream, line: &str) {
        (self.0)(stream, line);
    }
}

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

/// How a step process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// Pid of the step's main process (also its process group id); 0 if it never started.
    pub pid: u32,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when it did not exit normally.
    pub signal: Option<i32>,
    /// It was ended because its timeout passed.
    pub timed_out: bool,
    /// It was ended because of a cancel request.
    pub cancelled: bool,
    /// SIGKILL had to be sent (grace period over, or an immediate cancel).
    pub killed: bool,
    /// Wall time from spawn to the end of output.
    pub duration: Duration,
}

impl ProcessOutcome {
    /// Exit code 0 and neither timed out nor cancelled.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }

    fn set_status(&mut self, status: ExitStatus) {
        self.exit_code = status.code();
        self.signal = status.signal();
    }
}

/// Cancellation of a step or run: the first [`Cancel::request`] ends processes gracefully
/// (SIGTERM, grace period, SIGKILL), a second one kills at once. Cheap to clone; clones
/// share state; [`Cancel::child`] gives one that is also cancelled by its parent (a run's
/// cancel reaches all its steps).
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    graceful: CancellationToken,
    immediate: CancellationToken,
    requests: Arc<AtomicU8>,
}

impl Cancel {
    /// A new, not yet cancelled, handle.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks for cancellation: the first call is graceful, the second kills at once (a second
    /// Ctrl-C).
    pub fn request(&self) {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            self.graceful.cancel();
        } else {
            self.kill_now();
        }
    }

    /// Kills at once, without a grace period.
    pub fn kill_now(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.graceful.cancel();
        self.immediate.cancel();
    }

    /// Whether cancellation was requested (gracefully or not).
    pub fn is_cancelled(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// Whether an immediate kill was requested.
    pub fn is_killed(&self) -> bool {
        self.immediate.is_cancelled()
    }

    /// A handle cancelled when this one is (either level), which can also be cancelled on
    /// its own.
    pub fn child(&self) -> Cancel {
        Cancel {
            graceful: self.graceful.child_token(),
            immediate: self.immediate.child_token(),
            requests: Arc::new(AtomicU8::new(0)),
        }
    }

    /// The token cancelled on the first request (for `select!` in the engine).
    pub fn graceful_token(&self) -> &CancellationToken {
        &self.graceful
    }

    /// The token cancelled by an immediate kill.
    pub fn immediate_token(&self) -> &CancellationToken {
        &self.immediate
    }
}

/// Splits a byte stream into lines for the callback.
struct LineSplitter {
    stream: Stream,
    buf: Vec<u8>,
}

impl LineSplitter {
    fn new(stream: Stream) -> LineSplitter {
        LineSplitter {
            stream,
            buf: Vec::new(),
        }
    }

    fn feed<S: OutputSink + ?Sized>(&mut self, data: &[u8], on_line: &mut S) {
        let mut rest = data;
        // The line held from the previous read ends first.
        if !self.buf.is_empty() {
            let Some(pos) = memchr::memchr(b'\n', rest) else {
                self.hold(rest, on_line);
                return;
            };
            self.buf.extend_from_slice(&rest[..pos]);
            emit(self.stream, &self.buf, on_line);
            self.buf.clear();
            rest = &rest[pos + 1..];
        }
        if let Some(last) = memchr::memrchr(b'\n', rest) {
            let block = &rest[..=last];
            // The usual case in one piece: valid UTF-8 without `\r`, and no line can be
            // longer than the limit because the whole block is not.
            let whole = (block.len() <= MAX_LINE && memchr::memchr(b'\r', block).is_none())
                .then(|| std::str::from_utf8(block).ok())
                .flatten();
            match whole {
                Some(text) => on_line.lines(self.stream, text),
                None => {
                    for line in block[..last].split(|b| *b == b'\n') {
                        emit(self.stream, line, on_line);
                    }
                }
            }
            rest = &rest[last + 1..];
        }
        self.hold(rest, on_line);
    }

    /// Keeps the start of a line for the next read; a held part that reaches [`MAX_LINE`]
    /// goes out as a line of its own.
    fn hold<S: OutputSink + ?Sized>(&mut self, rest: &[u8], on_line: &mut S) {
        self.buf.extend_from_slice(rest);
        while self.buf.len() >= MAX_LINE {
            let tail = self.buf.split_off(MAX_LINE);
            emit(self.stream, &self.buf, on_line);
            self.buf = tail;
        }
    }

    fn finish<S: OutputSink + ?Sized>(&mut self, on_line: &mut S) {
        if !self.buf.is_empty() {
            emit(self.stream, &self.buf, on_line);
            self.buf.clear();
        }
    }
}

fn emit<S: OutputSink + ?Sized>(stream: Stream, line: &[u8], on_line: &mut S) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match std::str::from_utf8(line) {
        Ok(s) => on_line.line(stream, s),
        Err(_) => on_line.line(stream, &String::from_utf8_lossy(line)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Terminating,
    Killed,
}

/// Waits for one child through a pidfd registered with the reactor: no SIGCHLD handler, and
/// no other child's status is ever collected. Falls back to polling every 10 ms where
/// pidfds do not exist (Linux before 5.3).
struct ChildWaiter {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl ChildWaiter {
    fn new(pid: u32) -> std::io::Result<ChildWaiter> {
        // SAFETY: pidfd_open(pid, flags) returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_pidfd_open,
                pid as libc::pid_t,
                libc::PIDFD_NONBLOCK,
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOSYS) {
                return Ok(ChildWaiter { pid, pidfd: None });
            }
            return Err(err);
        }
        // SAFETY: a non-negative return value is a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until the
        // AsyncFd is dropped.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(ChildWaiter {
            pid,
            pidfd: Some(pidfd),
        })
    }

    /// Whether exits are signalled through a pidfd (else they are polled).
    fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Reaps the child if it has exited.
    fn try_reap(&self) -> std::io::Result<Option<ExitStatus>> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid out pointer.
            let rc = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if rc > 0 {
                return Ok(Some(ExitStatus::from_raw(status)));
            }
            if rc == 0 {
                return Ok(None);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Waits until the child exits and reaps it. Cancel-safe.
    async fn wait(&self) -> std::io::Result<ExitStatus> {
        loop {
            match &self.pidfd {
                Some(pidfd) => {
                    // A pidfd becomes readable when the process exits.
                    let mut ready = pidfd.readable().await?;
                    if let Some(status) = self.try_reap()? {
                        return Ok(status);
                    }
                    ready.clear_ready();
                }
                None => {
                    if let Some(status) = self.try_reap()? {
                        return Ok(status);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Everything `posix_spawn` needs, owned, so that the spawn can move to a blocking thread.
struct SpawnJob {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    inherit_env: bool,
    cwd: Option<PathBuf>,
    /// Closed in the parent when the job is dropped, after the spawn.
    stdin: StdinSource,
    stdout: OwnedFd,
    /// `None` when stderr goes to the stdout pipe.
    stderr: Option<OwnedFd>,
    /// Run user, cgroup and limits (see `isolation.rs`).
    setup: ChildSetup,
}

impl SpawnJob {
    /// Spawns and registers the leader behind the spawn gate, so the orphan reaper never
    /// sees an unregistered leader.
    ///
    /// `ETXTBSY` ("text file busy") is retried a few times over about 250 ms: an executable
    /// just written, by this process (a checkout) or another, stays busy while any process
    /// forked meanwhile still holds the writer's descriptor, until that process execs.
    fn spawn(&mut self) -> std::io::Result<u32> {
        let mut pause = Duration::from_millis(1);
        loop {
            let spawned = self.spawn_once();
            match spawned {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && pause.as_millis() <= 128 => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                other => return other,
            }
        }
    }

    fn spawn_once(&mut self) -> std::io::Result<u32> {
        let _gate = process_group::spawn_gate();
        let spawned = posix_spawn::spawn(&SpawnSpec {
            program: &self.program,
            args: &self.args,
            env: &self.env,
            inherit_env: self.inherit_env,
            cwd: self.cwd.as_deref(),
            stdin: &self.stdin,
            stdout: &self.stdout,
            stderr: self.stderr.as_ref().unwrap_or(&self.stdout),
            setup: &self.setup,
        });
        if let Ok(pid) = spawned {
            process_group::register_leader(pid);
        }
        spawned
    }
}

/// Counts the `run` calls in progress in this process.
struct InFlight;

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl InFlight {
    fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }

    /// Other `run` calls in progress besides this one.
    fn others(&self) -> usize {
        IN_FLIGHT.load(Ordering::Relaxed).saturating_sub(1)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Kills the step's tree if `run` is dropped before the process ended (the engine's task
/// was aborted), and unregisters the leader.
struct LeaderGuard {
    pid: u32,
    step_marker: String,
    done: bool,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if !self.done {
            process_group::signal_group(self.pid, libc::SIGKILL);
            let marker = std::mem::take(&mut self.step_marker);
            let pid = self.pid;
            // Blocking /proc scan and wait: do them off the async thread. The killed leader
            // is reaped here, since nobody else waits for it any more.
            std::thread::spawn(move || {
                process_group::sweep_step(pid, &marker, libc::SIGKILL);
                let mut status = 0;
                // SAFETY: waitpid on our own (killed) child with a valid out pointer.
                unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            });
        }
        process_group::unregister_leader(self.pid);
    }
}

/// Runs one step process to the end. See the module docs and [`StepCommand`].
///
/// `on_line` gets every line of stdout and stderr (without the line ending; invalid UTF-8
/// replaced; lines longer than [`MAX_LINE`] split) as soon as it is read, from this task.
/// `cancel` ends the process early (see [`Cancel`]; pass a clone, they share state).
/// Errors only when the process could not be started or waited for; a non-zero exit, a
/// timeout or a cancel is an `Ok` outcome.
pub async fn run<F>(
    cmd: StepCommand,
    on_line: F,
    cancel: Cancel,
) -> Result<ProcessOutcome, RunnerError>
where
    F: FnMut(Stream, &str) + Send,
{
    run_with_sink(cmd, &mut FnSink(on_line), cancel).await
}

/// [`run`] with an [`OutputSink`], which may hold the reading of the step's pipes back
/// (backpressure) while it passes output on.
pub async fn run_with_sink<S: OutputSink>(
    mut cmd: StepCommand,
    on_line: &mut S,
    cancel: Cancel,
) -> Result<ProcessOutcome, RunnerError> {
    let start = Instant::now();
    let in_flight = InFlight::enter();
    let mut outcome = ProcessOutcome::default();
    if cancel.is_cancelled() {
        outcome.cancelled = true;
        return Ok(outcome);
    }
    let step_marker = process_group::next_step_marker();
    cmd.env
        .push((STEP_MARKER_VAR.to_string(), step_marker.clone()));
    if let Some(marker) = &cmd.marker {
        cmd.env.push((RUN_MARKER_VAR.to_string(), marker.clone()));
    }
    let setup = child_setup(&mut cmd).map_err(|source| RunnerError::Spawn {
        program: cmd.program.clone(),
        source,
    })?;
    let spawn_err = |source: std::io::Error| RunnerError::Spawn {
        program: cmd.program.clone(),
        source,
    };

    // Output pipes: our ends non-blocking for the reactor, the child's blocking.
    let (out_read, out_write) = posix_spawn::pipe(true, false).map_err(spawn_err)?;
    let mut err_pipe = if cmd.merge_output {
        None
    } else {
        let (r, w) = posix_spawn::pipe(true, false).map_err(spawn_err)?;
        Some((r, Some(w)))
    };
    // Small stdin (the usual parameters JSON) is written into the pipe before the spawn: it
    // fits the pipe buffer, so no async writer and no event registration is needed.
    let mut stdin_bytes = std::mem::take(&mut cmd.stdin);
    let mut stdin_writer = None;
    let stdin = if stdin_bytes.is_empty() {
        StdinSource::Null
    } else if stdin_bytes.len() <= PREFILL_MAX {
        let reader = prefilled_pipe(&stdin_bytes).map_err(spawn_err)?;
        stdin_bytes = Vec::new();
        StdinSource::Pipe(reader.into())
    } else {
        let (reader, writer) = posix_spawn::pipe(false, true).map_err(spawn_err)?;
        stdin_writer = Some(writer);
        StdinSource::Pipe(reader)
    };

    let mut job = SpawnJob {
        program: std::mem::take(&mut cmd.program),
        args: std::mem::take(&mut cmd.args),
        env: std::mem::take(&mut cmd.env),
        inherit_env: cmd.inherit_env,
        cwd: cmd.cwd.take(),
        stdin,
        stdout: out_write,
        stderr: err_pipe.as_mut().and_then(|(_, w)| w.take()),
        setup,
    };
    // posix_spawn blocks the calling thread until the child has exec'd (vfork), tens of
    // microseconds. On a multi-thread runtime with other steps in flight, hand this worker's
    // queue to another thread first (`block_in_place`, which never panics there: every way
    // into such a runtime allows it), so their output and exits are not held up. On a
    // current-thread runtime (`agent exec`) spawn right here, as make does: handing the spawn
    // to a blocking thread cost two thread switches a step and made `max_parallel: 2` about
    // 5% slower (bench/exec.sh).
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    let spawned = if multi_thread && in_flight.others() > 0 {
        tokio::task::block_in_place(|| job.spawn())
    } else {
        job.spawn()
    };
    cmd.program = std::mem::take(&mut job.program);
    cmd.args = std::mem::take(&mut job.args);
    cmd.env = std::mem::take(&mut job.env);
    cmd.cwd = job.cwd.take();
    // Close our copies of the child's ends, or the pipes never report end of file.
    drop(job);
    let err_read = err_pipe.map(|(r, _)| r);
    let pid = match spawned {
        Ok(pid) => pid,
        Err(source) => return spawn_failure(&cmd, source, on_line, start),
    };
    outcome.pid = pid;
    let mut guard = LeaderGuard {
        pid,
        step_marker: step_marker.clone(),
        done: false,
    };
    let wait_err = |source: std::io::Error| RunnerError::Wait {
        program: cmd.program.clone(),
        pid,
        source,
    };
    let child = ChildWaiter::new(pid).map_err(wait_err)?;

    // The output pipes are not watched during the step's first `STREAM_AFTER`: a write into
    // a watched pipe wakes this thread (and often preempts the writer on a small machine),
    // and so does its end of file, where a short step only needs one wake-up, at its exit,
    // to read everything in one go. Longer steps are streamed from then on. Without a pidfd
    // the exit is polled, so the pipes are watched at once.
    let mut pending_out: Option<OwnedFd> = Some(out_read);
    let mut pending_err: Option<OwnedFd> = err_read;
    let mut stdout: Option<Receiver> = None;
    let mut stderr: Option<Receiver> = None;
    let stream_at = tokio::time::Instant::now()
        + if child.has_pidfd() {
            STREAM_AFTER
        } else {
            Duration::ZERO
        };
    let stream_sleep = tokio::time::sleep_until(stream_at);
    tokio::pin!(stream_sleep);
    let stdin_sender = match stdin_writer {
        Some(fd) => Some(Sender::from_owned_fd_unchecked(fd).map_err(wait_err)?),
        None => None,
    };
    let mut stdin_done = stdin_sender.is_none();
    let stdin_fut = async move {
        if let Some(mut stdin) = stdin_sender {
            // A step that does not read its stdin may exit first: EPIPE is fine.
            let _ = stdin.write_all(&stdin_bytes).await;
        }
    };
    tokio::pin!(stdin_fut);

    let mut out_lines = LineSplitter::new(Stream::Stdout);
    let mut err_lines = LineSplitter::new(Stream::Stderr);
    // Uninitialised capacity (read_buf appends), so no per-step memset.
    let mut out_buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut err_buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);

    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let timeout_at = cmd
        .timeout
        .map(|t| tokio::time::Instant::from_std(start + t))
        .unwrap_or(far);
    let timeout_sleep = tokio::time::sleep_until(timeout_at);
    tokio::pin!(timeout_sleep);
    let phase_sleep = tokio::time::sleep_until(far);
    tokio::pin!(phase_sleep);
    let graceful = cancel.graceful.cancelled();
    tokio::pin!(graceful);
    let immediate = cancel.immediate.cancelled();
    tokio::pin!(immediate);

    let has_timeout = cmd.timeout.is_some();
    // Whether `phase_sleep` holds a real deadline (grace period, group poll or linger); an
    // unarmed timer is never polled, so the happy path registers no timer at all.
    let mut phase_armed = false;
    let mut phase = Phase::Running;
    let mut status: Option<ExitStatus> = None;
    let mut grace_deadline = far;
    let mut group_poll = Duration::from_millis(10);
    // After the leader exits we keep reading pipes held by others until this instant.
    let mut linger_until: Option<tokio::time::Instant> = None;
    // The sink cannot take more output yet: the pipes are not read until it can.
    let mut paused = false;

    loop {
        if status.is_some() {
            // While terminating, the group may still be shutting down: wait for it (or the
            // end of the grace period) even when the pipes are closed.
            if stdout.is_none() && stderr.is_none() && phase != Phase::Terminating {
                break;
            }
            if phase != Phase::Terminating && linger_until.is_none() {
                let until = tokio::time::Instant::now() + cmd.linger;
                linger_until = Some(until);
                phase_sleep.as_mut().reset(until);
                phase_armed = true;
            }
        }
        tokio::select! {
            biased;
            _ = &mut immediate, if (phase == Phase::Running && status.is_none())
                || phase == Phase::Terminating => {
                outcome.cancelled = true;
                outcome.killed = true;
                finish_kill(pid, &step_marker).await;
                phase = Phase::Killed;
                phase_armed = false;
            }
            _ = &mut graceful, if phase == Phase::Running && status.is_none() => {
                outcome.cancelled = true;
                start_terminate(pid, &step_marker).await;
                phase = Phase::Terminating;
                grace_deadline = tokio::time::Instant::now() + cmd.grace;
                phase_sleep.as_mut().reset(grace_deadline);
                phase_armed = true;
            }
            _ = &mut timeout_sleep,
                if has_timeout && phase == Phase::Running && status.is_none() => {
                outcome.timed_out = true;
                start_terminate(pid, &step_marker).await;
                phase = Phase::Terminating;
                grace_deadline = tokio::time::Instant::now() + cmd.grace;
                phase_sleep.as_mut().reset(grace_deadline);
                phase_armed = true;
            }
            _ = &mut phase_sleep, if phase_armed => {
                let now = tokio::time::Instant::now();
                if phase == Phase::Terminating {
                    if status.is_some() && !process_group::step_group_alive(pid) {
                        // Everyone in the group obeyed SIGTERM; end stragglers that left it.
                        finish_kill(pid, &step_marker).await;
                        phase = Phase::Killed;
                        phase_armed = false;
                    } else if now >= grace_deadline {
                        outcome.killed = true;
                        finish_kill(pid, &step_marker).await;
                        phase = Phase::Killed;
                        phase_armed = false;
                    } else if status.is_some() {
                        // The leader is gone: poll the group while the grace period runs.
                        // Backs off from 20 ms to 250 ms: each check reads /proc.
                        group_poll = (group_poll * 2).min(Duration::from_millis(250));
                        let next = (now + group_poll).min(grace_deadline);
                        phase_sleep.as_mut().reset(next);
                        phase_armed = true;
                    } else {
                        phase_sleep.as_mut().reset(grace_deadline);
                        phase_armed = true;
                    }
                } else if linger_until.is_some() {
                    // Linger over: leave the remaining output to a background drain.
                    detach_drain(stdout.take());
                    detach_drain(stderr.take());
                    phase_armed = false;
                } else {
                    phase_armed = false;
                }
            }
            _ = &mut stdin_fut, if !stdin_done => {
                stdin_done = true;
            }
            _ = &mut stream_sleep, if pending_out.is_some() || pending_err.is_some() => {
                stdout = watch(pending_out.take()).map_err(wait_err)?;
                stderr = watch(pending_err.take()).map_err(wait_err)?;
            }
            () = on_line.ready(), if paused => {
                paused = false;
            }
            r = read_some(&mut stdout, &mut out_buf), if stdout.is_some() && !paused => {
                match r {
                    Ok(0) | Err(_) => {
                        out_lines.finish(on_line);
                        stdout = None;
                    }
                    Ok(_) => {
                        out_lines.feed(&out_buf, on_line);
                        out_buf.clear();
                    }
                }
                paused = !on_line.end_of_read();
            }
            r = read_some(&mut stderr, &mut err_buf), if stderr.is_some() && !paused => {
                match r {
                    Ok(0) | Err(_) => {
                        err_lines.finish(on_line);
                        stderr = None;
                    }
                    Ok(_) => {
                        err_lines.feed(&err_buf, on_line);
                        err_buf.clear();
                    }
                }
                paused = !on_line.end_of_read();
            }
            st = child.wait(), if status.is_none() => {
                let st = st.map_err(|source| RunnerError::Wait {
                    program: cmd.program.clone(),
                    pid,
                    source,
                })?;
                status = Some(st);
                outcome.set_status(st);
                // Read what the pipes hold now; watch those still held open by processes
                // the step left behind.
                if let Some(fd) = pending_out.take() {
                    let open = drain_now(fd, &mut out_buf, &mut out_lines, on_line);
                    stdout = watch(open).map_err(wait_err)?;
                }
                if let Some(fd) = pending_err.take() {
                    let open = drain_now(fd, &mut err_buf, &mut err_lines, on_line);
                    stderr = watch(open).map_err(wait_err)?;
                }
                // At most one pipe's worth was read per pipe.
                paused = paused || !on_line.end_of_read();
                if phase == Phase::Terminating {
                    phase_sleep.as_mut().reset(tokio::time::Instant::now());
                    phase_armed = true;
                }
            }
        }
    }
    out_lines.finish(on_line);
    err_lines.finish(on_line);
    if !on_line.end_of_read() {
        on_line.ready().await;
    }
    guard.done = true;
    drop(guard);
    outcome.duration = start.elapsed();
    Ok(outcome)
}

/// What the step's child must do before exec: switch to `cmd.user` (whose `HOME`, `USER`
/// and `LOGNAME` are added to its environment), join its run's cgroup, or, with no cgroup
/// but a run user, take the run's process limit as `RLIMIT_NPROC`. Fails when the run's
/// cgroup exists but cannot be opened: the step never runs outside its limit.
fn child_setup(cmd: &mut StepCommand) -> std::io::Result<ChildSetup> {
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

/// Registers a pipe's read end with the reactor.
fn watch(fd: Option<OwnedFd>) -> std::io::Result<Option<Receiver>> {
    fd.map(Receiver::from_owned_fd_unchecked).transpose()
}

/// Reads a non-blocking pipe until it is empty, feeding `lines`. Returns the pipe while a
/// writer still holds it open; `None` at end of file (or on an error, which the watched path
/// treats the same way).
fn drain_now(
    fd: OwnedFd,
    buf: &mut Vec<u8>,
    lines: &mut LineSplitter,
    on_line: &mut impl OutputSink,
) -> Option<OwnedFd> {
    use std::io::Read;
    let mut file = std::fs::File::from(fd);
    buf.resize(READ_CHUNK, 0);
    let open = loop {
        match file.read(buf) {
            Ok(0) => break false,
            Ok(n) => lines.feed(&buf[..n], on_line),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            Err(_) => break false,
        }
    };
    buf.clear();
    if open {
        Some(OwnedFd::from(file))
    } else {
        lines.finish(on_line);
        None
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    match reader {
        Some(r) => r.read_buf(buf).await,
        None => std::future::pending().await,
    }
}

/// Keeps reading (and dropping) a pipe in the background so that a process the step left
/// running does not die of a closed pipe.
fn detach_drain<R: AsyncRead + Unpin + Send + 'static>(reader: Option<R>) {
    if let Some(mut r) = reader {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

/// SIGTERM to the group and to the step's processes that left it (each process once).
async fn start_terminate(pid: u32, step_marker: &str) {
    process_group::signal_group(pid, libc::SIGTERM);
    // A stopped process only acts on SIGTERM once continued (systemd does the same).
    process_group::signal_group(pid, libc::SIGCONT);
    if process_group::is_subreaper() {
        // Only the step's own tree and adopted orphans are read (a few small /proc files):
        // done right here, so that with many steps cancelled at once every SIGTERM is out
        // before the blocking pool has started a thread for each of them.
        process_group::sweep_step(pid, step_marker, libc::SIGTERM);
        return;
    }
    let marker = step_marker.to_string();
    // A scan of every process in /proc; blocking, so off the async threads.
    let _ =
        tokio::task::spawn_blocking(move || process_group::sweep_step(pid, &marker, libc::SIGTERM))
            .await;
}

/// SIGKILL to the group and every process carrying the step's marker.
async fn finish_kill(pid: u32, step_marker: &str) {
    process_group::signal_group(pid, libc::SIGKILL);
    let marker = step_marker.to_string();
    let _ =
        tokio::task::spawn_blocking(move || process_group::sweep_step(pid, &marker, libc::SIGKILL))
            .await;
}

fn spawn_failure<S: OutputSink>(
    cmd: &StepCommand,
    source: std::io::Error,
    on_line: &mut S,
    start: Instant,
) -> Result<ProcessOutcome, RunnerError> {
    if let Some(dir) = cmd.cwd.as_ref().filter(|d| !d.is_dir()) {
        return Err(RunnerError::Spawn {
            program: cmd.program.clone(),
            source: std::io::Error::new(
                ErrorKind::NotFound,
                format!("working directory `{}` does not exist", dir.display()),
            ),
        });
    }
    if cmd.shell_errors {
        let (code, text) = match source.kind() {
            ErrorKind::NotFound => (127, "command not found"),
            ErrorKind::PermissionDenied => (126, "Permission denied"),
            _ => (0, ""),
        };
        if code != 0 {
            on_line.line(Stream::Stderr, &format!("{}: {text}", cmd.program));
            return Ok(ProcessOutcome {
                exit_code: Some(code),
                duration: start.elapsed(),
                ..ProcessOutcome::default()
            });
        }
    }
    Err(RunnerError::Spawn {
        program: cmd.program.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_splits_and_keeps_partial() {
        let mut lines = Vec::new();
        let mut cb = FnSink(|s: Stream, l: &str| lines.push((s, l.to_string())));
        let mut sp = LineSplitter::new(Stream::Stdout);
        sp.feed(b"a\nb", &mut cb);
        sp.feed(b"c\r\n\nd", &mut cb);
        sp.feed(b"e\nf\n\ng\n", &mut cb);
        sp.feed(b"h\xff\ni\n", &mut cb);
        sp.finish(&mut cb);
        let texts: Vec<_> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            texts,
            vec!["a", "bc", "", "de", "f", "", "g", "h\u{fffd}", "i"]
        );
    }

    #[test]
    fn splitter_caps_long_lines() {
        let mut n = 0;
        let mut cb = FnSink(|_: Stream, l: &str| {
            assert!(l.len() <= MAX_LINE);
            n += 1;
        });
        let mut sp = LineSplitter::new(Stream::Stderr);
        sp.feed(&vec![b'x'; MAX_LINE * 2 + 5], &mut cb);
        sp.finish(&mut cb);
        assert_eq!(n, 3);
    }

    /// Whole lines of a read go to the sink as one block when they can.
    #[test]
    fn splitter_hands_whole_lines_as_one_block() {
        #[derive(Default)]
        struct Blocks(Vec<String>);
        impl OutputSink for Blocks {
            fn line(&mut self, _: Stream, line: &str) {
                self.0.push(format!("line {line}"));
            }
            fn lines(&mut self, _: Stream, lines: &str) {
                self.0.push(format!("block {lines}"));
            }
        }
        let mut sink = Blocks::default();
        let mut sp = LineSplitter::new(Stream::Stdout);
        sp.feed(b"a\nb\nc", &mut sink);
        sp.feed(b"d\ne\nf\n", &mut sink);
        sp.feed(b"g\r\nh\n", &mut sink);
        sp.finish(&mut sink);
        assert_eq!(
            sink.0,
            [
                "block a\nb\n",
                "line cd",
                "block e\nf\n",
                "line g",
                "line h"
            ]
        );
    }

    #[test]
    fn cancel_escalates() {
        let c = Cancel::new();
        let child = c.child();
        assert!(!c.is_cancelled());
        c.request();
        assert!(c.is_cancelled() && !c.is_killed());
        assert!(child.is_cancelled() && !child.is_killed());
        c.request();
        assert!(c.is_killed() && child.is_killed());
    }
}
