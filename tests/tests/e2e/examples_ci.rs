//! The CI examples: real projects (`examples/typing_extensions`, `examples/strsim`,
//! `examples/picocolors`) with their upstream test jobs written as agent workflows. Each runs
//! green through `agent exec` and through the daemon on a local git repository, over the
//! part of its upstream matrix this machine has installed (computed here, never assumed);
//! a deliberately broken copy fails the run with the failing test's output at the end of
//! the failed step's log.

use crate::common;
use crate::common::daemon::{TestDaemon, init_repo, repo_config, trigger_with};
use crate::common::exec::{code, report};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Generous: a matrix of cargo builds on a loaded machine.
const LIMIT: Duration = Duration::from_secs(900);

/// One example: its directory under `examples/`, the name of its workflow, the matrix
/// parameter and the values of it this machine can run.
struct Example {
    dir: &'static str,
    workflow: &'static str,
    param: &'static str,
    values: Vec<String>,
}

impl Example {
    /// `-p NAME=["A","B"]`.
    fn param_arg(&self) -> String {
        format!("{}={}", self.param, serde_json::json!(self.values))
    }
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
}

fn stdout_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Python versions of upstream's matrix installed here (pyenv's, or `pythonX.Y` in a
/// system directory).
fn python_example() -> Option<Example> {
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".pyenv"))
        .join("versions");
    let pyenv_versions: Vec<String> = std::fs::read_dir(&pyenv)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/python").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let values: Vec<String> = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14"]
        .iter()
        .filter(|v| {
            pyenv_versions
                .iter()
                .any(|p| p.starts_with(&format!("{v}.")))
                || ["/usr/bin", "/usr/local/bin"]
                    .iter()
                    .any(|d| Path::new(d).join(format!("python{v}")).exists())
        })
        .map(|v| v.to_string())
        .collect();
    (!values.is_empty()).then_some(Example {
        dir: "typing_extensions",
        workflow: "typing_extensions CI",
        param: "python",
        values,
    })
}

/// The toolchains of upstream's matrix that rustup has here.
fn rust_example() -> Option<Example> {
    let list = stdout_of("rustup", &["toolchain", "list"])?;
    let values: Vec<String> = ["1.56", "beta", "stable"]
        .iter()
        .filter(|want| {
            list.lines().any(|l| {
                let name = l.split_whitespace().next().unwrap_or_default();
                name == **want || name.starts_with(&format!("{want}-"))
            })
        })
        .map(|v| v.to_string())
        .collect();
    (!values.is_empty()).then_some(Example {
        dir: "strsim",
        workflow: "strsim CI",
        param: "rust",
        values,
    })
}

/// The installed Node.js major (upstream's matrix has 12 to 20; a newer one serves too).
fn node_example() -> Option<Example> {
    let version = stdout_of("node", &["--version"])?;
    let major = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .to_string();
    Some(Example {
        dir: "picocolors",
        workflow: "picocolors Testing",
        param: "node",
        values: vec![major],
    })
}

/// A private copy of `examples/<dir>` (the directory itself, as a repository root).
fn copy_example(dir: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let to = tmp.path().join(dir);
    copy_dir(&common::workspace_root().join("examples").join(dir), &to);
    (tmp, to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read example dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" || name == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn exec_example(ex: &Example, workdir: &Path) -> Output {
    let param = ex.param_arg();
    let mut cmd = common::agent(&["exec", ".workflows/ci.yaml", "--json", "-p", &param]);
    cmd.current_dir(workdir);
    common::run_with_deadline(cmd, LIMIT)
}

/// The instances of the matrix step `id` in a report (their ids start with `ID (`).
fn instances<'a>(r: &'a Value, id: &str) -> Vec<&'a Value> {
    let prefix = format!("{id} (");
    r["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["steps"].as_array().into_iter().flatten())
        .filter(|s| s["id"].as_str().is_some_and(|i| i.starts_with(&prefix)))
        .collect()
}

fn assert_green(ex: &Example, r: &Value, matrix_step: &str, what: &str) {
    assert_eq!(r["status"], "succeeded", "{what}: {r:#}");
    let inst = instances(r, matrix_step);
    assert_eq!(inst.len(), ex.values.len(), "{what}: {r:#}");
    for i in inst {
        assert_eq!(i["status"], "succeeded", "{what}: {i:#}");
    }
}

fn skipped(what: &str) {
    eprintln!("skipped: {what} is not installed on this machine");
}

