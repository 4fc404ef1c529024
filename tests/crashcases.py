"""The crash classes the catalogue names, each provoked with LKDTM in a real farm guest (tests/faults/lkdtm.sh on
linux-6.1-debug-lkdtm): the fixture it was captured to (tests/fixtures/crashes/NAME.log, by
tests/fixtures/crashes/capture.py), and the kind and title the farm must give it. Shared by the fixture tests
and the fault rows (tests/faultlib.py), which provoke the same crashes again in a live run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    lkdtm: str  # the crash type written to /sys/kernel/debug/provoke-crash/DIRECT (or lkdtm.sh's own)
    kind: str
    title: str
    fatal: bool = False  # panic_on_oops ends the guest
    also: tuple[tuple[str, str], ...] = ()  # other reports the same crash makes the kernel print (kind, title)
    frames: bool = True  # the report prints a stack (lockdep's "lock held when returning" does not)
    live: bool = True  # provoked again by the live rows (tests/faultlib.py crash_classes) and capture.py



# Titles as the captured consoles give them. Where LKDTM's function ends in a tail call (schedule(),
# spin_lock()), its frame is gone from the stack and the report is "in" its caller, direct_entry: what
# syzkaller would title the same trace.
CASES: dict[str, Case] = {
    "bug": Case("BUG", "bug", "kernel BUG in lkdtm_BUG", fatal=True),
    "exception-null": Case("EXCEPTION", "kasan", "KASAN: null-ptr-deref Write in lkdtm_EXCEPTION", fatal=True,
                           also=(("exception", "BUG: kernel NULL pointer dereference in lkdtm_EXCEPTION"),)),
    "page-fault-ro": Case("WRITE_RO", "exception", "BUG: unable to handle page fault in lkdtm_WRITE_RO", fatal=True),
    "warning": Case("WARNING", "warning", "WARNING in lkdtm_WARNING"),
    "hung-task": Case("HUNG_TASK", "hung-task", "INFO: task hung in direct_entry"),
    "softlockup-rcu-stall": Case("SOFTLOCKUP", "soft-lockup", "BUG: soft lockup in lkdtm_SOFTLOCKUP"),
    # The same provoked lockup, captured when RCU's stall timer fired before the watchdog (TCG timing decides
    # which reports come, so only the fixture asks for the RCU stall; the live row asks for the soft lockup).
    "rcu-stall": Case("SOFTLOCKUP", "rcu-stall", "INFO: rcu detected stall in lkdtm_SOFTLOCKUP", live=False,
                      also=(("soft-lockup", "BUG: soft lockup in lkdtm_SOFTLOCKUP"),)),
    "list-add": Case("CORRUPT_LIST_ADD", "list-corruption", "BUG: corrupted list in lkdtm_CORRUPT_LIST_ADD"),
    "refcount-inc-zero": Case("REFCOUNT_INC_ZERO", "refcount", "refcount bug in lkdtm_REFCOUNT_INC_ZERO"),
    "refcount-dec-negative": Case("REFCOUNT_DEC_NEGATIVE", "refcount", "refcount bug in lkdtm_REFCOUNT_DEC_NEGATIVE"),
    "kasan-uaf": Case("READ_AFTER_FREE", "kasan", "KASAN: use-after-free Read in lkdtm_READ_AFTER_FREE"),
    "kasan-oob": Case("SLAB_LINEAR_OVERFLOW", "kasan", "KASAN: slab-out-of-bounds Write in lkdtm_SLAB_LINEAR_OVERFLOW"),
    "kfence-uaf": Case("KFENCE", "kfence", "KFENCE: use-after-free read in lkdtm_READ_AFTER_FREE"),
    "ubsan-bounds": Case("ARRAY_BOUNDS", "ubsan", "UBSAN: array-index-out-of-bounds in lkdtm_ARRAY_BOUNDS"),
    "lockdep-lock-held": Case("SPINLOCKUP", "lockdep", "WARNING: lock held when returning to user space in direct_entry",
                              frames=False,
                              also=(("atomic-sleep", "BUG: scheduling while atomic in exit_to_user_mode_prepare"),)),
    "lockdep-circular": Case("LOCKDEP_CIRCULAR", "lockdep", "possible deadlock in lkdtm_LOCKDEP_CIRCULAR"),
    "rcu-suspicious": Case("RCU_SUSPICIOUS", "lockdep", "suspicious RCU usage in lkdtm_RCU_SUSPICIOUS"),
    "kmemleak": Case("KMEMLEAK", "kmemleak", "memory leak in direct_entry"),
}
LIVE = {name: case for name, case in CASES.items() if case.live}  # what the live rows and capture.py provoke
EXTRA = {"LOCKDEP_CIRCULAR", "RCU_SUSPICIOUS", "KMEMLEAK"}  # kernels/patches/lkdtm-extra: the capture kernel only
