//! Helpers for the `agent exec` end-to-end tests: a temporary workspace to write workflow
//! files into, running `agent exec` there with a deadline, and reading the `--json` report.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::common;

/// A temporary workspace.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

impl Ws {
    pub fn new() -> Ws {
        // Build the binary now, so that timed sections do not include the build.
        common::agent_bin();
        Ws {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating parent directories) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// Writes an executable file.
    pub fn write_exec(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(name, text);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.dir.path().join(name).exists()
    }

    /// `agent exec FILE --workdir WS --json ARGS...` with a 60 s deadline.
    pub fn exec(&self, file: &str, args: &[&str]) -> Output {
        self.exec_env(file, args, &[])
    }

    /// Like [`Ws::exec`] with extra environment variables.
    pub fn exec_env(&self, file: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let ws = self.path().to_string_lossy().into_owned();
        let mut all = vec!["exec", file, "--workdir", ws.as_str(), "--json"];
        all.extend_from_slice(args);
        let mut cmd = common::agent(&all);
        cmd.current_dir(self.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::run_with_deadline(cmd, Duration::from_secs(60))
    }
}

/// The `--json` report on stdout.
pub fn report(out: &Output) -> Value {
    let text = common::stdout(out);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{text}\nstderr:\n{}",
            common::stderr(out)
        )
    })
}

/// The report entry of step `id` (stages, then rollback).
pub fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    let stages = report["stages"].as_array().expect("stages");
    for st in stages {
        for s in st["steps"].as_array().expect("steps") {
            if s["id"] == id {
                return s;
            }
        }
    }
    if let Some(rb) = report["rollback"]["steps"].as_array() {
        for s in rb {
            if s["id"] == id {
                return s;
            }
        }
    }
    panic!("no step `{id}` in report: {report:#}");
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Asserts the exit code, printing stderr on mismatch.
pub fn assert_code(out: &Output, expected: i32) {
    assert_eq!(
        code(out),
        expected,
        "exit code; stderr:\n{}\nstdout:\n{}",
        common::stderr(out),
        common::stdout(out)
    );
}
