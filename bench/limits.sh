#!/usr/bin/env bash
# How fast the release binary refuses what it must refuse and stops what it must stop, with
# a bare process spawn (`/bin/true`) measured in the same run as the baseline:
#
# 1. `agent validate` of a 320-byte YAML alias bomb (9^9 nodes once expanded) and of a 50 MiB
#    file: milliseconds to the refusal (exit code 1) and peak RSS. Target: under 1 s and
#    100 MiB each.
# 2. `agent exec` of a step with `timeout: 1` that starts `sleep`s in and out of its session:
#    milliseconds from start to the run's end. Target: the timeout plus the kill grace.
# 3. A second Ctrl-C (SIGINT) to `agent exec` whose step ignores SIGTERM: milliseconds from
#    the second signal to the exit. Target: under 1 s.
#
#   bench/limits.sh [ROUNDS]
#
# Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"

cargo build --release --quiet -p agent
AGENT="$PWD/target/release/agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# A command's wall milliseconds and peak RSS (KiB), from GNU time when there is one.
measure() {
  local t0 t1
  if [ -x /usr/bin/time ]; then
    t0=$(now_ms)
    /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null 2>&1 || true
    t1=$(now_ms)
    echo "$((t1 - t0)) $(tail -1 "$work/rss")"
  else
    t0=$(now_ms)
    "$@" >/dev/null 2>&1 || true
    t1=$(now_ms)
    echo "$((t1 - t0)) -"
  fi
}

bomb="$work/bomb.yaml"
echo "a: &a [x,x,x,x,x,x,x,x,x]" >"$bomb"
prev=a
for c in b c d e f g h i; do
  echo "$c: &$c [*$prev,*$prev,*$prev,*$prev,*$prev,*$prev,*$prev,*$prev,*$prev]" >>"$bomb"
  prev=$c
done
huge="$work/huge.yaml"
{
  printf 'workflow:\n  name: huge\n  description: "'
  head -c $((50 * 1024 * 1024)) /dev/zero | tr '\0' a
  printf '"\n'
} >"$huge"

base=$(for _ in $(seq "$ROUNDS"); do measure /bin/true; done | awk '{print $1}' | median)
echo "baseline /bin/true: ${base} ms"
for f in bomb huge; do
  file="$work/$f.yaml"
  res=$(for _ in $(seq "$ROUNDS"); do measure "$AGENT" validate "$file"; done)
  ms=$(echo "$res" | awk '{print $1}' | median)
  rss=$(echo "$res" | awk '{print $2}' | sort -n | tail -1)
  echo "validate $f: ${ms} ms (median of $ROUNDS), peak RSS ${rss} KiB"
done

cat >"$work/timeout.yaml" <<'YAML'
workflow:
  name: to
  stages:
    - name: s
      steps:
        - id: slow
          run: sleep 301.5 & setsid sleep 301.5 & sleep 301.5
          timeout: 1
YAML
res=$(for _ in $(seq "$ROUNDS"); do
  t0=$(now_ms)
  "$AGENT" exec "$work/timeout.yaml" --workdir "$work" --kill-grace 1 >/dev/null 2>&1 || true
  echo $(($(now_ms) - t0))
done | median)
echo "step timeout 1 s, kill grace 1 s: run ended after ${res} ms (median)"

cat >"$work/stubborn.yaml" <<'YAML'
workflow:
  name: kill
  stages:
    - name: s
      steps:
        - id: stubborn
          run: trap '' TERM; touch started; sleep 30
YAML
res=$(for _ in $(seq "$ROUNDS"); do
  rm -f "$work/started"
  "$AGENT" exec "$work/stubborn.yaml" --workdir "$work" --kill-grace 60 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 500); do [ -e "$work/started" ] && break; sleep 0.01; done
  kill -INT "$pid"
  sleep 0.3
  t0=$(now_ms)
  kill -INT "$pid"
  wait "$pid" || true
  echo $(($(now_ms) - t0))
done | median)
echo "second Ctrl-C to exit: ${res} ms (median)"
