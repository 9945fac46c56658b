//! Running one step process: spawn it as the leader of its own process group, feed stdin,
//! hand stdout/stderr lines to a sink as they arrive, and end it on timeout or cancel
//! (SIGTERM to the group, a grace period while still draining output, then SIGKILL to the
//! group and a sweep of its marker).
//!
//! [`run_with_sink`] reads as its phases: [`prepare`] (markers, child setup, pipes, stdin),
//! [`start`] (the spawn), [`supervise`] (pump output and wait for the exit; on timeout or
//! cancel terminate, then sweep and kill the tree), [`Running::finish`] (the result).
//! `command` builds what runs, `output` owns the pipes and the sink, `child` the spawned
//! process and the signals that end it, `cancel` the cancel handle.
//!
//! The happy path is kept cheap (it runs once per step, and a trivial step costs about
//! 0.5 ms of fork/exec): `posix_spawn` with a prebuilt environment (`posix_spawn.rs`), the
//! pipes registered with the tokio reactor, the exit waited for through a pidfd (no SIGCHLD
//! handler, no other child's status touched), stdin written into the pipe before the spawn
//! when it fits, no timer, thread, file or `/proc` scan per step.
//!
//! Kill-the-tree policy lives in `process_group.rs`; what the step's files mean lives in
//! `protocol.rs`.

mod cancel;
mod child;
mod command;
mod output;

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe::Sender;

pub use cancel::Cancel;
pub use child::ProcessOutcome;
pub use command::{DEFAULT_GRACE, StepCommand};
pub use output::{MAX_LINE, OutputSink, Stream};

use crate::errors::RunnerError;
use crate::posix_spawn::{self, StdinSource};
use crate::process_group::{self, RUN_MARKER_VAR, STEP_MARKER_VAR};
use child::{ChildWaiter, InFlight, LeaderGuard, SpawnJob, finish_kill, start_terminate};
use output::{FnSink, OutputPipe, STREAM_AFTER};

/// Stdin up to this size is written into the pipe before the spawn. POSIX guarantees that a
/// write of at most `PIPE_BUF` bytes into an empty pipe completes at once.
const PREFILL_MAX: usize = libc::PIPE_BUF;

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
    cmd: StepCommand,
    on_line: &mut S,
    cancel: Cancel,
) -> Result<ProcessOutcome, RunnerError> {
    let started_at = Instant::now();
    let in_flight = InFlight::enter();
    if cancel.is_cancelled() {
        return Ok(ProcessOutcome {
            cancelled: true,
            ..ProcessOutcome::default()
        });
    }
    let prepared = prepare(cmd)?;
    let mut step = match start(prepared, &in_flight, started_at)? {
        Ok(step) => step,
        Err((cmd, source)) => return spawn_failure(&cmd, source, on_line, started_at),
    };
    supervise(&mut step, on_line, &cancel).await?;
    Ok(step.finish(on_line).await)
}

/// A step ready to spawn: its markers and child setup applied, its pipes made.
struct Prepared {
    cmd: StepCommand,
    step_marker: String,
    job: SpawnJob,
    out_read: OwnedFd,
    err_read: Option<OwnedFd>,
    /// The write end of stdin and what goes into it, when stdin did not fit the pipe.
    stdin: Option<(OwnedFd, Vec<u8>)>,
}

