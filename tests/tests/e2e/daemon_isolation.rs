//! End-to-end: what a step can reach of the daemon and of other runs. With `run_as`, a
//! root daemon runs steps as that user: they own their workspace, cannot read the state
//! directory (database, token, logs, mirrors) or the config file, and cannot write into a
//! finished run's kept workspace. A fork bomb in one run stops at the run's process limit
//! while another run stays green and the API answers.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, trigger_with, yaml_quote};
use serde_json::Value;

const RUN_LIMIT: Duration = Duration::from_secs(60);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

/// As root with `run_as: nobody`: the step runs as nobody, writes its workspace and its
/// outputs, and is denied the database, the config file, a listing of the state directory
/// and a write into the kept workspace of an earlier failed run. The state directory is
/// 0711 and the database and config 0600. Skipped when not root.
#[test]
fn steps_run_as_the_run_user_and_cannot_reach_the_daemons_state() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // The run user must be able to pass through to its workspace.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let repo = tmp.path().join("repo");
    let root = tmp.path().join("d");
    let state = root.join("state");
    let config = root.join("agent.yaml");
    let probe = |path: &Path| {
        format!(
            "if cat {} > /dev/null 2>&1; then echo readable; else echo denied; fi",
            path.display()
        )
    };
    let workflow = format!(
        r#"workflow:
  name: probe
  stages:
    - name: s
      steps:
        - id: p
          run: |
            echo "uid=$(id -u)" >> "$AGENT_OUTPUT"
            echo "db=$({db})" >> "$AGENT_OUTPUT"
            echo "config=$({config})" >> "$AGENT_OUTPUT"
            if ls {state} > /dev/null 2>&1; then echo "list=allowed"; else echo "list=denied"; fi >> "$AGENT_OUTPUT"
            if echo x > own-file; then echo "own=written"; else echo "own=denied"; fi >> "$AGENT_OUTPUT"
            if echo x > {state}/workspaces/1/pwned 2>/dev/null; then echo "other=written"; else echo "other=denied"; fi >> "$AGENT_OUTPUT"
"#,
        db = probe(&state.join("agent.sqlite3")),
        config = probe(&config),
        state = state.display(),
    );
    init_repo(
        &repo,
        &[
            (".workflows/probe.yaml", &workflow),
            (
                ".workflows/fail.yaml",
                "workflow:\n  name: fail\n  stages:\n    - name: s\n      steps:\n        - id: f\n          run: echo x > mine; exit 1\n",
            ),
        ],
    );
    let d = TestDaemon::start(
        &root,
        &format!(
            "run_as: nobody\nkeep_failed_workspaces: true\nrepos:\n  - name: app\n    path: {}\n",
            yaml_quote(&repo.to_string_lossy())
        ),
    );
    // Run 1 fails and keeps its workspace.
    let first = trigger_with(&d, "fail", r#"{"repo":"app"}"#);
    let report = d.wait_run_final(&first, RUN_LIMIT);
    assert_eq!(report["status"], "failed", "{report}\n{}", d.log_text());
    assert_eq!(first, "1");
    let run = trigger_with(&d, "probe", r#"{"repo":"app"}"#);
    let report = d.wait_run_final(&run, RUN_LIMIT);
    assert_eq!(report["status"], "succeeded", "{report}\n{}", d.log_text());
    let out = &report["stages"][0]["steps"][0]["outputs"];
    let nobody = runners::RunUser::lookup("nobody").expect("nobody");
    assert_eq!(out["uid"], nobody.uid.to_string(), "{out}");
    assert_eq!(out["db"], "denied", "{out}");
    assert_eq!(out["config"], "denied", "{out}");
    assert_eq!(out["list"], "denied", "{out}");
    assert_eq!(out["own"], "written", "{out}");
    assert_eq!(out["other"], "denied", "{out}");
    assert_eq!(mode(&state), 0o711);
    assert_eq!(mode(&state.join("agent.sqlite3")), 0o600);
    assert_eq!(mode(&config), 0o600);
}

/// A bounded fork bomb (dash, 3000 background sleeps at most, giving up at the first failed
/// fork) in one run stops at `limits.max_run_processes` while a run of another workflow,
/// started once the bomb is at its limit, succeeds and the API answers. The limit is in
/// place before the bomb starts: its step joins the run's cgroup before exec. Skipped where
/// the daemon cannot make cgroups (not root, or no `pids` controller).
#[test]
fn a_fork_bomb_in_one_run_leaves_the_others_alone() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || runners::cgroup_support() == runners::CgroupSupport::None
    {
        eprintln!("skipped: no cgroup for runs here");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let tag = format!("600.{}", std::process::id());
    let bomb = format!(
        "workflow:\n  name: bomb\n  stages:\n    - name: s\n      steps:\n        - id: b\n          timeout: 60\n          shell: dash\n          run: i=0; while [ $i -lt 3000 ]; do sleep {tag} & i=$((i+1)); done; wait\n"
    );
    init_repo(
        &repo,
        &[
            (".workflows/bomb.yaml", bomb.as_str()),
            (
                ".workflows/ok.yaml",
                "workflow:\n  name: ok\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: for i in 1 2 3 4 5 6 7 8 9 10; do true & done; wait; echo fine\n",
            ),
        ],
    );
    let d = TestDaemon::start(
        &tmp.path().join("d"),
        &format!(
            "limits:\n  max_run_processes: 100\nrepos:\n  - name: app\n    path: {}\n",
            yaml_quote(&repo.to_string_lossy())
        ),
    );
    let bomb_run = trigger_with(&d, "bomb", r#"{"repo":"app"}"#);
    let count = || {
        std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter(|e| {
                        std::fs::read(e.path().join("cmdline"))
                            .map(|c| c.split(|&b| b == 0).any(|a| a == tag.as_bytes()))
                            .unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + RUN_LIMIT;
    let mut peak = 0;
    loop {
        peak = peak.max(count());
        let (_, text) = d.get(&format!("/api/v1/runs/{bomb_run}"));
        let done = serde_json::from_str::<Value>(&text)
            .map(|v| v["status"] == "failed" || v["status"] == "succeeded")
            .unwrap_or(false);
        if peak >= 90 || done {
            break;
        }
        assert!(Instant::now() < deadline, "the bomb never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok_run = trigger_with(&d, "ok", r#"{"repo":"app"}"#);
    let ok = d.wait_run_final(&ok_run, RUN_LIMIT);
    let (code, _) = d.get("/health");
    let bombed = d.wait_run_final(&bomb_run, RUN_LIMIT);
    peak = peak.max(count());
    assert_eq!(code, 200);
    assert_eq!(ok["status"], "succeeded", "{ok}\n{}", d.log_text());
    assert_eq!(bombed["status"], "failed", "{bombed}");
    assert!(
        peak >= 50,
        "the bomb never got near its limit: {peak}\n{bombed}\n{}",
        d.log_text()
    );
    assert!(peak <= 100, "{peak} processes in a run limited to 100");
    let gone = Instant::now() + Duration::from_secs(10);
    while count() > 0 && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(), 0, "the bomb's sleeps outlived its run");
}

/// As root with `run_as: nobody` and `run_as_uids`: two runs running at the same time get
/// two uids of the range, each writes its own workspace, and the second can neither write
/// into the first one's workspace nor read its step's `/proc/PID/environ` (which names
/// that workspace and carries its environment). Run A publishes its workspace path and pid
/// in a directory open to all, then holds until B is done. Skipped when not root.
#[test]
fn concurrent_runs_get_their_own_uids_and_cannot_reach_each_other() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).expect("mkdir");
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let repo = tmp.path().join("repo");
    let root = tmp.path().join("d");
    let s = share.display();
    let hold = format!(
        r#"workflow:
  name: hold
  stages:
    - name: s
      steps:
        - id: a
          run: |
            echo "uid=$(id -u)" >> "$AGENT_OUTPUT"
            if echo x > own-file; then echo "own=written"; else echo "own=denied"; fi >> "$AGENT_OUTPUT"
            printf '%s' "$AGENT_WORKSPACE" > {s}/a-ws.tmp && mv {s}/a-ws.tmp {s}/a-ws
            echo $$ > {s}/a-pid.tmp && mv {s}/a-pid.tmp {s}/a-pid
            i=0; while [ ! -e {s}/b-done ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
            if [ -e "$AGENT_WORKSPACE/pwned" ]; then echo "pwned=yes"; else echo "pwned=no"; fi >> "$AGENT_OUTPUT"
"#
    );
    let probe = format!(
        r#"workflow:
  name: probe
  stages:
    - name: s
      steps:
        - id: b
          run: |
            echo "uid=$(id -u)" >> "$AGENT_OUTPUT"
            if echo x > own-file; then echo "own=written"; else echo "own=denied"; fi >> "$AGENT_OUTPUT"
            i=0; while [ ! -e {s}/a-pid ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
            ws=$(cat {s}/a-ws); pid=$(cat {s}/a-pid)
            echo "ws=$ws" >> "$AGENT_OUTPUT"
            if echo x > "$ws/pwned" 2>/dev/null; then echo "write=allowed"; else echo "write=denied"; fi >> "$AGENT_OUTPUT"
            if ls "$ws" > /dev/null 2>&1; then echo "list=allowed"; else echo "list=denied"; fi >> "$AGENT_OUTPUT"
            if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -q AGENT_WORKSPACE; then echo "environ=read"; else echo "environ=denied"; fi >> "$AGENT_OUTPUT"
            if readlink /proc/$pid/cwd > /dev/null 2>&1; then echo "cwd=read"; else echo "cwd=denied"; fi >> "$AGENT_OUTPUT"
            touch {s}/b-done
"#
    );
    init_repo(
        &repo,
        &[
            (".workflows/hold.yaml", hold.as_str()),
            (".workflows/probe.yaml", probe.as_str()),
        ],
    );
    let d = TestDaemon::start(
        &root,
        &format!(
            "run_as: nobody\nrun_as_uids: 200000-200999\nrepos:\n  - name: app\n    path: {}\n",
            yaml_quote(&repo.to_string_lossy())
        ),
    );
    let a = trigger_with(&d, "hold", r#"{"repo":"app"}"#);
    // B starts once A holds its workspace.
    let deadline = Instant::now() + RUN_LIMIT;
    while !share.join("a-pid").exists() {
        assert!(
            Instant::now() < deadline,
            "run A never started\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = trigger_with(&d, "probe", r#"{"repo":"app"}"#);
    let b_report = d.wait_run_final(&b, RUN_LIMIT);
    let a_report = d.wait_run_final(&a, RUN_LIMIT);
    assert_eq!(
        b_report["status"],
        "succeeded",
        "{b_report}\n{}",
        d.log_text()
    );
    assert_eq!(
        a_report["status"],
        "succeeded",
        "{a_report}\n{}",
        d.log_text()
    );
    let a_out = &a_report["stages"][0]["steps"][0]["outputs"];
    let b_out = &b_report["stages"][0]["steps"][0]["outputs"];
    let uid = |out: &Value| -> u32 {
        out["uid"]
            .as_str()
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no uid in {out}"))
    };
    assert_eq!(a_out["own"], "written", "{a_out}");
    assert_eq!(b_out["own"], "written", "{b_out}");
    assert!(
        b_out["ws"]
            .as_str()
            .is_some_and(|w| w.contains("workspaces")),
        "{b_out}"
    );
    assert_eq!(b_out["write"], "denied", "{b_out}");
    assert_eq!(b_out["list"], "denied", "{b_out}");
    assert_eq!(b_out["environ"], "denied", "{b_out}");
    assert_eq!(b_out["cwd"], "denied", "{b_out}");
    assert_eq!(a_out["pwned"], "no", "{a_out}");
    let (a_uid, b_uid) = (uid(a_out), uid(b_out));
    assert_ne!(a_uid, b_uid, "both runs ran as {a_uid}");
    for u in [a_uid, b_uid] {
        assert!(
            (200000..=200999).contains(&u),
            "uid {u} is not in the range"
        );
    }
}
