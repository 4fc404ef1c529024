"""`farm shell RUN_DIR CELL`: an interactive SSH session into a cell's guest.

Into the guest `farm run --keep-failed` kept, when it is still there; otherwise the cell's exact kernel, guest
image and CPU model are booted again (from the pair's snapshot when the cache has it) and closed when the
session ends. `--gdb` opens QEMU's gdb stub on 127.0.0.1 for that guest and prints the gdb command line.
The SSH client is the system's `ssh`, given the guest's pinned host key and the farm's key: nothing is
accepted on first use.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from . import keep
from .errors import InputError
from .results.run import Cell, Run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_argv(port: int, host_key: str, client_key: str, known_hosts: Path, command: list[str]) -> list[str]:
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    return ["ssh", "-p", str(port), "-i", client_key, "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "-o", "GlobalKnownHostsFile=/dev/null", "root@127.0.0.1",
            *([shlex.join(command)] if command else [])]  # one quoted string: ssh hands it to the guest's shell


def _gdb_line(run: Run, cell: Cell, port: int) -> str:
    build = run.builds().get(cell.kernel)
    vmlinux = (build.metadata.get("vmlinux") if build else "") or "vmlinux"
    return f"gdb {vmlinux} -ex 'target remote 127.0.0.1:{port}'"


def _session(argv: list[str]) -> int:
    return subprocess.call(argv)  # inherits the terminal: a real interactive session


def shell(run: Run, run_dir: Path, cell_id: str, command: list[str], gdb: bool = False) -> int:
    cell = next((c for c in run.cells if c.id == cell_id), None)
    if cell is None:
        raise InputError(f"{run_dir}: no cell {cell_id!r} (cells: {', '.join(c.id for c in run.cells[:8])}"
                         f"{', ...' if len(run.cells) > 8 else ''})")
    path = keep.record(run_dir, cell_id)
    with tempfile.TemporaryDirectory(prefix="farm-shell-") as tmp:
        known = Path(tmp) / "known_hosts"
        if path.is_file():
            kept = keep.load(path)
            if kept.alive():
                if gdb:
                    _kept_gdb(kept, run, cell)
                print(f"farm: shell into the kept guest of {cell_id} (127.0.0.1:{kept.port})", file=sys.stderr)
                return _session(ssh_argv(kept.port, kept.host_key, kept.client_key, known, command))
            path.unlink(missing_ok=True)
        return _boot_and_shell(run, run_dir, cell, known, command, gdb)


def _kept_gdb(kept: keep.Kept, run: Run, cell: Cell) -> None:
    from .vm.qmp import Qmp

    port = _free_port()
    qmp = Qmp(f"shell:{cell.id}")
    try:
        qmp.connect(kept.qmp)
        qmp.hmp(f"gdbserver tcp:127.0.0.1:{port}")
    finally:
        qmp.close()
    print(f"farm: gdb stub on 127.0.0.1:{port}: {_gdb_line(run, cell, port)}", file=sys.stderr)


def _boot_and_shell(run: Run, run_dir: Path, cell: Cell, known: Path, command: list[str], gdb: bool) -> int:
    import dataclasses

    from .guest.keys import client_key
    from .paths import cache_root
    from .vm.base import MachineSpec
    from .vm.qemu import QemuPool

    cmd = cell.qemu_command
    if not (cell.kernel_image and cell.initrd and cell.host_key and "-append" in cmd):
        raise InputError(f"{run_dir}: cell {cell.id} has no kept guest and its record lacks what booting it "
                         "again needs (run it again with farm run)")
    for path in (cell.kernel_image, cell.initrd):
        if not Path(path).is_file():
            raise InputError(f"{run_dir}: cell {cell.id}: {path} is gone from the cache (run it again)")

    def arg(flag: str, default: str) -> str:
        return cmd[cmd.index(flag) + 1] if flag in cmd else default

    key = client_key(cache_root() / "keys")
    spec = MachineSpec(Path(cell.kernel_image), Path(cell.initrd), arg("-append", ""), arg("-cpu", cell.cpu_qemu),
                       cell.accel or "tcg", cell.host_key, memory_mb=int(arg("-m", "512M").rstrip("M")),
                       smp=int(arg("-smp", "2")), name=f"shell:{cell.id}")
    pool = QemuPool(key, 1, spec.accel)
    spec = dataclasses.replace(spec, snapshot=pool.snapshot_key(spec), restore=True)
    workdir = Path(tempfile.mkdtemp(prefix="shell-", dir=run_dir))
    print(f"farm: booting {cell.id} again ({spec.cpu}, {spec.accel}); console in {workdir}", file=sys.stderr)
    with pool.create(spec, workdir, boot_timeout=120) as vm:
        how = "restored from its snapshot" if vm.boot.restored_from else "booted"
        print(f"farm: {how} in {vm.boot.seconds_to_ssh:.1f} s", file=sys.stderr)
        if gdb:
            port = _free_port()
            vm.qmp.hmp(f"gdbserver tcp:127.0.0.1:{port}")
            print(f"farm: gdb stub on 127.0.0.1:{port}: {_gdb_line(run, cell, port)}", file=sys.stderr)
        return _session(ssh_argv(vm.port, spec.host_key, str(key.path), known, command))


def stop(run_dir: Path, cell_id: str | None) -> list[str]:
    if cell_id is None:
        return keep.stop_all(run_dir)
    path = keep.record(run_dir, cell_id)
    if not path.is_file():
        raise InputError(f"{run_dir}: no kept guest for {cell_id}")
    keep.load(path).stop()
    path.unlink(missing_ok=True)
    return [cell_id]
