//! `agent import-gha` end to end: GitHub Actions workflows of five tiny projects (Python,
//! Node, Rust, make with dependent jobs, a Redis service) are converted with the binary and
//! run with `agent exec` on this host: green as written, red once a test is broken. Also
//! the command's files and exit codes (`--check`, `--force`, `--json`).
//!
//! The setup actions become the skills `setup-python`, `setup-node` and `rust-toolchain`;
//! each project carries a small stand-in in `.workflows/skills/` (found before built-ins)
//! that checks the tool is installed, so these tests do not depend on the built-ins.

use std::process::Output;
use std::time::Duration;

use crate::common;
use crate::common::exec::{Ws, assert_code, report, step};

fn import(ws: &Ws, args: &[&str]) -> Output {
    let mut all = vec!["import-gha"];
    all.extend_from_slice(args);
    let mut cmd = common::agent(&all);
    cmd.current_dir(ws.path());
    common::run_with_deadline(cmd, Duration::from_secs(60))
}

fn exec_long(ws: &Ws, file: &str) -> Output {
    let wd = ws.path().to_string_lossy().into_owned();
    let mut cmd = common::agent(&["exec", file, "--workdir", &wd, "--json"]);
    cmd.current_dir(ws.path());
    // A cold `cargo test` of a tiny crate on a busy machine: generous, never a bound on speed.
    common::run_with_deadline(cmd, Duration::from_secs(600))
}

fn stub_skill(ws: &Ws, name: &str, check: &str) {
    ws.write_exec(
        &format!(".workflows/skills/{name}"),
        &format!(
            "#!/bin/sh\n# Stands in for the built-in `{name}` skill: the tool must be installed.\necho \"{name} ${{AGENT_PARAM_VERSION:-$AGENT_PARAM_TOOLCHAIN}}\"\n{check}\n"
        ),
    );
}

/// Converts `.github/workflows/ci.yml`, runs it green, breaks the project with `patch`,
/// runs it red with `failing` the failed step.
fn green_then_red(ws: &Ws, patch: (&str, &str), failing: &str) {
    let out = import(ws, &[]);
    assert_code(&out, 0);
    let text = common::stdout(&out);
    assert!(text.contains("-> .workflows/ci.yaml"), "{text}");
    let converted = ws.read(".workflows/ci.yaml");
    assert!(
        converted.starts_with("# Converted by `agent import-gha` from .github/workflows/ci.yml."),
        "{converted}"
    );
    let out = exec_long(ws, ".workflows/ci.yaml");
    assert_code(&out, 0);
    assert_eq!(report(&out)["status"], "succeeded");
    ws.write(patch.0, patch.1);
    let out = exec_long(ws, ".workflows/ci.yaml");
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(step(&r, failing)["status"], "failed", "{r:#}");
}

/// Guards a Python project's workflow (checkout, setup-python, `$GITHUB_OUTPUT` read by a
/// later `if:`): green, then red when a unit test fails.
#[test]
fn python_unittest_workflow_runs_green_then_red() {
    let ws = Ws::new();
    ws.write("calc.py", "def add(a, b):\n    return a + b\n");
    ws.write(
        "test_calc.py",
        "import unittest\nimport calc\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(calc.add(2, 3), 5)\n\nif __name__ == '__main__':\n    unittest.main()\n",
    );
    stub_skill(&ws, "setup-python", "python3 --version");
    ws.write(
        ".github/workflows/ci.yml",
        r#"name: Python package
on:
  push:
    branches: [main]
  pull_request:
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.x"
      - id: info
        run: echo "files=$(ls *.py | wc -l)" >> "$GITHUB_OUTPUT"
      - name: Run tests
        id: tests
        if: steps.info.outputs.files != '0'
        run: python3 -m unittest -v
"#,
    );
    green_then_red(
        &ws,
        // Not the same length as the original: Python's bytecode cache, checked by mtime and
        // size, would otherwise keep the passing version when both are written in one second.
        ("calc.py", "def add(a, b):\n    return a - b - 1\n"),
        "tests",
    );
}