/// Puts the step and run markers into the environment, works out the child's setup (user,
/// cgroup), and makes the pipes: output pipes with our ends non-blocking for the reactor and
/// the child's blocking; small stdin (the usual parameters JSON) written into its pipe
/// before the spawn, so no async writer and no event registration is needed.
fn prepare(mut cmd: StepCommand) -> Result<Prepared, RunnerError> {
    let step_marker = process_group::next_step_marker();
    cmd.env
        .push((STEP_MARKER_VAR.to_string(), step_marker.clone()));
    if let Some(marker) = &cmd.marker {
        cmd.env.push((RUN_MARKER_VAR.to_string(), marker.clone()));
    }
    let spawn_err = |cmd: &StepCommand, source: std::io::Error| RunnerError::Spawn {
        program: cmd.program.clone(),
        source,
    };
    let setup = command::child_setup(&mut cmd).map_err(|e| spawn_err(&cmd, e))?;
    let (out_read, out_write) = posix_spawn::pipe(true, false).map_err(|e| spawn_err(&cmd, e))?;
    let (err_read, err_write) = if cmd.merge_output {
        (None, None)
    } else {
        let (r, w) = posix_spawn::pipe(true, false).map_err(|e| spawn_err(&cmd, e))?;
        (Some(r), Some(w))
    };
    let stdin_bytes = std::mem::take(&mut cmd.stdin);
    let (stdin_source, stdin) = if stdin_bytes.is_empty() {
        (StdinSource::Null, None)
    } else if stdin_bytes.len() <= PREFILL_MAX {
        let reader = prefilled_pipe(&stdin_bytes).map_err(|e| spawn_err(&cmd, e))?;
        (StdinSource::Pipe(reader.into()), None)
    } else {
        let (reader, writer) = posix_spawn::pipe(false, true).map_err(|e| spawn_err(&cmd, e))?;
        (StdinSource::Pipe(reader), Some((writer, stdin_bytes)))
    };
    let job = SpawnJob {
        program: std::mem::take(&mut cmd.program),
        args: std::mem::take(&mut cmd.args),
        env: std::mem::take(&mut cmd.env),
        inherit_env: cmd.inherit_env,
        cwd: cmd.cwd.take(),
        stdin: stdin_source,
        stdout: out_write,
        stderr: err_write,
        setup,
    };
    Ok(Prepared {
        cmd,
        step_marker,
        job,
        out_read,
        err_read,
        stdin,
    })
}

/// A pipe whose write end already holds `bytes` and is closed: the read end is the child's
/// stdin. Only for `bytes.len() <= PREFILL_MAX`: such a write into a new, empty pipe (whose
/// capacity is at least one page, `PIPE_BUF`) completes at once even in blocking mode.
fn prefilled_pipe(bytes: &[u8]) -> std::io::Result<std::io::PipeReader> {
    use std::io::Write;
    let (reader, mut writer) = std::io::pipe()?;
    writer.write_all(bytes)?;
    Ok(reader)
}