/// Guards the Python example: typing_extensions' tests on every installed Python of its
/// matrix, each in its own virtualenv.
#[test]
fn typing_extensions_ci_runs_green_with_agent_exec() {
    let Some(ex) = python_example() else {
        return skipped("a Python of typing_extensions' matrix");
    };
    let (_tmp, dir) = copy_example(ex.dir);
    let out = exec_example(&ex, &dir);
    assert_eq!(code(&out), 0, "{}", common::stderr(&out));
    assert_green(&ex, &report(&out), "tests", "typing_extensions");
    assert!(
        common::stderr(&out).contains("OK"),
        "{}",
        common::stderr(&out)
    );
}

/// Guards the Rust example: strsim built and tested on every installed toolchain of its
/// matrix, then its formatting checked.
#[test]
fn strsim_ci_runs_green_with_agent_exec() {
    let Some(ex) = rust_example() else {
        return skipped("a Rust toolchain of strsim's matrix");
    };
    let (_tmp, dir) = copy_example(ex.dir);
    let out = exec_example(&ex, &dir);
    assert_eq!(code(&out), 0, "{}", common::stderr(&out));
    let r = report(&out);
    assert_green(&ex, &r, "build", "strsim");
    let fmt = r["stages"][1]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "fmt"))
        .expect("fmt step");
    assert_eq!(fmt["status"], "succeeded");
}

/// Guards the Node example: picocolors' tests on the installed Node.js.
#[test]
fn picocolors_ci_runs_green_with_agent_exec() {
    let Some(ex) = node_example() else {
        return skipped("node");
    };
    let (_tmp, dir) = copy_example(ex.dir);
    let out = exec_example(&ex, &dir);
    assert_eq!(code(&out), 0, "{}", common::stderr(&out));
    assert_green(&ex, &report(&out), "modern", "picocolors");
    assert!(
        common::stderr(&out).contains("✓ color matching"),
        "{}",
        common::stderr(&out)
    );
}

