"""`farm doctor`: what this host can do, and whether the farm can run here at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .catalog import Catalog
from .errors import FarmError
from .guest import image
from .paths import cache_root
from .vm import accel, qemu


def check(root: Path) -> tuple[bool, list[str]]:
    ok = True
    lines = []

    def item(good: bool, what: str, fatal: bool = True) -> None:
        nonlocal ok
        lines.append(f"[{'ok' if good else ('FAIL' if fatal else 'warn')}] {what}")
        if not good and fatal:
            ok = False

    try:
        item(True, f"QEMU: {qemu.qemu_version()} ({qemu.qemu_binary()})")
    except FarmError as e:
        item(False, str(e))
    acc = accel.probe("auto")
    item(True, f"accelerator: {acc.name} ({acc.reason})")
    for tool, pkg in ((image.BUSYBOX, "busybox-static"), (image.DROPBEAR, "dropbear-bin"),
                      (image.DROPBEARKEY, "dropbear-bin")):
        item(tool.exists(), f"{tool} ({pkg})")
    item(shutil.which("gcc") is not None, "gcc (builds static test programs)")
    try:
        catalog = Catalog(root)
        item(True, f"data: {len(catalog.cpus)} CPU models, {len(catalog.kernels)} kernels, "
                   f"{len(catalog.tests)} tests, {len(catalog.jobs)} jobs in {root}")
    except FarmError as e:
        item(False, f"data files: {e}")
    cache = cache_root()
    probe = cache if cache.exists() else cache.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    item(free > 2 << 30, f"disk: {free / 2**30:.1f} GiB free for the cache at {cache}", fatal=free < 512 << 20)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    cores = os.cpu_count() or 1
    item(True, f"cores: {cores}, load {load:.1f}, so {max(1, round(cores - load))} guest(s) in parallel")
    return ok, lines
