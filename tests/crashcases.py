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


CASES: dict[str, Case] = {
}
EXTRA = {"LOCKDEP_CIRCULAR", "RCU_SUSPICIOUS", "KMEMLEAK"}  # kernels/patches/lkdtm-extra: the capture kernel only
