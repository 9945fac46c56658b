//! Step logs across a fleet: two `agent daemon` processes (nodes `a` and `b`, each with its
//! own state directory and port) on one PostgreSQL database. A run executed by node `a` has
//! its step log served by node `b`'s API, which holds no file of it: as plain text
//! byte-identical to node `a`'s, and with `?follow=true` live while the step still prints,
//! `Last-Event-ID` included.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;
use common::daemon::{TEST_TOKEN, TestDaemon, init_repo, trigger_with, yaml_quote};

const DEADLINE: Duration = Duration::from_secs(90);

/// `print` prints five lines, waits for the file `go` (so it is still running while the test
/// follows it), then prints five more; `after` runs once it ended.
fn printer(go: &Path) -> String {
    format!(
        r#"workflow:
  name: printer
  on:
    manual: true
  stages:
    - name: s
      steps:
        - id: print
          run: |
            for i in 1 2 3 4 5; do echo "line $i of the printer"; done
            n=0
            while [ ! -e '{go}' ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
            for i in 6 7 8 9 10; do echo "line $i of the printer"; done
        - id: after
          run: echo after
"#,
        go = go.display()
    )
}

/// One server-sent event: its name, id and data.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A `GET` with `Accept: text/event-stream` read event by event.
struct Follow {
    stream: TcpStream,
    raw: Vec<u8>,
}

impl Follow {
    fn open(d: &TestDaemon, path: &str, last_event_id: Option<&str>) -> Follow {
        let mut stream = TcpStream::connect(d.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
             Accept: text/event-stream\r\nConnection: close\r\n",
            d.addr
        );
        if let Some(id) = last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send request");
        Follow {
            stream,
            raw: Vec::new(),
        }
    }

    /// The complete events received so far (the body de-chunked).
    fn events(&self) -> Vec<SseEvent> {
        let text = String::from_utf8_lossy(&self.raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return Vec::new();
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        let mut events = Vec::new();
        let mut blocks: Vec<&str> = body.split("\n\n").collect();
        blocks.pop(); // Not ended by a blank line yet.
        for block in blocks {
            let (mut event, mut id, mut data) = (None, None, Vec::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            if let Some(event) = event {
                events.push(SseEvent {
                    event,
                    id,
                    data: data.join("\n"),
                });
            }
        }
        events
    }

    /// Reads until `done` holds of the events so far (or the deadline fails the test).
    fn until(&mut self, what: &str, done: impl Fn(&[SseEvent]) -> bool) -> Vec<SseEvent> {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "the stream ended before {what}: {:?}",
                    String::from_utf8_lossy(&self.raw)
                ),
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read the stream: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {DEADLINE:?}: {:?}",
                String::from_utf8_lossy(&self.raw)
            );
        }
    }
}

/// Undoes `Transfer-Encoding: chunked` (as far as whole chunks go).
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

fn log_lines(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.data.clone())
        .collect()
}

fn printed(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("line {i} of the printer")).collect()
}

/// The status of step `step` in run `run` as node `d` reports it.
fn step_status(d: &TestDaemon, run: &str, step: &str) -> String {
    let v = d.get_json(&format!("/api/v1/runs/{run}"));
    v["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["steps"].as_array().cloned().unwrap_or_default())
        .find(|s| s["id"] == step)
        .map(|s| s["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// A run executed by node `a` has its step log served by node `b`, which never ran it: the
/// plain log byte-identical to node `a`'s (and to `a`'s file), `?follow=true` live while the
/// step still prints (the step waits for the test, so the lines cannot come from a finished
/// log) and to the step's end, and a follower reconnecting to `b` with `Last-Event-ID` gets
/// only the lines after it.
#[test]

fn a_run_on_one_node_has_its_log_served_live_by_another() {
    let url = agent::store::test_pg::database_url();
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let go = tmp.path().join("go");
    init_repo(&repo, &[(".workflows/printer.yaml", &printer(&go))]);
    let config = |node: &str| {
        format!(
            "node: {node}\nstore: {{kind: postgres, url_env: AGENT_PG_URL, pool: 4}}\n\
             repos:\n  - name: app\n    path: {}\n    branches: [main]\n",
            yaml_quote(&repo.to_string_lossy())
        )
    };
    let env = [("AGENT_PG_URL", url.as_str())];
    let a = TestDaemon::start_with_env(&tmp.path().join("a"), &config("a"), &env);
    common::poll(DEADLINE, || {
        let v = a.get_json("/api/v1/workflows");
        (v["workflows"].as_array()?.len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the workflow was never listed\n{}", a.log_text()));
    let run = trigger_with(&a, "printer", "{}");
    let log = format!("/api/v1/runs/{run}/steps/print/log");
    // The run is node a's (it prints) before node b starts, so node b never claims it.
    common::poll(DEADLINE, || {
        let (code, body) = a.get(&log);
        (code == 200 && body.contains("line 5 of")).then_some(())
    })
    .unwrap_or_else(|| panic!("node a never printed\n{}", a.log_text()));
    let b = TestDaemon::start_with_env(&tmp.path().join("b"), &config("b"), &env);

    // Live through node b: the first five lines while the step waits.
    let mut follow = Follow::open(&b, &format!("{log}?follow=true"), None);
    let early = follow.until("the first five lines", |e| log_lines(e).len() >= 5);
    assert_eq!(log_lines(&early), printed(1..=5), "{early:?}");
    assert_eq!(step_status(&a, &run, "print"), "running");
    // The plain log through node b is node a's, so far.
    let (code, body) = b.get(&log);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, a.get(&log).1);
    let fifth = early
        .iter()
        .filter(|e| e.event == "log")
        .nth(4)
        .and_then(|e| e.id.clone())
        .expect("the fifth line's event id");

    // The rest, to the step's end.
    std::fs::write(&go, "").expect("let the step go on");
    let all = follow.until("the end event", |e| e.iter().any(|e| e.event == "end"));
    assert_eq!(log_lines(&all), printed(1..=10), "{all:?}");
    let end = all.last().expect("events");
    assert_eq!(end.event, "end", "{all:?}");
    assert!(end.data.contains("succeeded"), "{end:?}");

    // Byte-identical once the run is over; node b holds no file of it.
    let done = a.wait_run_final(&run, DEADLINE);
    assert_eq!(done["status"], "succeeded", "{done}");
    let file = std::fs::read(a.state_dir.join(format!("logs/{run}/print.log"))).expect("a's file");
    let (code, from_b) = b.get(&log);
    assert_eq!(code, 200, "{from_b}");
    assert_eq!(from_b.as_bytes(), file.as_slice());
    assert_eq!(a.get(&log).1.as_bytes(), file.as_slice());
    assert!(!b.state_dir.join(format!("logs/{run}")).exists());

    // Reconnecting to node b after the fifth line: lines 6 to 10, then the end.
    let mut again = Follow::open(&b, &format!("{log}?follow=true"), Some(&fifth));
    let rest = again.until("the end event", |e| e.iter().any(|e| e.event == "end"));
    assert_eq!(log_lines(&rest), printed(6..=10), "{rest:?}");
    let ids: Vec<u64> = rest
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect();
    assert_eq!(ids.last().copied(), Some(file.len() as u64), "{rest:?}");
}
