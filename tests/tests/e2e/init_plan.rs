//! `agent init` and `agent plan`, driven through the built binary.
//!
//! `init`: every template validates and runs green with `agent exec` (the CI templates on a
//! small generated project of each kind, built and tested with the tools of this machine and
//! no network), nothing is overwritten without `--force`. `plan`: stages, levels, inferred
//! dependencies and the critical path of the example deployment, a 1,000-step workflow,
//! durations from a real store (opened read-only), and the optimizer's suggestions; the file
//! is never rewritten.

use crate::common::{agent, run_with_deadline, stderr, stdout, workspace_root};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
/// Building and testing a generated project is a real compile on a loaded machine.
const CI_LIMIT: Duration = Duration::from_secs(300);

fn run_in(dir: &Path, args: &[&str], limit: Duration) -> std::process::Output {
    let mut cmd = agent(args);
    cmd.current_dir(dir);
    run_with_deadline(cmd, limit)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// `agent init` in `dir` (template named or detected), then `agent validate` and
/// `agent exec` of the written workflow must succeed. Returns init's stdout.
fn init_validate_exec(dir: &Path, template: Option<&str>, name: &str, limit: Duration) -> String {
    let mut args = vec!["init"];
    args.extend(template);
    let out = run_in(dir, &args, LIMIT);
    assert_eq!(out.status.code(), Some(0), "init stderr:\n{}", stderr(&out));
    let said = stdout(&out);
    let file = format!(".workflows/{name}.yaml");
    assert!(said.contains(&file), "{said}");
    assert!(said.contains(&format!("next: agent exec {file}")), "{said}");
    let out = run_in(dir, &["validate", &file], LIMIT);
    assert_eq!(out.status.code(), Some(0), "validate:\n{}", stderr(&out));
    let out = run_in(dir, &["exec", &file], limit);
    assert_eq!(
        out.status.code(),
        Some(0),
        "exec of `{name}`:\n{}",
        stderr(&out)
    );
    said
}

/// The three classic templates (deployment, testing, data processing) validate and run green in an empty directory.
#[test]
fn classic_templates_validate_and_run_green() {
    for name in ["deployment", "testing", "data_processing"] {
        let dir = tempfile::tempdir().expect("tempdir");
        init_validate_exec(dir.path(), Some(name), name, LIMIT);
    }
}

/// A second `init` refuses to overwrite (exit 2, naming the file) and `--force` replaces;
/// a user's edit survives the refusal.
#[test]
fn init_never_overwrites_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(dir.path(), &["init", "testing"], LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let wf = dir.path().join(".workflows/testing.yaml");
    std::fs::write(&wf, "# mine\n").expect("edit");
    let out = run_in(dir.path(), &["init", "testing"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let se = stderr(&out);
    assert!(se.contains("`.workflows/testing.yaml`"), "{se}");
    assert!(se.contains("--force"), "{se}");
    assert_eq!(std::fs::read_to_string(&wf).expect("read"), "# mine\n");
    let out = run_in(dir.path(), &["init", "testing", "--force"], LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(std::fs::read_to_string(&wf).expect("read"), "# mine\n");
}

/// `--dir` writes elsewhere (creating the directory) and says how to get there.
#[test]
fn init_dir_option_and_unknown_template() {
    let base = tempfile::tempdir().expect("tempdir");
    let out = run_in(base.path(), &["init", "deployment", "--dir", "proj"], LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        base.path()
            .join("proj/.workflows/deployment.yaml")
            .is_file()
    );
    assert!(
        stdout(&out).contains("cd proj && agent exec .workflows/deployment.yaml"),
        "{}",
        stdout(&out)
    );
    let out = run_in(base.path(), &["init", "deploy"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown template `deploy`, did you mean `deployment`?"),
        "{}",
        stderr(&out)
    );
}

/// An empty directory gets the default template and says which.
#[test]
fn init_in_empty_directory_uses_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let said = init_validate_exec(dir.path(), None, "testing", LIMIT);
    assert!(said.contains("using the `testing` template"), "{said}");
}

/// A Rust project (no dependencies: no download) is detected; fmt, clippy, build and test
/// run green.
#[test]
fn init_rust_project_runs_green() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "Cargo.toml",
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(
        dir.path(),
        "src/lib.rs",
        "/// Adds two numbers.\npub fn add(a: u64, b: u64) -> u64 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 2), 4);\n    }\n}\n",
    );
    let said = init_validate_exec(dir.path(), None, "rust", CI_LIMIT);
    assert!(said.contains("found `Cargo.toml`"), "{said}");
}

/// A Python project (pyproject.toml, unittest tests) is detected and runs green.
#[test]
fn init_python_project_runs_green() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "pyproject.toml",
        "[project]\nname = \"mypkg\"\nversion = \"0.1.0\"\n",
    );
    write(
        dir.path(),
        "mypkg/__init__.py",
        "def double(x):\n    return 2 * x\n",
    );
    write(dir.path(), "tests/__init__.py", "");
    write(
        dir.path(),
        "tests/test_mypkg.py",
        "import unittest\n\nimport mypkg\n\n\nclass T(unittest.TestCase):\n    def test_double(self):\n        self.assertEqual(mypkg.double(2), 4)\n",
    );
    let said = init_validate_exec(dir.path(), None, "python", CI_LIMIT);
    assert!(said.contains("found `pyproject.toml`"), "{said}");
}

/// A Node project (no dependencies, `node --test`) is detected and runs green.
#[test]
fn init_node_project_runs_green() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "package.json",
        "{\n  \"name\": \"demo\",\n  \"version\": \"1.0.0\",\n  \"scripts\": {\"test\": \"node --test\"}\n}\n",
    );
    write(
        dir.path(),
        "test/add.test.js",
        "const test = require(\"node:test\");\nconst assert = require(\"node:assert\");\ntest(\"adds\", () => assert.strictEqual(1 + 1, 2));\n",
    );
    let said = init_validate_exec(dir.path(), None, "node", CI_LIMIT);
    assert!(said.contains("found `package.json`"), "{said}");
}

