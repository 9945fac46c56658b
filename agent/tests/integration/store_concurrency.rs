//! The store under concurrent writers and under a real crash (SIGKILL) mid-transaction.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::store::{
    Db, NewRun, RunFilter, RunFinish, RunStatus, StepFinish, StepStart, StepStatus, Trigger,
    TriggerKind,
};

const THREADS: usize = 4;
const RUNS_PER_THREAD: usize = 40;

#[test]
fn concurrent_writers_never_see_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sqlite3");
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let path = &path;
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    // Every thread opens (and migrates) the fresh file at the same time.
                    let mut store = Db::open(path).expect("open");
                    for i in 0..RUNS_PER_THREAD {
                        let mut run =
                            NewRun::new(format!("w{t}"), Trigger::new(TriggerKind::Manual));
                        run.dedup_key = Some(format!("{t}-{i}"));
                        store.enqueue_run(&run).expect("enqueue");
                    }
                    // Then every thread works the shared queue until it is empty.
                    let mut done = Vec::new();
                    loop {
                        let claimed = store
                            .claim("test", 2, std::time::Duration::from_secs(60))
                            .expect("claim");
                        if claimed.is_empty() {
                            let (queued, _) = store.count_active().expect("count");
                            if queued == 0 {
                                break;
                            }
                            continue;
                        }
                        for run in claimed {
                            store.mark_running(run.id).expect("mark running");
                            let start = StepStart {
                                stage: "s".into(),
                                step_id: "only".into(),
                                attempt: 1,
                            };
                            store
                                .record_step_started(run.id, &start)
                                .expect("step start");
                            store
                                .record_step_finished(
                                    run.id,
                                    &StepFinish::new("s", "only", 1, StepStatus::Succeeded),
                                )
                                .expect("step finish");
                            store
                                .finish_run(run.id, &RunFinish::new(RunStatus::Succeeded))
                                .expect("finish");
                            done.push(run.id);
                        }
                        // Readers run alongside the writers.
                        store
                            .list_runs(&RunFilter::default(), 20)
                            .expect("list while writing");
                    }
                    done
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        let total = all.len();
        all.sort();
        all.dedup();
        // Each run was finished by exactly one thread.
        assert_eq!(total, THREADS * RUNS_PER_THREAD);
        assert_eq!(all.len(), total);
    });
    let store = Db::open(&path).unwrap();
    let runs = store.list_runs(&RunFilter::default(), 1000).unwrap();
    assert_eq!(runs.len(), THREADS * RUNS_PER_THREAD);
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
}

/// The env var that turns `crash_child` into the child of `sigkill_mid_transaction...`.
const CHILD_ENV: &str = "AGENT_STORE_CRASH_CHILD_DB";

/// Not a test on its own: the child process of the crash test. It records pushes of three
/// runs each, as fast as it can, printing each committed commit, until it is killed.
#[test]
#[ignore = "the child process of sigkill_mid_transaction_leaves_the_last_committed_state"]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut store = Db::open(std::path::Path::new(&path)).expect("child open");
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let commit = format!("c{i}");
        let runs: Vec<NewRun> = ["build", "test", "lint"]
            .iter()
            .map(|w| {
                let mut run = NewRun::new(
                    *w,
                    Trigger {
                        commit: Some(commit.clone()),
                        branch: Some("main".into()),
                        ..Trigger::new(TriggerKind::Push)
                    },
                );
                run.dedup_key = Some(format!("push:app:{w}:{commit}"));
                run
            })
            .collect();
        store
            .record_push("app", "main", &commit, &runs, &[])
            .expect("child push");
        writeln!(out, "committed {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn sigkill_mid_transaction_leaves_the_last_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sqlite3");
    drop(Db::open(&path).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store_concurrency::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut last_reported = None;
    // A deadline for the child to get going, generous for a loaded machine (not a speed check).
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("committed ") {
            let n: usize = n.parse().unwrap();
            last_reported = Some(n);
            if n >= 50 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no 50 commits from the child by the deadline"
        );
    }
    // SIGKILL: the child is somewhere inside its next write transaction (or between two).
    child.kill().unwrap();
    child.wait().unwrap();
    // What it reported before dying is still in the pipe.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("committed ") {
            last_reported = Some(n.parse().unwrap());
        }
    }
    let last_reported = last_reported.expect("child committed something");

    let store = Db::open(&path).unwrap();
    assert_eq!(store.check_integrity().unwrap(), Ok(()));
    let head = store.last_seen_commit("app", "main").unwrap().unwrap();
    let head: usize = head.trim_start_matches('c').parse().unwrap();
    // Everything the child reported is there; at most the one after it, never half of one.
    assert!(
        head == last_reported || head == last_reported + 1,
        "head c{head}, reported {last_reported}"
    );
    let runs = store.list_runs(&RunFilter::default(), 100_000).unwrap();
    assert_eq!(runs.len(), 3 * (head + 1));
    for i in 0..=head {
        let commit = format!("c{i}");
        let of_commit = runs
            .iter()
            .filter(|r| r.trigger.commit.as_deref() == Some(commit.as_str()))
            .count();
        assert_eq!(of_commit, 3, "commit {commit}");
    }
}
