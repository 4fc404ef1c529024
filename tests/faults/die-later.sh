#!/bin/sh
# Fault harness: announces itself on the console so the host can kill QEMU under it, then passes.
echo "farm-fault: kill me now" > /dev/console
sleep 8
printf 'TAP version 13\n1..1\nok 1 outlived_the_fault\n'
