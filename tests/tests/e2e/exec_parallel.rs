//! `agent exec` end to end: parallel stages, `max_parallel`, `parallel: auto` by
//! dependencies, and resource admission (`cpu:` requests against the machine's cores).

use crate::common::exec;

use std::time::{Duration, Instant};

use exec::{Ws, assert_code, report, step};

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `(start_ns, end_ns)` intervals from `times.*` files the steps wrote.
fn intervals(ws: &Ws, ids: &[&str]) -> Vec<(u128, u128)> {
    ids.iter()
        .map(|id| {
            let text = ws.read(&format!("times.{id}"));
            let nums: Vec<u128> = text
                .split_whitespace()
                .map(|n| n.parse().expect("nanoseconds"))
                .collect();
            assert_eq!(nums.len(), 2, "times.{id}: {text:?}");
            (nums[0], nums[1])
        })
        .collect()
}

fn max_overlap(iv: &[(u128, u128)]) -> usize {
    iv.iter()
        .map(|&(s, _)| iv.iter().filter(|&&(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn four_one_second_sleeps_with_max_parallel_2_run_two_at_a_time() {
    let ws = Ws::new();
    let mut text = String::from(
        "workflow:\n  name: p\n  stages:\n    - name: s\n      parallel: true\n      max_parallel: 2\n      steps:\n",
    );
    for i in 0..4 {
        text.push_str(&format!(
            "        - id: s{i}\n          run: |\n            s=$(date +%s%N); sleep 1; echo \"$s $(date +%s%N)\" > times.s{i}\n          resources:\n            cpu: 0\n"
        ));
    }
    ws.write("wf.yaml", &text);
    let t0 = Instant::now();
    let out = ws.exec("wf.yaml", &[]);
    let took = t0.elapsed();
    assert_code(&out, 0);
    // Never more than two at once, and two did run at once (ordering, not wall-clock bounds).
    let iv = intervals(&ws, &["s0", "s1", "s2", "s3"]);
    assert_eq!(max_overlap(&iv), 2, "steps: {iv:?}");
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
}

#[test]
fn full_machine_cpu_requests_run_one_at_a_time() {
    let ws = Ws::new();
    let n = cores();
    let ids = ["c0", "c1", "c2", "c3"];
    let mut text = String::from(
        "workflow:\n  name: cpu\n  stages:\n    - name: s\n      parallel: true\n      max_parallel: 4\n      steps:\n",
    );
    for id in ids {
        text.push_str(&format!(
            "        - id: {id}\n          run: |\n            s=$(date +%s%N); sleep 0.3; echo \"$s $(date +%s%N)\" > times.{id}\n          resources:\n            cpu: {n}\n"
        ));
    }
    ws.write("wf.yaml", &text);
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let iv = intervals(&ws, &ids);
    assert_eq!(max_overlap(&iv), 1, "steps overlapped: {iv:?}");
}

#[test]
fn oversized_request_fails_at_once_with_resource_unavailable() {
    let ws = Ws::new();
    let n = cores() + 1;
    ws.write(
        "wf.yaml",
        &format!(
            "workflow:\n  name: big\n  stages:\n    - name: s\n      steps:\n        - id: huge\n          run: touch huge-ran\n          resources:\n            cpu: {n}\n"
        ),
    );
    // It fails instead of waiting for cores that never come (`exec` has a deadline).
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "huge")["error_class"], "ResourceUnavailable");
    assert!(!ws.exists("huge-ran"));
}

#[test]
fn sequential_stage_runs_in_file_order() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: seq\n  stages:\n    - name: s\n      parallel: false\n      steps:\n        - id: a\n          run: sleep 0.2; echo a >> order\n        - id: b\n          run: echo b >> order\n        - id: c\n          run: echo c >> order\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("order"), "a\nb\nc\n");
}

#[test]
fn auto_parallel_follows_needs_and_step_references() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: auto
  stages:
    - name: s
      parallel: auto
      max_parallel: 4
      steps:
        - id: report
          run: echo "report ${{ steps.build.output.v }} ${{ steps.lint.output.v }}" > report.txt
        - id: build
          needs: [fetch]
          run: |
            s=$(date +%s%N); sleep 0.4; echo "$s $(date +%s%N)" > times.build
            echo "v=built" >> "$AGENT_OUTPUT"
        - id: lint
          run: |
            s=$(date +%s%N); sleep 0.4; echo "$s $(date +%s%N)" > times.lint
            echo "v=linted" >> "$AGENT_OUTPUT"
        - id: fetch
          run: s=$(date +%s%N); sleep 0.1; echo "$s $(date +%s%N)" > times.fetch
          resources:
            cpu: 0
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("report.txt").trim(), "report built linted");
    let iv = intervals(&ws, &["fetch", "build", "lint"]);
    // build waited for fetch; lint did not wait for anything.
    assert!(
        iv[1].0 >= iv[0].1,
        "build started before fetch ended: {iv:?}"
    );
    assert!(iv[2].0 < iv[1].0, "lint should start before build: {iv:?}");
    let r = report(&out);
    assert_eq!(step(&r, "report")["status"], "succeeded");
}

#[test]
fn max_parallel_defaults_to_five() {
    let ws = Ws::new();
    let mut text = String::from(
        "workflow:\n  name: p5\n  stages:\n    - name: s\n      parallel: true\n      steps:\n",
    );
    let ids: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    for id in &ids {
        text.push_str(&format!(
            "        - id: {id}\n          run: |\n            s=$(date +%s%N); sleep 0.5; echo \"$s $(date +%s%N)\" > times.{id}\n          resources:\n            cpu: 0\n"
        ));
    }
    ws.write("wf.yaml", &text);
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(max_overlap(&intervals(&ws, &refs)), 5);
}
