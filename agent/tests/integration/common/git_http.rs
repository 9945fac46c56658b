//! A git smart-HTTP server for the mirror tests: std only, on 127.0.0.1, over plain HTTP or
//! TLS (a certificate made per test by the `openssl` tool), checking HTTP Basic auth and
//! running `git http-backend` as a CGI for every authorised request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;

use super::git;
pub use super::test_cert::TestCert;

/// Commits a file in the work tree `src` and pushes it to the bare `remote`; returns the id.
pub fn commit_and_push(src: &Path, remote: &Path, file: &str, text: &str) -> String {
    std::fs::write(src.join(file), text).expect("write file");
    git(src, &["add", "."]);
    git(src, &["commit", "-q", "-m", &format!("add {file}")]);
    let remote = remote.to_string_lossy();
    git(src, &["push", "-q", &remote, "main"]);
    git(src, &["rev-parse", "HEAD"])
}

/// A work tree and a bare repository to serve, under `base`.
pub struct Served {
    /// The work tree commits are made in (`commit_and_push` pushes them to `bare`).
    pub src: PathBuf,
    /// The directory served: it holds `app.git`.
    pub root: PathBuf,
    /// `root/app.git`.
    pub bare: PathBuf,
    /// The first commit, already pushed.
    pub first: String,
}

impl Served {
    /// Makes `src` and `root/app.git` under `base`, and pushes a first commit.
    pub fn new(base: &Path) -> Served {
        let src = base.join("src");
        let root = base.join("root");
        std::fs::create_dir_all(&src).expect("mkdir src");
        std::fs::create_dir_all(&root).expect("mkdir root");
        git(&src, &["init", "-q", "-b", "main"]);
        git(&root, &["init", "-q", "--bare", "-b", "main", "app.git"]);
        let bare = root.join("app.git");
        let first = commit_and_push(&src, &bare, "a.txt", "one\n");
        Served {
            src,
            root,
            bare,
            first,
        }
    }
}

/// A git smart-HTTP server behind Basic auth, serving the bare repositories under `root`.
pub struct GitHttpServer {
    port: u16,
    tls: bool,
    stop: Arc<AtomicBool>,
    /// Requests answered 401 (no or wrong `Authorization`).
    pub unauthorized: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves `root`, accepting each `user:password` of `accepted`.
    pub fn start(root: &Path, accepted: &[(&str, &str)]) -> GitHttpServer {
        GitHttpServer::listen(root, accepted, None)
    }

    /// Like [`GitHttpServer::start`], over TLS with `cert` (`https://` URLs).
    pub fn start_tls(root: &Path, accepted: &[(&str, &str)], cert: &TestCert) -> GitHttpServer {
        let acceptor = cert.acceptor();
        GitHttpServer::listen(root, accepted, Some(Arc::new(acceptor)))
    }

    fn listen(
        root: &Path,
        accepted: &[(&str, &str)],
        tls: Option<Arc<native_tls::TlsAcceptor>>,
    ) -> GitHttpServer {
        let is_tls = tls.is_some();
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
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        // A broken connection (or a refused handshake) only fails the
                        // client's request.
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
                        match tls {
                            Some(acceptor) => {
                                if let Ok(tls_stream) = acceptor.accept(stream) {
                                    let _ = serve(tls_stream, &root, &accepted, &unauthorized);
                                }
                            }
                            None => {
                                let _ = serve(stream, &root, &accepted, &unauthorized);
                            }
                        }
                    });
                }
            })
        };
        GitHttpServer {
            port,
            tls: is_tls,
            stop,
            unauthorized,
            thread: Some(thread),
        }
    }

    /// The URL of the repository `repo` under the served root.
    pub fn url(&self, repo: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{repo}", self.port)
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
fn serve<S: Read + Write>(
    mut stream: S,
    root: &Path,
    accepted: &[String],
    unauthorized: &AtomicUsize,
) -> std::io::Result<()> {
    // One request per connection: what the reader buffers past it is never needed.
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        // Closed without a request (a client that refused our certificate, for one).
        return Ok(());
    }
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
    drop(reader);
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
