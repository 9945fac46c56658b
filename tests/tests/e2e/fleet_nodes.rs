//! End-to-end tests of the fleet's node list on the embedded store: `agent nodes` and
//! `GET /api/v1/nodes` against real `agent daemon` processes (a daemon's heartbeat row, a
//! killed daemon shown lost once its lease lapsed, a clean stop taking the row away), and
//! the `store`/`node`/`limits.lease` config errors reported at their keys.

use crate::common;

use std::time::Duration;

use common::daemon::{TEST_TOKEN, TestDaemon, fixture, wait_for};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// `agent nodes` with the daemon's address and token.
fn agent_nodes(d: &TestDaemon, json: bool) -> std::process::Output {
    let mut cmd = common::agent(&["nodes", "--server", &d.url()]);
    if json {
        cmd.arg("--json");
    }
    cmd.env("AGENT_TOKEN", TEST_TOKEN);
    common::run_with_deadline(cmd, LIMIT)
}

fn nodes(d: &TestDaemon) -> Vec<Value> {
    d.get_json("/api/v1/nodes")["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn node<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|n| n["name"] == name)
}

/// A daemon lists itself under its configured `node` name with its capacity, no runs, a
/// fresh RFC 3339 heartbeat and `lost: false`, in the API, in `agent nodes --json` and in
/// the `agent nodes` table. Killed with SIGKILL, its row stays and is shown lost once its
/// lease lapsed (seen from a daemon restarted under another name on the same state
/// directory); a clean stop removes the node's row.
#[test]
fn agent_nodes_lists_live_lost_and_stopped_nodes() {
    let (tmp, _repo, _) = fixture();
    let root = tmp.path().join("daemon");
    let mut d = TestDaemon::start(
        &root,
        "node: ci-one\nlimits: {heartbeat: 200ms, lease: 2s, max_concurrent_runs: 3}\n",
    );
    wait_for("the node's first heartbeat", LIMIT, || {
        node(&nodes(&d), "ci-one").is_some()
    });
    let list = nodes(&d);
    let me = node(&list, "ci-one").expect("listed");
    assert_eq!(me["capacity"], 3, "{me}");
    assert_eq!(me["runs"], 0, "{me}");
    assert_eq!(me["lost"], false, "{me}");
    let beat = me["last_heartbeat"].as_str().expect("a time");
    assert!(beat.ends_with('Z') && beat.contains('T'), "{beat}");
    let keys: Vec<&str> = me
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["name", "last_heartbeat", "runs", "capacity", "lost"]);

    let out = agent_nodes(&d, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        json["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["name"] == "ci-one"))
    );
    let out = agent_nodes(&d, false);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NODE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("ci-one"))
        .expect("a row");
    assert!(row.contains(" up ") && row.contains("0/3"), "{table}");

    // Killed: the row stays; the next daemon (another name) sees it lost after the lease.
    d.kill9();
    std::fs::write(
        &d.config,
        std::fs::read_to_string(&d.config)
            .expect("config")
            .replace("node: ci-one", "node: ci-two"),
    )
    .expect("rename the node");
    d.boot();
    wait_for("the killed node to be lost", LIMIT, || {
        let list = nodes(&d);
        node(&list, "ci-one").is_some_and(|n| n["lost"] == true)
            && node(&list, "ci-two").is_some_and(|n| n["lost"] == false)
    });
    let table = String::from_utf8_lossy(&agent_nodes(&d, false).stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.starts_with("ci-one"))
        .expect("a row");
    assert!(row.contains(" lost "), "{table}");

    // A clean stop removes the row.
    let status = d.signal_and_wait(libc::SIGTERM, LIMIT);
    assert!(status.success(), "{status}");
    let db = rusqlite::Connection::open(d.state_dir.join("agent.sqlite3")).expect("open db");
    let names: Vec<String> = db
        .prepare("SELECT name FROM nodes ORDER BY name")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("names");
    assert_eq!(names, ["ci-one"]);
}

