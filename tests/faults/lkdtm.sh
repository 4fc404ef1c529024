#!/bin/sh
# Fault: provoke one LKDTM crash type ($1) in the guest, for the crash catalogue's fixtures and fault rows.
# The kernel's report goes to the console; a fatal one ends the guest before "ok".
echo "TAP version 13"
echo "1..1"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
lkdtm=/sys/kernel/debug/provoke-crash/DIRECT
case "$1" in
HUNG_TASK)  # the writer sleeps in D state for good; the detector looks every hung_task_timeout_secs
	echo 5 > /proc/sys/kernel/hung_task_timeout_secs
	echo HUNG_TASK > $lkdtm &
	sleep 20 ;;
SOFTLOCKUP)  # one CPU spins with preemption off: the soft-lockup watchdog at 20 s, RCU's stall at 21 s
	# (the debug kernels' cmdline raises both for TCG; back to the kernel's defaults here)
	echo 10 > /proc/sys/kernel/watchdog_thresh
	echo 21 > /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout
	echo SOFTLOCKUP > $lkdtm &
	sleep 45 ;;
KFENCE)  # sample every allocation until one use-after-free lands in KFENCE's pool (KASAN reports once)
	echo 1 > /sys/module/kfence/parameters/sample_interval
	i=0
	while [ $i -lt 500 ] && ! dmesg | grep -q "BUG: KFENCE"; do
		echo READ_AFTER_FREE > $lkdtm
		i=$((i + 1))
	done ;;
*)
	echo "$1" > $lkdtm ;;
esac
# KMEMLEAK (kernels/patches/lkdtm-extra) is the default case: the farm's own kmemleak scan after the test finds it
echo "ok 1 provoked $1"
