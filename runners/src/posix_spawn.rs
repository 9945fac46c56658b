//! The raw spawn of a step process with `posix_spawn(3)` (glibc uses `clone(CLONE_VM |
//! CLONE_VFORK)`): the child becomes the leader of a new process group, gets its stdio from
//! pipes (or `/dev/null`) and its working directory, and execs.
//!
//! Why not `std::process::Command`: with any environment variable added it copies the whole
//! environment of the agent into a map and a fresh `envp` on every spawn, which costs more
//! than everything else we do per step. Here the inherited environment is converted once
//! (at the first spawn; later changes to the agent's own environment are not seen, and the
//! agent does not make any) and each spawn only adds its own variables. Waiting is done by
//! the caller through a pidfd (`spawn.rs`).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::isolation::ChildSetup;

/// Where the child's stdin comes from.
pub(crate) enum StdinSource {
    /// `/dev/null`.
    Null,
    /// The read end of a pipe (already holding the bytes, or to be written by the caller).
    Pipe(OwnedFd),
}

/// What to spawn.
pub(crate) struct SpawnSpec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// Added to the inherited environment; a later entry wins over an earlier one.
    pub env: &'a [(String, String)],
    /// Whether the agent's own environment is inherited; when false the child gets `env`
    /// and nothing else.
    pub inherit_env: bool,
    pub cwd: Option<&'a Path>,
    pub stdin: &'a StdinSource,
    /// Write ends for the child's stdout and stderr (the same pipe twice when merged).
    pub stdout: &'a OwnedFd,
    pub stderr: &'a OwnedFd,
    /// User switch, cgroup and limits applied between fork and exec; when it has nothing to
    /// do, `posix_spawn` is used.
    pub setup: &'a ChildSetup,
}

/// A pipe with both ends close-on-exec; `nonblocking_read`/`nonblocking_write` set
/// `O_NONBLOCK` on that end only (the child's end stays blocking, as programs expect).
pub(crate) fn pipe(
    nonblocking_read: bool,
    nonblocking_write: bool,
) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if nonblocking_read {
        set_nonblocking(reader.as_raw_fd())?;
    }
    if nonblocking_write {
        set_nonblocking(writer.as_raw_fd())?;
    }
    Ok((reader, writer))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd we own; a fresh pipe end has no other status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `/dev/null`, opened once (close-on-exec) and `dup2`ed into children.
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<Option<OwnedFd>> = OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()
        .map(|fd| fd.as_raw_fd())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "cannot open /dev/null"))
}

/// The agent's environment as `KEY=VALUE` C strings, built once.
fn base_env() -> &'static [(Vec<u8>, CString)] {
    static BASE: OnceLock<Vec<(Vec<u8>, CString)>> = OnceLock::new();
    BASE.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut entry = k.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                CString::new(entry).ok().map(|c| (k.as_bytes().to_vec(), c))
            })
            .collect()
    })
}

fn cstring(s: &[u8], what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Finds `program` on `path` (a `PATH` value) like `execvp`: the first executable file.
fn search_path(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| {
            let Ok(c) = CString::new(candidate.as_os_str().as_bytes()) else {
                return false;
            };
            // SAFETY: access with a valid NUL-terminated path.
            let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
            executable && candidate.is_file()
        })
}

