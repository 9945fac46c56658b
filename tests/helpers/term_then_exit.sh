#!/bin/sh
# Handles SIGTERM like a well-behaved service: says so on stdout and exits with code 3.
trap 'echo "got TERM"; exit 3' TERM
echo ready
while :; do sleep 0.05; done
