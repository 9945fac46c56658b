//! Helpers shared by the `agent` crate's integration tests.

pub mod backends;
pub mod git_daemon;
pub mod git_http;
pub mod mirror;
pub mod store_fixture;
pub mod test_cert;

use std::path::Path;
use std::process::Command;

/// Runs git in `dir` with a fixed identity and no user or system config.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The variable that tells a child of this test binary which test it runs alone.
const OWN_PROCESS: &str = "AGENT_TEST_OWN_PROCESS";

/// Runs `body` alone in a child process of this test binary, for a test that changes
/// process-wide state (environment variables, libgit2's CA file or network timeouts) which
/// the other tests of this binary, running on other threads of the same process, must not
/// see. `test` is the test's path as the harness names it (`module::function`).
///
/// In the test process this spawns the binary again with `--exact test`, waits, and fails
/// unless the child ran exactly that test and it passed; in the child it runs `body`.
pub fn in_own_process(test: &str, body: impl FnOnce()) {
    if std::env::var(OWN_PROCESS).as_deref() == Ok(test) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(OWN_PROCESS, test)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its own process failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
