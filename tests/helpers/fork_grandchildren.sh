#!/bin/bash
# Leaves processes behind on purpose: one in the background of our group, one that leaves
# the group and the session with setsid, and one in the foreground. Every one sleeps with the
# unique duration given as $1 so that tests can find them in /proc.
tag=${1:?usage: fork_grandchildren.sh UNIQUE_SECONDS}
sleep "$tag" &
setsid sleep "$tag" &
echo ready
sleep "$tag"
