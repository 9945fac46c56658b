//! The fleet under fire: three `agent daemon` processes (nodes `n1`..`n3`, each its own state
//! directory and port) share one PostgreSQL database (`store: {kind: postgres}`, a 1 s
//! heartbeat, a 4 s lease) and watch one local repository with three workflows: one run by
//! every push, one by a cron line firing every second, one triggered by hand. Every step
//! appends `RUN STEP` to one file outside every workspace; the middle step of the push and
//! manual workflows is `idempotent: false`. Runs are driven by commits, by the clock and by
//! `POST /api/v1/workflows/{name}/runs` to random nodes, while a random node is killed with
//! SIGKILL at a fixed period and restarted after a random pause (shorter or longer than the
//! lease); interrupted runs (a non-idempotent step was cut) are retried through the API.
//! Then the triggers stop (the cron workflow is removed by a `[skip ci]` commit) and the test
//! waits, with a deadline, until nothing is queued, running or interrupted and the outbox is
//! drained, and checks from the database and from a webhook receiver on 127.0.0.1:
//! - every run ended, exactly once: a terminal status, one run-end event in the outbox, one
//!   run-end delivery id at the receiver, the event matching the status;
//! - no step ran more often than its interruptions allow: a step's effect is there at most
//!   once plus the times the step was interrupted, an `idempotent: false` step's at most once
//!   plus the times its run was retried by hand; every step of a succeeded run ran;
//! - no cron slot fired twice (`cron_fires`, and runs per `scheduled_for`);
//! - no webhook delivery id arrived twice beyond what the kills explain (a node killed between
//!   the receiver's answer and recording it: at most one per kill), none was lost;
//! - nothing is stuck `running` past its lease; every accepted manual run exists.
//!
//! The figures (runs by trigger and status, kills, resumed runs, retries, durations, each
//! check's counts) are printed (`-- --nocapture`). `fleet_soak_short` is the CI variant (about
//! 80 runs, a kill every 4 s); `fleet_soak_long` (ignored: about 5 minutes, 500 runs, a kill
//! every 10 s; `AGENT_SOAK_RUNS` changes the count) is run by hand:
//! `cargo test -p agent-tests --test e2e fleet_soak::fleet_soak_long -- --ignored --nocapture`.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{TestDaemon, commit_files, git, init_repo, yaml_quote};
use common::notify::Receiver;

/// The shape of one soak.
struct Soak {
    /// Runs to create (all triggers together, cron included).
    runs: usize,
    /// How long the triggers are spread over.
    trigger_for: Duration,
    /// A node is killed this long after the previous one came back.
    kill_every: Duration,
    /// How long the fleet may take to finish everything once the triggers stop.
    drain: Duration,
}

/// The lease the nodes run with (the config's `limits.lease`).
const LEASE: Duration = Duration::from_secs(4);

/// The CI variant: about 80 runs over 40 s, a node killed every 4 s.
#[test]
fn fleet_soak_short() {
    soak(&Soak {
        runs: 80,
        trigger_for: Duration::from_secs(40),
        kill_every: Duration::from_secs(4),
        drain: Duration::from_secs(180),
    });
}

/// The long soak: 500 runs (or `AGENT_SOAK_RUNS`) over about 4.5 minutes, a node killed
/// every 10 s.
#[test]
#[ignore = "about 5 minutes; run by hand with --ignored"]
fn fleet_soak_long() {
    let runs = std::env::var("AGENT_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    soak(&Soak {
        runs,
        trigger_for: Duration::from_millis(540 * runs as u64),
        kill_every: Duration::from_secs(10),
        drain: Duration::from_secs(300),
    });
}

/// The steps of the push and manual workflows (`b` is `idempotent: false`).
const STEPS: [&str; 3] = ["a", "b", "c"];
/// The steps of the cron workflow.
const CRON_STEPS: [&str; 2] = ["a", "c"];

/// A workflow whose steps append `RUN STEP` to `effects`.
fn workflow(name: &str, on: &str, steps: &[&str], effects: &Path) -> String {
    let file = yaml_quote(&effects.to_string_lossy());
    let mut text =
        format!("workflow:\n  name: {name}\n{on}  stages:\n    - name: s\n      steps:\n");
    for step in steps {
        text.push_str(&format!("        - id: {step}\n"));
        // The effect at the start of `a`, in the middle of `b`, at the end of `c`.
        let run = match *step {
            "a" => format!("echo \"$AGENT_RUN_ID a\" >> {file}; sleep 0.4"),
            "b" => {
                text.push_str("          idempotent: false\n");
                format!("sleep 0.1; echo \"$AGENT_RUN_ID b\" >> {file}; sleep 0.4")
            }
            _ => format!("sleep 0.3; echo \"$AGENT_RUN_ID c\" >> {file}"),
        };
        text.push_str(&format!("          run: {}\n", yaml_quote(&run)));
    }
    text
}

