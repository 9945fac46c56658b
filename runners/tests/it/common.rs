//! Helpers shared by the runners integration tests: the misbehaving helper programs in
//! `tests/helpers/`, unique tags to find processes in `/proc`, and polling with deadlines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use runners::{Cancel, ProcessOutcome, StepCommand, Stream, run};

/// Path of a helper script in the workspace's `tests/helpers/`.
pub fn helper(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/helpers")
        .join(name);
    path.canonicalize()
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// A sleep duration no other process on the machine uses, like `300.4711000123`: processes
/// started with it can be found in `/proc` by their command line.
pub fn unique_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("300.{}{:03}", std::process::id(), n)
}

/// Pids of live (non-zombie) processes whose command line has the argument `arg`.
pub fn pids_with_arg(arg: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()) {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rfind(')')
                        .map(|i| s[i + 1..].trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if !zombie {
                out.push(pid);
            }
        }
    }
    out
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills leftovers of a failed test so they do not linger on the machine.
pub fn kill_tagged(tag: &str) {
    for pid in pids_with_arg(tag) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// What a finished process printed.
#[derive(Debug, Default)]
pub struct Captured {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Runs `cmd` collecting its lines.
pub async fn run_capture(cmd: StepCommand, cancel: Cancel) -> (ProcessOutcome, Captured) {
    run_capture_inner(cmd, cancel, |_| {}).await
}

/// Runs `cmd` collecting its lines, calling `seen` with each line as it arrives.
pub async fn run_capture_with(
    cmd: StepCommand,
    seen: impl FnMut(&str) + Send,
) -> (ProcessOutcome, Captured) {
    run_capture_inner(cmd, Cancel::new(), seen).await
}

async fn run_capture_inner(
    cmd: StepCommand,
    cancel: Cancel,
    mut seen: impl FnMut(&str) + Send,
) -> (ProcessOutcome, Captured) {
    let mut cap = Captured::default();
    let outcome = run(
        cmd,
        |stream, line| {
            seen(line);
            match stream {
                Stream::Stdout => cap.stdout.push(line.to_string()),
                Stream::Stderr => cap.stderr.push(line.to_string()),
            }
        },
        cancel,
    )
    .await
    .expect("run step");
    (outcome, cap)
}

/// Writes an executable file (mode 0755), creating its directory.
pub fn write_exec(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
