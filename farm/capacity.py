"""How many guests this machine runs at once: the one rule, used by `farm run` and `farm doctor`."""

from __future__ import annotations

import os
import re
from pathlib import Path

QEMU_OVERHEAD_MB = 300  # per guest beyond its RAM: QEMU itself and TCG's translation cache (tb-size=64)


def available_mb() -> int | None:
    try:
        meminfo = Path("/proc/meminfo").read_text()
        return int(re.search(r"MemAvailable:\s+(\d+)", meminfo).group(1)) // 1024
    except (OSError, AttributeError):
        return None


def default_slots(memory_mb: int = 512, cores: int | None = None, mem_mb: int | None = None) -> int:
    """One guest per core plus one, and no more than the available memory holds. What the machine has, not
    its load average: the load lags the farm's own kernel build by minutes.

    Plus one because a cell's guest is idle part of the time (QEMU start, snapshot load, SSH handshake,
    copy and collect, the tests' own sleeps): measured on 2 cores with the XCR0 job (bench/speed.py
    --parallel, -smp 2, snapshots), 40 cells took 145-155 s at -j 2, 107-116 s at -j 3 and 178 s at -j 4
    (four 2-vCPU TCG guests on 2 cores slow the timing-bound selftests); its 30 cells without the
    selftests 31-37 s, 23-27 s and 29 s."""
    cores = cores or os.cpu_count() or 1
    mem_mb = available_mb() if mem_mb is None else mem_mb
    wanted = cores + 1
    by_memory = wanted if mem_mb is None else mem_mb // (memory_mb + QEMU_OVERHEAD_MB)
    return max(1, min(wanted, by_memory))