/// A `store` of an unknown kind, a PostgreSQL store whose URL variable is not set, and a
/// lease not longer than the heartbeat are config errors at their key (exit 2); the
/// database URL never appears in the daemon's output.
#[test]
fn store_and_lease_mistakes_are_config_errors_at_their_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "store: {kind: mysql}\n",
            "agent.yaml:1:15: error: unknown store kind `mysql`",
        ),
        (
            "store:\n  kind: postgres\n  url_env: AGENT_E2E_NO_SUCH_VAR\n",
            "agent.yaml:3:12: error: environment variable `AGENT_E2E_NO_SUCH_VAR` (the database URL) is not set",
        ),
        (
            "store:\n  kind: postgres\n  url_env: AGENT_E2E_EMPTY_URL\n",
            "environment variable `AGENT_E2E_EMPTY_URL` (the database URL) is empty",
        ),
        (
            "limits:\n  heartbeat: 3s\n  lease: 2s\n",
            "agent.yaml:3:10: error: `lease` (2s) must be longer than `heartbeat` (3s)",
        ),
    ];
    for (text, expected) in cases {
        let config = tmp.path().join("agent.yaml");
        std::fs::write(&config, text).expect("write config");
        let mut cmd = common::agent(&["daemon", "--config", &config.to_string_lossy()]);
        cmd.current_dir(tmp.path())
            .env("AGENT_E2E_EMPTY_URL", "")
            .env(
                "AGENT_E2E_PG_SECRET",
                "postgres://u:pw-e2e-xyzzy@127.0.0.1:1/db",
            );
        let out = common::run_with_deadline(cmd, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!stderr.contains("xyzzy"), "{stderr}");
    }
}

/// A workflow whose one step notes its pid, then waits for `OUT/go`.
fn waiting_workflow(out: &std::path::Path) -> String {
    format!(
        "workflow:\n  name: wait\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: wait\n          run: |\n            echo $$ >> \"$OUT/pids\"\n            while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n            echo done >> \"$OUT/done\"\n",
        common::daemon::yaml_quote(&out.to_string_lossy())
    )
}

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

/// A cancel recorded in the database by another node (`request_cancel`, what any node's
/// API does for a run it does not hold) reaches the daemon holding the run at its next
/// heartbeat: the run ends `cancelled` and its step is stopped.
#[test]
fn a_cancel_recorded_by_another_node_reaches_the_holder_at_its_heartbeat() {
    let (tmp, repo, out) = fixture();
    common::daemon::init_repo(&repo, &[(".workflows/wait.yaml", &waiting_workflow(&out))]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &format!(
            "node: holder\nlimits: {{heartbeat: 200ms, lease: 5s}}\n{}",
            common::daemon::repo_config("app", &repo)
        ),
    );
    let id = common::daemon::trigger(&d, "wait");
    wait_for("the step to start", LIMIT, || {
        common::daemon::count_lines(&out.join("pids")) == 1
    });
    let mut db = agent::store::Db::open_in_dir(&d.state_dir).expect("open the store");
    let run = agent::store::RunId(id.parse().expect("numeric id"));
    assert_eq!(
        db.get_run(run)
            .expect("read")
            .and_then(|r| r.claim_owner)
            .as_deref(),
        Some("holder")
    );
    assert!(db.request_cancel(run).expect("request the cancel"));
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(common::daemon::count_lines(&out.join("done")), 0);
}

