#!/usr/bin/env bash
# The dashboard's runs page on a long history, over HTTP, with the release binary:
#
# 1. Writes a history of RUNS finished runs of STEPS-step workflows straight into the
#    daemon's SQLite store (the same history as bench/listing.sh).
# 2. Starts the daemon on it and times, over one keep-alive HTTP connection with the Bearer
#    token, REQUESTS requests each of the HTML pages: the runs page (`/`), filtered by status,
#    a page deep in the history (`before=`), one run's page and the workflows page. Printed:
#    p50 and p99 in ms, and the bytes of the first view (the runs page and every asset it
#    loads).
#
#   bench/dashboard.sh [RUNS] [STEPS] [REQUESTS]
#
# AGENT=/path/to/agent uses that binary instead of building one.
# Needs python3 (with its sqlite3 module). Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-10000}"
STEPS="${2:-300}"
REQUESTS="${3:-200}"
TOKEN=bench-token

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
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, stage, status, attempts, exit_code, outputs,"
            " cached, started_at, finished_at, seq) VALUES (?, ?, 'build', 'succeeded', 1, 0,"
            " '{}', 0, ?, ?, ?)",
            [(run_id, s["id"], started + i, started + i + 1, i + 1) for i, s in enumerate(steps)])
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
conn.close()
EOF

start_daemon
python3 - "$url" "$TOKEN" "$work/state/agent.sqlite3" "$REQUESTS" "$RUNS" "$STEPS" <<'EOF'
import http.client, re, sqlite3, sys, time, urllib.parse
url, token, db, n, runs, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
host = urllib.parse.urlparse(url).netloc
conn = http.client.HTTPConnection(host)
headers = {"Authorization": "Bearer " + token, "Accept": "text/html"}

def get(path):
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        sys.exit("%s: %d %s" % (path, resp.status, body[:200]))
    return body

def timed(fn):
    samples = []
    for _ in range(5):
        fn()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]

ids = [int(r) for (r,) in sqlite3.connect(db).execute("SELECT id FROM runs ORDER BY id")]
page = get("/")
assert page.count(b'data-run="') == 50, "the runs page should list 50 runs"
assets = sorted(set(re.findall(rb'(?:href|src)="(/assets/[^"]+)"', page)))
first_view = len(page) + sum(len(get(a.decode())) for a in assets)
print("runs=%d steps=%d requests=%d (ms)" % (runs, steps, n))
print("first view: %d bytes (runs page %d + %d assets)" % (first_view, len(page), len(assets)))
cases = [
    ("runs page /", "/"),
    ("runs page status=failed", "/?status=failed"),
    ("runs page before=deep", "/?before=%d" % ids[200]),
    ("run page", "/runs/%d" % ids[len(ids) // 2]),
    ("workflows page", "/workflows"),
]
for name, path in cases:
    p50, p99 = timed(lambda: get(path))
    print("%-24s p50 %7.2f  p99 %7.2f" % (name, p50, p99))
EOF
