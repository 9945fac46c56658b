# Sourced by bench/listing.sh and bench/dashboard.sh (after RUNS, STEPS and TOKEN are set):
# builds the release binary unless AGENT is set, writes a history of RUNS finished runs of a
# STEPS-step workflow straight into a daemon's SQLite store under a temporary directory
# (removed at exit, the daemon stopped by its PID), and leaves that daemon running on it with
# its address in $url.

if [ -z "${AGENT:-}" ]; then
  cargo build --release --quiet -p agent --bin agent
  AGENT="$PWD/target/release/agent"
fi
work=$(mktemp -d)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

start_daemon() {
  rm -f "$work/state/daemon.addr"
  RUST_LOG=warn "$AGENT" daemon --config "$work/agent.yaml" >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  local deadline=$(( $(now_ms) + 60000 ))
  until [ -s "$work/state/daemon.addr" ] && url="http://$(cat "$work/state/daemon.addr")" \
      && python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/health')" \
        "$url" >/dev/null 2>&1; do
    if (( $(now_ms) > deadline )); then echo "daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; fi
    sleep 0.05
  done
}

stop_daemon() {
  kill "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
}

# A real report of a STEPS-step run.
{
  echo "workflow:"
  echo "  name: wf"
  echo "  stages:"
  echo "    - name: build"
  echo "      steps:"
  for i in $(seq 1 "$STEPS"); do
    echo "        - id: step_$i"
    echo "          run: echo step $i"
  done
} >"$work/wf.yaml"
"$AGENT" exec "$work/wf.yaml" --workdir "$work" --json >"$work/report.json" 2>/dev/null

mkdir -p "$work/state"
# No retention: the whole history stays.
printf 'state_dir: %s\nlisten: 127.0.0.1:0\napi_token: %s\nretention: {max_runs: null, max_age: null}\n' \
  "$work/state" "$TOKEN" >"$work/agent.yaml"
# The first start creates the store at the binary's schema version.
start_daemon
stop_daemon

python3 - "$work/state/agent.sqlite3" "$work/report.json" "$RUNS" <<'EOF'
import json, random, sqlite3, sys, time
db, report_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = json.load(open(report_path))
steps = [s for st in report["stages"] for s in st["steps"]]
context = {"steps": {s["id"]: {"outputs": {"line": "step " + s["id"]}, "status": "succeeded"}
                     for s in steps}, "env": {"CI": "true"}}
rng = random.Random(7)
conn = sqlite3.connect(db)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = OFF")
t0 = int(time.time() * 1000) - runs * 60_000 - 3_600_000
with conn:
    for n in range(runs):
        created = t0 + n * 60_000
        started, finished = created + 500, created + 500 + report["duration_ms"]
        r = rng.random()
        status = "succeeded" if r < 0.90 else "failed" if r < 0.98 else "cancelled"
        workflow = "wf%d" % (n % 10)
        repo = "big" if rng.random() < 0.9 else "small"
        error = None if status == "succeeded" else "step `step_7` " + status
        rep = dict(report, status=status, workflow=workflow, error=error)
        cur = conn.execute(
            "INSERT INTO runs (workflow, repo, status, trigger_kind, trigger_commit, trigger_branch,"
            " parameters, created_at, started_at, finished_at, error, context, report)"
            " VALUES (?, ?, ?, 'push', ?, 'main', ?, ?, ?, ?, ?, ?, ?)",
            (workflow, repo, status, "%040x" % rng.getrandbits(160), json.dumps({"count": n}),
             created, started, finished, error, json.dumps(context), json.dumps(rep)))
        run_id = cur.lastrowid
        conn.execute("INSERT INTO run_messages (run_id, message) VALUES (?, ?)",
                     (run_id, "%s: change %d of the %s module" % (
                         "fix" if n % 100 == 0 else "feat", n, rng.choice(["store", "api", "web"]))))
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, stage, status, attempts, exit_code, outputs,"
            " cached, started_at, finished_at, seq) VALUES (?, ?, 'build', 'succeeded', 1, 0,"
            " '{}', 0, ?, ?, ?)",
            [(run_id, s["id"], started + i, started + i + 1, i + 1) for i, s in enumerate(steps)])
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
conn.close()
EOF

start_daemon
