#!/usr/bin/env bash
# The daemon's trigger path and idle footprint, with the release binary:
#
# 1. Commit-to-run-started latency for a watched local repository: COMMITS commits, each
#    adding a line to a file, each starting one run of a one-step workflow; the latency is the
#    run's `started_at` (from the API) minus the wall-clock time `git commit` returned. Printed
#    as the median and max, and as a ratio against the median time of the `git commit` itself
#    (the baseline measured in the same run).
# 2. Idle footprint with 10 watched local repositories, after they were all looked at and a
#    settling pause: RSS (VmRSS) against the 25 MiB target and against a bare `sleep` process
#    (baseline), the thread count, and CPU time used over 10 s of idling (utime+stime from
#    /proc/PID/stat): near zero means no busy polling.
#
#   bench/daemon.sh [COMMITS]
#
# Needs git, curl and jq. Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMITS="${1:-11}"
TOKEN=bench-token

cargo build --release --quiet -p agent --bin agent
AGENT="$PWD/target/release/agent"
work=$(mktemp -d)
daemon_pid=""
sleep_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  [ -n "$sleep_pid" ] && kill "$sleep_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com

now_ms() { date +%s%3N; }

# make_repo DIR NAME: a repository whose one workflow runs on every push.
make_repo() {
  mkdir -p "$1/.workflows"
  git -C "$1" init -q -b main
  cat >"$1/.workflows/ci.yaml" <<EOF
workflow:
  name: $2
  on:
    push: {}
  stages:
    - name: build
      steps:
        - id: hello
          run: echo hello
EOF
  echo 0 >"$1/counter"
  git -C "$1" add -A
  git -C "$1" commit -q -m initial
}

# start_daemon DIR CONFIG_REPOS: starts the daemon, waits for /health; sets daemon_pid, url.
start_daemon() {
  local dir="$1"
  mkdir -p "$dir"
  printf 'state_dir: %s\nlisten: 127.0.0.1:0\napi_token: %s\n%s' \
    "$dir/state" "$TOKEN" "$2" >"$dir/agent.yaml"
  RUST_LOG=warn "$AGENT" daemon --config "$dir/agent.yaml" >"$dir/daemon.log" 2>&1 &
  daemon_pid=$!
  local deadline=$(( $(now_ms) + 30000 ))
  until [ -s "$dir/state/daemon.addr" ] && url="http://$(cat "$dir/state/daemon.addr")" \
      && curl -sf "$url/health" >/dev/null 2>&1; do
    if (( $(now_ms) > deadline )); then echo "daemon did not start:" >&2; cat "$dir/daemon.log" >&2; exit 1; fi
    sleep 0.02
  done
}

stop_daemon() {
  kill "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
}

api() { curl -sf -H "Authorization: Bearer $TOKEN" "$url$1"; }

# RFC 3339 to Unix milliseconds.
to_ms() { date -d "$1" +%s%3N; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

# ---------------------------------------------------------------- 1. latency
repo="$work/app"
make_repo "$repo" app
start_daemon "$work/d1" "repos:
  - name: app
    path: $repo
"
# Let the first look record the history.
deadline=$(( $(now_ms) + 10000 ))
until [ "$(api /api/v1/workflows | jq '.workflows | length')" = 1 ]; do
  (( $(now_ms) < deadline )) || { echo "repository never looked at" >&2; exit 1; }
  sleep 0.02
done

lat=()
git_ms=()
for i in $(seq 1 "$COMMITS"); do
  echo "$i" >"$repo/counter"
  git -C "$repo" add counter
  t0=$(now_ms)
  git -C "$repo" commit -q -m "commit $i"
  t1=$(now_ms)
  git_ms+=( $(( t1 - t0 )) )
  deadline=$(( t1 + 10000 ))
  while :; do
    started=$(api "/api/v1/runs?limit=1000" | jq -r --argjson n "$i" \
      '[.runs[] | select(.started_at != null)] | if length >= $n then (sort_by(.created_at) | .[$n-1].started_at) else empty end')
    [ -n "$started" ] && break
    (( $(now_ms) < deadline )) || { echo "no run for commit $i" >&2; cat "$work/d1/daemon.log" >&2; exit 1; }
    sleep 0.005
  done
  lat+=( $(( $(to_ms "$started") - t1 )) )
  # Let the run finish so the next commit meets an idle daemon.
  until [ "$(api "/api/v1/runs?status=running" | jq '.runs | length')" = 0 ] \
     && [ "$(api "/api/v1/runs?status=queued" | jq '.runs | length')" = 0 ]; do sleep 0.01; done
done
stop_daemon
lat_median=$(printf '%s\n' "${lat[@]}" | median)
lat_max=$(printf '%s\n' "${lat[@]}" | sort -n | tail -1)
git_median=$(printf '%s\n' "${git_ms[@]}" | median)
echo "commit -> run started, $COMMITS commits: median ${lat_median} ms, max ${lat_max} ms (all: ${lat[*]})"
echo "baseline: git commit itself, median ${git_median} ms"
awk -v a="$lat_median" -v b="$git_median" 'BEGIN { if (b < 1) b = 1; printf "ratio latency / git commit: %.2f\n", a / b }'

# ---------------------------------------------------------------- 2. idle footprint
repos_config="repos:
"
for i in $(seq 1 10); do
  make_repo "$work/r$i" "wf$i"
  repos_config+="  - name: r$i
    path: $work/r$i
"
done
start_daemon "$work/d2" "$repos_config"
deadline=$(( $(now_ms) + 30000 ))
until [ "$(api /api/v1/workflows | jq '.workflows | length')" = 10 ]; do
  (( $(now_ms) < deadline )) || { echo "not every repository was looked at" >&2; exit 1; }
  sleep 0.05
done
sleep 3 # settle: nothing is due; allocator caches are warm
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$daemon_pid/status")
threads=$(awk '/^Threads:/ {print $2}' "/proc/$daemon_pid/status")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
c0=$(ticks "$daemon_pid")
sleep 10
c1=$(ticks "$daemon_pid")
hz=$(getconf CLK_TCK)
sleep 30 & sleep_pid=$!
sleep 0.2
base_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$sleep_pid/status")
kill "$sleep_pid" 2>/dev/null || true
sleep_pid=""
stop_daemon
awk -v r="$rss_kib" -v b="$base_kib" -v t="$threads" 'BEGIN {
  printf "idle RSS, 10 watched repositories: %.1f MiB (target <= 25 MiB), %d threads\n", r / 1024, t
  printf "baseline: bare sleep process %.1f MiB; ratio %.1f\n", b / 1024, r / b }'
awk -v d="$(( c1 - c0 ))" -v hz="$hz" 'BEGIN {
  printf "idle CPU over 10 s: %d ticks = %.0f ms (%.2f%% of one core)\n", d, d * 1000 / hz, d * 100 / hz / 10 }'
