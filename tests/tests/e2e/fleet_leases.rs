//! The roles a fleet of daemons shares through named leases in the store: only the holder of
//! the `outbox` lease sends webhooks, and a node that takes a lease over does the work at
//! once with the next fencing token. On SQLite another node is played by writing its lease
//! into the daemon's database; on PostgreSQL two real daemons share one database.

use crate::common;
use crate::common::notify;

use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, init_repo, repo_config, trigger};
use notify::Receiver;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

const WORKFLOW: &str = "workflow:\n  name: ok\n  stages:\n    - name: main\n      steps:\n        - id: hello\n          run: echo hello\n";

/// The deliveries of one webhook, from the API.
fn deliveries(d: &TestDaemon, webhook: &str) -> Vec<Value> {
    let v = d.get_json(&format!("/api/v1/deliveries?webhook={webhook}"));
    v["deliveries"].as_array().cloned().unwrap_or_default()
}

/// The daemon's database, opened beside it.
fn open_db(d: &TestDaemon) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(d.state_dir.join("agent.sqlite3")).expect("open db");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

/// A lease's holder and token, if the lease was ever taken.
fn lease(conn: &rusqlite::Connection, name: &str) -> Option<(String, i64)> {
    conn.query_row(
        "SELECT holder, token FROM leases WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// Guards the outbox's fencing: while another node holds the `outbox` lease the daemon sends
/// nothing (its run's end stays pending, unattempted); once that lease expires the daemon
/// takes it over with the next token and sends the delivery once, under its one id.
#[test]
fn only_the_outbox_lease_holder_sends_webhooks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    init_repo(&repo, &[(".workflows/ok.yaml", WORKFLOW)]);
    let receiver = Receiver::start(vec![]);
    let config = format!(
        "{}webhooks:\n  - name: hook\n    url: {}\n    events: [run.succeeded]\n",
        repo_config("app", &repo),
        receiver.url("/"),
    );
    let d = TestDaemon::start(&tmp.path().join("daemon"), &config);
    let db = open_db(&d);
    common::daemon::wait_for("the daemon takes the outbox lease", LIMIT, || {
        lease(&db, "outbox").is_some()
    });
    let (holder, token) = lease(&db, "outbox").expect("lease");
    // Another node takes the lease over (as if the daemon's had expired).
    let far = chrono_like_now_ms() + 3_600_000;
    db.execute(
        "UPDATE leases SET holder = 'other-node', token = token + 1, expires_at = ?1
         WHERE name = 'outbox'",
        [far],
    )
    .expect("steal the lease");

    let id = trigger(&d, "ok");
    assert_eq!(d.wait_run_final(&id, LIMIT)["status"], "succeeded");
    // The daemon notices at its next renewal at the latest; from then on it sends nothing.
    common::daemon::wait_for("the daemon notices it lost the lease", LIMIT, || {
        d.log_text()
            .lines()
            .any(|l| l.contains("lease lost") && l.contains("outbox"))
    });
    let queued = deliveries(&d, "hook");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["status"], "pending", "{queued:?}");
    assert_eq!(queued[0]["attempts"], 0, "{queued:?}");
    assert!(receiver.requests().is_empty(), "sent without the lease");

    // The other node's lease expires: the daemon takes it back and sends, once.
    db.execute("UPDATE leases SET expires_at = 0 WHERE name = 'outbox'", [])
        .expect("expire the lease");
    let deadline = Instant::now() + LIMIT;
    let delivered = loop {
        if let Some(del) = deliveries(&d, "hook").into_iter().next()
            && del["status"] == "delivered"
        {
            break del;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("x-agent-delivery"),
        delivered["id"].as_str()
    );
    assert_eq!(lease(&db, "outbox"), Some((holder, token + 2)));
}

/// The cron slots claimed so far, in Unix milliseconds, oldest first.
fn claimed_slots(conn: &rusqlite::Connection) -> Vec<i64> {
    let mut stmt = conn
        .prepare("SELECT slot FROM cron_fires ORDER BY slot")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Guards cron's lease: while another node holds the `cron` lease the daemon claims no slot;
/// when that lease expires the daemon takes it over and applies the schedule's catch-up rule
/// (`latest`) once from the last slot claimed in the store: of the slots missed meanwhile
/// only the latest fires, and the schedule goes on from there.
#[test]
fn cron_runs_on_the_lease_holder_and_a_new_holder_catches_up_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let tick = "workflow:\n  name: tick\n  on:\n    schedule:\n      - cron: '* * * * * *'\n        catchup: latest\n  stages:\n    - name: main\n      steps:\n        - id: hello\n          run: echo hello\n";
    init_repo(&repo, &[(".workflows/tick.yaml", tick)]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let db = open_db(&d);
    common::daemon::wait_for("the schedule fires", LIMIT, || {
        !claimed_slots(&db).is_empty()
    });
    let far = chrono_like_now_ms() + 3_600_000;
    db.execute(
        "UPDATE leases SET holder = 'other-node', token = token + 1, expires_at = ?1
         WHERE name = 'cron'",
        [far],
    )
    .expect("steal the lease");
    common::daemon::wait_for("the daemon notices it lost the lease", LIMIT, || {
        d.log_text()
            .lines()
            .any(|l| l.contains("lease lost") && l.contains("cron"))
    });
    let before = claimed_slots(&db);
    let last = *before.last().expect("a claimed slot");
    // Let a few slots go by unclaimed.
    common::daemon::wait_for("four slots pass", LIMIT, || {
        chrono_like_now_ms() >= last + 4_000
    });
    assert_eq!(claimed_slots(&db), before, "claimed without the lease");
    let expired_at = chrono_like_now_ms();
    db.execute("UPDATE leases SET expires_at = 0 WHERE name = 'cron'", [])
        .expect("expire the lease");
    common::daemon::wait_for("the schedule fires again", LIMIT, || {
        claimed_slots(&db).len() >= before.len() + 3
    });
    let after: Vec<i64> = claimed_slots(&db)
        .into_iter()
        .filter(|s| *s > last)
        .collect();
    // The slots missed while the other node held the lease (three at least) stay unclaimed,
    // except the latest one, claimed as the daemon took the lease back.
    assert!(
        after.iter().all(|s| *s >= expired_at - 1_000),
        "a missed slot other than the latest fired: last {last}, expired at {expired_at}, {after:?}"
    );
    let mut unique = after.clone();
    unique.dedup();
    assert_eq!(unique, after);
}

/// Guards repository polling's lease: while another node holds `poll:app` the daemon still
/// fetches a new commit (its cron reads the workflows from its own mirror) but queues no run
/// for it; once that lease expires the daemon takes it over, looks at once and queues the
/// commit's run, once.
#[test]
fn only_the_poll_lease_holder_queues_a_repositorys_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let on_push = "workflow:\n  name: built\n  on:\n    push: {}\n  stages:\n    - name: main\n      steps:\n        - id: hello\n          run: echo hello\n";
    init_repo(&repo, &[(".workflows/built.yaml", on_push)]);
    let d = TestDaemon::start(&tmp.path().join("daemon"), &repo_config("app", &repo));
    let db = open_db(&d);
    common::daemon::wait_for("the daemon takes the poll lease", LIMIT, || {
        lease(&db, "poll:app").is_some()
    });
    let far = chrono_like_now_ms() + 3_600_000;
    db.execute(
        "UPDATE leases SET holder = 'other-node', token = token + 1, expires_at = ?1
         WHERE name = 'poll:app'",
        [far],
    )
    .expect("steal the lease");
    common::daemon::wait_for("the daemon notices it lost the lease", LIMIT, || {
        d.log_text()
            .lines()
            .any(|l| l.contains("lease lost") && l.contains("poll:app"))
    });
    let commit = common::daemon::commit_files(&repo, &[("src/a.txt", "a")], "change");
    // Fetched and published (cron re-reads the default branch's workflows at it)...
    common::daemon::wait_for("the daemon fetches the commit", LIMIT, || {
        d.log_text()
            .lines()
            .any(|l| l.contains("schedules loaded") && l.contains(&commit))
    });
    // ...but not scanned: no run.
    let runs = |d: &TestDaemon| -> Vec<Value> {
        d.get_json("/api/v1/runs?workflow=built")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        runs(&d).is_empty(),
        "queued without the lease: {:?}",
        runs(&d)
    );
    db.execute(
        "UPDATE leases SET expires_at = 0 WHERE name = 'poll:app'",
        [],
    )
    .expect("expire the lease");
    common::daemon::wait_for("the daemon queues the commit's run", LIMIT, || {
        !runs(&d).is_empty()
    });
    let all = runs(&d);
    assert_eq!(all.len(), 1, "{all:?}");
    let id = common::daemon::run_id(&all[0]);
    let run = d.get_json(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["trigger"]["commit"], commit.as_str(), "{run}");
}

/// Now, in Unix milliseconds.
fn chrono_like_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Two daemons on one PostgreSQL database: a schedule firing every second fires each slot
/// once across both (one evaluates, holding the `cron` lease); a webhook gets each run's end
/// once, from the `outbox` lease's holder, under one delivery id; when the holder is killed
/// the other takes both roles over and the schedule keeps firing.
#[test]
fn two_daemons_on_postgres_share_cron_and_the_outbox() {
    let url = agent::store::test_pg::database_url();
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let cron = "workflow:\n  name: tick\n  on:\n    schedule:\n      - cron: \"* * * * * *\"\n        catchup: skip\n  stages:\n    - name: main\n      steps:\n        - id: hello\n          run: echo hello\n";
    init_repo(&repo, &[(".workflows/tick.yaml", cron)]);
    let receiver = Receiver::start(vec![]);
    let config = |node: &str| {
        format!(
            "store: {{kind: postgres, url_env: AGENT_FLEET_TEST_PG}}\nnode: {node}\n{}webhooks:\n  - name: hook\n    url: {}\n    events: [run.succeeded]\n",
            repo_config("app", &repo),
            receiver.url("/"),
        )
    };
    let env = [("AGENT_FLEET_TEST_PG", url.as_str())];
    let mut a = TestDaemon::start_with_env(&tmp.path().join("a"), &config("a"), &env);
    let b = TestDaemon::start_with_env(&tmp.path().join("b"), &config("b"), &env);
    let runs = |d: &TestDaemon| -> Vec<Value> {
        d.get_json("/api/v1/runs?workflow=tick")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    common::daemon::wait_for("three scheduled runs", LIMIT, || runs(&b).len() >= 3);
    // Kill one daemon (whichever evaluates, the other takes over within the lease).
    a.kill9();
    let before = runs(&b).len();
    common::daemon::wait_for("the schedule keeps firing", LIMIT, || {
        runs(&b).len() >= before + 3
    });
    let all = runs(&b);
    let mut slots: Vec<String> = all
        .iter()
        .map(|r| {
            let id = common::daemon::run_id(r);
            b.get_json(&format!("/api/v1/runs/{id}"))["trigger"]["scheduled_for"].to_string()
        })
        .collect();
    let n = slots.len();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), n, "a slot fired twice: {all:?}");
    // Each succeeded run is announced once, under one id per delivery.
    common::daemon::wait_for("deliveries", LIMIT, || receiver.requests().len() >= 3);
    let mut ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("x-agent-delivery").unwrap_or_default().to_string())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a delivery was sent twice");
}
