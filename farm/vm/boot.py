"""The one QEMU boot sequence, shared by the local and the remote backend.

    start QEMU -> QMP -> the forwarded SSH port (`info usernet`) -> the init marker on the console
    -> the SSH banner (slirp accepts TCP before the guest listens) -> SSH with the pinned host key

A backend supplies only what differs, as a QemuHost: how QEMU is started and where its files live, its exit
status and stderr, a QMP connection, a stream to a port on the host's loopback, and a health check.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from ..errors import InfraError
from ..fsutil import file_digest_cached, text_digest
from ..guest.image import READY_MARKER
from ..guest.keys import ClientKey
from .accel import guest_cmdline, qemu_accel
from .base import GUEST_STOPS, BootError, BootInfo, Diagnosis, Instance, MachineSpec, RunResult
from .console import ConsoleWatcher, parse_filtered_features
from .qmp import Qmp, QmpError
from .ssh import GuestSSH

QEMU = "qemu-system-x86_64"
BANNER_POLL = 0.05  # seconds between SSH banner probes: short, and each probe costs the guest little
# How long a probe waits for the banner: slirp accepts before the guest listens and then leaves the connection
# hanging, so a first probe that waits long wastes that long. Short first, longer when the guest is slow.
BANNER_WAITS = (0.15, 0.3, 0.6, 1.0)


def command_line(spec: MachineSpec, qmp_socket: str, binary: str = QEMU, incoming: str | None = None) -> list[str]:
    """The QEMU command line of a guest (paths as seen by the host that runs it); with `incoming`, the same
    machine restored from that booted-guest snapshot file."""
    accel = ["-accel", qemu_accel(spec.accel, spec.tcg_thread)]
    return [
        binary,
        "-nodefaults", "-no-user-config", "-display", "none",
        *accel,
        "-M", "pc",
        "-cpu", spec.cpu,
        "-m", f"{spec.memory_mb}M",
        "-smp", str(spec.smp),
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", guest_cmdline(spec.cmdline, spec.accel),
        "-serial", "stdio",
        # restrict=on: the guest reaches nothing but its forwarded port; port 0: the host picks a free one.
        "-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-S",  # paused until QMP listens to it: a guest that resets in its first milliseconds is still seen
        # a guest panic is reported by the device (GUEST_PANICKED), not only by a console line; a reset
        # (triple fault, an emergency reboot) makes QEMU exit, and QMP's SHUTDOWN event says why
        "-device", "pvpanic",
        "-no-reboot",
        *(["-incoming", f"exec:cat {shlex.quote(incoming)}"] if incoming else []),
    ]


SNAPSHOT_FORMAT = "snapshot-v2"  # bump when what a snapshot holds, or how it is restored, changes


def snapshot_key(spec: MachineSpec, qemu_version: str) -> str:
    """A booted guest's snapshot is named by everything that made it: the kernel and guest image (by content),
    the CPU model, accelerator, QEMU version and the machine (memory, CPUs, command line)."""
    return text_digest(SNAPSHOT_FORMAT, file_digest_cached(spec.kernel), file_digest_cached(spec.initrd), spec.cpu,
                       spec.accel, qemu_version, str(spec.memory_mb), str(spec.smp), spec.cmdline,
                       " ".join(command_line(spec, "QMP", QEMU)[1:]).replace(str(spec.kernel), "K")
                       .replace(str(spec.initrd), "I"))



def forwarded_port(usernet: str) -> int:
    """The host port of the SSH forward, from QEMU's `info usernet` text."""
    for line in usernet.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("TCP[HOST_FORWARD]") and "127.0.0.1" in parts:
            return int(parts[parts.index("127.0.0.1") + 1])
    raise InfraError(f"no forwarded SSH port in QEMU's 'info usernet': {usernet!r}")


class QemuProcess(ABC):
    """One QEMU, wherever it runs."""

    command: list[str]
    console: BinaryIO  # the guest's serial console (QEMU's stdout)

    @abstractmethod
    def exit_status(self) -> int | None:
        """None while QEMU runs."""

    @abstractmethod
    def stderr_text(self) -> str:
        """QEMU's own messages so far."""

    @abstractmethod
    def connect_qmp(self, deadline: float) -> Qmp: ...

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """True once QEMU has exited."""

    @abstractmethod
    def kill(self) -> None: ...

    @abstractmethod
    def release(self) -> None:
        """Free what is left once QEMU is gone (log files, channels, sockets)."""


