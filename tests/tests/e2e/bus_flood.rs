//! Lifecycle events are lossless under a log flood: one step prints 1,000,000 lines while
//! 50 other runs start and finish; every `run.started`, `run.succeeded` and `step.failed`
//! webhook reaches a real receiver, and the metrics gauges come back to zero. (One lossy
//! broadcast used to carry both log lines and lifecycle events, so a flood dropped them.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::daemon::{TestDaemon, init_repo, yaml_quote};
use crate::common::notify::Receiver;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);

const FLOOD: &str = "workflow:\n  name: flood\n  stages:\n    - name: main\n      steps:\n        - id: loud\n          run: for i in $(seq 100); do seq 10000; sleep 0.05; done\n";
const OK: &str = "workflow:\n  name: ok\n  stages:\n    - name: main\n      steps:\n        - id: fine\n          run: echo fine\n";
const BAD: &str = "workflow:\n  name: bad\n  stages:\n    - name: main\n      steps:\n        - id: broken\n          run: exit 3\n";

fn trigger(d: &TestDaemon, workflow: &str) -> String {
    let (code, text) = d.post(&format!("/api/v1/workflows/{workflow}/runs"), "{}");
    assert_eq!(code, 202, "{text}\n{}", d.log_text());
    let v: Value = serde_json::from_str(&text).expect("JSON");
    v["run_id"].as_str().expect("run id").to_string()
}

/// The value of an unlabelled series in the Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_log_flood_loses_no_lifecycle_webhook() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(
        &repo,
        &[
            (".workflows/flood.yaml", FLOOD),
            (".workflows/ok.yaml", OK),
            (".workflows/bad.yaml", BAD),
        ],
    );
    let hook = Receiver::start(Vec::new());
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n\
         limits:\n  max_concurrent_runs: 8\n\
         webhooks:\n\
         \x20 - name: all\n    url: {}\n    events: [run.started, run.succeeded, step.failed]\n",
        yaml_quote(&repo.to_string_lossy()),
        hook.url("/all"),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    // 1,000,000 lines in 100 bursts, so the flood goes on while the other runs come and go.
    let flood = trigger(&d, "flood");
    d.wait_run(&flood, LIMIT, |s| s != "queued");
    let mut runs = vec![flood.clone()];
    for n in 0..50 {
        runs.push(trigger(&d, if n % 2 == 0 { "ok" } else { "bad" }));
    }
    for id in &runs[1..] {
        d.wait_run_final(id, LIMIT);
    }
    let still_flooding = d.get_json(&format!("/api/v1/runs/{flood}"))["status"] == "running";
    d.wait_run_final(&flood, LIMIT);
    assert_eq!(
        d.get_json(&format!("/api/v1/runs/{flood}"))["status"],
        "succeeded"
    );
    eprintln!("the flood outlived the other runs: {still_flooding}");

    // Every run started; the flood and the 25 `ok` runs succeeded; the 25 `bad` runs'
    // step failed: one delivery each, none lost.
    let want = 51 + 26 + 25;
    let deadline = Instant::now() + LIMIT;
    let counts = loop {
        let mut counts: HashMap<(String, String), usize> = HashMap::new();
        for r in hook.requests() {
            let body = r.json();
            let event = body["event"].as_str().unwrap_or_default().to_string();
            let run = body["run"]["run_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *counts.entry((event, run)).or_default() += 1;
        }
        if counts.values().sum::<usize>() >= want {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} deliveries after {LIMIT:?}",
            counts.values().sum::<usize>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for (n, id) in runs.iter().enumerate() {
        let has = |e: &str| {
            counts
                .get(&(e.to_string(), id.clone()))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(has("run.started"), 1, "run.started of {id}");
        let (succeeded, failed) = if n == 0 || n % 2 == 1 { (1, 0) } else { (0, 1) };
        assert_eq!(has("run.succeeded"), succeeded, "run.succeeded of {id}");
        assert_eq!(has("step.failed"), failed, "step.failed of {id}");
    }

    // Nothing is left counted as queued or running.
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, text) = d.get("/metrics");
        assert_eq!(code, 200, "{text}");
        let zero = [
            "agent_runs_queued",
            "agent_runs_running",
            "agent_steps_running",
        ]
        .iter()
        .all(|g| gauge(&text, g) == Some(0.0));
        if zero {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges not back to zero:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
