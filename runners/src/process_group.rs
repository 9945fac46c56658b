//! Killing whole process trees: process-group signals, the per-run/per-step environment
//! markers and the `/proc` sweep that finds processes which left the group (`setsid`), and the
//! optional Linux child subreaper that adopts and reaps orphaned grandchildren.
//!
//! Every step process gets `AGENT_STEP_MARKER=<unique id>` and, when the engine gives one,
//! `AGENT_RUN_MARKER=<run marker>` in its environment; children inherit them, even across
//! `setsid`. On timeout or cancel the step's group is signalled and its step marker swept;
//! when a run ends the engine calls [`sweep_run`], which ends processes a step left running
//! on purpose (a test server started with `&`), like GitHub Actions' job cleanup. A process
//! that clears its environment (`env -i`) escapes the sweep; with [`become_subreaper`] it at
//! least stays our child and is reaped.
//!
//! Signals go through pidfds (`pidfd_open` + `pidfd_send_signal`) after re-checking the
//! marker, so a recycled pid is never hit.
//!
//! This module does not spawn anything (see `spawn.rs`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// Environment variable carrying the run marker given by the engine.
pub const RUN_MARKER_VAR: &str = "AGENT_RUN_MARKER";
/// Environment variable carrying the unique marker of one step process tree.
pub(crate) const STEP_MARKER_VAR: &str = "AGENT_STEP_MARKER";

/// Sends `signal` to every process of group `pgid`. Returns false when the group no longer
/// exists (ESRCH).
pub(crate) fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        // Never signal "all processes" (-1) or our own group (0).
        return false;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// A fresh marker for one step, unique across the life of this process.
pub(crate) fn next_step_marker() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{:x}", std::process::id(), nanos)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{n}")
}

/// Ends what a finished run left running, with SIGKILL, repeating until nothing is left
/// (processes may fork while being swept): every descendant of this process (other than
/// step leaders) whose environment holds `AGENT_RUN_MARKER=<marker>`, the remaining members
/// of the run's process groups, and whatever is still in the run's cgroup. Returns how many
/// processes were killed (a process group signalled as a whole counts as one). Blocking:
/// reads `/proc`; call it from a blocking thread in async code.
///
/// Only processes that can belong to the run are looked at, never every process on the
/// machine: an unrelated process that happens to carry the same marker is left alone. In a
/// subreaper ([`become_subreaper`]) every process a finished step left behind, even one
/// that called `setsid`, was re-parented to us and is found among our descendants. Without
/// one, orphans go to init: those still in their step's process group are killed with the
/// group, but one that also left the group (`setsid`) escapes.
pub fn sweep_run(marker: &str) -> usize {
    if marker.is_empty() {
        return 0;
    }
    let needle = format!("{RUN_MARKER_VAR}={marker}").into_bytes();
    let mut killed = sweep(Needle::Exact(&needle), libc::SIGKILL, Scope::Run(marker));
    killed += kill_run_groups(marker, &needle);
    // The run's cgroup holds exactly its processes, even those that cleared their
    // environment: end whatever is still in it.
    for _ in 0..20 {
        let Some(pids) = crate::isolation::run_cgroup_pids(marker) else {
            break;
        };
        let fds: Vec<OwnedFd> = pids
            .into_iter()
            .filter(|&p| p != std::process::id())
            .filter_map(pidfd_open)
            .filter(|fd| pidfd_send_signal(fd, libc::SIGKILL))
            .collect();
        if fds.is_empty() {
            break;
        }
        killed += fds.len();
        wait_pidfds_exit(&fds, Duration::from_secs(2));
    }
    killed
}

/// Process groups of the steps of each run, by run marker, recorded only outside a
/// subreaper (in one, the groups' members are our descendants).
static RUN_GROUPS: Mutex<Option<HashMap<String, Vec<u32>>>> = Mutex::new(None);

/// Records that the step led by `leader` (its process group id) belongs to the run
/// `marker`, so that [`sweep_run`] can end members left in its group.
pub(crate) fn register_run_group(marker: &str, leader: u32) {
    if SUBREAPER.load(Ordering::Relaxed) {
        return;
    }
    let mut groups = RUN_GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    groups
        .get_or_insert_with(HashMap::new)
        .entry(marker.to_string())
        .or_default()
        .push(leader);
}