/// Spawns the step. The inner `Err` is a spawn that failed (with the command back, to
/// describe the failure); the outer one a failure to watch a started child, which is then
/// killed.
///
/// posix_spawn blocks the calling thread until the child has exec'd (vfork), tens of
/// microseconds. On a multi-thread runtime with other steps in flight, this worker's queue
/// is handed to another thread first (`block_in_place`, which never panics there: every way
/// into such a runtime allows it), so their output and exits are not held up. On a
/// current-thread runtime (`agent exec`) the spawn happens right here, as make does: handing
/// it to a blocking thread cost two thread switches a step and made `max_parallel: 2` about
/// 5% slower (bench/exec.sh).
#[allow(
    clippy::type_complexity,
    reason = "the two failure levels are documented above"
)]
fn start(
    prepared: Prepared,
    in_flight: &InFlight,
    started_at: Instant,
) -> Result<Result<Running, (StepCommand, std::io::Error)>, RunnerError> {
    let Prepared {
        mut cmd,
        step_marker,
        mut job,
        out_read,
        err_read,
        stdin,
    } = prepared;
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
    let pid = match spawned {
        Ok(pid) => pid,
        Err(source) => return Ok(Err((cmd, source))),
    };
    if let Some(marker) = &cmd.marker {
        process_group::register_run_group(marker, pid);
    }
    let guard = LeaderGuard {
        pid,
        step_marker: step_marker.clone(),
        done: false,
    };
    let wait_err = |source| RunnerError::Wait {
        program: cmd.program.clone(),
        pid,
        source,
    };
    let child = ChildWaiter::new(pid).map_err(wait_err)?;
    let stdin = match stdin {
        Some((fd, bytes)) => Some((
            Sender::from_owned_fd_unchecked(fd).map_err(wait_err)?,
            bytes,
        )),
        None => None,
    };
    Ok(Ok(Running {
        outcome: ProcessOutcome {
            pid,
            ..ProcessOutcome::default()
        },
        cmd,
        step_marker,
        started_at,
        child,
        guard,
        out: OutputPipe::new(Stream::Stdout, Some(out_read)),
        err: OutputPipe::new(Stream::Stderr, err_read),
        stdin,
        phase: Phase::Running,
        status: None,
        grace_deadline: None,
        group_poll: Duration::from_millis(10),
        linger_until: None,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM sent; the grace period runs.
    Terminating,
    /// SIGKILL sent and the tree swept.
    Killed,
}

/// A started step, from its spawn to the end of its output.
struct Running {
    outcome: ProcessOutcome,
    cmd: StepCommand,
    step_marker: String,
    started_at: Instant,
    child: ChildWaiter,
    guard: LeaderGuard,
    out: OutputPipe,
    err: OutputPipe,
    stdin: Option<(Sender, Vec<u8>)>,
    phase: Phase,
    status: Option<ExitStatus>,
    grace_deadline: Option<tokio::time::Instant>,
    group_poll: Duration,
    /// After the leader exits, pipes held by others are read until this instant.
    linger_until: Option<tokio::time::Instant>,
}

impl Running {
    fn pid(&self) -> u32 {
        self.outcome.pid
    }

    fn wait_err(&self, source: std::io::Error) -> RunnerError {
        RunnerError::Wait {
            program: self.cmd.program.clone(),
            pid: self.pid(),
            source,
        }
    }

    /// Whether the step is over: the leader exited, the pipes are closed, and no grace
    /// period is waiting for the group to shut down.
    fn is_over(&self) -> bool {
        self.status.is_some()
            && !self.out.is_reading()
            && !self.err.is_reading()
            && self.phase != Phase::Terminating
    }

    /// SIGTERM to the tree (timeout or first cancel); returns the end of the grace period.
    async fn terminate(&mut self) -> tokio::time::Instant {
        start_terminate(self.pid(), &self.step_marker).await;
        self.phase = Phase::Terminating;
        let deadline = tokio::time::Instant::now() + self.cmd.grace;
        self.grace_deadline = Some(deadline);
        deadline
    }

    /// SIGKILL to the group and a sweep of every process carrying the step's marker.
    async fn kill(&mut self) {
        finish_kill(self.pid(), &self.step_marker).await;
        self.phase = Phase::Killed;
    }

    /// The phase timer fired (grace period, group poll or linger); returns when it must
    /// fire next, if at all.
    async fn on_timer(&mut self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        if self.phase == Phase::Terminating {
            let grace_deadline = self.grace_deadline.unwrap_or(now);
            if self.status.is_some() && !process_group::step_group_alive(self.pid()) {
                // Everyone in the group obeyed SIGTERM; end stragglers that left it.
                self.kill().await;
                None
            } else if now >= grace_deadline {
                self.outcome.killed = true;
                self.kill().await;
                None
            } else if self.status.is_some() {
                // The leader is gone: poll the group while the grace period runs.
                // Backs off from 20 ms to 250 ms: each check reads /proc.
                self.group_poll = (self.group_poll * 2).min(Duration::from_millis(250));
                Some((now + self.group_poll).min(grace_deadline))
            } else {
                Some(grace_deadline)
            }
        } else {
            if self.linger_until.is_some() {
                // Linger over: leave the remaining output to a background drain.
                self.out.detach();
                self.err.detach();
            }
            None
        }
    }

    /// The leader exited: records its status and reads what the pipes hold now. Returns
    /// whether the phase timer must fire at once (the grace period then polls the group).
    fn on_exit(
        &mut self,
        status: std::io::Result<ExitStatus>,
        sink: &mut impl OutputSink,
    ) -> Result<bool, RunnerError> {
        let status = status.map_err(|e| self.wait_err(e))?;
        self.status = Some(status);
        self.outcome.set_status(status);
        self.out.drain_at_exit(sink).map_err(|e| self.wait_err(e))?;
        self.err.drain_at_exit(sink).map_err(|e| self.wait_err(e))?;
        Ok(self.phase == Phase::Terminating)
    }

    /// The result: the last partial lines handed over, the sink given time to pass on
    /// what it holds, the leader's guard disarmed.
    async fn finish(mut self, sink: &mut impl OutputSink) -> ProcessOutcome {
        self.out.finish(sink);
        self.err.finish(sink);
        if !sink.end_of_read() {
            sink.ready().await;
        }
        self.guard.done = true;
        self.outcome.duration = self.started_at.elapsed();
        self.outcome
    }
}

/// Pumps the step's output and waits for its exit; on a timeout or cancel, terminates the
/// tree, waits out the grace period and kills and sweeps what is left. Returns once the
/// step is over (see [`Running::is_over`]).
///
/// The output pipes are not watched during the step's first `STREAM_AFTER`: a write into
/// a watched pipe wakes this thread (and often preempts the writer on a small machine), and
/// so does its end of file, where a short step only needs one wake-up, at its exit, to read
/// everything in one go. Longer steps are streamed from then on. Without a pidfd the exit
/// is polled, so the pipes are watched at once.
async fn supervise<S: OutputSink>(
    step: &mut Running,
    on_line: &mut S,
    cancel: &Cancel,
) -> Result<(), RunnerError> {
    let now = tokio::time::Instant::now();
    let stream_at = now
        + if step.child.has_pidfd() {
            STREAM_AFTER
        } else {
            Duration::ZERO
        };
    let stream_sleep = tokio::time::sleep_until(stream_at);
    tokio::pin!(stream_sleep);
    let mut stdin_done = step.stdin.is_none();
    let stdin = step.stdin.take();
    let stdin_fut = async move {
        if let Some((mut sender, bytes)) = stdin {
            // A step that does not read its stdin may exit first: EPIPE is fine.
            let _ = sender.write_all(&bytes).await;
        }
    };
    tokio::pin!(stdin_fut);

    let far = now + Duration::from_secs(86400 * 365);
    let timeout_at = step
        .cmd
        .timeout
        .map(|t| tokio::time::Instant::from_std(step.started_at + t))
        .unwrap_or(far);
    let timeout_sleep = tokio::time::sleep_until(timeout_at);
    tokio::pin!(timeout_sleep);
    let phase_sleep = tokio::time::sleep_until(far);
    tokio::pin!(phase_sleep);
    let graceful = cancel.graceful_token().cancelled();
    tokio::pin!(graceful);
    let immediate = cancel.immediate_token().cancelled();
    tokio::pin!(immediate);

    let has_timeout = step.cmd.timeout.is_some();
    // Whether `phase_sleep` holds a real deadline (grace period, group poll or linger); an
    // unarmed timer is never polled, so the happy path registers no timer at all.
    let mut phase_armed = false;
    // The sink cannot take more output yet: the pipes are not read until it can.
    let mut paused = false;

    loop {
        if step.is_over() {
            break;
        }
        if step.status.is_some() && step.phase != Phase::Terminating && step.linger_until.is_none()
        {
            let until = tokio::time::Instant::now() + step.cmd.linger;
            step.linger_until = Some(until);
            phase_sleep.as_mut().reset(until);
            phase_armed = true;
        }
        let running = step.phase == Phase::Running && step.status.is_none();
        tokio::select! {
            biased;
            _ = &mut immediate, if running || step.phase == Phase::Terminating => {
                step.outcome.cancelled = true;
                step.outcome.killed = true;
                step.kill().await;
                phase_armed = false;
            }
            _ = &mut graceful, if running => {
                step.outcome.cancelled = true;
                let deadline = step.terminate().await;
                phase_sleep.as_mut().reset(deadline);
                phase_armed = true;
            }
            _ = &mut timeout_sleep, if has_timeout && running => {
                step.outcome.timed_out = true;
                let deadline = step.terminate().await;
                phase_sleep.as_mut().reset(deadline);
                phase_armed = true;
            }
            _ = &mut phase_sleep, if phase_armed => {
                match step.on_timer().await {
                    Some(next) => phase_sleep.as_mut().reset(next),
                    None => phase_armed = false,
                }
            }
            _ = &mut stdin_fut, if !stdin_done => {
                stdin_done = true;
            }
            _ = &mut stream_sleep, if step.out.is_pending() || step.err.is_pending() => {
                step.out.watch().map_err(|e| step.wait_err(e))?;
                step.err.watch().map_err(|e| step.wait_err(e))?;
            }
            () = on_line.ready(), if paused => {
                paused = false;
            }
            r = step.out.read(), if step.out.is_reading() && !paused => {
                step.out.take_read(r, on_line);
                paused = !on_line.end_of_read();
            }
            r = step.err.read(), if step.err.is_reading() && !paused => {
                step.err.take_read(r, on_line);
                paused = !on_line.end_of_read();
            }
            st = step.child.wait(), if step.status.is_none() => {
                if step.on_exit(st, on_line)? {
                    phase_sleep.as_mut().reset(tokio::time::Instant::now());
                    phase_armed = true;
                }
                // At most one pipe's worth was read per pipe.
                paused = paused || !on_line.end_of_read();
            }
        }
    }
    Ok(())
}

/// The outcome of a spawn that failed: an error, or with [`StepCommand::shell_errors`] the
/// shell's exit codes 127 (not found) and 126 (not executable) and its message on stderr.
fn spawn_failure<S: OutputSink>(
    cmd: &StepCommand,
    source: std::io::Error,
    on_line: &mut S,
    started_at: Instant,
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
                duration: started_at.elapsed(),
                ..ProcessOutcome::default()
            });
        }
    }
    Err(RunnerError::Spawn {
        program: cmd.program.clone(),
        source,
    })
}
