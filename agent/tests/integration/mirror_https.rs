//! Mirrors over HTTPS: git's smart HTTP protocol behind TLS on 127.0.0.1, with a certificate
//! made for the test. Not trusted, the clone is refused with a certificate error; trusted
//! (libgit2's CA file pointed at it, as `SSL_CERT_FILE` does for the daemon), clone and
//! fetch work, with credentials. The test runs in its own process: libgit2 keeps the CA
//! location in a process-wide global, and the test sets an environment variable.

use crate::common;

use agent::config::Credentials;
use common::git_http::{GitHttpServer, Served, TestCert, commit_and_push};
use common::mirror::clone;

#[test]
fn https_remotes_verify_the_certificate_and_fetch_once_trusted() {
    common::in_own_process(
        "mirror_https::https_remotes_verify_the_certificate_and_fetch_once_trusted",
        || {
            let tmp = tempfile::tempdir().expect("tempdir");
            let state = tmp.path().join("state");
            let repo = Served::new(tmp.path());

            let cert = TestCert::generate();
            let secret = "s3cret-over-tls";
            let server = GitHttpServer::start_tls(&repo.root, &[("alice", secret)], &cert);
            let url = server.url("app.git");
            assert!(url.starts_with("https://127.0.0.1:"), "{url}");
            // SAFETY: this test runs alone in its own process (`common::in_own_process`); set
            // before any of its threads uses the environment through libc.
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
            let mut mirror =
                clone(&state, "app", &with_user, Some(credentials)).expect("clone over https");
            assert_eq!(
                mirror
                    .branch_head("main")
                    .expect("read branch")
                    .map(|o| o.to_string()),
                Some(repo.first.clone())
            );
            let second = commit_and_push(&repo.src, &repo.bare, "b.txt", "two\n");
            mirror.fetch().expect("fetch over https");
            assert_eq!(
                mirror
                    .branch_head("main")
                    .expect("read branch")
                    .map(|o| o.to_string()),
                Some(second)
            );
        },
    );
}