/// RAII wrappers so every exit path destroys the spawn attributes and file actions.
struct FileActions(libc::posix_spawn_file_actions_t);
impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this guard is created.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}
struct Attr(libc::posix_spawnattr_t);
impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `spawn` before this guard is created.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Spawns the process; returns its pid. The caller closes its copies of the child's pipe
/// ends afterwards and must reap the pid.
pub(crate) fn spawn(spec: &SpawnSpec<'_>) -> io::Result<u32> {
    // argv
    let program = cstring(spec.program.as_bytes(), "the program name")?;
    let mut argv_owned = Vec::with_capacity(spec.args.len() + 1);
    argv_owned.push(program.clone());
    for a in spec.args {
        argv_owned.push(cstring(a.as_bytes(), "an argument")?);
    }
    let mut argv: Vec<*mut libc::c_char> = argv_owned
        .iter()
        .map(|c| c.as_ptr() as *mut libc::c_char)
        .collect();
    argv.push(std::ptr::null_mut());

    // envp: the inherited environment minus overridden keys, then the overrides (the last
    // occurrence of a key wins).
    let mut overrides: Vec<(&str, CString)> = Vec::with_capacity(spec.env.len());
    for (k, v) in spec.env.iter().rev() {
        if k.is_empty() || k.contains('=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid environment variable name `{k}`"),
            ));
        }
        if overrides.iter().any(|(seen, _)| *seen == k.as_str()) {
            continue;
        }
        let mut entry = Vec::with_capacity(k.len() + v.len() + 1);
        entry.extend_from_slice(k.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(v.as_bytes());
        overrides.push((k.as_str(), cstring(&entry, "an environment value")?));
    }
    let base = if spec.inherit_env { base_env() } else { &[] };
    let mut envp: Vec<*mut libc::c_char> = Vec::with_capacity(base.len() + overrides.len() + 1);
    for (key, entry) in base {
        if !overrides
            .iter()
            .any(|(k, _)| k.as_bytes() == key.as_slice())
        {
            envp.push(entry.as_ptr() as *mut libc::c_char);
        }
    }
    for (_, entry) in overrides.iter().rev() {
        envp.push(entry.as_ptr() as *mut libc::c_char);
    }
    envp.push(std::ptr::null_mut());

    // Which file to exec: a name without `/` is searched on the child's PATH. When the step
    // sets PATH itself we search it here; otherwise posix_spawnp searches ours (the same).
    let path_override = overrides
        .iter()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, e)| OsStr::from_bytes(&e.as_bytes()[5..]).to_os_string());
    let (exec_path, use_spawnp) = if spec.program.contains('/') {
        (program, false)
    } else if let Some(path) = path_override {
        match search_path(spec.program, &path) {
            Some(found) => (
                cstring(found.as_os_str().as_bytes(), "the program path")?,
                false,
            ),
            None => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    } else {
        (program, true)
    };

    let stdin_fd = match spec.stdin {
        StdinSource::Null => dev_null()?,
        StdinSource::Pipe(fd) => fd.as_raw_fd(),
    };
    let cwd = match spec.cwd {
        Some(dir) => Some(cstring(
            dir.as_os_str().as_bytes(),
            "the working directory",
        )?),
        None => None,
    };

    if !spec.setup.is_empty() {
        let exec_path = if use_spawnp {
            let path = std::env::var_os("PATH").unwrap_or_default();
            match search_path(spec.program, &path) {
                Some(found) => cstring(found.as_os_str().as_bytes(), "the program path")?,
                None => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
            }
        } else {
            exec_path
        };
        return fork_exec(&ForkExec {
            exec_path: &exec_path,
            argv: &argv,
            envp: &envp,
            cwd: cwd.as_ref(),
            stdin_fd,
            stdout_fd: spec.stdout.as_raw_fd(),
            stderr_fd: spec.stderr.as_raw_fd(),
            setup: spec.setup,
        });
    }

    // SAFETY: zeroed storage is immediately initialised by the init functions; the guards
    // destroy it on every path.
    let mut actions = FileActions(unsafe { std::mem::zeroed() });
    check(unsafe { libc::posix_spawn_file_actions_init(&mut actions.0) })?;
    let mut attr = Attr(unsafe { std::mem::zeroed() });
    check(unsafe { libc::posix_spawnattr_init(&mut attr.0) })?;

    // SAFETY (this block): the actions and attributes were initialised above; every pointer
    // passed stays alive until posix_spawn returns.
    unsafe {
        check(libc::posix_spawn_file_actions_adddup2(
            &mut actions.0,
            stdin_fd,
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &mut actions.0,
            spec.stdout.as_raw_fd(),
            1,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &mut actions.0,
            spec.stderr.as_raw_fd(),
            2,
        ))?;
        if let Some(cwd) = &cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions.0,
                cwd.as_ptr(),
            ))?;
        }
        // A new process group led by the child; no blocked signals; SIGPIPE back to its
        // default (the Rust runtime ignores it in the agent, and ignored signals are
        // inherited across exec).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut defaults: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut defaults);
        libc::sigaddset(&mut defaults, libc::SIGPIPE);
        check(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
        check(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &defaults))?;
        check(libc::posix_spawnattr_setflags(
            &mut attr.0,
            (libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        ))?;

        let mut pid: libc::pid_t = 0;
        let spawn_fn = if use_spawnp {
            libc::posix_spawnp
        } else {
            libc::posix_spawn
        };
        check(spawn_fn(
            &mut pid,
            exec_path.as_ptr(),
            &actions.0,
            &attr.0,
            argv.as_ptr(),
            envp.as_ptr(),
        ))?;
        Ok(pid as u32)
    }
}

