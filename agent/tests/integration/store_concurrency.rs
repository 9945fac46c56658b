//! The store under concurrent writers and under a real crash (SIGKILL) mid-transaction.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::backends::on_each_backend;
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

/// Two nodes (two connections, two threads) claim from one queue at once, many rounds, on
/// each backend, while a third connection keeps queueing runs of the same groups: no run is
/// ever claimed twice, and no two runs of one concurrency group are ever claimed or running
/// at the same time. Guards the claim of a shared database
/// (`FOR UPDATE SKIP LOCKED` on PostgreSQL), where a claim read and then updated would hand
/// one run to both nodes.
#[test]
fn two_nodes_claiming_at_once_never_share_a_run_or_a_group() {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    const ROUNDS: usize = 5;
    const GROUPS: usize = 3;
    const PER_GROUP: usize = 4;
    const UNGROUPED: usize = 6;
    const FED: usize = 6;
    on_each_backend(|b| {
        for round in 0..ROUNDS {
            let mut store = b.open();
            let mut expected = 0;
            for i in 0..PER_GROUP {
                for g in 0..GROUPS {
                    let mut run = NewRun::new(format!("g{g}"), Trigger::new(TriggerKind::Manual));
                    run.concurrency_group = Some(format!("group-{round}-{g}"));
                    run.priority = (i % 2) as i64;
                    store.enqueue_run(&run).expect("enqueue");
                    expected += 1;
                }
            }
            for i in 0..UNGROUPED {
                let mut run = NewRun::new("free", Trigger::new(TriggerKind::Manual));
                run.priority = (i % 3) as i64;
                store.enqueue_run(&run).expect("enqueue");
                expected += 1;
            }
            // The groups holding a claimed or running run, as the two nodes see them.
            let busy: Mutex<HashMap<String, agent::store::RunId>> = Mutex::new(HashMap::new());
            expected += FED * GROUPS;
            let barrier = std::sync::Barrier::new(3);
            let feeding = std::sync::atomic::AtomicBool::new(true);
            let done: Vec<Vec<agent::store::RunId>> = std::thread::scope(|scope| {
                let mut feeder = b.open();
                let (feeding, barrier_ref) = (&feeding, &barrier);
                scope.spawn(move || {
                    barrier_ref.wait();
                    for i in 0..FED {
                        for g in 0..GROUPS {
                            let mut run =
                                NewRun::new(format!("fed{i}"), Trigger::new(TriggerKind::Manual));
                            run.concurrency_group = Some(format!("group-{round}-{g}"));
                            feeder.enqueue_run(&run).expect("enqueue while claiming");
                        }
                    }
                    feeding.store(false, std::sync::atomic::Ordering::SeqCst);
                });
                let handles: Vec<_> = ["node-a", "node-b"]
                    .into_iter()
                    .map(|node| {
                        let mut db = b.open();
                        let busy = &busy;
                        let barrier = &barrier;
                        scope.spawn(move || {
                            barrier.wait();
                            let mut mine = Vec::new();
                            let deadline = Instant::now() + Duration::from_secs(300);
                            loop {
                                assert!(Instant::now() < deadline, "the queue never drained");
                                let claimed = db
                                    .claim(node, 2, std::time::Duration::from_secs(60))
                                    .expect("claim");
                                if claimed.is_empty() {
                                    let fed = !feeding.load(std::sync::atomic::Ordering::SeqCst);
                                    let (queued, _) = db.count_active().expect("count");
                                    if fed && queued == 0 {
                                        break;
                                    }
                                    std::thread::yield_now();
                                    continue;
                                }
                                for run in &claimed {
                                    if let Some(group) = &run.concurrency_group {
                                        let other =
                                            busy.lock().unwrap().insert(group.clone(), run.id);
                                        assert_eq!(
                                            other, None,
                                            "{node} claimed {} of {group} while {other:?} holds it",
                                            run.id
                                        );
                                    }
                                }
                                for run in claimed {
                                    db.mark_running(run.id).expect("mark running");
                                    // Free the group before the run ends in the store: once
                                    // it has, the other node may claim the group's next run.
                                    if let Some(group) = &run.concurrency_group {
                                        busy.lock().unwrap().remove(group);
                                    }
                                    db.finish_run(run.id, &RunFinish::new(RunStatus::Succeeded))
                                        .expect("finish");
                                    mine.push(run.id);
                                }
                            }
                            mine
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("node"))
                    .collect()
            });
            let all: Vec<_> = done.iter().flatten().copied().collect();
            let distinct: HashSet<_> = all.iter().copied().collect();
            assert_eq!(all.len(), expected, "round {round}: every run ran once");
            assert_eq!(distinct.len(), expected, "round {round}: no run ran twice");
        }
    });
}

/// Two nodes reclaim lapsed leases at once, on each backend: every lapsed running run is
/// returned (interrupted) to exactly one of them.
#[test]
fn concurrent_reclaims_take_each_lapsed_run_once() {
    const RUNS: usize = 8;
    on_each_backend(|b| {
        for round in 0..5 {
            let mut store = b.open();
            let mut ids = Vec::new();
            for i in 0..RUNS {
                let run = NewRun::new(format!("r{round}-{i}"), Trigger::new(TriggerKind::Manual));
                ids.push(store.enqueue_run(&run).expect("enqueue").run_id());
            }
            let claimed = store
                .claim("gone", RUNS, std::time::Duration::from_millis(1))
                .expect("claim");
            assert_eq!(claimed.len(), RUNS);
            for id in &ids {
                store.mark_running(*id).expect("running");
            }
            let later = chrono::Utc::now() + chrono::Duration::seconds(10);
            let barrier = std::sync::Barrier::new(2);
            let got: Vec<agent::store::RunId> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..2)
                    .map(|_| {
                        let mut db = b.open();
                        let barrier = &barrier;
                        scope.spawn(move || {
                            barrier.wait();
                            db.reclaim_expired(later).expect("reclaim")
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("node"))
                    .map(|r| r.id)
                    .collect()
            });
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, ids, "round {round}: each lapsed run once: {got:?}");
            for id in &ids {
                let run = store.get_run(*id).expect("get").expect("run");
                assert_eq!(run.status, RunStatus::Interrupted);
                store
                    .finish_run(*id, &RunFinish::new(RunStatus::Cancelled))
                    .expect("end");
            }
        }
    });
}
