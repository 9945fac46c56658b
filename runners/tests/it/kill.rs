//! Timeouts and cancellation with real, misbehaving processes: SIGTERM then SIGKILL after
//! the grace period, grandchildren that left the group with `setsid`, a second cancel that
//! kills at once.

use std::time::Duration;

use crate::common::*;
use runners::{Cancel, StepCommand, plan_script};

/// What became of a script run with a timeout (and a 10 s grace period).
struct TimedOut {
    outcome: runners::ProcessOutcome,
    /// Whether `procs` processes with the tag in their arguments were seen running (else the
    /// test proves nothing).
    started: bool,
    /// Processes with the tag left once the step ended (all are killed afterwards).
    left: Vec<u32>,
}

async fn time_out_script(script: &str, tag: &str, procs: usize, timeout: Duration) -> TimedOut {
    let watched = tag.to_string();
    let watcher = std::thread::spawn(move || {
        wait_until(Duration::from_secs(5), || {
            pids_with_arg(&watched).len() >= procs
        })
    });
    let (outcome, _) = run_capture(
        StepCommand::from_plan(plan_script(script, None))
            .timeout(timeout)
            .grace(Duration::from_secs(10)),
        Cancel::new(),
    )
    .await;
    let started = watcher.join().expect("watcher");
    let left = pids_with_arg(tag);
    kill_tagged(tag);
    TimedOut {
        outcome,
        started,
        left,
    }
}

#[tokio::test]
async fn timeout_terms_a_well_behaved_process() {
    let (o, cap) = run_capture(
        StepCommand::new(helper("term_then_exit.sh"))
            .timeout(Duration::from_millis(300))
            .grace(Duration::from_secs(20)),
        Cancel::new(),
    )
    .await;
    // Not killed: it ended when the group was gone, not at the end of the grace period.
    assert!(o.timed_out && !o.cancelled && !o.killed, "{o:?}");
    assert_eq!(o.exit_code, Some(3), "the TERM handler ran: {o:?}");
    assert!(cap.stdout.contains(&"got TERM".to_string()), "{cap:?}");
}

#[tokio::test]
async fn term_ignoring_process_is_killed_after_the_grace_period() {
    let start = std::time::Instant::now();
    let grace = Duration::from_millis(700);
    let (o, cap) = run_capture(
        StepCommand::new(helper("ignore_term.sh"))
            .timeout(Duration::from_millis(300))
            .grace(grace),
        Cancel::new(),
    )
    .await;
    let took = start.elapsed();
    assert!(o.timed_out && o.killed, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGKILL));
    assert_eq!(cap.stdout, vec!["ready"]);
    // SIGKILL came only after the timeout and the grace period.
    assert!(took >= Duration::from_millis(300) + grace, "{took:?}");
}

