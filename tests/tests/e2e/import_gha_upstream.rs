//! `agent import-gha` on real projects: five upstream GitHub Actions workflows (the
//! fixtures of `agent/tests/fixtures/gha/workflows/`, byte for byte as published) are
//! converted with the binary and run with `agent exec` on their projects' own sources from
//! the package registries (strsim, typing_extensions and picocolors under `examples/`, six
//! and scopeguard under `agent/tests/fixtures/gha/projects/`): green as published, red once
//! the code under test or a test is broken.
//!
//! The setup actions become the built-in skills (`rust-toolchain`, `setup-python`,
//! `setup-node`); no stand-in is used. The conversion is narrowed to this host with the
//! importer's own options, and nothing else is edited:
//! - `--matrix AXIS=VALUES` keeps the values of upstream's matrix that are installed here
//!   (computed from this machine, never assumed; a test is skipped, saying so, when none
//!   is), and `os=ubuntu-latest` of an `os` axis;
//! - `--job` leaves out jobs that cannot run here: typing_extensions' `docs` (uv through
//!   `astral-sh/setup-uv`, not converted) and scopeguard's `no_std` (`rustup target add`
//!   downloads a target from outside the package registries).
//!
//! Steps that install from a registry (`npm install`, `pip install coverage`, `pip install
//! tox` and tox's own installs of pytest and setuptools) run as published: the registries
//! are reachable here. A matrix value whose toolchain is not installed fails the run with
//! `ToolchainNotInstalled` (`missing_python_fails_the_run_clearly`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::exec::{code, report};

/// Generous: registry installs and cargo builds on a loaded machine; never a bound on speed.
const LIMIT: Duration = Duration::from_secs(600);

/// One project: a private copy of its sources with the upstream workflow in
/// `.github/workflows/`, converted into `.workflows/`.
struct Project {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// The converted workflow, relative to `dir`.
    workflow: String,
    label: &'static str,
}

