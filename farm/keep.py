"""Kept guests: `farm run --keep-failed` leaves a failed cell's guest running for a look inside.

A kept guest is its QEMU (still reachable on its forwarded port on 127.0.0.1, SSH host key pinned) plus a
record in the run directory (kept/<cell>.json) plus a watchdog process that ends it at its deadline. It never
outlives `farm shell --stop`, that deadline, or the next `farm run` into the same run directory, and it is
never left without a watchdog: a kept guest whose watchdog cannot start is stopped at once.

    python -m farm.keep watch RECORD     # the watchdog (started by keep(); not for people)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InputError
from .fsutil import atomic_write, private_dir


@dataclass
class Kept:
    cell: str
    pid: int  # QEMU's
    qmp: str  # its QMP socket: the watchdog says quit there
    port: int  # the guest's SSH port on 127.0.0.1
    host_key: str  # the guest's pinned SSH host key
    client_key: str  # the farm's private key file
    deadline: float  # time.time() when it is stopped
    kernel: str = ""
    vmlinux: str = ""
    gdb_port: int = 0
    watchdog: int = 0

    def alive(self) -> bool:
        """Is it still that QEMU (and not another process that got its pid)?"""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.qmp.encode() in cmdline

    def stop(self) -> None:
        if self.watchdog:
            try:
                os.kill(self.watchdog, signal.SIGTERM)
            except OSError:
                pass
        _end(self)


def _name(cell_id: str) -> str:
    return cell_id.replace("/", "__") + ".json"


def folder(run_dir: Path) -> Path:
    return run_dir / "kept"


def record(run_dir: Path, cell_id: str) -> Path:
    return folder(run_dir) / _name(cell_id)


def load(path: Path) -> Kept:
    try:
        return Kept(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{path}: not a kept guest's record: {e}") from None


def all_kept(run_dir: Path) -> list[tuple[Path, Kept]]:
    d = folder(run_dir)
    return [(p, load(p)) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def save(run_dir: Path, kept: Kept) -> Path:
    path = record(run_dir, kept.cell)
    private_dir(path.parent)
    atomic_write(path, json.dumps(asdict(kept), indent=1), mode=0o600)
    return path


def start_watchdog(path: Path, kept: Kept) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "farm.keep", "watch", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kept.watchdog = proc.pid
    save(path.parent.parent, kept)


def stop_all(run_dir: Path) -> list[str]:
    """Stop every kept guest of a run directory (a new `farm run` into it, or `farm shell --stop`)."""
    stopped = []
    for path, kept in all_kept(run_dir):
        kept.stop()
        path.unlink(missing_ok=True)
        stopped.append(kept.cell)
    return stopped


def _end(kept: Kept) -> None:
    """QMP quit, then SIGKILL if it is still that QEMU a moment later."""
    if not kept.alive():
        return
    try:
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.settimeout(3)
        s.connect(kept.qmp)
        f = s.makefile("rw")
        f.readline()
        for cmd in ("qmp_capabilities", "quit"):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            f.readline()
        s.close()
    except OSError:
        pass
    for _ in range(30):
        if not kept.alive():
            break
        time.sleep(0.1)
    else:
        try:
            os.kill(kept.pid, signal.SIGKILL)
        except OSError:
            pass
    Path(kept.qmp).unlink(missing_ok=True)


def _watch(path: Path) -> int:
    kept = load(path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while kept.alive() and time.time() < kept.deadline:
        time.sleep(min(1.0, max(0.05, kept.deadline - time.time())))
    _end(kept)
    path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "watch":
        sys.exit(_watch(Path(sys.argv[2])))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
