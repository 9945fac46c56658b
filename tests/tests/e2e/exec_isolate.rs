//! `agent exec` end to end: `isolate: true` (each step, matrix instance or parallel step
//! gets a private copy of the workspace, removed when it ends) and `resources.cpu: all`
//! (the step runs alone).

use crate::common::exec;

use exec::{Ws, assert_code, report, step};

/// Entries beside the workspace left by isolated copies.
fn leftovers(ws: &Ws) -> Vec<String> {
    let name = ws
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let prefix = format!(".{name}.isolate-");
    std::fs::read_dir(ws.path().parent().expect("parent"))
        .expect("parent dir")
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix).then_some(n)
        })
        .collect()
}

/// Parallel matrix instances with `isolate: true` each rewrite the lockfile in place and
/// delete the test data, one after another (staggered): each still finds the original
/// files, so none sees a sibling's change; the workspace itself is untouched afterwards,
/// no copy is left, outputs work, and each instance ran in a directory of its own that
/// `AGENT_WORKSPACE` names (a `working_directory` is taken inside the copy).
#[test]
fn isolated_instances_do_not_see_each_others_changes() {
    let ws = Ws::new();
    ws.write("Cargo.lock", "v0\n");
    ws.write("data/fixture.txt", "rows\n");
    ws.write("sub/.keep", "");
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: iso
  stages:
    - name: s
      steps:
        - id: t
          isolate: true
          working_directory: sub
          matrix:
            n: [1, 2, 3]
            max_parallel: 3
          resources:
            cpu: 0
          run: |
            sleep "$(( ${{ matrix.n }} - 1 )).3"
            cd "$AGENT_WORKSPACE"
            test "$(cat Cargo.lock)" = v0
            test -f data/fixture.txt
            printf 'v${{ matrix.n }}\n' > Cargo.lock
            rm data/fixture.txt
            echo "cwd=$OLDPWD" >> "$AGENT_OUTPUT"
            echo "ws=$AGENT_WORKSPACE" >> "$AGENT_OUTPUT"
            echo "lock=$(cat Cargo.lock)" >> "$AGENT_OUTPUT"
            sleep 0.5
        - id: after
          run: |
            test "$(cat Cargo.lock)" = v0
            test -f data/fixture.txt
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let rep = report(&out);
    let real = ws.path().canonicalize().expect("canonical");
    let mut seen = Vec::new();
    for n in 1..=3 {
        let s = step(&rep, &format!("t (n={n})"));
        assert_eq!(s["status"], "succeeded", "{s:#}");
        assert_eq!(s["outputs"]["lock"], format!("v{n}"));
        let w = s["outputs"]["ws"].as_str().expect("ws").to_string();
        assert_ne!(std::path::Path::new(&w), real.as_path());
        assert_ne!(std::path::Path::new(&w), ws.path());
        assert_eq!(s["outputs"]["cwd"], format!("{w}/sub"));
        assert!(!std::path::Path::new(&w).exists(), "copy {w} left behind");
        seen.push(w);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "a copy of its own each: {seen:?}");
    assert_eq!(ws.read("Cargo.lock"), "v0\n");
    assert!(ws.exists("data/fixture.txt"));
    assert_eq!(leftovers(&ws), Vec::<String>::new());
}

/// Without `isolate` the same rewrite reaches the workspace (the test above would fail
/// without isolation): the control case.
#[test]
fn without_isolate_a_step_changes_the_workspace() {
    let ws = Ws::new();
    ws.write("Cargo.lock", "v0\n");
    ws.write(
        "wf.yaml",
        "workflow:\n  name: plain\n  stages:\n    - name: s\n      steps:\n        - id: t\n          run: printf 'v1\\n' > Cargo.lock\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("Cargo.lock"), "v1\n");
}

/// A step with `resources.cpu: all` asks for every core: admission runs it alone, so no
/// other step of the `parallel: true` stage overlaps it (from the steps' own recorded
/// start and end times), while they all succeed.
#[test]
fn a_cpu_all_step_runs_alone() {
    let ws = Ws::new();
    let mut steps = String::new();
    for i in 1..=3 {
        steps.push_str(&format!(
            "        - id: small{i}\n          run: |\n            date +%s%N > times.small{i}\n            sleep 0.4\n            date +%s%N >> times.small{i}\n"
        ));
    }
    ws.write(
        "wf.yaml",
        &format!(
            "workflow:\n  name: all\n  stages:\n    - name: s\n      parallel: true\n      steps:\n{steps}        - id: big\n          resources:\n            cpu: all\n          run: |\n            date +%s%N > times.big\n            sleep 0.4\n            date +%s%N >> times.big\n"
        ),
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let rep = report(&out);
    assert_eq!(step(&rep, "big")["status"], "succeeded");
    let read = |name: &str| -> (u128, u128) {
        let v: Vec<u128> = ws
            .read(name)
            .split_whitespace()
            .map(|n| n.parse().expect("ns"))
            .collect();
        assert_eq!(v.len(), 2, "{name}");
        (v[0], v[1])
    };
    let big = read("times.big");
    for i in 1..=3 {
        let small = read(&format!("times.small{i}"));
        assert!(
            small.1 <= big.0 || big.1 <= small.0,
            "small{i} {small:?} overlaps big {big:?}"
        );
    }
}
