//! One daemon per state directory: an exclusive `flock` on `STATE_DIR/daemon.lock`, taken
//! before anything else touches the directory and held for the daemon's life.
//!
//! Without it a second daemon started on the same directory would run recovery on the
//! first one's live runs (marking them interrupted, removing their workspaces, queueing
//! them again) and then run them a second time beside the first daemon. The lock file holds
//! the holder's pid, so the refusal names it. The lock goes with the process (a `kill -9`
//! releases it) and is never inherited by steps (the descriptor is close-on-exec).
//!
//! This module also creates the state directory itself: a new one gets a `.gitignore` of
//! `*`, because the embedded default puts it inside the user's repository, and `git add -A`
//! must not commit the API token, the database or the mirrors.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error("another daemon (pid {pid}) uses {}", dir.display())]
    Held {
        /// The holder's pid as written in the lock file (`unknown` when it wrote none yet).
        pid: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// The lock file cannot be opened, locked or written.
    #[error("cannot lock `{}`: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the exclusive lock on `state_dir` (which must exist) without waiting and
    /// writes this process's pid into the lock file.
    pub(crate) fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = crate::state_dir::lock_file(state_dir);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !try_flock(&file).map_err(io)? {
            return Err(LockError::Held {
                pid: holder_pid(&mut file),
                dir: state_dir.to_path_buf(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: true when taken, false when another open file holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// The pid the holder wrote. It writes right after locking, so an empty file is read again
/// for a moment before giving up.
fn holder_pid(file: &mut File) -> String {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        let pid = text.trim();
        if read.is_ok() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            return pid.to_string();
        }
        if Instant::now() >= deadline {
            return "unknown".to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates the state directory (and its parents) if it does not exist yet; a directory
/// created here gets a `.gitignore` of `*`, so nothing in it is ever committed by accident.
/// An existing directory is left as it is.
pub(crate) fn create_state_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(".gitignore"),
        "# Written by agent: the state directory (database, API token, mirrors, logs)\n\
         # is never committed.\n*\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on the same directory, even from the same process, is refused with the
    /// holder's pid and the directory; it is free again once the first is dropped.
    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = StateLock::acquire(dir.path()).expect("first lock");
        let err = StateLock::acquire(dir.path()).expect_err("second lock refused");
        assert_eq!(
            err.to_string(),
            format!(
                "another daemon (pid {}) uses {}",
                std::process::id(),
                dir.path().display()
            )
        );
        drop(first);
        StateLock::acquire(dir.path()).expect("free again");
    }

    /// A state directory made by the agent ignores itself in git; an existing directory is
    /// not touched.
    #[test]
    fn a_new_state_dir_ignores_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("repo/.agent");
        create_state_dir(&state).expect("create");
        let text = std::fs::read_to_string(state.join(".gitignore")).expect(".gitignore");
        assert!(text.lines().any(|l| l == "*"), "{text}");
        create_state_dir(dir.path()).expect("existing");
        assert!(!dir.path().join(".gitignore").exists());
    }
}
