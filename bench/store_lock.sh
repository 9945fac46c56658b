#!/usr/bin/env bash
# The API while another process holds the database's write lock: a `sqlite3` process takes
# `BEGIN IMMEDIATE` on the daemon's database and keeps it for HOLD seconds while a manual run
# is asked for (its enqueue must wait for the lock); meanwhile `/health` and
# `GET /api/v1/runs` are asked ROUNDS times each. Printed: each route's median and worst
# latency while the lock was held. Target: under 100 ms each (store reads never wait for the
# writer, and no store call runs on the daemon's async worker threads).
#
#   bench/store_lock.sh [HOLD] [ROUNDS] [PROFILE]
#
# PROFILE is `release` (default) or `debug`; AGENT_BIN=path runs that binary instead of
# building one. Needs git, curl and sqlite3. Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
HOLD="${1:-5}"
ROUNDS="${2:-20}"
PROFILE="${3:-release}"
TOKEN=bench-token

if [ -n "${AGENT_BIN:-}" ]; then
  AGENT="$AGENT_BIN"
elif [ "$PROFILE" = release ]; then
  cargo build --release --quiet -p agent --bin agent
  AGENT="$PWD/target/release/agent"
else
  cargo build --quiet -p agent --bin agent
  AGENT="$PWD/target/debug/agent"
fi
work=$(mktemp -d)
daemon_pid=""
lock_pid=""
cleanup() {
  [ -n "$lock_pid" ] && kill "$lock_pid" 2>/dev/null && wait "$lock_pid" 2>/dev/null || true
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

repo="$work/app"
mkdir -p "$repo/.workflows"
git -C "$repo" init -q -b main
printf 'workflow:\n  name: hello\n  stages:\n    - name: main\n      steps:\n        - id: hi\n          run: echo hi\n' \
  >"$repo/.workflows/hello.yaml"
git -C "$repo" add -A
git -C "$repo" commit -q -m initial

mkdir -p "$work/d"
printf 'state_dir: %s\nlisten: 127.0.0.1:0\napi_token: %s\nrepos:\n  - name: app\n    path: %s\n' \
  "$work/d/state" "$TOKEN" "$repo" >"$work/d/agent.yaml"
RUST_LOG=info "$AGENT" daemon --config "$work/d/agent.yaml" >"$work/d/daemon.log" 2>&1 &
daemon_pid=$!
deadline=$(( $(now_ms) + 30000 ))
until [ -s "$work/d/state/daemon.addr" ] && url="http://$(cat "$work/d/state/daemon.addr")" \
    && curl -sf "$url/health" >/dev/null 2>&1; do
  if (( $(now_ms) > deadline )); then echo "daemon did not start:" >&2; cat "$work/d/daemon.log" >&2; exit 1; fi
  sleep 0.02
done
api() { curl -sf -H "Authorization: Bearer $TOKEN" "$@"; }
# One finished run, so that the listing has something to read.
deadline=$(( $(now_ms) + 30000 ))
until api -X POST -d '{}' "$url/api/v1/workflows/hello/runs" >/dev/null 2>&1; do
  if (( $(now_ms) > deadline )); then echo "workflow never listed" >&2; exit 1; fi
  sleep 0.1
done

# The external writer: holds the lock for HOLD seconds.
fifo="$work/lock.fifo"
mkfifo "$fifo"
sqlite3 "$work/d/state/agent.sqlite3" <"$fifo" >/dev/null &
lock_pid=$!
exec 3>"$fifo"
echo "PRAGMA busy_timeout=10000; BEGIN IMMEDIATE; SELECT 'locked';" >&3
sleep 0.2
locked_until=$(( $(now_ms) + HOLD * 1000 ))
api -X POST -d '{}' "$url/api/v1/workflows/hello/runs" >/dev/null 2>&1 &
post_pid=$!

health=()
runs=()
for _ in $(seq 1 "$ROUNDS"); do
  health+=("$(curl -s -o /dev/null -w '%{time_total}' "$url/health" | awk '{printf "%d", $1*1000}')")
  runs+=("$(curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -w '%{time_total}' "$url/api/v1/runs" \
    | awk '{printf "%d", $1*1000}')")
done
done_at=$(now_ms)
sleep "$(awk -v ms=$(( locked_until - $(now_ms) )) 'BEGIN {print (ms > 0 ? ms / 1000 : 0)}')"
echo "COMMIT;" >&3
exec 3>&-
wait "$lock_pid" || true
lock_pid=""
wait "$post_pid" || true

if (( done_at > locked_until )); then
  echo "warning: the requests outlasted the lock (${HOLD}s); raise HOLD or lower ROUNDS" >&2
fi
for name in health runs; do
  declare -n xs="$name"
  med=$(printf '%s\n' "${xs[@]}" | median)
  worst=$(printf '%s\n' "${xs[@]}" | sort -n | tail -1)
  echo "$name under an external write lock: median ${med} ms, worst ${worst} ms over ${ROUNDS} requests (target < 100 ms)"
done