fn fixtures() -> PathBuf {
    common::workspace_root().join("agent/tests/fixtures/gha")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read project dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        // The hand-written workflows and notes of the CI examples are not the project's;
        // build outputs are left behind.
        if [
            ".workflows",
            "UPSTREAM.md",
            "target",
            "Cargo.lock",
            "__pycache__",
            "node_modules",
            ".tox",
            ".agent",
        ]
        .iter()
        .any(|n| name == *n)
        {
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

impl Project {
    /// Copies `sources`, puts the fixture `fixture` at `.github/workflows/{upstream}` and
    /// converts it with `agent import-gha ARGS`: exit 0, and the file says where it came
    /// from and what the options left out.
    fn prepare(
        label: &'static str,
        sources: &Path,
        fixture: &str,
        upstream: &str,
        args: &[String],
    ) -> Project {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(label);
        copy_dir(sources, &dir);
        let workflows = dir.join(".github/workflows");
        std::fs::create_dir_all(&workflows).expect("create .github/workflows");
        std::fs::copy(
            fixtures().join("workflows").join(fixture),
            workflows.join(upstream),
        )
        .expect("copy the upstream workflow");
        let mut all = vec!["import-gha".to_string()];
        all.extend_from_slice(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut cmd = common::agent(&all);
        cmd.current_dir(&dir);
        let out = common::run_with_deadline(cmd, Duration::from_secs(60));
        assert_eq!(code(&out), 0, "{}", common::stderr(&out));
        let stem = upstream.rsplit_once('.').map_or(upstream, |s| s.0);
        let workflow = format!(".workflows/{stem}.yaml");
        let text = common::stdout(&out);
        assert!(text.contains(&format!("-> {workflow}")), "{text}");
        let converted = std::fs::read_to_string(dir.join(&workflow)).expect("converted file");
        assert!(
            converted.starts_with(&format!(
                "# Converted by `agent import-gha` from .github/workflows/{upstream}."
            )),
            "{converted}"
        );
        if args.iter().any(|a| a == "--matrix") {
            assert!(converted.contains("narrowed by --matrix to"), "{converted}");
        }
        Project {
            _tmp: tmp,
            dir,
            workflow,
            label,
        }
    }

    fn exec(&self) -> (Output, Value) {
        let started = Instant::now();
        let mut cmd = common::agent(&["exec", &self.workflow, "--json"]);
        cmd.current_dir(&self.dir);
        let out = common::run_with_deadline(cmd, LIMIT);
        eprintln!(
            "{}: agent exec {} exited {} after {:.1}s",
            self.label,
            self.workflow,
            code(&out),
            started.elapsed().as_secs_f64()
        );
        let r = report(&out);
        (out, r)
    }

    /// Runs the converted workflow: exit 0, and each of `ran` (step ids) succeeded (so a
    /// green run cannot come from skipped test steps).
    fn green(&self, ran: &[String]) {
        let (out, r) = self.exec();
        assert_eq!(code(&out), 0, "{}", common::stderr(&out));
        assert_eq!(r["status"], "succeeded", "{r:#}");
        for id in ran {
            assert_eq!(step_of(&r, id)["status"], "succeeded", "{id}: {r:#}");
        }
    }

    /// Replaces `from` (which must be there) by `to` in `file`.
    fn patch(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).expect("read source");
        assert!(text.contains(from), "`{from}` not in {file}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write source");
    }

    /// Runs again after a patch: exit 1, the run failed at `failing`, and the log says
    /// `says` (the test runner's word for the broken test). With a matrix, `failing` is one
    /// instance's step: another instance may fail first and cancel it (`fail-fast`), so the
    /// step then counts when an instance of the same step failed on the broken code.
    fn red(&self, failing: &str, says: &str) {
        let (out, r) = self.exec();
        let stderr = common::stderr(&out);
        assert_eq!(code(&out), 1, "{stderr}");
        assert_eq!(r["status"], "failed", "{r:#}");
        let s = step_of(&r, failing);
        let step = failing.split(" (").next().unwrap_or(failing);
        let failed = if s["status"] == "cancelled" {
            steps_of(&r)
                .find(|t| {
                    t["id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(&format!("{step} (")))
                        && t["status"] == "failed"
                })
                .unwrap_or(s)
        } else {
            s
        };
        assert_eq!(failed["status"], "failed", "{failing}: {r:#}");
        assert_eq!(failed["error_class"], "ExitCode", "{failing}: {failed:#}");
        assert!(stderr.contains(says), "`{says}` not in:\n{stderr}");
    }
}

/// Every step of every stage of a report.
fn steps_of(r: &Value) -> impl Iterator<Item = &Value> {
    r["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["steps"].as_array().into_iter().flatten())
}

fn step_of<'a>(r: &'a Value, id: &str) -> &'a Value {
    steps_of(r)
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step `{id}` in {r:#}"))
}

fn stdout_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Full versions (`3.12.1`) of the Pythons installed here: pyenv's, and `pythonX.Y` of
/// the system directories.
fn installed_pythons() -> Vec<String> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".pyenv"))
        .join("versions");
    let mut found: Vec<String> = std::fs::read_dir(&pyenv)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/python").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for d in ["/usr/bin", "/usr/local/bin"] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(minor) = name.strip_prefix("python3.") else {
                continue;
            };
            if minor.is_empty() || !minor.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            if let Some(v) = stdout_of(&e.path().to_string_lossy(), &["--version"]) {
                found.push(v.trim().trim_start_matches("Python ").to_string());
            }
        }
    }
    found
}

