//! Mirrors over HTTPS: git's smart HTTP protocol behind TLS on 127.0.0.1, with a certificate
//! made for the test. Not trusted, the clone is refused with a certificate error; trusted
//! (libgit2's CA file pointed at it, as `SSL_CERT_FILE` does for the daemon), clone and
//! fetch work, with credentials. One test in its own binary: libgit2 keeps the CA location
//! in a process-wide global.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use agent::daemon::config::Credentials;
use agent::daemon::{Mirror, MirrorError};
use common::git;
use common::git_http::{GitHttpServer, TestCert, commit_and_push};

/// How long one mirror operation may take before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(60);

fn clone(
    state: &Path,
    name: &str,
    url: &str,
    credentials: Option<Credentials>,
) -> Result<Mirror, MirrorError> {
    let what = format!("the clone of {name}");
    let (state, name, url) = (state.to_path_buf(), name.to_string(), url.to_string());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Mirror::open_or_clone_with(
            &state,
            &name,
            &url,
            credentials.as_ref(),
        ));
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

#[test]
fn https_remotes_verify_the_certificate_and_fetch_once_trusted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let root = tmp.path().join("root");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&src).expect("mkdir src");
    std::fs::create_dir_all(&root).expect("mkdir root");
    git(&src, &["init", "-q", "-b", "main"]);
    git(&root, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let bare = root.join("app.git");
    let first = commit_and_push(&src, &bare, "a.txt", "one\n");

    let cert = TestCert::generate();
    let secret = "s3cret-over-tls";
    let server = GitHttpServer::start_tls(&root, &[("alice", secret)], &cert);
    let url = server.url("app.git");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // SAFETY: set before any thread of this test process uses the environment through libc.
    unsafe { std::env::set_var("AGENT_TEST_HTTPS_PASSWORD", secret) };
    let credentials = Credentials {
        username_env: None,
        password_env: Some("AGENT_TEST_HTTPS_PASSWORD".to_string()),
    };
    let with_user = format!("https://alice@{}", url.trim_start_matches("https://"));

    // The system's CA store does not know the certificate: refused, with the reason.
    let err = clone(&state, "untrusted", &with_user, Some(credentials.clone()))
        .expect_err("an unknown certificate is refused");
    let text = err.to_string().to_lowercase();
    eprintln!("untrusted: {text}");
    assert!(text.contains("certificate"), "the error says why: {text}");
    assert!(!text.contains(secret), "{text}");
    assert_eq!(
        server
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request went through"
    );

    // Trusted: clone, then fetch a new commit.
    // SAFETY: no other thread uses libgit2 now (the clone above has returned).
    unsafe { git2::opts::set_ssl_cert_file(&cert.cert_file) }.expect("set the CA file");
    let mut mirror = clone(&state, "app", &with_user, Some(credentials)).expect("clone over https");
    assert_eq!(
        mirror
            .branch_head("main")
            .expect("read branch")
            .map(|o| o.to_string()),
        Some(first)
    );
    let second = commit_and_push(&src, &bare, "b.txt", "two\n");
    mirror.fetch().expect("fetch over https");
    assert_eq!(
        mirror
            .branch_head("main")
            .expect("read branch")
            .map(|o| o.to_string()),
        Some(second)
    );
}
