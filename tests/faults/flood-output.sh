#!/bin/sh
# Fault: a test that floods its stdout (10 MiB) before printing its result.
echo "TAP version 13"
echo "1..1"
head -c 10485760 /dev/zero | tr '\0' 'x'
echo
echo "ok 1 flooded"
