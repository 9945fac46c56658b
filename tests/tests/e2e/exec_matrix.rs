//! `agent exec` end to end: matrix steps (one instance per combination, `max_parallel`,
//! `fail_fast`, `${{ matrix.X }}`, aggregated outputs, a dynamic matrix, the report shape).

use crate::common::exec;

use exec::{Ws, assert_code, report, step};
use serde_json::Value;

/// `(start_ns, end_ns)` intervals from the `times.*` files the instances wrote.
pub(crate) fn intervals(ws: &Ws) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(ws.path()).expect("workspace") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if !name.starts_with("times.") {
            continue;
        }
        let text = ws.read(&name);
        let nums: Vec<u128> = text
            .split_whitespace()
            .map(|n| n.parse().expect("nanoseconds"))
            .collect();
        assert_eq!(nums.len(), 2, "{name}: {text:?}");
        out.push((nums[0], nums[1]));
    }
    out
}

/// The most intervals of `iv` open at one moment.
pub(crate) fn max_overlap(iv: &[(u128, u128)]) -> usize {
    iv.iter()
        .map(|&(s, _)| iv.iter().filter(|&&(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap_or(0)
}

/// The steps of the stage named `stage` in the report.
fn stage_steps<'a>(rep: &'a Value, stage: &str) -> &'a Vec<Value> {
    rep["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == stage)
        .and_then(|s| s["steps"].as_array())
        .unwrap_or_else(|| panic!("no stage `{stage}`: {rep:#}"))
}

const THREE_BY_TWO: &str = r#"workflow:
  name: m
  stages:
    - name: s
      steps:
        - id: test
          matrix:
            py: ["3.10", "3.11", "3.12"]
            os: [linux, mac]
            exclude:
              - py: "3.12"
                os: mac
            max_parallel: 2
          resources:
            cpu: 0
          run: |
            s=$(date +%s%N); sleep 0.4
            echo "$s $(date +%s%N)" > "times.${{ matrix.py }}-${{ matrix.os }}"
            echo "v=${{ matrix.py }}/${{ matrix.os }}" >> "$AGENT_OUTPUT"
        - id: after
          run: |
            echo '${{ to_json(steps.test.outputs) }}' > list.json
            echo '${{ steps.test.instances['test (py=3.11, os=mac)'].outputs.v }}' > one.txt
            echo '${{ steps.test.status }}' > status.txt
"#;

/// A 3 × 2 matrix with one exclude runs 5 instances, never more than `max_parallel: 2` at
/// once (measured from the instances' own start and end times), each seeing its own
/// `matrix` values; the report lists each instance as a step with its id and values, in
/// the matrix step's place; a later step reads the outputs as a list and by instance id.
#[test]
fn three_by_two_with_exclude_runs_five_two_at_a_time() {
    let ws = Ws::new();
    ws.write("wf.yaml", THREE_BY_TWO);
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let iv = intervals(&ws);
    assert_eq!(iv.len(), 5, "instances: {iv:?}");
    assert_eq!(max_overlap(&iv), 2, "instances: {iv:?}");
    assert!(!ws.exists("times.3.12-mac"));

    let rep = report(&out);
    let ids: Vec<&str> = stage_steps(&rep, "s")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "test (py=3.10, os=linux)",
            "test (py=3.10, os=mac)",
            "test (py=3.11, os=linux)",
            "test (py=3.11, os=mac)",
            "test (py=3.12, os=linux)",
            "after",
        ]
    );
    let one = step(&rep, "test (py=3.11, os=mac)");
    assert_eq!(one["status"], "succeeded");
    assert_eq!(
        one["matrix"],
        serde_json::json!({"py": "3.11", "os": "mac"})
    );
    assert_eq!(one["outputs"]["v"], "3.11/mac");
    assert!(step(&rep, "after").get("matrix").is_none());

    let list: Value = serde_json::from_str(&ws.read("list.json")).expect("list");
    let vs: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|o| o["v"].as_str().expect("v"))
        .collect();
    assert_eq!(
        vs,
        [
            "3.10/linux",
            "3.10/mac",
            "3.11/linux",
            "3.11/mac",
            "3.12/linux"
        ]
    );
    assert_eq!(ws.read("one.txt").trim(), "3.11/mac");
    assert_eq!(ws.read("status.txt").trim(), "succeeded");
}

