"""The local QEMU backend: one qemu-system-x86_64 per instance on this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from functools import lru_cache
from pathlib import Path

from ..errors import InfraError
from ..fsutil import atomic_write, private_dir
from ..guest.keys import ClientKey
from ..paths import cache_root
from .base import MachineSpec, Pool
from .boot import QEMU, QemuHost, QemuInstance, QemuProcess, command_line, create_instance, snapshot_key
from .qmp import Qmp, connect_retrying
from .ssh import banner_ready


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise InfraError(f"{QEMU} not found: install the Debian package qemu-system-x86")
    return path


@lru_cache(maxsize=1)
def qemu_version() -> str:
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


class LocalProcess(QemuProcess):
    def __init__(self, spec: MachineSpec, workdir: Path, incoming: str | None = None):
        # A short socket path: AF_UNIX paths are limited to 108 bytes and run dirs can be deep.
        self.qmp_path = Path("/tmp") / f"farm-qmp-{os.getpid()}-{id(self):x}.sock"
        self.command = command_line(spec, str(self.qmp_path), qemu_binary(), incoming)
        self.qemu_log = workdir / "qemu.log"
        self._stderr = open(self.qemu_log, "wb")
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            start_new_session=True,  # Ctrl-C goes to farm, which then reaps QEMU itself
        )
        self.console = self.proc.stdout
        self.pid = self.proc.pid
        self.qmp_path_text = str(self.qmp_path)

    def exit_status(self) -> int | None:
        return self.proc.poll()

    def stderr_text(self) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def connect_qmp(self, deadline: float) -> Qmp:
        return connect_retrying(self.command[0], lambda: str(self.qmp_path) if self.qmp_path.exists() else None,
                                deadline, lambda: self.proc.poll() is None)

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def release(self) -> None:
        self._stderr.close()
        self.qmp_path.unlink(missing_ok=True)


SNAPSHOT_CACHE_MB = int(os.environ.get("FARM_SNAPSHOT_CACHE_MB", "3000"))


def prune_snapshots(folder: Path, keep: Path | None = None, limit_mb: int = SNAPSHOT_CACHE_MB) -> list[Path]:
    """Keep the snapshot cache under its limit: the least recently used go first (a restore reads a file,
    which refreshes its access time; a save writes it). Files of an older snapshot format always go."""
    files = [p for p in folder.iterdir() if p.is_file() and p != keep and p.suffix != ".json"]
    dropped = [p for p in files if p.suffix != ".vmstate" and ".part-" not in p.name]
    files = [p for p in files if p.suffix == ".vmstate"]
    for p in list(files):  # booted from a kernel the kernel cache has collected: of no use any more
        try:
            kernel = json.loads(p.with_suffix(".json").read_text()).get("kernel", "")
        except (OSError, ValueError):
            kernel = ""
        if kernel and not Path(kernel).exists():
            files.remove(p)
            dropped.append(p)
    files.sort(key=lambda p: max(p.stat().st_atime, p.stat().st_mtime))
    total = sum(p.stat().st_size for p in files) + (keep.stat().st_size if keep and keep.exists() else 0)
    while files and total > limit_mb << 20:
        victim = files.pop(0)
        total -= victim.stat().st_size
        dropped.append(victim)
    for p in dropped:
        p.unlink(missing_ok=True)
        p.with_suffix(".json").unlink(missing_ok=True)
    return dropped


class QemuPool(Pool, QemuHost):
    """Guests on this machine."""

    def __init__(self, key: ClientKey, slots: int = 1, accel: str = "tcg"):
        self.key = key
        self.slots = slots
        self.accel = accel
        self.name = "local"
        self._live: set[LocalProcess] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # --- QemuHost: this machine ------------------------------------------------------------------

    def start(self, spec: MachineSpec, workdir: Path, incoming: str | None = None) -> QemuProcess:
        with self._lock:  # tracked from the moment it exists, so shutdown() reaches a guest still booting
            if self._stopping.is_set():
                raise InfraError("the run is stopping: no new guest")
            proc = LocalProcess(spec, workdir, incoming)
            self._live.add(proc)
            return proc

    def snapshot_path(self, key: str) -> str:
        return str(private_dir(cache_root() / "snapshots") / f"{key[:40]}.vmstate")

    def has_snapshot(self, key: str) -> bool:
        return Path(self.snapshot_path(key)).is_file()

    def commit_snapshot(self, tmp: str, final: str, made_of: dict) -> None:
        os.chmod(tmp, 0o600)  # a booted guest's memory holds its SSH host key
        atomic_write(Path(final).with_suffix(".json"), json.dumps(made_of), mode=0o600)
        os.replace(tmp, final)
        prune_snapshots(Path(final).parent, keep=Path(final))

    def drop_snapshot(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def stream(self, port: int, timeout: float) -> socket.socket | None:
        return None

    def banner_ready(self, port: int, wait: float = 1.0) -> bool:
        return banner_ready("127.0.0.1", port, timeout=wait)

    def forget(self, proc: QemuProcess) -> None:
        with self._lock:
            self._live.discard(proc)

    # --- Pool --------------------------------------------------------------------------------------

    snapshots = True
    can_keep = True  # a local QEMU can outlive the farm (its own session), reached on 127.0.0.1

    def snapshot_key(self, spec: MachineSpec) -> str:
        return snapshot_key(spec, qemu_version())

    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> QemuInstance:
        return create_instance(self, spec, workdir, self.key, boot_timeout)

    def shutdown(self) -> None:
        """On SIGINT/SIGTERM: every QEMU of this pool dies now and none starts after (none outlives farm)."""
        with self._lock:
            self._stopping.set()
            live = list(self._live)
        for proc in live:
            proc.kill()

    def describe(self) -> dict:
        return {"kind": "qemu", "slots": self.slots, "accel": self.accel, "qemu": qemu_version()}

    def qemu_version(self) -> str:
        return qemu_version()


def pools(options) -> list[Pool]:
    """The registry's entry: this machine's pool, `options.slots` guests at once."""
    accel = options.local_accel.name if options.local_accel else "tcg"
    return [QemuPool(options.key, options.slots, accel)]
