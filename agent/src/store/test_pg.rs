//! A throwaway PostgreSQL server for tests of the PostgreSQL store and of fleets.
//!
//! [`database_url`] answers the URL of a new, empty database on a test server:
//! - the server `AGENT_TEST_PG_URL` names (a URL of a database on it the tests may use to
//!   create others, e.g. `postgres://postgres@127.0.0.1:5433/postgres`), as `.ci/run` sets it;
//! - otherwise a private cluster this process starts once: `initdb` (trust authentication,
//!   no password) into a temporary directory, then the server on a free port of 127.0.0.1.
//!   Its binaries are found on `PATH` or under `/usr/lib/postgresql/<version>/bin` (Debian's
//!   `postgresql` package). As root, the cluster runs as the `postgres` user (the server
//!   refuses root). The server is started under a `sh` that holds a pipe from this process:
//!   when the test process exits, however it exits, the pipe closes and the shell stops the
//!   server and removes its directory.
//!
//! [`Cluster::start`] starts a cluster of its own that a test may stop and start again (the
//! database going away and coming back).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable naming a test server to use instead of starting one.
pub(crate) const URL_VAR: &str = "AGENT_TEST_PG_URL";

/// The URL of a new, empty database on the test server (see the module's doc). Panics with a
/// precise message when no server can be had: a test that needs PostgreSQL cannot run without.
pub fn database_url() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = SERVER.get_or_init(|| match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let cluster = Cluster::start().unwrap_or_else(|e| {
                panic!("cannot start a PostgreSQL server for the tests ({e}); install Debian's `postgresql` or set {URL_VAR}")
            });
            let url = cluster.url("postgres");
            // Lives as long as the process; its pipe stops the server when the process ends.
            std::mem::forget(cluster);
            url
        }
    });
    let name = format!(
        "agent_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    create_database(base, &name).unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    with_database(base, &name)
}

/// Creates database `name` on the server of `base_url`.
pub(crate) fn create_database(base_url: &str, name: &str) -> Result<(), String> {
    let mut client =
        postgres::Client::connect(base_url, postgres::NoTls).map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| e.to_string())
}

/// `base_url` with its database replaced by `name`.
pub(crate) fn with_database(base_url: &str, name: &str) -> String {
    let (head, query) = match base_url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base_url, None),
    };
    // postgres://user@host:port/db: the database is what follows the authority's slash.
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let head = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{head}/{name}?{q}"),
        None => format!("{head}/{name}"),
    }
}

/// A PostgreSQL cluster of this process, in a temporary directory.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    user: Option<String>,
    /// The shell that runs the server; closing its stdin stops the server.
    guard: Mutex<Option<Child>>,
}

impl Cluster {
    /// Creates a cluster in a new temporary directory and starts its server.
    pub fn start() -> Result<Cluster, String> {
        let bin = pg_bin_dir().ok_or("no `initdb` on PATH or under /usr/lib/postgresql")?;
        let user = if is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "agent-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(user) = &user {
            let status = Command::new("chown")
                .arg(user)
                .arg(&dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown {user} {} failed", dir.display()));
            }
        }
        let data = dir.join("data");
        let out = as_user(&user, &bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port()?;
        let cluster = Cluster {
            dir,
            bin,
            port,
            user,
            guard: Mutex::new(None),
        };
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) -> Result<(), String> {
        let mut guard = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_some() {
            return Ok(());
        }
        let postgres = self.bin.join("postgres");
        let data = self.dir.join("data");
        // The shell starts the server, then waits for a line on its stdin (`stop_server`) or
        // its end (this process ended), then stops the server and waits for it; at the end
        // of the process it also removes the cluster's directory.
        let script = r#"
"$@" &
pid=$!
if read -r _; then gone=no; else gone=yes; fi
kill -INT "$pid" 2>/dev/null
wait "$pid"
if [ "$gone" = yes ]; then rm -rf "$AGENT_PG_DIR"; fi
"#;
        let mut cmd = as_user(&self.user, Path::new("sh"));
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&postgres)
            .arg("-D")
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args(["-c", "max_connections=300", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .arg("-p")
            .arg(self.port.to_string())
            .env("AGENT_PG_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("postgres: {e}"))?;
        *guard = Some(child);
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = self.url("postgres");
        loop {
            match postgres::Client::connect(&url, postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the test server did not start: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Stops the server (fast shutdown: connections are closed) and waits until it is gone.
    pub fn stop_server(&self) {
        let child = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command that runs `program` as `user` when one is given (through `runuser`).
fn as_user(user: &Option<String>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The directory of `initdb` and `postgres`.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// A port of 127.0.0.1 nobody listens on now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