/// A run another node took back (its claim now names that node: this node's lease lapsed
/// while it was cut off) is stopped here at the next heartbeat, without writing anything
/// more: its step's process ends, the run stays `running` under the other node's claim,
/// and the step never finishes here.
#[test]
fn a_run_taken_by_another_node_is_stopped_here_without_writing_its_end() {
    let (tmp, repo, out) = fixture();
    common::daemon::init_repo(&repo, &[(".workflows/wait.yaml", &waiting_workflow(&out))]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &format!(
            "node: here\nlimits: {{heartbeat: 200ms, lease: 5s}}\n{}",
            common::daemon::repo_config("app", &repo)
        ),
    );
    let id = common::daemon::trigger(&d, "wait");
    wait_for("the step to start", LIMIT, || {
        common::daemon::count_lines(&out.join("pids")) == 1
    });
    let pid: i32 = common::daemon::lines(&out.join("pids"))[0]
        .parse()
        .expect("pid");
    // What another node's reclaim and claim leave: the run is its own, with a fresh lease.
    let db = rusqlite::Connection::open(d.state_dir.join("agent.sqlite3")).expect("open db");
    db.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    let far = 4_102_444_800_000i64; // 2100-01-01
    let changed = db
        .execute(
            "UPDATE runs SET claim_owner = 'elsewhere', lease_expires_at = ?1 WHERE id = ?2",
            rusqlite::params![far, id.parse::<i64>().expect("numeric id")],
        )
        .expect("take the run");
    assert_eq!(changed, 1);
    wait_for("the step's process to end", LIMIT, || !alive(pid));
    wait_for("the log line", LIMIT, || {
        d.log_text().contains("another node took the run back")
    });
    let (status, owner): (String, String) = db
        .query_row(
            "SELECT status, claim_owner FROM runs WHERE id = ?1",
            [id.parse::<i64>().expect("numeric id")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the run");
    assert_eq!((status.as_str(), owner.as_str()), ("running", "elsewhere"));
    let step: String = db
        .query_row(
            "SELECT status FROM steps WHERE run_id = ?1 AND step_id = 'wait'",
            [id.parse::<i64>().expect("numeric id")],
            |r| r.get(0),
        )
        .expect("the step");
    assert_eq!(step, "running", "nothing more written here");
    assert_eq!(common::daemon::count_lines(&out.join("done")), 0);
}

/// A running run whose node stopped renewing its lease (killed, cut off) is taken back by a
/// live node at one of its heartbeats and resumed by the recovery rules: here a run claimed
/// by a dead node with a lapsed lease, while the live node (one run at a time) is busy, is
/// interrupted, queued again, and runs to `succeeded` once the node has room.
#[test]
fn a_live_node_takes_back_and_resumes_the_runs_of_a_node_whose_lease_lapsed() {
    let (tmp, repo, out) = fixture();
    common::daemon::init_repo(&repo, &[(".workflows/wait.yaml", &waiting_workflow(&out))]);
    let d = TestDaemon::start(
        &tmp.path().join("daemon"),
        &format!(
            "node: alive\nlimits: {{heartbeat: 200ms, lease: 5s, max_concurrent_runs: 1}}\n{}",
            common::daemon::repo_config("app", &repo)
        ),
    );
    // The node is full: it claims nothing else meanwhile.
    let busy = common::daemon::trigger(&d, "wait");
    wait_for("the step to start", LIMIT, || {
        common::daemon::count_lines(&out.join("pids")) == 1
    });
    let mut db = agent::store::Db::open_in_dir(&d.state_dir).expect("open the store");
    let mut orphan = agent::store::NewRun::new(
        "wait",
        agent::store::Trigger::new(agent::store::TriggerKind::Manual),
    );
    orphan.repo = Some("app".into());
    let orphan = db.enqueue_run(&orphan).expect("enqueue").run_id();
    let claimed = db
        .claim("dead-node", 1, Duration::from_millis(1))
        .expect("claim as the dead node");
    assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [orphan]);
    db.mark_running(orphan).expect("running on the dead node");
    wait_for("the live node to take the run back", LIMIT, || {
        d.log_text()
            .contains("took back a run whose node stopped renewing its lease")
    });
    std::fs::write(out.join("go"), "").expect("let the steps end");
    let run = d.wait_run_final(&busy, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run}");
    let run = d.wait_run_final(&orphan.to_string(), LIMIT);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", d.log_text());
    assert_eq!(common::daemon::count_lines(&out.join("pids")), 2);
}

/// A PostgreSQL URL the daemon cannot use (here a port that is not a number) fails the
/// start at once (exit 1) with the reason, never the URL (it may carry a password).
#[test]
fn an_unusable_database_url_fails_the_start_without_showing_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:0\nstore: {kind: postgres, url_env: AGENT_E2E_BAD_URL}\n",
    )
    .expect("write config");
    let mut cmd = common::agent(&["daemon", "--config", &config.to_string_lossy()]);
    cmd.current_dir(tmp.path()).env(
        "AGENT_E2E_BAD_URL",
        "postgres://u:pw-xyzzy@127.0.0.1:notaport/db",
    );
    let out = common::run_with_deadline(cmd, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("xyzzy"), "{stderr}");
}