/// SIGKILL to each recorded process group of the run `marker` that still has members;
/// forgets the run's groups. Returns how many groups were signalled.
///
/// A group's id is its leader's pid, which the kernel does not hand out again while the
/// group has members. So a group that exists while no process has its id is the rest of
/// the step's group; when a live process has that id, the group is only signalled if that
/// process carries the run's marker (the leader itself, not yet reaped), else the pid was
/// reused and the group is not ours.
fn kill_run_groups(marker: &str, needle: &[u8]) -> usize {
    let pgids = RUN_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|groups| groups.remove(marker))
        .unwrap_or_default();
    let mut killed = 0;
    for pgid in pgids {
        let ours = match stat_fields(pgid) {
            None => true,
            Some(_) => environ_has(pgid, Needle::Exact(needle)),
        };
        if ours && signal_group(pgid, 0) && signal_group(pgid, libc::SIGKILL) {
            killed += 1;
        }
    }
    killed
}

/// [`sweep_run`] on a blocking thread, for async callers (the engine at the end of a run).
pub async fn sweep_run_async(marker: &str) -> usize {
    let marker = marker.to_string();
    tokio::task::spawn_blocking(move || sweep_run(&marker))
        .await
        .unwrap_or(0)
}

/// Like [`sweep_run`] for an arbitrary `NAME=value` marker and signal, looking at every
/// process on the machine (for example the leftovers of an earlier agent process). With a
/// signal other than SIGKILL one round is made and nothing is waited for.
pub fn sweep_var(name: &str, value: &str, signal: i32) -> usize {
    if value.is_empty() {
        return 0;
    }
    let needle = format!("{name}={value}").into_bytes();
    sweep(Needle::Exact(&needle), signal, Scope::Machine)
}

/// [`sweep_var`] for every process whose variable `name` starts with `prefix` (e.g. every
/// run marker of one daemon's scope); answers how many were signalled.
pub fn sweep_var_prefix(name: &str, prefix: &str, signal: i32) -> usize {
    if prefix.is_empty() {
        return 0;
    }
    let needle = format!("{name}={prefix}").into_bytes();
    sweep(Needle::Prefix(&needle), signal, Scope::Machine)
}

/// Signals the processes of the step led by `leader` that carry its step marker. With
/// SIGTERM, members of the step's process group are left out: the group signal reached them
/// already, and a second SIGTERM would run their cleanup twice (or, for tools that read a
/// second one as "quit now", skip it).
pub(crate) fn sweep_step(leader: u32, step_marker: &str, signal: i32) -> usize {
    if step_marker.is_empty() {
        return 0;
    }
    let needle = format!("{STEP_MARKER_VAR}={step_marker}").into_bytes();
    let outside_group = signal != libc::SIGKILL;
    sweep(
        Needle::Exact(&needle),
        signal,
        Scope::Step {
            leader,
            outside_group,
        },
    )
}

/// Which processes a sweep reads the environment of.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Every process on the machine.
    Machine,
    /// What a finished run can have left: the members of its cgroup when it has one, else
    /// our children that are not step leaders (in a subreaper, adopted orphans among them)
    /// and their descendants.
    Run(&'a str),
    /// A step's tree: its leader's descendants and adopted orphans with theirs; with
    /// `outside_group`, only those not in the leader's process group.
    Step { leader: u32, outside_group: bool },
}

fn sweep(needle: Needle<'_>, signal: i32, scope: Scope<'_>) -> usize {
    let mut hit: HashSet<u32> = HashSet::new();
    let rounds = if signal == libc::SIGKILL { 20 } else { 1 };
    for _ in 0..rounds {
        let mut fds = Vec::new();
        for pid in marked_pids(needle, scope) {
            if let Some(fd) = pidfd_open(pid) {
                // Re-check after taking the pidfd: the pid cannot be recycled under it now.
                if environ_has(pid, needle) && pidfd_send_signal(&fd, signal) {
                    hit.insert(pid);
                    fds.push(fd);
                }
            }
        }
        if fds.is_empty() || signal != libc::SIGKILL {
            break;
        }
        wait_pidfds_exit(&fds, Duration::from_secs(2));
    }
    if signal == libc::SIGKILL && SUBREAPER.load(Ordering::Relaxed) {
        reap_orphans();
    }
    hit.len()
}

/// Pids of the processes (not ourselves) in `scope` whose environment contains the entry
/// `needle`.
fn marked_pids(needle: Needle<'_>, scope: Scope<'_>) -> Vec<u32> {
    let me = std::process::id();
    let pids = candidate_pids(scope);
    let skip_group = match scope {
        Scope::Step {
            leader,
            outside_group: true,
        } => libc::pid_t::try_from(leader).ok(),
        _ => None,
    };
    pids.into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| match skip_group {
            // A process that is gone or in the group is left alone.
            Some(pgid) => stat_fields(pid).is_some_and(|(_, pgrp, _)| pgrp != pgid),
            None => true,
        })
        .filter(|&pid| environ_has(pid, needle))
        .collect()
}

