//! Step caching end to end: `agent exec` serving a `cache:` step from its entry (outputs,
//! exit status, log and `paths` restored), what makes it run again and how
//! `--explain-cache` names it, deterministic skills, a `continue`d failure and a `kill -9`
//! leaving no entry, branch scopes, `agent cache ls|rm|prune`, and the daemon reusing an
//! entry in a fresh workspace.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::daemon::{TestDaemon, commit_files, git, init_repo, run_id, yaml_quote};
use crate::common::exec::{Ws, assert_code, report, step};

/// A workflow whose `build` step is slow, cached on `src/**`, keeps `out/` and writes an
/// output that the `use` step checks (with the restored file).
fn slow_workflow(script_extra: &str) -> String {
    format!(
        r#"workflow:
  name: cached
  parameters:
    - name: version
      default: "1.2.3"
  stages:
    - name: build
      steps:
        - id: build
          parameters:
            version: ${{{{ parameters.version }}}}
          cache:
            inputs: ["src/**"]
            paths: [out]
          run: |
            sleep 2
            mkdir -p out
            echo "built $AGENT_RUN_ID" > out/bin
            echo "building version $AGENT_PARAM_VERSION"{script_extra}
            echo out=x >> "$AGENT_OUTPUT"
            echo run=$AGENT_RUN_ID >> "$AGENT_OUTPUT"
    - name: after
      steps:
        - id: use
          run: |
            test "${{{{ steps.build.outputs.out }}}}" = x
            echo "${{{{ steps.build.outputs.run }}}}" > seen-run
            cat out/bin > seen-bin
"#
    )
}

/// Guards the cache's main promise: the second `agent exec` does not run the cached step,
/// reports it `cached` with its key and the run it came from, restores its outputs (the
/// downstream step sees the same values), its exit status, its log and its `paths` files;
/// `--no-cache` runs it again.
#[test]
fn a_second_exec_serves_the_cached_step_with_the_same_outputs() {
    let ws = Ws::new();
    ws.write("src/lib.rs", "fn a() {}\n");
    ws.write("wf.yaml", &slow_workflow(""));
    let first = ws.exec("wf.yaml", &[]);
    assert_code(&first, 0);
    let r1 = report(&first);
    let b1 = step(&r1, "build");
    assert_eq!(b1["cached"], false, "{r1:#}");
    let key = b1["cache"]["key"]
        .as_str()
        .expect("a cached step reports its key");
    assert_eq!(key.len(), 64);
    assert!(b1["cache"].get("from_run").is_none());

    std::fs::remove_dir_all(ws.path().join("out")).expect("remove out");
    let second = ws.exec("wf.yaml", &[]);
    assert_code(&second, 0);
    let r2 = report(&second);
    let b2 = step(&r2, "build");
    assert_eq!(b2["cached"], true, "{r2:#}");
    assert_eq!(b2["status"], "succeeded");
    assert_eq!(b2["cache"]["key"], key);
    assert_eq!(b2["cache"]["from_run"], r1["run_id"]);
    assert_eq!(b2["outputs"], b1["outputs"]);
    assert_eq!(b2["exit_code"], 0);
    assert_eq!(b2["attempts"], 0, "the step made no try");
    assert_eq!(step(&r2, "use")["status"], "succeeded");
    // The downstream step saw the first run's values and its file, restored.
    let run1 = r1["run_id"].as_str().expect("run id");
    assert_eq!(ws.read("seen-run").trim(), run1);
    assert_eq!(ws.read("seen-bin").trim(), format!("built {run1}"));
    let err = common::stderr(&second);
    assert!(
        err.contains("build | building version 1.2.3"),
        "log replayed:\n{err}"
    );
    assert!(err.contains("build: cached"), "progress mark:\n{err}");

    let forced = ws.exec("wf.yaml", &["--no-cache"]);
    assert_code(&forced, 0);
    let r3 = report(&forced);
    assert_eq!(step(&r3, "build")["cached"], false);
    assert!(step(&r3, "build").get("cache").is_none());
}

