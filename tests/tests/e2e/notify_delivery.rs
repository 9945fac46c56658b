//! End-to-end delivery rules with real receivers on 127.0.0.1 and real daemons:
//! 500 twice then 200 is one delivery in three attempts under one id; after `429` with
//! `Retry-After: 2` nothing is sent for two seconds; a 404 is not retried; a receiver that is
//! down while the daemon restarts gets the notification once it comes up; a slow receiver
//! holds up neither the run nor other webhooks; a slack webhook sends at most one message a
//! second.

use crate::common;
use crate::common::notify;

use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, repo_config, trigger};
use notify::{Receiver, Reply};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
/// How long the slow receiver sits on a request.
const SLOW: Duration = Duration::from_secs(5);

const WORKFLOW: &str = "workflow:\n  name: ok\n  stages:\n    - name: main\n      steps:\n        - id: hello\n          run: echo hello\n";

/// The deliveries of one webhook, from the API.
fn deliveries(d: &TestDaemon, webhook: &str) -> Vec<Value> {
    let v = d.get_json(&format!("/api/v1/deliveries?webhook={webhook}"));
    v["deliveries"].as_array().cloned().unwrap_or_default()
}

fn wait_delivery(d: &TestDaemon, webhook: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(del) = deliveries(d, webhook).into_iter().next()
            && done(&del)
        {
            return del;
        }
        assert!(
            Instant::now() < deadline,
            "delivery of {webhook} not done: {:?}\n{}",
            deliveries(d, webhook),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn retries_5xx_honours_retry_after_and_gives_up_on_404() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/ok.yaml", WORKFLOW)]);
    let flaky = Receiver::start(vec![Reply::status(500), Reply::status(503)]);
    let busy = Receiver::start(vec![Reply::status(429).header("Retry-After", "2")]);
    let gone = Receiver::start(vec![Reply::status(404)]);
    let hook = |name: &str, url: String| {
        format!(
            "  - name: {name}\n    url: {url}\n    events: [run.succeeded]\n    \
             retry: {{initial_delay: 100ms, max_delay: 400ms}}\n"
        )
    };
    let config = format!(
        "{}webhooks:\n{}{}{}",
        repo_config("app", &repo),
        hook("flaky", flaky.url("/")),
        hook("busy", busy.url("/")),
        hook("gone", gone.url("/")),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let id = trigger(&d, "ok");
    assert_eq!(d.wait_run_final(&id, LIMIT)["status"], "succeeded");

    // 500, 503, then 200: one delivery, three attempts, one id.
    let del = wait_delivery(&d, "flaky", |d| d["status"] == "delivered");
    assert_eq!(del["attempts"], 3, "{del}");
    let codes: Vec<Value> = del["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(
        codes,
        vec![Value::from(500), Value::from(503), Value::from(200)]
    );
    assert_eq!(del["run_id"], id.as_str());
    let reqs = flaky.requests();
    assert_eq!(reqs.len(), 3);
    let ids: Vec<&str> = reqs
        .iter()
        .map(|r| r.header("x-agent-delivery").expect("delivery id"))
        .collect();
    assert!(
        ids.iter().all(|i| *i == del["id"].as_str().expect("id")),
        "{ids:?}"
    );
    // The backoff starts at 100ms (jitter keeps it in its upper half).
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(50));
    // The body's `duration_ms` is the API's figure (it was the engine's, without the
    // checkout: 200 against 892).
    let api = d.get_json(&format!("/api/v1/runs/{id}"));
    let body = reqs[2].json();
    assert_eq!(
        body["run"]["duration_ms"], api["duration_ms"],
        "{body:#}\n{api:#}"
    );
    assert_eq!(
        body["run"]["finished_at"], api["finished_at"],
        "{body:#}\n{api:#}"
    );

    // 429 + Retry-After: 2: nothing for two seconds, then the retry succeeds.
    let del = wait_delivery(&d, "busy", |d| d["status"] == "delivered");
    assert_eq!(del["attempts"], 2, "{del}");
    let reqs = busy.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(1950), "retried after {gap:?}");

    // 404: failed at once, never retried.
    let del = wait_delivery(&d, "gone", |d| d["status"] == "failed");
    assert_eq!(del["attempts"], 1, "{del}");
    assert_eq!(del["history"][0]["status_code"], 404);
    assert!(
        del["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("404")),
        "{del}"
    );
    // Well past several backoff periods: still one request.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(gone.requests().len(), 1);
    assert_eq!(flaky.requests().len(), 3);
}

#[test]
fn a_receiver_down_across_a_restart_gets_the_notification_when_it_comes_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/ok.yaml", WORKFLOW)]);
    let addr = Receiver::free_addr();
    let config = format!(
        "{}webhooks:\n  - name: later\n    url: http://{addr}/later\n    events: [run.succeeded]\n    \
         retry: {{initial_delay: 100ms, max_delay: 300ms}}\n",
        repo_config("app", &repo)
    );
    let mut d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let id = trigger(&d, "ok");
    assert_eq!(d.wait_run_final(&id, LIMIT)["status"], "succeeded");
    // Attempted and refused at least once while nobody listens.
    let del = wait_delivery(&d, "later", |d| {
        d["attempts"].as_u64().is_some_and(|n| n >= 1) && d["status"] == "pending"
    });
    assert!(del["history"][0]["status_code"].is_null(), "{del}");
    let delivery_id = del["id"].as_str().expect("id").to_string();

    d.kill9();
    d.boot();
    // Still down after the restart: still pending.
    let del = wait_delivery(&d, "later", |d| d["status"] == "pending");
    assert_eq!(del["id"], delivery_id.as_str());

    let receiver = Receiver::start_on(addr, Vec::new());
    let got = receiver.wait_for(1, LIMIT);
    assert_eq!(
        got[0].header("x-agent-delivery"),
        Some(delivery_id.as_str())
    );
    assert_eq!(got[0].header("x-agent-event"), Some("run.succeeded"));
    assert_eq!(got[0].json()["run"]["run_id"], id.as_str());
    let del = wait_delivery(&d, "later", |d| d["status"] == "delivered");
    assert_eq!(del["id"], delivery_id.as_str());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.requests().len(), 1, "delivered more than once");
}