/// The processes a sweep of `scope` must look at. For a step outside a subreaper, orphans go
/// to init and can be anywhere: then every process is a candidate.
fn candidate_pids(scope: Scope<'_>) -> Vec<u32> {
    let roots = match scope {
        Scope::Machine => return all_pids(),
        Scope::Run(marker) => {
            if let Some(pids) = crate::isolation::run_cgroup_pids(marker) {
                return pids;
            }
            adopted_children()
        }
        _ if !SUBREAPER.load(Ordering::Relaxed) => return all_pids(),
        Scope::Step { leader, .. } => {
            let mut roots = adopted_children();
            roots.push(leader);
            roots
        }
    };
    descendants(roots)
}

/// Every pid in `/proc`.
fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .collect()
}

/// Our children that are not step leaders: in a subreaper, the orphans we adopted (and
/// processes the agent started itself, such as `git`, which carry no marker).
fn adopted_children() -> Vec<u32> {
    let guard = leaders();
    our_children()
        .into_iter()
        .filter(|pid| !guard.as_ref().is_some_and(|s| s.contains(pid)))
        .collect()
}

/// `roots` and all their descendants, from `/proc/<pid>/task/*/children`.
fn descendants(roots: Vec<u32>) -> Vec<u32> {
    let mut seen: HashSet<u32> = HashSet::new();
    let mut todo = roots;
    let mut out = Vec::new();
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        todo.extend(children_of(&format!("/proc/{pid}/task")));
    }
    out
}