/// Guards what invalidates an entry and `--explain-cache`: an `inputs` file's content, a
/// step parameter and the script each make the step run again, and the miss names the
/// change against the last entry; an unchanged run is a hit.
#[test]
fn inputs_parameters_and_the_script_invalidate_and_explain_names_them() {
    let ws = Ws::new();
    ws.write("src/lib.rs", "fn a() {}\n");
    ws.write("src/main.rs", "fn main() {}\n");
    ws.write("wf.yaml", &slow_workflow(""));
    let explain = |args: &[&str]| {
        let mut all = vec!["--explain-cache"];
        all.extend_from_slice(args);
        let out = ws.exec("wf.yaml", &all);
        assert_code(&out, 0);
        let cached = step(&report(&out), "build")["cached"] == true;
        let line = common::stderr(&out)
            .lines()
            .find(|l| l.starts_with("cache: build:"))
            .unwrap_or_default()
            .to_string();
        (cached, line)
    };
    let (cached, line) = explain(&[]);
    assert!(!cached);
    assert_eq!(line, "cache: build: miss: no earlier entry");
    let (cached, line) = explain(&[]);
    assert!(cached, "{line}");
    assert!(line.starts_with("cache: build: hit (from run "), "{line}");

    ws.write("src/lib.rs", "fn a() { changed() }\n");
    let (cached, line) = explain(&[]);
    assert!(!cached);
    assert_eq!(line, "cache: build: miss: `src/lib.rs` changed");

    let (cached, line) = explain(&["-p", "version=1.2.4"]);
    assert!(!cached);
    assert_eq!(
        line,
        "cache: build: miss: parameter `version` 1.2.3 → 1.2.4"
    );
    let (cached, _) = explain(&["-p", "version=1.2.4"]);
    assert!(cached);

    ws.write("wf.yaml", &slow_workflow("\n            echo more"));
    let (cached, line) = explain(&["-p", "version=1.2.4"]);
    assert!(!cached);
    assert_eq!(line, "cache: build: miss: the script changed");

    // Entries are listed, and removed by key.
    let ls = common::run_with_deadline(
        {
            let mut c = common::agent(&["cache", "ls", "--json"]);
            c.current_dir(ws.path());
            c
        },
        Duration::from_secs(30),
    );
    let listed: Value = serde_json::from_str(&common::stdout(&ls)).expect("ls --json");
    let entries = listed["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "{listed:#}");
    assert!(entries.iter().all(|e| e["step"] == "cached/build"));
    let key = entries[0]["key"].as_str().expect("key").to_string();
    let mut rm = common::agent(&["cache", "rm", &key[..16]]);
    rm.current_dir(ws.path());
    let rm = common::run_with_deadline(rm, Duration::from_secs(30));
    assert_eq!(rm.status.code(), Some(0), "{}", common::stderr(&rm));
    let (cached, _) = explain(&["-p", "version=1.2.4"]);
    assert!(!cached, "the removed entry is gone");
    let mut prune = common::agent(&["cache", "prune", "--all"]);
    prune.current_dir(ws.path());
    let prune = common::run_with_deadline(prune, Duration::from_secs(30));
    assert!(
        common::stdout(&prune).starts_with("removed 4 entries"),
        "{}",
        common::stdout(&prune)
    );
}

/// Guards the `inputs` warning and `cache: true`: a glob that matches no file says so in
/// the step's log, and the step is still cached on the rest of its key.
#[test]
fn an_inputs_glob_matching_nothing_warns() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          cache: {inputs: ['nothing/**/*.c']}\n          run: echo v=1 >> \"$AGENT_OUTPUT\"\n        - id: b\n          cache: true\n          run: echo hi\n",
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let err = common::stderr(&out);
    assert!(
        err.contains("`inputs` glob `nothing/**/*.c` matches no file"),
        "{err}"
    );
    let again = report(&ws.exec("wf.yaml", &[]));
    assert_eq!(step(&again, "a")["cached"], true);
    assert_eq!(step(&again, "b")["cached"], true);
}

/// Guards that only success is cached: a step that failed under `on_failure: continue`
/// leaves no entry and runs again.
#[test]
fn a_continued_failure_is_not_cached() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: flaky\n          cache: true\n          on_failure: continue\n          run: echo ran >> ran.txt; exit 3\n",
    );
    for _ in 0..2 {
        let r = report(&ws.exec("wf.yaml", &[]));
        let s = step(&r, "flaky");
        assert_eq!(
            (s["status"].as_str(), s["cached"].as_bool()),
            (Some("failed"), Some(false))
        );
    }
    assert_eq!(ws.read("ran.txt"), "ran\nran\n");
    assert!(
        !ws.path().join(".agent/cache/entries").exists()
            || std::fs::read_dir(ws.path().join(".agent/cache/entries"))
                .expect("dir")
                .next()
                .is_none()
    );
}

