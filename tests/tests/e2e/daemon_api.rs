//! End-to-end tests of the daemon's HTTP API and of the `agent runs/logs/trigger/cancel/retry`
//! client commands, against real `agent daemon` processes watching real git repositories.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{TEST_TOKEN, TestDaemon, http_request, init_repo, trigger_with, yaml_quote};
use common::{agent, run_with_deadline};
use serde_json::Value;

/// How long a run of these small workflows may take.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

const GREET: &str = "workflow:
  name: greet
  on:
    manual: true
  parameters:
    - name: count
      type: integer
      required: true
    - name: mode
      type: string
      default: fast
      enum: [fast, slow]
  stages:
    - name: main
      steps:
        - id: hello
          run: |
            echo \"hello ${{ parameters.count }} ${{ parameters.mode }}\"
            echo second line
        - id: after
          run: echo after
";

const TICKS: &str = "workflow:
  name: ticks
  stages:
    - name: main
      steps:
        - id: tick
          run: |
            for i in 1 2 3 4 5; do echo \"tick $i\"; sleep 0.3; done
";

const SLEEPER: &str = "workflow:
  name: sleeper
  stages:
    - name: main
      steps:
        - id: nap
          run: sleep 60
";

/// Fails the first time (leaving a marker outside the workspace), succeeds afterwards.
fn flaky(marker: &Path) -> String {
    format!(
        "workflow:
  name: flaky
  stages:
    - name: main
      steps:
        - id: first
          run: echo first
        - id: shaky
          run: |
            if [ -e {m} ]; then echo recovered; else touch {m}; echo failing; exit 3; fi
",
        m = yaml_quote(&marker.to_string_lossy())
    )
}

