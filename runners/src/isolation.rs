//! Keeping step processes away from the agent and from each other's runs: the user steps run
//! as ([`RunUser`], when the agent runs as root) and a per-run process limit ([`RunScope`]).
//!
//! The process limit is a cgroup `pids.max` where the agent can create cgroups: cgroup v2
//! with the `pids` controller delegated to the agent's cgroup, else a cgroup v1 `pids`
//! hierarchy (both need root, or a delegated subtree for v2). Every step of a run joins the
//! run's cgroup before it execs, so no process of the step is ever outside the limit; a fork
//! beyond it fails with `EAGAIN` in that run only. Where no cgroup can be made and steps run
//! as a dedicated user, `RLIMIT_NPROC` bounds that user's processes instead (one budget for
//! all runs of that user, not one per run). The cgroup also lists the run's processes
//! exactly, which is what [`crate::sweep_run`] ends at the end of the run.
//!
//! This module decides *what* a step's child process must do before `exec`; the fork and
//! the `exec` are in `posix_spawn.rs`.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The unprivileged user a step runs as (looked up once, from the password database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    /// The user name (or the number it was given as).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from the group database, the primary group included).
    pub groups: Vec<u32>,
    /// Home directory (`HOME` of its steps).
    pub home: PathBuf,
}

impl RunUser {
    /// Looks `name` up in the password database. A name that is all digits is taken as a
    /// uid (its group, home and name then come from the database when it has the uid).
    pub fn lookup(name: &str) -> io::Result<RunUser> {
        let by_uid = name.parse::<u32>().ok();
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name has a NUL"))?;
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives our use of `pwd`.
        let rc = unsafe {
            match by_uid {
                Some(uid) => {
                    libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
                }
                None => libc::getpwnam_r(
                    cname.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                ),
            }
        };
        if result.is_null() {
            if let Some(uid) = by_uid {
                // A bare uid with no entry: its own group, no home.
                return Ok(RunUser {
                    name: name.to_string(),
                    uid,
                    gid: uid,
                    groups: vec![uid],
                    home: PathBuf::from("/"),
                });
            }
            let err = if rc != 0 {
                io::Error::from_raw_os_error(rc)
            } else {
                io::Error::new(io::ErrorKind::NotFound, format!("no user `{name}`"))
            };
            return Err(err);
        }
        // SAFETY: getpw*_r succeeded, so the strings point into `buf`, NUL-terminated.
        let (user_name, home) = unsafe {
            (
                std::ffi::CStr::from_ptr(pwd.pw_name).to_owned(),
                std::ffi::CStr::from_ptr(pwd.pw_dir)
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at most that many.
        let rc = unsafe {
            libc::getgrouplist(user_name.as_ptr(), pwd.pw_gid, groups.as_mut_ptr(), &mut n)
        };
        if rc < 0 {
            // More than 256 groups: keep the primary one only.
            groups = vec![pwd.pw_gid];
        } else {
            groups.truncate(usize::try_from(n).unwrap_or(0));
        }
        Ok(RunUser {
            name: user_name.to_string_lossy().into_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            groups,
            home: PathBuf::from(home),
        })
    }

    /// This user with uid `uid` (group, groups and home kept): the uid of one run.
    pub fn with_uid(&self, uid: u32) -> RunUser {
        RunUser {
            name: format!("{}+{uid}", self.name),
            uid,
            ..self.clone()
        }
    }

    /// Gives `path` (not following a symlink) to this user and its primary group.
    pub fn chown(&self, path: &Path) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
    }

    /// Gives `path` and everything below it to this user (symlinks themselves, never their
    /// targets).
    pub fn chown_tree(&self, path: &Path) -> io::Result<()> {
        self.chown(path)?;
        let meta = fs::symlink_metadata(path)?;
        if meta.is_dir() {
            for entry in fs::read_dir(path)? {
                self.chown_tree(&entry?.path())?;
            }
        }
        Ok(())
    }
}

/// Kills (SIGKILL) every process owned by `uid`, again until none is left or 50 passes are
/// done (a process may fork while the pass runs). For a uid that only one run uses, this
/// ends everything of that run, whatever it did to its environment or process group.
pub fn kill_uid(uid: u32) {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return;
    }
    for _ in 0..50 {
        let Ok(dir) = fs::read_dir("/proc") else {
            return;
        };
        let mut found = false;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // A zombie holds nothing and goes once reaped.
            let zombie = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if !zombie && fs::metadata(entry.path()).is_ok_and(|m| m.uid() == uid) {
                found = true;
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Gives `path` and everything below it back to this process's user and group.
pub fn chown_tree_to_self(path: &Path) -> io::Result<()> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    RunUser {
        name: String::new(),
        uid,
        gid,
        groups: Vec::new(),
        home: PathBuf::new(),
    }
    .chown_tree(path)
}

/// Whether this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What a step's child does between fork and exec, beyond the plain spawn.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// Switch to this user (groups, gid, then uid) last.
    pub user: Option<Arc<RunUser>>,
    /// `cgroup.procs` of the run's cgroup, opened for writing: the child writes `0` into it
    /// (itself) before anything else can fork.
    pub cgroup_procs: Option<OwnedFd>,
    /// `RLIMIT_NPROC` for the child (counts every process of its real uid).
    pub max_user_processes: Option<u64>,
}

impl ChildSetup {
    /// Whether anything is to be done (else the cheaper `posix_spawn` path is taken).
    pub(crate) fn is_empty(&self) -> bool {
        self.user.is_none() && self.cgroup_procs.is_none() && self.max_user_processes.is_none()
    }
}

// ---------------------------------------------------------------------------------------
// Per-run scopes and cgroups

/// One run's process scope: while it lives, every step spawned with the run's marker
/// ([`crate::StepCommand::marker`]) joins the run's cgroup (when one could be made) and is
/// held to `max_processes`. Dropping it kills what is left in the cgroup and removes it.
#[derive(Debug)]
pub struct RunScope {
    marker: String,
    cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct ScopeEntry {
    cgroup: Option<PathBuf>,
    max_processes: Option<u32>,
}

fn scopes() -> std::sync::MutexGuard<'static, HashMap<String, ScopeEntry>> {
    static SCOPES: OnceLock<Mutex<HashMap<String, ScopeEntry>>> = OnceLock::new();
    SCOPES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl RunScope {
    /// Opens the scope of the run with `marker`. With `max_processes`, tries to make a
    /// cgroup with that `pids.max`; when none can be made the scope still remembers the limit
    /// (steps running as a [`RunUser`] then get it as `RLIMIT_NPROC`). Never fails: see
    /// [`RunScope::has_cgroup`] and [`cgroup_support`].
    pub fn open(marker: &str, max_processes: Option<u32>) -> RunScope {
        let cgroup = max_processes.and_then(|max| match create_run_cgroup(max) {
            Ok(dir) => dir,
            Err(err) => {
                tracing::warn!(error = %err, "cannot create the run's cgroup; no per-run process limit");
                None
            }
        });
        scopes().insert(
            marker.to_string(),
            ScopeEntry {
                cgroup: cgroup.clone(),
                max_processes,
            },
        );
        RunScope {
            marker: marker.to_string(),
            cgroup,
        }
    }

    /// Whether the run's processes are in a cgroup of their own.
    pub fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The run's cgroup directory, if any.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }
}

impl Drop for RunScope {
    fn drop(&mut self) {
        scopes().remove(&self.marker);
        if let Some(dir) = self.cgroup.take() {
            // Whatever is still in it (a sweep normally ended all of it already).
            for _ in 0..20 {
                let pids = cgroup_pids(&dir);
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill has no memory-safety preconditions; a pid listed in the
                    // run's cgroup is a process of the run.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Removal fails while killed processes are still being torn down: retry a bit.
            for _ in 0..50 {
                if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// The run scope of `marker`, if one is open: its cgroup and process limit.
pub(crate) fn scope_of(marker: &str) -> Option<(Option<PathBuf>, Option<u32>)> {
    scopes()
        .get(marker)
        .map(|e| (e.cgroup.clone(), e.max_processes))
}

/// The processes of a run's cgroup (`None` when the run has none).
pub(crate) fn run_cgroup_pids(marker: &str) -> Option<Vec<u32>> {
    let dir = scopes().get(marker)?.cgroup.clone()?;
    Some(cgroup_pids(&dir))
}

fn cgroup_pids(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Which kind of cgroup a run's processes are put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupSupport {
    /// cgroup v2 with the `pids` controller available to the agent.
    V2,
    /// A cgroup v1 `pids` hierarchy the agent can write to.
    V1,
    /// None: no per-run cgroup.
    None,
}

/// Where run cgroups are created: a directory `agent.runs` below the agent's own cgroup.
fn runs_parent() -> &'static Result<(PathBuf, CgroupSupport), String> {
    static PARENT: OnceLock<Result<(PathBuf, CgroupSupport), String>> = OnceLock::new();
    PARENT.get_or_init(find_runs_parent)
}

/// What this machine and process allow (found once; creates the parent directory).
pub fn cgroup_support() -> CgroupSupport {
    match runs_parent() {
        Ok((_, kind)) => *kind,
        Err(_) => CgroupSupport::None,
    }
}

fn find_runs_parent() -> Result<(PathBuf, CgroupSupport), String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let mut v2_mount = None;
    let mut v1_mount = None;
    for line in mountinfo.lines() {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER_OPTS`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let super_opts = r.nth(1).unwrap_or("");
        if fstype == "cgroup2" && v2_mount.is_none() {
            v2_mount = Some(PathBuf::from(mount_point));
        } else if fstype == "cgroup" && super_opts.split(',').any(|o| o == "pids") {
            v1_mount = Some(PathBuf::from(mount_point));
        }
    }
    let mut why = Vec::new();
    if let Some(mnt) = v2_mount {
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let mine = mnt.join(path.trim_start_matches('/'));
        let has_pids = fs::read_to_string(mine.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|x| x == "pids"))
            .unwrap_or(false);
        if has_pids {
            match prepare_v2(&mine) {
                Ok(dir) => return Ok((dir, CgroupSupport::V2)),
                Err(e) => why.push(format!("cgroup v2 at {}: {e}", mine.display())),
            }
        } else {
            why.push(format!(
                "cgroup v2 at {}: no `pids` controller",
                mine.display()
            ));
        }
    }
    if let Some(mnt) = v1_mount {
        let path = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls.split(',').any(|c| c == "pids").then_some(path)
            })
            .unwrap_or("/");
        let dir = mnt.join(path.trim_start_matches('/')).join("agent.runs");
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, CgroupSupport::V1)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Ok((dir, CgroupSupport::V1));
            }
            Err(e) => why.push(format!("cgroup v1 pids at {}: {e}", dir.display())),
        }
    }
    if why.is_empty() {
        why.push("no cgroup file system with the `pids` controller".into());
    }
    Err(why.join("; "))
}

/// cgroup v2: processes may only live in leaves, and a controller is handed down through
/// `cgroup.subtree_control`. `agent.runs` below our cgroup gets the `pids` controller for
/// its children (the run cgroups). This works where our cgroup's `subtree_control` may
/// enable `pids`: the root cgroup, or a delegated one whose processes live in a leaf.
fn prepare_v2(mine: &Path) -> io::Result<PathBuf> {
    let enabled = |dir: &Path| {
        fs::read_to_string(dir.join("cgroup.subtree_control"))
            .map(|c| c.split_whitespace().any(|x| x == "pids"))
            .unwrap_or(false)
    };
    if !enabled(mine) {
        fs::write(mine.join("cgroup.subtree_control"), "+pids")?;
    }
    let dir = mine.join("agent.runs");
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if !enabled(&dir) {
        fs::write(dir.join("cgroup.subtree_control"), "+pids")?;
    }
    Ok(dir)
}

/// Creates one run's cgroup with `pids.max = max`; `Ok(None)` where cgroups are not
/// available.
fn create_run_cgroup(max: u32) -> io::Result<Option<PathBuf>> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Ok((parent, _)) = runs_parent() else {
        return Ok(None);
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(format!("run-{}-{n}", std::process::id()));
    fs::create_dir(&dir)?;
    if let Err(e) = fs::write(dir.join("pids.max"), max.to_string()) {
        let _ = fs::remove_dir(&dir);
        return Err(e);
    }
    Ok(Some(dir))
}

/// Removes the run cgroups left by agents that are gone (a daemon killed with SIGKILL, or
/// one that exited while runs were still open): a `run-PID-N` directory whose `PID` is no
/// longer alive. Whatever is still in one is killed first. Returns how many were removed.
/// A directory of a live process (this one included) is left alone.
pub fn remove_stale_run_cgroups() -> usize {
    let Ok((parent, _)) = runs_parent() else {
        return 0;
    };
    remove_stale_run_cgroups_in(parent)
}

fn remove_stale_run_cgroups_in(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = pid > 0
            && (unsafe { libc::kill(pid, 0) } == 0
                || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if alive {
            continue;
        }
        let dir = entry.path();
        for pid in cgroup_pids(&dir) {
            // SAFETY: kill has no memory-safety preconditions; a pid listed in a run's
            // cgroup is a leftover process of that run.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for _ in 0..50 {
            if fs::remove_dir(&dir).is_ok() || !dir.exists() {
                removed += 1;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    removed
}

/// Why run cgroups cannot be made here (for a start-up warning), or `None` when they can.
pub fn cgroup_unavailable_reason() -> Option<String> {
    runs_parent().as_ref().err().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed daemon's run cgroups stayed behind for ever (every `kill -9` of a daemon with
    /// live runs added some). Directories of dead creators go; those of live processes and
    /// anything not named like a run cgroup stay.
    #[test]
    fn run_cgroups_of_dead_agents_are_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead = child.id();
        child.wait().expect("wait");
        let own = std::process::id();
        for name in [
            format!("run-{dead}-0"),
            format!("run-{dead}-7"),
            format!("run-{own}-0"),
            "other".to_string(),
        ] {
            fs::create_dir(parent.path().join(name)).expect("mkdir");
        }
        assert_eq!(remove_stale_run_cgroups_in(parent.path()), 2);
        let mut left: Vec<String> = fs::read_dir(parent.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["other".to_string(), format!("run-{own}-0")]);
    }
}
