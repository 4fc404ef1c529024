"""The remote backend: QEMU on a farm host, driven over SSH with fabric.

Per host, one SSH connection (fabric, host key checked against known_hosts, nothing auto-accepted) carries
everything: kernel and initrd copied once per digest into the host's working directory, QEMU started in an
exec channel whose stdout is the guest's serial console (streamed here to console.log) and whose stderr is
QEMU's own messages (to qemu.log), QMP relayed through another exec channel, and the guest's SSH reached
through a direct-tcpip channel to the forwarded port on the host's loopback. The boot sequence itself is
farm/vm/boot.py, the same as for local guests. A host that stops answering raises HostLost: the executor
gives its cells to another pool.

On the host, QEMU runs under a small sh wrapper that kills it when the channel's stdin closes, so a
vanished orchestrator never leaves a guest behind.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import threading
import time
import uuid
from pathlib import Path

import fabric
import paramiko
from invoke.exceptions import CommandTimedOut

from ..errors import InfraError
from ..fsutil import file_digest_cached
from ..guest.keys import ClientKey
from ..hosts import Host
from .accel import kvm_problem
from .base import HostLost, MachineSpec, Pool
from .boot import QEMU, QemuHost, QemuInstance, QemuProcess, command_line, create_instance, snapshot_key
from .qmp import Qmp, connect_retrying

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")

# Relays QEMU's QMP socket on the host to this exec channel, with the host's own python3 (no farm code there).
_QMP_RELAY = r"""
import os, select, socket, sys, time
path, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        break
    except OSError:
        s.close()
        if time.time() > deadline:
            sys.exit(3)
        time.sleep(0.02)
while True:
    r, _, _ = select.select([0, s], [], [])
    if 0 in r:
        data = os.read(0, 65536)
        if not data:
            break
        s.sendall(data)
    if s in r:
        data = s.recv(65536)
        if not data:
            break
        os.write(1, data)
"""


class HostKeyRejected(InfraError):
    """The host's key is not in known_hosts, or differs from it: the farm never accepts it by itself."""


