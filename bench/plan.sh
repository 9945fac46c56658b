#!/usr/bin/env bash
# `agent plan` answer time: the example deployment (examples/.workflows/deploy.yaml) and a
# generated workflow of STEPS steps (10 `parallel: auto` stages of chains of 10), each
# planned ROUNDS times (text and --json); printed: the median and the worst wall time of one
# `agent plan` process, start-up included. Target: under 100 ms for both.
#
#   bench/plan.sh [STEPS] [ROUNDS] [PROFILE]
#
# PROFILE is `release` (default) or `debug`; AGENT_BIN=path runs that binary instead of
# building one. Needs python3 (for the timing). Nothing is run by the plans.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-1000}"
ROUNDS="${2:-20}"
PROFILE="${3:-release}"

if [ -n "${AGENT_BIN:-}" ]; then
  AGENT="$AGENT_BIN"
elif [ "$PROFILE" = release ]; then
  cargo build --release --quiet -p agent --bin agent
  AGENT="$PWD/target/release/agent"
else
  cargo build --quiet -p agent --bin agent
  AGENT="$PWD/target/debug/agent"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 - "$STEPS" > "$WORK/big.yaml" <<'PY'
import sys
steps = int(sys.argv[1])
per_stage = max(1, steps // 10)
print("workflow:\n  name: big\n  stages:")
n = 0
for s in range(10):
    print(f"    - name: stage{s}\n      parallel: auto\n      steps:")
    for i in range(per_stage):
        print(f"        - id: s{s}_{i}\n          run: \"true\"")
        if i % 10:
            print(f"          needs: [s{s}_{i - 1}]")
PY

measure() {
  python3 - "$ROUNDS" "$@" <<'PY'
import statistics, subprocess, sys, time
rounds, cmd = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(rounds):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t0) * 1000)
print(f"median {statistics.median(times):.1f} ms, worst {max(times):.1f} ms ({rounds} rounds)")
PY
}

echo "agent plan ($AGENT), state dir without a store"
printf '  deploy.yaml          text: '; measure "$AGENT" plan examples/.workflows/deploy.yaml --state-dir "$WORK/state"
printf '  deploy.yaml          json: '; measure "$AGENT" plan examples/.workflows/deploy.yaml --state-dir "$WORK/state" --json
printf '  %5s steps         text: ' "$STEPS"; measure "$AGENT" plan "$WORK/big.yaml" --state-dir "$WORK/state"
printf '  %5s steps         json: ' "$STEPS"; measure "$AGENT" plan "$WORK/big.yaml" --state-dir "$WORK/state" --json
