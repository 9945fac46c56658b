#!/bin/sh
# Writes $1 lines of 99 characters plus a newline (100 bytes each) to stdout, and the same
# to stderr, without waiting for anyone to read: a reader that does not drain both pipes
# concurrently deadlocks on it. Default 10486 lines (about 1 MiB per stream).
n=${1:-10486}
line=$(printf "%099d" 0 | tr 0 x)
yes "$line" | head -n "$n" >&2 &
yes "$line" | head -n "$n"
wait
echo done