class RemotePool(Pool, QemuHost):
    """Guests on one farm host. Thread-safe: every slot of the host shares the one SSH connection."""

    def __init__(self, host: Host, key: ClientKey, accel: str = "auto", connect_timeout: float = 10.0):
        self.host = host
        self.name = host.name
        self.where = f" on {host.name}"
        self.slots = host.slots
        self.key = key
        self.requested_accel = accel
        self.accel: str | None = None  # decided by ready(): probed on the host, or as requested
        self.accel_reason = ""
        self.connect_timeout = connect_timeout
        self._version = ""
        self.uploads: list[str] = []  # digests copied to the host by this pool (the rest were already there)
        self._conn: fabric.Connection | None = None
        self._lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._present: set[str] = set()
        self._watch: threading.Thread | None = None
        self.probe_interval = 3.0  # the watchdog's `true` on the host, every this many seconds ...
        self.probe_timeout = 5.0  # ... and two answers missing this long mean the host is gone

    # --- the host connection -------------------------------------------------------------------------

    def _known_hosts(self) -> list[Path]:
        files = [self.host.known_hosts] if self.host.known_hosts else [DEFAULT_KNOWN_HOSTS.expanduser()]
        return [*files, SYSTEM_KNOWN_HOSTS]

    def connect(self) -> fabric.Connection:
        """The open connection to the host; opened (and its host key verified) on first use."""
        with self._lock:
            if self._conn and self._conn.transport and self._conn.transport.is_active():
                return self._conn
            if self._conn:
                self._conn.close()
                self._conn = None
            key_file = str(self.host.key_file) if self.host.key_file else str(self.key.path)
            conn = fabric.Connection(
                self.host.address, user=self.host.user, port=self.host.port, connect_timeout=self.connect_timeout,
                connect_kwargs={"key_filename": key_file, "allow_agent": False, "look_for_keys": False,
                                "banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout},
            )
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())  # fabric's default auto-adds
            user_file, system_file = self._known_hosts()
            try:
                if user_file.is_file():
                    conn.client.load_host_keys(str(user_file))
                if system_file.is_file():
                    conn.client.load_system_host_keys(str(system_file))
            except (OSError, paramiko.SSHException) as e:
                raise InfraError(f"host {self.name}: cannot read known_hosts: {e}") from None
            where = f"{self.host.user}@{self.host.address}:{self.host.port}"
            try:
                conn.open()
            except paramiko.BadHostKeyException as e:
                conn.close()
                shown = f"{e.key.get_name()} {e.key.get_base64()[:24]}..."
                raise HostKeyRejected(f"host {self.name} ({where}) presented a host key that differs from "
                                      f"known_hosts ({shown}): refusing it") from None
            except paramiko.AuthenticationException as e:
                conn.close()
                raise InfraError(f"host {self.name} ({where}): authentication failed: {e}") from None
            except paramiko.SSHException as e:
                conn.close()
                if "not found in known_hosts" in str(e):
                    raise HostKeyRejected(
                        f"host {self.name} ({where}): host key not in "
                        f"{' or '.join(str(p) for p in self._known_hosts())}; add it after checking its "
                        f"fingerprint (the farm never accepts a key by itself)") from None
                raise HostLost(f"host {self.name} ({where}): SSH failed: {e}") from None
            except (OSError, EOFError) as e:
                conn.close()
                raise HostLost(f"host {self.name} ({where}) is unreachable: {e}") from None
            conn.transport.set_keepalive(5)
            self._conn = conn
            return conn

    def exec(self, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a short shell command on the host: (exit status, stdout, stderr). HostLost when it is gone."""
        conn = self.connect()
        try:
            r = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut:
            if not self.alive():
                raise HostLost(f"host {self.name} stopped answering") from None
            raise InfraError(f"host {self.name}: '{command[:60]}' took longer than {timeout:.0f} s") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostLost(f"host {self.name} lost: {e}") from None
        return r.exited, r.stdout, r.stderr

    def alive(self, timeout: float = 5.0) -> bool:
        """The host still runs commands (a quick `true` over the existing connection)."""
        conn = self._conn
        transport = conn.transport if conn else None
        if not transport or not transport.is_active():
            return False
        try:
            chan = transport.open_session(timeout=timeout)
            chan.exec_command("true")
            ok = chan.status_event.wait(timeout) and chan.exit_status == 0
            chan.close()
            return bool(ok)
        except (paramiko.SSHException, OSError, EOFError):
            return False

    def transport(self) -> paramiko.Transport:
        return self.connect().transport

    def _watchdog(self, conn: fabric.Connection) -> None:
        """A host that stops answering (cut off, powered down) leaves TCP hanging for minutes: probe it, and
        when it misses twice, close its connection, so every guest on it ends now and raises HostLost."""
        misses = 0
        while self._conn is conn and conn.transport and conn.transport.is_active():
            time.sleep(self.probe_interval)
            if self._conn is not conn:
                return
            if self.alive(self.probe_timeout):
                misses = 0
                continue
            misses += 1
            if misses >= 2 and conn.transport:
                conn.transport.close()
                return

    def _start_watchdog(self) -> None:
        with self._lock:
            conn = self._conn
            if conn and not (self._watch and self._watch.is_alive()):
                self._watch = threading.Thread(target=self._watchdog, args=(conn,), daemon=True,
                                               name=f"watchdog:{self.name}")
                self._watch.start()

    def close(self) -> None:
        with self._lock:
            if self._conn:
                self._conn.close()
                self._conn = None

    # --- facts about the host ------------------------------------------------------------------------

    def probe_accel(self) -> tuple[str, str]:
        """The accelerator QEMU can use on the host, with the same checks as a local `--accel auto`."""
        if self.requested_accel in ("kvm", "tcg"):
            self.accel, self.accel_reason = self.requested_accel, f"requested with --accel {self.requested_accel}"
            return self.accel, self.accel_reason
        status, out, _ = self.exec("cat /proc/cpuinfo; echo @@farm@@; cat /proc/modules; echo @@farm@@; "
                                   "test -e /dev/kvm && echo exists; test -r /dev/kvm -a -w /dev/kvm && echo rw; true")
        cpuinfo, modules, dev = ([*out.split("@@farm@@\n"), "", ""])[:3]
        problem = kvm_problem(cpuinfo, modules, dev_exists="exists" in dev.split(), dev_rw="rw" in dev.split(),
                              user="the farm user")
        if problem:
            self.accel, self.accel_reason = "tcg", f"KVM not usable on {self.name}: {problem}"
        else:
            self.accel, self.accel_reason = "kvm", f"/dev/kvm on {self.name} usable: vmx/svm and no PVM module"
        return self.accel, self.accel_reason

    def _qemu_version(self) -> str:
        if not self._version:
            self._version = self.qemu_version()
        return self._version

    def qemu_version(self) -> str:
        status, out, err = self.exec(f"{QEMU} --version")
        if status != 0:
            raise InfraError(f"host {self.name}: {QEMU} not found (install qemu-system-x86): {err.strip()[:200]}")
        return out.splitlines()[0] if out.strip() else "unknown"

    def disk_free(self) -> int:
        """Bytes free where the host keeps its working directory (its nearest existing parent)."""
        w = shlex.quote(self.host.workdir)
        status, out, err = self.exec(f"d={w}; while [ ! -d \"$d\" ]; do d=$(dirname \"$d\"); done; "
                                     f"df -Pk \"$d\" | tail -1")
        parts = out.split()
        if status != 0 or len(parts) < 4:
            raise InfraError(f"host {self.name}: df failed: {err.strip()[:200]}")
        return int(parts[3]) * 1024

    def ready(self) -> None:
        """Connect, check the working directory is writable, and decide the accelerator (once)."""
        w = shlex.quote(self.host.workdir)
        status, _, err = self.exec(f"mkdir -p {w}/cache/snapshots {w}/vms && chmod 700 {w}/cache/snapshots "
                                   f"&& test -w {w}")
        if status != 0:
            raise InfraError(f"host {self.name}: working directory {self.host.workdir} is not writable: "
                             f"{err.strip()[:200]}")
        if self.accel is None:
            self.probe_accel()

    # --- kernel and initrd, once per digest ----------------------------------------------------------

    def stage(self, local: Path) -> str:
        """The host's copy of a local file, copied only when no file with its digest is there yet."""
        digest = file_digest_cached(local)
        remote = f"{self.host.workdir}/cache/{digest}/{local.name}"
        with self._upload_lock:
            if digest in self._present:
                return remote
            status, _, _ = self.exec(f"test -f {shlex.quote(remote)}")
            if status != 0:
                part = f"{remote}.part-{uuid.uuid4().hex[:8]}"
                self.exec(f"mkdir -p {shlex.quote(os.path.dirname(remote))}")
                try:
                    self.connect().put(str(local), part)
                except (paramiko.SSHException, OSError, EOFError) as e:
                    if not self.alive():
                        raise HostLost(f"host {self.name} lost while copying {local.name}: {e}") from None
                    raise InfraError(f"host {self.name}: copying {local} failed: {e}") from None
                status, _, err = self.exec(f"mv -f {shlex.quote(part)} {shlex.quote(remote)}")
                if status != 0:
                    raise InfraError(f"host {self.name}: {err.strip()[:200]}")
                self.uploads.append(digest)
            self._present.add(digest)
        return remote

    # --- QemuHost: the farm host ----------------------------------------------------------------------

    def start(self, spec: MachineSpec, workdir: Path, incoming: str | None = None) -> QemuProcess:
        return RemoteProcess(self, spec, workdir, incoming)

    def snapshot_path(self, key: str) -> str:
        return f"{self.host.workdir}/cache/snapshots/{key[:40]}.vmstate"

    def has_snapshot(self, key: str) -> bool:
        return self.exec(f"test -f {shlex.quote(self.snapshot_path(key))}")[0] == 0

    def commit_snapshot(self, tmp: str, final: str, made_of: dict) -> None:
        status, _, err = self.exec(f"chmod 600 {shlex.quote(tmp)} && mv -f {shlex.quote(tmp)} {shlex.quote(final)}")
        if status != 0:
            raise InfraError(f"host {self.name}: keeping the snapshot failed: {err.strip()[:200]}")

    def drop_snapshot(self, path: str) -> None:
        self.exec(f"rm -f {shlex.quote(path)}")

    def stream(self, port: int, timeout: float = 10.0) -> paramiko.Channel:
        """A TCP stream to the guest's forwarded port on the host's loopback."""
        try:
            return self.transport().open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0),
                                                 timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise InfraError(f"tunnel to 127.0.0.1:{port} on {self.name} failed: {e}") from None

    def banner_ready(self, port: int, wait: float = 1.0) -> bool:
        try:
            chan = self.stream(port, timeout=2.0)
        except InfraError:
            return False
        try:
            chan.settimeout(wait + 0.2)  # the round trip to the host comes on top
            return chan.recv(4).startswith(b"SSH-")
        except (OSError, EOFError, paramiko.SSHException):
            return False
        finally:
            chan.close()

    def check(self) -> None:
        if not self.alive():
            raise HostLost(f"host {self.name} stopped answering")

    # --- Pool -------------------------------------------------------------------------------------------

    snapshots = True

    def snapshot_key(self, spec: MachineSpec) -> str:
        return snapshot_key(spec, self._qemu_version())

    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> QemuInstance:
        try:
            self.ready()
            self._start_watchdog()
        except HostKeyRejected as e:
            raise HostLost(str(e)) from None
        except InfraError as e:
            if isinstance(e, HostLost) or not self.alive():
                raise HostLost(str(e)) from None
            raise
        return create_instance(self, spec, workdir, self.key, boot_timeout)

    def shutdown(self) -> None:
        """On SIGINT/SIGTERM: cut the connection. Each wrapper on the host then ends its QEMU, and every
        worker blocked on a guest of this host returns at once."""
        conn = self._conn
        if conn and conn.transport:
            conn.transport.close()

    def describe(self) -> dict:
        return {"kind": "remote", "address": self.host.address, "port": self.host.port, "slots": self.slots,
                "workdir": self.host.workdir, "accel": self.accel, "accel_reason": self.accel_reason}