/// Guards a Node project's workflow (setup-node, `node --test`, job `env`).
#[test]
fn node_test_workflow_runs_green_then_red() {
    let ws = Ws::new();
    ws.write("sum.js", "exports.sum = (a, b) => a + b;\n");
    ws.write(
        "sum.test.js",
        "const test = require('node:test');\nconst assert = require('node:assert');\nconst { sum } = require('./sum');\ntest('sum', () => assert.strictEqual(sum(2, 3), Number(process.env.EXPECTED)));\n",
    );
    stub_skill(&ws, "setup-node", "node --version");
    ws.write(
        ".github/workflows/ci.yml",
        r#"name: Node CI
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    env:
      EXPECTED: 5
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with:
          node-version: 20
      - name: test
        id: test
        run: node --test
"#,
    );
    green_then_red(&ws, ("sum.js", "exports.sum = (a, b) => a * b;\n"), "test");
}

/// Guards a Rust project's workflow (dtolnay/rust-toolchain, workflow `env`, `cargo test`).
#[test]
fn rust_cargo_workflow_runs_green_then_red() {
    let ws = Ws::new();
    ws.write(
        "Cargo.toml",
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    );
    ws.write(
        "src/lib.rs",
        "pub fn double(x: i32) -> i32 {\n    x * 2\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(4), 8);\n    }\n}\n",
    );
    stub_skill(&ws, "rust-toolchain", "cargo --version");
    ws.write(
        ".github/workflows/ci.yml",
        r#"name: CI
on:
  push:
  pull_request:
env:
  CARGO_TERM_COLOR: never
jobs:
  test:
    name: Test
    runs-on: ubuntu-latest
    timeout-minutes: 10
    steps:
      - uses: actions/checkout@v4
      - uses: dtolnay/rust-toolchain@stable
      - id: test
        run: cargo test --offline --quiet
"#,
    );
    green_then_red(
        &ws,
        (
            "src/lib.rs",
            "pub fn double(x: i32) -> i32 {\n    x * 3\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(4), 8);\n    }\n}\n",
        ),
        "test",
    );
}

/// Guards a workflow of dependent jobs: `needs`, independent jobs side by side in one
/// `parallel: auto` stage, job `outputs` read as `needs.build.outputs.*`, `$GITHUB_ENV`,
/// `defaults.run.working-directory`, `shell: bash`.
#[test]
fn make_jobs_with_needs_and_outputs_run_green_then_red() {
    let ws = Ws::new();
    ws.write(
        "app/Makefile",
        "build:\n\tmkdir -p out && printf 'hello\\n' > out/greeting.txt\n\ntest: build\n\t./check.sh out/greeting.txt\n",
    );
    ws.write_exec("app/check.sh", "#!/bin/sh\ngrep -qx hello \"$1\"\n");
    ws.write(
        ".github/workflows/ci.yml",
        r#"name: make
on: push
defaults:
  run:
    working-directory: app
jobs:
  test:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: test "${{ needs.build.outputs.version }}" = "1.2"
      - id: test
        shell: bash
        run: make test && echo "built $BUILT_AT"
  lint:
    runs-on: ubuntu-latest
    steps:
      - run: test -x check.sh
      - run: grep -q '^test:' Makefile
  build:
    runs-on: ubuntu-latest
    outputs:
      version: ${{ steps.ver.outputs.version }}
    steps:
      - id: ver
        run: |
          echo "version=1.2" >> $GITHUB_OUTPUT
          echo "BUILT_AT=now" >> $GITHUB_ENV
      - run: make build
"#,
    );
    green_then_red(
        &ws,
        ("app/check.sh", "#!/bin/sh\ngrep -qx goodbye \"$1\"\n"),
        "test",
    );
    assert!(
        ws.read(".workflows/ci.yaml")
            .contains("- name: lint + build\n      parallel: auto"),
        "{}",
        ws.read(".workflows/ci.yaml")
    );
}

