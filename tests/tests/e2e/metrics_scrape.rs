//! `GET /metrics` end to end: behind the token, and the body parses as Prometheus text (with
//! `prometheus-parse`, not string matching) with the figures of a finished run in it.

use crate::common;

use std::time::Duration;

use common::daemon::{TestDaemon, init_repo, yaml_quote};
use prometheus_parse::{Sample, Scrape, Value as Prom};
use serde_json::Value;

fn scrape(d: &TestDaemon) -> (Scrape, String) {
    let (status, text) = d.get("/metrics");
    assert_eq!(status, 200, "{text}");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse");
    (parsed, text)
}

fn value(s: &Sample) -> f64 {
    match &s.value {
        Prom::Counter(v) | Prom::Gauge(v) | Prom::Untyped(v) => *v,
        Prom::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Prom::Summary(_) => f64::NAN,
    }
}

/// The samples named `metric` whose labels include `labels`.
fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect()
}

#[test]
fn metrics_parse_and_count_a_finished_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    let wf = "workflow:\n  name: build\n  on:\n    manual: true\n  stages:\n    - name: main\n      steps:\n        - id: compile\n          run: 'true'\n        - id: test\n          run: 'true'\n";
    init_repo(&repo, &[(".workflows/build.yaml", wf)]);
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);

    // Behind the token.
    let (status, _) =
        common::daemon::http_request(d.addr, "GET", "/metrics", None, None).expect("request");
    assert_eq!(status, 401);

    let (before, text) = scrape(&d);
    let cpu = find(&before, "agent_resource_cpu_capacity", &[]);
    assert_eq!(cpu.len(), 1, "{text}");
    assert!(value(cpu[0]) >= 1.0, "{text}");
    assert_eq!(find(&before, "agent_runs_queued", &[]).len(), 1, "{text}");
    assert_eq!(find(&before, "agent_steps_running", &[]).len(), 1, "{text}");
    assert_eq!(
        find(
            &before,
            "agent_webhook_deliveries",
            &[("status", "pending")]
        )
        .len(),
        1,
        "{text}"
    );
    assert_eq!(
        find(&before, "agent_cron_fires_total", &[]).len(),
        1,
        "{text}"
    );

    let (status, body) = d.post("/api/v1/workflows/build/runs", "{}");
    assert_eq!(status, 202, "{body}");
    let id: Value = serde_json::from_str(&body).expect("json");
    let id = match &id["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let run = d.wait_run_final(&id, Duration::from_secs(30));
    assert_eq!(run["status"], "succeeded");

    // The run's end reaches the metrics through the event bus: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (after, text) = loop {
        let (s, text) = scrape(&d);
        if !find(&s, "agent_runs_total", &[("workflow", "build")]).is_empty() {
            break (s, text);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let runs = find(
        &after,
        "agent_runs_total",
        &[("workflow", "build"), ("status", "succeeded")],
    );
    assert_eq!(runs.len(), 1, "{text}");
    assert_eq!(value(runs[0]), 1.0, "{text}");
    // Described as a counter (the classic format names the family with `_total`).
    assert!(
        matches!(runs[0].value, Prom::Counter(_)),
        "{:?}\n{text}",
        runs[0]
    );
    let hist = find(
        &after,
        "agent_run_duration_seconds",
        &[("workflow", "build")],
    );
    assert_eq!(hist.len(), 1, "{text}");
    assert!(matches!(hist[0].value, Prom::Histogram(_)), "{:?}", hist[0]);
    assert_eq!(
        value(hist[0]),
        1.0,
        "the +Inf bucket holds the one run: {text}"
    );
    // Step durations are labelled by workflow only: one series however many steps.
    let steps = find(
        &after,
        "agent_step_duration_seconds_count",
        &[("workflow", "build")],
    );
    assert_eq!(steps.len(), 1, "{text}");
    assert_eq!(value(steps[0]), 2.0, "compile and test: {text}");
    assert!(!text.contains("step=\""), "{text}");
    assert_eq!(value(find(&after, "agent_runs_running", &[])[0]), 0.0);
    assert_eq!(value(find(&after, "agent_steps_running", &[])[0]), 0.0);
}

#[test]
fn cron_fires_and_failed_fetches_are_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    let wf = "workflow:\n  name: tick\n  on:\n    schedule:\n      - cron: '* * * * * *'\n  stages:\n    - name: main\n      steps:\n        - id: t\n          run: 'true'\n";
    init_repo(&repo, &[(".workflows/tick.yaml", wf)]);
    let gone = tmp.path().join("gone");
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n  - name: gone\n    url: {}\n    poll_interval: 1h\n",
        yaml_quote(&repo.to_string_lossy()),
        yaml_quote(&format!("file://{}", gone.display())),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, text) = scrape(&d);
        let fires = find(&s, "agent_cron_fires_total", &[]);
        let errors = find(&s, "agent_git_fetch_errors_total", &[("repo", "gone")]);
        if fires.first().is_some_and(|f| value(f) >= 1.0)
            && errors.first().is_some_and(|e| value(e) >= 1.0)
        {
            assert!(matches!(fires[0].value, Prom::Counter(_)), "{text}");
            assert!(
                find(&s, "agent_git_fetch_errors_total", &[("repo", "app")]).is_empty(),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cron fires or fetch errors not counted:\n{text}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
