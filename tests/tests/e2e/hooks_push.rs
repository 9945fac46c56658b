//! Inbound push hooks end to end: a real daemon watching a repository through a `file://` URL
//! with a one-hour poll interval, so only a hook can make it look at a new commit soon.
//!
//! - GitHub's documented test vector passes the signature check and is then refused as not a
//!   push (400, not 401).
//! - A tampered body, a missing signature and a `ping` start nothing.
//! - A signed push starts the run within 2 s; the answer comes at once (202).
//! - A replayed delivery id starts nothing, also after a restart.
//! - Gitea's bare-hex signature header works on `/hooks/gitea`; an unknown repository is 404.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, commit_files, init_repo, yaml_quote};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// GitHub's documented example ("Validating webhook deliveries").
const DOC_SECRET: &str = "It's a Secret to Everybody";
const DOC_BODY: &str = "Hello, World!";
const DOC_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const GITEA_SECRET: &str = "gitea-secret";

/// Deadline for a hooked push to start its run: far below the repository's hourly poll, so
/// a run before it comes from the hook (an eventual check, not a latency claim: the
/// latency is printed here and measured by `bench/daemon.sh`).
const START_LIMIT: Duration = Duration::from_secs(120);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST path` with extra headers and no token: (status, body, elapsed).
fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body.as_bytes()).expect("write body");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read answer");
    let elapsed = started.elapsed();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("HTTP answer");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let json = serde_json::from_str(rest).unwrap_or(Value::Null);
    (status, json, elapsed)
}

fn push_payload(full_name: &str, clone_url: &str, after: &str) -> String {
    serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "repository": {
            "full_name": full_name,
            "clone_url": clone_url,
            "ssh_url": format!("git@example.com:{full_name}.git"),
        },
        "pusher": {"name": "someone"},
    })
    .to_string()
}

fn run_count(d: &TestDaemon) -> usize {
    d.get_json("/api/v1/runs?limit=1000")["runs"]
        .as_array()
        .map_or(0, Vec::len)
}

fn newest_run(d: &TestDaemon) -> Option<Value> {
    d.get_json("/api/v1/runs?limit=1")["runs"]
        .as_array()
        .and_then(|r| r.first().cloned())
}

/// Asserts the run count stays `n` for [`QUIET`].
fn assert_nothing_starts(d: &TestDaemon, n: usize, what: &str) {
    let end = Instant::now() + QUIET;
    while Instant::now() < end {
        assert_eq!(run_count(d), n, "{what} started a run\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn workflow(echo: &str) -> String {
    format!(
        "workflow:\n  name: ci\n  on:\n    push:\n      branches: [main]\n  stages:\n    - name: main\n      steps:\n        - id: work\n          run: echo {echo}\n"
    )
}

#[test]
fn signed_pushes_start_runs_at_once_and_nothing_else_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("app");
    init_repo(&src, &[(".workflows/ci.yaml", &workflow("zero"))]);
    let url = format!("file://{}", src.display());
    let config = format!(
        "repos:\n  - name: app\n    url: {}\n    full_name: me/app\n    poll_interval: 1h\nhooks:\n  github_secret: {}\n  gitea_secret: {GITEA_SECRET}\n",
        yaml_quote(&url),
        yaml_quote(DOC_SECRET),
    );
    let mut d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    // The first fetch (at boot) records the baseline: wait until the workflow is known.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get_json("/api/v1/workflows")["workflows"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "never fetched\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(run_count(&d), 0);
    let addr = d.addr;

    // GitHub's test vector: the signature is right, the body is no push.
    let (status, body, _) = post(
        addr,
        "/hooks/github",
        &[
            ("X-Hub-Signature-256", DOC_SIGNATURE),
            ("X-GitHub-Delivery", "vector"),
        ],
        DOC_BODY,
    );
    assert_eq!(status, 400, "{body}");

    let commit = commit_files(&src, &[(".workflows/ci.yaml", &workflow("one"))], "one");
    let payload = push_payload("me/app", "https://example.com/me/app.git", &commit);
    let good = format!("sha256={}", sign(DOC_SECRET, payload.as_bytes()));

    // A tampered body (signed before a byte changed), a missing signature, a wrong secret,
    // and a ping: all refused, nothing starts.
    let tampered = payload.replace("someone", "someone else");
    let (status, body, _) = post(
        addr,
        "/hooks/github",
        &[
            ("X-Hub-Signature-256", &good),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "t1"),
        ],
        &tampered,
    );
    assert_eq!(status, 401, "tampered: {body}");
    let (status, body, _) = post(
        addr,
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "t2")],
        &payload,
    );
    assert_eq!(status, 401, "missing signature: {body}");
    let wrong = format!("sha256={}", sign("not the secret", payload.as_bytes()));
    let (status, body, _) = post(
        addr,
        "/hooks/github",
        &[("X-Hub-Signature-256", &wrong), ("X-GitHub-Delivery", "t3")],
        &payload,
    );
    assert_eq!(status, 401, "wrong secret: {body}");
    let (status, body, _) = post(
        addr,
        "/hooks/github",
        &[
            ("X-Hub-Signature-256", &good),
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "t4"),
        ],
        &payload,
    );
    assert_eq!(status, 400, "ping: {body}");
    // The hooks take no token, and the API's token does not replace a signature.
    let (status, _) = d.post("/hooks/github", &payload);
    assert_eq!(status, 401);
    assert_nothing_starts(&d, 0, "a refused hook (or the one-hour poll)");

    // A signed push: 202, and the run starts (an eventual check with a generous deadline; the
    // answer time is printed, not bounded: under load any figure would be flaky).
    let (status, body, took) = post(
        addr,
        "/hooks/github",
        &[
            ("X-Hub-Signature-256", &good),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "d-1"),
        ],
        &payload,
    );
    let sent = Instant::now() - took;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["repos"], serde_json::json!(["app"]));
    let run = loop {
        if let Some(run) = newest_run(&d) {
            break run;
        }
        assert!(
            sent.elapsed() < START_LIMIT,
            "no run within {START_LIMIT:?} of the hook\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!(
        "hook answered in {took:?}; run queued {:?} after the hook was sent",
        sent.elapsed()
    );
    let id = match &run["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let done = d.wait_run_final(&id, Duration::from_secs(30));
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["trigger"]["commit"], commit.as_str());

    // The same delivery again, with a new commit waiting: ignored.
    let commit2 = commit_files(&src, &[(".workflows/ci.yaml", &workflow("two"))], "two");
    let payload2 = push_payload("me/app", "https://example.com/me/app.git", &commit2);
    let good2 = format!("sha256={}", sign(DOC_SECRET, payload2.as_bytes()));
    let (status, body, _) = post(
        addr,
        "/hooks/github",
        &[
            ("X-Hub-Signature-256", &good2),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "d-1"),
        ],
        &payload2,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "duplicate");
    assert_nothing_starts(&d, 1, "a replayed delivery");

    // After a restart the delivery id is still known.
    d.kill9();
    d.boot();
    let (status, body, _) = post(
        addr_of(&d),
        "/hooks/github",
        &[
            ("X-Hub-Signature-256", &good2),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "d-1"),
        ],
        &payload2,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "duplicate");

    // Unknown repository: 404, nothing starts.
    let other = push_payload(
        "someone/else",
        "https://example.com/someone/else.git",
        &commit2,
    );
    let (status, body, _) = post(
        addr_of(&d),
        "/hooks/gitea",
        &[
            ("X-Gitea-Signature", &sign(GITEA_SECRET, other.as_bytes())),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "g-0"),
        ],
        &other,
    );
    assert_eq!(status, 404, "{body}");

    // Gitea: bare hex signature, matched by clone url this time; the waiting commit runs.
    let by_url = push_payload("renamed/app", &url, &commit2);
    let (status, body, _) = post(
        addr_of(&d),
        "/hooks/gitea",
        &[
            ("X-Gitea-Signature", &sign(GITEA_SECRET, by_url.as_bytes())),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "g-1"),
        ],
        &by_url,
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + START_LIMIT;
    while run_count(&d) < 2 {
        assert!(
            Instant::now() < deadline,
            "the gitea hook started nothing\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let newest = newest_run(&d).expect("run");
    let id = match &newest["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let done = d.wait_run_final(&id, Duration::from_secs(30));
    assert_eq!(done["trigger"]["commit"], commit2.as_str());

    // The metrics saw every outcome.
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    let hooks = |outcome: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "agent_inbound_hooks_total" && s.labels.get("outcome") == Some(outcome)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    // Counted since the restart.
    assert_eq!(hooks("duplicate"), 1.0, "{text}");
    assert_eq!(hooks("unknown_repo"), 1.0, "{text}");
    assert_eq!(hooks("accepted"), 1.0, "{text}");
}

fn addr_of(d: &TestDaemon) -> SocketAddr {
    d.addr
}
