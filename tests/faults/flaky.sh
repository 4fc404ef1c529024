#!/bin/sh
# A flaky test: fails on the first attempt, passes on the retry.
echo "TAP version 13"
echo "1..1"
if [ "$FARM_ATTEMPT" = 1 ]; then echo "not ok 1 coin_toss"; exit 1; fi
echo "ok 1 coin_toss"
