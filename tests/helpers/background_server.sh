#!/bin/sh
# Starts a long-lived process that outlives this script on purpose (like a test server
# deployed by a step) and exits at once. The server keeps stdout open and writes to it now and
# then. $1: unique sleep duration to find it in /proc.
tag=${1:?usage: background_server.sh UNIQUE_SECONDS}
( while :; do echo tick; sleep "$tag"; done ) &
echo started
