//! The spawned child: its spawn behind the gate of the orphan reaper, its exit waited for
//! through a pidfd, the guard that kills its tree when `run` is dropped, and the signals
//! that end its tree on timeout or cancel.

use std::io::ErrorKind;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::isolation::ChildSetup;
use crate::posix_spawn::{self, SpawnSpec, StdinSource};
use crate::process_group;

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

    pub(super) fn set_status(&mut self, status: ExitStatus) {
        self.exit_code = status.code();
        self.signal = status.signal();
    }
}

/// Waits for one child through a pidfd registered with the reactor: no SIGCHLD handler, and
/// no other child's status is ever collected. Falls back to polling every 10 ms where
/// pidfds do not exist (Linux before 5.3).
pub(super) struct ChildWaiter {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl ChildWaiter {
    pub(super) fn new(pid: u32) -> std::io::Result<ChildWaiter> {
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
    pub(super) fn has_pidfd(&self) -> bool {
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
    pub(super) async fn wait(&self) -> std::io::Result<ExitStatus> {
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
pub(super) struct SpawnJob {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) inherit_env: bool,
    pub(super) cwd: Option<PathBuf>,
    /// Closed in the parent when the job is dropped, after the spawn.
    pub(super) stdin: StdinSource,
    pub(super) stdout: OwnedFd,
    /// `None` when stderr goes to the stdout pipe.
    pub(super) stderr: Option<OwnedFd>,
    /// Run user, cgroup and limits (see `isolation.rs`).
    pub(super) setup: ChildSetup,
}

impl SpawnJob {
    /// Spawns and registers the leader behind the spawn gate, so the orphan reaper never
    /// sees an unregistered leader.
    ///
    /// `ETXTBSY` ("text file busy") is retried a few times over about 250 ms: an executable
    /// just written, by this process (a checkout) or another, stays busy while any process
    /// forked meanwhile still holds the writer's descriptor, until that process execs.
    pub(super) fn spawn(&mut self) -> std::io::Result<u32> {
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
pub(super) struct InFlight;

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl InFlight {
    pub(super) fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }

    /// Other `run` calls in progress besides this one.
    pub(super) fn others(&self) -> usize {
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
pub(super) struct LeaderGuard {
    pub(super) pid: u32,
    pub(super) step_marker: String,
    pub(super) done: bool,
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

/// SIGTERM to the group and to the step's processes that left it (each process once).
pub(super) async fn start_terminate(pid: u32, step_marker: &str) {
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
pub(super) async fn finish_kill(pid: u32, step_marker: &str) {
    process_group::signal_group(pid, libc::SIGKILL);
    let marker = step_marker.to_string();
    let _ =
        tokio::task::spawn_blocking(move || process_group::sweep_step(pid, &marker, libc::SIGKILL))
            .await;
}