/// A small xorshift generator (the seed is printed to replay a failure's schedule).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One run as the database has it.
#[derive(Debug, Clone)]
struct RunRow {
    id: i64,
    workflow: String,
    status: String,
    kind: String,
    scheduled_for: Option<i64>,
    owner: Option<String>,
    lease_expires_at: Option<i64>,
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the soak database: {e}"))
}

fn runs(db: &mut postgres::Client) -> Vec<RunRow> {
    db.query(
        "SELECT id, workflow, status, trigger_kind, scheduled_for, claim_owner, lease_expires_at \
         FROM runs ORDER BY id",
        &[],
    )
    .map(|rows| {
        rows.iter()
            .map(|r| RunRow {
                id: r.get(0),
                workflow: r.get(1),
                status: r.get(2),
                kind: r.get(3),
                scheduled_for: r.get(4),
                owner: r.get(5),
                lease_expires_at: r.get(6),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// `SELECT count(*) ...`; -1 when the query fails (the callers poll: -1 is never "done").
fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).map(|r| r.get(0)).unwrap_or(-1)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The events that end a run.
const END_EVENTS: [&str; 3] = ["run.succeeded", "run.failed", "run.cancelled"];

fn soak(cfg: &Soak) {
    let setup_started = Instant::now();
    let url = agent::store::test_pg::database_url();
    let mut db = connect(&url);
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let effects = tmp.path().join("effects");
    init_repo(
        &repo,
        &[
            (
                ".workflows/pushed.yaml",
                &workflow("pushed", "  on:\n    push: {}\n", &STEPS, &effects),
            ),
            (
                ".workflows/ticking.yaml",
                &workflow(
                    "ticking",
                    "  on:\n    schedule:\n      - cron: \"* * * * * *\"\n",
                    &CRON_STEPS,
                    &effects,
                ),
            ),
            (
                ".workflows/manual.yaml",
                &workflow("manual", "  on:\n    manual: true\n", &STEPS, &effects),
            ),
            ("counter", "0\n"),
        ],
    );
    let receiver = Receiver::start(Vec::new());
    let config = |node: &str| {
        format!(
            "node: {node}\nstore: {{kind: postgres, url_env: AGENT_PG_URL}}\n\
             limits:\n  heartbeat: 1s\n  lease: {}s\n  max_runs_per_minute: 0\n\
             repos:\n  - name: app\n    path: {}\n\
             webhooks:\n  - name: soak\n    url: {}\n    events: [run.finished]\n",
            LEASE.as_secs(),
            yaml_quote(&repo.to_string_lossy()),
            receiver.url("/hook"),
        )
    };
    let env = [("AGENT_PG_URL", url.as_str())];
    let mut nodes: Vec<TestDaemon> = (1..=3)
        .map(|i| {
            let name = format!("n{i}");
            TestDaemon::start_with_env(&tmp.path().join(&name), &config(&name), &env)
        })
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("fleet soak: seed {seed}, {} runs wanted", cfg.runs);
    let mut rng = Rng(seed);

    let setup = setup_started.elapsed();

    // ------------------------------------------------------------------ the storm
    let t0 = Instant::now();
    let mut next_kill = t0 + cfg.kill_every;
    let mut down: Option<(usize, Instant)> = None;
    let (mut kills, mut restarts, mut commits) = (0u32, 0u32, 0u32);
    let (mut cron_holder_kills, mut outbox_holder_kills) = (0u32, 0u32);
    let (mut manual_accepted, mut manual_refused) = (Vec::<i64>::new(), 0u32);
    let mut retried: HashMap<i64, u32> = HashMap::new();
    let mut retry_refused = 0u32;
    let mut last_scan = t0;
    let mut last_kill_at = t0;
    let mut retry_interrupted = |nodes: &[TestDaemon], rng: &mut Rng, db: &mut postgres::Client| {
        for run in runs(db).iter().filter(|r| r.status == "interrupted") {
            let up: Vec<&TestDaemon> = nodes.iter().filter(|n| n.pid().is_some()).collect();
            let node = up[rng.below(up.len() as u64) as usize];
            match node.try_request("POST", &format!("/api/v1/runs/{}/retry", run.id), None) {
                Ok((202, _)) => *retried.entry(run.id).or_default() += 1,
                _ => retry_refused += 1,
            }
        }
    };
    loop {
        let now = Instant::now();
        let elapsed = now - t0;
        let created = count(&mut db, "SELECT count(*) FROM runs").max(0) as usize;
        if created >= cfg.runs || elapsed > cfg.trigger_for * 3 / 2 {
            break;
        }
        if down.is_none() && now >= next_kill {
            // Mostly the node running the most runs (so that kills cut steps), else any.
            let busiest = db
                .query_one(
                    "SELECT claim_owner FROM runs WHERE status = 'running' \
                     AND claim_owner IS NOT NULL GROUP BY claim_owner ORDER BY count(*) DESC LIMIT 1",
                    &[],
                )
                .ok()
                .and_then(|r| r.get::<_, Option<String>>(0))
                .and_then(|name| name.strip_prefix('n')?.parse::<usize>().ok())
                .filter(|n| (1..=3).contains(n));
            let i = match busiest {
                Some(n) if rng.below(4) != 0 => n - 1,
                _ => rng.below(3) as usize,
            };
            // Which roles the node held (holder: its node name, or `agent-PID`).
            let me = [
                format!("n{}", i + 1),
                format!("agent-{}", nodes[i].pid().unwrap_or(0)),
            ];
            for (role, n) in [
                ("cron", &mut cron_holder_kills),
                ("outbox", &mut outbox_holder_kills),
            ] {
                let holder = db
                    .query_one("SELECT holder FROM leases WHERE name = $1", &[&role])
                    .ok()
                    .map(|r| r.get::<_, String>(0));
                if holder.is_some_and(|h| me.contains(&h)) {
                    *n += 1;
                }
            }
            nodes[i].kill9();
            kills += 1;
            last_kill_at = Instant::now();
            // Sometimes back before its lease ran out, sometimes after another node took over.
            let pause = Duration::from_millis(200 + rng.below(LEASE.as_millis() as u64 + 1000));
            down = Some((i, now + pause));
        }
        if let Some((i, at)) = down
            && now >= at
        {
            nodes[i].boot();
            restarts += 1;
            down = None;
            next_kill = Instant::now() + cfg.kill_every;
        }
        if now - last_scan > Duration::from_secs(1) {
            last_scan = now;
            retry_interrupted(&nodes, &mut rng, &mut db);
        }
        let due = (cfg.runs as f64 * elapsed.as_secs_f64() / cfg.trigger_for.as_secs_f64()).ceil()
            as usize;
        if created < due {
            if rng.below(10) < 3 {
                commits += 1;
                commit_files(
                    &repo,
                    &[("counter", &format!("{commits}\n"))],
                    &format!("commit {commits}"),
                );
            } else {
                let up: Vec<&TestDaemon> = nodes.iter().filter(|n| n.pid().is_some()).collect();
                let node = up[rng.below(up.len() as u64) as usize];
                match node.try_request("POST", "/api/v1/workflows/manual/runs", Some("{}")) {
                    Ok((202, body)) => {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        let id = match &v["run_id"] {
                            serde_json::Value::String(s) => s.parse().unwrap_or(-1),
                            other => other.as_i64().unwrap_or(-1),
                        };
                        manual_accepted.push(id);
                    }
                    _ => manual_refused += 1,
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some((i, _)) = down.take() {
        nodes[i].boot();
        restarts += 1;
    }
    let storm = t0.elapsed();
    // Stop the clock: the cron workflow goes away (the commit itself starts no push run).
    git(&repo, &["rm", "-q", ".workflows/ticking.yaml"]);
    git(&repo, &["commit", "-q", "-m", "[skip ci] stop the clock"]);

    // ------------------------------------------------------------------ drain
    let t1 = Instant::now();
    let deadline = t1 + cfg.drain;
    let mut fires = (-1i64, Instant::now());
    loop {
        let now = Instant::now();
        if now - last_scan > Duration::from_millis(500) {
            last_scan = now;
            retry_interrupted(&nodes, &mut rng, &mut db);
        }
        let active = count(
            &mut db,
            "SELECT count(*) FROM runs WHERE status IN ('queued','running','interrupted')",
        );
        let pending = count(
            &mut db,
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        );
        let n_fires = count(&mut db, "SELECT count(*) FROM cron_fires");
        if n_fires != fires.0 {
            fires = (n_fires, now);
        }
        let clock_stopped = now - fires.1 > Duration::from_secs(3);
        let received: HashSet<String> = receiver
            .requests()
            .iter()
            .filter_map(|r| r.header("x-agent-delivery").map(str::to_string))
            .collect();
        let delivered = count(
            &mut db,
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
        );
        if active == 0
            && pending == 0
            && clock_stopped
            && received.len() as i64 >= delivered
            && now > last_kill_at + LEASE
        {
            break;
        }
        if now > deadline {
            eprintln!(
                "fleet soak: drain deadline passed: {active} runs active, {pending} deliveries pending, clock stopped: {clock_stopped}"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain = t1.elapsed();

    // ------------------------------------------------------------------ checks
    let mut failures: Vec<String> = Vec::new();
    let all = runs(&mut db);
    let by_id: HashMap<i64, &RunRow> = all.iter().map(|r| (r.id, r)).collect();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for r in &all {
        *by_kind.entry(r.kind.clone()).or_default() += 1;
        *by_status.entry(r.status.clone()).or_default() += 1;
    }

    // Terminal, exactly once.
    let now = now_ms();
    let unfinished: Vec<&RunRow> = all
        .iter()
        .filter(|r| !matches!(r.status.as_str(), "succeeded" | "failed" | "cancelled"))
        .collect();
    for r in &unfinished {
        let stuck = r.status == "running" && r.lease_expires_at.is_some_and(|l| l < now);
        failures.push(format!(
            "run {} ({}) ended {}{} (owner {:?}, lease {:?})",
            r.id,
            r.workflow,
            r.status,
            if stuck { ", stuck past its lease" } else { "" },
            r.owner,
            r.lease_expires_at.map(|l| l - now),
        ));
    }
    let outbox: Vec<(String, String, Option<i64>, String)> = db
        .query(
            "SELECT id, event, run_id, status FROM deliveries ORDER BY created_at",
            &[],
        )
        .expect("read the outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut outbox_ends: HashMap<i64, Vec<&str>> = HashMap::new();
    for (_, event, run, _) in &outbox {
        if let Some(run) = run
            && END_EVENTS.contains(&event.as_str())
        {
            outbox_ends.entry(*run).or_default().push(event);
        }
    }
    let mut end_mismatch = 0;
    for r in &all {
        let ends = outbox_ends.get(&r.id).map(Vec::as_slice).unwrap_or(&[]);
        let want = format!("run.{}", r.status);
        if ends.len() != 1 || ends[0] != want {
            end_mismatch += 1;
            failures.push(format!(
                "run {} ({}, {}): run-end events in the outbox {ends:?}, want [{want}]",
                r.id, r.workflow, r.status
            ));
        }
    }
    let requests = receiver.requests();
    let mut received: HashMap<String, usize> = HashMap::new();
    let mut received_ends: HashMap<i64, HashSet<String>> = HashMap::new();
    for req in &requests {
        let Some(id) = req.header("x-agent-delivery") else {
            failures.push("a webhook request without X-Agent-Delivery".into());
            continue;
        };
        *received.entry(id.to_string()).or_default() += 1;
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let run = match &body["run"]["run_id"] {
            serde_json::Value::String(s) => s.parse().ok(),
            other => other.as_i64(),
        };
        if let (Some(event), Some(run)) = (req.header("x-agent-event"), run)
            && END_EVENTS.contains(&event)
        {
            received_ends
                .entry(run)
                .or_default()
                .insert(format!("{event} {id}"));
        }
    }
    let mut receiver_mismatch = 0;
    for r in &all {
        let got = received_ends.get(&r.id).map_or(0, HashSet::len);
        if got != 1 {
            receiver_mismatch += 1;
            failures.push(format!(
                "run {} ({}): {got} distinct run-end deliveries at the receiver",
                r.id, r.status
            ));
        }
    }
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    let duplicated_ids = received.values().filter(|n| **n > 1).count();
    let undelivered: Vec<&(String, String, Option<i64>, String)> = outbox
        .iter()
        .filter(|(id, ..)| !received.contains_key(id))
        .collect();
    for (id, event, run, status) in &undelivered {
        failures.push(format!(
            "delivery {id} ({event}, run {run:?}, {status}) never reached the receiver"
        ));
    }
    if duplicates > kills as usize {
        failures.push(format!(
            "{duplicates} repeated deliveries ({duplicated_ids} ids) for {kills} kills"
        ));
    }

    // Steps: effects against interruptions and retries.
    let mut effects_of: HashMap<(i64, String), usize> = HashMap::new();
    for line in std::fs::read_to_string(&effects)
        .unwrap_or_default()
        .lines()
    {
        if let Some((run, step)) = line.split_once(' ')
            && let Ok(run) = run.parse::<i64>()
        {
            *effects_of.entry((run, step.to_string())).or_default() += 1;
        }
    }
    let interruptions: HashMap<(i64, String), i64> = db
        .query("SELECT run_id, step_id, interruptions FROM steps", &[])
        .expect("read the steps")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let resumed_runs: HashSet<i64> = interruptions
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|((run, _), _)| *run)
        .collect();
    let total_interruptions: i64 = interruptions.values().sum();
    let (mut steps_checked, mut repeated_allowed, mut repeated_bad, mut missing) =
        (0usize, 0usize, 0usize, 0usize);
    for ((run, step), n) in &effects_of {
        steps_checked += 1;
        if *n <= 1 {
            continue;
        }
        let cut = interruptions
            .get(&(*run, step.clone()))
            .copied()
            .unwrap_or(0) as usize;
        let by_hand = retried.get(run).copied().unwrap_or(0) as usize;
        let limit = if step == "b" {
            1 + by_hand.min(cut)
        } else {
            1 + cut
        };
        if *n <= limit {
            repeated_allowed += 1;
        } else {
            repeated_bad += 1;
            failures.push(format!(
                "run {run}: step {step} ran {n} times ({cut} interruptions, {by_hand} retries by hand)"
            ));
        }
    }
    for r in all.iter().filter(|r| r.status == "succeeded") {
        let steps: &[&str] = if r.workflow == "ticking" {
            &CRON_STEPS
        } else {
            &STEPS
        };
        for step in steps {
            if !effects_of.contains_key(&(r.id, step.to_string())) {
                missing += 1;
                failures.push(format!(
                    "run {} succeeded without step {step}'s effect",
                    r.id
                ));
            }
        }
    }

    // Cron: each slot at most once.
    let fires_total = count(&mut db, "SELECT count(*) FROM cron_fires");
    // The span of the slots claimed: slots within it not claimed were missed while the
    // evaluating node was down and caught up by the `latest` rule (one slot per gap).
    let slot_span = db
        .query_one("SELECT min(slot), max(slot) FROM cron_fires", &[])
        .ok()
        .and_then(|r| Some(r.get::<_, Option<i64>>(1)? - r.get::<_, Option<i64>>(0)?))
        .map_or(0, |ms| ms / 1000 + 1);
    let fires_twice = count(
        &mut db,
        "SELECT count(*) FROM (SELECT 1 FROM cron_fires GROUP BY schedule_key, slot \
         HAVING count(*) > 1) t",
    );
    let mut per_slot: HashMap<i64, usize> = HashMap::new();
    for r in all.iter().filter(|r| r.kind == "schedule") {
        match r.scheduled_for {
            Some(slot) => *per_slot.entry(slot).or_default() += 1,
            None => failures.push(format!("schedule run {} without its slot", r.id)),
        }
    }
    let slots_twice = per_slot.values().filter(|n| **n > 1).count();
    if fires_twice > 0 || slots_twice > 0 {
        failures.push(format!(
            "cron: {fires_twice} slots claimed twice, {slots_twice} slots with more than one run"
        ));
    }

    // Every manual run the API accepted exists.
    let lost: Vec<&i64> = manual_accepted
        .iter()
        .filter(|id| !by_id.contains_key(id))
        .collect();
    if !lost.is_empty() {
        failures.push(format!("accepted manual runs missing: {lost:?}"));
    }

    let failed_errors: Vec<String> = db
        .query(
            "SELECT id, workflow, error FROM runs WHERE status = 'failed' ORDER BY id LIMIT 5",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let (id, wf, err): (i64, String, Option<String>) =
                        (r.get(0), r.get(1), r.get(2));
                    format!("run {id} ({wf}): {}", err.unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default();
    let nodes_view = nodes[0]
        .try_request("GET", "/api/v1/nodes", None)
        .map(|(code, body)| format!("{code} {body}"))
        .unwrap_or_else(|e| e.to_string());
    eprintln!(
        "fleet soak figures (seed {seed}):\n\
         \x20 runs {} by trigger {by_kind:?}, by status {by_status:?}\n\
         \x20 triggers: {commits} commits, {} manual accepted, {manual_refused} refused; \
         cron slots claimed {fires_total} of the {slot_span} seconds they span\n\
         \x20 kills {kills} (SIGKILL; {cron_holder_kills} of the cron lease's holder, {outbox_holder_kills} of the outbox's), restarts {restarts}; resumed runs {} ({total_interruptions} step interruptions); \
         retried by hand {} runs ({} retries, {retry_refused} refused)\n\
         \x20 durations: setup {:.1} s, storm {:.1} s, drain {:.1} s\n\
         \x20 check terminal-once: {} unfinished, {end_mismatch} outbox mismatches, {receiver_mismatch} receiver mismatches\n\
         \x20 check steps: {steps_checked} (run, step) effects, {repeated_allowed} repeated after an interruption (allowed), \
         {repeated_bad} repeated beyond it, {missing} missing\n\
         \x20 check cron: {fires_twice} slots claimed twice, {slots_twice} slots with two runs, {} schedule runs\n\
         \x20 check webhooks: {} deliveries in the outbox, {} requests received, {duplicates} repeats of {duplicated_ids} ids, \
         {} never received\n\
         \x20 failed runs (first 5): {failed_errors:?}\n\
         \x20 nodes: {nodes_view}",
        all.len(),
        manual_accepted.len(),
        resumed_runs.len(),
        retried.len(),
        retried.values().sum::<u32>(),
        setup.as_secs_f64(),
        storm.as_secs_f64(),
        drain.as_secs_f64(),
        unfinished.len(),
        per_slot.len(),
        outbox.len(),
        requests.len(),
        undelivered.len(),
    );
    if !failures.is_empty() {
        let shown = failures.len().min(40);
        let logs: String = nodes
            .iter()
            .map(|n| {
                let text = n.log_text();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {} (last lines)\n{}\n",
                    n.root.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!(
            "{} soak failures (first {shown}):\n{}\n{logs}",
            failures.len(),
            failures[..shown].join("\n")
        );
    }
    assert!(
        all.len() >= cfg.runs.min(10),
        "only {} runs were created",
        all.len()
    );
}

/// The roles of a node (evaluating the schedules, polling a repository, sending the webhook
/// deliveries) are leases held under the node's name for `limits.lease` past their last
/// renewal, like its run claims: not under `agent-PID` (two agents in two containers both
/// run as pid 1, and would each think they hold every role) and not for a fixed time (a
/// killed holder's role waits for the fleet's lease, not longer).
#[test]
fn role_leases_are_held_under_the_node_name_for_the_configured_lease() {
    let url = agent::store::test_pg::database_url();
    let mut db = connect(&url);
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let effects = tmp.path().join("effects");
    init_repo(
        &repo,
        &[(
            ".workflows/ticking.yaml",
            &workflow(
                "ticking",
                "  on:\n    schedule:\n      - cron: \"0 0 1 1 *\"\n",
                &CRON_STEPS,
                &effects,
            ),
        )],
    );
    let receiver = Receiver::start(Vec::new());
    let config = format!(
        "node: n7\nstore: {{kind: postgres, url_env: AGENT_PG_URL}}\n\
         limits:\n  heartbeat: 1s\n  lease: {}s\n\
         repos:\n  - name: app\n    path: {}\n\
         webhooks:\n  - name: soak\n    url: {}\n",
        LEASE.as_secs(),
        yaml_quote(&repo.to_string_lossy()),
        receiver.url("/hook"),
    );
    let d = TestDaemon::start_with_env(
        &tmp.path().join("n7"),
        &config,
        &[("AGENT_PG_URL", url.as_str())],
    );
    let mut leases: Vec<(String, String, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leases.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the node did not take its three roles: {leases:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
        leases = db
            .query(
                "SELECT name, holder, expires_at FROM leases ORDER BY name",
                &[],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            })
            .unwrap_or_default();
    }
    let read_at = now_ms();
    for (name, holder, expires_at) in &leases {
        assert_eq!(holder, "n7", "lease {name}: {leases:?}");
        // Renewed at or before `read_at`, so it runs out at most one lease after it.
        assert!(
            *expires_at - read_at <= LEASE.as_millis() as i64,
            "lease {name} runs {} ms past now, more than limits.lease: {leases:?}",
            expires_at - read_at
        );
    }
}
