//! Mirrors fetching over git's smart HTTP protocol behind HTTP Basic auth, with credentials
//! from environment variables: a std-only HTTP server on 127.0.0.1 checks `Authorization`
//! and runs `git http-backend` as a CGI for every authorised request.

use crate::common;
use common::git_http::{GitHttpServer, Served, commit_and_push};
use common::mirror::{bounded, clone};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use agent::config::Credentials;
use agent::daemon::{Mirror, MirrorError};

fn creds(user: Option<&str>, secret: &str) -> Credentials {
    Credentials {
        username_env: user.map(str::to_string),
        password_env: Some(secret.to_string()),
    }
}

/// Sets an environment variable of this test process.
fn set_env(name: &str, value: &str) {
    // SAFETY: the test runs alone in its own process (`common::in_own_process`) and sets its
    // (uniquely named) variables between mirror operations, while no other thread reads the
    // environment through libc: the server threads only spawn processes through
    // `std::process::Command`, which holds std's environment lock, and the bounded mirror
    // operations have finished.
    unsafe { std::env::set_var(name, value) };
}

/// Every scenario in one test, in order, so that setting variables never races a fetch; in
/// its own process, so that no other test's thread reads the environment meanwhile.
#[test]
fn fetches_with_credentials_from_the_environment_and_never_shows_them() {
    common::in_own_process(
        "mirror_credentials::fetches_with_credentials_from_the_environment_and_never_shows_them",
        || {
            let tmp = tempfile::tempdir().expect("tempdir");
            let state: PathBuf = tmp.path().join("state");
            let Served {
                src,
                root,
                bare,
                first,
            } = Served::new(tmp.path());

            let password = "pa55-correct-horse";
            let wrong = "wr0ng-battery-staple";
            let token = "t0ken-ghp-123456";
            let server = GitHttpServer::start(
                &root,
                &[
                    ("alice", password),
                    (agent::daemon::run::mirror::TOKEN_USERNAME, token),
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
            let mut mirror = bounded("fetch", move || mirror.fetch().map(|()| mirror))
                .expect("fetch with credentials");
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
            let mirror = clone(&state, "bytoken", &url, Some(creds(None, "MC_TEST_TOKEN")))
                .expect("token clone");
            assert_eq!(head(&mirror).as_deref(), Some(third.as_str()));
        },
    );
}