fn plan_json(dir: &Path, args: &[&str]) -> Value {
    let mut full = vec!["plan"];
    full.extend_from_slice(args);
    full.push("--json");
    let out = run_in(dir, &full, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("plan --json is JSON")
}

fn suggestions_of(plan: &Value, kind: &str) -> Vec<Value> {
    plan["suggestions"]
        .as_array()
        .expect("suggestions")
        .iter()
        .filter(|s| s["kind"] == kind)
        .cloned()
        .collect()
}

/// The example deployment: three stages in order, the parallel stage as one level, the
/// reference `steps.build_application` found, a critical path, the sequential preparation
/// flagged; the file is left as it was.
#[test]
fn plan_of_example_deployment() {
    let root = workspace_root();
    let file = "examples/.workflows/deploy.yaml";
    let before = std::fs::read(root.join(file)).expect("read");
    let state = tempfile::tempdir().expect("tempdir");
    let state_arg = state.path().to_str().expect("utf-8");
    let out = run_in(&root, &["plan", file, "--state-dir", state_arg], LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let a = text.find("`preparation`").expect("preparation");
    let b = text.find("`build_and_test`").expect("build_and_test");
    let c = text.find("`deployment`").expect("deployment");
    assert!(a < b && b < c, "{text}");
    assert!(text.contains("critical path"), "{text}");

    let plan = plan_json(&root, &[file, "--state-dir", state_arg]);
    assert_eq!(plan["workflow"], "Complex Deployment Pipeline");
    let stages = plan["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[1]["levels"].as_array().expect("levels").len(), 1);
    assert_eq!(stages[1]["levels"][0].as_array().expect("level").len(), 3);
    let deploy = &stages[2]["steps"][0];
    assert_eq!(deploy["id"], "deploy_to_environment");
    assert!(
        deploy["references"]
            .as_array()
            .expect("references")
            .contains(&Value::from("build_application")),
        "{deploy}"
    );
    assert!(plan["machine"]["cpu"].as_u64().expect("cpu") >= 1);
    assert!(!plan["critical_path"].as_array().expect("path").is_empty());
    let par = suggestions_of(&plan, "parallelize");
    assert!(
        par.iter().any(|s| s["stage"] == "preparation"),
        "{}",
        plan["suggestions"]
    );
    assert_eq!(std::fs::read(root.join(file)).expect("read"), before);
}

/// With every parameter given, a `when` that reads only parameters is decided: the example
/// test steps are shown skipped with `run_tests=false` and weigh nothing in the
/// suggestions; an invalid parameter value exits 2.
#[test]
fn plan_decides_parameter_only_conditions() {
    let root = workspace_root();
    let file = "examples/.workflows/deploy.yaml";
    let plan = plan_json(
        &root,
        &[
            file,
            "-p",
            "version=1.0.0",
            "-p",
            "environment=staging",
            "-p",
            "run_tests=false",
        ],
    );
    let steps = plan["stages"][1]["steps"].as_array().expect("steps");
    let skipped: Vec<&str> = steps
        .iter()
        .filter(|s| s["skipped"] == true)
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(skipped, ["run_unit_tests", "run_integration_tests"]);
    assert!(
        suggestions_of(&plan, "max_parallel").is_empty(),
        "{}",
        plan["suggestions"]
    );
    let out = run_in(
        &root,
        &["plan", file, "-p", "environment=moon", "-p", "version=1"],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("environment"), "{}", stderr(&out));
}

/// Two steps of a sequential stage with no reference between them are suggested to run in
/// parallel; a step that reads another's output is not.
#[test]
fn plan_suggests_parallel_for_independent_sequential_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "ci.yaml",
        "workflow:\n  name: ci\n  stages:\n    - name: checks\n      steps:\n        - id: lint\n          run: echo lint=ok >> \"$AGENT_OUTPUT\"\n        - id: unit\n          run: echo unit\n        - id: report\n          run: echo ${{ steps.lint.output.lint }}\n",
    );
    let out = run_in(dir.path(), &["plan", "ci.yaml"], LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("`lint` and `unit` could run in parallel: no reference between them"),
        "{text}"
    );
    let plan = plan_json(dir.path(), &["ci.yaml"]);
    let par = suggestions_of(&plan, "parallelize");
    assert_eq!(par.len(), 1, "{}", plan["suggestions"]);
    assert_eq!(par[0]["steps"], serde_json::json!(["lint", "unit"]));
    let report = &plan["stages"][0]["steps"][2];
    assert_eq!(report["depends_on"], serde_json::json!(["lint"]));
}

/// A `max_parallel` above the machine's CPU slots, and a sub-workflow called twice with the
/// same inputs, are both reported.
#[test]
fn plan_flags_max_parallel_and_duplicate_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wf = String::from(
        "workflow:\n  name: wide\n  stages:\n    - name: fan\n      parallel: true\n      max_parallel: 300\n      steps:\n",
    );
    for i in 0..300 {
        writeln!(wf, "        - id: s{i}\n          run: \"true\"").expect("write");
    }
    wf.push_str("    - name: calls\n      steps:\n        - id: first\n          workflow: sub\n          parameters:\n            target: a\n        - id: second\n          workflow: sub\n          parameters:\n            target: a\n        - id: third\n          workflow: sub\n          parameters:\n            target: b\n");
    write(dir.path(), "wide.yaml", &wf);
    write(
        dir.path(),
        "sub.yaml",
        "workflow:\n  name: sub\n  parameters:\n    - name: target\n  stages:\n    - name: s\n      steps:\n        - id: x\n          run: \"true\"\n",
    );
    let plan = plan_json(dir.path(), &["wide.yaml"]);
    let mp = suggestions_of(&plan, "max_parallel");
    assert_eq!(mp.len(), 1, "{}", plan["suggestions"]);
    assert_eq!(mp[0]["stage"], "fan");
    let dup = suggestions_of(&plan, "duplicate_call");
    assert_eq!(dup.len(), 1, "{}", plan["suggestions"]);
    assert_eq!(dup[0]["steps"], serde_json::json!(["first", "second"]));
}