#[tokio::test]
async fn setsid_grandchildren_do_not_outlive_a_timed_out_step() {
    let tag = unique_tag();
    let script = format!("sleep {tag} & setsid sleep {tag} & sleep {tag}");
    let TimedOut {
        outcome: o,
        started,
        left,
    } = time_out_script(&script, &tag, 3, Duration::from_secs(1)).await;
    assert!(started, "the three sleeps never ran");
    // Everything obeys TERM: the step ends without waiting out the grace period.
    assert!(o.timed_out && !o.killed, "{o:?}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn helper_with_grandchildren_is_swept_on_cancel() {
    let tag = unique_tag();
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let tag2 = tag.clone();
    // Cancel once the helper and its grandchildren are up.
    let watcher = std::thread::spawn(move || {
        let up = wait_until(Duration::from_secs(10), || pids_with_arg(&tag2).len() >= 3);
        trigger.request();
        up
    });
    let (o, cap) = run_capture(
        StepCommand::new(helper("fork_grandchildren.sh"))
            .args([tag.clone()])
            .grace(Duration::from_secs(3)),
        cancel,
    )
    .await;
    let up = watcher.join().expect("watcher");
    let left = pids_with_arg(&tag);
    kill_tagged(&tag);
    assert!(up, "the helper never started its grandchildren");
    assert!(o.cancelled && !o.timed_out, "{o:?}");
    assert_eq!(cap.stdout, vec!["ready"]);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn second_cancel_kills_at_once() {
    let cancel = Cancel::new();
    let trigger = cancel.clone();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = tokio::spawn(async move {
        runners::run(
            StepCommand::new(helper("ignore_term.sh")).grace(Duration::from_secs(60)),
            move |_, line| {
                let _ = ready_tx.send(line.to_string());
            },
            cancel,
        )
        .await
        .expect("run")
    });
    // First request once the trap is installed: graceful, and the helper ignores it.
    let line = tokio::time::timeout(Duration::from_secs(5), ready_rx.recv())
        .await
        .expect("helper ready");
    assert_eq!(line.as_deref(), Some("ready"));
    trigger.request();
    // It keeps running through the (60 s) grace period ...
    let still = tokio::time::timeout(
        Duration::from_millis(300),
        &mut Box::pin(async {
            while !handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }),
    )
    .await;
    assert!(
        still.is_err(),
        "a TERM-ignoring step must survive the first cancel"
    );
    // ... until the second request.
    trigger.request();
    // Deadline far below the 60 s grace period.
    let o = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("second cancel kills at once")
        .expect("task");
    assert!(o.cancelled && o.killed, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn cancelled_before_start_spawns_nothing() {
    let cancel = Cancel::new();
    cancel.request();
    let (o, cap) = run_capture(StepCommand::new("echo").args(["hi"]), cancel).await;
    assert!(o.cancelled);
    assert_eq!(o.pid, 0);
    assert!(cap.stdout.is_empty());
}

#[tokio::test]
async fn child_cancel_follows_the_parent() {
    let run_cancel = Cancel::new();
    let step_cancel = run_cancel.child();
    let trigger = run_cancel.clone();
    let tag = unique_tag();
    let arg = tag.clone();
    let handle = tokio::spawn(async move {
        run_capture(StepCommand::new("sleep").args([arg]), step_cancel).await
    });
    let up = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(5), || !pids_with_arg(&tag).is_empty())
    })
    .await
    .expect("poll");
    assert!(up, "sleep never started");
    trigger.request();
    let (o, _) = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("cancelled")
        .expect("task");
    assert!(o.cancelled);
    assert_eq!(o.signal, Some(libc::SIGTERM));
}

#[tokio::test]
async fn dropping_the_run_future_kills_the_tree() {
    let tag = unique_tag();
    let marker = format!("drop-{tag}");
    let fut = run_capture(
        StepCommand::new(helper("fork_grandchildren.sh"))
            .args([tag.clone()])
            .marker(marker),
        Cancel::new(),
    );
    // Give up on the step while it runs (as when the engine's task is aborted).
    let _ = tokio::time::timeout(Duration::from_millis(300), fut).await;
    let gone = wait_until(Duration::from_secs(5), || pids_with_arg(&tag).is_empty());
    kill_tagged(&tag);
    assert!(gone, "processes of a dropped step must be killed");
}

#[tokio::test]
async fn term_ignoring_setsid_grandchild_without_pipes_is_killed() {
    let tag = unique_tag();
    // The grandchild leaves the group, ignores TERM and holds none of our pipes.
    let script = format!(
        "setsid sh -c \"trap '' TERM; sleep {tag}\" > /dev/null 2>&1 < /dev/null & sleep 30"
    );
    let TimedOut {
        outcome: o,
        started,
        left,
    } = time_out_script(&script, &tag, 1, Duration::from_millis(500)).await;
    assert!(started, "the grandchild never ran");
    // The group obeyed TERM at once, so the grace period was not needed.
    assert!(o.timed_out && !o.killed, "{o:?}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_stopped_step_still_ends_on_timeout() {
    let (o, _) = run_capture(
        StepCommand::from_plan(plan_script("kill -STOP $$; sleep 30", None))
            .timeout(Duration::from_millis(300))
            .grace(Duration::from_secs(10)),
        Cancel::new(),
    )
    .await;
    assert!(o.timed_out, "{o:?}");
    // Continued and ended by SIGTERM, not by SIGKILL at the end of the grace period.
    assert_eq!(o.signal, Some(libc::SIGTERM), "{o:?}");
    assert!(!o.killed, "{o:?}");
}

/// Every process of a timed-out step gets SIGTERM exactly once: the leader, a child in its
/// group and a child that left it with `setsid` each run their TERM trap one time. (The
/// marker sweep used to signal the group's members a second time, so cleanup traps ran
/// twice and tools that read a second TERM as "quit now" lost their graceful shutdown.)
#[tokio::test]
async fn each_process_of_a_timed_out_step_gets_one_sigterm() {
    let tag = unique_tag();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("terms");
    let f = file.display();
    // Each process records every TERM and keeps going (a bounded loop of long sleeps), so
    // a second TERM would show as a second line; SIGKILL ends them after the grace period.
    let body = |name: &str| {
        format!(
            "trap \"echo {name} >> {f}\" TERM; n=0; \
             while [ $n -lt 20 ]; do sleep {tag} & wait $!; n=$((n+1)); done"
        )
    };
    let script = format!(
        "bash -c '{}' &\nsetsid bash -c '{}' &\n{}",
        body("child"),
        body("setsid"),
        body("leader")
    );
    let watched = tag.clone();
    let watcher = std::thread::spawn(move || {
        wait_until(Duration::from_secs(10), || {
            pids_with_arg(&watched).len() >= 3
        })
    });
    let (o, _) = run_capture(
        StepCommand::from_plan(plan_script(&script, None))
            .timeout(Duration::from_millis(1500))
            .grace(Duration::from_millis(1500)),
        Cancel::new(),
    )
    .await;
    let started = watcher.join().expect("watcher");
    kill_tagged(&tag);
    assert!(started, "the three processes never started");
    assert!(o.timed_out, "{o:?}");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        vec!["child", "leader", "setsid"],
        "TERM traps run: {text:?}"
    );
}
