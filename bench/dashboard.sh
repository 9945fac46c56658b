#!/usr/bin/env bash
# The dashboard's runs page on a long history, over HTTP, with the release binary:
#
# 1. Writes a history of RUNS finished runs of STEPS-step workflows straight into the
#    daemon's SQLite store (the same history as bench/listing.sh).
# 2. Starts the daemon on it and times, over one keep-alive HTTP connection with the Bearer
#    token, REQUESTS requests each of the HTML pages: the runs page (`/`), filtered by status,
#    a page deep in the history (`before=`), filtered by branch and trigger, searched (a
#    text in every tenth run, in 1% of the commit messages, in none), one run's page and the
#    workflows page. Printed:
#    p50 and p99 in ms, and the bytes of the first view (the runs page and every asset it
#    loads), as they are and gzip-compressed.
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

. bench/lib/history.sh
python3 - "$url" "$TOKEN" "$work/state/agent.sqlite3" "$REQUESTS" "$RUNS" "$STEPS" <<'EOF'
import http.client, re, sqlite3, sys, time, urllib.parse
url, token, db, n, runs, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
host = urllib.parse.urlparse(url).netloc
conn = http.client.HTTPConnection(host)
headers = {"Authorization": "Bearer " + token, "Accept": "text/html"}

def get(path, gzip=False):
    h = dict(headers, **({"Accept-Encoding": "gzip"} if gzip else {}))
    conn.request("GET", path, headers=h)
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
first_gz = len(get("/", True)) + sum(len(get(a.decode(), True)) for a in assets)
print("first view gzip: %d bytes on the wire" % first_gz)
cases = [
    ("runs page /", "/"),
    ("runs page status=failed", "/?status=failed"),
    ("runs page before=deep", "/?before=%d" % ids[200]),
    ("runs page branch+trigger", "/?branch=main&trigger=push"),
    ("runs page q=wf3", "/?q=wf3"),
    ("runs page q=fix (1%)", "/?q=fix%3A"),
    ("runs page q=no match", "/?q=no-such-text"),
    ("run page", "/runs/%d" % ids[len(ids) // 2]),
    ("workflows page", "/workflows"),
]
for name, path in cases:
    p50, p99 = timed(lambda: get(path))
    print("%-24s p50 %7.2f  p99 %7.2f" % (name, p50, p99))
EOF
