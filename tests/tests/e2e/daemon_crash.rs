//! End-to-end tests of crash safety: real `agent daemon` processes killed with SIGKILL (by
//! PID) at chosen and at random moments, a second daemon on the same state directory, and a
//! database held locked by a real second SQLite connection. What they guard: no step whose
//! end was recorded runs again, no `idempotent: false` step runs twice, a step's leftover
//! processes never run beside its resumed copy, a run that keeps dying in one step is given
//! up, and a failing database write is retried (and reported by `/health`), never dropped.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{
    TestDaemon, count_lines, fixture, http_request, init_repo, lines, repo_config, trigger,
    wait_for, yaml_quote,
};
use serde_json::Value;

const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Whether process `pid` still exists (and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rfind(')')
                .and_then(|i| t[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// `GET /health` without a token: (status, body).
fn health(d: &TestDaemon) -> (u16, Value) {
    let (code, body) = http_request(d.addr, "GET", "/health", None, None).expect("health answers");
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A second connection to the daemon's database holding the write lock (`BEGIN
/// IMMEDIATE`) until dropped.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(state_dir: &Path) -> WriteLock {
        let conn = rusqlite::Connection::open(state_dir.join("agent.sqlite3")).expect("open db");
        conn.busy_timeout(Duration::from_secs(30))
            .expect("busy timeout");
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the lock");
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("COMMIT").expect("release the lock");
    }
}

/// A second daemon on the same state directory (here on another port, the worse case: both
/// would serve) is refused before it touches anything: exit 1, "another daemon (pid N)
/// uses STATE_DIR" naming the first one's pid. The first daemon's running step is not run
/// again and its workspace stays. A new state directory ignores itself in git.
#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: slow\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: wait\n          run: |\n            echo started >> \"$OUT/starts\"\n            echo \"$AGENT_WORKSPACE\" > \"$OUT/ws\"\n            while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/slow.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger(&d, "slow");
    wait_for("the step to start", RUN_LIMIT, || {
        count_lines(&out.join("ws")) == 1
    });
    let workspace = PathBuf::from(lines(&out.join("ws"))[0].clone());

    let second = Command::new(common::agent_bin())
        .arg("daemon")
        .arg("--config")
        .arg(&d.config)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run a second daemon");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "another daemon (pid {}) uses {}",
        d.pid().expect("first daemon runs"),
        d.state_dir.display()
    );
    assert!(
        stderr.contains(&expected),
        "want {expected:?} in:\n{stderr}"
    );

    assert!(workspace.is_dir(), "the live run's workspace was removed");
    std::fs::write(out.join("go"), "").expect("go");
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(count_lines(&out.join("starts")), 1, "the step ran twice");
    let gitignore = std::fs::read_to_string(d.state_dir.join(".gitignore")).expect(".gitignore");
    assert!(gitignore.lines().any(|l| l == "*"), "{gitignore}");
}

/// A step that prints nothing survives a `kill -9` of its daemon as an orphan. The restarted
/// daemon ends it before resuming the run, so the step's effect happens once per copy that
/// was allowed to finish: here only the resumed one.
#[test]
fn a_step_left_running_by_a_crash_is_ended_before_its_run_resumes() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: quiet\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: work\n          run: |\n            echo $$ >> \"$OUT/pids\"\n            sleep 2\n            echo done >> \"$OUT/done\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/quiet.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger(&d, "quiet");
    wait_for("the step to start", RUN_LIMIT, || {
        count_lines(&out.join("pids")) == 1
    });
    let orphan: i32 = lines(&out.join("pids"))[0].parse().expect("pid");
    d.kill9();
    assert!(alive(orphan), "the step should outlive its daemon");
    d.boot();
    wait_for("the orphan to be ended", RUN_LIMIT, || !alive(orphan));
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(count_lines(&out.join("pids")), 2);
    assert_eq!(
        count_lines(&out.join("done")),
        1,
        "the orphan finished beside its resumed copy"
    );
}

/// A step's start is on disk before its process is spawned. With the database locked by
/// another connection when step `charge` (`idempotent: false`) is due, `charge` does not
/// run; the daemon is killed meanwhile. After the restart `charge` had never started, so
/// it runs, once.
#[test]
fn a_step_runs_only_once_its_start_is_recorded() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: pay\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: prepare\n          run: |\n            echo prepare >> \"$OUT/prepare\"\n            while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n        - id: charge\n          idempotent: false\n          run: echo charge >> \"$OUT/charge\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/pay.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}limits:\n  store_busy_timeout: 100ms\n",
        repo_config("app", &repo)
    );
    let mut d = TestDaemon::start(&root, &config);
    let id = trigger(&d, "pay");
    wait_for("prepare to start", RUN_LIMIT, || {
        count_lines(&out.join("prepare")) == 1
    });
    let lock = WriteLock::take(&d.state_dir);
    std::fs::write(out.join("go"), "").expect("go");
    // The end of `prepare` cannot be written: the daemon reports it and retries.
    wait_for("/health to say degraded", RUN_LIMIT, || health(&d).0 == 503);
    let (_, body) = health(&d);
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("locked")),
        "{body}"
    );
    assert_eq!(count_lines(&out.join("charge")), 0, "charge ran unrecorded");
    d.kill9();
    lock.release();
    std::fs::remove_file(out.join("go")).expect("rm go");
    d.boot();
    // `prepare` was interrupted (its end never written): it runs again; charge once.
    wait_for("prepare to run again", RUN_LIMIT, || {
        count_lines(&out.join("prepare")) == 2
    });
    std::fs::write(out.join("go"), "").expect("go");
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(count_lines(&out.join("charge")), 1);
}

