//! `agent exec` end to end: `services` (workflow and stage) with real servers: Python's
//! http.server, PostgreSQL (`initdb` + `postgres` in the foreground) and `redis-server`;
//! readiness probes, free ports per run, failures with the service's last lines, and no
//! service process left after the run.

use crate::common;
use crate::common::exec;

use std::time::Duration;

use exec::{Ws, assert_code, report, step};

/// The path of `program` on PATH (or, for PostgreSQL's server programs, in Debian's
/// versioned directory); panics naming the Debian package when it is missing.
fn need(program: &str, package: &str) -> String {
    let mut dirs: Vec<std::path::PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut v: Vec<_> = rd.flatten().map(|e| e.path().join("bin")).collect();
        v.sort();
        dirs.extend(v.into_iter().rev());
    }
    for d in dirs {
        let p = d.join(program);
        if p.is_file() {
            return p.to_string_lossy().into_owned();
        }
    }
    panic!("`{program}` is not installed: install the Debian package `{package}`");
}

/// Whether process `pid` is still alive (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn pids_in(ws: &Ws, file: &str) -> Vec<u32> {
    ws.read(file)
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Processes the run left alive, among `pids` (polled briefly: a process killed at the very
/// end of the run may still be on its way out).
fn survivors(pids: &[u32]) -> Vec<u32> {
    let gone = common::poll(Duration::from_secs(10), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    if gone.is_some() {
        Vec::new()
    } else {
        pids.iter().copied().filter(|p| alive(*p)).collect()
    }
}

/// An http.server service with an `http:` probe serves a file a step writes and reads
/// back; its request log is the service's own output stream; it is gone after the run.
#[test]
fn http_server_service_serves_a_step() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: web
  services:
    web:
      run: |
        echo $$ > web.pid
        exec python3 -m http.server "$PORT" --bind 127.0.0.1
      ready: {http: "http://127.0.0.1:${{ services.web.port }}/"}
  stages:
    - name: s
      steps:
        - id: get
          run: |
            echo hello > page.txt
            python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode().strip())" "http://${{ services.web.host }}:${{ services.web.port }}/page.txt" > got.txt
            echo "port=${{ services.web.port }}" >> "$AGENT_OUTPUT"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("got.txt").trim(), "hello");
    let r = report(&out);
    let port: u16 = step(&r, "get")["outputs"]["port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("port output");
    assert!(port > 0);
    let err = common::stderr(&out);
    assert!(
        err.contains("services.web | ") && err.contains("GET /page.txt"),
        "{err}"
    );
    assert!(err.contains(&format!("ready on 127.0.0.1:{port}")), "{err}");
    assert_eq!(survivors(&pids_in(&ws, "web.pid")), Vec::<u32>::new());
}

/// The PostgreSQL workflow: `initdb`, then `postgres` in the foreground on the service's
/// port, probed with `pg_isready`; a step runs `psql`. As root the server runs as the
/// `postgres` user (it refuses root).
fn pg_workflow(ws: &Ws) {
    let initdb = need("initdb", "postgresql");
    let postgres = need("postgres", "postgresql");
    need("pg_isready", "postgresql");
    need("psql", "postgresql");
    let root = is_root();
    if root {
        // The server's user must reach its data directory inside the workspace.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let as_user = if root { "runuser -u postgres --" } else { "" };
    ws.write(
        "wf.yaml",
        &format!(
            r#"workflow:
  name: pg
  services:
    db:
      run: |
        echo $$ > db.pid
        mkdir -p pg
        if [ "$(id -u)" = 0 ]; then chown postgres pg; fi
        {as_user} {initdb} -D "$PWD/pg/data" -A trust -U postgres >pg-initdb.log
        exec {as_user} {postgres} -D "$PWD/pg/data" -p "$PORT" -k "$PWD/pg" -c listen_addresses=127.0.0.1
      ready:
        run: pg_isready -h 127.0.0.1 -p ${{{{ services.db.port }}}}
      ready_timeout: 60s
  stages:
    - name: s
      steps:
        - id: query
          run: |
            head -1 pg/data/postmaster.pid >> db.pid
            psql -h 127.0.0.1 -p ${{{{ services.db.port }}}} -U postgres -tAc 'select 40 + 2' > answer.txt
            echo "port=${{{{ services.db.port }}}}" >> "$AGENT_OUTPUT"
"#
        ),
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Two parallel `agent exec` runs of a PostgreSQL service get different ports, both pass,
/// and neither leaves a server process behind.
#[test]
fn postgres_service_two_parallel_runs() {
    let a = Ws::new();
    let b = Ws::new();
    pg_workflow(&a);
    pg_workflow(&b);
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.exec("wf.yaml", &[]));
        let tb = s.spawn(|| b.exec("wf.yaml", &[]));
        (ta.join().expect("run a"), tb.join().expect("run b"))
    });
    assert_code(&ra, 0);
    assert_code(&rb, 0);
    assert_eq!(a.read("answer.txt").trim(), "42");
    assert_eq!(b.read("answer.txt").trim(), "42");
    let port = |out| {
        step(&report(out), "query")["outputs"]["port"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(port(&ra), port(&rb));
    let mut pids = pids_in(&a, "db.pid");
    pids.extend(pids_in(&b, "db.pid"));
    assert_eq!(pids.len(), 4, "service and postmaster pids: {pids:?}");
    assert_eq!(survivors(&pids), Vec::<u32>::new());
}

/// A redis-server stage service answers `PING` from a step of its stage.
#[test]
fn redis_stage_service() {
    let redis = need("redis-server", "redis-server");
    let cli = need("redis-cli", "redis-server");
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        &format!(
            r#"workflow:
  name: cache
  stages:
    - name: s
      services:
        cache:
          run: |
            echo $$ > redis.pid
            exec {redis} --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no
          ready: {{tcp: "${{{{ services.cache.port }}}}"}}
      steps:
        - id: ping
          run: {cli} -p ${{{{ services.cache.port }}}} ping > pong.txt
"#
        ),
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    assert_eq!(ws.read("pong.txt").trim(), "PONG");
    assert_eq!(survivors(&pids_in(&ws, "redis.pid")), Vec::<u32>::new());
}

/// A service that exits before it is ready fails the run with its last lines, and the
/// steps do not run.
#[test]
fn service_exiting_early_fails_with_its_last_lines() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: early
  services:
    bad:
      run: |
        echo starting
        echo "fatal: bad config line 3"
        exit 3
      ready: {tcp: "${{ services.bad.port }}"}
  stages:
    - name: s
      steps:
        - id: never
          run: touch ran
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("service `bad` exited with code 3 before it was ready")
            && error.contains("fatal: bad config line 3"),
        "{r:#}"
    );
    assert!(!ws.exists("ran"));
    assert_eq!(step(&r, "never")["status"], "skipped");
}

