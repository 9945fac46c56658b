#!/usr/bin/env bash
# Cancel under CPU load: one run of STEPS CPU-bound steps (`cpu: 0`, so all of them run at
# once however many cores there are) is cancelled through the API once every step is
# running; printed: the time from the cancel request to the run being reported `cancelled`,
# the time until no step process is left, and, as the baseline measured in the same run, the
# time a plain shell takes to SIGTERM and reap the same number of busy loops. Target: within
# the grace period (given to the steps as a 10 s `timeout`-independent default) plus 1 s;
# the busy loops obey SIGTERM at once, so the grace period is not used.
#
#   bench/cancel.sh [STEPS] [ROUNDS] [PROFILE]
#
# PROFILE is `release` (default) or `debug`; AGENT_BIN=path runs that binary instead of
# building one (to compare two builds). Needs git, curl and jq. Every process started
# here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-100}"
ROUNDS="${2:-3}"
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
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

# A tag no other process uses, in every busy loop's command line, to count them.
TAG="cancelbench$$"
repo="$work/app"
mkdir -p "$repo/.workflows"
git -C "$repo" init -q -b main
{
  echo "workflow:"
  echo "  name: busy"
  echo "  stages:"
  echo "    - name: all"
  echo "      parallel: true"
  echo "      max_parallel: $STEPS"
  echo "      steps:"
  for i in $(seq 1 "$STEPS"); do
    echo "        - id: s$i"
    echo "          resources: {cpu: 0}"
    echo "          run: \"while :; do :; done # $TAG\""
  done
} >"$repo/.workflows/busy.yaml"
git -C "$repo" add -A
git -C "$repo" commit -q -m initial

mkdir -p "$work/d"
printf 'state_dir: %s\nlisten: 127.0.0.1:0\napi_token: %s\nrepos:\n  - name: app\n    path: %s\nlimits:\n  max_concurrent_runs: 1\n' \
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
busy_count() { pgrep -fc -- "$TAG" || true; }

to_status=()
to_gone=()
to_inside=()
for round in $(seq 1 "$ROUNDS"); do
  run_id=$(api -X POST -H 'content-type: application/json' -d '{"repo":"app"}' \
    "$url/api/v1/workflows/busy/runs" | jq -r .run_id)
  deadline=$(( $(now_ms) + 120000 ))
  until [ "$(busy_count)" -ge "$STEPS" ]; do
    (( $(now_ms) < deadline )) || { echo "steps never all ran ($(busy_count) of $STEPS)" >&2; api "$url/api/v1/runs/$run_id" | head -c 2000 >&2; cat "$work/d/daemon.log" >&2; exit 1; }
    sleep 0.1
  done
  sleep 1 # every loop is spinning
  t0=$(now_ms)
  api -X POST "$url/api/v1/runs/$run_id/cancel" >/dev/null
  gone=""
  deadline=$(( t0 + 60000 ))
  while :; do
    if [ -z "$gone" ] && [ "$(busy_count)" = 0 ]; then gone=$(( $(now_ms) - t0 )); fi
    status=$(api "$url/api/v1/runs/$run_id" | jq -r .status)
    if [ "$status" = cancelled ]; then break; fi
    (( $(now_ms) < deadline )) || { echo "run never cancelled" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(now_ms)
  until [ -n "$gone" ]; do
    [ "$(busy_count)" = 0 ] && gone=$(( $(now_ms) - t0 ))
    sleep 0.01
  done
  to_status+=( $(( t1 - t0 )) )
  to_gone+=( "$gone" )
  # Inside the daemon: from the cancel request reaching the scheduler (its log line) to
  # the run's `finished_at`; the client's figures above also hold curl's own start-up,
  # which takes seconds on a machine this busy.
  got=$(grep "cancelled by request run=$run_id " "$work/d/daemon.log" | tail -1 | awk '{print $1}')
  fin=$(api "$url/api/v1/runs/$run_id" | jq -r .finished_at)
  inside=$(( $(date -d "$fin" +%s%3N) - $(date -d "$got" +%s%3N) ))
  to_inside+=( "$inside" )
  echo "round $round: client: cancel -> run cancelled ${to_status[-1]} ms, -> no step process left $gone ms; daemon: cancel received -> run finished $inside ms"
done
kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""

# Baseline: a shell starts the same busy loops, then SIGTERMs and reaps them.
base=()
for round in $(seq 1 "$ROUNDS"); do
  pids=()
  for i in $(seq 1 "$STEPS"); do bash -c "while :; do :; done # $TAG" & pids+=( $! ); done
  sleep 1
  t0=$(now_ms)
  kill -TERM "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  base+=( $(( $(now_ms) - t0 )) )
done
s=$(printf '%s\n' "${to_status[@]}" | median)
g=$(printf '%s\n' "${to_gone[@]}" | median)
b=$(printf '%s\n' "${base[@]}" | median)
i=$(printf '%s\n' "${to_inside[@]}" | median)
echo "cancel of $STEPS CPU-bound steps, median of $ROUNDS: run cancelled after $s ms, processes gone after $g ms (target: grace + 1 s; the loops obey TERM at once, so <= 1000 ms)"
echo "inside the daemon: cancel received -> run finished, median $i ms"
echo "baseline: shell kill -TERM + wait of $STEPS busy loops, median $b ms"
awk -v a="$s" -v i="$i" -v b="$b" 'BEGIN { if (b < 1) b = 1; printf "ratio cancel / baseline: client %.1f, daemon %.1f\n", a / b, i / b }'
