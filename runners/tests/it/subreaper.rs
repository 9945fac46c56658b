//! The child subreaper. Orphans of a step are adopted and reaped; children that other code
//! waits on keep their exit status. Becoming a subreaper changes the whole process, so each
//! test here runs in a child process of the test binary (see [`in_own_process`]), and the
//! other tests see a process that is not one.

use std::time::Duration;

use crate::common::*;
use runners::{Cancel, StepCommand, plan_script};

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Set in the environment of the child process that runs one test of this module.
const CHILD_VAR: &str = "RUNNERS_TEST_SUBREAPER_CHILD";

/// Runs the test `name` of this module in a child process of the test binary (only that
/// test, with `CHILD_VAR` set) and asserts that it passed. Returns true in that child: the
/// caller then does the test's work.
fn in_own_process(name: &str) -> bool {
    if std::env::var_os(CHILD_VAR).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            &format!("subreaper::{name}"),
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_VAR, "1")
        .output()
        .expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} in its own process: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

#[test]
fn orphans_are_adopted_swept_and_reaped_without_stealing_statuses() {
    if !in_own_process("orphans_are_adopted_swept_and_reaped_without_stealing_statuses") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(adopt_sweep_and_reap());
}

async fn adopt_sweep_and_reap() {
    runners::become_subreaper().expect("prctl");
    assert!(runners::is_subreaper());
    let me = std::process::id();

    // A step that leaves a setsid'd grandchild behind and exits.
    let tag = unique_tag();
    let marker = format!("reaper-{tag}");
    let (o, _) = run_capture(
        StepCommand::from_plan(plan_script(
            &format!("setsid sleep {tag} > /dev/null 2>&1 < /dev/null &"),
            None,
        ))
        .marker(marker.clone()),
        Cancel::new(),
    )
    .await;
    assert!(o.success(), "{o:?}");
    let mut orphan = None;
    let found = wait_until(Duration::from_secs(5), || {
        orphan = pids_with_arg(&tag).first().copied();
        orphan.is_some_and(|p| ppid_of(p) == Some(me))
    });
    let orphan = orphan.unwrap_or(0);
    if !found {
        kill_tagged(&tag);
        panic!("orphan {orphan} was not adopted by us");
    }

    // Other code's child, exited but not yet waited for: must keep its status.
    let mut other = std::process::Command::new("sh")
        .args(["-c", "exit 5"])
        .spawn()
        .expect("spawn");
    let other_pid = other.id();
    assert!(wait_until(Duration::from_secs(5), || is_zombie(other_pid)));

    // End of the run: the orphan is killed and reaped (no zombie left).
    let killed = tokio::task::spawn_blocking(move || runners::sweep_run(&marker))
        .await
        .expect("sweep");
    assert_eq!(killed, 1);
    let reaped = wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    });
    assert!(reaped, "the killed orphan {orphan} stayed a zombie");

    runners::reap_orphans();
    let status = other.wait().expect("status not stolen");
    assert_eq!(status.code(), Some(5));

    // An orphan that exits on its own is reaped by the background reaper.
    let tag = unique_tag();
    let (o, _) = run_capture(
        StepCommand::from_plan(plan_script(
            &format!("setsid sh -c 'sleep 1; : {tag}' > /dev/null 2>&1 < /dev/null &"),
            None,
        )),
        Cancel::new(),
    )
    .await;
    assert!(o.success());
    let mut pid = None;
    assert!(wait_until(Duration::from_secs(5), || {
        pid = pids_with_arg(&format!("sleep 1; : {tag}")).first().copied();
        pid.is_some()
    }));
    let pid = pid.unwrap_or(0);
    let gone = wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "orphan {pid} was not reaped");
}
