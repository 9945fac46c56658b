//! Step memory anomalies end to end: with `anomalies.step_memory_mb: 40`, a step whose
//! process tree holds about 80 MiB for two seconds raises one `step_memory` anomaly naming the
//! step; a small step beside it raises none.

use crate::common;

use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, yaml_quote};
use serde_json::Value;

const WORKFLOW: &str = "workflow:
  name: hungry
  on:
    manual: true
  stages:
    - name: main
      steps:
        - id: small
          run: sleep 1.5
        - id: big
          run: |
            perl -e '$x = \"a\" x (80 * 1024 * 1024); sleep 2; print length($x), \"\\n\"'
";

#[test]
fn a_step_above_the_memory_limit_raises_one_anomaly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[(".workflows/hungry.yaml", WORKFLOW)]);
    let config = format!(
        "repos:\n  - name: app\n    path: {}\nanomalies:\n  step_memory_mb: 40\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let (status, body) = d.post("/api/v1/workflows/hungry/runs", "{}");
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let id = match &v["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let run = d.wait_run_final(&id, Duration::from_secs(30));
    assert_eq!(run["status"], "succeeded", "{run:#}");

    // Recorded while the step ran: no waiting needed beyond the store read.
    let deadline = Instant::now() + Duration::from_secs(3);
    let found = loop {
        let found = d.get_json("/api/v1/anomalies")["anomalies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(found.len(), 1, "{found:#?}\n{}", d.log_text());
    let a = &found[0];
    assert_eq!(a["kind"], "step_memory");
    assert_eq!(a["step"], "big");
    assert_eq!(a["workflow"], "hungry");
    assert_eq!(a["run_id"], id.as_str());
    assert_eq!(a["details"]["limit_mb"], 40);
    assert!(
        a["details"]["memory_mb"].as_u64().unwrap_or(0) > 40,
        "{a:#}"
    );
}