class QemuHost(ABC):
    """Where QEMU runs: this machine, or a farm host."""

    name: str = "local"
    where: str = ""  # appended to messages: "" here, " on <host>" elsewhere

    @abstractmethod
    def start(self, spec: MachineSpec, workdir: Path, incoming: str | None = None) -> QemuProcess: ...

    # Booted-guest snapshots, kept where that host keeps its kernels (a path on that host).
    @abstractmethod
    def snapshot_path(self, key: str) -> str: ...

    @abstractmethod
    def has_snapshot(self, key: str) -> bool: ...

    @abstractmethod
    def commit_snapshot(self, tmp: str, final: str, made_of: dict) -> None:
        """Give the finished file its name (atomically: a reader sees a whole snapshot or none); `made_of`
        (kernel, initrd, cpu) lets the cache drop it with the kernel it was booted from."""

    @abstractmethod
    def drop_snapshot(self, path: str) -> None: ...

    @abstractmethod
    def stream(self, port: int, timeout: float) -> socket.socket | object | None:
        """A stream to the port on the host's loopback for SSH, or None to connect to 127.0.0.1 directly."""

    @abstractmethod
    def banner_ready(self, port: int, wait: float = 1.0) -> bool: ...

    def check(self) -> None:  # noqa: B027 - a host that cannot be lost keeps the default
        """Raise HostLost when the host is gone (this machine never is)."""

    def forget(self, proc: QemuProcess) -> None:  # noqa: B027 - a host that tracks nothing keeps the default
        """That QEMU is gone: stop tracking it for the pool's shutdown()."""


