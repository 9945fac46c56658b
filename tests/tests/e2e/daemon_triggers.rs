//! End-to-end tests of the daemon's triggers: real `agent daemon` processes watching real git
//! repositories in temp dirs (local paths, and a remote served by `git daemon` on
//! 127.0.0.1), runs read back through the HTTP API.
//!
//! - a commit adding a workflow to a watched local repository runs it, and it succeeds;
//! - a remote `git://` repository is polled and triggers the same way;
//! - `on.push` branch and path filters select the right workflows;
//! - a bad workflow file becomes a failed run of its own; the others run;
//! - a `*/2 * * * * *` schedule fires every 2 s, and across a restart no scheduled time
//!   appears twice.

use crate::common;
#[path = "../../../agent/tests/integration/common/git_daemon.rs"]
mod git_daemon;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, commit_files, git, init_repo, run_id, yaml_quote};
use git_daemon::GitDaemon;
use serde_json::Value;

/// Generous bounds: the real commit-to-run latency is measured by `bench/daemon.sh`.
const APPEAR_LIMIT: Duration = Duration::from_secs(5);
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn local_repo_config(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "repos:\n  - name: {name}\n    path: {}\n{extra}",
        yaml_quote(&path.to_string_lossy())
    )
}

/// The `on:` section of a workflow that runs on every push.
const PUSH: &str = "  on:\n    push: {}\n";

fn workflow(name: &str, on: &str, script: &str) -> String {
    format!(
        "workflow:\n  name: {name}\n{on}  stages:\n    - name: main\n      steps:\n        - id: work\n          run: {}\n",
        yaml_quote(script)
    )
}

/// Every run in the history (`GET /api/v1/runs?limit=1000`), oldest first.
fn runs(d: &TestDaemon) -> Vec<Value> {
    let v = d.get_json("/api/v1/runs?limit=1000");
    let mut runs = v["runs"].as_array().cloned().unwrap_or_default();
    runs.reverse();
    runs
}