/// A daemon watching one repository `app` that holds the test workflows, once the watcher
/// has read them.
fn daemon_with_workflows(root: &Path) -> TestDaemon {
    let d = start_with_workflows(root);
    common::poll(RUN_DEADLINE, || {
        let v = d.get_json("/api/v1/workflows");
        (v["workflows"].as_array()?.len() == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("workflows never listed\n{}", d.log_text()));
    d
}

/// The same, as soon as it answers `/health` (its watcher may not have run yet).
fn start_with_workflows(root: &Path) -> TestDaemon {
    let repo = root.join("repo");
    let flaky = flaky(&root.join("flaky.marker"));
    init_repo(
        &repo,
        &[
            (".workflows/greet.yaml", GREET),
            (".workflows/ticks.yaml", TICKS),
            (".workflows/sleeper.yaml", SLEEPER),
            (".workflows/flaky.yaml", &flaky),
        ],
    );
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n    branches: [main]\n",
        yaml_quote(&repo.to_string_lossy())
    );
    TestDaemon::start(&root.join("daemon"), &config)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The events of a server-sent event stream, read until an `end` event or the deadline.
fn follow_events(d: &TestDaemon, path: &str, limit: Duration) -> Vec<(String, String)> {
    let mut stream = TcpStream::connect(d.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
         Accept: text/event-stream\r\nConnection: close\r\n\r\n",
        d.addr
    );
    stream.write_all(head.as_bytes()).expect("send request");
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read stream: {e}"),
        }
        if String::from_utf8_lossy(&raw).contains("event: end") {
            // Read the rest of the end event.
            std::thread::sleep(Duration::from_millis(50));
            let _ = stream
                .read(&mut buf)
                .map(|n| raw.extend_from_slice(&buf[..n]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no end event within {limit:?}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    parse_sse(&dechunk(body))
}

/// Undoes `Transfer-Encoding: chunked`.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// `(event, data)` pairs of an event stream (comments skipped).
fn parse_sse(text: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data: Option<String> = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim_start().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                data = Some(match data {
                    Some(d) => format!("{d}\n{v}"),
                    None => v.to_string(),
                });
            }
        }
        if let Some(name) = name {
            events.push((name, data.unwrap_or_default()));
        }
    }
    events
}

/// Every route of the API but `/health` answers 401 without the token and with a wrong one;
/// errors are JSON; bad ids and limits are refused without a panic.
#[test]
fn every_route_but_health_needs_the_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = TestDaemon::start(&tmp.path().join("daemon"), "");
    let routes = [
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/runs?limit=5"),
        ("GET", "/api/v1/runs/1"),
        ("GET", "/api/v1/runs/1/steps/a/log"),
        ("GET", "/api/v1/runs/1/steps/a/log?follow=true"),
        ("POST", "/api/v1/workflows/w/runs"),
        ("POST", "/api/v1/runs/1/cancel"),
        ("POST", "/api/v1/runs/1/retry"),
        ("GET", "/api/v1/workflows"),
        ("GET", "/api/v1/deliveries"),
        ("GET", "/api/v1/anomalies"),
        ("GET", "/metrics"),
        ("GET", "/no/such/route"),
    ];
    for (method, path) in routes {
        for token in [
            None,
            Some("wrong-token"),
            Some("test-token-but-longer"),
            Some(""),
        ] {
            let (code, body) =
                http_request(d.addr, method, path, token, None).expect("daemon answers");
            assert_eq!(code, 401, "{method} {path} with {token:?}: {body}");
            assert!(json(&body)["error"].is_string(), "{body}");
        }
    }
    let (code, body) = http_request(d.addr, "GET", "/health", None, None).expect("health");
    assert_eq!(
        (code, json(&body)),
        (200, serde_json::json!({"status": "ok"}))
    );

    // With the token: shapes, and bad input refused with JSON errors.
    assert_eq!(d.get_json("/api/v1/runs")["runs"], serde_json::json!([]));
    assert!(d.get_json("/api/v1/workflows")["workflows"].is_array());
    assert_eq!(
        d.get_json("/api/v1/deliveries")["deliveries"],
        serde_json::json!([])
    );
    assert_eq!(
        d.get_json("/api/v1/anomalies")["anomalies"],
        serde_json::json!([])
    );
    let (code, metrics) = d.get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("agent_runs_queued 0"), "{metrics}");
    for (path, want) in [
        ("/api/v1/runs?limit=1000", 200),
        ("/api/v1/runs?limit=1", 200),
        ("/api/v1/runs?limit=0", 400),
        ("/api/v1/runs?limit=1001", 400),
        ("/api/v1/runs?limit=-5", 400),
        ("/api/v1/runs?limit=ten", 400),
        ("/api/v1/runs?status=bogus", 400),
        ("/api/v1/runs?status=failed", 200),
        ("/api/v1/runs/abc", 404),
        ("/api/v1/runs/0", 404),
        ("/api/v1/runs/99999999999999999999999999", 404),
        ("/api/v1/runs/42", 404),
        ("/api/v1/runs/42/steps/x/log", 404),
        ("/api/v1/runs/42/steps/..%2F..%2Fetc/log", 404),
        ("/api/v1/runs/1/steps/x/log?follow=maybe", 400),
        ("/no/such/route", 404),
    ] {
        let (code, body) = d.get(path);
        assert_eq!(code, want, "GET {path}: {body}");
        if code != 200 {
            assert!(json(&body)["error"].is_string(), "{path}: {body}");
        }
    }
    for (path, body, want) in [
        ("/api/v1/runs/42/cancel", "", 404),
        ("/api/v1/runs/abc/retry", "", 404),
        ("/api/v1/workflows/nope/runs", "{}", 404),
        ("/api/v1/workflows/nope/runs", "{not json", 400),
        ("/api/v1/workflows/nope/runs", "{\"parameters\": [1]}", 400),
        ("/api/v1/workflows/nope/runs", "{\"paramters\": {}}", 400),
    ] {
        let (code, text) = d.post(path, body);
        assert_eq!(code, want, "POST {path} {body}: {text}");
        assert!(json(&text)["error"].is_string(), "{text}");
    }
}

