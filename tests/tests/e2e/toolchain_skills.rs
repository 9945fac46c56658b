//! The built-in toolchain skills (`setup-python`, `setup-node`, `rust-toolchain`, `setup-go`)
//! through `agent exec`, in a workspace that provides no skills of its own. What is installed
//! is computed here from the machine (the CI machine may have other versions): an installed
//! version is selected and used by the later steps, a missing one fails the step with
//! `TOOL VERSION is not installed; installed: LIST; install it with `COMMAND``, naming the
//! version manager that is present.

use crate::common;
use crate::common::exec;

use exec::{Ws, assert_code, report, step};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Stdout of a command, trimmed, when it ran and succeeded.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A program on this process's PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
}

/// The version manager the Python hint names: uv, else pyenv, else uv (the suggestion).
fn python_manager_hint(version: &str) -> String {
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".pyenv"));
    let uv = on_path("uv").is_some()
        || home().join(".local/bin/uv").is_file()
        || home().join(".cargo/bin/uv").is_file();
    if !uv && (on_path("pyenv").is_some() || pyenv_root.join("bin/pyenv").is_file()) {
        format!("pyenv install {version}")
    } else {
        format!("uv python install {version}")
    }
}

/// The last lines agent exec printed for a failed step (its `--- failed: ID ... ---` tail).
fn failure_tail(stderr: &str, id: &str) -> String {
    let head = format!("--- failed: {id} ");
    let at = stderr
        .find(&head)
        .unwrap_or_else(|| panic!("no failure tail for `{id}` in:\n{stderr}"));
    stderr[at..].to_string()
}

/// Guards `setup-python` with an installed version: the later step runs in a fresh
/// virtualenv of that Python under `AGENT_TEMP` (its `sys.prefix` is `VIRTUAL_ENV`, the
/// interpreter has the wanted version, pip is there), and the outputs name them.
#[test]
fn setup_python_runs_a_test_in_its_virtualenv() {
    let Some(version) = output_of(
        "python3",
        &["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    ) else {
        eprintln!("skipped: no python3 on this machine");
        return;
    };
    let ws = Ws::new();
    ws.write(
        "test_prefix.py",
        r#"import os, sys, unittest

class VirtualenvTest(unittest.TestCase):
    def test_prefix_is_the_virtualenv(self):
        self.assertEqual(sys.prefix, os.environ["VIRTUAL_ENV"])
        self.assertNotEqual(sys.prefix, sys.base_prefix)
        self.assertTrue(sys.prefix.startswith(os.environ["AGENT_TEMP"]))

    def test_version(self):
        want = tuple(int(p) for p in os.environ["WANT"].split("."))
        self.assertEqual(sys.version_info[:2], want)

if __name__ == "__main__":
    unittest.main()
"#,
    );
    ws.write(
        "wf.yaml",
        &format!(
            r#"workflow:
  name: py
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-python
          parameters: {{version: "{version}"}}
        - id: test
          env: {{WANT: "{version}"}}
          run: |
            python -m unittest -v test_prefix
            python -m pip --version
            echo "prefix=$(python -c 'import sys; print(sys.prefix)')" >> "$AGENT_OUTPUT"
"#
        ),
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    let setup = &step(&r, "setup")["outputs"];
    assert!(
        setup["python-version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("{version}."))),
        "{setup}"
    );
    assert_eq!(
        step(&r, "test")["outputs"]["prefix"],
        setup["venv"],
        "{r:#}"
    );
    let se = common::stderr(&out);
    assert!(se.contains("Ran 2 tests"), "{se}");
}

/// Guards the failure of `setup-python` for a version that is not installed: the precise
/// message (with the installed versions and the present version manager's command), the
/// step's error class, and no later step running.
#[test]
fn setup_python_missing_version_fails_precisely() {
    let Some(installed) = output_of(
        "python3",
        &["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    ) else {
        eprintln!("skipped: no python3 on this machine");
        return;
    };
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: py
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-python
          parameters: {version: "3.1"}
        - id: after
          run: echo never
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "setup")["error_class"], "ToolchainNotInstalled");
    assert_eq!(step(&r, "after")["status"], "skipped");
    let tail = failure_tail(&common::stderr(&out), "setup");
    let line = tail
        .lines()
        .find(|l| l.contains("python 3.1 is not installed"))
        .unwrap_or_else(|| panic!("{tail}"));
    let message = line.trim_start_matches([' ', '|']);
    assert!(
        message.starts_with("python 3.1 is not installed; installed: "),
        "{message}"
    );
    let list = message
        .strip_prefix("python 3.1 is not installed; installed: ")
        .and_then(|rest| rest.split("; install it with ").next())
        .unwrap_or_default();
    assert!(
        list.split(", ").any(|v| v == installed),
        "`{installed}` not in `{list}`: {message}"
    );
    let hint = python_manager_hint("3.1");
    assert!(
        message.ends_with(&format!("; install it with `{hint}`")),
        "{message}"
    );
    // The run's error carries the same line.
    assert_eq!(
        r["error"],
        format!("step `setup` failed: ToolchainNotInstalled (exit code 1): {message}"),
        "{r:#}"
    );
}

/// Guards `setup-node` with the installed major (later steps find that node first on PATH,
/// under `AGENT_TEMP` for a system install) and its precise failure for a missing major.
#[test]
fn setup_node_installed_major_works_and_missing_one_fails() {
    let Some(version) = output_of("node", &["--version"]) else {
        eprintln!("skipped: no node on this machine");
        return;
    };
    let full = version.trim_start_matches('v').to_string();
    let major = full.split('.').next().unwrap_or_default().to_string();
    let missing = if major == "7" { "5" } else { "7" };
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        &format!(
            r#"workflow:
  name: node
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-node
          parameters: {{version: "{major}"}}
        - id: use
          run: |
            echo "version=$(node -e 'console.log(process.versions.node)')" >> "$AGENT_OUTPUT"
            echo "node=$(command -v node)" >> "$AGENT_OUTPUT"
        - id: missing
          skill: setup-node
          parameters: {{version: "{missing}"}}
"#
        ),
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "setup")["status"], "succeeded", "{r:#}");
    assert_eq!(step(&r, "setup")["outputs"]["node-version"], full.as_str());
    assert_eq!(step(&r, "use")["outputs"]["version"], full.as_str());
    assert_eq!(step(&r, "missing")["error_class"], "ToolchainNotInstalled");
    let fnm = on_path("fnm").is_some() || home().join(".local/share/fnm/fnm").is_file();
    let nvm = Path::new(
        &std::env::var("NVM_DIR")
            .unwrap_or_else(|_| home().join(".nvm").to_string_lossy().into_owned()),
    )
    .join("nvm.sh")
    .is_file();
    let manager = if !fnm && nvm { "nvm" } else { "fnm" };
    let tail = failure_tail(&common::stderr(&out), "missing");
    let message = format!("node {missing} is not installed; installed: ");
    let line = tail
        .lines()
        .find(|l| l.contains(&message))
        .unwrap_or_else(|| panic!("{tail}"));
    assert!(line.contains(&full), "{line}");
    assert!(
        line.ends_with(&format!("; install it with `{manager} install {missing}`")),
        "{line}"
    );
}

