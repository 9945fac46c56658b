#!/usr/bin/env bash
# Start-up cost of the release binary against GNU make with one rule (the floor, measured in
# the same run): one-step `agent exec` start to finish, `agent validate` of one file, and
# `agent --version` (exec, dynamic loading and argument parsing only), each ROUNDS times,
# alternating with make so neither side always runs on a warmer cache. Printed: medians in
# ms and each as a ratio against make. Also printed: the shared libraries the binary loads
# and the size of its relocation tables (what the dynamic loader reads before `main`).
#
#   bench/startup.sh [ROUNDS]
#
# AGENT=/path/to/agent uses that binary instead of building one (to compare builds).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-200}"

if [ -z "${AGENT:-}" ]; then
  cargo build --release --quiet -p agent --bin agent
  AGENT="$PWD/target/release/agent"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/one.yaml" <<'EOF'
workflow:
  name: one
  stages:
    - name: one
      steps:
        - id: only
          run: echo hello
EOF
printf 'all:\n\t@echo hello\n.PHONY: all\n' >"$work/Makefile"

python3 - "$AGENT" "$work" "$ROUNDS" <<'EOF'
import os, statistics, subprocess, sys, time
agent, work, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
cmds = {
    "make one rule": ["make", "-s", "-C", work, "all"],
    "agent exec one step": [agent, "exec", os.path.join(work, "one.yaml"), "--workdir", work],
    "agent validate one file": [agent, "validate", os.path.join(work, "one.yaml")],
    "agent --version": [agent, "--version"],
}
samples = {k: [] for k in cmds}
devnull = subprocess.DEVNULL
for _ in range(rounds):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        code = subprocess.call(cmd, stdout=devnull, stderr=devnull)
        samples[name].append((time.perf_counter() - t) * 1000)
        if code != 0:
            sys.exit("%s exited %d" % (" ".join(cmd), code))
floor = statistics.median(samples["make one rule"])
print("rounds=%d (medians, ms; ratio against make with one rule)" % rounds)
for name, s in samples.items():
    m = statistics.median(s)
    print("%-24s %6.2f ms  x%.2f" % (name, m, m / floor))
EOF
echo "shared libraries: $(ldd "$AGENT" | awk '{print $1}' | tr '\n' ' ')"
if command -v readelf >/dev/null; then
  echo "relocation tables: $(readelf -d "$AGENT" | awk '/\((RELASZ|RELRSZ)\)/ {printf "%s %s bytes  ", $2, $3}')"
fi
echo "binary size: $(stat -c %s "$AGENT") bytes"
