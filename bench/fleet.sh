#!/usr/bin/env bash
# Fleet throughput, with the release binary: RUNS manual runs of a one-step `true` workflow
# through one PostgreSQL database with 1, 2 and 3 agents (`store: {kind: postgres}`, nodes
# n1..n3, each its own state directory and port, all watching one local repository), and
# through a single agent on its embedded SQLite store as the baseline, in the same run.
# The runs are queued through the API round-robin over the agents, 4 requests at a time;
# the figure is RUNS over the time from the first run's `created_at` to the last run's
# `finished_at` (from the API), printed as a table with the ratio to the SQLite agent.
# Every agent runs at most `limits.max_concurrent_runs` (default 4) runs at once.
#
#   bench/fleet.sh [RUNS]        (RUNS <= 1000, default 300)
#
# AGENT=PATH uses that binary instead of building the release one.
# Needs git, curl, jq, psql and Debian's `postgresql`: without AGENT_TEST_PG_URL (a server
# whose `postgres` database it may create databases from) it runs itself under .ci/pg, which
# starts a throwaway server and removes it at the end. Every process started here is stopped
# by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-300}"
(( RUNS >= 1 && RUNS <= 1000 )) || { echo "RUNS must be 1..1000" >&2; exit 2; }
if [ -z "${AGENT_TEST_PG_URL:-}" ]; then
  exec .ci/pg "$0" "$@"
fi
TOKEN=bench-token

if [ -z "${AGENT:-}" ]; then
  cargo build --release --quiet -p agent --bin agent
  AGENT="$PWD/target/release/agent"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com

now_ms() { date +%s%3N; }
to_ms() { date -d "$1" +%s%3N; }

repo="$work/app"
mkdir -p "$repo/.workflows"
git -C "$repo" init -q -b main
cat >"$repo/.workflows/bench.yaml" <<'EOF'
workflow:
  name: bench
  on:
    manual: true
  stages:
    - name: s
      steps:
        - id: t
          run: "true"
EOF
git -C "$repo" add -A
git -C "$repo" commit -q -m initial

# A new database on the server, its URL in $db_url.
new_database() {
  local name="bench_$$_$1"
  psql -q "$AGENT_TEST_PG_URL" -c "CREATE DATABASE $name" >/dev/null
  db_url="${AGENT_TEST_PG_URL%/*}/$name"
}

urls=()
# start_agent DIR STORE_CONFIG: starts an agent, waits until it serves the workflow.
start_agent() {
  local dir="$1"
  mkdir -p "$dir"
  printf 'state_dir: %s\nlisten: 127.0.0.1:0\napi_token: %s\n%srepos:\n  - name: app\n    path: %s\n' \
    "$dir/state" "$TOKEN" "$2" "$repo" >"$dir/agent.yaml"
  AGENT_PG_URL="${db_url:-}" RUST_LOG=warn "$AGENT" daemon --config "$dir/agent.yaml" \
    >"$dir/daemon.log" 2>&1 &
  pids+=($!)
  local url="" deadline=$(( $(now_ms) + 60000 ))
  until [ -s "$dir/state/daemon.addr" ] && url="http://$(cat "$dir/state/daemon.addr")" \
      && [ "$(curl -sf -H "Authorization: Bearer $TOKEN" "$url/api/v1/workflows" 2>/dev/null \
              | jq '[.workflows[] | select(.name == "bench")] | length')" = 1 ]; do
    if (( $(now_ms) > deadline )); then echo "agent in $dir did not start:" >&2; cat "$dir/daemon.log" >&2; exit 1; fi
    sleep 0.05
  done
  urls+=("$url")
}

stop_agents() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  urls=()
}

# measure LABEL: queues RUNS runs over the agents in ${urls[@]}, waits until every one ended,
# prints "LABEL RUNS SECONDS" and appends it to $work/table.
measure() {
  local n=${#urls[@]}
  for i in $(seq 0 $(( RUNS - 1 ))); do echo "${urls[$(( i % n ))]}/api/v1/workflows/bench/runs"; done \
    | xargs -P 4 -n 1 curl -sf -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' -d '{}'
  local list="" deadline=$(( $(now_ms) + 600000 ))
  while :; do
    list=$(curl -sf -H "Authorization: Bearer $TOKEN" "${urls[0]}/api/v1/runs?limit=1000")
    [ "$(jq '[.runs[] | select(.finished_at != null)] | length' <<<"$list")" -ge "$RUNS" ] && break
    if (( $(now_ms) > deadline )); then echo "$1: runs did not finish" >&2; exit 1; fi
    sleep 0.2
  done
  local failed first last
  failed=$(jq '[.runs[] | select(.status != "succeeded")] | length' <<<"$list")
  first=$(jq -r '[.runs[].created_at] | min' <<<"$list")
  last=$(jq -r '[.runs[].finished_at] | max' <<<"$list")
  local ms=$(( $(to_ms "$last") - $(to_ms "$first") ))
  (( failed == 0 )) || echo "$1: $failed runs did not succeed" >&2
  echo "$1 $n $ms" >>"$work/table"
  echo "$1, $n agent(s): $RUNS runs in $ms ms" >&2
}

# Baseline: one agent on its embedded SQLite store.
db_url=""
start_agent "$work/sqlite" ""
measure sqlite
stop_agents

for n in 1 2 3; do
  new_database "$n"
  for i in $(seq 1 "$n"); do
    start_agent "$work/pg$n/n$i" "node: n$i
store: {kind: postgres, url_env: AGENT_PG_URL}
"
  done
  measure postgres
  stop_agents
done

echo
echo "$RUNS manual runs of a one-step \`true\` workflow, first queued to last finished ($(nproc) cores):"
awk -v runs="$RUNS" '
  BEGIN { printf "%-10s %6s %10s %8s %10s\n", "store", "agents", "seconds", "runs/s", "vs sqlite" }
  { rate = runs / ($3 / 1000); if ($1 == "sqlite") base = rate
    printf "%-10s %6d %10.2f %8.1f %9.2fx\n", $1, $2, $3 / 1000, rate, rate / base }
' "$work/table"
