//! Shared helpers for the end-to-end tests: locate (and build once) the `agent` binary, run
//! it with a deadline, and poll for conditions without fixed sleeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives inside the workspace")
        .to_path_buf()
}

/// Path to the `agent` binary, built once per test process with the same cargo and profile.
pub fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "agent", "--bin", "agent"])
            .current_dir(&root)
            .status()
            .expect("run cargo build for the agent binary");
        assert!(status.success(), "cargo build -p agent failed");
        let bin = target.join("debug").join("agent");
        assert!(bin.exists(), "agent binary not found at {}", bin.display());
        bin
    })
}

/// A command for the `agent` binary with the given arguments.
pub fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Runs a command to completion, killing it after `limit`. Panics (test failure) on timeout.
pub fn run_with_deadline(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn command");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for command"),
        Err(_) => {
            // Only the child we started, by its PID.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Polls `cond` until it returns `Some` or the deadline passes.
pub fn poll<T>(limit: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
pub mod daemon;
pub mod exec;
pub mod notify;
pub mod webdriver;