/// Trigger, list, get and read logs through the API; 422 with diagnostics for bad
/// parameters; the workflow list.
#[test]
fn trigger_list_get_and_logs_through_the_api() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = daemon_with_workflows(tmp.path());

    // The workflow list (filled once the watcher has read the repository).
    let listed = common::poll(RUN_DEADLINE, || {
        let v = d.get_json("/api/v1/workflows");
        let found = v["workflows"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == "greet")?
            .clone();
        Some(found)
    })
    .unwrap_or_else(|| panic!("greet never listed\n{}", d.log_text()));
    assert_eq!(listed["repo"], "app");
    assert_eq!(listed["file"], ".workflows/greet.yaml");
    assert!(listed.get("triggers").is_some() && listed.get("next_fire").is_some());

    // Bad parameters: 422 with one diagnostic per problem, nothing queued.
    for (body, needle) in [
        (r#"{"parameters": {"count": "many"}}"#, "count"),
        (r#"{"parameters": {}}"#, "count"),
        (r#"{"parameters": {"count": 1, "mode": "medium"}}"#, "mode"),
        (r#"{"parameters": {"count": 1, "colour": "red"}}"#, "colour"),
    ] {
        let (code, text) = d.post("/api/v1/workflows/greet/runs", body);
        assert_eq!(code, 422, "{body}: {text}");
        let v = json(&text);
        let diags = v["diagnostics"].as_array().expect("diagnostics");
        assert!(
            diags
                .iter()
                .any(|d| d.as_str().is_some_and(|s| s.contains(needle))),
            "{body}: {text}"
        );
    }
    assert_eq!(d.get_json("/api/v1/runs")["runs"], serde_json::json!([]));

    let id = trigger_with(
        &d,
        "greet",
        r#"{"parameters": {"count": "3"}, "repo": "app"}"#,
    );
    let run = d.wait_run_final(&id, RUN_DEADLINE);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["run_id"], id.as_str());
    assert_eq!(run["workflow"], "greet");
    assert_eq!(run["repo"], "app");
    assert_eq!(run["trigger"]["kind"], "manual");
    assert!(run["trigger"]["commit"].is_string(), "{run}");
    assert!(run["trigger"].get("scheduled_for").is_some());
    assert_eq!(run["parameters"]["count"], 3);
    assert_eq!(run["parameters"]["mode"], "fast");
    let steps = &run["stages"][0]["steps"];
    assert_eq!(steps[0]["id"], "hello");
    assert_eq!(steps[0]["status"], "succeeded");
    assert_eq!(steps[0]["attempts"], 1);
    assert!(run["duration_ms"].is_u64(), "{run}");

    // Two more runs: newest created first, limit and filters respected.
    let second = trigger_with(&d, "greet", r#"{"parameters": {"count": 4}}"#);
    let third = trigger_with(&d, "ticks", "");
    let runs = d.get_json("/api/v1/runs")["runs"].clone();
    let ids: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [third.as_str(), second.as_str(), id.as_str()]);
    for key in [
        "run_id",
        "workflow",
        "repo",
        "status",
        "trigger",
        "created_at",
        "started_at",
        "duration_ms",
    ] {
        assert!(
            runs[0].get(key).is_some(),
            "summary lacks {key}: {}",
            runs[0]
        );
    }
    let limited = d.get_json("/api/v1/runs?limit=2")["runs"].clone();
    assert_eq!(limited.as_array().map(Vec::len), Some(2));
    let only_greet = d.get_json("/api/v1/runs?workflow=greet&limit=1000")["runs"].clone();
    assert_eq!(only_greet.as_array().map(Vec::len), Some(2));
    d.wait_run_final(&second, RUN_DEADLINE);
    d.wait_run_final(&third, RUN_DEADLINE);
    let succeeded = d.get_json("/api/v1/runs?status=succeeded")["runs"].clone();
    assert_eq!(succeeded.as_array().map(Vec::len), Some(3));

    // The step log as text.
    let (code, log) = d.get(&format!("/api/v1/runs/{id}/steps/hello/log"));
    assert_eq!(code, 200, "{log}");
    assert!(log.contains("hello 3 fast"), "{log}");
    assert!(log.contains("second line"), "{log}");
    let (code, _) = d.get(&format!("/api/v1/runs/{id}/steps/nosuchstep/log"));
    assert_eq!(code, 404);

    // A finished step's log in follow mode: the lines, then the end.
    let events = follow_events(
        &d,
        &format!("/api/v1/runs/{id}/steps/hello/log?follow=true"),
        RUN_DEADLINE,
    );
    let lines: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(lines, ["hello 3 fast", "second line"], "{events:?}");
    assert_eq!(events.last().map(|(e, _)| e.as_str()), Some("end"));
    assert!(events.last().is_some_and(|(_, d)| d.contains("succeeded")));
}

/// `?follow=true` on a step that has not started yet streams its lines as they are written
/// and ends when the step does. (The run is triggered the moment the daemon answers.)
#[test]
fn follow_streams_lines_until_the_step_ends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = start_with_workflows(tmp.path());
    let id = trigger_with(&d, "ticks", "{}");
    let started = Instant::now();
    let events = follow_events(
        &d,
        &format!("/api/v1/runs/{id}/steps/tick/log?follow=true"),
        RUN_DEADLINE,
    );
    let lines: Vec<&str> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(
        lines,
        ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"],
        "{events:?}"
    );
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "end");
    assert!(data.contains("succeeded"), "{data}");
    // The stream lasted as long as the step (5 ticks of 0.3 s), not longer than needed.
    assert!(started.elapsed() >= Duration::from_millis(1200));
}

