//! `agent exec` end to end: matrix stages (the stage runs once per instance, each a stage
//! `NAME (k=v, ...)` with steps `ID (k=v, ...)`; `max_parallel`, `fail_fast`,
//! `${{ matrix.X }}` in steps and stage `env`, sibling `${{ steps.X }}` within an
//! instance, aggregated outputs, a dynamic matrix, compensation of instance steps).

use crate::common::exec;
use crate::exec_matrix::{intervals, max_overlap};

use exec::{Ws, assert_code, report, step};
use serde_json::{Value, json};

/// Stage name to its steps' ids, in report order.
fn layout(rep: &Value) -> Vec<(String, Vec<String>)> {
    rep["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_string(),
                s["steps"]
                    .as_array()
                    .expect("steps")
                    .iter()
                    .map(|x| x["id"].as_str().expect("id").to_string())
                    .collect(),
            )
        })
        .collect()
}

const THREE_BY_TWO: &str = r#"workflow:
  name: sm
  stages:
    - name: test
      matrix:
        py: ["3.10", "3.11", "3.12"]
        os: [linux, mac]
        exclude:
          - py: "3.12"
            os: mac
        max_parallel: 2
      env:
        WHO: "${{ matrix.py }}/${{ matrix.os }}"
      steps:
        - id: first
          resources:
            cpu: 0
          run: |
            date +%s%N > "times.${{ matrix.py }}-${{ matrix.os }}"
            sleep 0.3
            echo "v=$WHO" >> "$AGENT_OUTPUT"
        - id: second
          resources:
            cpu: 0
          run: |
            sleep 0.2
            echo "w=${{ steps.first.outputs.v }}!" >> "$AGENT_OUTPUT"
            date +%s%N >> "times.${{ matrix.py }}-${{ matrix.os }}"
    - name: after
      steps:
        - id: sum
          run: |
            echo '${{ to_json(steps.second.outputs) }}' > list.json
            echo '${{ steps.first.instances['first (py=3.11, os=mac)'].outputs.v }}' > one.txt
            echo '${{ steps.first.instances['test (py=3.10, os=mac)'].outputs.v }}' > by_stage.txt
            echo '${{ steps.second.status }}' > status.txt
"#;

/// A 3 × 2 stage matrix with one exclude runs the stage 5 times, never more than
/// `max_parallel: 2` instances at once (measured from the instances' own start and end
/// times: the first step's start, the last step's end); each instance is a stage
/// `test (py=…, os=…)` of its own whose steps see their `matrix` values (also through the
/// stage's `env`) and their own instance's earlier step; afterwards a step reads the
/// outputs of the stage's steps as a list in instance order and by instance id (the
/// step's or the stage's).
#[test]
fn three_by_two_stage_matrix_runs_five_instances_two_at_a_time() {
    let ws = Ws::new();
    ws.write("wf.yaml", THREE_BY_TWO);
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let iv = intervals(&ws);
    assert_eq!(iv.len(), 5, "instances: {iv:?}");
    assert_eq!(max_overlap(&iv), 2, "instances: {iv:?}");
    assert!(!ws.exists("times.3.12-mac"));

    let rep = report(&out);
    let combos = [
        "py=3.10, os=linux",
        "py=3.10, os=mac",
        "py=3.11, os=linux",
        "py=3.11, os=mac",
        "py=3.12, os=linux",
    ];
    let mut expected: Vec<(String, Vec<String>)> = combos
        .iter()
        .map(|c| {
            (
                format!("test ({c})"),
                vec![format!("first ({c})"), format!("second ({c})")],
            )
        })
        .collect();
    expected.push(("after".into(), vec!["sum".into()]));
    assert_eq!(layout(&rep), expected);
    let one = step(&rep, "second (py=3.11, os=mac)");
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["matrix"], json!({"py": "3.11", "os": "mac"}));
    assert_eq!(one["outputs"]["w"], "3.11/mac!");

    let list: Value = serde_json::from_str(&ws.read("list.json")).expect("list");
    let ws_: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|o| o["w"].as_str().expect("w"))
        .collect();
    assert_eq!(
        ws_,
        [
            "3.10/linux!",
            "3.10/mac!",
            "3.11/linux!",
            "3.11/mac!",
            "3.12/linux!"
        ]
    );
    assert_eq!(ws.read("one.txt").trim(), "3.11/mac");
    assert_eq!(ws.read("by_stage.txt").trim(), "3.10/mac");
    assert_eq!(ws.read("status.txt").trim(), "succeeded");
    // The progress view shows each instance as a stage.
    let err = crate::common::stderr(&out);
    assert!(err.contains("stage test (py=3.11, os=mac)"), "{err}");
}