/// A write lock held past the busy timeout while a step ends: the step's end is retried
/// (not dropped), `/health` answers 503 `degraded` with the error meanwhile and `ok` again
/// after, the next step waits, the run succeeds, and a restart re-runs nothing.
#[test]
fn a_locked_database_is_retried_and_health_says_degraded_meanwhile() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: two\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: one\n          run: |\n            echo one >> \"$OUT/one\"\n            while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n        - id: two\n          run: echo two >> \"$OUT/two\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/two.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}limits:\n  store_busy_timeout: 100ms\n",
        repo_config("app", &repo)
    );
    let mut d = TestDaemon::start(&root, &config);
    assert_eq!(health(&d), (200, serde_json::json!({"status": "ok"})));
    let id = trigger(&d, "two");
    wait_for("step one to start", RUN_LIMIT, || {
        count_lines(&out.join("one")) == 1
    });
    let lock = WriteLock::take(&d.state_dir);
    std::fs::write(out.join("go"), "").expect("go");
    wait_for("/health to say degraded", RUN_LIMIT, || health(&d).0 == 503);
    assert_eq!(count_lines(&out.join("two")), 0, "two started unrecorded");
    lock.release();
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    wait_for("/health to be ok again", RUN_LIMIT, || health(&d).0 == 200);
    assert_eq!(health(&d).1, serde_json::json!({"status": "ok"}));
    d.kill9();
    d.boot();
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(count_lines(&out.join("one")), 1);
    assert_eq!(count_lines(&out.join("two")), 1);
}

/// When a step's start cannot be recorded within `limits.record_timeout`, the step fails
/// with `StorageError` without running, and the run is failed with the storage error once
/// the database takes writes again.
#[test]
fn a_step_whose_start_cannot_be_recorded_fails_with_a_storage_error() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: two\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: one\n          run: |\n            echo one >> \"$OUT/one\"\n            while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n        - id: two\n          run: echo two >> \"$OUT/two\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/two.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}limits:\n  store_busy_timeout: 100ms\n  record_timeout: 500ms\n",
        repo_config("app", &repo)
    );
    let d = TestDaemon::start(&root, &config);
    let id = trigger(&d, "two");
    wait_for("step one to start", RUN_LIMIT, || {
        count_lines(&out.join("one")) == 1
    });
    let lock = WriteLock::take(&d.state_dir);
    std::fs::write(out.join("go"), "").expect("go");
    wait_for("the engine to give step two up", RUN_LIMIT, || {
        d.log_text().contains("could not be recorded in time")
    });
    lock.release();
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}\n{}", d.log_text());
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("storage error"), "{run:#}");
    let two = &run["stages"][0]["steps"][1];
    assert_eq!(two["id"], "two", "{run:#}");
    assert_eq!(two["error_class"], "StorageError", "{run:#}");
    assert_eq!(count_lines(&out.join("two")), 0, "two ran");
    wait_for("/health to be ok again", RUN_LIMIT, || health(&d).0 == 200);
}

/// A run whose step keeps taking the daemon down is resumed twice, then failed at the third
/// interruption with "interrupted 3 times during step boom; not resumed again".
#[test]
fn a_run_interrupted_three_times_in_one_step_is_not_resumed_again() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: crashy\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: boom\n          run: |\n            echo try >> \"$OUT/tries\"\n            sleep 60\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/crashy.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger(&d, "crashy");
    for n in 1..=3 {
        wait_for("the step to start", RUN_LIMIT, || {
            count_lines(&out.join("tries")) == n
        });
        d.kill9();
        d.boot();
    }
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(
        run["error"], "interrupted 3 times during step boom; not resumed again",
        "{run:#}"
    );
    assert_eq!(count_lines(&out.join("tries")), 3);
}

/// A small xorshift generator: the kill moments are random but reproducible from the seed
/// printed by the test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The steps of a run (from the API) whose end is recorded as succeeded.
fn succeeded_steps(d: &TestDaemon, run: &str) -> Vec<String> {
    let Ok((200, body)) = d.try_request("GET", &format!("/api/v1/runs/{run}"), None) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for stage in v["stages"].as_array().into_iter().flatten() {
        for step in stage["steps"].as_array().into_iter().flatten() {
            if step["status"] == "succeeded"
                && let Some(id) = step["id"].as_str()
            {
                out.push(id.to_string());
            }
        }
    }
    out
}

