#!/usr/bin/env bash
# The step cache: a workflow whose cached step costs 2 s (`sleep 2`, then 8 MiB written to
# its `paths`) and a downstream step reading its output, run with `agent exec` cold (the
# entry removed first: the step runs and its entry is written) and warm (the step is served
# from the entry: outputs, log and the 8 MiB restored), ROUNDS times each, alternating.
# Printed: medians in ms, warm against cold, and warm against the floor measured in the
# same run (the same workflow without the slow step, so with nothing to restore).
#
#   bench/cache.sh [ROUNDS]
#
# AGENT=/path/to/agent uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"

if [ -z "${AGENT:-}" ]; then
  cargo build --release --quiet -p agent --bin agent
  AGENT="$PWD/target/release/agent"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
echo 'fn main() {}' >"$work/src/main.rs"

cat >"$work/cached.yaml" <<'EOF'
workflow:
  name: cached
  stages:
    - name: build
      steps:
        - id: build
          cache:
            inputs: ["src/**"]
            paths: [out]
          run: |
            sleep 2
            mkdir -p out
            head -c 8388608 /dev/zero > out/blob
            echo out=x >> "$AGENT_OUTPUT"
        - id: use
          run: test "${{ steps.build.outputs.out }}" = x && test -s out/blob
EOF
cat >"$work/floor.yaml" <<'EOF'
workflow:
  name: floor
  stages:
    - name: build
      steps:
        - id: build
          run: echo out=x >> "$AGENT_OUTPUT"
        - id: use
          run: test "${{ steps.build.outputs.out }}" = x
EOF

python3 - "$AGENT" "$work" "$ROUNDS" <<'EOF'
import json, os, shutil, statistics, subprocess, sys, time
agent, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = os.path.join(work, ".agent")
def run(name, extra=()):
    t = time.perf_counter()
    out = subprocess.run([agent, "exec", os.path.join(work, name), "--workdir", work, "--json", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ms = (time.perf_counter() - t) * 1000
    if out.returncode != 0:
        sys.exit("%s exited %d" % (name, out.returncode))
    steps = json.loads(out.stdout)["stages"][0]["steps"]
    return ms, steps[0]["cached"]
samples = {"floor (no slow step)": [], "cold (step runs, entry written)": [], "warm (served from the cache)": []}
for _ in range(rounds):
    samples["floor (no slow step)"].append(run("floor.yaml", ["--no-cache"])[0])
    shutil.rmtree(os.path.join(state, "cache"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
    ms, cached = run("cached.yaml")
    assert not cached
    samples["cold (step runs, entry written)"].append(ms)
    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
    ms, cached = run("cached.yaml")
    assert cached, "the second run must be served from the cache"
    samples["warm (served from the cache)"].append(ms)
med = {k: statistics.median(v) for k, v in samples.items()}
print("rounds=%d (medians, ms)" % rounds)
for k, m in med.items():
    print("%-34s %8.1f ms" % (k, m))
cold, warm, floor = med["cold (step runs, entry written)"], med["warm (served from the cache)"], med["floor (no slow step)"]
print("warm / cold: x%.3f (%.0fx faster)" % (warm / cold, cold / warm))
print("warm / floor: x%.2f (the cost of a hit: key, lookup, restoring 8 MiB)" % (warm / floor))
EOF