/// Cancel a running run, retry a failed one (from its failed step), through the API.
#[test]
fn cancel_and_retry_through_the_api() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = daemon_with_workflows(tmp.path());

    let id = trigger_with(&d, "sleeper", "{}");
    d.wait_run(&id, RUN_DEADLINE, |s| s == "running");
    let (code, body) = d.post(&format!("/api/v1/runs/{id}/cancel"), "");
    assert_eq!(code, 202, "{body}");
    let run = d.wait_run_final(&id, RUN_DEADLINE);
    assert_eq!(run["status"], "cancelled", "{run}");
    // Once the scheduler has let go of the run, cancelling it again is a conflict.
    common::poll(RUN_DEADLINE, || {
        let (code, body) = d.post(&format!("/api/v1/runs/{id}/cancel"), "");
        assert!(code == 202 || code == 409, "cancel again: {code} {body}");
        (code == 409).then_some(())
    })
    .expect("cancelling a cancelled run ends in 409");

    let failed = trigger_with(&d, "flaky", "{}");
    let run = d.wait_run_final(&failed, RUN_DEADLINE);
    assert_eq!(run["status"], "failed", "{run}");
    let (code, body) = d.post(&format!("/api/v1/runs/{failed}/retry"), "");
    assert_eq!(code, 202, "{body}");
    let retried = json(&body)["run_id"].as_str().expect("run_id").to_string();
    let run = d.wait_run_final(&retried, RUN_DEADLINE);
    assert_eq!(run["status"], "succeeded", "{run}");
    let (code, log) = d.get(&format!("/api/v1/runs/{retried}/steps/shaky/log"));
    assert_eq!(code, 200);
    assert!(log.contains("recovered"), "{log}");
    if retried != failed {
        assert_eq!(run["trigger"]["kind"], "retry", "{run}");
    }
}

