//! A real `agent daemon` process for end-to-end tests: writes a config into a temp directory
//! (state dir beside it, `listen: 127.0.0.1:0`, a known API token), starts the binary, learns
//! the bound address from `state_dir/daemon.addr`, waits for `/health` with a deadline, and
//! kills the process by its PID when dropped. Also a tiny HTTP/1.1 client (std only) for the
//! API, and git helpers for test repositories.
//!
//! ```ignore
//! let d = TestDaemon::start(&root, "repos:\n  - name: app\n    path: /tmp/app\n");
//! let (status, body) = d.get("/api/v1/runs");
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The API token every test daemon uses.
pub const TEST_TOKEN: &str = "test-token";

/// How long a daemon may take to answer `/health` after it was started.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running daemon; killed (SIGKILL, by PID) on drop.
pub struct TestDaemon {
    child: Option<Child>,
    /// The directory holding `agent.yaml`, `state/` and `daemon.log`.
    pub root: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Where the daemon's stderr goes (appended across restarts).
    pub log: PathBuf,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Extra environment for the process.
    env: Vec<(String, String)>,
}

impl TestDaemon {
    /// Writes `root/agent.yaml` (state dir `root/state`, a free port, the test token, then
    /// `extra_config` verbatim: top-level YAML keys such as `repos:` or `limits:`) and starts
    /// the daemon on it.
    pub fn start(root: &Path, extra_config: &str) -> TestDaemon {
        TestDaemon::start_with_env(root, extra_config, &[])
    }

    /// Like [`TestDaemon::start`], with extra environment variables for the daemon.
    pub fn start_with_env(root: &Path, extra_config: &str, env: &[(&str, &str)]) -> TestDaemon {
        std::fs::create_dir_all(root).expect("create daemon root");
        let state_dir = root.join("state");
        let config = root.join("agent.yaml");
        let text = format!(
            "state_dir: {}\nlisten: 127.0.0.1:0\napi_token: {TEST_TOKEN}\n{extra_config}",
            yaml_quote(&state_dir.to_string_lossy())
        );
        std::fs::write(&config, text).expect("write daemon config");
        let mut d = TestDaemon {
            child: None,
            root: root.to_path_buf(),
            config,
            state_dir,
            log: root.join("daemon.log"),
            addr: "127.0.0.1:0".parse().expect("address"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.boot();
        d
    }

    /// Starts the process (again) on the same config and state, and waits for `/health`.
    pub fn boot(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let addr_file = self.state_dir.join("daemon.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mut cmd = Command::new(super::agent_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn agent daemon");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "agent daemon exited early with {status}:\n{}",
                    self.log_text()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                self.addr = addr;
                if let Ok((200, _)) = self.try_request("GET", "/health", None) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent daemon did not answer /health within {START_DEADLINE:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the daemon wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// SIGKILL (by PID) and reap; the state stays for [`TestDaemon::boot`].
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (by PID) and waits for the exit with a deadline.
    pub fn signal_and_wait(&mut self, signal: i32, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let pid = i32::try_from(child.id()).expect("pid fits");
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for daemon") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let log = self.log_text();
                self.kill9();
                panic!("daemon did not exit within {limit:?} after signal {signal}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` with the token: (status, body). Panics when the daemon does not answer.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body and the token.
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.request("POST", path, Some(body))
    }

    /// GET a JSON document; panics unless the status is 200.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// A request with the token; panics when the daemon does not answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_text()))
    }

    /// A request with the token.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        http_request(self.addr, method, path, Some(TEST_TOKEN), body)
    }

    /// Polls `GET /api/v1/runs/{id}` until its status is final (`succeeded`, `failed`,
    /// `cancelled`) or `limit` passes; returns the run.
    pub fn wait_run_final(&self, run_id: &str, limit: Duration) -> serde_json::Value {
        self.wait_run(run_id, limit, |s| {
            matches!(s, "succeeded" | "failed" | "cancelled")
        })
    }

    /// Polls a run until `done(status)`.
    pub fn wait_run(
        &self,
        run_id: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let (code, body) = self.get(&format!("/api/v1/runs/{run_id}"));
            if code == 200 {
                let run: serde_json::Value = serde_json::from_str(&body).expect("JSON run");
                if done(run["status"].as_str().unwrap_or_default()) {
                    return run;
                }
                assert!(
                    Instant::now() < deadline,
                    "run {run_id} still {} after {limit:?}:\n{body}\n{}",
                    run["status"],
                    self.log_text()
                );
            } else {
                assert!(Instant::now() < deadline, "run {run_id}: {code} {body}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Quotes a string for YAML (single quotes).
pub fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other(format!("bad HTTP answer: {text:?}")));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs git with `args` in `dir`; panics on failure. Returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes a git repository at `dir` on branch `main` with `files` (path, content) committed.
pub fn init_repo(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("create repo dir");
    git(dir, &["init", "-q", "-b", "main"]);
    commit_files(dir, files, "initial");
}

/// Writes `files` into the repository at `dir` and commits them; returns the commit id.
pub fn commit_files(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, content) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dirs");
        }
        std::fs::write(&p, content).expect("write file");
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// A temp dir, the path of the repository to make in it (`repo/`), and an empty `out/`
/// (outside every workspace) where a test's steps leave their side effects.
pub fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    (tmp, repo, out)
}

/// Polls `cond` every 10 ms until it holds; fails the test after `limit`, naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The run id of an API answer (`{"run_id": …}`), as text whatever its JSON type.
pub fn run_id(v: &serde_json::Value) -> String {
    match &v["run_id"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Triggers `workflow` through the API with the body `{}`; returns the run id.
pub fn trigger(d: &TestDaemon, workflow: &str) -> String {
    trigger_with(d, workflow, "{}")
}

/// Triggers `workflow` through the API with a request body; asserts 202, returns the run id.
pub fn trigger_with(d: &TestDaemon, workflow: &str, body: &str) -> String {
    let (code, text) = d.post(&format!("/api/v1/workflows/{workflow}/runs"), body);
    assert_eq!(code, 202, "trigger {workflow}: {text}\n{}", d.log_text());
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("trigger {workflow}: not JSON ({e}): {text}"));
    run_id(&v)
}

/// The `repos:` section of a daemon config with one repository `name` at a local `path`.
pub fn repo_config(name: &str, path: &Path) -> String {
    format!(
        "repos:\n  - name: {name}\n    path: {}\n",
        yaml_quote(&path.to_string_lossy())
    )
}

/// The lines of a file a step appends to (none while it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many lines a file a step appends to has (0 while it does not exist).
pub fn count_lines(path: &Path) -> usize {
    lines(path).len()
}