#[test]
fn a_slow_receiver_holds_up_nothing_else_and_slack_is_rate_limited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/ok.yaml", WORKFLOW)]);
    let slow = Receiver::start(vec![Reply::status(200).after(SLOW)]);
    let fast = Receiver::start(Vec::new());
    let chat = Receiver::start(Vec::new());
    let config = format!(
        "{}webhooks:\n\
         \x20 - name: slow\n    url: {}\n    events: [run.queued]\n\
         \x20 - name: fast\n    url: {}\n    events: [run.queued, run.succeeded]\n\
         \x20 - name: chat\n    url: {}\n    format: slack\n    events: [run.queued, run.started, run.succeeded]\n",
        repo_config("app", &repo),
        slow.url("/"),
        fast.url("/"),
        chat.url("/"),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let id = trigger(&d, "ok");
    assert_eq!(d.wait_run_final(&id, LIMIT)["status"], "succeeded");
    let run_done = Instant::now();
    // While the slow receiver still sits on its request, the run is done and the fast
    // webhook got both of its events.
    let got = fast.wait_for(2, LIMIT);
    assert_eq!(got[1].header("x-agent-event"), Some("run.succeeded"));
    let hung = slow.wait_for(1, LIMIT)[0].at;
    assert!(
        run_done < hung + SLOW,
        "the run waited for the slow receiver"
    );
    assert!(
        got[1].at < hung + SLOW,
        "the fast webhook waited for the slow one"
    );
    assert_eq!(
        wait_delivery(&d, "slow", |d| d["status"] == "delivered")["attempts"],
        1
    );

    // Slack: one message a second at most.
    let got = chat.wait_for(3, LIMIT);
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(950),
            "slack messages {gap:?} apart"
        );
    }
}

#[test]
fn after_a_restart_a_delivery_that_found_nobody_is_tried_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/ok.yaml", WORKFLOW)]);
    let addr = Receiver::free_addr();
    // A long backoff: without the retry at start, the next try would be 5 to 10 s away.
    let config = format!(
        "{}webhooks:\n  - name: later\n    url: http://{addr}/later\n    events: [run.succeeded]\n    \
         retry: {{initial_delay: 10s}}\n",
        repo_config("app", &repo)
    );
    let mut d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let id = trigger(&d, "ok");
    assert_eq!(d.wait_run_final(&id, LIMIT)["status"], "succeeded");
    let del = wait_delivery(&d, "later", |d| d["attempts"] == 1);
    assert_eq!(del["status"], "pending", "{del}");
    d.kill9();
    // The receiver comes up while the daemon is down.
    let receiver = Receiver::start_on(addr, Vec::new());
    let booted = Instant::now();
    d.boot();
    let got = receiver.wait_for(1, LIMIT);
    assert!(
        got[0].at - booted < Duration::from_secs(4),
        "retried {:?} after the start",
        got[0].at - booted
    );
    assert_eq!(got[0].header("x-agent-delivery"), del["id"].as_str());
    let del = wait_delivery(&d, "later", |d| d["status"] == "delivered");
    assert_eq!(del["attempts"], 2);
}
