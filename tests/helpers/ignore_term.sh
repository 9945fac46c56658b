#!/bin/sh
# Ignores SIGTERM (and so do the children it starts: an ignored signal stays ignored across
# exec). Prints "ready" once the trap is set, then sleeps until SIGKILL.
trap '' TERM
echo ready
while :; do sleep 0.05; done
