#!/usr/bin/env bash
# The output path (step pipe -> lines -> log file / terminal), with the release binary:
#
# 1. Daemon, a step printing LINES short lines (`seq LINES`): the step's own time and the
#    run's time (from the run's report), against the floor `seq LINES > FILE`; the daemon's
#    RSS before, its peak during the run (VmHWM, and the highest VmRSS sampled) and after.
# 2. Daemon, a step printing YES_BYTES bytes of `yes`: the same figures, against the floor
#    `yes | head -c YES_BYTES > /dev/null`.
# 3. `agent exec` of a one-step workflow printing `seq LINES` (its output to /dev/null):
#    wall time and peak RSS (GNU time's maximum resident set size) against `seq LINES | cat`.
#
# Every figure is the median of ROUNDS; ratios are against the floor measured in the same run.
#
#   bench/output.sh [LINES] [YES_BYTES] [ROUNDS]
#
# Needs curl, jq and /usr/bin/time. Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES="${1:-1000000}"
YES_BYTES="${2:-2000000000}"
ROUNDS="${3:-3}"
TOKEN=bench-token

cargo build --release --quiet -p agent --bin agent
AGENT="$PWD/target/release/agent"
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
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
status_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
elapsed_ms() { # runs the command, output discarded, prints wall ms
  local t0 t1
  t0=$(now_ns)
  "$@" >/dev/null 2>&1
  t1=$(now_ns)
  awk -v ns="$((t1 - t0))" 'BEGIN {printf "%.1f", ns / 1e6}'
}

# ------------------------------------------------------------------ the repository
repo="$work/app"
mkdir -p "$repo/.workflows"
git -C "$repo" init -q -b main
for wf in seq yes; do
  case $wf in
    seq) cmd="seq $LINES" ;;
    yes) cmd="yes | head -c $YES_BYTES" ;;
  esac
  cat >"$repo/.workflows/$wf.yaml" <<EOF
workflow:
  name: out-$wf
  stages:
    - name: main
      steps:
        - id: out
          run: $cmd
EOF
done
git -C "$repo" add -A
git -C "$repo" commit -q -m workflows

# ------------------------------------------------------------------ the daemon
dir="$work/daemon"
mkdir -p "$dir"
printf 'state_dir: %s\nlisten: 127.0.0.1:0\napi_token: %s\nrepos:\n  - name: app\n    path: %s\n' \
  "$dir/state" "$TOKEN" "$repo" >"$dir/agent.yaml"
RUST_LOG=warn "$AGENT" daemon --config "$dir/agent.yaml" >"$dir/daemon.log" 2>&1 &
daemon_pid=$!
deadline=$(( $(now_ms) + 30000 ))
until [ -s "$dir/state/daemon.addr" ] && url="http://$(cat "$dir/state/daemon.addr")" \
    && curl -sf "$url/health" >/dev/null 2>&1; do
  if (( $(now_ms) > deadline )); then echo "daemon did not start:" >&2; cat "$dir/daemon.log" >&2; exit 1; fi
  sleep 0.02
done
api() { curl -sf -H "Authorization: Bearer $TOKEN" "$url$1"; }
post() { curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{}' "$url$1"; }

# daemon_round WORKFLOW: one run; prints "run_ms step_ms max_rss_kib"
daemon_round() {
  local id run status max_rss=0 rss
  id=$(post "/api/v1/workflows/$1/runs" | jq -r .run_id)
  local deadline=$(( $(now_ms) + 600000 ))
  while :; do
    rss=$(status_kib "$daemon_pid" VmRSS)
    (( rss > max_rss )) && max_rss=$rss
    run=$(api "/api/v1/runs/$id")
    status=$(jq -r .status <<<"$run")
    case $status in succeeded | failed | cancelled) break ;; esac
    (( $(now_ms) < deadline )) || { echo "run $id still $status" >&2; exit 1; }
    sleep 0.02
  done
  [ "$status" = succeeded ] || { echo "run $id $status: $run" >&2; exit 1; }
  jq -r --arg m "$max_rss" '"\(.duration_ms) \([.stages[].steps[] | select(.id == "out")][0].duration_ms) \($m)"' <<<"$run"
}

# daemon_case NAME WORKFLOW FLOOR_CMD...
daemon_case() {
  local name="$1" wf="$2"
  shift 2
  local runs=() steps=() floors=() max_rss=0 before after hwm
  before=$(status_kib "$daemon_pid" VmRSS)
  for _ in $(seq 1 "$ROUNDS"); do
    floors+=( "$(elapsed_ms "$@")" )
    read -r r s m <<<"$(daemon_round "$wf")"
    runs+=( "$r" ); steps+=( "$s" )
    (( m > max_rss )) && max_rss=$m
  done
  sleep 1
  after=$(status_kib "$daemon_pid" VmRSS)
  hwm=$(status_kib "$daemon_pid" VmHWM)
  local rm sm fm
  rm=$(printf '%s\n' "${runs[@]}" | median)
  sm=$(printf '%s\n' "${steps[@]}" | median)
  fm=$(printf '%s\n' "${floors[@]}" | median)
  echo "daemon $name: run ${rm} ms, step ${sm} ms (run - step = $(awk -v a="$rm" -v b="$sm" 'BEGIN {print a - b}') ms: checkout, recording, end), floor ${fm} ms; run/step = $(ratio "$rm" "$sm"), run/floor = $(ratio "$rm" "$fm")"
  echo "daemon $name: RSS before $(kib_to_mib "$before") MiB, max sampled $(kib_to_mib "$max_rss") MiB, VmHWM $(kib_to_mib "$hwm") MiB, after $(kib_to_mib "$after") MiB"
}

echo "lines=$LINES yes_bytes=$YES_BYTES rounds=$ROUNDS (medians)"
daemon_case "seq $LINES" out-seq sh -c "seq $LINES > '$work/floor.txt'"
daemon_case "yes $YES_BYTES B" out-yes sh -c "yes | head -c $YES_BYTES > /dev/null"
kill "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=""

# ------------------------------------------------------------------ agent exec
cp "$repo/.workflows/seq.yaml" "$work/exec-seq.yaml"
# measure CMD...: prints "wall_ms max_rss_kib"
measure() {
  local out="$work/time.txt" t0 t1
  t0=$(now_ns)
  /usr/bin/time -f '%M' -o "$out" "$@" >/dev/null 2>&1
  t1=$(now_ns)
  echo "$(awk -v ns="$((t1 - t0))" 'BEGIN {printf "%.1f", ns / 1e6}') $(tail -n 1 "$out")"
}
ex_t=(); ex_m=(); fl_t=(); fl_m=()
for _ in $(seq 1 "$ROUNDS"); do
  read -r t m <<<"$(measure sh -c "seq $LINES | cat")"; fl_t+=( "$t" ); fl_m+=( "$m" )
  read -r t m <<<"$(measure "$AGENT" exec "$work/exec-seq.yaml" --workdir "$work")"; ex_t+=( "$t" ); ex_m+=( "$m" )
done
et=$(printf '%s\n' "${ex_t[@]}" | median); em=$(printf '%s\n' "${ex_m[@]}" | median)
ft=$(printf '%s\n' "${fl_t[@]}" | median); fm=$(printf '%s\n' "${fl_m[@]}" | median)
echo "exec seq $LINES: agent ${et} ms, $(kib_to_mib "$em") MiB peak; floor (seq | cat) ${ft} ms, $(kib_to_mib "$fm") MiB; time ratio = $(ratio "$et" "$ft")"
