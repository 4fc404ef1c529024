#!/bin/sh
# Fault: the guest's SSH server dies mid-test (the guest itself stays up).
echo "TAP version 13"
echo "1..1"
kill -9 $(pidof dropbear)
sleep 30
echo "ok 1 connection_survived"
