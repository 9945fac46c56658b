//! Mirrors fetching over git's smart HTTP protocol behind HTTP Basic auth, with credentials
//! from environment variables: a std-only HTTP server on 127.0.0.1 checks `Authorization`
//! and runs `git http-backend` as a CGI for every authorised request.

mod common;
use common::git;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use agent::daemon::config::Credentials;
use agent::daemon::{Mirror, MirrorError};
use base64::Engine as _;

/// How long any one mirror operation may take before the test fails.
const BOUND: Duration = Duration::from_secs(60);

/// Commits a file in the work tree `src` and pushes it to the bare `remote`; returns the id.
fn commit_and_push(src: &Path, remote: &Path, file: &str, text: &str) -> String {
    std::fs::write(src.join(file), text).expect("write file");
    git(src, &["add", "."]);
    git(src, &["commit", "-q", "-m", &format!("add {file}")]);
    let remote = remote.to_string_lossy();
    git(src, &["push", "-q", &remote, "main"]);
    git(src, &["rev-parse", "HEAD"])
}

/// A git smart-HTTP server behind Basic auth, serving the bare repositories under `root`.
struct GitHttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Requests answered 401 (no or wrong `Authorization`).
    unauthorized: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves `root`, accepting each `user:password` of `accepted`.
    fn start(root: &Path, accepted: &[(&str, &str)]) -> GitHttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let accepted: Arc<Vec<String>> = Arc::new(
            accepted
                .iter()
                .map(|(u, p)| {
                    let encoded =
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                    format!("Basic {encoded}")
                })
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let unauthorized = Arc::new(AtomicUsize::new(0));
        let root = root.to_path_buf();
        let thread = {
            let stop = stop.clone();
            let unauthorized = unauthorized.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let root = root.clone();
                    let accepted = accepted.clone();
                    let unauthorized = unauthorized.clone();
                    std::thread::spawn(move || {
                        // A broken connection only fails the client's request.
                        let _ = serve(stream, &root, &accepted, &unauthorized);
                    });
                }
            })
        };
        GitHttpServer {
            port,
            stop,
            unauthorized,
            thread: Some(thread),
        }
    }

    fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request: parsed, checked, answered (401 or the CGI's response), connection closed.
fn serve(
    stream: TcpStream,
    root: &Path,
    accepted: &[String],
    unauthorized: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            break;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let mut stream = stream;
    let authorized = header("authorization").is_some_and(|a| accepted.contains(&a));
    if !authorized {
        unauthorized.fetch_add(1, Ordering::SeqCst);
        stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return stream.flush();
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    // CGI response: headers (with an optional `Status:`), a blank line, the body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let (head, cgi_body) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&out.stdout[..i]).into_owned(),
            &out.stdout[i + n..],
        ),
        None => (String::new(), &out.stdout[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in head.lines() {
        let line = line.trim_end();
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => {
                response_headers.push_str(line);
                response_headers.push_str("\r\n");
            }
            None => {}
        }
    }
    let response = format!(
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.write_all(cgi_body)?;
    stream.flush()
}

/// Runs `f` on its own thread and fails the test if it takes longer than [`BOUND`] (libgit2
/// asking for credentials forever would otherwise hang the suite).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

fn creds(user: Option<&str>, secret: &str) -> Credentials {
    Credentials {
        username_env: user.map(str::to_string),
        password_env: Some(secret.to_string()),
    }
}

fn clone(
    state: &Path,
    name: &str,
    url: &str,
    credentials: Option<Credentials>,
) -> Result<Mirror, MirrorError> {
    let (state, name, url) = (state.to_path_buf(), name.to_string(), url.to_string());
    bounded("clone", move || {
        Mirror::open_or_clone_with(&state, &name, &url, credentials.as_ref())
    })
}

/// Sets an environment variable of this test process.
fn set_env(name: &str, value: &str) {
    // SAFETY: the one test of this binary sets its (uniquely named) variables between mirror
    // operations, while no other thread reads the environment through libc: the server
    // threads only spawn processes through `std::process::Command`, which holds std's
    // environment lock, and the bounded mirror operations have finished.
    unsafe { std::env::set_var(name, value) };
}

/// Every scenario in one test, in order, so that setting variables never races a fetch.
#[test]
fn fetches_with_credentials_from_the_environment_and_never_shows_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let root = tmp.path().join("root");
    let state: PathBuf = tmp.path().join("state");
    std::fs::create_dir_all(&src).expect("mkdir src");
    std::fs::create_dir_all(&root).expect("mkdir root");
    git(&src, &["init", "-q", "-b", "main"]);
    git(&root, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let bare = root.join("app.git");
    let first = commit_and_push(&src, &bare, "a.txt", "one\n");

    let password = "pa55-correct-horse";
    let wrong = "wr0ng-battery-staple";
    let token = "t0ken-ghp-123456";
    let server = GitHttpServer::start(
        &root,
        &[
            ("alice", password),
            (agent::daemon::mirror::TOKEN_USERNAME, token),
        ],
    );
    let url = server.url("app.git");

    // No credentials configured: libgit2 cannot answer the 401.
    let err = clone(&state, "anon", &url, None).expect_err("anonymous clone must fail");
    assert!(err.to_string().contains(&url), "{err}");

    // A variable that is not set: the error names it.
    set_env("MC_TEST_USER", "alice");
    let err = clone(
        &state,
        "missing",
        &url,
        Some(creds(Some("MC_TEST_USER"), "MC_TEST_UNSET_SECRET")),
    )
    .expect_err("a missing variable must fail");
    let text = err.to_string();
    assert!(
        matches!(&err, MirrorError::MissingCredential { variable, .. } if variable == "MC_TEST_UNSET_SECRET"),
        "{err:?}"
    );
    assert!(text.contains("`MC_TEST_UNSET_SECRET`"), "{text}");
    assert!(!state.join("mirrors/missing.git").exists());

    // A wrong password: rejected after a couple of tries, and never shown.
    set_env("MC_TEST_PASSWORD", wrong);
    let before = server.unauthorized.load(Ordering::SeqCst);
    let err = clone(
        &state,
        "wrong",
        &url,
        Some(creds(Some("MC_TEST_USER"), "MC_TEST_PASSWORD")),
    )
    .expect_err("a wrong password must fail");
    let asked = server.unauthorized.load(Ordering::SeqCst) - before;
    assert!(
        matches!(err, MirrorError::CredentialsRejected { .. }),
        "{err:?}"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(wrong), "the password leaked: {shown}");
        assert!(shown.contains("MC_TEST_PASSWORD"), "{shown}");
    }
    assert!((2..=4).contains(&asked), "{asked} unauthorised requests");

    // The right password, read at fetch time: clone, then fetch a new commit.
    set_env("MC_TEST_PASSWORD", password);
    let mut mirror = clone(
        &state,
        "app",
        &url,
        Some(creds(Some("MC_TEST_USER"), "MC_TEST_PASSWORD")),
    )
    .expect("clone with credentials");
    assert_eq!(mirror.default_branch().as_deref(), Some("main"));
    let head = |m: &Mirror| m.branch_head("main").expect("head").map(|o| o.to_string());
    assert_eq!(head(&mirror).as_deref(), Some(first.as_str()));
    assert!(!format!("{mirror:?}").contains(password));
    let second = commit_and_push(&src, &bare, "b.txt", "two\n");
    let mut mirror =
        bounded("fetch", move || mirror.fetch().map(|()| mirror)).expect("fetch with credentials");
    assert_eq!(head(&mirror).as_deref(), Some(second.as_str()));

    // A re-opened mirror (as runs open it) fetches with the credentials it is given, read
    // again at each fetch: a rotated-away password fails, without showing it.
    let third = commit_and_push(&src, &bare, "c.txt", "three\n");
    set_env("MC_TEST_PASSWORD", wrong);
    let err = bounded("fetch", move || mirror.fetch()).expect_err("stale password");
    assert!(!err.to_string().contains(wrong), "{err}");
    set_env("MC_TEST_PASSWORD", password);
    let reopened = Mirror::open(&state, "app")
        .expect("open")
        .with_credentials(Some(creds(Some("MC_TEST_USER"), "MC_TEST_PASSWORD")));
    let reopened = bounded("fetch", move || {
        let mut m = reopened;
        m.fetch().map(|()| m)
    })
    .expect("fetch after reopening");
    assert_eq!(head(&reopened).as_deref(), Some(third.as_str()));

    // A token alone goes with the user `x-access-token`.
    set_env("MC_TEST_TOKEN", token);
    let mirror =
        clone(&state, "bytoken", &url, Some(creds(None, "MC_TEST_TOKEN"))).expect("token clone");
    assert_eq!(head(&mirror).as_deref(), Some(third.as_str()));
}