/// The children of every thread under `task_dir` (`/proc/<pid>/task`).
fn children_of(task_dir: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(task_dir) else {
        return out;
    };
    for task in tasks.filter_map(|t| t.ok()) {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Whether the process group of the step led by `leader` still has live (non-zombie)
/// members, looking where [`sweep_step`] looks. For polling while a step shuts down.
pub(crate) fn step_group_alive(leader: u32) -> bool {
    if !signal_group(leader, 0) {
        return false;
    }
    let Ok(pgid) = libc::pid_t::try_from(leader) else {
        return false;
    };
    candidate_pids(Scope::Step {
        leader,
        outside_group: false,
    })
    .into_iter()
    .filter_map(stat_fields)
    .any(|(state, pgrp, _)| pgrp == pgid && state != 'Z' && state != 'X')
}

/// Whether `/proc/<pid>/environ` has the entry `needle` (a zombie's environment is empty).
fn environ_has(pid: u32, needle: Needle<'_>) -> bool {
    let mut buf = Vec::new();
    match fs::File::open(format!("/proc/{pid}/environ")) {
        Ok(mut f) => {
            if f.read_to_end(&mut buf).is_err() {
                return false;
            }
        }
        Err(_) => return false,
    }
    buf.split(|&b| b == 0).any(|entry| needle.matches(entry))
}

/// What an environment entry of a swept process must be.
#[derive(Clone, Copy)]
enum Needle<'a> {
    /// Exactly `NAME=VALUE`.
    Exact(&'a [u8]),
    /// `NAME=` followed by a value that starts with the given text.
    Prefix(&'a [u8]),
}

impl Needle<'_> {
    fn matches(self, entry: &[u8]) -> bool {
        match self {
            Needle::Exact(needle) => entry == needle,
            Needle::Prefix(needle) => entry.starts_with(needle),
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: the pidfd_open syscall takes (pid, flags) and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a non-negative return value is a freshly opened fd that we own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(fd: &OwnedFd, signal: i32) -> bool {
    // SAFETY: pidfd_send_signal(fd, sig, info = NULL, flags = 0) reads no memory from us.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// Waits until every pidfd reports its process exited, or the deadline passes.
fn wait_pidfds_exit(fds: &[OwnedFd], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `pending` is a valid array of pollfd of the given length.
        let rc = unsafe { libc::poll(pending.as_mut_ptr(), pending.len() as libc::nfds_t, ms) };
        if rc < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        pending.retain(|p| p.revents == 0);
        for p in &mut pending {
            p.revents = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subreaper

static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Pids of step leaders that `run` waits on: the orphan reaper must never reap them.
static LEADERS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Spawns hold this for reading from just before the spawn until the new leader is
/// registered; the reaper takes it for writing, so it never sees an unregistered leader.
/// Concurrent spawns do not wait for each other.
static SPAWN_GATE: RwLock<()> = RwLock::new(());

fn leaders() -> MutexGuard<'static, Option<HashSet<u32>>> {
    // A poisoned lock only means a panic elsewhere while holding it; the set stays usable.
    LEADERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held around a spawn and the registration of its leader.
pub(crate) fn spawn_gate() -> RwLockReadGuard<'static, ()> {
    SPAWN_GATE.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn register_leader(pid: u32) {
    leaders().get_or_insert_with(HashSet::new).insert(pid);
}

pub(crate) fn unregister_leader(pid: u32) {
    if let Some(set) = leaders().as_mut() {
        set.remove(&pid);
    }
}

/// Makes this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): processes
/// orphaned by a step (for example after `setsid` and the step's exit) are re-parented to us
/// instead of init, so they stay inside the agent's tree. Starts a background thread that
/// reaps such orphans once they exit (every 500 ms; [`sweep_run`] also reaps).
///
/// Orphans are told apart from children that other code waits on by their process group
/// and session: a zombie child that is not a registered step leader and is not in our own
/// process group and session is an adopted orphan. So, with the subreaper on, spawn
/// children in a new process group or session only through this crate. An orphan that
/// stayed in our group and session (a daemonising grandchild of a `git` the agent ran
/// itself) is not reaped and stays a zombie while the agent lives: the price of never
/// stealing an exit status.
///
/// Optional: the marker sweep alone keeps the "no process outlives its step" promise; the
/// subreaper additionally keeps orphans (including ones that cleared their environment)
/// inside the agent's tree instead of init's.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only changes a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !SUBREAPER.swap(true, Ordering::SeqCst) {
        std::thread::Builder::new()
            .name("agent-reaper".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    reap_orphans();
                }
            })?;
    }
    Ok(())
}

/// Whether [`become_subreaper`] succeeded in this process.
pub fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::Relaxed)
}

/// Reaps adopted orphans that have exited (see [`become_subreaper`]). Returns how many.
pub fn reap_orphans() -> usize {
    let _gate = SPAWN_GATE.write().unwrap_or_else(|e| e.into_inner());
    let guard = leaders();
    // SAFETY: getpgrp and getsid(0) have no preconditions.
    let (my_pgrp, my_sid) = unsafe { (libc::getpgrp(), libc::getsid(0)) };
    let mut reaped = 0;
    for pid in our_children() {
        if guard.as_ref().is_some_and(|s| s.contains(&pid)) {
            continue;
        }
        let Some((state, pgrp, sid)) = stat_fields(pid) else {
            continue;
        };
        if state != 'Z' || (pgrp == my_pgrp && sid == my_sid) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if rc > 0 {
            reaped += 1;
        }
    }
    reaped
}

/// Our direct children, from `/proc/self/task/*/children`.
fn our_children() -> Vec<u32> {
    let mut out = children_of("/proc/self/task");
    out.sort_unstable();
    out.dedup();
    out
}

/// `(state, pgrp, session)` from `/proc/<pid>/stat`.
fn stat_fields(pid: u32) -> Option<(char, libc::pid_t, libc::pid_t)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let sid = fields.next()?.parse().ok()?;
    Some((state, pgrp, sid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_unique() {
        let a = next_step_marker();
        let b = next_step_marker();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}-", std::process::id())));
    }

    #[test]
    fn stat_of_self() {
        let (state, pgrp, sid) = stat_fields(std::process::id()).expect("own stat");
        // Usually R or S; D for a moment when the main thread waits on I/O under load.
        assert!("RSDTtWXZPI".contains(state), "state {state:?}");
        // SAFETY: no preconditions.
        unsafe {
            assert_eq!(pgrp, libc::getpgrp());
            assert_eq!(sid, libc::getsid(0));
        }
    }

    #[test]
    fn never_signals_group_zero_or_one() {
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
    }

    #[test]
    fn empty_marker_sweeps_nothing() {
        assert_eq!(sweep_run(""), 0);
    }

    /// A prefix sweep ends the processes whose variable starts with the prefix, and only
    /// them: another scope's marker, or the bare prefix's scope with another daemon's text
    /// after it, is left running.
    #[test]
    fn a_prefix_sweep_ends_exactly_the_processes_of_its_prefix() {
        let var = "AGENT_TEST_SWEEP_PREFIX";
        let unique = format!("sweep-{}-", std::process::id());
        let spawn = |value: &str| {
            std::process::Command::new("sleep")
                .arg("30")
                .env(var, value)
                .spawn()
                .expect("spawn sleep")
        };
        let mut mine = [
            spawn(&format!("{unique}a-1")),
            spawn(&format!("{unique}a-2")),
        ];
        let mut other = spawn(&format!("{unique}b-1"));
        assert_eq!(
            sweep_var_prefix(var, &format!("{unique}a-"), libc::SIGKILL),
            2
        );
        for child in &mut mine {
            let status = child.wait().expect("wait");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        }
        assert!(
            other.try_wait().expect("try_wait").is_none(),
            "another prefix survives"
        );
        other.kill().expect("kill");
        let _ = other.wait();
        assert_eq!(sweep_var_prefix(var, "", libc::SIGKILL), 0);
    }
}
