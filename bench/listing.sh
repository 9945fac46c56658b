#!/usr/bin/env bash
# The runs API on a long history, over HTTP, with the release binary:
#
# 1. Runs one STEPS-step workflow with `agent exec --json` for a real report, then writes a
#    history of RUNS finished runs of STEPS-step workflows straight into the daemon's SQLite
#    store (10 workflows, two repositories, 90% succeeded / 8% failed / 2% cancelled, each
#    with that report, its parameters, its saved context and its STEPS step rows).
# 2. Starts the daemon on that store and times, over one keep-alive HTTP connection,
#    REQUESTS requests each of: a page of 50 summaries without filters, with each filter
#    (workflow, status, repo), a page deep in the history (`before=`), and one run's report.
#    Printed: p50 and p99 in ms, and the p99 as a ratio against two floors measured in the
#    same run: `GET /health` over the same connection (the HTTP round trip) and the same 50
#    summary rows read straight from SQLite in this script (the storage floor).
#
#   bench/listing.sh [RUNS] [STEPS] [REQUESTS]
#
# AGENT=/path/to/agent uses that binary instead of building one (to compare builds).
# Needs python3 (with its sqlite3 module). Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-10000}"
STEPS="${2:-300}"
REQUESTS="${3:-200}"
TOKEN=bench-token

. bench/lib/history.sh
python3 - "$url" "$TOKEN" "$work/state/agent.sqlite3" "$REQUESTS" "$RUNS" "$STEPS" <<'EOF'
import http.client, json, sqlite3, sys, time, urllib.parse
url, token, db, n, runs, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
host = urllib.parse.urlparse(url).netloc
conn = http.client.HTTPConnection(host)
headers = {"Authorization": "Bearer " + token}

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

listed = json.loads(get("/api/v1/runs?limit=50"))
assert len(listed["runs"]) == 50, listed.keys()
ids = [int(r) for (r,) in sqlite3.connect(db).execute("SELECT id FROM runs ORDER BY id")]
deep = ids[200]
one = ids[len(ids) // 2]

sql = sqlite3.connect(db)
def summaries():
    sql.execute("SELECT id, workflow, repo, status, trigger_kind, trigger_commit, trigger_branch,"
                " scheduled_for, created_at, started_at, finished_at, error, retry_of"
                " FROM runs ORDER BY id DESC LIMIT 50").fetchall()

floor_sql = timed(summaries)
floor_http = timed(lambda: get("/health"))
cases = [
    ("list 50", "/api/v1/runs?limit=50"),
    ("list 50 workflow=", "/api/v1/runs?limit=50&workflow=wf3"),
    ("list 50 status=failed", "/api/v1/runs?limit=50&status=failed"),
    ("list 50 repo=small", "/api/v1/runs?limit=50&repo=small"),
    ("list 50 before=deep", "/api/v1/runs?limit=50&before=%d" % deep),
    ("one run's report", "/api/v1/runs/%d" % one),
]
print("runs=%d steps=%d requests=%d (ms; p99 ratios against the floors)" % (runs, steps, n))
print("floor: 50 summaries from SQLite p50 %.3f p99 %.3f; GET /health p50 %.3f p99 %.3f"
      % (floor_sql + floor_http))
for name, path in cases:
    p50, p99 = timed(lambda: get(path))
    print("%-22s p50 %7.2f  p99 %7.2f  p99/health %6.1f  p99/sqlite %7.1f"
          % (name, p50, p99, p99 / floor_http[1], p99 / floor_sql[1]))
EOF
