#!/usr/bin/env bash
# Per-step overhead of `agent exec` against GNU make running the same 1,000 trivial commands
# in one invocation, sequentially and with two at a time, plus the one-step start-to-finish
# time. Both sides are measured in the same run; the ratios are what we compare.
#
#   bench/exec.sh [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-1000}"
ROUNDS="${2:-5}"

cargo build --release --quiet -p agent
AGENT="$PWD/target/release/agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gen_workflow() { # $1 = file, $2 = parallel spec lines
  {
    echo "workflow:"
    echo "  name: bench"
    echo "  stages:"
    echo "    - name: all"
    printf '%s\n' "$2"
    echo "      steps:"
    for i in $(seq 1 "$STEPS"); do
      echo "        - id: s$i"
      echo "          run: echo step $i"
    done
  } >"$1"
}
gen_workflow "$work/seq.yaml" "      parallel: false"
gen_workflow "$work/par.yaml" "      parallel: true
      max_parallel: 2"
{
  echo "workflow:"
  echo "  name: one"
  echo "  stages:"
  echo "    - name: one"
  echo "      steps:"
  echo "        - id: only"
  echo "          run: echo hello"
} >"$work/one.yaml"
{
  printf 'all:'
  for i in $(seq 1 "$STEPS"); do printf ' s%s' "$i"; done
  printf '\n.PHONY: all'
  for i in $(seq 1 "$STEPS"); do printf ' s%s' "$i"; done
  printf '\n'
  for i in $(seq 1 "$STEPS"); do printf 's%s:\n\t@echo step %s\n' "$i" "$i"; done
} >"$work/Makefile"

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

time_cmd() { # prints elapsed ns of the command, output discarded
  local t0 t1
  t0=$(now_ns)
  "$@" >/dev/null 2>&1
  t1=$(now_ns)
  echo $((t1 - t0))
}

declare -A samples
for r in $(seq 1 "$ROUNDS"); do
  # Alternate the order so neither side always runs on a warmer cache.
  samples[make_seq]+="$(time_cmd make -s -C "$work" -j1 all) "
  samples[agent_seq]+="$(time_cmd "$AGENT" exec "$work/seq.yaml" --workdir "$work") "
  samples[agent_par]+="$(time_cmd "$AGENT" exec "$work/par.yaml" --workdir "$work") "
  samples[make_par]+="$(time_cmd make -s -C "$work" -j2 all) "
  samples[agent_one]+="$(time_cmd "$AGENT" exec "$work/one.yaml" --workdir "$work") "
done

med() { echo "${samples[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
ms() { awk -v ns="$1" 'BEGIN {printf "%.2f", ns / 1e6}'; }
per_step() { awk -v ns="$1" -v n="$STEPS" 'BEGIN {printf "%.3f", ns / 1e6 / n}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

ms_seq=$(med make_seq); as_seq=$(med agent_seq)
ms_par=$(med make_par); as_par=$(med agent_par)
one=$(med agent_one)
echo "steps=$STEPS rounds=$ROUNDS (medians)"
echo "sequential: make $(ms "$ms_seq") ms ($(per_step "$ms_seq") ms/step), agent $(ms "$as_seq") ms ($(per_step "$as_seq") ms/step), agent/make = $(ratio "$as_seq" "$ms_seq")"
echo "parallel 2: make $(ms "$ms_par") ms ($(per_step "$ms_par") ms/step), agent $(ms "$as_par") ms ($(per_step "$as_par") ms/step), agent/make = $(ratio "$as_par" "$ms_par")"
echo "one step:   agent $(ms "$one") ms start to finish"