/// The acceptance scenario: runs of a four-step workflow whose steps append a line to a
/// file outside the workspace (two of them `idempotent: false`, one effect at the start of a
/// step, one at its end), with the daemon killed by SIGKILL at random moments and
/// restarted, six times (half of them the moment a non-idempotent step made its effect).
/// Then: every `idempotent: false` step's effect happened at most
/// once per run; a step whose end was recorded before a kill never ran again; every run
/// ended `succeeded` or waits `interrupted` for `agent retry` (a non-idempotent step was
/// cut). Bounded: each wait has a deadline.
#[test]
fn kill_9_at_random_moments_never_repeats_a_finished_or_non_idempotent_step() {
    let (tmp, repo, out) = fixture();
    let effects = out.join("effects");
    let wf = format!(
        "workflow:\n  name: chain\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            echo \"$AGENT_RUN_ID a\" >> \"$OUT/effects\"\n            sleep 0.2\n        - id: b\n          idempotent: false\n          run: |\n            echo \"$AGENT_RUN_ID b\" >> \"$OUT/effects\"\n            sleep 0.3\n        - id: c\n          run: |\n            sleep 0.2\n            echo \"$AGENT_RUN_ID c\" >> \"$OUT/effects\"\n        - id: d\n          idempotent: false\n          run: |\n            sleep 0.1\n            echo \"$AGENT_RUN_ID d\" >> \"$OUT/effects\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/chain.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("kill moments seed: {seed}");
    let mut rng = Rng(seed);
    let mut runs: Vec<String> = Vec::new();
    // (run, step) recorded as succeeded before a kill -> its effect count then.
    let mut finished: HashMap<(String, String), usize> = HashMap::new();
    let count = |run: &str, step: &str| {
        lines(&effects)
            .iter()
            .filter(|l| **l == format!("{run} {step}"))
            .count()
    };
    for round in 0..6 {
        let before = lines(&effects).len();
        runs.push(trigger(&d, "chain"));
        if round % 2 == 0 {
            runs.push(trigger(&d, "chain"));
            std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        } else {
            // Targeted: the moment a non-idempotent step has made its effect (its start may
            // still be in flight to the database), or a bound.
            let deadline = Instant::now() + Duration::from_secs(10);
            let non_idempotent_effect = || {
                lines(&effects)
                    .iter()
                    .skip(before)
                    .any(|l| l.ends_with(" b") || l.ends_with(" d"))
            };
            while Instant::now() < deadline && !non_idempotent_effect() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for run in &runs {
            for step in succeeded_steps(&d, run) {
                let n = count(run, &step);
                finished.entry((run.clone(), step)).or_insert(n);
            }
        }
        d.kill9();
        d.boot();
    }
    let mut waiting = 0;
    for run in &runs {
        let v = d.wait_run(run, RUN_LIMIT, |s| {
            matches!(s, "succeeded" | "failed" | "cancelled" | "interrupted")
        });
        match v["status"].as_str() {
            Some("succeeded") => {}
            Some("interrupted") => waiting += 1,
            _ => panic!("run {run} ended {}: {v:#}\n{}", v["status"], d.log_text()),
        }
        for step in ["b", "d"] {
            assert!(
                count(run, step) <= 1,
                "run {run}: `idempotent: false` step {step} ran {} times (seed {seed})",
                count(run, step)
            );
        }
        if v["status"] == "succeeded" {
            for step in ["a", "b", "c", "d"] {
                assert!(count(run, step) >= 1, "run {run} {step}: {v:#}");
            }
        }
    }
    for ((run, step), n) in &finished {
        assert_eq!(
            count(run, step),
            *n,
            "run {run}: step {step} ran again after its end was recorded (seed {seed})"
        );
    }
    let distinct: HashSet<&String> = runs.iter().collect();
    assert_eq!(distinct.len(), runs.len());
    eprintln!(
        "{} runs, {waiting} waiting for retry, {} finished steps checked",
        runs.len(),
        finished.len()
    );
}

/// An `idempotent: false` step inside a called sub-workflow (`call/charge`, as the engine
/// names it) cut by a crash is not re-run blindly either: the run waits for `agent retry`.
#[test]
fn a_non_idempotent_step_of_a_sub_workflow_cut_by_a_crash_waits_for_retry() {
    let (tmp, repo, out) = fixture();
    let main = "workflow:\n  name: main\n  stages:\n    - name: s\n      steps:\n        - id: call\n          workflow: billing\n";
    let sub = format!(
        "workflow:\n  name: billing\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: charge\n          idempotent: false\n          run: |\n            echo charge >> \"$OUT/charge\"\n            sleep 60\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(
        &repo,
        &[
            (".workflows/main.yaml", main),
            (".workflows/billing.yaml", &sub),
        ],
    );
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger(&d, "main");
    wait_for("the charge step to start", RUN_LIMIT, || {
        count_lines(&out.join("charge")) == 1
    });
    d.kill9();
    d.boot();
    // Recovery is done before the API answers: a resumed run would show queued or running.
    let run = d.wait_run(&id, RUN_LIMIT, |s| s != "queued" && s != "running");
    assert_eq!(run["status"], "interrupted", "{run:#}\n{}", d.log_text());
    assert_eq!(count_lines(&out.join("charge")), 1, "re-run blindly");
}
