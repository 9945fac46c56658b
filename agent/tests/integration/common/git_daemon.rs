//! `git daemon` serving a directory on 127.0.0.1 for tests, in its own process group so that
//! dropping it ends the whole server: `git daemon` runs `git-daemon` as a child, which a kill
//! of the `git` process alone would leave running. Shared by the `agent` crate's tests and
//! the end-to-end tests (which include this file by path).
#![allow(dead_code, reason = "the end-to-end tests use only part of it")]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `git daemon --export-all` of `base` on 127.0.0.1.
pub struct GitDaemon {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl GitDaemon {
    /// Serves every repository under `base` (`git://127.0.0.1:PORT/NAME`); returns once it
    /// accepts connections.
    pub fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("git")
            .arg("daemon")
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn git daemon");
        let mut daemon = GitDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                daemon.stop();
                panic!("git daemon did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// Ends the server's whole process group and reaps its leader.
    fn stop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id())
            && pgid > 1
        {
            // SAFETY: kill(2) on the process group this helper created (led by our child,
            // which is not reaped yet, so the id cannot have been reused).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}