fn failing(fail_fast: bool) -> String {
    format!(
        r#"workflow:
  name: ff
  stages:
    - name: s
      steps:
        - id: t
          matrix:
            n: [1, 2, 3, 4]
            fail_fast: {fail_fast}
            max_parallel: 2
          resources:
            cpu: 0
          run: |
            if [ "${{{{ matrix.n }}}}" = 1 ]; then exit 3; fi
            sleep 1
            touch "done.${{{{ matrix.n }}}}"
"#
    )
}

/// With `fail_fast` (the default) the failing instance cancels the one running beside it
/// and those not started: they report `cancelled`, and none of them finishes its work.
#[test]
fn fail_fast_cancels_the_other_instances() {
    let ws = Ws::new();
    ws.write("wf.yaml", &failing(true));
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(rep["status"], "failed");
    assert_eq!(step(&rep, "t (n=1)")["status"], "failed");
    for n in 2..=4 {
        assert_eq!(step(&rep, &format!("t (n={n})"))["status"], "cancelled");
        assert!(!ws.exists(&format!("done.{n}")), "instance {n} finished");
    }
}

/// With `fail_fast: false` the other instances run to the end although one failed.
#[test]
fn without_fail_fast_the_others_finish() {
    let ws = Ws::new();
    ws.write("wf.yaml", &failing(false));
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    assert_eq!(step(&rep, "t (n=1)")["status"], "failed");
    for n in 2..=4 {
        assert_eq!(step(&rep, &format!("t (n={n})"))["status"], "succeeded");
        assert!(
            ws.exists(&format!("done.{n}")),
            "instance {n} did not finish"
        );
    }
}

/// A matrix read from an earlier step's JSON output (a list of entries and an axis).
#[test]
fn dynamic_matrix_from_an_earlier_step() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: dyn
  stages:
    - name: plan
      steps:
        - id: plan
          run: |
            echo 'm={"target": ["a", "b"], "include": [{"target": "b", "extra": "x"}]}' >> "$AGENT_OUTPUT"
    - name: build
      steps:
        - id: build
          matrix: ${{ steps.plan.outputs.m }}
          run: echo "t=${{ matrix.target }}${{ matrix.extra }}" >> "$AGENT_OUTPUT"
        - id: sum
          run: echo '${{ join(steps.build.outputs, ",") }}' > n.txt
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let rep = report(&out);
    let ids: Vec<&str> = stage_steps(&rep, "build")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        ["build (target=a)", "build (target=b, extra=x)", "sum"]
    );
    assert_eq!(
        step(&rep, "build (target=b, extra=x)")["outputs"]["t"],
        "bx"
    );
}

/// A dynamic matrix whose value is not a matrix fails the step under its own id, with the
/// reason in the run's error, and nothing of it runs.
#[test]
fn a_dynamic_matrix_that_is_not_one_fails_the_step() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: bad
  stages:
    - name: s
      steps:
        - id: plan
          run: echo 'm=[1, 2' >> "$AGENT_OUTPUT"
        - id: t
          matrix:
            n: ${{ steps.plan.outputs.m }}
          run: touch ran
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let rep = report(&out);
    let t = step(&rep, "t");
    assert_eq!(t["status"], "failed", "{rep:#}");
    assert!(
        rep["error"]
            .as_str()
            .is_some_and(|e| e.contains("`matrix`")),
        "{rep:#}"
    );
    assert!(!ws.exists("ran"));
}

/// The instances of a matrix step get their stage's `env` and `working_directory` like any
/// step of the stage (an instance id is not a step id of the file, yet its stage is found).
#[test]
fn matrix_instances_get_their_stages_env_and_directory() {
    let ws = Ws::new();
    ws.write("sub/.keep", "");
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: se
  stages:
    - name: s
      env:
        GREETING: hi
      working_directory: sub
      steps:
        - id: t
          matrix:
            n: [1, 2]
          run: echo "$GREETING ${{ matrix.n }}" > "out.${{ matrix.n }}"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("sub/out.1").trim(), "hi 1");
    assert_eq!(ws.read("sub/out.2").trim(), "hi 2");
}
