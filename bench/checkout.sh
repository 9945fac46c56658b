#!/usr/bin/env bash
# Checkout of a generated repository (2,000 files by default) against `git clone --local` of
# the same repository, medians of ROUNDS alternating runs, printed as a ratio (target:
# at most 1.1). The workspace is written from the mirror's objects; its `.git` borrows the
# mirror's object database (alternates) and gets an index with the files' stat data;
# `git clone --local` hardlinks the objects and checks out through its index.
#
#   bench/checkout.sh [FILES] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
FILES="${1:-2000}"
ROUNDS="${2:-7}"

cargo build --release --quiet -p agent --example checkout_bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The repository: FILES files of 0.2-8 KiB text in 50 directories (two levels), one
# executable in ten, two commits, packed like a repository that has been gc'ed.
repo="$work/repo"
mkdir -p "$repo"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
git -C "$repo" init -q -b main
line="the quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz"
for i in $(seq 1 "$FILES"); do
  dir="$repo/d$((i % 10))/e$((i % 50))"
  [ -d "$dir" ] || mkdir -p "$dir"
  lines=$(( (i * 7919) % 100 + 2 ))
  {
    for ((l = 0; l < lines; l++)); do printf '%s %d %d\n' "$line" "$i" "$l"; done
  } >"$dir/f$i.txt"
  if (( i % 10 == 0 )); then chmod +x "$dir/f$i.txt"; fi
done
git -C "$repo" add -A
git -C "$repo" commit -q -m "generated"
for i in $(seq 1 10 "$FILES"); do echo "changed" >>"$repo/d$((i % 10))/e$((i % 50))/f$i.txt"; done
git -C "$repo" commit -q -am "second"
git -C "$repo" gc -q

./target/release/examples/checkout_bench "$repo" "$ROUNDS"
