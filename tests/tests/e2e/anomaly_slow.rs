//! Anomaly detection end to end: five runs of `sleep 0.2`, then one of `sleep 0.6` (the delay
//! is a parameter), with `min_samples: 5`, raise exactly one `slow_run` anomaly: stored and
//! listed by `GET /api/v1/anomalies`, and published once as an `anomaly` event (counted by
//! `agent_anomalies_total` in `/metrics`, which is fed from the event bus).

use crate::common;

use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, yaml_quote};
use serde_json::Value;

const WORKFLOW: &str = "workflow:\n  name: nap\n  on:\n    manual: true\n  parameters:\n    - name: delay\n      type: string\n      default: '0.2'\n  stages:\n    - name: main\n      steps:\n        - id: sleep\n          run: sleep ${{ parameters.delay }}\n";

fn run(d: &TestDaemon, delay: &str) -> String {
    let (status, body) = d.post(
        "/api/v1/workflows/nap/runs",
        &format!(r#"{{"parameters": {{"delay": "{delay}"}}}}"#),
    );
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let id = match &v["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let done = d.wait_run_final(&id, Duration::from_secs(30));
    assert_eq!(done["status"], "succeeded", "{done:#}");
    id
}

fn anomalies(d: &TestDaemon) -> Vec<Value> {
    d.get_json("/api/v1/anomalies")["anomalies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn anomaly_events(d: &TestDaemon) -> f64 {
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "agent_anomalies_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn a_run_three_times_slower_than_its_history_raises_one_anomaly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[(".workflows/nap.yaml", WORKFLOW)]);
    let config = format!(
        "repos:\n  - name: app\n    path: {}\nanomalies:\n  min_samples: 5\n  window: 20\n  min_slowdown: 0.1s\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    for _ in 0..5 {
        run(&d, "0.2");
    }
    assert!(anomalies(&d).is_empty(), "{:#?}", anomalies(&d));
    let slow = run(&d, "0.6");

    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let found = anomalies(&d);
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no anomaly\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(25));
    };
    // Give a second one (there should be none) the time to show up.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(found[0]["kind"], "slow_run");
    let found = anomalies(&d);
    assert_eq!(found.len(), 1, "{found:#?}");
    let a = &found[0];
    assert_eq!(a["kind"], "slow_run");
    assert_eq!(a["workflow"], "nap");
    assert_eq!(a["repo"], "app");
    assert_eq!(a["run_id"], slow.as_str());
    assert!(
        a["details"]["duration_ms"].as_u64().unwrap_or(0) >= 600,
        "{a:#}"
    );
    assert!(a["message"].as_str().unwrap_or("").contains("nap"), "{a:#}");
    assert_eq!(anomaly_events(&d), 1.0);

    // A normal run afterwards raises nothing new.
    run(&d, "0.2");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(anomalies(&d).len(), 1);
    assert_eq!(anomaly_events(&d), 1.0);
}
