"""`farm doctor`: what this host can do, and whether the farm can run here at all."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from . import hostdeps
from .capacity import default_slots
from .catalog import Catalog
from .errors import FarmError, InfraError
from .guest import image
from .paths import cache_root
from .vm import accel, qemu
from .vm.base import HostLost


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
    gone = hostdeps.missing()
    item(not gone, "host programs: " + (f"all {len(hostdeps.FARM)} there" if not gone else "missing " + ", ".join(
        f"{prog} (install {pkg}: {why})" for prog, pkg, why in gone)))
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
    item(True, f"guests in parallel by default: {default_slots()} (cores and available memory)")
    return ok, lines


def check_hosts(inventory: Path) -> tuple[bool, list[str]]:
    """`farm doctor --hosts FILE`: each host reachable, its key known, QEMU there, its accelerator, disk."""
    from . import hosts as hostfile
    from .guest.keys import client_key
    from .vm.remote import RemotePool

    ok = True
    lines: list[str] = []

    def item(good: bool, what: str, fatal: bool = True) -> None:
        nonlocal ok
        lines.append(f"[{'ok' if good else ('FAIL' if fatal else 'warn')}] {what}")
        ok = ok and (good or not fatal)

    try:
        hosts = hostfile.load(inventory)
    except FarmError as e:
        return False, [f"[FAIL] {e}"]
    key = client_key(cache_root() / "keys")
    for host in hosts:
        pool = RemotePool(host, key)
        where = f"{host.user}@{host.address}:{host.port}"
        try:
            pool.connect()
        except (InfraError, HostLost) as e:
            item(False, f"host {host.name}: {e}")
            continue
        try:
            item(True, f"host {host.name} ({where}): reachable, host key known, {host.slots} slot(s)")
            try:
                item(True, f"host {host.name}: QEMU: {pool.qemu_version()}")
            except InfraError as e:
                item(False, str(e))
            name, reason = pool.probe_accel()
            item(True, f"host {host.name}: accelerator: {name} ({reason})")
            status, _, err = pool.exec(f"mkdir -p {shlex.quote(host.workdir)} && test -w {shlex.quote(host.workdir)}")
            item(status == 0, f"host {host.name}: working directory {host.workdir} "
                              f"{'writable' if status == 0 else 'not writable: ' + err.strip()[:200]}")
            free = pool.disk_free()
            item(free > 2 << 30, f"host {host.name}: disk: {free / 2**30:.1f} GiB free at {host.workdir}",
                 fatal=free < 512 << 20)
        except (InfraError, HostLost) as e:
            item(False, f"host {host.name}: {e}")
        finally:
            pool.close()
    return ok, lines
