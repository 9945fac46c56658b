//! Every example under `examples/` runs end to end through `agent exec`, in a private copy of
//! the examples directory: the example deployment (healthy, and unhealthy so that the error
//! handlers and the rollback are seen working), the canary rollout, the data pipeline and
//! hello.

use crate::common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// A private copy of `examples/` in a temporary directory.
struct Examples {
    dir: tempfile::TempDir,
}

impl Examples {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        copy_dir(&common::workspace_root().join("examples"), dir.path());
        Examples { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn exec(&self, workflow: &str, params: &[&str], limit: Duration) -> Output {
        let file = format!(".workflows/{workflow}");
        let mut args = vec!["exec", file.as_str(), "--json"];
        for p in params {
            args.push("-p");
            args.push(p);
        }
        let mut cmd = common::agent(&args);
        cmd.current_dir(self.path());
        common::run_with_deadline(cmd, limit)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read examples dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a JSON report ({e}); stderr:\n{}",
            common::stderr(out)
        )
    })
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["steps"].as_array().into_iter().flatten())
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step `{id}` in report {report:#}"))
}

/// PIDs of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline: PathBuf = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&cmdline) {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = state
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'));
            if text.contains(needle) && !zombie {
                found.push(pid);
            }
        }
    }
    found
}

fn assert_no_server_left(ex: &Examples) {
    let needle = ex.path().to_string_lossy().into_owned();
    let left = common::poll(Duration::from_secs(5), || {
        processes_mentioning(&needle).is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "processes of the run outlived it: {:?}",
        processes_mentioning(&needle)
    );
}

#[test]
fn hello_greets_and_hands_outputs_along() {
    let ex = Examples::new();
    let out = ex.exec("hello.yaml", &["who=Agent"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(step(&r, "compose")["outputs"]["greeting"], "Hello, Agent!");
    assert_eq!(step(&r, "count")["outputs"]["length"], "13");
    assert!(common::stderr(&out).contains("Hello, Agent!"));
}

#[test]
fn deploy_builds_serves_and_health_checks_over_http() {
    let ex = Examples::new();
    let out = ex.exec(
        "deploy.yaml",
        &["version=1.2.3", "environment=staging"],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert!(r["rollback"].is_null());
    let endpoint = step(&r, "deploy_to_environment")["outputs"]["endpoint"]
        .as_str()
        .expect("deployer reports its endpoint")
        .to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_eq!(step(&r, "health_check")["status"], "succeeded");
    assert!(
        common::stderr(&out).contains(&format!("GET {endpoint}/health -> 200")),
        "{}",
        common::stderr(&out)
    );
    let artifact = step(&r, "build_application")["outputs"]["artifact"]
        .as_str()
        .expect("artifact output");
    assert!(Path::new(artifact).join("health").is_file());
    // The backup sub-workflow handed its output back to the caller.
    assert!(
        step(&r, "backup_current")["outputs"]["backup_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("staging-"))
    );
    assert_no_server_left(&ex);
}

#[test]
fn unhealthy_deploy_retries_then_rolls_back_and_stays_failed() {
    let ex = Examples::new();
    // A first, healthy deployment that the failing one must be rolled back to.
    let first = ex.exec(
        "deploy.yaml",
        &["version=1.0.0", "environment=staging"],
        Duration::from_secs(120),
    );
    assert_eq!(first.status.code(), Some(0), "{}", common::stderr(&first));

    let out = ex.exec(
        "deploy.yaml",
        &["version=1.0.1-unhealthy", "environment=staging"],
        Duration::from_secs(180),
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    let health = step(&r, "health_check");
    assert_eq!(health["status"], "failed");
    assert_eq!(health["error_class"], "HealthCheckFailed");
    // Three tries from the workflow's retry policy, then the handler's three extra tries.
    assert_eq!(health["attempts"], 6);
    let rollback = &r["rollback"];
    assert_eq!(rollback["status"], "succeeded", "{rollback:#}");
    let ids: Vec<&str> = rollback["steps"]
        .as_array()
        .expect("rollback steps")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["restore_from_backup", "verify_rollback"]);
    // The rollback restored the healthy 1.0.0 build and verified it over HTTP.
    let restored = rollback["steps"][0]["outputs"]["endpoint"]
        .as_str()
        .expect("restored endpoint");
    assert!(restored.starts_with("http://127.0.0.1:"), "{restored}");
    assert!(
        common::stderr(&out).contains(&format!("GET {restored}/health -> 200")),
        "{}",
        common::stderr(&out)
    );
    assert_no_server_left(&ex);
}

#[test]
fn invalid_version_fails_validation_without_retries() {
    let ex = Examples::new();
    let out = ex.exec(
        "deploy.yaml",
        &["version=banana", "environment=staging"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let r = report(&out);
    let v = step(&r, "validate_version");
    assert_eq!(v["error_class"], "ValidationError");
    assert_eq!(v["attempts"], 1);
    assert_eq!(step(&r, "build_application")["status"], "skipped");
}

#[test]
fn deploy_rejects_an_environment_outside_its_enum() {
    let ex = Examples::new();
    let out = ex.exec(
        "deploy.yaml",
        &["version=1.2.3", "environment=moon"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("moon"));
}

#[test]
fn canary_rolls_out_progressively() {
    let ex = Examples::new();
    let out = ex.exec("canary.yaml", &[], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        step(&r, "increase_traffic")["outputs"]["final_percentage"],
        "100"
    );
    assert!(ex.path().join(".deploy/DEPLOYED.md").is_file());
    assert_no_server_left(&ex);
}

#[test]
fn data_processing_extracts_transforms_in_parallel_and_loads() {
    let ex = Examples::new();
    let out = ex.exec("data_processing.yaml", &[], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    let written = std::fs::read_to_string(ex.path().join("data/output.json"))
        .expect("the pipeline wrote its output");
    let names: Vec<String> = written
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON line")["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["ALICE", "BOB", "DAVE"]);
    assert_eq!(step(&r, "verify_output")["status"], "succeeded");
}
