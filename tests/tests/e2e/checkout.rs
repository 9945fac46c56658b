//! A daemon run's workspace is a git working tree at the run's commit (`checkout:`), and
//! every step sees the standard variables (`CI`, `AGENT_*`), under the daemon and under
//! `agent exec`.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{
    TestDaemon, commit_files, fixture, git, init_repo, repo_config, trigger, yaml_quote,
};
use common::exec::Ws;

const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A step script that writes `NAME=value` lines for the standard variables to `$OUT/$1`.
const DUMP_ENV: &str = "for v in CI AGENT AGENT_WORKSPACE AGENT_REPO AGENT_REPO_FULL_NAME AGENT_SHA AGENT_REF AGENT_BRANCH AGENT_EVENT AGENT_RUN_ID AGENT_WORKFLOW AGENT_STEP AGENT_TEMP; do eval \"printf '%s=%s\\n' $v \\\"\\${$v-unset}\\\"\"; done";

fn read(out: &Path, name: &str) -> String {
    std::fs::read_to_string(out.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim_end()
        .to_string()
}

fn env_map(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Guards the daemon's checkout: `.git` present, HEAD detached at `$AGENT_SHA`, the branch a
/// ref at the commit, `git describe --tags` finding the last tag with `tags: true` and full
/// depth, a clean `git status`; and the standard variables of a daemon run.
#[test]
fn the_workspace_is_a_git_checkout_at_the_run_commit_with_tags() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: describe\n  checkout:\n    depth: full\n    tags: true\n  env:\n    OUT: {}\n  stages:\n    - name: main\n      steps:\n        - id: look\n          run: |\n            git rev-parse HEAD > \"$OUT/head\"\n            printf '%s\\n' \"$AGENT_SHA\" > \"$OUT/sha\"\n            git describe --tags > \"$OUT/describe\"\n            git rev-parse refs/heads/main > \"$OUT/branch_ref\"\n            git status --porcelain > \"$OUT/status\"\n            (git symbolic-ref -q HEAD || echo detached) > \"$OUT/symbolic\"\n            test -d \"$AGENT_TEMP\" && echo yes > \"$OUT/temp_exists\"\n            {DUMP_ENV} > \"$OUT/env\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(
        &repo,
        &[(".workflows/describe.yaml", &wf), ("README", "one\n")],
    );
    git(&repo, &["tag", "-a", "v1.0", "-m", "first"]);
    commit_files(&repo, &[("README", "two\n")], "second");
    git(&repo, &["tag", "-a", "v1.1", "-m", "second"]);
    let head = commit_files(&repo, &[("README", "three\n")], "third");
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger(&d, "describe");
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(read(&out, "head"), head);
    assert_eq!(read(&out, "sha"), head);
    assert_eq!(read(&out, "branch_ref"), head);
    assert_eq!(read(&out, "symbolic"), "detached");
    assert!(
        read(&out, "describe").starts_with("v1.1-1-g"),
        "{}",
        read(&out, "describe")
    );
    assert_eq!(read(&out, "status"), "", "git status not clean");
    assert_eq!(read(&out, "temp_exists"), "yes");
    let env = env_map(&read(&out, "env"));
    assert_eq!(env["CI"], "true");
    assert_eq!(env["AGENT"], "true");
    assert_eq!(env["AGENT_REPO"], "app");
    assert_eq!(env["AGENT_SHA"], head);
    assert_eq!(env["AGENT_BRANCH"], "main");
    assert_eq!(env["AGENT_REF"], "refs/heads/main");
    assert_eq!(env["AGENT_EVENT"], "manual");
    assert_eq!(env["AGENT_RUN_ID"], id);
    assert_eq!(env["AGENT_WORKFLOW"], "describe");
    assert_eq!(env["AGENT_STEP"], "look");
    assert!(!env["AGENT_WORKSPACE"].is_empty());
    // The per-run temp dir goes with the run.
    assert!(
        !Path::new(&env["AGENT_TEMP"]).exists(),
        "AGENT_TEMP left behind"
    );
}

/// Guards `checkout: false` (an empty workspace) and `checkout: {path: DIR}` (the sources,
/// with their `.git`, in a subdirectory; default depth 1: one commit of history).
#[test]
fn checkout_false_is_empty_and_path_checks_out_into_a_subdirectory() {
    let (tmp, repo, out) = fixture();
    let o = yaml_quote(&out.to_string_lossy());
    let none = format!(
        "workflow:\n  name: none\n  checkout: false\n  env:\n    OUT: {o}\n  stages:\n    - name: main\n      steps:\n        - id: look\n          run: ls -A \"$AGENT_WORKSPACE\" > \"$OUT/none\"\n"
    );
    let sub = format!(
        "workflow:\n  name: sub\n  checkout:\n    path: src/app\n  env:\n    OUT: {o}\n  stages:\n    - name: main\n      steps:\n        - id: look\n          run: |\n            ls -A > \"$OUT/top\"\n            cat src/app/README > \"$OUT/readme\"\n            git -C src/app rev-parse HEAD > \"$OUT/head\"\n            git -C src/app rev-list --count HEAD > \"$OUT/count\"\n"
    );
    init_repo(
        &repo,
        &[
            (".workflows/none.yaml", &none),
            (".workflows/sub.yaml", &sub),
            ("README", "one\n"),
        ],
    );
    let head = commit_files(&repo, &[("README", "two\n")], "second");
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    let a = trigger(&d, "none");
    let b = trigger(&d, "sub");
    for id in [&a, &b] {
        let run = d.wait_run_final(id, RUN_LIMIT);
        assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    }
    assert_eq!(read(&out, "none"), "", "workspace not empty");
    assert_eq!(read(&out, "top"), "src");
    assert_eq!(read(&out, "readme"), "two");
    assert_eq!(read(&out, "head"), head);
    assert_eq!(read(&out, "count"), "1");
}

/// Guards the standard variables under `agent exec`: `AGENT_EVENT=manual`, the workdir's
/// repository (commit, branch), the step id, a run temp dir removed at the end.
#[test]
fn exec_steps_see_the_standard_variables() {
    let ws = Ws::new();
    let wf = format!(
        "workflow:\n  name: stdenv\n  stages:\n    - name: main\n      steps:\n        - id: dump\n          run: |\n            {DUMP_ENV} > env.txt\n            test -d \"$AGENT_TEMP\" && echo yes > temp.txt\n"
    );
    ws.write("wf.yaml", &wf);
    git(ws.path(), &["init", "-q", "-b", "trunk"]);
    let head = commit_files(ws.path(), &[("README", "x\n")], "initial");
    let out = ws.exec("wf.yaml", &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let env = env_map(&ws.read("env.txt"));
    assert_eq!(env["CI"], "true");
    assert_eq!(env["AGENT"], "true");
    assert_eq!(env["AGENT_EVENT"], "manual");
    assert_eq!(env["AGENT_SHA"], head);
    assert_eq!(env["AGENT_BRANCH"], "trunk");
    assert_eq!(env["AGENT_REF"], "refs/heads/trunk");
    assert_eq!(env["AGENT_WORKFLOW"], "stdenv");
    assert_eq!(env["AGENT_STEP"], "dump");
    assert_eq!(env["AGENT_REPO_FULL_NAME"], "");
    assert_eq!(ws.read("temp.txt").trim(), "yes");
    assert!(
        !Path::new(&env["AGENT_TEMP"]).exists(),
        "AGENT_TEMP left behind"
    );
}
