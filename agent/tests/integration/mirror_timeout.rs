//! A remote that accepts connections and then says nothing: with the network timeouts set,
//! cloning from it and fetching from it fail with a clear error instead of hanging. The test
//! runs in its own process: libgit2 keeps the timeouts in process-wide globals, and a 1 s
//! timeout would fail the other tests' fetches on a loaded machine.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

use agent::daemon::Mirror;
use agent::daemon::run::mirror::set_network_timeouts;
use common::mirror::bounded;

/// A TCP server on 127.0.0.1 that accepts every connection and never writes a byte.
struct SilentServer {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let accepted = accepted.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        // Kept open, unanswered, until the server stops.
                        Ok((conn, _)) => accepted.lock().expect("lock").push(conn),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        });
        SilentServer {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.accepted.lock().expect("lock").len()
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_silent_remote_fails_the_clone_and_the_fetch_instead_of_hanging() {
    common::in_own_process(
        "mirror_timeout::a_silent_remote_fails_the_clone_and_the_fetch_instead_of_hanging",
        || {
            set_network_timeouts(Duration::from_secs(1)).expect("set the timeouts");
            let server = SilentServer::start();
            let state = tempfile::tempdir().expect("tempdir");
            let url = format!("git://127.0.0.1:{}/silent.git", server.port);

            // Clone.
            let started = Instant::now();
            let (dir, u) = (state.path().to_path_buf(), url.clone());
            let err = bounded("the clone", move || {
                Mirror::open_or_clone_with(&dir, "silent", &u, None).map(|_| ())
            })
            .expect_err("a silent remote cannot be cloned");
            let text = err.to_string();
            assert!(text.contains(&url), "the error names the remote: {text}");
            assert!(
                text.to_lowercase().contains("timed out")
                    || text.to_lowercase().contains("timeout"),
                "the error says it timed out: {text}"
            );
            assert!(server.connections() >= 1, "the clone connected");
            eprintln!("clone failed after {:?}: {text}", started.elapsed());

            // Fetch into an existing mirror whose remote went silent.
            let good = tempfile::tempdir().expect("tempdir");
            let src = good.path().join("src");
            std::fs::create_dir(&src).expect("mkdir");
            let git = |args: &[&str]| {
                let out = std::process::Command::new("git")
                    .args(args)
                    .current_dir(&src)
                    .env("GIT_AUTHOR_NAME", "t")
                    .env("GIT_AUTHOR_EMAIL", "t@example.com")
                    .env("GIT_COMMITTER_NAME", "t")
                    .env("GIT_COMMITTER_EMAIL", "t@example.com")
                    .output()
                    .expect("run git");
                assert!(out.status.success(), "git {args:?}: {out:?}");
            };
            git(&["init", "-q", "-b", "main"]);
            std::fs::write(src.join("a.txt"), "a").expect("write");
            git(&["add", "."]);
            git(&["commit", "-q", "-m", "a"]);
            let file_url = format!("file://{}", src.display());
            let mut mirror =
                Mirror::open_or_clone_with(state.path(), "moved", &file_url, None).expect("clone");
            drop(mirror);
            let mirror_git = Mirror::path_for(state.path(), "moved");
            let out = std::process::Command::new("git")
                .args(["remote", "set-url", "origin", &url])
                .current_dir(&mirror_git)
                .output()
                .expect("git remote set-url");
            assert!(out.status.success(), "{out:?}");
            mirror = Mirror::open_or_clone_with(state.path(), "moved", &url, None).expect("open");
            let before = server.connections();
            let started = Instant::now();
            let err = bounded("the fetch", move || mirror.fetch())
                .expect_err("a silent remote cannot be fetched");
            let text = err.to_string();
            assert!(
                text.to_lowercase().contains("timed out")
                    || text.to_lowercase().contains("timeout"),
                "the error says it timed out: {text}"
            );
            assert!(server.connections() > before, "the fetch connected");
            eprintln!("fetch failed after {:?}: {text}", started.elapsed());
        },
    );
}