fn failing(fail_fast: bool) -> String {
    format!(
        r#"workflow:
  name: ff
  stages:
    - name: s
      matrix:
        n: [1, 2, 3, 4]
        fail_fast: {fail_fast}
        max_parallel: 2
      steps:
        - id: t
          resources:
            cpu: 0
          run: |
            if [ "${{{{ matrix.n }}}}" = 1 ]; then exit 3; fi
            sleep 1
            touch "done.${{{{ matrix.n }}}}"
        - id: u
          resources:
            cpu: 0
          run: touch "u.${{{{ matrix.n }}}}"
"#
    )
}

/// With `fail_fast` (the default) the failing instance cancels the instance running beside
/// it and those not started yet: their steps report `cancelled`, none finishes its work,
/// and the failing instance's own later step is skipped.
#[test]
fn stage_fail_fast_cancels_the_other_instances() {
    let ws = Ws::new();
    ws.write("wf.yaml", &failing(true));
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(rep["status"], "failed");
    assert_eq!(step(&rep, "t (n=1)")["status"], "failed");
    assert_eq!(step(&rep, "u (n=1)")["status"], "skipped");
    for n in 2..=4 {
        assert_eq!(step(&rep, &format!("t (n={n})"))["status"], "cancelled");
        assert!(!ws.exists(&format!("done.{n}")), "instance {n} finished");
        assert!(!ws.exists(&format!("u.{n}")), "instance {n} went on");
    }
    let stages: Vec<(&str, &str)> = rep["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("s (n=1)", "failed"),
            ("s (n=2)", "cancelled"),
            ("s (n=3)", "cancelled"),
            ("s (n=4)", "cancelled")
        ]
    );
}

/// With `fail_fast: false` the other instances run to their end (all their steps) although
/// one failed the run; the failing one skips its own later step.
#[test]
fn stage_without_fail_fast_the_others_finish() {
    let ws = Ws::new();
    ws.write("wf.yaml", &failing(false));
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(step(&rep, "t (n=1)")["status"], "failed");
    assert_eq!(step(&rep, "u (n=1)")["status"], "skipped");
    for n in 2..=4 {
        assert_eq!(step(&rep, &format!("t (n={n})"))["status"], "succeeded");
        assert_eq!(step(&rep, &format!("u (n={n})"))["status"], "succeeded");
        assert!(ws.exists(&format!("u.{n}")), "instance {n} did not finish");
    }
}

/// A stage matrix read from an earlier step's JSON list output (a dynamic axis), with a
/// matrix step inside: its instances see the stage's values and their own.
#[test]
fn dynamic_stage_matrix_from_an_earlier_step() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: dyn
  stages:
    - name: plan
      steps:
        - id: plan
          run: echo 'targets=["a", "b"]' >> "$AGENT_OUTPUT"
    - name: build
      matrix:
        target: ${{ steps.plan.outputs.targets }}
      steps:
        - id: build
          matrix:
            level: [1, 2]
          run: echo "t=${{ matrix.target }}${{ matrix.level }}" >> "$AGENT_OUTPUT"
        - id: pack
          run: echo "p=${{ steps.build.outputs[0].t }}+${{ steps.build.outputs[1].t }}" >> "$AGENT_OUTPUT"
    - name: end
      steps:
        - id: sum
          run: echo '${{ steps.pack.outputs[0].p }},${{ steps.pack.outputs[1].p }}' > n.txt
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let rep = report(&out);
    let l = layout(&rep);
    assert_eq!(l[1].0, "build (target=a)");
    assert_eq!(
        l[1].1,
        [
            "build (target=a) (level=1)",
            "build (target=a) (level=2)",
            "pack (target=a)"
        ]
    );
    assert_eq!(l[2].0, "build (target=b)");
    assert_eq!(
        step(&rep, "build (target=b) (level=2)")["matrix"],
        json!({"target": "b", "level": 2})
    );
    assert_eq!(ws.read("n.txt").trim(), "a1+a2,b1+b2");
}