/// Guards `rust-toolchain`: without a parameter it selects the toolchain rustup has active
/// in the workspace, by name it selects that toolchain (`RUSTUP_TOOLCHAIN` for the later
/// steps, whose `rustc` reports the same version), and a missing one fails precisely.
#[test]
fn rust_toolchain_with_the_active_toolchain_works() {
    if on_path("rustup").is_none() {
        eprintln!("skipped: no rustup on this machine");
        return;
    }
    let ws = Ws::new();
    let active = Command::new("rustup")
        .args(["show", "active-toolchain"])
        .current_dir(ws.path())
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .expect("rustup");
    let active = String::from_utf8_lossy(&active.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(!active.is_empty(), "no active toolchain");
    ws.write(
        "wf.yaml",
        &format!(
            r#"workflow:
  name: rust
  stages:
    - name: s
      steps:
        - id: default
          skill: rust-toolchain
        - id: named
          skill: rust-toolchain
          parameters: {{toolchain: "{active}"}}
        - id: use
          run: |
            echo "toolchain=$RUSTUP_TOOLCHAIN" >> "$AGENT_OUTPUT"
            echo "rustc=$(rustc --version | cut -d' ' -f2)" >> "$AGENT_OUTPUT"
        - id: missing
          skill: rust-toolchain
          parameters: {{toolchain: "1.0.0"}}
"#
        ),
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "default")["outputs"]["toolchain"], active.as_str());
    let named = &step(&r, "named")["outputs"];
    assert_eq!(named["toolchain"], active.as_str());
    let used = &step(&r, "use")["outputs"];
    assert_eq!(used["toolchain"], active.as_str());
    assert_eq!(used["rustc"], named["rustc-version"], "{r:#}");
    let tail = failure_tail(&common::stderr(&out), "missing");
    let line = tail
        .lines()
        .find(|l| l.contains("rust 1.0.0 is not installed; installed: "))
        .unwrap_or_else(|| panic!("{tail}"));
    assert!(
        line.ends_with("; install it with `rustup toolchain install 1.0.0`"),
        "{line}"
    );
}

