//! What a finished run shows of its steps, end to end: a called workflow's steps nested in
//! the report under their call, compensation and rollback steps, one log file per step
//! (`x/y` and `x_y` apart), `agent logs RUN` printing every step in order, the recap of
//! every failed step that ends `agent exec` and `agent logs RUN`, and the terminal view on a
//! real pseudo-terminal of a fixed width.

use crate::common;
use crate::common::exec;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{TestDaemon, init_repo, yaml_quote};
use exec::{Ws, assert_code, report, step};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

/// A CI workflow called by `ci`: `unit` prints 30 lines and fails, `lint` succeeds.
const CHILD: &str = r#"workflow:
  name: child
  stages:
    - name: test
      parallel: true
      steps:
        - id: unit
          run: |
            for i in $(seq 1 30); do echo "unit line $i"; done
            exit 3
        - id: lint
          run: echo lint fine
"#;

/// Calls `child` as `x` beside a step `x_y` (their logs once shared a file), with a
/// parallel failure, a compensation and a rollback.
const PARENT: &str = r#"workflow:
  name: parent
  stages:
    - name: prep
      steps:
        - id: setup
          run: echo setting up
          compensate:
            - id: undo_setup
              run: echo undoing setup
    - name: ci
      parallel: true
      steps:
        - id: x
          type: workflow
          workflow: child
          on_failure: compensate
        - id: x_unit
          run: echo I am x_unit
        - id: other
          run: |
            echo other says hi
            exit 5
          on_failure: rollback
  rollback:
    steps:
      - id: restore
        run: echo restoring
"#;