/// A service that dies while its steps run fails the run with its last lines.
#[test]
fn service_dying_during_the_steps_fails_the_run() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: dies
  stages:
    - name: s
      services:
        flaky:
          run: |
            echo up
            while [ ! -e go ]; do sleep 0.05; done
            echo "panic: out of memory"
            exit 1
      steps:
        - id: first
          run: |
            touch go
            sleep 1
    - name: later
      steps:
        - id: after
          run: touch after
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("service `flaky` exited with code 1 while its steps ran")
            && error.contains("panic: out of memory"),
        "{r:#}"
    );
    assert!(!ws.exists("after"), "a step after the failure ran");
}

/// A service whose probe never passes fails the run after `ready_timeout` with a clear
/// message, and is stopped.
#[test]
fn readiness_timeout_fails_clearly() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: slow
  services:
    slow:
      run: |
        echo $$ > slow.pid
        echo "warming up"
        exec sleep 30
      ready: {tcp: "${{ services.slow.port }}"}
      ready_timeout: 1s
  stages:
    - name: s
      steps:
        - id: never
          run: touch ran
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 1);
    let r = report(&out);
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("service `slow` was not ready within 1.0s (tcp 127.0.0.1:")
            && error.contains("warming up"),
        "{r:#}"
    );
    assert!(!ws.exists("ran"));
    assert_eq!(survivors(&pids_in(&ws, "slow.pid")), Vec::<u32>::new());
}

/// The port race: a service whose port is in use by another process when it ends before
/// it is ready is started again on a new port, and the run goes on. (The first start leaves
/// a listener on its port behind and exits, as if someone had taken the port first.)
#[test]
fn port_taken_by_another_process_starts_the_service_on_a_new_port() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: clash
  services:
    web:
      run: |
        if [ ! -e first ]; then
          touch first
          echo "$PORT" > first-port
          python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); open("squatted", "w").close(); time.sleep(60)' "$PORT" &
          while [ ! -e squatted ]; do sleep 0.02; done
          echo "address already in use"
          exit 1
        fi
        exec python3 -m http.server "$PORT" --bind 127.0.0.1
      ready: {http: "http://127.0.0.1:${{ services.web.port }}/"}
  stages:
    - name: s
      steps:
        - id: get
          run: |
            echo "port=${{ services.web.port }}" >> "$AGENT_OUTPUT"
            python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1])" "http://127.0.0.1:${{ services.web.port }}/"
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let first = ws.read("first-port").trim().to_string();
    let used = step(&report(&out), "get")["outputs"]["port"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!first.is_empty() && first != used, "{first} vs {used}");
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!("port {first} was taken by another process")),
        "{err}"
    );
}

/// A cancelled run (SIGINT, as Ctrl-C) stops its services: none is left afterwards.
#[test]
fn cancel_stops_the_services() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: cancelled
  services:
    idle:
      run: |
        echo $$ > idle.pid
        exec sleep 120
  stages:
    - name: s
      steps:
        - id: long
          run: |
            touch started
            sleep 120
"#,
    );
    let wsdir = ws.path().to_string_lossy().into_owned();
    let mut cmd = common::agent(&["exec", "wf.yaml", "--workdir", &wsdir]);
    cmd.current_dir(ws.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn agent exec");
    let started = common::poll(Duration::from_secs(30), || {
        ws.exists("started").then_some(())
    });
    assert!(started.is_some(), "the step did not start");
    // The service has no readiness check, so the step may start before it wrote its pid.
    let pids = common::poll(Duration::from_secs(30), || {
        let pids = pids_in(&ws, "idle.pid");
        (!pids.is_empty()).then_some(pids)
    })
    .expect("the service wrote its pid");
    assert_eq!(pids.len(), 1);
    assert!(alive(pids[0]));
    // SAFETY: kill(2) on the pid of a child we started and have not waited for.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = common::poll(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("agent exec did not end after SIGINT");
    }
    assert_eq!(survivors(&pids), Vec::<u32>::new());
}