/// Guards a job with a `services: redis` container: it runs as the host's redis-server on
/// a free port, which the steps read through `job.services.redis.ports[...]`.
#[test]
fn redis_service_workflow_runs_green_then_red() {
    if which("redis-server").is_none() || which("redis-cli").is_none() {
        eprintln!("skipped: redis-server or redis-cli is not installed");
        return;
    }
    let ws = Ws::new();
    ws.write_exec(
        "test.sh",
        "#!/bin/sh\nset -e\nredis-cli -p \"$REDIS_PORT\" set greeting hello >/dev/null\ntest \"$(redis-cli -p \"$REDIS_PORT\" get greeting)\" = hello\n",
    );
    ws.write(
        ".github/workflows/ci.yml",
        r#"name: redis
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    services:
      redis:
        image: redis:7
        ports:
          - 6379:6379
        options: --health-cmd "redis-cli ping"
    steps:
      - uses: actions/checkout@v4
      - id: test
        run: ./test.sh
        env:
          REDIS_PORT: ${{ job.services.redis.ports['6379'] }}
"#,
    );
    green_then_red(
        &ws,
        (
            "test.sh",
            "#!/bin/sh\nset -e\ntest \"$(redis-cli -p \"$REDIS_PORT\" get missing)\" = hello\n",
        ),
        "test",
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}

/// Guards the command's contract: `--check` writes nothing and exits 1 when an action
/// cannot be converted (naming it at its line and column); an existing output is not
/// replaced without `--force` (exit 2); `--json` reports jobs and steps.
#[test]
fn check_force_and_json() {
    let ws = Ws::new();
    ws.write(
        ".github/workflows/lint.yml",
        "on: push\njobs:\n  lint:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: super-linter/super-linter@v7\n      - run: echo ok\n",
    );
    let out = import(&ws, &["--check"]);
    assert_code(&out, 1);
    let text = common::stdout(&out);
    assert!(
        text.contains(".github/workflows/lint.yml:7:15: error: action `super-linter/super-linter@v7` is not converted"),
        "{text}"
    );
    assert!(
        text.contains("step 2 (super-linter/super-linter@v7): not converted"),
        "{text}"
    );
    assert!(!ws.exists(".workflows/lint.yaml"));

    let out = import(&ws, &[]);
    assert_code(&out, 0);
    let written = ws.read(".workflows/lint.yaml");
    assert!(written.contains("exit 1"), "{written}");
    // The placeholder fails the run with the reason.
    let out = ws.exec(".workflows/lint.yaml", &[]);
    assert_code(&out, 1);
    assert!(
        common::stderr(&out).contains("super-linter/super-linter@v7` is not converted"),
        "{}",
        common::stderr(&out)
    );

    ws.write(".workflows/lint.yaml", "# mine\n");
    let out = import(&ws, &[]);
    assert_code(&out, 2);
    assert!(
        common::stderr(&out).contains("exists (use --force"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(ws.read(".workflows/lint.yaml"), "# mine\n");
    let out = import(&ws, &["--force", "--json", "-o", ".workflows"]);
    assert_code(&out, 0);
    assert!(ws.read(".workflows/lint.yaml").contains("workflow:"));
    let j: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let f = &j["files"][0];
    assert_eq!(f["source"], ".github/workflows/lint.yml");
    assert_eq!(f["output"], ".workflows/lint.yaml");
    assert_eq!(f["written"], true);
    assert_eq!(f["converted"], false);
    assert_eq!(f["valid"], true);
    assert_eq!(f["jobs"][0]["steps"][1]["converted"], false);
    assert_eq!(f["jobs"][0]["steps"][2]["converted"], true);
    assert_eq!(
        f["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] == "error")
            .count(),
        1
    );

    let out = import(&ws, &["nope/"]);
    assert_code(&out, 2);
}
