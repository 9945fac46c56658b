//! `agent exec` end to end: retries, error handlers, rollback, compensation, timeouts and
//! cancellation, with real processes.

use crate::common;
use crate::common::exec;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use exec::{Ws, assert_code, report, step};
use serde_json::json;

#[test]
fn retries_count_attempts_and_respect_retry_on() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: retry
  metadata:
    retry_policy:
      max_attempts: 3
      backoff: exponential
      delay: 0.05
  stages:
    - name: s
      steps:
        - id: flaky
          run: |
            echo x >> flaky.count
            [ "$(wc -l < flaky.count)" -ge 3 ]
        - id: classed
          run: |
            echo x >> classed.count
            echo "error_class=Permanent" >> "$AGENT_OUTPUT"
            exit 1
          retry:
            retry_on: [Transient]
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "flaky")["status"], "succeeded");
    assert_eq!(step(&r, "flaky")["attempts"], 3);
    assert_eq!(step(&r, "classed")["attempts"], 1);
    assert_eq!(step(&r, "classed")["error_class"], "Permanent");
    assert_eq!(ws.read("classed.count").lines().count(), 1);
    assert!(
        common::stderr(&out).contains("retrying"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn handler_retry_then_rollback_reads_earlier_outputs() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: deploy
  stages:
    - name: prep
      steps:
        - id: backup
          run: echo "backup_id=bk-42" >> "$AGENT_OUTPUT"
    - name: deploy
      steps:
        - id: health
          run: |
            echo x >> health.count
            echo "error_class=HealthCheckFailed" >> "$AGENT_OUTPUT"
            exit 1
          retry:
            delay: 0.01
        - id: never
          run: touch never-ran
  error_handlers:
    - error: HealthCheckFailed
      action: retry
      max_retries: 2
      then: rollback
      notify: true
  rollback:
    steps:
      - id: restore
        run: echo "${{ steps.backup.output.backup_id }}" > restored
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(step(&r, "health")["attempts"], 3);
    assert_eq!(ws.read("health.count").lines().count(), 3);
    assert_eq!(step(&r, "never")["status"], "skipped");
    assert_eq!(r["rollback"]["status"], "succeeded");
    assert_eq!(r["rollback"]["steps"][0]["id"], "restore");
    assert_eq!(ws.read("restored").trim(), "bk-42");
    assert!(!ws.exists("never-ran"));
    assert!(
        common::stderr(&out).contains("notify"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn compensation_runs_in_reverse_completion_order() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: saga
  stages:
    - name: s
      steps:
        - id: a
          run: echo a >> done.txt
          compensate:
            - id: undo_a
              run: echo a >> undo.txt
        - id: b
          run: echo b >> done.txt
        - id: c
          run: echo c >> done.txt
          compensate:
            - id: undo_c
              run: echo c >> undo.txt
    - name: t
      parallel: auto
      steps:
        - id: e
          run: echo e >> done.txt
          needs: [d]
          compensate:
            - id: undo_e
              run: echo e >> undo.txt
        - id: d
          run: echo d >> done.txt
          compensate:
            - id: undo_d
              run: echo d >> undo.txt
        - id: boom
          run: exit 1
          needs: [e]
          on_failure: compensate
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(ws.read("done.txt"), "a\nb\nc\nd\ne\n");
    assert_eq!(ws.read("undo.txt"), "e\nd\nc\na\n");
    assert_eq!(r["compensated"], json!(["e", "d", "c", "a"]));
    assert_eq!(r["rollback"], serde_json::Value::Null);
}

#[test]
fn handler_actions_continue_and_escalate() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: handlers
  stages:
    - name: s
      steps:
        - id: soft
          run: |
            echo "error_class=Soft" >> "$AGENT_OUTPUT"
            exit 1
        - id: next
          run: touch next-ran
        - id: hard
          run: |
            echo "error_class=Hard" >> "$AGENT_OUTPUT"
            exit 1
  error_handlers:
    - error: Soft
      action: continue
      steps:
        - id: cleanup
          run: touch handler-step-ran
    - error: Hard
      action: escalate
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "soft")["status"], "failed");
    assert_eq!(step(&r, "next")["status"], "succeeded");
    assert!(ws.exists("handler-step-ran"));
    assert!(
        common::stderr(&out).contains("ESCALATION"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(r["status"], "failed");
}

#[test]
fn on_failure_continue_keeps_the_run_green() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: cont\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: exit 2\n          on_failure: continue\n        - id: b\n          run: touch b-ran\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    assert_eq!(step(&r, "a")["status"], "failed");
    assert!(ws.exists("b-ran"));
}

fn sleepers_alive(tag: &str) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", &format!("sleep {tag}")])
        .output()
        .expect("pgrep");
    !out.stdout.is_empty()
}

#[test]
fn step_timeout_kills_the_whole_tree_including_setsid() {
    let ws = Ws::new();
    // A sleep length no other test uses, so that the check below sees only ours.
    let tag = "307.25";
    ws.write(
        "wf.yaml",
        &format!(
            "workflow:\n  name: to\n  stages:\n    - name: s\n      steps:\n        - id: slow\n          run: sleep {tag} & setsid sleep {tag} & sleep {tag}\n          timeout: 1\n"
        ),
    );
    // The sleeps last 307 s: a `Timeout` report shows the step was ended, not waited for.
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "slow")["error_class"], "Timeout");
    assert!(
        common::poll(Duration::from_secs(3), || (!sleepers_alive(tag))
            .then_some(()))
        .is_some(),
        "a `sleep {tag}` survived the step"
    );
}

