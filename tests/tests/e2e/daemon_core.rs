//! End-to-end tests of the daemon core: real `agent daemon` processes on real git
//! repositories in temp dirs. Manual runs through the API, crash recovery (`kill -9` in the
//! middle of a run), 200 runs with `max_concurrent_runs: 4`, SIGTERM, secrets, step logs,
//! `agent validate --config`.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{
    TestDaemon, commit_files, fixture, init_repo, lines, repo_config, trigger_with, wait_for,
    yaml_quote,
};
use serde_json::Value;

const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Whether a step has written a whole line to `path`: the file exists as soon as the shell
/// opens it for `>>`, a moment before the line is in it.
fn has_line(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n'))
}

/// Kills a process by PID (a step process left behind by a `kill -9` of the daemon).
fn kill_pid_file(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(pid) = text.trim().parse::<i32>()
        && pid > 1
    {
        // SAFETY: kill(2) on a PID a step of this test wrote; at worst it is already gone.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn manual_run_succeeds_with_logs_secrets_and_report() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: hello\n  parameters:\n    - name: who\n      type: string\n      default: world\n  env:\n    OUT: {}\n  stages:\n    - name: main\n      steps:\n        - id: greet\n          run: |\n            echo \"hello ${{{{ parameters.who }}}}\"\n            echo \"token ${{{{ secrets.TOKEN }}}}\"\n            printf '%s' \"${{{{ secrets.TOKEN }}}}\" > \"$OUT/secret\"\n            echo \"$AGENT_WORKSPACE\" > \"$OUT/workspace\"\n        - id: second\n          run: echo second\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/hello.yaml", &wf), ("README", "x\n")]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}secrets:\n  TOKEN: {{env: CORE_TEST_TOKEN}}\n",
        repo_config("app", &repo)
    );
    let d = TestDaemon::start_with_env(&root, &config, &[("CORE_TEST_TOKEN", "s3cr3t-value")]);
    let id = trigger_with(&d, "hello", r#"{"parameters":{"who":"daemon"}}"#);
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    // The secret reached the step...
    assert_eq!(
        std::fs::read_to_string(out.join("secret")).expect("secret file"),
        "s3cr3t-value"
    );
    // ...and is masked in the log file and the API's log route.
    let log_path = d.state_dir.join("logs").join(&id).join("greet.log");
    let log = std::fs::read_to_string(&log_path).expect("step log file");
    assert!(log.contains("hello daemon"), "{log}");
    assert!(log.contains("token ***"), "{log}");
    assert!(!log.contains("s3cr3t-value"), "{log}");
    let (code, api_log) = d.get(&format!("/api/v1/runs/{id}/steps/greet/log"));
    assert_eq!(code, 200);
    assert!(api_log.contains("hello daemon"), "{api_log}");
    // Steps are recorded; the workspace was removed after the run.
    let steps: Vec<&str> = run["stages"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["greet", "second"], "{run:#}");
    let ws = std::fs::read_to_string(out.join("workspace")).expect("workspace path");
    assert!(!Path::new(ws.trim()).exists(), "workspace {ws} not removed");
    // Unknown workflows and bad parameters are refused.
    let (code, _) = d.post("/api/v1/workflows/nope/runs", "{}");
    assert!(code == 404 || code == 422, "unknown workflow: {code}");
    let (code, body) = d.post(
        "/api/v1/workflows/hello/runs",
        r#"{"parameters":{"who":1,"bogus":true}}"#,
    );
    assert_eq!(code, 422, "{body}");
}

/// Guards the step environment under the daemon: the variable behind a `secrets:` entry is
/// not in a step's environment (only `${{ secrets.NAME }}` reads it), a name listed in
/// `env_passthrough` is, and nothing else of the daemon's environment is.
#[test]
fn steps_see_only_the_minimal_environment_and_env_passthrough() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: envs\n  env:\n    OUT: {}\n  stages:\n    - name: main\n      steps:\n        - id: look\n          run: |\n            printf '%s' \"${{CORE_ENV_TOKEN:-unset}}\" > \"$OUT/raw\"\n            printf '%s' \"${{PASS_ME:-unset}}\" > \"$OUT/pass\"\n            printf '%s' \"${{OTHER_DAEMON_VAR:-unset}}\" > \"$OUT/other\"\n            printf '%s' \"${{{{ secrets.TOKEN }}}}\" > \"$OUT/secret\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/envs.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}secrets:\n  TOKEN: {{env: CORE_ENV_TOKEN}}\nenv_passthrough: [PASS_ME]\n",
        repo_config("app", &repo)
    );
    let d = TestDaemon::start_with_env(
        &root,
        &config,
        &[
            ("CORE_ENV_TOKEN", "s3cr3t-env"),
            ("PASS_ME", "through"),
            ("OTHER_DAEMON_VAR", "hidden"),
        ],
    );
    let id = trigger_with(&d, "envs", "{}");
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect("step file");
    assert_eq!(read("raw"), "unset");
    assert_eq!(read("pass"), "through");
    assert_eq!(read("other"), "unset");
    assert_eq!(read("secret"), "s3cr3t-env");
}