/// A 1,000-step generated workflow (chains in `parallel: auto` stages) is planned; its
/// timing is measured by `bench/plan.sh`, not bounded here.
#[test]
fn plan_of_thousand_steps_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wf = String::from("workflow:\n  name: big\n  stages:\n");
    for s in 0..10 {
        writeln!(
            wf,
            "    - name: stage{s}\n      parallel: auto\n      steps:"
        )
        .expect("w");
        for i in 0..100 {
            write!(wf, "        - id: s{s}_{i}\n          run: \"true\"\n").expect("w");
            if i % 10 != 0 {
                writeln!(wf, "          needs: [s{s}_{}]", i - 1).expect("w");
            }
        }
    }
    write(dir.path(), "big.yaml", &wf);
    let plan = plan_json(dir.path(), &["big.yaml"]);
    let stages = plan["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 10);
    let steps: usize = stages
        .iter()
        .map(|s| s["steps"].as_array().expect("steps").len())
        .sum();
    assert_eq!(steps, 1000);
    assert_eq!(stages[0]["levels"].as_array().expect("levels").len(), 10);
    // At least one 10-step chain per stage; longer when CPU slots make chains wait.
    let path = plan["critical_path"].as_array().expect("path").len();
    assert!((100..=1000).contains(&path), "{path}");
}