class _ChannelReader:
    """A channel's stdout as the blocking stream ConsoleWatcher reads (b'' at the end)."""

    def __init__(self, chan: paramiko.Channel):
        self.chan = chan

    def read(self, n: int) -> bytes:
        try:
            return self.chan.recv(n)
        except (OSError, EOFError, paramiko.SSHException):
            return b""


def _launcher(cmd: list[str], vm_dir: str) -> str:
    """sh that runs QEMU (console on stdout, messages on stderr) and kills it once our channel closes."""
    d = shlex.quote(vm_dir)
    return (
        f"mkdir -p {d} || exit 125; exec 3<&0; "
        f"{shlex.join(cmd)} </dev/null & q=$!; echo $q > {d}/pid; "
        # the watchdog: a builtin read on the channel's stdin; EOF means the orchestrator is gone or done
        f"( while read -r _; do :; done; kill $q 2>/dev/null; sleep 3; kill -9 $q 2>/dev/null ) <&3 >/dev/null 2>&1 & "
        f"w=$!; exec 3<&-; wait $q; s=$?; kill $w 2>/dev/null; rm -rf {d}; exit $s"
    )


def _pump(a, b, done: threading.Event) -> None:
    """Copy bytes from a to b (socket or channel) until either side closes."""
    try:
        while not done.is_set():
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        done.set()
        for end in (a, b):
            try:
                end.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass


