//! Step output through the daemon under load: a step that prints without pause neither
//! grows the daemon's memory nor crowds out other runs' lifecycle events (webhooks,
//! metrics), and a capped log keeps the step's last lines.

use crate::common;
use crate::common::notify;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, trigger, yaml_quote};
use notify::Receiver;

const LIMIT: Duration = Duration::from_secs(180);

/// A gauge's value in `GET /metrics` (the first sample of that name).
fn gauge(d: &TestDaemon, name: &str) -> Option<f64> {
    let (code, text) = d.get("/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in {text}"))
}

/// Guards that lifecycle events are lossless under log load: while one step prints a
/// million lines and more (it used to share one 4,096-slot broadcast with every log line,
/// and 30–50 % of other runs' `run.started` and `step.failed` webhooks were lost), 50 other
/// runs start and finish, and every `run.started`, `run.succeeded` and `step.failed`
/// webhook is delivered and the running gauges come back to zero.
#[test]
fn lifecycle_events_survive_a_flood_of_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let flag = tmp.path().join("stop-printing");
    let noisy = format!(
        "workflow:\n  name: noisy\n  stages:\n    - name: main\n      steps:\n        - id: flood\n          run: |\n            seq 1000000\n            while [ ! -e {} ]; do seq 100000; done\n",
        yaml_quote(&flag.to_string_lossy())
    );
    let ok = "workflow:\n  name: ok\n  stages:\n    - name: main\n      steps:\n        - id: fine\n          run: echo fine\n";
    let bad = "workflow:\n  name: bad\n  stages:\n    - name: main\n      steps:\n        - id: broken\n          run: |\n            echo about to fail\n            exit 3\n";
    init_repo(
        &repo,
        &[
            (".workflows/noisy.yaml", noisy.as_str()),
            (".workflows/ok.yaml", ok),
            (".workflows/bad.yaml", bad),
        ],
    );
    let hooks = Receiver::start(Vec::new());
    let config = format!(
        "limits:\n  max_concurrent_runs: 4\n\
         repos:\n  - name: app\n    path: {}\n\
         webhooks:\n\
         \x20 - name: all\n    url: {}\n    events: [run.started, run.succeeded, step.failed]\n",
        yaml_quote(&repo.to_string_lossy()),
        hooks.url("/hook"),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);

    let flood = trigger(&d, "noisy");
    // The flood is under way before the others start.
    let seen = common::poll(LIMIT, || {
        let (code, text) = d.get(&format!("/api/v1/runs/{flood}/steps/flood/log"));
        (code == 200 && text.len() > 1_000_000).then_some(())
    });
    assert!(seen.is_some(), "no output from the flood\n{}", d.log_text());
    let mut others = Vec::new();
    for n in 0..50 {
        let workflow = if n % 2 == 0 { "ok" } else { "bad" };
        others.push((trigger(&d, workflow), workflow));
    }
    for (id, workflow) in &others {
        let run = d.wait_run_final(id, LIMIT);
        let want = if *workflow == "ok" {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(run["status"], want, "{run}");
    }
    // The flood was still printing all along.
    let flood_run = d.get_json(&format!("/api/v1/runs/{flood}"));
    assert_eq!(flood_run["status"], "running", "{flood_run}");
    std::fs::write(&flag, "").expect("flag");
    assert_eq!(d.wait_run_final(&flood, LIMIT)["status"], "succeeded");

    // 51 run.started, 26 run.succeeded, 25 step.failed.
    let expected = 51 + 26 + 25;
    let requests = hooks.wait_for(expected, LIMIT);
    let mut got: HashMap<(String, String), usize> = HashMap::new();
    for r in &requests {
        let body = r.json();
        let run = body["run"]["run_id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no run id in {body}"));
        let event = body["event"].as_str().expect("event").to_string();
        *got.entry((run, event)).or_default() += 1;
    }
    let mut missing = Vec::new();
    for (id, workflow) in others.iter().chain([(flood.clone(), "ok")].iter()) {
        let mut want = vec!["run.started"];
        want.push(if *workflow == "bad" {
            "step.failed"
        } else {
            "run.succeeded"
        });
        for event in want {
            if got.get(&(id.clone(), event.to_string())) != Some(&1) {
                missing.push(format!("{id} {event}"));
            }
        }
    }
    assert!(
        missing.is_empty() && requests.len() == expected,
        "missing or repeated: {missing:?} ({} requests)",
        requests.len()
    );

    // The metrics saw every step end.
    let settled = common::poll(LIMIT, || {
        let steps = gauge(&d, "agent_steps_running")?;
        let runs = gauge(&d, "agent_runs_running")?;
        (steps == 0.0 && runs == 0.0).then_some(())
    });
    assert!(
        settled.is_some(),
        "gauges did not return to zero: {}",
        d.get("/metrics").1
    );
}

/// Guards that the daemon's memory stays flat whatever a step prints (every line used to
/// be queued without bound: 2 GB of `yes` grew the daemon to 3 GB until the kernel killed
/// it), and that the capped log keeps the step's last line and says what was dropped.
#[test]
fn a_step_printing_hundreds_of_megabytes_keeps_the_daemon_small() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let wf = "workflow:\n  name: loud\n  stages:\n    - name: main\n      steps:\n        - id: loud\n          run: |\n            yes | head -c 60000000\n            echo the last line\n";
    init_repo(&repo, &[(".workflows/loud.yaml", wf)]);
    let config = format!(
        "limits:\n  max_log_bytes: 1000000\n\
         repos:\n  - name: app\n    path: {}\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let pid = d.pid().expect("daemon pid");
    let before = status_kib(pid, "VmRSS:");
    let id = trigger(&d, "loud");
    let deadline = Instant::now() + LIMIT;
    let run = d.wait_run_final(&id, deadline.saturating_duration_since(Instant::now()));
    assert_eq!(run["status"], "succeeded", "{run}");
    let peak = status_kib(pid, "VmHWM:");
    assert!(
        peak < before + 100 * 1024,
        "daemon peak RSS {peak} KiB (was {before} KiB before the run)"
    );
    let (code, log) = d.get(&format!("/api/v1/runs/{id}/steps/loud/log"));
    assert_eq!(code, 200);
    assert!(log.len() <= 1_000_100, "{} bytes", log.len());
    assert!(log.starts_with("y\ny\n"), "{}", &log[..20]);
    assert!(
        log.ends_with("y\nthe last line\n"),
        "{}",
        &log[log.len() - 40..]
    );
    let marker = log
        .lines()
        .find(|l| l.starts_with("[... "))
        .expect("a dropped-bytes marker");
    let dropped: u64 = marker
        .trim_start_matches("[... ")
        .trim_end_matches(" bytes dropped ...]")
        .parse()
        .unwrap_or_else(|_| panic!("{marker}"));
    let total = 60_000_000 + "the last line\n".len() as u64;
    assert_eq!(
        dropped + log.len() as u64 - marker.len() as u64 - 1,
        total,
        "{marker}"
    );
}