/// A stage matrix that cannot be expanded fails the run with the reason before any of the
/// stage's steps runs.
#[test]
fn a_stage_matrix_that_is_not_one_fails_the_run() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: bad
  stages:
    - name: plan
      steps:
        - id: plan
          run: echo 'm=[1, 2' >> "$AGENT_OUTPUT"
    - name: s
      matrix:
        n: ${{ steps.plan.outputs.m }}
      steps:
        - id: t
          run: touch ran
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(step(&rep, "t")["status"], "skipped");
    assert!(
        rep["error"]
            .as_str()
            .is_some_and(|e| e.contains("stage `s`: `matrix`")),
        "{rep:#}"
    );
    assert!(!ws.exists("ran"));
}

/// A later failure asking for compensation undoes the succeeded step of every instance,
/// each with its own `matrix` values, latest completion first.
#[test]
fn stage_instance_steps_are_compensated() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: comp
  stages:
    - name: deploy
      matrix:
        region: [eu, us]
        max_parallel: 1
      steps:
        - id: push
          run: 'true'
          compensate:
            - id: unpush
              run: echo "${{ matrix.region }}" >> undone.txt
    - name: verify
      steps:
        - id: check
          on_failure: compensate
          run: exit 1
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(
        rep["compensated"],
        json!(["push (region=us)", "push (region=eu)"]),
        "{rep:#}"
    );
    assert_eq!(ws.read("undone.txt"), "us\neu\n");
}

/// A failing instance step with `on_failure: rollback` runs the workflow's rollback once the
/// stage has ended, as any step's failure does.
#[test]
fn a_failing_stage_instance_asks_for_the_rollback() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: rb
  stages:
    - name: deploy
      matrix:
        region: [eu, us]
      steps:
        - id: push
          on_failure: rollback
          run: test "${{ matrix.region }}" != us
  rollback:
    steps:
      - id: restore
        run: echo "${{ steps.push.status }}" > restored.txt
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(rep["rollback"]["status"], "succeeded", "{rep:#}");
    assert_eq!(step(&rep, "push (region=us)")["status"], "failed");
    assert_eq!(ws.read("restored.txt").trim(), "failed");
}

/// Through the daemon: the API shows each instance of a matrix stage as a stage
/// `test (n=…)` with its steps' instance ids, and a retry of the failed run takes over the
/// instance that succeeded (it does not run again) while the failed one runs again.
#[test]
fn daemon_shows_stage_instances_and_a_retry_keeps_the_finished_ones() {
    use crate::common::daemon::{
        TestDaemon, count_lines, init_repo, repo_config, run_id, trigger, yaml_quote,
    };
    let limit = std::time::Duration::from_secs(60);
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let wf = format!(
        r#"workflow:
  name: sm
  env:
    OUT: {out}
  stages:
    - name: test
      matrix:
        n: [1, 2]
        fail_fast: false
      steps:
        - id: t
          run: |
            echo x >> "$OUT/t${{{{ matrix.n }}}}"
            test "${{{{ matrix.n }}}}" != 2 || test -f "$OUT/fixed"
"#,
        out = yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/sm.yaml", &wf)]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let first = trigger(&d, "sm");
    let run = d.wait_run_final(&first, limit);
    assert_eq!(run["status"], "failed", "{run:#}");
    let names: Vec<&str> = run["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["test (n=1)", "test (n=2)"], "{run:#}");
    assert_eq!(run["stages"][0]["steps"][0]["id"], "t (n=1)", "{run:#}");
    assert_eq!(run["stages"][0]["steps"][0]["status"], "succeeded");
    assert_eq!(run["stages"][1]["steps"][0]["status"], "failed");

    std::fs::write(out.join("fixed"), "").expect("fix");
    let (code, body) = d.post(&format!("/api/v1/runs/{first}/retry"), "{}");
    assert_eq!(code, 202, "{body}");
    let again = run_id(&serde_json::from_str(&body).expect("JSON"));
    let run = d.wait_run_final(&again, limit);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(count_lines(&out.join("t1")), 1, "instance n=1 ran again");
    assert_eq!(count_lines(&out.join("t2")), 2);
}