class QemuInstance(Instance):
    def __init__(self, host: QemuHost, spec: MachineSpec, workdir: Path, key: ClientKey, boot_timeout: float):
        self.host = host
        self.spec = spec
        self.workdir = workdir
        self.key = key
        self.ssh: GuestSSH | None = None
        self.qmp: Qmp | None = None
        self.port = 0
        self._closed = False
        self._close_lock = threading.Lock()
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        restore = host.snapshot_path(spec.snapshot) if spec.snapshot and spec.restore else None
        self.proc = host.start(spec, workdir, incoming=restore)
        self.boot = BootInfo(command=self.proc.command, restored_from=spec.snapshot if restore else "")
        self.console = ConsoleWatcher(self.proc.console, workdir / "console.log", READY_MARKER)
        try:
            self._wait_ready(start, boot_timeout, restored=bool(restore))
            if spec.snapshot and not restore and not host.has_snapshot(spec.snapshot):
                self._save_snapshot(spec.snapshot, start + boot_timeout)
        except BaseException:
            self.close()
            raise

    # --- the boot sequence ----------------------------------------------------------------------------

    def _failed(self, why: str, crashed: bool = False) -> BootError:
        self.console.wait(lambda s: False, 0.5 if crashed else 0.1)  # let the last lines of a panic arrive
        return BootError(why, console=self.console.tail(), crashed=crashed, command=self.boot.command,
                         crashes=list(self.console.state.crashes[:20]))

    def _exited(self) -> str:
        stderr = self.proc.stderr_text().strip()
        last = stderr.splitlines()[-1] if stderr else ""
        return f"QEMU exited with status {self.proc.exit_status()}{self.host.where}" + (f": {last}" if last else "")

    def _wait_ready(self, start: float, timeout: float, restored: bool = False) -> None:
        deadline = start + timeout
        try:
            self.qmp = self.proc.connect_qmp(deadline)
            if restored:
                self._wait_incoming(deadline)
            self.qmp.cmd("cont")
            self.port = forwarded_port(self.qmp.hmp("info usernet"))
        except (QmpError, InfraError) as e:
            self.host.check()
            if self.proc.wait(0.5):
                # a kernel that triple-faults in its first milliseconds after `cont` is gone before
                # `info usernet` answers: QMP's SHUTDOWN event says it was the guest, not the host
                stop = self._stop_reason()
                if stop in GUEST_STOPS:
                    raise self._failed(f"{GUEST_STOPS[stop]} during boot (QEMU: {stop})", crashed=True) from None
                raise self._failed(f"{self._exited()} at start") from None
            raise self._failed(f"{e}{self.host.where}") from None
        if restored:  # the snapshot was taken after the marker and the banner: straight to SSH
            self._connect_ssh(deadline, timeout)
            self._refresh_restored()
            self.boot.seconds_to_ssh = time.monotonic() - start
            return
        ok = self.console.wait(lambda s: s.ready or s.panicked, max(0.0, deadline - time.monotonic()))
        state = self.console.state
        if self.console.closed and not self.proc.wait(1.0):  # QEMU closes its stdout as it exits
            self.host.check()  # the console ended without QEMU's exit: the connection to the host went
        stderr = self.proc.stderr_text()
        self.boot.filtered_features = parse_filtered_features(stderr)
        self.boot.qemu_warnings = [ln for ln in stderr.splitlines() if ln.strip()][:50]
        if state.panicked:
            raise self._failed(f"guest kernel panicked during boot: {state.first_crash().line}", True)
        if self.proc.exit_status() is not None:
            stop = self._stop_reason()
            if stop in GUEST_STOPS:  # no panic line: a triple fault resets a broken kernel silently
                raise self._failed(f"{GUEST_STOPS[stop]} during boot (QEMU: {stop})", crashed=True)
            raise self._failed(f"{self._exited()} during boot", crashed=bool(state.crashes))
        if not ok or not state.ready:
            self.host.check()
            raise self._failed(f"guest did not reach '{READY_MARKER}' within {timeout:.0f} s")
        self.boot.seconds_to_marker = time.monotonic() - start
        self._connect_ssh(deadline, timeout)
        self.boot.seconds_to_ssh = time.monotonic() - start

    def _connect_ssh(self, deadline: float, timeout: float) -> None:
        probes = 0
        while not self.host.banner_ready(self.port, BANNER_WAITS[min(probes, len(BANNER_WAITS) - 1)]):
            probes += 1
            if self.proc.exit_status() is not None or self.console.state.panicked:
                raise self._failed("guest died before its SSH server answered", self.console.state.panicked)
            if time.monotonic() > deadline:
                self.host.check()
                raise self._failed(f"guest SSH server never answered within {timeout:.0f} s")
            time.sleep(BANNER_POLL)
        try:
            sock = self.host.stream(self.port, timeout=10.0)
            self.ssh = GuestSSH("127.0.0.1", self.port, self.spec.host_key, self.key.load(),
                                timeout=max(1.0, deadline - time.monotonic()), sock=sock)
        except InfraError:
            self.host.check()
            raise

    # --- booted-guest snapshots -----------------------------------------------------------------------

    def _wait_incoming(self, deadline: float) -> None:
        """A restored machine loads its snapshot first (status inmigrate); it is ready to run once that ends."""
        while True:
            status = self.qmp.cmd("query-status").get("status")
            if status != "inmigrate":
                if status not in ("paused", "prelaunch", "postmigrate", "running"):
                    raise InfraError(f"restoring the snapshot failed: QEMU status {status}")
                return
            if self.proc.exit_status() is not None:
                raise InfraError("QEMU exited while loading the snapshot")
            if time.monotonic() > deadline:
                raise InfraError("loading the snapshot took longer than the boot timeout")
            time.sleep(0.01)

    def _refresh_restored(self) -> None:
        """Every restored guest would share the snapshot's clock and random pool: give it the current time and
        fresh randomness before anything else runs in it."""
        result = self.ssh.run(["sh", "-c", 'date -s "@$1" >/dev/null && cat >/dev/urandom', "sh",
                               str(int(time.time()))], timeout=10, stdin=os.urandom(256))
        if result.exit_status != 0:
            raise InfraError(f"refreshing the restored guest's clock and entropy failed: "
                             f"{result.stderr.strip() or result.lost or result.exit_status}")

    def _save_snapshot(self, key: str, deadline: float) -> None:
        """Save this freshly booted guest once (stop, migrate to a file, go on), so further cells of the
        same kernel and model start from it. Only a guest whose console showed no crash is saved."""
        if self.console.state.crashes:
            return
        t = time.monotonic()
        final = self.host.snapshot_path(key)
        tmp = f"{final}.part-{os.getpid()}-{id(self):x}"
        self.ssh.close()  # no SSH session is frozen into the snapshot: restored guests start clean
        self.ssh = None
        try:
            self.qmp.cmd("stop")
            # uncompressed: QEMU already skips zero pages, and gzip would take the CPU the guests need
            self.qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(tmp)}")
            while True:
                status = self.qmp.cmd("query-migrate").get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or time.monotonic() > deadline:
                    raise InfraError(f"saving the snapshot failed: migration {status}")
                time.sleep(0.01)
            self.host.commit_snapshot(tmp, final, {"kernel": str(self.spec.kernel), "initrd": str(self.spec.initrd),
                                                   "cpu": self.spec.cpu, "accel": self.spec.accel})
            self.boot.saved_snapshot = key
        finally:
            if not self.boot.saved_snapshot:
                self.host.drop_snapshot(tmp)
            self.qmp.cmd("cont")
        self.boot.seconds_saving = time.monotonic() - t
        self._connect_ssh(deadline, max(1.0, deadline - time.monotonic()))


    # --- Instance interface ---------------------------------------------------------------------------

    def copy(self, local: Path, remote: str) -> None:
        try:
            self.ssh.put(local, remote)
        except InfraError:
            self.host.check()
            raise

    def run(self, argv: list[str], timeout: float) -> RunResult:
        result = self.ssh.run(argv, timeout)
        if result.lost or result.timed_out:
            self.host.check()  # a dead host is not the test's failure: its cell runs elsewhere
        if result.lost and self.proc.wait(0.2):
            result.lost += f"; QEMU exited with status {self.proc.exit_status()}"
        return result

    def _stop_reason(self) -> str:
        """Why QEMU stopped, from QMP's SHUTDOWN/GUEST_PANICKED events ('' while it runs or did not say)."""
        if not self.qmp:
            return ""
        if self.proc.exit_status() is not None:  # the event is sent before QEMU exits: let it arrive
            self.qmp.wait_event(("SHUTDOWN", "GUEST_PANICKED"), 0.5)
        return self.qmp.stop_reason()

    def diagnose(self) -> Diagnosis:
        status = self.proc.exit_status()
        return Diagnosis(running=status is None, exit_status=status, host=self.host.name,
                         stop_reason=self._stop_reason(), **self.console.diagnosis())

    def detach(self) -> dict:
        """Let go of a running guest without stopping it: the SSH and QMP connections close, QEMU goes on (its
        own session, its QMP socket kept for whoever stops it later)."""
        with self._close_lock:
            self._closed = True
        if self.ssh:
            self.ssh.close()
            self.ssh = None
        if self.qmp:
            self.qmp.close()
        self.host.forget(self.proc)
        return {"pid": self.proc.pid, "qmp": self.proc.qmp_path_text, "port": self.port,
                "host_key": self.spec.host_key, "client_key": str(self.key.path)}

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self.ssh:
            self.ssh.close()
            self.ssh = None
        if self.proc.exit_status() is None and self.qmp:
            try:
                self.qmp.cmd("quit", timeout=3.0)
            except Exception:  # noqa: BLE001 - QEMU may be gone or wedged; killing follows
                pass
        if self.qmp:
            self.qmp.close()
        if not self.proc.wait(3.0):
            self.proc.kill()
            self.proc.wait(5.0)
        self.console.join()
        self.proc.release()
        self.host.forget(self.proc)


def create_instance(host: QemuHost, spec: MachineSpec, workdir: Path, key: ClientKey,
                    boot_timeout: float) -> QemuInstance:
    """A guest from its snapshot when asked and there, else booted. A snapshot that cannot be restored (damaged,
    made by another QEMU build) is dropped and the guest boots instead: a snapshot only ever saves time."""
    if spec.snapshot and spec.restore and host.has_snapshot(spec.snapshot):
        try:
            return QemuInstance(host, spec, workdir, key, boot_timeout)
        except BootError as e:
            if e.crashed:
                raise
            host.drop_snapshot(host.snapshot_path(spec.snapshot))
            (workdir / "restore-failed.txt").write_text(f"{e}\n")
    return QemuInstance(host, dataclasses.replace(spec, restore=False), workdir, key, boot_timeout)
