"""The local QEMU backend: one qemu-system-x86_64 per instance, user networking on 127.0.0.1, QMP to end it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from ..errors import InfraError
from ..guest.image import READY_MARKER
from ..guest.keys import ClientKey
from .base import BootError, BootInfo, Instance, MachineSpec, Pool, RunResult
from .console import ConsoleWatcher, parse_filtered_features
from .ssh import GuestSSH, banner_ready

QEMU = "qemu-system-x86_64"

# Every live QEMU, so a signal handler can reap them all (no guest outlives `farm run`).
LIVE: set[QemuInstance] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by kill_all: no new guest may start after it


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise InfraError(f"{QEMU} not found: install the Debian package qemu-system-x86")
    return path


def qemu_version() -> str:
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def command_line(spec: MachineSpec, qmp_socket: Path) -> list[str]:
    accel = ["-accel", "kvm"] if spec.accel == "kvm" else ["-accel", "tcg,tb-size=64"]
    return [
        qemu_binary(),
        "-nodefaults", "-no-user-config", "-display", "none",
        *accel,
        "-M", "pc",
        "-cpu", spec.cpu,
        "-m", f"{spec.memory_mb}M",
        "-smp", str(spec.smp),
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", spec.cmdline,
        "-serial", "stdio",
        # restrict=on: the guest reaches nothing but its forwarded port; port 0: the host picks a free one.
        "-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-no-reboot",
    ]


class QemuInstance(Instance):
    def __init__(self, spec: MachineSpec, workdir: Path, key: ClientKey, boot_timeout: float):
        self.spec = spec
        self.workdir = workdir
        self.key = key
        self.ssh: GuestSSH | None = None
        self.qmp: QEMUMonitorProtocol | None = None
        self.port = 0
        workdir.mkdir(parents=True, exist_ok=True)
        # A short socket path: AF_UNIX paths are limited to 108 bytes and run dirs can be deep.
        self.qmp_path = Path("/tmp") / f"farm-qmp-{os.getpid()}-{id(self):x}.sock"
        self.boot = BootInfo(command=command_line(spec, self.qmp_path))
        self.qemu_log = workdir / "qemu.log"
        self._stderr = open(self.qemu_log, "wb")
        start = time.monotonic()
        self.proc = subprocess.Popen(
            self.boot.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            start_new_session=True,  # Ctrl-C goes to farm, which then reaps QEMU itself
        )
        with _LIVE_LOCK:
            LIVE.add(self)
            if _STOPPING.is_set():
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.console = ConsoleWatcher(self.proc.stdout, workdir / "console.log", READY_MARKER)
        try:
            self._wait_ready(start, boot_timeout)
        except BaseException:
            self.close()
            raise

    def _qemu_stderr(self) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _boot_failed(self, why: str, crashed: bool = False) -> BootError:
        self.console.wait(lambda s: False, 0.5 if crashed else 0.1)  # let the last lines of a panic arrive
        return BootError(why, console=self.console.tail(), crashed=crashed)

    def _wait_ready(self, start: float, timeout: float) -> None:
        deadline = start + timeout
        self._connect_qmp(deadline)
        self.port = self._forwarded_port()
        ok = self.console.wait(lambda s: s.ready or s.panicked, max(0.0, deadline - time.monotonic()))
        state = self.console.state
        stderr = self._qemu_stderr()
        self.boot.filtered_features = parse_filtered_features(stderr)
        self.boot.qemu_warnings = [ln for ln in stderr.splitlines() if ln.strip()][:50]
        if state.panicked:
            raise self._boot_failed(f"guest kernel panicked during boot: {state.first_crash().line}", True)
        if self.proc.poll() is not None:
            raise self._boot_failed(f"QEMU exited with status {self.proc.returncode} during boot"
                                    f"{': ' + stderr.strip().splitlines()[-1] if stderr.strip() else ''}",
                                    crashed=bool(state.crashes))
        if not ok or not state.ready:
            raise self._boot_failed(f"guest did not reach '{READY_MARKER}' within {timeout:.0f} s")
        self.boot.seconds_to_marker = time.monotonic() - start
        # slirp accepts TCP before the guest listens: wait for the SSH banner before the real connection.
        while not banner_ready("127.0.0.1", self.port, timeout=1.0):
            if self.proc.poll() is not None or self.console.state.panicked:
                raise self._boot_failed("guest died before its SSH server answered", self.console.state.panicked)
            if time.monotonic() > deadline:
                raise self._boot_failed(f"guest SSH server never answered within {timeout:.0f} s")
            time.sleep(0.05)
        self.ssh = GuestSSH("127.0.0.1", self.port, self.spec.host_key, self.key.load(),
                            timeout=max(1.0, deadline - time.monotonic()))
        self.boot.seconds_to_ssh = time.monotonic() - start

    def _connect_qmp(self, deadline: float) -> None:
        """Connect once QEMU listens: the socket file appears at bind(), a moment before listen(),
        so a refused connection is retried until QEMU exits or the boot deadline passes."""
        while True:
            if self.proc.poll() is not None:
                raise self._boot_failed(f"QEMU exited with status {self.proc.returncode} at start: "
                                        f"{self._qemu_stderr().strip()[-500:]}")
            if time.monotonic() > deadline:
                raise self._boot_failed("QEMU never opened its QMP socket")
            if self.qmp_path.exists():
                qmp = QEMUMonitorProtocol(str(self.qmp_path))
                try:
                    qmp.connect()
                    self.qmp = qmp
                    return
                except (OSError, QMPError):
                    qmp.close()
            time.sleep(0.01)

    def _forwarded_port(self) -> int:
        text = self.qmp.cmd("human-monitor-command", **{"command-line": "info usernet"})
        for line in str(text).splitlines():
            parts = line.split()
            if parts and parts[0].startswith("TCP[HOST_FORWARD]") and "127.0.0.1" in parts:
                return int(parts[parts.index("127.0.0.1") + 1])
        raise InfraError(f"no forwarded SSH port in QEMU's 'info usernet': {text!r}")

    # --- Instance interface -------------------------------------------------------------------

    def copy(self, local: Path, remote: str) -> None:
        self.ssh.put(local, remote)

    def run(self, argv: list[str], timeout: float) -> RunResult:
        result = self.ssh.run(argv, timeout)
        if result.lost and self.proc.poll() is not None:
            result.lost += f"; QEMU exited with status {self.proc.returncode}"
        return result

    def diagnose(self) -> dict:
        return {"qemu_running": self.proc.poll() is None, "qemu_status": self.proc.returncode,
                **self.console.diagnosis()}

    def close(self) -> None:
        if self.ssh:
            self.ssh.close()
            self.ssh = None
        if self.proc.poll() is None and self.qmp:
            try:
                self.qmp.cmd("quit")
            except Exception:  # noqa: BLE001 - QEMU may be gone or wedged; killing follows
                pass
        if self.qmp:
            try:
                self.qmp.close()
            except Exception:  # noqa: BLE001
                pass
            self.qmp = None
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.console.join()
        self._stderr.close()
        self.qmp_path.unlink(missing_ok=True)
        with _LIVE_LOCK:
            LIVE.discard(self)


class QemuPool(Pool):
    def __init__(self, key: ClientKey):
        self.key = key

    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> QemuInstance:
        return QemuInstance(spec, workdir, self.key, boot_timeout)


def kill_all() -> None:
    """Last resort on SIGINT/SIGTERM: no QEMU outlives the farm."""
    with _LIVE_LOCK:
        _STOPPING.set()
        live = list(LIVE)
    for inst in live:
        try:
            os.killpg(inst.proc.pid, signal.SIGKILL)
        except OSError:
            pass