/// Everything the child of [`fork_exec`] uses, prepared before the fork (the child of a
/// multi-threaded process may only make async-signal-safe calls: no allocation).
struct ForkExec<'a> {
    exec_path: &'a CString,
    argv: &'a [*mut libc::c_char],
    envp: &'a [*mut libc::c_char],
    cwd: Option<&'a CString>,
    stdin_fd: RawFd,
    stdout_fd: RawFd,
    stderr_fd: RawFd,
    setup: &'a ChildSetup,
}

/// The spawn for steps that need more than `posix_spawn` offers: fork, then in the child
/// (in this order) default signal handlers, a new process group, joining the run's cgroup
/// (so that nothing the step forks is ever outside its limit), `RLIMIT_NPROC`, stdio, the
/// working directory, the supplementary groups, gid and uid of the run user, umask 022,
/// and exec. A failure before exec comes back through a close-on-exec pipe as the error.
fn fork_exec(job: &ForkExec<'_>) -> io::Result<u32> {
    let (err_read, err_write) = pipe(false, false)?;
    let groups: Vec<libc::gid_t> = job
        .setup
        .user
        .as_ref()
        .map(|u| u.groups.clone())
        .unwrap_or_default();
    let cgroup_fd = job.setup.cgroup_procs.as_ref().map(|fd| fd.as_raw_fd());
    // Signals stay blocked from before the fork until just before exec in the child, so no
    // handler of the agent runs in the child.
    // SAFETY: plain sigset manipulation on local storage.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: fork; the child below only makes async-signal-safe calls on data prepared
    // before the fork, and ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY (child): async-signal-safe calls only; all pointers point at data owned by
        // the parent's stack frame, copied into this process by fork.
        unsafe {
            let fail = |stage: i32| -> ! {
                let errno = *libc::__errno_location();
                let msg = [stage, errno];
                libc::write(
                    err_write.as_raw_fd(),
                    msg.as_ptr() as *const libc::c_void,
                    std::mem::size_of_val(&msg),
                );
                libc::_exit(127);
            };
            for sig in 1..libc::SIGRTMAX() {
                if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                let mut act: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut act) == 0
                    && (act.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if libc::setpgid(0, 0) != 0 {
                fail(1);
            }
            if let Some(fd) = cgroup_fd
                && libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1) != 1
            {
                fail(2);
            }
            if let Some(n) = job.setup.max_user_processes {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &lim) != 0 {
                    fail(3);
                }
            }
            for (from, to) in [(job.stdin_fd, 0), (job.stdout_fd, 1), (job.stderr_fd, 2)] {
                if libc::dup2(from, to) < 0 {
                    fail(4);
                }
            }
            if let Some(dir) = job.cwd
                && libc::chdir(dir.as_ptr()) != 0
            {
                fail(5);
            }
            if let Some(user) = &job.setup.user {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(user.gid) != 0
                    || libc::setuid(user.uid) != 0
                {
                    fail(6);
                }
                libc::umask(0o022);
            }
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(
                job.exec_path.as_ptr(),
                job.argv.as_ptr() as *const *const libc::c_char,
                job.envp.as_ptr() as *const *const libc::c_char,
            );
            fail(7);
        }
    }
    let fork_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(err_write);
    if pid < 0 {
        return Err(fork_err);
    }
    let mut msg = [0i32; 2];
    let mut file = std::fs::File::from(err_read);
    let n = loop {
        use std::io::Read;
        // SAFETY: viewing two i32 as bytes to read into them.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(msg.as_mut_ptr() as *mut u8, std::mem::size_of_val(&msg))
        };
        match file.read(bytes) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.unwrap_or(0),
        }
    };
    if n == 0 {
        return Ok(pid as u32);
    }
    // The child failed before exec: reap it and report why.
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let err = io::Error::from_raw_os_error(msg[1]);
    let what = match msg[0] {
        1 => "cannot start a new process group",
        2 => "cannot join the run's cgroup",
        3 => "cannot set the process limit",
        4 => "cannot set up stdio",
        5 => return Err(err),
        6 => "cannot switch to the run user",
        _ => return Err(err),
    };
    Err(io::Error::new(err.kind(), format!("{what}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_finds_sh() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let sh = search_path("sh", &path).expect("sh on PATH");
        assert!(sh.is_absolute() || sh.starts_with("."));
        assert!(search_path("no-such-program-4711", &path).is_none());
    }

    #[test]
    fn base_env_has_path() {
        assert!(base_env().iter().any(|(k, _)| k == b"PATH"));
    }
}