#[test]
fn kill_9_during_the_second_step_resumes_without_redoing_the_first() {
    let (tmp, repo, out) = fixture();
    // Step two blocks the first time (until the daemon is killed), not the second.
    let wf = format!(
        "workflow:\n  name: three\n  concurrency:\n    group: three\n    overlap: queue\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: one\n          run: |\n            echo one >> \"$OUT/one\"\n            echo x=1 >> \"$AGENT_OUTPUT\"\n            echo '{{\"from_one\": \"yes\"}}' > \"$AGENT_CONTEXT\"\n        - id: two\n          run: |\n            echo \"${{{{ steps.one.output.x }}}} ${{{{ context.from_one }}}}\" >> \"$OUT/seen\"\n            echo two >> \"$OUT/two\"\n            if [ \"$(wc -l < \"$OUT/two\")\" -lt 2 ]; then echo $$ > \"$OUT/pid\"; exec sleep 120; fi\n        - id: three\n          run: echo three >> \"$OUT/three\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/three.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    let first = trigger_with(&d, "three", "{}");
    wait_for("step two to start", RUN_LIMIT, || {
        has_line(&out.join("pid"))
    });
    // Another run waits in the queue (same concurrency group): it must survive too.
    let queued = trigger_with(&d, "three", "{}");
    d.kill9();
    kill_pid_file(&out.join("pid"));
    d.boot();
    let run = d.wait_run_final(&first, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    let second = d.wait_run_final(&queued, RUN_LIMIT);
    assert_eq!(second["status"], "succeeded", "{second:#}");
    // Run one: one once, two twice (interrupted, then again), three once. Run two: each once.
    assert_eq!(lines(&out.join("one")).len(), 2, "step one ran again");
    assert_eq!(lines(&out.join("two")).len(), 3);
    assert_eq!(lines(&out.join("three")).len(), 2);
    // The resumed step two saw step one's outputs and context, restored.
    assert_eq!(lines(&out.join("seen")), ["1 yes", "1 yes", "1 yes"]);
    let runs = d.get_json("/api/v1/runs?limit=100");
    let ids: HashSet<String> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| match &r["run_id"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        })
        .collect();
    assert!(ids.contains(&first) && ids.contains(&queued), "{runs:#}");
}

#[test]
fn a_non_idempotent_step_cut_by_a_crash_waits_for_retry() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: pay\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: charge\n          idempotent: false\n          run: |\n            echo charge >> \"$OUT/charge\"\n            if [ \"$(wc -l < \"$OUT/charge\")\" -lt 2 ]; then echo $$ > \"$OUT/pid\"; exec sleep 120; fi\n        - id: after\n          run: echo after >> \"$OUT/after\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/pay.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger_with(&d, "pay", "{}");
    wait_for("the charge step to start", RUN_LIMIT, || {
        has_line(&out.join("pid"))
    });
    d.kill9();
    kill_pid_file(&out.join("pid"));
    d.boot();
    let run = d.wait_run(&id, RUN_LIMIT, |s| s == "interrupted");
    assert_eq!(run["status"], "interrupted");
    assert_eq!(lines(&out.join("charge")).len(), 1, "re-run blindly");
    let (code, body) = d.post(&format!("/api/v1/runs/{id}/retry"), "{}");
    assert_eq!(code, 202, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let again = match &v["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let run = d.wait_run_final(&again, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(lines(&out.join("charge")).len(), 2);
    assert_eq!(lines(&out.join("after")).len(), 1);
}

#[test]
fn two_hundred_runs_with_four_at_a_time_each_end_exactly_once() {
    const RUNS: usize = 200;
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("active")).expect("out dir");
    // Each run marks itself active, counts the active runs, and logs its id.
    let wf = format!(
        "workflow:\n  name: many\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: work\n          run: |\n            touch \"$OUT/active/$AGENT_RUN_ID\"\n            ls \"$OUT/active\" | wc -l >> \"$OUT/counts\"\n            rm \"$OUT/active/$AGENT_RUN_ID\"\n            echo \"$AGENT_RUN_ID\" >> \"$OUT/ran\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/many.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}limits:\n  max_concurrent_runs: 4\n",
        repo_config("app", &repo)
    );
    let d = TestDaemon::start(&root, &config);
    // Trigger from 8 threads at once.
    let addr = d.addr;
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    (0..RUNS / 8)
                        .map(|_| {
                            let (code, body) = common::daemon::http_request(
                                addr,
                                "POST",
                                "/api/v1/workflows/many/runs",
                                Some(common::daemon::TEST_TOKEN),
                                Some("{}"),
                            )
                            .expect("trigger");
                            assert_eq!(code, 202, "{body}");
                            let v: Value = serde_json::from_str(&body).expect("JSON");
                            match &v["run_id"] {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("trigger thread"))
            .collect()
    });
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), RUNS, "run ids are not unique");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let runs = d.get_json("/api/v1/runs?limit=1000");
        let list = runs["runs"].as_array().expect("runs");
        let done = list.iter().filter(|r| r["status"] == "succeeded").count();
        let failed: Vec<&Value> = list
            .iter()
            .filter(|r| matches!(r["status"].as_str(), Some("failed" | "cancelled")))
            .collect();
        assert!(failed.is_empty(), "failed runs: {failed:#?}");
        if done == RUNS {
            assert_eq!(list.len(), RUNS);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {RUNS} runs succeeded\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ran = lines(&out.join("ran"));
    assert_eq!(ran.len(), RUNS, "some run's step ran twice or never");
    let distinct: HashSet<&String> = ran.iter().collect();
    assert_eq!(distinct.len(), RUNS);
    let max = lines(&out.join("counts"))
        .iter()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    assert!(max <= 4, "{max} runs were active at once");
}