/// Guards crash safety: `kill -9` of `agent exec` while the cached step runs leaves no
/// entry (the next run runs the step).
#[test]
fn kill_9_during_the_step_leaves_no_entry() {
    let ws = Ws::new();
    ws.write("slow", "");
    ws.write(
        "wf.yaml",
        "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          cache: {paths: [out]}\n          run: |\n            mkdir -p out; echo partial > out/f\n            if [ -f slow ]; then echo $$ > step.pid; sleep 30; fi\n            echo v=1 >> \"$AGENT_OUTPUT\"\n",
    );
    let ws_dir = ws.path().to_string_lossy().into_owned();
    let mut child = Command::new(common::agent_bin())
        .args(["exec", "wf.yaml", "--workdir", &ws_dir])
        .current_dir(ws.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent exec");
    let started = common::poll(Duration::from_secs(30), || {
        std::fs::read_to_string(ws.path().join("step.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
    })
    .expect("the step started");
    child.kill().expect("kill -9");
    let _ = child.wait();
    // The step's own process outlives its agent: end it (it is ours).
    // SAFETY: signalling a pid this test's step wrote.
    unsafe {
        libc::kill(started, libc::SIGKILL);
    }
    let entries = ws.path().join(".agent/cache/entries");
    let none = !entries.exists()
        || std::fs::read_dir(&entries)
            .expect("entries")
            .next()
            .is_none();
    assert!(none, "an entry was left after kill -9");
    std::fs::remove_file(ws.path().join("slow")).expect("rm slow");
    let r = report(&ws.exec("wf.yaml", &[]));
    assert_eq!(step(&r, "a")["cached"], false);
    let r = report(&ws.exec("wf.yaml", &[]));
    assert_eq!(step(&r, "a")["cached"], true);
}

/// Guards skills: one whose manifest says `deterministic: true` is cached without
/// `cache:`, and a change to its executable makes it run again.
#[test]
fn a_deterministic_skill_is_cached_without_a_cache_key() {
    let ws = Ws::new();
    ws.write(
        ".workflows/skills/hash/skill.yaml",
        "command: ./run.sh\ndeterministic: true\n",
    );
    ws.write_exec(
        ".workflows/skills/hash/run.sh",
        "#!/bin/sh\necho ran >> ran.txt\necho h=1 >> \"$AGENT_OUTPUT\"\n",
    );
    ws.write(
        "wf.yaml",
        "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: h\n          skill: hash\n          parameters: {x: 1}\n",
    );
    let r1 = report(&ws.exec("wf.yaml", &[]));
    let r2 = report(&ws.exec("wf.yaml", &[]));
    assert_eq!(step(&r1, "h")["cached"], false, "{r1:#}");
    assert_eq!(step(&r2, "h")["cached"], true, "{r2:#}");
    assert_eq!(step(&r2, "h")["outputs"]["h"], "1");
    ws.write_exec(
        ".workflows/skills/hash/run.sh",
        "#!/bin/sh\necho ran >> ran.txt\necho h=2 >> \"$AGENT_OUTPUT\"\n",
    );
    let r3 = report(&ws.exec("wf.yaml", &[]));
    assert_eq!(step(&r3, "h")["cached"], false);
    assert_eq!(step(&r3, "h")["outputs"]["h"], "2");
    assert_eq!(ws.read("ran.txt"), "ran\nran\n");
}

/// Guards branch scopes: a `scope: branch` entry is used by its own branch, never by a
/// sibling branch; an entry of the default branch is read by branches made from it.
#[test]
fn a_branch_entry_is_not_used_by_a_sibling_branch() {
    let ws = Ws::new();
    init_repo(ws.path(), &[("src/a.txt", "a\n")]);
    std::fs::write(ws.path().join(".gitignore"), ".agent/\nwf.yaml\n").expect("ignore");
    ws.write(
        "wf.yaml",
        "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          cache: {scope: branch, inputs: ['src/**']}\n          run: echo v=1 >> \"$AGENT_OUTPUT\"\n",
    );
    let cached = |branch: &str| {
        git(ws.path(), &["checkout", "-q", branch]);
        let r = report(&ws.exec("wf.yaml", &[]));
        step(&r, "a")["cached"] == true
    };
    git(ws.path(), &["branch", "feat-a"]);
    git(ws.path(), &["branch", "feat-b"]);
    assert!(!cached("feat-a"), "first run on feat-a");
    assert!(cached("feat-a"), "feat-a reads its own entry");
    assert!(
        !cached("feat-b"),
        "feat-b must not read its sibling's entry"
    );
    assert!(
        !cached("main"),
        "main must not read a feature branch's entry"
    );
    assert!(cached("main"));
    git(ws.path(), &["branch", "feat-c"]);
    assert!(
        cached("feat-c"),
        "a branch reads its base (default) branch's entry"
    );
}

/// Guards `cache.paths` validation: a path that leaves the workspace is an error at its
/// line, from `agent validate` and `agent exec` alike (nothing runs).
#[test]
fn a_cache_path_outside_the_workspace_is_an_error() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: w\n  stages:\n    - name: s\n      steps:\n        - id: a\n          cache:\n            paths: [out, ../elsewhere]\n          run: 'true'\n",
    );
    let mut v = common::agent(&["validate", "wf.yaml"]);
    v.current_dir(ws.path());
    let out = common::run_with_deadline(v, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(
        err.contains("wf.yaml:8:26: error: `paths` leaves the workspace: `../elsewhere`"),
        "{err}"
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 2);
}

/// Guards the daemon's cache: two pushes where only an unrelated file changed run the
/// cached step once; the second run, in a fresh workspace, is served from the entry with
/// the `paths` files present for the next step, and the API reports the step `cached`.
#[test]
fn the_daemon_reuses_an_entry_in_a_fresh_workspace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    let seen = tmp.path().join("seen");
    std::fs::create_dir_all(&seen).expect("seen dir");
    init_repo(
        &repo,
        &[("src/lib.rs", "fn a() {}\n"), ("README.md", "one\n")],
    );
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &format!(
            "repos:\n  - name: app\n    path: {}\n",
            yaml_quote(&repo.to_string_lossy())
        ),
    );
    let wf = format!(
        r#"workflow:
  name: build
  on:
    push: {{}}
  stages:
    - name: build
      steps:
        - id: compile
          cache:
            inputs: ["src/**"]
            paths: [target]
          run: |
            sleep 1
            mkdir -p target
            echo "made by $AGENT_RUN_ID" > target/app
            echo out=x >> "$AGENT_OUTPUT"
    - name: ship
      steps:
        - id: ship
          run: |
            test "${{{{ steps.compile.outputs.out }}}}" = x
            cp target/app {}/$AGENT_RUN_ID
"#,
        yaml_quote(&seen.to_string_lossy())
    );
    commit_files(&repo, &[(".workflows/build.yaml", &wf)], "add build");
    let first = wait_run_count(&d, 1);
    let r1 = d.wait_run_final(&first, Duration::from_secs(60));
    assert_eq!(r1["status"], "succeeded", "{r1:#}\n{}", d.log_text());
    commit_files(&repo, &[("README.md", "two\n")], "docs only");
    let second = wait_run_count(&d, 2);
    let r2 = d.wait_run_final(&second, Duration::from_secs(60));
    assert_eq!(r2["status"], "succeeded", "{r2:#}\n{}", d.log_text());
    let compile = |r: &Value| r["stages"][0]["steps"][0].clone();
    assert_eq!(compile(&r1)["cached"], false, "{r1:#}");
    assert_eq!(compile(&r2)["cached"], true, "{r2:#}");
    assert_eq!(compile(&r2)["outputs"]["out"], "x");
    let shipped = std::fs::read_to_string(seen.join(&second)).expect("the second run shipped");
    assert_eq!(shipped.trim(), format!("made by {first}"));
}

