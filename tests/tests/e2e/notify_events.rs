//! End-to-end: the engine's failure events reach webhooks (`step.retrying`,
//! `handler.notify`, `rollback.*`, `escalation`, `step.failed`), in order, and a
//! `github_status` webhook posts commit statuses to its `api` with the token from the
//! environment, linking to the run under the configured `public_url`; an anomaly reaches
//! the webhooks that listen for `anomaly`.

use crate::common;
use crate::common::notify;

use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, trigger, yaml_quote};
use notify::Receiver;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

const HEAL: &str = r#"workflow:
  name: heal
  stages:
    - name: main
      steps:
        - id: health
          run: |
            echo "error_class=HealthCheckFailed" >> "$AGENT_OUTPUT"
            exit 1
  error_handlers:
    - error: HealthCheckFailed
      action: retry
      max_retries: 1
      then: rollback
      notify: true
  rollback:
    steps:
      - id: restore
        run: echo restored
"#;

const LOUD: &str = r#"workflow:
  name: loud
  stages:
    - name: main
      steps:
        - id: hard
          run: |
            echo "error_class=Hard" >> "$AGENT_OUTPUT"
            exit 1
  error_handlers:
    - error: Hard
      action: escalate
"#;

/// The events a receiver got, waiting until `last` arrived.
fn events_until(r: &Receiver, last: &str) -> Vec<Value> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let bodies: Vec<Value> = r.requests().iter().map(|q| q.json()).collect();
        if bodies.iter().any(|b| b["event"] == last) {
            return bodies;
        }
        assert!(
            Instant::now() < deadline,
            "no {last} within {LIMIT:?}: {bodies:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failure_events_and_github_statuses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(
        &repo,
        &[
            (".workflows/heal.yaml", HEAL),
            (".workflows/loud.yaml", LOUD),
        ],
    );
    let head = common::daemon::git(&repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let events = Receiver::start(Vec::new());
    let loud = Receiver::start(Vec::new());
    let github = Receiver::start(Vec::new());
    let alerts = Receiver::start(Vec::new());
    let config = format!(
        "public_url: https://ci.example.com/\n\
         anomalies: {{failure_window: 2, min_samples: 1, failure_rate: 0.5}}\n\
         repos:\n  - name: app\n    path: {}\n    full_name: me/app\n\
         webhooks:\n\
         \x20 - name: events\n    url: {}\n    workflows: [heal]\n    events: ['step.*', 'rollback.*', handler.notify, run.failed]\n\
         \x20 - name: loud\n    url: {}\n    workflows: [loud]\n    events: [escalation, run.failed]\n\
         \x20 - name: gh\n    format: github_status\n    api: {gh}\n    token_env: NOTIFY_GH_TOKEN\n    workflows: [heal]\n\
         \x20 - name: alerts\n    url: {}\n    events: [anomaly]\n    workflows: [heal]\n",
        yaml_quote(&repo.to_string_lossy()),
        events.url("/events"),
        loud.url("/loud"),
        alerts.url("/alerts"),
        gh = github.url("/gh"),
    );
    let d = TestDaemon::start_with_env(
        &tmp.path().join("daemon"),
        &config,
        &[("NOTIFY_GH_TOKEN", "gh-token-123")],
    );
    let heal = trigger(&d, "heal");
    assert_eq!(d.wait_run_final(&heal, LIMIT)["status"], "failed");

    let bodies = events_until(&events, "run.failed");
    let names: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().expect("event"))
        .collect();
    let pos = |e: &str| {
        names
            .iter()
            .position(|n| *n == e)
            .unwrap_or_else(|| panic!("no {e} in {names:?}"))
    };
    assert!(pos("step.retrying") < pos("step.failed"), "{names:?}");
    assert!(
        pos("rollback.started") < pos("rollback.finished"),
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"run.failed"), "{names:?}");
    assert!(names.contains(&"handler.notify"), "{names:?}");
    let retrying = &bodies[pos("step.retrying")];
    assert_eq!(retrying["step"]["id"], "health");
    assert_eq!(retrying["step"]["error_class"], "HealthCheckFailed");
    assert_eq!(
        bodies[pos("rollback.finished")]["details"]["status"],
        "succeeded"
    );
    assert_eq!(bodies[pos("handler.notify")]["details"]["action"], "retry");
    assert_eq!(bodies[pos("step.failed")]["step"]["id"], "health");

    // GitHub commit statuses: pending (queued, started), then failure.
    let deadline = Instant::now() + LIMIT;
    let reqs = loop {
        let reqs = github.requests();
        if reqs.len() >= 3 || Instant::now() > deadline {
            break reqs;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let states: Vec<String> = reqs
        .iter()
        .map(|r| r.json()["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(states, vec!["pending", "pending", "failure"]);
    for r in &reqs {
        assert_eq!(r.path, format!("/gh/repos/me/app/statuses/{head}"));
        assert_eq!(r.header("authorization"), Some("Bearer gh-token-123"));
        let b = r.json();
        assert_eq!(b["context"], "agent/heal");
        // `public_url` (its trailing slash dropped) is the base of the link.
        assert_eq!(
            b["target_url"],
            format!("https://ci.example.com/runs/{heal}").as_str()
        );
        assert!(b["description"].as_str().is_some_and(|s| s.len() <= 140));
    }

    let loud_run = trigger(&d, "loud");
    assert_eq!(d.wait_run_final(&loud_run, LIMIT)["status"], "failed");
    let bodies = events_until(&loud, "run.failed");
    let esc = bodies
        .iter()
        .find(|b| b["event"] == "escalation")
        .unwrap_or_else(|| panic!("no escalation: {bodies:?}"));
    assert_eq!(esc["step"]["id"], "hard");
    assert_eq!(esc["details"]["error_class"], "Hard");
    assert!(esc["error"].is_string());

    // The failed `heal` run raised a failure-rate anomaly, sent as an `anomaly` event.
    let got = alerts.wait_for(1, LIMIT);
    assert_eq!(got[0].header("x-agent-event"), Some("anomaly"));
    let b = got[0].json();
    assert_eq!(b["workflow"], "heal");
    assert_eq!(b["details"]["kind"], "failure_rate");
    assert_eq!(b["run"]["run_id"], heal.as_str());
    assert!(b["error"].is_string(), "{b}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(alerts.requests().len(), 1, "only heal's anomaly");
}
