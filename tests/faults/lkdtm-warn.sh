#!/bin/sh
# Fault: the kernel WARNs (LKDTM) while a test runs; the guest lives on and the test completes.
echo "TAP version 13"
echo "1..1"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT
echo "ok 1 survived_warning"