/// Waits until the daemon lists `n` runs; returns the newest one's id.
fn wait_run_count(d: &TestDaemon, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = d.get_json("/api/v1/runs?limit=1000");
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= n {
            return run_id(&runs[0]);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} runs: {v:#}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Guards `agent plan`'s predicted cache hits: a `cache:` step is a predicted miss before
/// any entry, a hit after a run, and a miss again once an `inputs` file changed; steps
/// without `cache:` predict nothing.
#[test]
fn plan_predicts_cache_hits() {
    let ws = Ws::new();
    ws.write("src/a.txt", "a\n");
    ws.write(
        "wf.yaml",
        "workflow:\n  name: p\n  stages:\n    - name: s\n      steps:\n        - id: build\n          cache: {inputs: ['src/**']}\n          run: echo v=1 >> \"$AGENT_OUTPUT\"\n        - id: other\n          run: echo hi\n",
    );
    let predicted = || {
        let mut cmd = common::agent(&["plan", "wf.yaml", "--json"]);
        cmd.current_dir(ws.path());
        let out = common::run_with_deadline(cmd, Duration::from_secs(30));
        let plan: Value = serde_json::from_str(&common::stdout(&out)).expect("plan --json");
        let steps = plan["stages"][0]["steps"].clone();
        (steps[0]["cache"].clone(), steps[1]["cache"].clone())
    };
    assert_eq!(predicted(), (Value::from("miss"), Value::Null));
    assert_code(&ws.exec("wf.yaml", &[]), 0);
    assert_eq!(predicted().0, "hit");
    ws.write("src/a.txt", "b\n");
    assert_eq!(predicted().0, "miss");
}