class RemoteProcess(QemuProcess):
    """QEMU in an exec channel on a farm host."""

    def __init__(self, pool: RemotePool, spec: MachineSpec, workdir: Path, incoming: str | None = None):
        self.pool = pool
        self.vm_dir = f"{pool.host.workdir}/vms/{uuid.uuid4().hex[:12]}"
        self.qmp_path = f"{self.vm_dir}/qmp.sock"
        remote_spec = dataclasses.replace(spec, kernel=Path(pool.stage(spec.kernel)),
                                          initrd=Path(pool.stage(spec.initrd)))
        self.command = command_line(remote_spec, self.qmp_path, QEMU, incoming)  # the host's QEMU, on its PATH
        try:
            self.chan = pool.transport().open_session(timeout=10)
            self.chan.exec_command(_launcher(self.command, self.vm_dir))
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostLost(f"host {pool.name}: starting QEMU failed: {e}") from None
        self.qemu_log = workdir / "qemu.log"
        self._log = open(self.qemu_log, "wb")
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True, name=f"qemu-stderr:{workdir}")
        self._stderr_thread.start()
        self.console = _ChannelReader(self.chan)
        self._relays: list[threading.Event] = []

    def _pump_stderr(self) -> None:
        while True:
            try:
                data = self.chan.recv_stderr(65536)
            except (OSError, EOFError, paramiko.SSHException):
                break
            if not data:
                break
            self._log.write(data)
            self._log.flush()

    def exit_status(self) -> int | None:
        return self.chan.exit_status if self.chan.exit_status_ready() else None

    def stderr_text(self) -> str:
        if self.chan.exit_status_ready():
            self._stderr_thread.join(0.5)
        try:
            return self.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _relay(self, deadline: float) -> socket.socket | None:
        """A local socket whose other end reaches QMP on the host, through an exec channel."""
        wait = max(1.0, deadline - time.monotonic())
        try:
            chan = self.pool.transport().open_session(timeout=10)
            chan.exec_command(f"python3 -c {shlex.quote(_QMP_RELAY)} {shlex.quote(self.qmp_path)} {wait:.0f}")
        except (paramiko.SSHException, OSError, EOFError):
            self.pool.check()
            return None
        ours, theirs = socket.socketpair()
        done = threading.Event()
        self._relays.append(done)
        threading.Thread(target=_pump, args=(theirs, chan, done), daemon=True).start()
        threading.Thread(target=_pump, args=(_ChannelSock(chan), theirs, done), daemon=True).start()
        return ours

    def connect_qmp(self, deadline: float) -> Qmp:
        return connect_retrying(f"{self.pool.name}:{self.vm_dir}", lambda: self._relay(deadline), deadline,
                                lambda: self.exit_status() is None)

    def wait(self, timeout: float) -> bool:
        if not self.chan.closed and self.pool.alive(2.0):
            self.chan.status_event.wait(timeout)
        return self.chan.exit_status_ready() or self.chan.closed

    def kill(self) -> None:
        try:
            self.chan.shutdown_write()  # the wrapper's watchdog sees EOF and ends QEMU
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def release(self) -> None:
        for done in self._relays:
            done.set()
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self.chan.close()
        self._stderr_thread.join(2)
        self._log.close()


class _ChannelSock:
    """A channel's stdout read like a socket, for _pump."""

    def __init__(self, chan: paramiko.Channel):
        self.chan = chan

    def recv(self, n: int) -> bytes:
        return self.chan.recv(n)

    def sendall(self, data: bytes) -> None:
        self.chan.sendall(data)

    def close(self) -> None:
        self.chan.close()


def pools(options) -> list[RemotePool]:
    """The registry's entry: one pool per farm host of the inventory `options.arg`.

    Each host is connected and checked first: a host key that is not known stops the run (exit 3); a host
    that cannot be reached is left out with a warning (recorded in options.left_out)."""
    from .. import hosts as hostfile

    out: list[RemotePool] = []
    for host in hostfile.load(Path(options.arg)):
        pool = RemotePool(host, options.key, options.accel)
        try:
            pool.ready()
        except HostLost as e:
            options.note(f"warning: host {host.name} left out: {e}")
            options.left_out[host.name] = {"address": host.address, "slots": host.slots, "unreachable": str(e)}
            continue
        out.append(pool)
    if not out:
        options.note("warning: no farm host could be reached; running on this machine only")
    return out