/// An invalid file exits 2 with the validator's positioned diagnostics.
#[test]
fn plan_of_invalid_file_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "bad.yaml",
        "workflow:\n  name: bad\n  stages:\n    - name: s\n      paralel: true\n      steps: []\n",
    );
    let out = run_in(dir.path(), &["plan", "bad.yaml"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bad.yaml:5:7: error: unknown key `paralel`"),
        "{}",
        stderr(&out)
    );
    let out = run_in(dir.path(), &["plan", "missing.yaml"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
}

/// Durations come from the daemon's store: a copy of the newest schema fixture with two
/// recorded runs. The slow step is the critical path, the estimate is the sum of the
/// sequential stage, the parallel suggestion says what it saves, the step with repeatable
/// outputs is suggested for caching, and the store file is not modified (opened read-only).
#[test]
fn plan_reads_durations_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = workspace_root().join("agent/tests/fixtures");
    let mut dbs: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("store_v") && n.ends_with(".sqlite3"))
        })
        .collect();
    dbs.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.trim_start_matches("store_v").parse::<u32>().ok())
            .unwrap_or(0)
    });
    let newest = dbs.last().expect("a store fixture");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let db = state.join("agent.sqlite3");
    std::fs::copy(newest, &db).expect("copy fixture");
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        for run in 0..2i64 {
            let t0 = 1_700_000_000_000i64 + run * 100_000;
            conn.execute(
                "INSERT INTO runs (workflow, status, trigger_kind, created_at, started_at, finished_at)
                 VALUES ('hist', 'succeeded', 'manual', ?1, ?1, ?2)",
                [t0, t0 + 2_100],
            )
            .expect("insert run");
            let id = conn.last_insert_rowid();
            conn.execute(
                "INSERT INTO steps (run_id, step_id, stage, status, attempts, started_at, finished_at, seq, outputs)
                 VALUES (?1, 'slow', 'work', 'succeeded', 1, ?2, ?3, 1, '{\"v\":\"same\"}')",
                [id, t0, t0 + 2_000],
            )
            .expect("insert step");
            conn.execute(
                "INSERT INTO steps (run_id, step_id, stage, status, attempts, started_at, finished_at, seq, outputs)
                 VALUES (?1, 'fast', 'work', 'succeeded', 1, ?2, ?3, 2, ?4)",
                rusqlite::params![id, t0 + 2_000, t0 + 2_100, format!("{{\"n\":{run}}}")],
            )
            .expect("insert step");
        }
    }
    let before = std::fs::read(&db).expect("read db");
    write(
        dir.path(),
        "hist.yaml",
        "workflow:\n  name: hist\n  stages:\n    - name: work\n      steps:\n        - id: slow\n          run: sleep 2\n        - id: fast\n          run: \"true\"\n",
    );
    let state_arg = state.to_str().expect("utf-8");
    let plan = plan_json(dir.path(), &["hist.yaml", "--state-dir", state_arg]);
    assert_eq!(plan["history"]["runs"], 2, "{}", plan["history"]);
    let steps = &plan["stages"][0]["steps"];
    assert_eq!(steps[0]["estimated_ms"], 2000);
    assert_eq!(steps[0]["samples"], 2);
    assert_eq!(steps[1]["estimated_ms"], 100);
    assert_eq!(plan["estimated_ms"], 2100);
    assert_eq!(plan["critical_path_by"], "duration");
    let par = suggestions_of(&plan, "parallelize");
    assert_eq!(par.len(), 1, "{}", plan["suggestions"]);
    assert_eq!(par[0]["saves_ms"], 100);
    // `slow` gave the same outputs for the same parameters and commit: worth caching;
    // `fast` did not (and is too short anyway).
    let cache = suggestions_of(&plan, "cache");
    assert_eq!(cache.len(), 1, "{}", plan["suggestions"]);
    assert_eq!(cache[0]["steps"], serde_json::json!(["slow"]));
    // AGENT_STATE_DIR is honoured like --state-dir.
    let mut cmd = agent(&["plan", "hist.yaml"]);
    cmd.current_dir(dir.path()).env("AGENT_STATE_DIR", &state);
    let out = run_with_deadline(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("estimated run: ~2.1 s"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(&db).expect("read db"), before);
}