/// Guards `setup-go` on a machine without Go: the precise message, with nothing installed.
#[test]
fn setup_go_without_go_fails_precisely() {
    let anywhere = on_path("go").is_some()
        || Path::new("/usr/local/go/bin/go").exists()
        || Path::new("/usr/lib/go/bin/go").exists()
        || home().join("go/bin/go").exists()
        || std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("go-"));
    if anywhere {
        eprintln!("skipped: Go is installed on this machine");
        return;
    }
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: go
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-go
          parameters: {version: "1.22"}
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(step(&r, "setup")["error_class"], "ToolchainNotInstalled");
    let tail = failure_tail(&common::stderr(&out), "setup");
    assert!(
        tail.contains(
            "go 1.22 is not installed; installed: none; install it with `apt-get install golang-go` or from https://go.dev/dl/"
        ),
        "{tail}"
    );
}

/// Guards the lookup order: a workspace skill named like a built-in wins over it.
#[test]
fn a_workspace_skill_wins_over_the_builtin() {
    let ws = Ws::new();
    ws.write_exec(
        ".workflows/skills/setup-node",
        "#!/bin/sh\necho \"mine=yes\" >> \"$AGENT_OUTPUT\"\n",
    );
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: own
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-node
          parameters: {version: "1"}
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(step(&report(&out), "setup")["outputs"]["mine"], "yes");
}

/// Guards the version-manager side of `setup-node`: with nvm's tree in `HOME` (a Node.js
/// `v99.1.2` there, a link to the machine's node), that version is selected from nvm and put
/// first on PATH, and a missing major's hint names nvm.
#[test]
fn setup_node_finds_nvm_versions_and_names_nvm_in_the_hint() {
    let Some(node) = on_path("node") else {
        eprintln!("skipped: no node on this machine");
        return;
    };
    if on_path("fnm").is_some() {
        eprintln!("skipped: fnm is on PATH (its hint comes first)");
        return;
    }
    let ws = Ws::new();
    let home = ws.path().join("home");
    let bin = home.join(".nvm/versions/node/v99.1.2/bin");
    std::fs::create_dir_all(&bin).expect("nvm tree");
    std::fs::write(home.join(".nvm/nvm.sh"), "# nvm\n").expect("nvm.sh");
    std::os::unix::fs::symlink(&node, bin.join("node")).expect("link node");
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: nvm
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-node
          parameters: {version: "99"}
        - id: use
          run: echo "node=$(command -v node)" >> "$AGENT_OUTPUT"
        - id: missing
          skill: setup-node
          parameters: {version: "7"}
"#,
    );
    let out = ws.exec_env("wf.yaml", &[], &[("HOME", &home.to_string_lossy())]);
    assert_code(&out, 1);
    let r = report(&out);
    let setup = &step(&r, "setup")["outputs"];
    assert_eq!(setup["manager"], "nvm", "{r:#}");
    assert_eq!(setup["node-version"], "99.1.2");
    assert_eq!(
        step(&r, "use")["outputs"]["node"],
        bin.join("node").to_string_lossy().as_ref()
    );
    let tail = failure_tail(&common::stderr(&out), "missing");
    let line = tail
        .lines()
        .find(|l| l.contains("node 7 is not installed; installed: "))
        .unwrap_or_else(|| panic!("{tail}"));
    assert!(line.contains("99.1.2"), "{line}");
    assert!(
        line.ends_with("; install it with `nvm install 7`"),
        "{line}"
    );
}

/// Guards the `error_message` output the built-in skills write when they fail: any failing
/// step may write it, and its first line joins the step's failure message (the run's error).
#[test]
fn a_failing_steps_error_message_joins_the_run_error() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: explained
  stages:
    - name: s
      steps:
        - id: broken
          run: |
            printf 'error_message<<END\nthe disk is full\nsecond line\nEND\n' >> "$AGENT_OUTPUT"
            exit 3
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(
        r["error"],
        "step `broken` failed: ExitCode (exit code 3): the disk is full"
    );
}

/// Guards `version_file`: with no `version`, `setup-node` reads the wanted version from the
/// workspace's `.nvmrc` (as `actions/setup-node`'s `node-version-file`), and a missing file
/// fails the step as a `ValidationError` naming it.
#[test]
fn setup_node_reads_the_version_file() {
    let Some(version) = output_of("node", &["--version"]) else {
        eprintln!("skipped: no node on this machine");
        return;
    };
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let ws = Ws::new();
    ws.write(".nvmrc", &format!("v{major}\n"));
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: file
  stages:
    - name: s
      steps:
        - id: setup
          skill: setup-node
          parameters: {version_file: .nvmrc}
        - id: missing
          skill: setup-node
          parameters: {version_file: .tool-versions}
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    assert_eq!(
        step(&r, "setup")["outputs"]["node-version"],
        version.trim_start_matches('v')
    );
    assert_eq!(step(&r, "missing")["error_class"], "ValidationError");
    assert!(
        r["error"].as_str().is_some_and(
            |e| e.ends_with("setup-node: the version file `.tool-versions` does not exist")
        ),
        "{r:#}"
    );
}