#[test]
fn sigterm_lets_running_steps_finish_and_exits_zero() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: slow\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: wait\n          run: |\n            touch \"$OUT/started\"\n            sleep 1\n            touch \"$OUT/finished\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/slow.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(
        &root,
        &format!(
            "{}limits:\n  shutdown_grace: 20s\n",
            repo_config("app", &repo)
        ),
    );
    let id = trigger_with(&d, "slow", "{}");
    wait_for("the step to start", RUN_LIMIT, || {
        out.join("started").exists()
    });
    let status = d.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(out.join("finished").exists(), "the running step was cut");
    // The run ended cleanly before the exit.
    d.boot();
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let status = d.signal_and_wait(libc::SIGINT, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_bad_workflow_file_fails_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[("README", "x\n")]);
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    commit_files(
        &repo,
        &[
            (
                ".workflows/good.yaml",
                "workflow:\n  name: good\n  on:\n    push: {branches: [main]}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo ok\n",
            ),
            (
                ".workflows/bad.yaml",
                "workflow:\n  name: bad\n  stages:\n    - name: s\n      steps:\n        - id: a\n          paralel: true\n          run: echo no\n",
            ),
        ],
        "add workflows",
    );
    let deadline = Instant::now() + RUN_LIMIT;
    let (good, bad) = loop {
        let runs = d.get_json("/api/v1/runs?limit=100");
        let list = runs["runs"].as_array().expect("runs").clone();
        let find = |name: &str| {
            list.iter()
                .find(|r| r["workflow"] == name)
                .filter(|r| {
                    matches!(
                        r["status"].as_str(),
                        Some("succeeded" | "failed" | "cancelled")
                    )
                })
                .cloned()
        };
        if let (Some(g), Some(b)) = (find("good"), find("bad")) {
            break (g, b);
        }
        assert!(
            Instant::now() < deadline,
            "runs: {list:#?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(good["status"], "succeeded", "{good:#}");
    assert_eq!(bad["status"], "failed", "{bad:#}");
    let bad_id = match &bad["run_id"] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let detail = d.get_json(&format!("/api/v1/runs/{bad_id}"));
    assert!(
        detail["error"]
            .as_str()
            .unwrap_or_default()
            .contains("paralel"),
        "{detail:#}"
    );
    // The daemon is still healthy.
    assert_eq!(d.get("/health").0, 200);
}

#[test]
fn validate_checks_the_config_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("agent.yaml");
    std::fs::write(
        &bad,
        "listen: 127.0.0.1:8420\nrepoz: []\nlimits:\n  max_concurrent_runs: zero\n",
    )
    .expect("write");
    let out = common::run_with_deadline(
        common::agent(&["validate", "--config", &bad.to_string_lossy()]),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.yaml:2:1: error: unknown key `repoz`, did you mean `repos`?"),
        "{stderr}"
    );
    assert!(stderr.contains("agent.yaml:4:24: error:"), "{stderr}");
    let example = common::workspace_root().join("examples/agent.yaml");
    let out = common::run_with_deadline(
        common::agent(&["validate", "--config", &example.to_string_lossy()]),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn step_logs_are_capped_and_failed_workspaces_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let wf = "workflow:\n  name: loud\n  stages:\n    - name: s\n      steps:\n        - id: flood\n          run: |\n            for i in $(seq 1 200); do echo \"line $i of a long log\"; done\n            exit 3\n";
    init_repo(&repo, &[(".workflows/loud.yaml", wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}keep_failed_workspaces: true\nlimits:\n  max_log_bytes: 300\n",
        repo_config("app", &repo)
    );
    let d = TestDaemon::start(&root, &config);
    let id = trigger_with(&d, "loud", "{}");
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "failed", "{run:#}");
    let step = &run["stages"][0]["steps"][0];
    assert_eq!(step["exit_code"], 3, "{run:#}");
    let log = std::fs::read_to_string(d.state_dir.join("logs").join(&id).join("flood.log"))
        .expect("log file");
    // The head and the tail (where the error is), and how much was dropped between them.
    assert!(log.starts_with("line 1 of a long log\n"), "{log}");
    assert!(log.ends_with("line 200 of a long log\n"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("[... ") && l.ends_with(" bytes dropped ...]")),
        "{log}"
    );
    assert!(log.len() < 300 + 80, "{} bytes", log.len());
    let ws = d.state_dir.join("workspaces").join(&id);
    assert!(
        ws.join(".workflows/loud.yaml").exists(),
        "failed workspace not kept"
    );
}

#[test]
fn retention_deletes_the_oldest_finished_runs_and_their_logs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let wf = "workflow:\n  name: small\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo hi\n";
    init_repo(&repo, &[(".workflows/small.yaml", wf)]);
    let root = tmp.path().join("daemon");
    let config = format!("{}retention:\n  max_runs: 2\n", repo_config("app", &repo));
    let mut d = TestDaemon::start(&root, &config);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = trigger_with(&d, "small", "{}");
        assert_eq!(d.wait_run_final(&id, RUN_LIMIT)["status"], "succeeded");
        ids.push(id);
    }
    assert!(d.state_dir.join("logs").join(&ids[0]).exists());
    // Retention runs at start (and hourly).
    d.kill9();
    d.boot();
    let runs = d.get_json("/api/v1/runs?limit=100");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(2), "{runs:#}");
    assert_eq!(d.get(&format!("/api/v1/runs/{}", ids[0])).0, 404);
    assert!(!d.state_dir.join("logs").join(&ids[0]).exists());
    assert!(d.state_dir.join("logs").join(&ids[2]).exists());
}