/// The client commands against a real daemon: tables, `--json`, logs, exit codes.
#[test]
fn cli_trigger_runs_logs_cancel_retry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = daemon_with_workflows(tmp.path());
    let server = d.url();
    let cli = |args: &[&str], token: Option<&str>| {
        let mut all = args.to_vec();
        all.extend(["--server", &server]);
        let mut cmd = agent(&all);
        cmd.current_dir(tmp.path())
            .env_remove("AGENT_TOKEN")
            .env_remove("AGENT_SERVER");
        if let Some(t) = token {
            cmd.env("AGENT_TOKEN", t);
        }
        let out = run_with_deadline(cmd, RUN_DEADLINE);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tok = Some(TEST_TOKEN);

    // No token, or a wrong one: exit 1 and a hint.
    let (code, _, err) = cli(&["runs"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("AGENT_TOKEN"), "{err}");
    let (code, _, err) = cli(&["runs"], Some("nope"));
    assert_eq!(code, 1, "{err}");

    // Bad parameters: exit 2 with the diagnostic.
    let (code, _, err) = cli(&["trigger", "greet", "-p", "count=lots"], tok);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("count"), "{err}");
    let (code, _, err) = cli(&["trigger", "greet", "-p", "novalue"], tok);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = cli(
        &["trigger", "greet", "-p", "count=2", "-p", "mode=slow"],
        tok,
    );
    assert_eq!(code, 0, "{err}");
    let id = out
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no run id in {out:?}"))
        .to_string();
    assert!(out.starts_with("queued run "), "{out}");
    d.wait_run_final(&id, RUN_DEADLINE);

    let (code, out, err) = cli(&["runs"], tok);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header = lines.next().expect("header");
    for col in [
        "RUN", "WORKFLOW", "REPO", "STATUS", "TRIGGER", "CREATED", "DURATION",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().expect("one row");
    assert!(
        row.starts_with(&id) && row.contains("greet") && row.contains("succeeded"),
        "{row}"
    );
    assert!(row.contains("manual"), "{row}");

    let (code, out, err) = cli(&["runs", "--json", "--limit", "5"], tok);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["runs"][0]["run_id"], id.as_str());
    // `--before` pages: only runs older than the given one.
    let (code, out, err) = cli(&["runs", "--json", "--before", &id], tok);
    assert_eq!(code, 0, "{err}");
    let older = json(&out)["runs"].as_array().expect("runs").clone();
    assert!(
        older
            .iter()
            .all(|r| r["run_id"].as_str().and_then(|r| r.parse::<u64>().ok())
                < id.parse::<u64>().ok()),
        "{out}"
    );
    // Invalid arguments exit 2, also when the daemon is the one that finds them.
    let (code, _, err) = cli(&["runs", "--limit", "5000"], tok);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("limit"), "{err}");
    let (code, _, err) = cli(&["logs", &id, "--json"], tok);
    assert_eq!(code, 2, "`logs --json` was accepted and ignored: {err}");
    assert!(err.contains("--json"), "{err}");

    let (code, out, err) = cli(&["runs", &id], tok);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello") && out.contains("after"), "{out}");

    let (code, out, err) = cli(&["logs", &id, "hello"], tok);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello 2 slow\nsecond line\n");
    let (code, out, err) = cli(&["logs", &id, "hello", "-f"], tok);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello 2 slow\nsecond line\n");
    let (code, out, err) = cli(&["logs", &id], tok);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("==> hello (succeeded) <==\nhello 2 slow\nsecond line\n==> after"),
        "{out}"
    );

    // Follow a whole live run.
    let (code, out, err) = cli(&["trigger", "ticks", "--json"], tok);
    assert_eq!(code, 0, "{err}");
    let ticks = json(&out)["run_id"].as_str().expect("run_id").to_string();
    let (code, out, err) = cli(&["logs", &ticks, "-f"], tok);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tick 1\n") && out.contains("tick 5\n"),
        "{out}"
    );

    // Cancel and retry.
    let (code, out, _) = cli(&["trigger", "sleeper"], tok);
    assert_eq!(code, 0);
    let nap = out.split_whitespace().nth(2).expect("id").to_string();
    d.wait_run(&nap, RUN_DEADLINE, |s| s == "running");
    let (code, out, err) = cli(&["cancel", &nap], tok);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&nap), "{out}");
    assert_eq!(d.wait_run_final(&nap, RUN_DEADLINE)["status"], "cancelled");
    let (code, _, err) = cli(&["cancel", "999999"], tok);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not found"), "{err}");

    let (code, out, _) = cli(&["trigger", "flaky"], tok);
    assert_eq!(code, 0);
    let flaky = out.split_whitespace().nth(2).expect("id").to_string();
    assert_eq!(d.wait_run_final(&flaky, RUN_DEADLINE)["status"], "failed");
    // A failed run: exit 0 by default (the command worked), 1 with --exit-status; `logs -f`
    // ends with the run's status.
    let (code, _, err) = cli(&["runs", &flaky], tok);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["runs", &flaky, "--exit-status"], tok);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = cli(&["logs", &flaky, "-f", "--exit-status"], tok);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("run {flaky} failed")), "{err}");
    let (code, _, err) = cli(&["logs", &flaky, "shaky", "-f", "--exit-status"], tok);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = cli(&["runs", &id, "--exit-status"], tok);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&["retry", &flaky, "--json"], tok);
    assert_eq!(code, 0, "{err}");
    let again = json(&out)["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(
        d.wait_run_final(&again, RUN_DEADLINE)["status"],
        "succeeded"
    );
    let (code, _, err) = cli(&["retry", "999999"], tok);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not found"), "{err}");

    // A daemon that is not there.
    let mut cmd = agent(&["runs", "--server", "http://127.0.0.1:1"]);
    cmd.env("AGENT_TOKEN", TEST_TOKEN);
    let out = run_with_deadline(cmd, RUN_DEADLINE);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the daemon"));
}

