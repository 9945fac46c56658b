//! End-to-end: what the daemon reports about a run is true. A retried run runs every step
//! the failure had stopped (not only the failed one) and keeps only the steps skipped by
//! their own `when`; the run-end webhook names the step that decided the outcome; report
//! steps carry their `name` and `queued_ms`.

use crate::common;
use crate::common::notify;

use std::time::{Duration, Instant};

use common::daemon::{
    TestDaemon, count_lines, init_repo, repo_config, run_id, trigger, yaml_quote,
};
use notify::Receiver;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// The report step with this id.
fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .flat_map(|s| s["steps"].as_array().expect("steps"))
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run:#}"))
}

/// Guards `agent retry` against false success: the steps an earlier failure skipped (later
/// in the same stage and in later stages) run in the retry, the step skipped by its own
/// `when` stays skipped, and the step that passed before is not run again.
#[test]
fn retry_runs_the_steps_the_failure_skipped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let wf = format!(
        r#"workflow:
  name: chain
  env:
    OUT: {out}
  stages:
    - name: one
      steps:
        - id: build
          run: echo x >> "$OUT/build"
        - id: test
          run: test -f "$OUT/fixed"
        - id: after
          run: echo x >> "$OUT/after"
        - id: never
          when: ${{{{ 1 == 2 }}}}
          run: echo x >> "$OUT/never"
    - name: two
      steps:
        - id: deploy
          run: echo x >> "$OUT/deploy"
"#,
        out = yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/chain.yaml", &wf)]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let first = trigger(&d, "chain");
    let run = d.wait_run_final(&first, LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(step(&run, "after")["status"], "skipped", "{run:#}");
    assert_eq!(step(&run, "deploy")["status"], "skipped", "{run:#}");

    std::fs::write(out.join("fixed"), "").expect("fix");
    let (code, body) = d.post(&format!("/api/v1/runs/{first}/retry"), "{}");
    assert_eq!(code, 202, "{body}");
    let again = run_id(&serde_json::from_str(&body).expect("JSON"));
    let run = d.wait_run_final(&again, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for id in ["test", "after", "deploy"] {
        assert_eq!(step(&run, id)["status"], "succeeded", "{id}: {run:#}");
        assert_eq!(step(&run, id)["attempts"], 1, "{id}: {run:#}");
    }
    assert_eq!(step(&run, "never")["status"], "skipped", "{run:#}");
    assert_eq!(count_lines(&out.join("build")), 1, "build ran again");
    assert_eq!(count_lines(&out.join("after")), 1);
    assert_eq!(count_lines(&out.join("deploy")), 1);
    assert_eq!(count_lines(&out.join("never")), 0);
}

/// The run-end webhooks that arrived, waiting until `n` run ends are there.
fn run_ends(r: &Receiver, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let ends: Vec<Value> = r
            .requests()
            .iter()
            .map(|q| q.json())
            .filter(|b| {
                b["event"]
                    .as_str()
                    .is_some_and(|e| e == "run.succeeded" || e == "run.failed")
            })
            .collect();
        if ends.len() >= n {
            return ends;
        }
        assert!(Instant::now() < deadline, "no {n} run ends: {ends:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Guards the run-end webhook's `step`: a succeeded run with a tolerated failure names no
/// step; a failed run names the step whose failure failed it (the one `error` names), not
/// the first failed step in file order.
#[test]
fn run_end_webhook_names_the_deciding_step() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let tolerant = r#"workflow:
  name: tolerant
  stages:
    - name: s
      steps:
        - id: flaky
          name: Flaky probe
          on_failure: continue
          run: exit 3
        - id: fine
          run: 'true'
"#;
    // `slow` (first in file order) fails after `quick` has failed the run.
    let racing = r#"workflow:
  name: racing
  stages:
    - name: s
      parallel: true
      steps:
        - id: slow
          run: |
            while [ ! -f quick.done ]; do sleep 0.02; done
            sleep 0.3
            exit 4
        - id: quick
          run: |
            touch quick.done
            exit 5
"#;
    init_repo(
        &repo,
        &[
            (".workflows/tolerant.yaml", tolerant),
            (".workflows/racing.yaml", racing),
        ],
    );
    let hook = Receiver::start(Vec::new());
    let config = format!(
        "{}webhooks:\n  - name: ends\n    url: {}\n    events: [run.succeeded, run.failed]\n",
        repo_config("app", &repo),
        hook.url("/ends"),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let ok = trigger(&d, "tolerant");
    let run = d.wait_run_final(&ok, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(step(&run, "flaky")["name"], "Flaky probe", "{run:#}");
    assert!(step(&run, "flaky")["queued_ms"].is_u64(), "{run:#}");
    let ends = run_ends(&hook, 1);
    assert_eq!(ends[0]["event"], "run.succeeded");
    assert!(ends[0]["step"].is_null(), "{:#}", ends[0]);

    let bad = trigger(&d, "racing");
    let run = d.wait_run_final(&bad, LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(step(&run, "slow")["status"], "failed", "{run:#}");
    let ends = run_ends(&hook, 2);
    let end = &ends[1];
    assert_eq!(end["event"], "run.failed");
    assert_eq!(end["step"]["id"], "quick", "{end:#}");
    assert_eq!(end["step"]["exit_code"], 5, "{end:#}");
    assert!(
        end["error"].as_str().is_some_and(|e| e.contains("`quick`")),
        "{end:#}"
    );
}