#[test]
fn with_no_config_the_daemon_watches_the_repository_it_starts_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    // The state dir is inside the repository: a step's `git` must find the workspace's own
    // `.git` (at the run's commit), not the repository around the state dir.
    let wf = "workflow:\n  name: here\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            test \"$(git rev-parse --show-toplevel)\" = \"$(cd \"$AGENT_WORKSPACE\" && pwd -P)\"\n            test \"$(git rev-parse HEAD)\" = \"$AGENT_SHA\"\n            echo here\n";
    init_repo(&repo, &[(".workflows/here.yaml", wf)]);
    let log = std::fs::File::create(tmp.path().join("daemon.log")).expect("log");
    let mut child = common::agent(&["daemon"])
        .current_dir(&repo)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn agent daemon");
    let addr_file = repo.join(".agent").join("daemon.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap_or_default();
            if log.contains("cannot listen on 127.0.0.1:8420") {
                eprintln!("port 8420 is taken on this machine: skipping");
                return;
            }
            panic!("daemon exited with {status}: {log}");
        }
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && let Ok(addr) = text.trim().parse::<std::net::SocketAddr>()
        {
            break addr;
        }
        assert!(Instant::now() < deadline, "no address file");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(addr.to_string(), "127.0.0.1:8420");
    let health = common::daemon::http_request(addr, "GET", "/health", None, None).expect("health");
    assert_eq!(health.0, 200);
    // The token was generated into the state dir; a manual run of the repository works.
    let token = std::fs::read_to_string(repo.join(".agent").join("api_token"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    assert!(!token.is_empty(), "no generated API token");
    {
        let (code, body) = common::daemon::http_request(
            addr,
            "POST",
            "/api/v1/workflows/here/runs",
            Some(&token),
            Some("{}"),
        )
        .expect("trigger");
        assert_eq!(code, 202, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let id = match &v["run_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        wait_for("the run to succeed", RUN_LIMIT, || {
            let (_, body) = common::daemon::http_request(
                addr,
                "GET",
                &format!("/api/v1/runs/{id}"),
                Some(&token),
                None,
            )
            .expect("get run");
            body.contains("\"succeeded\"")
        });
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn overlap_rules_apply_to_runs_of_one_group() {
    let (tmp, repo, out) = fixture();
    let workflow = |name: &str, overlap: &str| {
        format!(
            "workflow:\n  name: {name}\n  parameters:\n    - {{name: wait, type: boolean, default: false}}\n  concurrency:\n    group: g-{name}\n    overlap: {overlap}\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            touch \"$OUT/started-$AGENT_RUN_ID\"\n            if [ \"${{{{ parameters.wait }}}}\" = true ]; then sleep 60; fi\n",
            yaml_quote(&out.to_string_lossy())
        )
    };
    init_repo(
        &repo,
        &[
            (
                ".workflows/newest.yaml",
                &workflow("newest", "cancel_previous"),
            ),
            (".workflows/single.yaml", &workflow("single", "skip")),
        ],
    );
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    // cancel_previous: the running run is cancelled, the new one runs.
    let first = trigger_with(&d, "newest", r#"{"parameters":{"wait":true}}"#);
    wait_for("the first run's step", RUN_LIMIT, || {
        out.join(format!("started-{first}")).exists()
    });
    let second = trigger_with(&d, "newest", "{}");
    assert_eq!(d.wait_run_final(&first, RUN_LIMIT)["status"], "cancelled");
    assert_eq!(d.wait_run_final(&second, RUN_LIMIT)["status"], "succeeded");
    // skip: while one runs, a new run is refused; cancel works on the running one.
    let busy = trigger_with(&d, "single", r#"{"parameters":{"wait":true}}"#);
    wait_for("the busy run's step", RUN_LIMIT, || {
        out.join(format!("started-{busy}")).exists()
    });
    let (code, body) = d.post("/api/v1/workflows/single/runs", "{}");
    assert_eq!(code, 409, "{body}");
    let (code, body) = d.post(&format!("/api/v1/runs/{busy}/cancel"), "{}");
    assert_eq!(code, 202, "{body}");
    assert_eq!(d.wait_run_final(&busy, RUN_LIMIT)["status"], "cancelled");
    let after = trigger_with(&d, "single", "{}");
    assert_eq!(d.wait_run_final(&after, RUN_LIMIT)["status"], "succeeded");
}

#[test]
fn a_push_cancels_the_previous_run_of_its_group() {
    let (tmp, repo, out) = fixture();
    init_repo(&repo, &[("README", "x\n")]);
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    let wf = format!(
        "workflow:\n  name: deploy\n  on:\n    push: {{branches: [main]}}\n  concurrency:\n    group: deploy\n    overlap: cancel_previous\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: |\n            touch \"$OUT/started-$AGENT_RUN_ID\"\n            if [ \"$(cat wait)\" = yes ]; then sleep 60; fi\n",
        yaml_quote(&out.to_string_lossy())
    );
    commit_files(
        &repo,
        &[(".workflows/deploy.yaml", &wf), ("wait", "yes\n")],
        "one",
    );
    let runs_of = |d: &TestDaemon| -> Vec<Value> {
        let mut v = d.get_json("/api/v1/runs?workflow=deploy&limit=10")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        v.reverse();
        v
    };
    let id_of = |r: &Value| match &r["run_id"] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    wait_for("the first push run's step", RUN_LIMIT, || {
        runs_of(&d)
            .first()
            .is_some_and(|r| out.join(format!("started-{}", id_of(r))).exists())
    });
    commit_files(&repo, &[("wait", "no\n")], "two");
    wait_for("a second push run", RUN_LIMIT, || runs_of(&d).len() == 2);
    let runs = runs_of(&d);
    let first = d.wait_run_final(&id_of(&runs[0]), RUN_LIMIT);
    let second = d.wait_run_final(&id_of(&runs[1]), RUN_LIMIT);
    assert_eq!(first["status"], "cancelled", "{first:#}");
    assert_eq!(second["status"], "succeeded", "{second:#}");
}

/// Starts a daemon (`shutdown_grace: grace`) on workflow `long`, whose step `long` sleeps
/// 60 s the first time it runs but not the second (after a step `first` when `with_first`);
/// triggers it and returns once the long step is in.
fn start_long(
    tmp: &Path,
    repo: &Path,
    out: &Path,
    grace: &str,
    with_first: bool,
) -> (TestDaemon, String) {
    let first = if with_first {
        "        - id: first\n          run: echo first >> \"$OUT/first\"\n"
    } else {
        ""
    };
    let wf = format!(
        "workflow:\n  name: long\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n{first}        - id: long\n          run: |\n            echo long >> \"$OUT/long\"\n            if [ \"$(wc -l < \"$OUT/long\")\" -lt 2 ]; then sleep 600; fi\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(repo, &[(".workflows/long.yaml", &wf)]);
    let d = TestDaemon::start(
        &tmp.join("daemon"),
        &format!(
            "{}limits:\n  shutdown_grace: {grace}\n",
            repo_config("app", repo)
        ),
    );
    let id = trigger_with(&d, "long", "{}");
    wait_for("the long step", RUN_LIMIT, || has_line(&out.join("long")));
    (d, id)
}

#[test]
fn sigterm_past_the_grace_period_cancels_and_the_next_start_resumes() {
    let (tmp, repo, out) = fixture();
    let (mut d, id) = start_long(tmp.path(), &repo, &out, "500ms", true);
    // The step sleeps 600 s: the daemon exiting at all (within the wait's deadline, a tenth
    // of that) shows that shutdown did not wait for the step.
    let status = d.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    d.boot();
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", d.log_text());
    assert_eq!(lines(&out.join("first")).len(), 1);
    assert_eq!(lines(&out.join("long")).len(), 2);
}

#[test]
fn a_second_sigterm_ends_the_grace_period() {
    let (tmp, repo, out) = fixture();
    let (mut d, id) = start_long(tmp.path(), &repo, &out, "5m", false);
    let pid = i32::try_from(d.pid().expect("running")).expect("pid");
    // SAFETY: kill(2) on the PID of the daemon this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_for("the shutdown to begin", RUN_LIMIT, || {
        d.log_text().contains("waiting for running runs")
    });
    // The grace period is 5 minutes and the step sleeps 600 s: the daemon exiting at all
    // (within the wait's deadline, far shorter) shows that the second SIGTERM ended it.
    let status = d.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    d.boot();
    let run = d.wait_run_final(&id, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
}

#[test]
fn retry_of_a_failed_run_starts_at_its_failed_step() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: flaky\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: build\n          run: |\n            echo build >> \"$OUT/build\"\n            echo artifact=a1 >> \"$AGENT_OUTPUT\"\n        - id: test\n          run: |\n            echo \"${{{{ steps.build.output.artifact }}}}\" >> \"$OUT/test\"\n            [ \"$(wc -l < \"$OUT/test\")\" -ge 2 ]\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/flaky.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let d = TestDaemon::start(&root, &repo_config("app", &repo));
    let id = trigger_with(&d, "flaky", "{}");
    assert_eq!(d.wait_run_final(&id, RUN_LIMIT)["status"], "failed");
    let (code, body) = d.post(&format!("/api/v1/runs/{id}/retry"), "{}");
    assert_eq!(code, 202, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let again = match &v["run_id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert_ne!(again, id);
    let run = d.wait_run_final(&again, RUN_LIMIT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["trigger"]["kind"], "retry", "{run:#}");
    assert_eq!(
        lines(&out.join("build")).len(),
        1,
        "the passed step ran again"
    );
    assert_eq!(lines(&out.join("test")), ["a1", "a1"]);
}

/// What a user reads for a broken config file (snapshot).
#[test]
fn config_diagnostics_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("agent.yaml"),
        "listen: localhost\nrepos:\n  - name: app\n    url: git://127.0.0.1/app\n    path: /srv/app\n    branchs: [main]\n  - path: /srv/other\nsecrets:\n  TOKEN: {env: 'NOT A NAME'}\nwebhooks:\n  - url: http://127.0.0.1:9/hook\n    format: discrod\nlimits:\n  max_concurrent_runs: -1\n  shutdown_grace: soon\nkeep_failed_workspaces: maybe\n",
    )
    .expect("write config");
    let mut cmd = common::agent(&["validate", "--config", "agent.yaml"]);
    cmd.current_dir(tmp.path());
    let out = common::run_with_deadline(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_preserved_context_carries_over_to_the_next_run() {
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: counter\n  context:\n    preserve: true\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: count\n          run: |\n            n=\"${{{{ context.count if context.count else 0 }}}}\"\n            echo \"$n\" >> \"$OUT/seen\"\n            echo \"{{\\\"count\\\": $((n + 1))}}\" > \"$AGENT_CONTEXT\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/counter.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(&root, &repo_config("app", &repo));
    for _ in 0..2 {
        let id = trigger_with(&d, "counter", "{}");
        let run = d.wait_run_final(&id, RUN_LIMIT);
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    // Also across a restart.
    d.kill9();
    d.boot();
    let id = trigger_with(&d, "counter", "{}");
    assert_eq!(d.wait_run_final(&id, RUN_LIMIT)["status"], "succeeded");
    assert_eq!(lines(&out.join("seen")), ["0", "1", "2"]);
}

#[test]
fn kill_9_in_the_middle_of_many_runs_loses_none() {
    const RUNS: usize = 60;
    let (tmp, repo, out) = fixture();
    let wf = format!(
        "workflow:\n  name: many\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo \"$AGENT_RUN_ID\" >> \"$OUT/a\"\n        - id: b\n          run: |\n            sleep 0.05\n            echo \"$AGENT_RUN_ID\" >> \"$OUT/b\"\n",
        yaml_quote(&out.to_string_lossy())
    );
    init_repo(&repo, &[(".workflows/many.yaml", &wf)]);
    let root = tmp.path().join("daemon");
    let config = format!(
        "{}limits:\n  max_concurrent_runs: 4\n",
        repo_config("app", &repo)
    );
    let mut d = TestDaemon::start(&root, &config);
    let ids: Vec<String> = (0..RUNS).map(|_| trigger_with(&d, "many", "{}")).collect();
    wait_for("some runs to finish", RUN_LIMIT, || {
        lines(&out.join("b")).len() >= RUNS / 4
    });
    d.kill9();
    d.boot();
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        let run = d.wait_run_final(id, left);
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let runs = d.get_json("/api/v1/runs?limit=1000");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(RUNS));
    // Every run's steps ran; only the few running at the crash may have run a step twice.
    for step in ["a", "b"] {
        let seen = lines(&out.join(step));
        let distinct: HashSet<&String> = seen.iter().collect();
        assert_eq!(distinct.len(), RUNS, "step {step}");
        assert!(
            seen.len() <= RUNS + 4,
            "step {step} ran {} times",
            seen.len()
        );
    }
}

/// Starts `agent daemon ARGS` in `cwd`, logging to `log`; returns the child and the address
/// it wrote to `state/daemon.addr`.
fn spawn_daemon(
    cwd: &Path,
    args: &[&str],
    state: &Path,
    log: &Path,
) -> (std::process::Child, std::net::SocketAddr) {
    let file = std::fs::File::create(log).expect("log");
    let mut child = common::agent(args)
        .current_dir(cwd)
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn agent daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "daemon exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(text) = std::fs::read_to_string(state.join("daemon.addr"))
            && let Ok(addr) = text.trim().parse::<std::net::SocketAddr>()
            && common::daemon::http_request(addr, "GET", "/health", None, None).is_ok()
        {
            break addr;
        }
        assert!(Instant::now() < deadline, "no address file");
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, addr)
}

/// Stops a daemon this test started (SIGTERM by its PID) and waits for it.
fn stop_daemon(mut child: std::process::Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A config that sets only `listen:` silently watched nothing. Without a `repos` key the
/// daemon watches the repository it is started in (as without a config); `--listen`
/// overrides the file; with no repository at all it says that nothing will run.
#[test]
fn a_config_without_repos_watches_the_repository_it_starts_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let wf = "workflow:\n  name: here\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: echo here\n";
    init_repo(&repo, &[(".workflows/here.yaml", wf)]);
    let state = tmp.path().join("state");
    let config = tmp.path().join("only-listen.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nlisten: 127.0.0.1:1\napi_token: t\n",
            yaml_quote(&state.to_string_lossy())
        ),
    )
    .expect("write config");
    let config_arg = config.to_string_lossy().into_owned();
    let log = tmp.path().join("daemon.log");
    let (child, addr) = spawn_daemon(
        &repo,
        &["daemon", "--config", &config_arg, "--listen", "127.0.0.1:0"],
        &state,
        &log,
    );
    assert_ne!(addr.port(), 1, "--listen did not override the file");
    let listed = common::poll(RUN_LIMIT, || {
        let (code, body) =
            common::daemon::http_request(addr, "GET", "/api/v1/workflows", Some("t"), None).ok()?;
        (code == 200 && body.contains("\"here\"")).then_some(body)
    });
    assert!(
        listed.is_some(),
        "the repository it started in is not watched\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    stop_daemon(child);

    // `repos: []` outside any repository: nothing is watched, and the log says so.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let state2 = tmp.path().join("state2");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nlisten: 127.0.0.1:0\napi_token: t\nrepos: []\n",
            yaml_quote(&state2.to_string_lossy())
        ),
    )
    .expect("write config");
    let (child, _) = spawn_daemon(
        &elsewhere,
        &["daemon", "--config", &config_arg],
        &state2,
        &log,
    );
    stop_daemon(child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("no repository configured: nothing will run"),
        "{text}"
    );
}