/// Kills a daemon we started, by its PID, when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config without `api_token`: the daemon makes a token, keeps it private in
/// `state_dir/api_token`, and clients started in the directory of `.agent/` use it.
#[test]
fn a_daemon_without_a_configured_token_makes_one_for_local_clients() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(
        dir.join("agent.yaml"),
        "state_dir: .agent\nlisten: 127.0.0.1:0\n",
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    let child = agent(&["daemon", "--config", "agent.yaml"])
        .current_dir(dir)
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("spawn daemon");
    let _daemon = KillOnDrop(child);
    let daemon_log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let addr: std::net::SocketAddr = common::poll(RUN_DEADLINE, || {
        let text = std::fs::read_to_string(dir.join(".agent/daemon.addr")).ok()?;
        let addr = text.trim().parse().ok()?;
        matches!(
            http_request(addr, "GET", "/health", None, None),
            Ok((200, _))
        )
        .then_some(addr)
    })
    .unwrap_or_else(|| panic!("daemon never answered /health\n{}", daemon_log()));

    let token_file = dir.join(".agent/api_token");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    let token = token.trim();
    assert!(token.len() >= 32, "{token:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "token file readable by others: {mode:o}");

    let (code, _) = http_request(addr, "GET", "/api/v1/runs", None, None).expect("answer");
    assert_eq!(code, 401);
    let (code, body) =
        http_request(addr, "GET", "/api/v1/runs", Some(token), None).expect("answer");
    assert_eq!(code, 200, "{body}");

    let server = format!("http://{addr}");
    let mut cmd = agent(&["runs", "--server", &server]);
    cmd.current_dir(dir).env_remove("AGENT_TOKEN");
    let out = run_with_deadline(cmd, RUN_DEADLINE);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no runs\n");

    // Without `--server`: the address the daemon wrote to `.agent/daemon.addr`.
    let mut cmd = agent(&["runs"]);
    cmd.current_dir(dir)
        .env_remove("AGENT_TOKEN")
        .env_remove("AGENT_SERVER");
    let out = run_with_deadline(cmd, RUN_DEADLINE);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the address file was not read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `AGENT_SERVER` as HOST:PORT (no scheme), and `--state-dir` for the token, from
    // elsewhere; `--server` wins over both.
    let mut cmd = agent(&["runs", "--state-dir", &dir.join(".agent").to_string_lossy()]);
    cmd.current_dir(tmp.path().parent().unwrap_or(dir))
        .env_remove("AGENT_TOKEN")
        .env("AGENT_SERVER", addr.to_string());
    let out = run_with_deadline(cmd, RUN_DEADLINE);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = agent(&["runs", "--server", &addr.to_string()]);
    cmd.current_dir(dir)
        .env_remove("AGENT_TOKEN")
        .env("AGENT_SERVER", "127.0.0.1:1");
    let out = run_with_deadline(cmd, RUN_DEADLINE);
    assert_eq!(
        out.status.code(),
        Some(0),
        "`--server HOST:PORT` was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS-terminating proxy on 127.0.0.1 in front of a plain-HTTP daemon: each connection is
/// accepted with the test certificate and relayed byte for byte (server-sent events too)
/// until either side closes. Stops accepting when dropped.
struct TlsProxy {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TlsProxy {
    fn start(acceptor: native_tls::TlsAcceptor, backend: std::net::SocketAddr) -> TlsProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let acceptor = std::sync::Arc::new(acceptor);
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let acceptor = acceptor.clone();
                        let stopping = stopping.clone();
                        std::thread::spawn(move || relay(&acceptor, client, backend, &stopping));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TlsProxy { addr, stop }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Relays one TLS connection to the backend, polling both sides with short read timeouts.
fn relay(
    acceptor: &native_tls::TlsAcceptor,
    client: TcpStream,
    backend: std::net::SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) {
    let _ = client.set_nonblocking(false);
    let Ok(mut tls) = acceptor.accept(client) else {
        return;
    };
    let Ok(mut plain) = TcpStream::connect(backend) else {
        return;
    };
    let tick = Some(Duration::from_millis(10));
    let _ = tls.get_ref().set_read_timeout(tick);
    let _ = plain.set_read_timeout(tick);
    let mut buf = [0u8; 16 * 1024];
    let idle = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match plain.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}

/// The CLI talks to a daemon at an `https://` URL (here a TLS-terminating proxy with a
/// certificate made for the test, trusted through `SSL_CERT_FILE`): trigger, the runs
/// table, a run's details, its log followed as server-sent events and `--json` all work;
/// without trusting the certificate the client refuses the server and says so.
#[test]
fn the_cli_works_against_an_https_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = daemon_with_workflows(tmp.path());
    let backend: std::net::SocketAddr = d
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the daemon's address");
    let cert = common::notify::TestCert::generate();
    let proxy = TlsProxy::start(cert.acceptor(), backend);
    let server = format!("https://127.0.0.1:{}", proxy.addr.port());
    let cert_file = cert.cert_file.to_string_lossy().into_owned();
    let cli = |args: &[&str], trust: bool| {
        let mut all = args.to_vec();
        all.extend(["--server", &server]);
        let mut cmd = agent(&all);
        cmd.current_dir(tmp.path())
            .env("AGENT_TOKEN", TEST_TOKEN)
            .env_remove("AGENT_SERVER")
            .env_remove("SSL_CERT_DIR");
        if trust {
            cmd.env("SSL_CERT_FILE", &cert_file);
        } else {
            cmd.env_remove("SSL_CERT_FILE");
        }
        let out = run_with_deadline(cmd, RUN_DEADLINE);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = cli(&["trigger", "greet", "-p", "count=3", "--json"], true);
    assert_eq!(code, 0, "{err}\n{}", d.log_text());
    let id = json(&out)["run_id"].as_str().expect("run_id").to_string();
    let (code, out, err) = cli(&["logs", &id, "hello", "-f", "--exit-status"], true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello 3 fast"), "{out}");
    assert!(err.contains("succeeded"), "{err}");
    assert_eq!(d.wait_run_final(&id, RUN_DEADLINE)["status"], "succeeded");

    let (code, out, err) = cli(&["runs"], true);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&id) && l.contains("greet") && l.contains("succeeded")),
        "{out}"
    );
    let (code, out, err) = cli(&["runs", &id, "--exit-status"], true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello") && out.contains("after"), "{out}");
    let (code, out, err) = cli(&["runs", "--json", "--limit", "1"], true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["runs"][0]["run_id"], id.as_str());

    // Not trusted: refused before any request, with the reason.
    let (code, _, err) = cli(&["runs"], false);
    assert_eq!(code, 1, "{err}");
    let lower = err.to_lowercase();
    assert!(
        lower.contains("cannot reach the daemon")
            && (lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl")),
        "{err}"
    );
}

/// Another process holding the database's write lock (`BEGIN IMMEDIATE`, 5 s) does not stall
/// the API: `/health` and `GET /api/v1/runs` both answer 200 while the lock is still held,
/// even with a manual run asked for at the same moment (its enqueue waits for the lock).
/// Guards against store calls made on the daemon's async worker threads.
#[test]
fn the_api_answers_while_another_process_holds_the_write_lock() {
    let root = tempfile::tempdir().expect("tempdir");
    let d = daemon_with_workflows(root.path());
    let id = common::daemon::trigger_with(&d, "greet", r#"{"parameters": {"count": 1}}"#);
    d.wait_run_final(&id, RUN_DEADLINE);

    let db = d.state_dir.join("agent.sqlite3");
    let conn = rusqlite::Connection::open(&db).expect("open the daemon's database");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = d.addr;
    let asker = std::thread::spawn(move || {
        // A write that must wait for the lock, sent first.
        let trigger = std::thread::spawn(move || {
            let _ = http_request(
                addr,
                "POST",
                "/api/v1/workflows/greet/runs",
                Some(TEST_TOKEN),
                Some(r#"{"parameters": {"count": 2}}"#),
            );
        });
        std::thread::sleep(Duration::from_millis(100));
        for path in ["/health", "/api/v1/runs", "/health", "/api/v1/runs"] {
            let started = std::time::Instant::now();
            let answer = http_request(addr, "GET", path, Some(TEST_TOKEN), None);
            let _ = tx.send((path, answer.map(|(code, _)| code), started.elapsed()));
        }
        trigger
    });
    // Hold the lock for 5 s, then look at what was answered meanwhile.
    std::thread::sleep(Duration::from_secs(5));
    let answered: Vec<_> = rx.try_iter().collect();
    conn.execute_batch("COMMIT")
        .expect("release the write lock");
    let trigger = asker.join().expect("asker");
    trigger.join().expect("trigger");
    for (path, code, took) in &answered {
        eprintln!("{path}: {code:?} in {took:?} while the lock was held");
    }
    assert_eq!(
        answered.len(),
        4,
        "only {answered:?} answered while the write lock was held\n{}",
        d.log_text()
    );
    for (path, code, _) in &answered {
        assert!(matches!(code, Ok(200)), "{path} answered {code:?}");
    }
}

/// A run keeps going through another process holding the database's write lock: the end of
/// its running step and the start of its next step wait for the lock (the next step's
/// process is not spawned before its start is on disk), then the run completes. Guards
/// against a store writer that gives up or a step that starts unrecorded.
#[test]
fn a_run_waits_for_the_write_lock_and_then_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let started = root.path().join("started");
    let gate = root.path().join("gate");
    let stamp = root.path().join("stamp");
    let q = |p: &Path| yaml_quote(&p.to_string_lossy());
    let gated = format!(
        "workflow:
  name: gated
  stages:
    - name: main
      steps:
        - id: wait
          run: |
            touch {started}
            while [ ! -e {gate} ]; do sleep 0.05; done
        - id: after
          run: touch {stamp}
",
        started = q(&started),
        gate = q(&gate),
        stamp = q(&stamp),
    );
    let repo = root.path().join("repo");
    init_repo(&repo, &[(".workflows/gated.yaml", &gated)]);
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n    branches: [main]\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&root.path().join("daemon"), &config);
    common::poll(RUN_DEADLINE, || {
        let v = d.get_json("/api/v1/workflows");
        (v["workflows"].as_array()?.len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("workflow never listed\n{}", d.log_text()));
    let id = common::daemon::trigger(&d, "gated");
    common::poll(RUN_DEADLINE, || started.exists().then_some(()))
        .unwrap_or_else(|| panic!("the first step never started\n{}", d.log_text()));

    let db = d.state_dir.join("agent.sqlite3");
    let conn = rusqlite::Connection::open(&db).expect("open the daemon's database");
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    // The first step ends now; its end and the next step's start must wait for the lock.
    std::fs::write(&gate, "").expect("open the gate");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !stamp.exists(),
        "the next step ran before its start could be recorded\n{}",
        d.log_text()
    );
    let (code, _) = http_request(d.addr, "GET", "/health", Some(TEST_TOKEN), None)
        .expect("health while the lock is held");
    assert_eq!(code, 200);
    conn.execute_batch("COMMIT")
        .expect("release the write lock");

    let run = d.wait_run_final(&id, RUN_DEADLINE);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", d.log_text());
    assert!(stamp.exists(), "the next step never ran");
}