/// The newest `X.Y` value of upstream's matrix (listed oldest first) installed here.
fn newest_python(upstream: &[&str]) -> Option<String> {
    let installed = installed_pythons();
    upstream
        .iter()
        .rev()
        .filter(|v| v.split('.').count() == 2 && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .find(|v| installed.iter().any(|i| i.starts_with(&format!("{v}."))))
        .map(|v| v.to_string())
}

/// The toolchains of upstream's matrix that rustup has here.
fn rust_toolchains(upstream: &[&str]) -> Vec<String> {
    let Some(list) = stdout_of("rustup", &["toolchain", "list"]) else {
        return Vec::new();
    };
    upstream
        .iter()
        .filter(|want| {
            list.lines().any(|l| {
                let name = l.split_whitespace().next().unwrap_or_default();
                name == **want || name.starts_with(&format!("{want}-"))
            })
        })
        .map(|v| v.to_string())
        .collect()
}

fn skipped(what: &str) {
    eprintln!("skipped: {what} is not installed on this machine");
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Guards strsim's CI (`rapidfuzz/strsim-rs`, `.github/workflows/ci.yml`): its `build`
/// job (rust-toolchain, `cargo build`, `cargo test`) on the installed toolchains of its
/// matrix and its `check-formatting` job (`cargo fmt --check`) run green on strsim 0.11.1;
/// a broken `hamming` fails `cargo test`.
#[test]
fn strsim_upstream_ci_runs_green_then_red() {
    let rust = rust_toolchains(&["1.56", "beta", "stable"]);
    let Some(first) = rust.first().cloned() else {
        return skipped("a Rust toolchain of strsim's matrix");
    };
    let p = Project::prepare(
        "strsim",
        &common::workspace_root().join("examples/strsim"),
        "rapidfuzz-strsim-rs-ci.yml",
        "ci.yml",
        &args(&[
            "--matrix",
            "os=ubuntu-latest",
            "--matrix",
            &format!("rust={}", rust.join(",")),
        ]),
    );
    let mut ran = vec!["check-formatting".to_string()];
    for r in &rust {
        ran.push(format!("build-the-code (os=ubuntu-latest, rust={r})"));
        ran.push(format!("test-the-code (os=ubuntu-latest, rust={r})"));
    }
    p.green(&ran);
    p.patch("src/lib.rs", "if x != y {", "if x == y {");
    p.red(
        &format!("test-the-code (os=ubuntu-latest, rust={first})"),
        "test result: FAILED",
    );
}

/// Guards scopeguard's CI (`bluss/scopeguard`, `.github/workflows/ci.yaml`, shipped in its
/// crate): the `build` job (`actions-rs/toolchain`, `cargo build`, `cargo test` with and
/// without default features) on the installed toolchains of its matrix and the `format`
/// job run green on scopeguard 1.2.0; `OnSuccess` running on unwinding fails `cargo test`.
#[test]
fn scopeguard_upstream_ci_runs_green_then_red() {
    let rust = rust_toolchains(&["stable", "beta", "nightly", "1.20.0"]);
    let Some(first) = rust.first().cloned() else {
        return skipped("a Rust toolchain of scopeguard's matrix");
    };
    let p = Project::prepare(
        "scopeguard",
        &fixtures().join("projects/scopeguard"),
        "bluss-scopeguard-ci.yaml",
        "ci.yaml",
        &args(&[
            "--job",
            "build",
            "--job",
            "format",
            "--matrix",
            &format!("rust={}", rust.join(",")),
        ]),
    );
    let converted = std::fs::read_to_string(p.dir.join(&p.workflow)).expect("converted");
    assert!(
        converted.contains("note: job `no_std` left out: not selected by --job"),
        "{converted}"
    );
    let mut ran = vec!["check-formatting".to_string()];
    for r in &rust {
        ran.push(format!("run-tests (rust={r})"));
        ran.push(format!("run-tests-without-default (rust={r})"));
    }
    p.green(&ran);
    p.patch(
        "src/lib.rs",
        "    fn should_run() -> bool {\n        !std::thread::panicking()",
        "    fn should_run() -> bool {\n        std::thread::panicking()",
    );
    p.red(&format!("run-tests (rust={first})"), "test_defer_success_1");
}

/// Guards typing_extensions' "Test and lint" (`python/typing_extensions`,
/// `.github/workflows/ci.yml`): its `tests` job (setup-python, `pip install coverage`, the
/// test suite under coverage, CPython's typing tests) on the newest installed Python of its
/// matrix runs green on typing_extensions 4.16.0; a broken test fails the coverage step.
#[test]
fn typing_extensions_upstream_ci_runs_green_then_red() {
    let upstream = [
        "3.9", "3.9.12", "3.10", "3.10.4", "3.11", "3.11.0", "3.12", "3.12.0", "3.13", "3.13.0",
        "3.14",
    ];
    let Some(py) = newest_python(&upstream) else {
        return skipped("a Python of typing_extensions' matrix");
    };
    let p = Project::prepare(
        "typing_extensions",
        &common::workspace_root().join("examples/typing_extensions"),
        "python-typing_extensions-ci.yml",
        "ci.yml",
        &args(&[
            "--job",
            "tests",
            "--matrix",
            &format!("python-version={py}"),
        ]),
    );
    let at = |id: &str| format!("{id} (python-version={py})");
    p.green(&[
        at("install-coverage"),
        at("test-typing-extensions-with"),
        at("test-cpython-typing-test-suite"),
    ]);
    p.patch(
        "src/test_typing_extensions.py",
        "    def test_is_protocol(self):\n        self.assertTrue(is_protocol(Proto))",
        "    def test_is_protocol(self):\n        self.assertFalse(is_protocol(Proto))",
    );
    p.red(&at("test-typing-extensions-with"), "FAIL: test_is_protocol");
}

/// Guards six's CI (`benjaminp/six`, `.github/workflows/ci.yml` at 1.17.0, whose matrix
/// closes a flow sequence at its key's indentation): setup-python, `pip install tox` and
/// `python -m tox` (pytest) on the newest installed Python of its matrix run green on six
/// 1.17.0; a broken `six.b` fails tox.
#[test]
fn six_upstream_ci_runs_green_then_red() {
    let upstream = [
        "2.7", "3.5", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13",
    ];
    let Some(py) = newest_python(&upstream) else {
        return skipped("a Python of six's matrix");
    };
    let p = Project::prepare(
        "six",
        &fixtures().join("projects/six"),
        "benjaminp-six-ci.yml",
        "ci.yml",
        &args(&[
            "--matrix",
            "os=ubuntu-latest",
            "--matrix",
            &format!("python-version={py}"),
        ]),
    );
    let at = |id: &str| format!("{id} (python-version={py}, os=ubuntu-latest)");
    p.green(&[
        at("test-set-up-python-on"),
        at("install-dependencies"),
        at("run-tox"),
    ]);
    // Not the same length: Python's bytecode cache, checked by mtime and size, would
    // otherwise keep the passing module when both are written in one second.
    p.patch(
        "six.py",
        "    def b(s):\n        return s.encode(\"latin-1\")",
        "    def b(s):\n        return s.encode(\"utf-8\")",
    );
    p.red(&at("run-tox"), "FAILED test_six.py::test_b");
}

/// Guards picocolors' "Testing" (`alexeyraspopov/picocolors`,
/// `.github/workflows/testing.yaml`): its `modern` job (setup-node, `npm install`, `node
/// tests/test.js`) on the installed Node.js major runs green on picocolors 1.1.1; its
/// `legacy` job (Node 10, 8, 6) keeps no value and is left out; a wrong red fails the test.
#[test]
fn picocolors_upstream_ci_runs_green_then_red() {
    let Some(version) = stdout_of("node", &["--version"]) else {
        return skipped("node");
    };
    let major = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    if !["20", "18", "16", "14", "12"].contains(&major.as_str()) {
        return skipped("a Node.js of picocolors' `modern` matrix (20, 18, 16, 14, 12)");
    }
    let p = Project::prepare(
        "picocolors",
        &common::workspace_root().join("examples/picocolors"),
        "alexeyraspopov-picocolors-testing.yaml",
        "testing.yaml",
        &args(&["--matrix", &format!("node-version={major}")]),
    );
    let converted = std::fs::read_to_string(p.dir.join(&p.workflow)).expect("converted");
    assert!(
        converted.contains(
            "note: job `legacy` left out: --matrix keeps no value of its axis `node-version`"
        ),
        "{converted}"
    );
    let at = |id: &str| format!("{id} (node-version={major})");
    p.green(&[at("npm-install"), at("node-tests-test-js")]);
    p.patch(
        "picocolors.js",
        "red: f(\"\\x1b[31m\", \"\\x1b[39m\")",
        "red: f(\"\\x1b[32m\", \"\\x1b[39m\")",
    );
    p.red(&at("node-tests-test-js"), "AssertionError [ERR_ASSERTION]");
}

/// Guards what a matrix value without its toolchain does: typing_extensions' exact pin
/// (e.g. `3.11.0`) that this machine lacks fails the run at setup-python with
/// `ToolchainNotInstalled`, naming the version, and the tests after it do not run.
#[test]
fn missing_python_fails_the_run_clearly() {
    let installed = installed_pythons();
    let Some(pin) = ["3.9.12", "3.10.4", "3.11.0", "3.12.0", "3.13.0"]
        .into_iter()
        .find(|v| !installed.iter().any(|i| i == v))
    else {
        eprintln!("skipped: every pinned Python of typing_extensions' matrix is installed");
        return;
    };
    let p = Project::prepare(
        "typing_extensions",
        &common::workspace_root().join("examples/typing_extensions"),
        "python-typing_extensions-ci.yml",
        "ci.yml",
        &args(&[
            "--job",
            "tests",
            "--matrix",
            &format!("python-version={pin}"),
        ]),
    );
    let (out, r) = p.exec();
    let stderr = common::stderr(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert_eq!(r["status"], "failed", "{r:#}");
    let setup = step_of(&r, &format!("set-up-python (python-version={pin})"));
    assert_eq!(setup["status"], "failed", "{setup:#}");
    assert_eq!(setup["error_class"], "ToolchainNotInstalled", "{setup:#}");
    assert!(
        stderr.contains(&format!("python {pin} is not installed")),
        "{stderr}"
    );
    let tests = step_of(
        &r,
        &format!("test-typing-extensions-with (python-version={pin})"),
    );
    assert_ne!(tests["status"], "succeeded", "{tests:#}");
}

/// Guards `--job` and `--matrix` naming nothing of the sources: a usage error (exit 2)
/// that names each, and nothing is written.
#[test]
fn selection_naming_nothing_is_a_usage_error() {
    let ws = common::exec::Ws::new();
    ws.write(
        ".github/workflows/testing.yaml",
        &std::fs::read_to_string(
            fixtures().join("workflows/alexeyraspopov-picocolors-testing.yaml"),
        )
        .expect("fixture"),
    );
    let mut cmd = common::agent(&[
        "import-gha",
        "--job",
        "modern",
        "--job",
        "nope",
        "--matrix",
        "node-version=20,21",
        "--matrix",
        "os=ubuntu-latest",
    ]);
    cmd.current_dir(ws.path());
    let out = common::run_with_deadline(cmd, Duration::from_secs(60));
    assert_eq!(code(&out), 2);
    let err = common::stderr(&out);
    for want in [
        "error: --job nope: no such job",
        "error: --matrix node-version=21: the axis has no value `21`",
        "error: --matrix os: no job has a matrix axis `os`",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    assert!(!err.contains("--job modern"), "{err}");
    assert!(!ws.exists(".workflows/testing.yaml"));
    let mut cmd = common::agent(&["import-gha", "--matrix", "node-version"]);
    cmd.current_dir(ws.path());
    let out = common::run_with_deadline(cmd, Duration::from_secs(60));
    assert_eq!(code(&out), 2);
    assert!(
        common::stderr(&out).contains("--matrix `node-version`: write AXIS=VALUE[,VALUE...]"),
        "{}",
        common::stderr(&out)
    );
}
