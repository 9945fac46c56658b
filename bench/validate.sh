#!/usr/bin/env bash
# Time of `agent validate` on a generated 1,000-step workflow (100 stages of 10 steps, with
# parameters, `${{ }}` references to earlier steps, retries and a parallel: auto stage),
# against a bare process spawn (`/bin/true`) measured in the same run. Prints the mean
# milliseconds per run of each and the ratio. Target: validate under 50 ms.
#
#   bench/validate.sh [STEPS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-1000}"
RUNS="${2:-30}"

cargo build --release --quiet -p agent
AGENT="$PWD/target/release/agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
file="$work/big.yaml"

per_stage=10
stages=$(( (STEPS + per_stage - 1) / per_stage ))
{
  echo "workflow:"
  echo "  name: big"
  echo "  metadata:"
  echo "    retry_policy: {max_attempts: 2, backoff: exponential, delay: 1}"
  echo "  parameters:"
  echo "    - {name: version, type: string, default: \"1.0\"}"
  echo "    - {name: environment, type: string, enum: [staging, production], default: staging}"
  echo "  stages:"
  n=0
  for s in $(seq 1 "$stages"); do
    echo "    - name: stage$s"
    if (( s % 10 == 0 )); then echo "      parallel: auto"; fi
    echo "      steps:"
    for k in $(seq 1 "$per_stage"); do
      n=$((n + 1))
      (( n > STEPS )) && break
      echo "        - id: s$n"
      if (( n % 2 == 0 )); then
        echo "          skill: builder"
        echo "          parameters:"
        echo "            version: \${{ parameters.version }}"
        if (( n > per_stage )); then
          echo "            input: \${{ steps.s$((n - per_stage)).output.result }}"
        fi
        echo "          timeout: 5m"
      else
        echo "          run: echo \"building \${{ parameters.environment }} step $n\""
        echo "          when: \${{ parameters.environment == 'staging' || len(parameters.version) > 0 }}"
      fi
    done
  done
} >"$file"

"$AGENT" validate "$file" >/dev/null || { echo "generated workflow is invalid" >&2; "$AGENT" validate "$file"; exit 1; }

time_runs() { # command... -> mean ns per run
  local start end
  start=$(date +%s%N)
  for _ in $(seq 1 "$RUNS"); do "$@" >/dev/null 2>&1 || true; done
  end=$(date +%s%N)
  echo $(( (end - start) / RUNS ))
}

time_runs /bin/true >/dev/null # warm up
base=$(time_runs /bin/true)
val=$(time_runs "$AGENT" validate "$file")
lines=$(wc -l <"$file")
awk -v b="$base" -v v="$val" -v n="$STEPS" -v l="$lines" -v r="$RUNS" 'BEGIN {
  printf "workflow: %d steps, %d lines; %d runs each\n", n, l, r
  printf "/bin/true (spawn baseline): %.2f ms\n", b / 1e6
  printf "agent validate:             %.2f ms\n", v / 1e6
  printf "ratio validate/spawn:       %.1fx\n", v / b
  printf "target: < 50 ms -> %s\n", (v / 1e6 < 50 ? "met" : "NOT met")
}'