/// The steps a report lists under its call (`step.workflow.stages[].steps[]`).
fn called_steps(call: &Value) -> Vec<(String, String)> {
    call["workflow"]["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no nested stages in {call:#}"))
        .iter()
        .flat_map(|st| st["steps"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A finished `agent exec` report held only the call step, and the run's last line named
/// only the first failure: the report now nests the called steps (and keeps compensation
/// steps), and stderr ends with every failed step, its error and its last 20 lines.
#[test]
fn exec_reports_called_steps_and_recaps_every_failure() {
    let ws = Ws::new();
    ws.write("child.yaml", CHILD);
    ws.write("parent.yaml", PARENT);
    let out = ws.exec("parent.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    let call = step(&r, "x");
    assert_eq!(call["status"], "failed", "{call:#}");
    assert_eq!(call["workflow"]["name"], "child");
    assert_eq!(call["workflow"]["status"], "failed");
    let mut inner = called_steps(call);
    inner.sort();
    assert_eq!(
        inner,
        [
            ("lint".to_string(), "succeeded".to_string()),
            ("unit".to_string(), "failed".to_string())
        ]
    );
    assert!(step(&r, "setup").get("workflow").is_none());
    assert_eq!(r["compensated"], serde_json::json!(["setup"]));
    assert_eq!(r["compensation"][0]["id"], "undo_setup");
    assert_eq!(r["compensation"][0]["status"], "succeeded");
    assert_eq!(step(&r, "restore")["status"], "succeeded");

    let err = common::stderr(&out);
    let recap = &err[err.rfind("run failed in").expect("run line")..];
    assert!(
        recap.contains(
            "--- failed: x/unit (ExitCode, exit code 3), last 20 of 30 lines ---\nunit line 11\n"
        ),
        "{recap}"
    );
    assert!(recap.contains("unit line 30\n"), "{recap}");
    assert!(
        recap.contains(
            "--- failed: other (ExitCode, exit code 5), its only line ---\nother says hi\n"
        ),
        "{recap}"
    );
    let last = recap.lines().last().expect("last line");
    assert!(
        last == "failed steps (2): x/unit, other" || last == "failed steps (2): other, x/unit",
        "{recap}"
    );
}

/// The terminal view on a real pseudo-terminal 30 columns wide: every rewrite of the
/// "running" line fits one row (wider ones wrapped and left rows behind), the marks are
/// coloured; with `TERM=dumb` or `NO_COLOR` the output holds no escape sequence.
#[test]
fn the_terminal_view_fits_a_narrow_pseudo_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to make a pseudo-terminal");
        return;
    }
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: narrow
  stages:
    - name: s
      parallel: true
      steps:
        - id: a_step_with_a_rather_long_identifier
          run: sleep 1.2
        - id: another_step_with_a_long_identifier
          run: sleep 1.2
        - id: failing
          run: exit 1
          on_failure: continue
"#,
    );
    let run_in_pty = |env: &[(&str, &str)]| -> String {
        let inner = format!(
            "stty cols 30 rows 20; exec '{}' exec wf.yaml",
            common::agent_bin().to_string_lossy().replace('\'', "'\\''")
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"])
            .current_dir(ws.path())
            .env_remove("NO_COLOR")
            .env("TERM", "xterm");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = common::run_with_deadline(cmd, DEADLINE);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let text = run_in_pty(&[]);
    let mut status_lines = 0;
    for segment in text.split("\r\x1b[K") {
        let row = segment.rsplit('\n').next().unwrap_or_default();
        let visible = strip_escapes(row).replace('\r', "");
        if visible.starts_with("running:") {
            status_lines += 1;
            assert!(
                visible.chars().count() <= 29,
                "a {}-column running line on a 30-column terminal: {visible:?}",
                visible.chars().count()
            );
        }
    }
    assert!(status_lines > 0, "no running line seen:\n{text:?}");
    assert!(
        text.contains("\x1b[31mfailed (continued)\x1b[0m"),
        "{text:?}"
    );
    assert!(text.contains("\x1b[32mok\x1b[0m"), "{text:?}");

    for env in [[("TERM", "dumb")], [("NO_COLOR", "1")]] {
        let text = run_in_pty(&env);
        assert!(!text.contains('\x1b'), "{env:?}: {text:?}");
        assert!(
            text.contains("a_step_with_a_rather_long_identifier: started"),
            "{env:?}: {text}"
        );
    }
}

/// Text without its ANSI escape sequences.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn agent_cli(d: &TestDaemon, cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let server = d.url();
    let mut all = args.to_vec();
    all.extend(["--server", &server]);
    let mut cmd = common::agent(&all);
    cmd.current_dir(cwd)
        .env("AGENT_TOKEN", common::daemon::TEST_TOKEN);
    let out = common::run_with_deadline(cmd, DEADLINE);
    (
        out.status.code().unwrap_or(-1),
        common::stdout(&out),
        common::stderr(&out),
    )
}

/// In the daemon, a finished run's report held only the call step, `agent logs RUN`
/// printed an empty section for it and nothing of the called steps, compensation or
/// rollback, and `x/unit` shared its log file with `x_unit`. Now the API report nests the
/// called steps, every step has its own log, and `agent logs RUN` prints them all in order
/// and ends with the recap.
#[test]
fn agent_logs_prints_called_and_cleanup_steps_and_recaps() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(
        &repo,
        &[
            (".workflows/child.yaml", CHILD),
            (".workflows/parent.yaml", PARENT),
        ],
    );
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n    branches: [main]\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let id = common::poll(DEADLINE, || {
        let (code, body) = d.post("/api/v1/workflows/parent/runs", r#"{"repo":"app"}"#);
        (code == 202).then(|| {
            let v: Value = serde_json::from_str(&body).expect("JSON");
            v["run_id"].as_str().expect("run_id").to_string()
        })
    })
    .unwrap_or_else(|| panic!("cannot trigger parent\n{}", d.log_text()));
    let run = d.wait_run_final(&id, DEADLINE);
    assert_eq!(run["status"], "failed", "{run:#}");
    let call = step(&run, "x");
    let mut inner = called_steps(call);
    inner.sort();
    assert_eq!(
        inner,
        [
            ("lint".to_string(), "succeeded".to_string()),
            ("unit".to_string(), "failed".to_string())
        ],
        "{run:#}"
    );
    assert_eq!(run["compensation"][0]["id"], "undo_setup", "{run:#}");

    let (code, log) = d.get(&format!("/api/v1/runs/{id}/steps/x%2Funit/log"));
    assert_eq!(code, 200, "{log}");
    assert!(
        log.starts_with("unit line 1\n") && log.ends_with("unit line 30\n"),
        "{log}"
    );
    let (code, log) = d.get(&format!("/api/v1/runs/{id}/steps/x_unit/log"));
    assert_eq!((code, log.as_str()), (200, "I am x_unit\n"));

    let (code, out, err) = agent_cli(&d, tmp.path(), &["logs", &id]);
    assert_eq!(code, 0, "{err}");
    let order = [
        "==> setup (succeeded) <==\nsetting up\n",
        "==> x/unit (failed) <==\nunit line 1\n",
        "==> x/lint (succeeded) <==\nlint fine\n",
        "==> x_unit (succeeded) <==\nI am x_unit\n",
        "==> other (failed) <==\nother says hi\n",
        "==> undo_setup (succeeded) <==\nundoing setup\n",
        "==> restore (succeeded) <==\nrestoring\n",
    ];
    let mut at = 0;
    for part in order {
        let found = out[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} missing or out of order in:\n{out}"));
        at += found + part.len();
    }
    assert!(
        !out.contains("==> x ("),
        "the call has no section of its own:\n{out}"
    );
    let recap = &out[out.find("--- failed:").expect("recap")..];
    assert!(
        recap.starts_with(
            "--- failed: x/unit (ExitCode, exit code 3), last 20 of 30 lines ---\nunit line 11\n"
        ),
        "{recap}"
    );
    assert!(
        recap.ends_with("\nfailed steps (2): x/unit, other\n"),
        "{recap}"
    );

    let (code, out, err) = agent_cli(&d, tmp.path(), &["runs", &id]);
    assert_eq!(code, 0, "{err}");
    for row in ["x/test", "x/unit", "compensation", "undo_setup", "rollback"] {
        assert!(out.contains(row), "{row} missing from:\n{out}");
    }
}
