//! Every path under the daemon's state directory, in one place (what `agent daemon`, the
//! API, the CLI client and `agent exec` read and write there):
//!
//! ```text
//! <state_dir>/
//!   agent.sqlite3 (+ -wal, -shm)   the store
//!   api_token                      the API token when the config sets none
//!   daemon.addr                    the address the API listens on (while it runs)
//!   daemon.lock                    held by the daemon that owns the directory
//!   logs/<run>/<step>.log          step logs
//!   workspaces/<run>/              a run's checkout
//!   mirrors/<repo>.git             a repository's bare mirror
//!   context/<workflow>.json        `agent exec`'s preserved contexts
//!   artifacts/<sha256>.tar.gz      step artifacts, named by the digest of their archive
//! ```

use std::fmt::Display;
use std::path::{Path, PathBuf};

use crate::store::RunId;

/// The store's database file name.
pub(crate) const DB_FILE_NAME: &str = crate::store::DB_FILE_NAME;
/// The file holding the API token when the config sets none.
pub(crate) const TOKEN_FILE_NAME: &str = "api_token";
/// The file holding the address the API listens on (written once bound, so
/// `listen: 127.0.0.1:0` can be used; removed on a clean exit).
const ADDR_FILE_NAME: &str = "daemon.addr";
/// The lock file held by the daemon that owns the directory.
pub const LOCK_FILE_NAME: &str = "daemon.lock";
/// The directory of the run workspaces.
pub(crate) const WORKSPACES_DIR: &str = "workspaces";

/// The database and its SQLite side files (`-wal`, `-shm`).
pub(crate) fn db_files(state_dir: &Path) -> [PathBuf; 3] {
    [
        state_dir.join(DB_FILE_NAME),
        state_dir.join(format!("{DB_FILE_NAME}-wal")),
        state_dir.join(format!("{DB_FILE_NAME}-shm")),
    ]
}

/// The database file.
#[cfg(test)]
pub(crate) fn db_file(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE_NAME)
}

/// The API token file.
pub(crate) fn token_file(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE_NAME)
}

/// The address file.
pub fn addr_file(state_dir: &Path) -> PathBuf {
    state_dir.join(ADDR_FILE_NAME)
}

/// The address file's temporary name while it is written (renamed into place).
pub(crate) fn addr_tmp_file(state_dir: &Path) -> PathBuf {
    state_dir.join(format!("{ADDR_FILE_NAME}.tmp"))
}

/// The lock file.
pub(crate) fn lock_file(state_dir: &Path) -> PathBuf {
    state_dir.join(LOCK_FILE_NAME)
}

/// The directory of every run's workspace.
pub(crate) fn workspaces_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(WORKSPACES_DIR)
}

/// The workspace of run `run`.
pub(crate) fn workspace_dir(state_dir: &Path, run: impl Display) -> PathBuf {
    workspaces_dir(state_dir).join(run.to_string())
}

/// The directory of the artifact archives.
pub(crate) fn artifacts_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("artifacts")
}

/// The bare mirror of repository `name`.
pub(crate) fn mirror_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("mirrors").join(format!("{name}.git"))
}

/// The file of a preserved context, `safe_name` being the workflow name reduced to a safe
/// file name.
pub(crate) fn context_file(state_dir: &Path, safe_name: &str) -> PathBuf {
    state_dir.join("context").join(format!("{safe_name}.json"))
}

/// The directory of every run's logs.
fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The directory of run `run`'s logs.
pub fn run_log_dir(state_dir: &Path, run: RunId) -> PathBuf {
    logs_dir(state_dir).join(run.to_string())
}

/// The log file of step `step` of run `run` (the step id as events name it: `CALL/ID`
/// inside a called workflow). The file name keeps ASCII letters, digits, `_` and `-` and
/// writes every other byte as `%XX`, so distinct ids never share a file (`x/y` is
/// `x%2Fy.log`, `x_y` is `x_y.log`) and no id can name a path outside the run's directory.
/// A name longer than 200 bytes is cut and ends in a hash of the whole id.
pub fn step_log_path(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    use std::fmt::Write as _;
    const LONGEST: usize = 200;
    let mut name = String::with_capacity(step.len() + 4);
    for b in step.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') {
            name.push(char::from(b));
        } else {
            let _ = write!(name, "%{b:02X}");
        }
    }
    if name.is_empty() {
        name.push('_');
    }
    if name.len() > LONGEST {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(step.as_bytes());
        name.truncate(LONGEST - 34);
        name.push('~');
        for b in &hash[..16] {
            let _ = write!(name, "{b:02x}");
        }
    }
    name.push_str(".log");
    run_log_dir(state_dir, run).join(name)
}

/// The file name earlier versions gave a step's log (every character outside ASCII letters,
/// digits, `_` and `-` became `_`, so `x/y` and `x_y` shared one file): read for runs
/// logged before the change.
fn legacy_step_log_path(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    let mut name: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    name.push_str(".log");
    run_log_dir(state_dir, run).join(name)
}

/// Where to read the log of `step`: [`step_log_path`], or the file an earlier version
/// wrote when only that one exists.
pub fn step_log_read_path(state_dir: &Path, run: RunId, step: &str) -> PathBuf {
    let path = step_log_path(state_dir, run, step);
    if !path.exists() {
        let legacy = legacy_step_log_path(state_dir, run, step);
        if legacy != path && legacy.exists() {
            return legacy;
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the layout other versions of the daemon and the CLI rely on.
    #[test]
    fn layout() {
        let d = Path::new("/s");
        assert_eq!(db_file(d), Path::new("/s/agent.sqlite3"));
        assert_eq!(token_file(d), Path::new("/s/api_token"));
        assert_eq!(addr_file(d), Path::new("/s/daemon.addr"));
        assert_eq!(lock_file(d), Path::new("/s/daemon.lock"));
        assert_eq!(workspace_dir(d, RunId(4)), Path::new("/s/workspaces/4"));
        assert_eq!(mirror_dir(d, "r"), Path::new("/s/mirrors/r.git"));
        assert_eq!(
            step_log_path(d, RunId(3), "a/b"),
            Path::new("/s/logs/3/a%2Fb.log")
        );
        assert_eq!(context_file(d, "w"), Path::new("/s/context/w.json"));
    }
}