#[test]
fn workflow_timeout_fails_the_run() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: wto\n  metadata:\n    timeout: 1\n  stages:\n    - name: s\n      steps:\n        - id: slow\n          run: sleep 30\n        - id: later\n          run: touch later-ran\n",
    );
    // `slow` sleeps 30 s: its `Timeout` below shows the run ended it instead of waiting.
    let out = ws.exec("wf.yaml", &["--kill-grace", "1"]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "slow")["error_class"], "Timeout");
    assert_eq!(step(&r, "later")["status"], "skipped");
    assert!(!ws.exists("later-ran"));
}

#[test]
fn ctrl_c_cancels_gracefully() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: cancel\n  stages:\n    - name: s\n      steps:\n        - id: long\n          run: touch started; sleep 30; touch slept\n        - id: later\n          run: touch later-ran\n        - id: cleanup\n          run: touch cleanup-ran\n          when: ${{ cancelled() }}\n",
    );
    let wsdir = ws.path().to_string_lossy().into_owned();
    let mut cmd = common::agent(&["exec", "wf.yaml", "--workdir", &wsdir, "--json"]);
    cmd.current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn agent");
    let pid = child.id();
    assert!(
        common::poll(Duration::from_secs(20), || ws
            .exists("started")
            .then_some(()))
        .is_some(),
        "step never started"
    );
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    // The step was ended before its 30 s sleep was over.
    assert!(!ws.exists("slept"), "the step ran to its end");
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(r["status"], "cancelled");
    assert_eq!(step(&r, "long")["status"], "cancelled");
    assert_ne!(step(&r, "later")["status"], "succeeded");
    assert!(!ws.exists("later-ran"));
    assert_eq!(step(&r, "cleanup")["status"], "succeeded");
    assert!(ws.exists("cleanup-ran"));
}

#[test]
fn fixed_backoff_waits_between_tries() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: wait\n  stages:\n    - name: s\n      steps:\n        - id: f\n          run: exit 1\n          retry:\n            max_attempts: 3\n            backoff: fixed\n            delay: 0.4\n",
    );
    let t0 = Instant::now();
    let out = ws.exec("wf.yaml", &[]);
    let took = t0.elapsed();
    assert_code(&out, 1);
    assert_eq!(step(&report(&out), "f")["attempts"], 3);
    assert!(took >= Duration::from_millis(800), "took {took:?}");
}

#[test]
fn second_ctrl_c_kills_at_once() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: kill\n  stages:\n    - name: s\n      steps:\n        - id: stubborn\n          run: trap '' TERM; touch started; sleep 30; touch slept\n",
    );
    let wsdir = ws.path().to_string_lossy().into_owned();
    let mut cmd = common::agent(&[
        "exec",
        "wf.yaml",
        "--workdir",
        &wsdir,
        "--json",
        "--kill-grace",
        "60",
    ]);
    cmd.current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agent");
    let pid = child.id().to_string();
    assert!(
        common::poll(Duration::from_secs(20), || ws
            .exists("started")
            .then_some(()))
        .is_some(),
        "step never started"
    );
    let int = || {
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
    };
    assert!(int().success());
    // The step ignores SIGTERM: the run waits for the grace period...
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "exited before the kill"
    );
    // ...until the second Ctrl-C, which kills the step before its 30 s sleep is over (the
    // grace period is 60 s).
    assert!(int().success());
    let out = child.wait_with_output().expect("wait");
    assert!(!ws.exists("slept"), "the step ran to its end");
    assert_code(&out, 1);
    assert_eq!(report(&out)["status"], "cancelled");
}

/// At the end of an `agent exec` run, a process a step left behind after a double fork and
/// `setsid` is still found and killed, while a process outside the agent's tree carrying the
/// same run marker is left alone: the agent is a child subreaper, so the sweep walks its own
/// descendants instead of reading the environment of every process on the machine.
#[test]
fn run_end_sweep_kills_the_runs_orphans_and_spares_unrelated_processes() {
    let ws = Ws::new();
    // Sleep lengths no other test uses, so that the checks below see only ours.
    let (left, unrelated_tag) = ("307.31", "307.37");
    ws.write(
        "wf.yaml",
        &format!(
            "workflow:\n  name: sweep\n  stages:\n    - name: s\n      steps:\n        - id: leave\n          run: (setsid sleep {left} > /dev/null 2>&1 < /dev/null &); echo \"$AGENT_RUN_MARKER\" > marker\n        - id: hold\n          run: i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n"
        ),
    );
    let wsdir = ws.path().to_string_lossy().into_owned();
    let mut cmd = common::agent(&["exec", "wf.yaml", "--workdir", &wsdir, "--json"]);
    cmd.current_dir(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let agent = cmd.spawn().expect("spawn agent");
    let marker = common::poll(Duration::from_secs(30), || {
        let m = ws.read("marker");
        m.ends_with('\n').then(|| m.trim().to_string())
    })
    .expect("the first step never wrote the run marker");
    assert!(!marker.is_empty(), "steps carry a run marker");
    // Started by the test, not by the agent: not one of its descendants.
    let mut unrelated = Command::new("sleep")
        .arg(unrelated_tag)
        .env("AGENT_RUN_MARKER", &marker)
        .spawn()
        .expect("spawn sleep");
    ws.write("go", "");
    let out = agent.wait_with_output().expect("wait");
    let unrelated_alive = unrelated.try_wait().expect("try_wait").is_none();
    let _ = unrelated.kill();
    let _ = unrelated.wait();
    assert_code(&out, 0);
    assert!(
        common::poll(Duration::from_secs(10), || (!sleepers_alive(left))
            .then_some(()))
        .is_some(),
        "the setsid sleeper `sleep {left}` outlived the run"
    );
    assert!(
        unrelated_alive,
        "the run's sweep killed a process that is not the run's"
    );
}