/// Guards the examples through the daemon: each is a local git repository (branch `main`)
/// watched by one daemon, triggered through the API with the installed part of its matrix,
/// and its run succeeds in a checked-out workspace.
#[test]
fn examples_ci_run_green_through_the_daemon() {
    let examples: Vec<(Example, &str)> = [
        python_example().map(|e| (e, "tests")),
        rust_example().map(|e| (e, "build")),
        node_example().map(|e| (e, "modern")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if examples.is_empty() {
        return skipped("any toolchain of the examples");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = String::from("repos:\n");
    for (ex, _) in &examples {
        let repo = tmp.path().join("repos").join(ex.dir);
        copy_dir(
            &common::workspace_root().join("examples").join(ex.dir),
            &repo,
        );
        init_repo(&repo, &[]);
        config.push_str(
            repo_config(ex.dir, &repo)
                .strip_prefix("repos:\n")
                .unwrap_or_default(),
        );
    }
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let runs: Vec<(String, &Example, &str)> = examples
        .iter()
        .map(|(ex, matrix_step)| {
            let body = serde_json::json!({
                "parameters": {ex.param: ex.values},
                "repo": ex.dir,
            });
            let id = trigger_with(&d, &ex.workflow.replace(' ', "%20"), &body.to_string());
            (id, ex, *matrix_step)
        })
        .collect();
    for (id, ex, matrix_step) in runs {
        let run = d.wait_run_final(&id, LIMIT);
        assert_green(ex, &run, matrix_step, ex.dir);
    }
}

/// Patches `file` of a copy: replaces `from` (which must be there) by `to`.
fn patch(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read source");
    assert!(text.contains(from), "`{from}` not in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write source");
}

/// The `--- failed: ID ...` section agent exec prints last for a failed step whose id
/// contains `id_part` (the tail of its log).
fn failed_tail(stderr: &str, id_part: &str) -> String {
    let at = stderr
        .match_indices("--- failed: ")
        .map(|(i, _)| i)
        .find(|&i| {
            stderr[i..]
                .lines()
                .next()
                .is_some_and(|l| l.contains(id_part))
        })
        .unwrap_or_else(|| panic!("no failure section for `{id_part}`:\n{stderr}"));
    let section = &stderr[at..];
    let end = section[1..]
        .find("\n--- failed: ")
        .or_else(|| section.find("\nfailed steps"))
        .map_or(section.len(), |e| e + 1);
    section[..end].to_string()
}

/// Guards a failing test in each example: the run fails, the failed step is the test step
/// and its log ends with the test runner's report of the failing test.
#[test]
fn broken_examples_fail_with_the_failing_tests_output() {
    if let Some(mut ex) = python_example() {
        ex.values.truncate(1);
        let (_tmp, dir) = copy_example(ex.dir);
        patch(
            &dir,
            "src/test_typing_extensions.py",
            "    def test_is_protocol(self):\n        self.assertTrue(is_protocol(Proto))",
            "    def test_is_protocol(self):\n        self.assertFalse(is_protocol(Proto))",
        );
        let out = exec_example(&ex, &dir);
        assert_eq!(code(&out), 1, "{}", common::stderr(&out));
        let tail = failed_tail(&common::stderr(&out), "/unittest");
        assert!(tail.contains("FAIL: test_is_protocol"), "{tail}");
        assert!(tail.contains("AssertionError: True is not false"), "{tail}");
        let last = tail.lines().rev().find(|l| !l.trim().is_empty());
        assert!(
            last.is_some_and(|l| l.starts_with("FAILED (failures=1")),
            "{tail}"
        );
    }
    if let Some(mut ex) = rust_example() {
        ex.values.truncate(1);
        let (_tmp, dir) = copy_example(ex.dir);
        patch(&dir, "src/lib.rs", "if x != y {", "if x == y {");
        let out = exec_example(&ex, &dir);
        assert_eq!(code(&out), 1, "{}", common::stderr(&out));
        let tail = failed_tail(&common::stderr(&out), "/test");
        assert!(tail.contains("test result: FAILED"), "{tail}");
        assert!(tail.contains("hamming"), "{tail}");
    }
    if let Some(ex) = node_example() {
        let (_tmp, dir) = copy_example(ex.dir);
        patch(
            &dir,
            "picocolors.js",
            "red: f(\"\\x1b[31m\", \"\\x1b[39m\")",
            "red: f(\"\\x1b[32m\", \"\\x1b[39m\")",
        );
        let out = exec_example(&ex, &dir);
        assert_eq!(code(&out), 1, "{}", common::stderr(&out));
        let tail = failed_tail(&common::stderr(&out), "/test");
        // The assertion that failed, where, and with what.
        assert!(tail.contains("AssertionError [ERR_ASSERTION]"), "{tail}");
        assert!(tail.contains("tests/test.js:"), "{tail}");
        assert!(tail.contains("expected: '\\x1B[31mstring"), "{tail}");
    }
}

/// Percent-encodes a path segment (step ids hold spaces, parentheses and `/`).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Guards the broken Node example through the daemon: a commit of the broken source is run
/// in its checked-out workspace, the run fails, and the log of the failed test step (read
/// through the API) ends with the failed assertion and Node's exit report.
#[test]
fn broken_example_through_the_daemon_ends_its_step_log_with_the_failure() {
    let Some(ex) = node_example() else {
        return skipped("node");
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repos").join(ex.dir);
    copy_dir(
        &common::workspace_root().join("examples").join(ex.dir),
        &repo,
    );
    patch(
        &repo,
        "picocolors.js",
        "red: f(\"\\x1b[31m\", \"\\x1b[39m\")",
        "red: f(\"\\x1b[32m\", \"\\x1b[39m\")",
    );
    init_repo(&repo, &[]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config(ex.dir, &repo));
    let body = serde_json::json!({"parameters": {ex.param: ex.values}, "repo": ex.dir});
    let id = trigger_with(&d, &segment(ex.workflow), &body.to_string());
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}");
    let step = format!("modern (node={})/test", ex.values[0]);
    let (status, log) = d.get(&format!("/api/v1/runs/{id}/steps/{}/log", segment(&step)));
    assert_eq!(status, 200, "{log}");
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(20)
        .collect();
    assert!(tail[0].starts_with("Node.js v"), "{log}");
    assert!(
        tail.iter()
            .any(|l| l.starts_with("AssertionError [ERR_ASSERTION]")),
        "{log}"
    );
}

/// Guards the CI examples' workflow files: each directory validates (its `ci.yaml` and the
/// job it calls per matrix instance).
#[test]
fn examples_ci_validate() {
    for dir in ["typing_extensions", "strsim", "picocolors"] {
        let path = format!("examples/{dir}");
        let mut cmd = common::agent(&["validate", &path]);
        cmd.current_dir(common::workspace_root());
        let out = common::run_with_deadline(cmd, Duration::from_secs(60));
        assert_eq!(code(&out), 0, "{dir}: {}", common::stderr(&out));
        assert!(
            common::stdout(&out).contains("checked 2 workflow files: all valid"),
            "{dir}: {}",
            common::stdout(&out)
        );
    }
}
