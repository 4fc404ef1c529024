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
    """One guest per core (TCG is CPU-bound), and no more than the available memory holds. What the machine
    has, not its load average: the load lags the farm's own kernel build by minutes."""
    cores = cores or os.cpu_count() or 1
    mem_mb = available_mb() if mem_mb is None else mem_mb
    by_memory = cores if mem_mb is None else mem_mb // (memory_mb + QEMU_OVERHEAD_MB)
    return max(1, min(cores, by_memory))