/// Polls the run list until `cond` holds; returns the runs and when it first held.
fn wait_runs(
    d: &TestDaemon,
    what: &str,
    limit: Duration,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let runs = runs(d);
        if cond(&runs) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; runs: {runs:#?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every run in the history is final; returns them, oldest first.
fn wait_all_final(d: &TestDaemon) -> Vec<Value> {
    wait_runs(d, "every run to finish", RUN_LIMIT, |runs| {
        runs.iter().all(|r| {
            matches!(
                r["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
    })
}

fn names(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["workflow"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_commit_adding_a_workflow_runs_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[("README.md", "hello\n")]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &local_repo_config("app", &repo, ""),
    );
    // Existing history runs nothing; the commit that adds a workflow does, at once.
    let wf = workflow("hello", PUSH, "echo hello from $AGENT_RUN_ID");
    let commit = commit_files(&repo, &[(".workflows/hello.yaml", &wf)], "add hello");
    let committed = Instant::now();
    let seen = wait_runs(&d, "the push run", APPEAR_LIMIT, |r| !r.is_empty());
    let appeared = committed.elapsed();
    assert_eq!(names(&seen), ["hello"]);
    let id = run_id(&seen[0]);
    let run = d.wait_run_final(&id, RUN_LIMIT);
    let finished = committed.elapsed();
    eprintln!("commit -> run listed: {appeared:?}; -> run succeeded: {finished:?}");
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(run["repo"], "app");
    assert_eq!(run["trigger"]["kind"], "push");
    assert_eq!(run["trigger"]["commit"], commit.as_str());
    assert_eq!(run["trigger"]["branch"], "main");
    // The same commit never runs twice, also after a crash; a commit made while the daemon
    // was down runs once when it is back.
    let mut d = d;
    d.kill9();
    let while_down = commit_files(&repo, &[("README.md", "changed\n")], "while down");
    d.boot();
    wait_runs(
        &d,
        "the run of the commit made while down",
        APPEAR_LIMIT,
        |r| r.len() >= 2,
    );
    let again = wait_all_final(&d);
    assert_eq!(again.len(), 2, "{again:#?}");
    let latest = d.get_json(&format!("/api/v1/runs/{}", run_id(&again[1])));
    assert_eq!(latest["trigger"]["commit"], while_down.as_str());
    assert_eq!(latest["status"], "succeeded");
    // The workflow is listed with its file.
    let wfs = d.get_json("/api/v1/workflows");
    let listed = &wfs["workflows"][0];
    assert_eq!(listed["name"], "hello", "{wfs:#}");
    assert_eq!(listed["file"], ".workflows/hello.yaml");
}

#[test]
fn branch_and_path_filters_select_workflows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    let on_src = "  on:\n    push:\n      branches: [main]\n      paths: ['src/**']\n";
    let on_docs = "  on:\n    push:\n      paths: ['docs/**', '!docs/drafts/**']\n";
    let on_feature = "  on:\n    push:\n      branches: ['feature/*']\n";
    init_repo(
        &repo,
        &[
            (".workflows/src.yaml", &workflow("src", on_src, "true")),
            (".workflows/docs.yml", &workflow("docs", on_docs, "true")),
            (
                ".workflows/feature.yaml",
                &workflow("feature", on_feature, "true"),
            ),
        ],
    );
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        // No `branches`: every branch is watched; the workflows' filters decide.
        &local_repo_config("app", &repo, ""),
    );
    let wait_count = |n: usize| wait_runs(&d, &format!("{n} runs"), APPEAR_LIMIT, |r| r.len() >= n);

    // A change only under an excluded path starts nothing; the next push's changes are
    // counted from it, so a docs change right after selects `docs` alone.
    commit_files(&repo, &[("docs/drafts/idea.md", "x")], "draft");
    commit_files(&repo, &[("docs/guide.md", "x")], "docs");
    wait_count(1);
    commit_files(&repo, &[("src/lib.rs", "x")], "src");
    wait_count(2);
    git(&repo, &["checkout", "-q", "-b", "feature/login"]);
    commit_files(&repo, &[("src/login.rs", "x")], "feature work");
    wait_count(3);
    git(&repo, &["checkout", "-q", "-b", "other"]);
    commit_files(&repo, &[("src/other.rs", "x")], "other work");
    // A marker push that selects `docs` shows that `other` was handled (one scan per push).
    commit_files(&repo, &[("docs/more.md", "x")], "marker");
    wait_count(4);

    let all = wait_all_final(&d);
    let got: Vec<(String, String, String)> = all
        .iter()
        .map(|r| {
            let run = d.get_json(&format!("/api/v1/runs/{}", run_id(r)));
            (
                run["workflow"].as_str().unwrap_or_default().to_string(),
                run["trigger"]["branch"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                run["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("docs", "main"),
        ("src", "main"),
        ("feature", "feature/login"),
        ("docs", "other"),
    ]
    .iter()
    .map(|(w, b)| (w.to_string(), b.to_string(), "succeeded".to_string()))
    .collect();
    assert_eq!(got, want, "{}", d.log_text());
}

#[test]
fn a_bad_workflow_file_fails_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[("README.md", "x")]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &local_repo_config("app", &repo, ""),
    );
    commit_files(
        &repo,
        &[
            (".workflows/good.yaml", &workflow("good", PUSH, "echo fine")),
            // No `on:`: a sub-workflow with a required parameter runs only when called,
            // never on push (it used to make a failed run on every commit).
            (
                ".workflows/sub.yaml",
                "workflow:\n  name: sub\n  parameters:\n    - name: version\n      required: true\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo ${{ parameters.version }}\n",
            ),
            (
                ".workflows/broken.yaml",
                "workflow:\n  name: broken\n  stages:\n    - name: s\n      paralel: true\n      steps: []\n",
            ),
        ],
        "one good, one broken",
    );
    wait_runs(&d, "two runs", APPEAR_LIMIT, |r| r.len() >= 2);
    let all = wait_all_final(&d);
    assert_eq!(all.len(), 2, "{all:#?}");
    let find = |name: &str| {
        let r = all
            .iter()
            .find(|r| r["workflow"] == name)
            .unwrap_or_else(|| panic!("no run of {name}: {all:#?}"));
        d.get_json(&format!("/api/v1/runs/{}", run_id(r)))
    };
    let good = find("good");
    assert_eq!(good["status"], "succeeded", "{good:#}");
    let broken = find("broken");
    assert_eq!(broken["status"], "failed", "{broken:#}");
    let error = broken["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(".workflows/broken.yaml:5:7") && error.contains("paralel"),
        "diagnostics missing from the failed run: {error}"
    );
    // The daemon is still watching: the next commit runs `good` again.
    commit_files(&repo, &[("more.txt", "x")], "more");
    wait_runs(&d, "a third run", APPEAR_LIMIT, |r| r.len() >= 3);
    let all = wait_all_final(&d);
    assert!(
        !names(&all).iter().any(|n| n == "sub"),
        "a file without `on:` ran on push: {all:#?}"
    );
}

/// `git daemon` serving `base` on a free port of 127.0.0.1; killed by PID on drop.
#[test]
fn a_remote_served_by_git_daemon_is_polled_and_triggers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("served");
    std::fs::create_dir_all(&base).expect("mkdir");
    git(&base, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let work = tmp.path().join("work");
    let manual = workflow("by-hand", "  on:\n    manual: true\n", "true");
    init_repo(&work, &[(".workflows/by-hand.yaml", &manual)]);
    let bare = base.join("app.git");
    git(&work, &["push", "-q", &bare.to_string_lossy(), "main"]);
    let server = GitDaemon::start(&base);

    let config = format!(
        "repos:\n  - name: remote\n    url: git://127.0.0.1:{}/app.git\n    poll_interval: 1s\n",
        server.port
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    // The daemon announces itself once it has fetched the remote, so the history it saw
    // is what the remote held: the push below, made at once, runs.
    let v = d.get_json("/api/v1/workflows");
    assert_eq!(v["workflows"][0]["name"], "by-hand", "{v:#}");
    let commit = commit_files(
        &work,
        &[(".workflows/ci.yaml", &workflow("ci", PUSH, "echo remote"))],
        "add ci",
    );
    git(&work, &["push", "-q", &bare.to_string_lossy(), "main"]);
    let seen = wait_runs(&d, "the polled push run", APPEAR_LIMIT, |r| !r.is_empty());
    assert_eq!(names(&seen), ["ci"]);
    let run = d.wait_run_final(&run_id(&seen[0]), RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(run["repo"], "remote");
    assert_eq!(run["trigger"]["commit"], commit.as_str());
    drop(server);
}

/// The scheduled times of the history's schedule runs, in order of the runs.
fn scheduled_times(d: &TestDaemon) -> Vec<String> {
    runs(d)
        .iter()
        .filter(|r| r["trigger"] == "schedule" || r["trigger"]["kind"] == "schedule")
        .map(|r| {
            let run = d.get_json(&format!("/api/v1/runs/{}", run_id(r)));
            run["trigger"]["scheduled_for"]
                .as_str()
                .unwrap_or_else(|| panic!("no scheduled_for: {run:#}"))
                .to_string()
        })
        .collect()
}

#[test]
fn an_every_two_seconds_schedule_fires_once_per_slot_across_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    // `overlap: queue`: a run slowed down by a loaded machine does not make a slot skip.
    let on =
        "  concurrency:\n    overlap: queue\n  on:\n    schedule:\n      - cron: '*/2 * * * * *'\n";
    init_repo(
        &repo,
        &[(".workflows/tick.yaml", &workflow("tick", on, "echo tick"))],
    );
    let mut d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &local_repo_config("app", &repo, ""),
    );
    let limit = Duration::from_secs(15);
    wait_runs(&d, "3 schedule runs", limit, |r| r.len() >= 3);
    let next = d.get_json("/api/v1/workflows");
    assert!(
        next["workflows"][0]["next_fire"].is_string(),
        "no next_fire: {next:#}"
    );
    let before = scheduled_times(&d);
    // Slots are 2 s apart, on even seconds.
    let parsed: Vec<i64> = before.iter().map(|t| seconds(t)).collect();
    for t in &parsed {
        assert_eq!(t % 2, 0, "slot not on an even second: {before:?}");
    }
    for w in parsed.windows(2) {
        assert_eq!(w[1] - w[0], 2, "slots not 2 s apart: {before:?}");
    }

    // A graceful restart, then a crash and a restart: still one run per slot.
    d.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    d.boot();
    let n = runs(&d).len();
    wait_runs(&d, "2 more schedule runs", limit, |r| r.len() >= n + 2);
    d.kill9();
    d.boot();
    let n = runs(&d).len();
    wait_runs(&d, "2 more schedule runs", limit, |r| r.len() >= n + 2);
    wait_all_final(&d);
    let all = scheduled_times(&d);
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a slot fired twice: {all:#?}");
    for r in runs(&d) {
        assert_eq!(r["status"], "succeeded", "{r:#}");
    }
}

/// Seconds since the epoch of an RFC 3339 time (UTC `Z` or an offset), without a date crate.
fn seconds(t: &str) -> i64 {
    let (date, time) = t.split_once('T').expect("RFC 3339");
    let mut d = date.split('-').map(|x| x.parse::<i64>().expect("date"));
    let (y, m, day) = (
        d.next().expect("y"),
        d.next().expect("m"),
        d.next().expect("d"),
    );
    let hms: String = time.chars().take(8).collect();
    let mut h = hms.split(':').map(|x| x.parse::<i64>().expect("time"));
    let (hh, mm, ss) = (
        h.next().expect("h"),
        h.next().expect("m"),
        h.next().expect("s"),
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let offset = time
        .get(8..)
        .and_then(|rest| {
            let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
            let sign = match rest.chars().next()? {
                '+' => 1,
                '-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            Some(sign * (oh * 3600 + om * 60))
        })
        .unwrap_or(0);
    days * 86_400 + hh * 3600 + mm * 60 + ss - offset
}

#[test]
fn a_silent_remote_times_out_without_holding_up_other_repositories() {
    // A remote that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let held = held.clone();
        // Ends with the test process; every connection stays open and unanswered.
        move || {
            for conn in listener.incoming().flatten() {
                held.lock().expect("lock").push(conn);
            }
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[("README.md", "hello\n")]);
    let config = format!(
        "{}  - name: silent\n    url: git://127.0.0.1:{port}/silent.git\n    poll_interval: 1s\nlimits:\n  fetch_timeout: 1s\n",
        local_repo_config("app", &repo, "")
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let wf = workflow("hello", PUSH, "echo hello");
    commit_files(&repo, &[(".workflows/hello.yaml", &wf)], "add hello");
    let seen = wait_runs(&d, "the local push run", RUN_LIMIT, |r| !r.is_empty());
    let run = d.wait_run_final(&run_id(&seen[0]), RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    // The silent remote's fetches fail with a timeout, are logged, and are tried again.
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let log = d.log_text();
        let timeouts = log
            .lines()
            .filter(|l| l.contains("silent") && l.contains("timed out"))
            .count();
        if timeouts >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no repeated timeout of the silent remote in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        held.lock().expect("lock").len() >= 2,
        "the daemon kept trying"
    );
    assert_eq!(d.get("/health").0, 200);
}

/// A workflow whose step commits to the repository the daemon watches made 935 runs in
/// 40 s. Its commits (committed as the run, through the committer identity steps get) do
/// not start it again: a self-pushing workflow makes no follow-up run, and each commit of a
/// person starts it once. Its `on.manual: false` refuses manual triggers with a 403.
#[test]
fn a_workflow_pushing_to_its_own_repository_does_not_loop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[("README.md", "x\n")]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &local_repo_config("app", &repo, ""),
    );
    let wf = format!(
        "workflow:\n  name: self\n  on:\n    push: {{}}\n    manual: false\n  env:\n    REPO: {}\n  stages:\n    - name: main\n      steps:\n        - id: bump\n          run: |\n            cd \"$REPO\"\n            echo \"$AGENT_RUN_ID\" >> bumps\n            git add bumps\n            git -c user.name=Bot -c user.email=bot@example.com commit -q -m bump\n",
        yaml_quote(&repo.to_string_lossy())
    );
    commit_files(&repo, &[(".workflows/self.yaml", &wf)], "add self");
    let guarded = |n: usize| {
        let deadline = Instant::now() + RUN_LIMIT;
        while d.log_text().matches("loop guard").count() < n {
            assert!(
                Instant::now() < deadline,
                "the run's commit was never looked at\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = wait_runs(&d, "the push run", RUN_LIMIT, |r| !r.is_empty());
    let run = d.wait_run_final(&run_id(&first[0]), RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    guarded(1);
    let all = wait_all_final(&d);
    assert_eq!(
        all.len(),
        1,
        "the run's own commit started it again: {all:#?}"
    );
    let bumper = git(&repo, &["log", "-1", "--format=%cn <%ce>"]);
    let bumper = bumper.trim();
    assert_eq!(
        bumper,
        format!("Agent <agent-run-{}@agent.invalid>", run_id(&first[0]))
    );

    // A person's commit starts it once more; its commit again nothing.
    commit_files(&repo, &[("README.md", "y\n")], "by a person");
    wait_runs(&d, "the second push run", RUN_LIMIT, |r| r.len() >= 2);
    guarded(2);
    let all = wait_all_final(&d);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().all(|r| r["status"] == "succeeded"), "{all:#?}");

    // `on.manual: false`: a manual trigger is refused, clearly.
    let (code, body) = d.post("/api/v1/workflows/self/runs", "{}");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("manual"), "{body}");
}

/// A local repository path that does not exist was reported as libgit2's "unsupported URL
/// protocol"; the log says that it does not exist.
#[test]
fn a_missing_local_repository_is_reported_as_missing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-repo");
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &local_repo_config("gone", &missing, ""),
    );
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let log = d.log_text();
        if log.contains("does not exist") {
            assert!(!log.contains("unsupported URL protocol"), "{log}");
            assert!(log.contains(&missing.display().to_string()), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no `does not exist` in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two workflow files sharing a `name:`: the first in path order runs its own file (the
/// run records the file it executes rather than finding one by name at run time), the later
/// one is reported as a failed run named by its file stem, and neither executes the other.
#[test]
fn two_files_sharing_a_name_run_the_first_and_fail_the_later() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("app");
    init_repo(&repo, &[("README.md", "hello\n")]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &local_repo_config("app", &repo, ""),
    );
    let marker = |file: &str| tmp.path().join(format!("ran-{file}"));
    let a = workflow(
        "twin",
        PUSH,
        &format!("touch {}", yaml_quote(&marker("a").to_string_lossy())),
    );
    let b = workflow(
        "twin",
        PUSH,
        &format!("touch {}", yaml_quote(&marker("b").to_string_lossy())),
    );
    commit_files(
        &repo,
        &[(".workflows/a.yaml", &a), (".workflows/b.yaml", &b)],
        "two twins",
    );
    wait_runs(&d, "both push runs", RUN_LIMIT, |r| r.len() == 2);
    let done = wait_all_final(&d);
    let mut seen: Vec<(String, String)> = done
        .iter()
        .map(|r| {
            (
                r["workflow"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("b".to_string(), "failed".to_string()),
            ("twin".to_string(), "succeeded".to_string())
        ],
        "{}",
        d.log_text()
    );
    assert!(marker("a").exists(), "a.yaml never ran\n{}", d.log_text());
    assert!(!marker("b").exists(), "b.yaml ran");
}
