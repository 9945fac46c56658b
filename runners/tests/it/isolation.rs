//! Steps kept apart from the agent and from other runs: the run user (as root) and the
//! per-run process limit (a cgroup `pids.max`), with a real, bounded fork bomb.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use runners::{Cancel, RunScope, RunUser, StepCommand, plan_script};

/// As root, a step with a run user runs with that user's uid, gid and `HOME`, and cannot
/// read a file only its owner (root) may read. Skipped when not root.
#[tokio::test]
async fn a_step_runs_as_the_run_user() {
    if !runners::running_as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let user = Arc::new(RunUser::lookup("nobody").expect("user nobody"));
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "top").expect("write");
    std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).expect("chown");
    let mut perms = std::fs::metadata(dir.path()).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).expect("chmod dir");
    let mut perms = std::fs::metadata(&secret).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&secret, perms).expect("chmod");
    let mut cmd = StepCommand::from_plan(plan_script(
        &format!(
            "id -u; id -g; echo \"$HOME\"; cat {} || echo denied",
            secret.display()
        ),
        None,
    ));
    cmd.user = Some(user.clone());
    cmd.merge_output = true;
    let (o, cap) = run_capture(cmd, Cancel::new()).await;
    assert!(o.success(), "{o:?} {cap:?}");
    assert_eq!(cap.stdout[0], user.uid.to_string(), "{cap:?}");
    assert_eq!(cap.stdout[1], user.gid.to_string(), "{cap:?}");
    assert_eq!(cap.stdout[2], user.home.to_string_lossy(), "{cap:?}");
    assert_eq!(
        cap.stdout.last().map(String::as_str),
        Some("denied"),
        "{cap:?}"
    );
}

/// A fork bomb in one run stops at the run's process limit while a step of another run,
/// spawning at the same time, still succeeds. The limit is in place before the bomb starts
/// (the step joins the run's cgroup before it execs) and the bomb is bounded itself (200
/// background sleeps, and `dash` gives up at the first failed fork); everything it started
/// is ended when its run scope closes. Skipped where no cgroup can be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_its_runs_process_limit() {
    const LIMIT: u32 = 40;
    let tag = unique_tag();
    let bomb_marker = format!("bomb-{tag}");
    let scope = RunScope::open(&bomb_marker, Some(LIMIT));
    if !scope.has_cgroup() {
        eprintln!(
            "skipped: no run cgroup here ({})",
            runners::cgroup_unavailable_reason().unwrap_or_default()
        );
        return;
    }
    let other_marker = format!("other-{tag}");
    let other_scope = RunScope::open(&other_marker, Some(LIMIT));
    let bomb = StepCommand::new("dash")
        .args([
            "-c".to_string(),
            format!("i=0; while [ $i -lt 200 ]; do sleep {tag} & i=$((i+1)); done; wait"),
        ])
        .marker(bomb_marker.clone())
        .timeout(Duration::from_secs(60));
    let other = StepCommand::from_plan(plan_script(
        "for i in 1 2 3 4 5 6 7 8 9 10; do true & done; wait; echo fine",
        None,
    ))
    .marker(other_marker.clone());
    let bomb_task = tokio::spawn(run_capture(bomb, Cancel::new()));
    // The bomb is up against its limit before the other run starts.
    let full = wait_until(Duration::from_secs(30), || {
        pids_with_arg(&tag).len() >= (LIMIT as usize) - 2
    });
    let (o_other, cap_other) = run_capture(other, Cancel::new()).await;
    let peak = pids_with_arg(&tag).len();
    let (o_bomb, cap_bomb) = bomb_task.await.expect("bomb task");
    // The bomb's step ends when dash gives up; its sleeps are ended with its run.
    runners::sweep_run_async(&bomb_marker).await;
    drop(scope);
    drop(other_scope);
    let left = pids_with_arg(&tag);
    kill_tagged(&tag);
    assert!(full, "the bomb never reached its limit");
    assert!(peak < LIMIT as usize, "{peak} sleeps, limit {LIMIT}");
    assert!(
        !o_bomb.success(),
        "the bomb's fork must fail: {o_bomb:?} {cap_bomb:?}"
    );
    assert!(o_other.success(), "{o_other:?} {cap_other:?}");
    assert_eq!(cap_other.stdout, vec!["fine"]);
    assert!(left.is_empty(), "left behind: {}", left.len());
}
