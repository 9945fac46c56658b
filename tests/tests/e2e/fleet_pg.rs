//! End-to-end tests of a fleet: real `agent daemon` processes sharing one PostgreSQL
//! database (a throwaway server the test process starts, see `agent::store::test_pg`).
//! What they guard: both nodes list each other; a cancel asked of one node reaches the node
//! that holds the run (at its next heartbeat); a node whose database goes away answers
//! `/health` 503, keeps its running step going, and writes the run's end once the database
//! is back.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{
    TestDaemon, count_lines, fixture, http_request, init_repo, repo_config, trigger, wait_for,
    yaml_quote,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

/// The variable the daemons read their database URL from.
const URL_ENV: &str = "AGENT_E2E_PG_URL";

/// A daemon config on the PostgreSQL store under `node`, watching `repo`.
fn fleet_config(node: &str, repo: &Path, lease: &str) -> String {
    format!(
        "node: {node}\nstore: {{kind: postgres, url_env: {URL_ENV}, pool: 2}}\nlimits: {{heartbeat: 200ms, lease: {lease}}}\n{}",
        repo_config("app", repo)
    )
}

/// A workflow whose one step notes its start, then waits for `OUT/go`.
fn waiting_workflow(out: &Path) -> String {
    format!(
        "workflow:\n  name: wait\n  env:\n    OUT: {}\n  stages:\n    - name: s\n      steps:\n        - id: wait\n          run: |\n            echo started >> \"$OUT/starts\"\n            while [ ! -e \"$OUT/go\" ]; do sleep 0.05; done\n            echo done >> \"$OUT/done\"\n",
        yaml_quote(&out.to_string_lossy())
    )
}

fn nodes(d: &TestDaemon) -> Vec<Value> {
    d.get_json("/api/v1/nodes")["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Two nodes on one database list each other; a run started on one of them is cancelled
/// through the OTHER node's API: the request is recorded in the database and the holder
/// cancels the run at its next heartbeat (its step stops: `done` is never written).
#[test]
fn a_cancel_asked_of_any_node_reaches_the_node_holding_the_run() {
    let url = agent::store::test_pg::database_url();
    let (tmp, repo, out) = fixture();
    init_repo(&repo, &[(".workflows/wait.yaml", &waiting_workflow(&out))]);
    let env = [(URL_ENV, url.as_str())];
    let one = TestDaemon::start_with_env(
        &tmp.path().join("one"),
        &fleet_config("node-one", &repo, "3s"),
        &env,
    );
    let two = TestDaemon::start_with_env(
        &tmp.path().join("two"),
        &fleet_config("node-two", &repo, "3s"),
        &env,
    );
    wait_for("both nodes in each node's list", LIMIT, || {
        [&one, &two].iter().all(|d| {
            let list = nodes(d);
            ["node-one", "node-two"]
                .iter()
                .all(|n| list.iter().any(|x| x["name"] == *n && x["lost"] == false))
        })
    });
    let id = trigger(&one, "wait");
    wait_for("the step to start", LIMIT, || {
        count_lines(&out.join("starts")) == 1
    });
    let mut holder = String::new();
    wait_for("a node to hold the run", LIMIT, || {
        holder = nodes(&one)
            .iter()
            .find(|n| n["runs"] == 1)
            .and_then(|n| n["name"].as_str().map(str::to_string))
            .unwrap_or_default();
        !holder.is_empty()
    });
    let other = if holder == "node-one" { &two } else { &one };
    let (code, body) = other.post(&format!("/api/v1/runs/{id}/cancel"), "{}");
    assert!(code < 300, "cancel through the other node: {code} {body}");
    let run = other.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(count_lines(&out.join("done")), 0, "the step was stopped");
    wait_for("the holder to hold nothing", LIMIT, || {
        nodes(&one).iter().all(|n| n["runs"] == 0)
    });
}

/// `GET /health` without a token: the status code.
fn health(d: &TestDaemon) -> u16 {
    http_request(d.addr, "GET", "/health", None, None)
        .map(|(code, _)| code)
        .unwrap_or(0)
}

/// The database goes away while a run's step is running: `/health` answers 503
/// `degraded`, the step goes on and ends, and once the server is back the run's end is
/// written: the run ends `succeeded` and `/health` is 200 again.
#[test]
fn a_node_keeps_running_while_the_database_is_down_and_writes_the_end_when_it_is_back() {
    let cluster = agent::store::test_pg::Cluster::start().expect("a private PostgreSQL cluster");
    let url = cluster.url("postgres");
    let (tmp, repo, out) = fixture();
    init_repo(&repo, &[(".workflows/wait.yaml", &waiting_workflow(&out))]);
    let d = TestDaemon::start_with_env(
        &tmp.path().join("one"),
        &fleet_config("solo", &repo, "60s"),
        &[(URL_ENV, url.as_str())],
    );
    let id = trigger(&d, "wait");
    wait_for("the step to start", LIMIT, || {
        count_lines(&out.join("starts")) == 1
    });
    cluster.stop_server();
    wait_for("/health to answer 503", LIMIT, || health(&d) == 503);
    let (_, body) = http_request(d.addr, "GET", "/health", None, None).expect("health");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        !body.to_string().contains(&url),
        "the URL is never shown: {body}"
    );
    std::fs::write(out.join("go"), "").expect("let the step end");
    wait_for("the step to end while the database is down", LIMIT, || {
        count_lines(&out.join("done")) == 1
    });
    cluster.start_server().expect("the server starts again");
    let run = d.wait_run_final(&id, LIMIT);
    assert_eq!(run["status"], "succeeded", "{run}\n{}", d.log_text());
    wait_for("/health to answer 200 again", LIMIT, || health(&d) == 200);
    assert!(!d.log_text().contains(&url), "the URL is never logged");
}