/// History as a real daemon records it: two runs of a workflow through the API, then
/// `agent plan` against the live daemon's state directory (its store open in WAL mode)
/// estimates each step from both runs and marks the slow one critical.
#[test]
fn plan_reads_a_live_daemons_history() {
    use crate::common::daemon::{TestDaemon, fixture, init_repo, yaml_quote};
    let (tmp, repo, _out) = fixture();
    let wf = "workflow:\n  name: timed\n  stages:\n    - name: work\n      steps:\n        - id: slow\n          run: sleep 0.3\n        - id: fast\n          run: \"true\"\n";
    init_repo(&repo, &[(".workflows/timed.yaml", wf)]);
    let config = format!(
        "repos:\n  - name: app\n    path: {}\n",
        yaml_quote(&repo.to_string_lossy())
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    for _ in 0..2 {
        let (code, text) = d.post("/api/v1/workflows/timed/runs", "{}");
        assert_eq!(code, 202, "{text}\n{}", d.log_text());
        let v: Value = serde_json::from_str(&text).expect("JSON");
        let id = match &v["run_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let run = d.wait_run_final(&id, LIMIT);
        assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    }
    let state = d.state_dir.to_str().expect("utf-8").to_string();
    let plan = plan_json(&repo, &[".workflows/timed.yaml", "--state-dir", &state]);
    assert_eq!(plan["history"]["runs"], 2, "{}", plan["history"]);
    let slow = &plan["stages"][0]["steps"][0];
    assert_eq!(slow["samples"], 2, "{slow}");
    assert!(slow["estimated_ms"].as_u64().expect("ms") >= 250, "{slow}");
    assert_eq!(plan["critical_path_by"], "duration");
    assert!(
        plan["critical_path"]
            .as_array()
            .expect("path")
            .contains(&Value::from("slow")),
        "{}",
        plan["critical_path"]
    );
}
