//! Webhook deliveries over HTTPS, to a TLS receiver on 127.0.0.1 with a certificate made for
//! the test: trusted (through `SSL_CERT_FILE`, which OpenSSL reads for its default CA file)
//! the delivery arrives; not trusted, the handshake is refused, nothing reaches the receiver
//! and the attempt's error says why: certificates are verified.

use crate::common;
use crate::common::notify;

use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, yaml_quote};
use notify::{Receiver, TestCert};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

const WORKFLOW: &str = "workflow:\n  name: ok\n  stages:\n    - name: main\n      steps:\n        - id: hello\n          run: echo hello\n";

fn config(repo: &std::path::Path, url: &str) -> String {
    format!(
        "repos:\n  - name: app\n    path: {}\nwebhooks:\n  - name: tls\n    url: {url}\n    \
         events: [run.succeeded]\n    retry: {{initial_delay: 100ms, max_delay: 200ms}}\n",
        yaml_quote(&repo.to_string_lossy())
    )
}

/// Triggers `ok` and waits for the run to succeed.
fn run_ok(d: &TestDaemon) {
    let (code, text) = d.post("/api/v1/workflows/ok/runs", "{}");
    assert_eq!(code, 202, "{text}\n{}", d.log_text());
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let id = v["run_id"].as_str().expect("run id");
    assert_eq!(d.wait_run_final(id, LIMIT)["status"], "succeeded");
}

/// Polls the webhook's newest delivery until `done` holds.
fn wait_delivery(d: &TestDaemon, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let v = d.get_json("/api/v1/deliveries?webhook=tls");
        if let Some(del) = v["deliveries"].as_array().and_then(|a| a.first())
            && done(del)
        {
            return del.clone();
        }
        assert!(
            Instant::now() < deadline,
            "delivery not done: {v:#}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn https_deliveries_arrive_and_verify_the_certificate() {
    let cert = TestCert::generate();
    let receiver = Receiver::start_tls(&cert, vec![]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/ok.yaml", WORKFLOW)]);
    let url = receiver.url("/hook");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Trusted: delivered over TLS.
    let cert_file = cert.cert_file.to_string_lossy().into_owned();
    let d = TestDaemon::start_with_env(
        &tmp.path().join("trusting"),
        &config(&repo, &url),
        &[("SSL_CERT_FILE", &cert_file)],
    );
    run_ok(&d);
    let del = wait_delivery(&d, |del| del["status"] == "delivered");
    assert_eq!(del["attempts"], 1, "{del:#}");
    let got = receiver.wait_for(1, LIMIT);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].json()["event"], "run.succeeded", "{}", got[0].text());
    drop(d);

    // Not trusted (the system's CA file only): refused before any byte of HTTP is sent.
    let d = TestDaemon::start(&tmp.path().join("default"), &config(&repo, &url));
    run_ok(&d);
    let del = wait_delivery(&d, |del| {
        del["attempts"].as_u64().is_some_and(|n| n >= 1) && !del["last_error"].is_null()
    });
    assert_ne!(del["status"], "delivered", "{del:#}");
    let error = del["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    eprintln!("untrusted receiver: {error}");
    assert!(
        error.contains("certificate") || error.contains("tls") || error.contains("ssl"),
        "the error names the TLS failure: {del:#}"
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing more reached the receiver"
    );
}
