"""The remote backend: QEMU on a farm host, driven over SSH with fabric.

Per host, one SSH connection (fabric, host key checked against known_hosts, nothing auto-accepted) carries
everything: kernel and initrd copied once per digest into the host's working directory, QEMU started in an
exec channel whose stdout is the guest's serial console (streamed here to console.log) and whose stderr is
QEMU's own messages (to qemu.log), and the guest's SSH reached through a direct-tcpip channel to the
forwarded port on the host's loopback. A host that stops answering raises HostLost: the scheduler gives its
cells to another host.

On the host, QEMU runs under a small sh wrapper that kills it when the channel's stdin closes, so a
vanished orchestrator never leaves a guest behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import threading
import time
import uuid
import weakref
from pathlib import Path

import fabric
import paramiko
from invoke.exceptions import CommandTimedOut

from ..errors import FarmError, InfraError
from ..guest.image import READY_MARKER
from ..guest.keys import ClientKey
from ..hosts import Host
from .accel import _cpu_flags
from .base import BootError, BootInfo, HostLost, Instance, MachineSpec, Pool, RunResult
from .console import ConsoleWatcher, parse_filtered_features
from .qemu import QEMU, command_line
from .ssh import GuestSSH

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")

# Asks QEMU's QMP socket (on the host) for `info usernet`, with the host's own python3: no farm code needed there.
_QMP_USERNET = r"""
import json, socket, sys, time
path, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("QEMU never opened its QMP socket " + path)
        time.sleep(0.05)
f = s.makefile("rw")
json.loads(f.readline())
def cmd(name, **args):
    f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if "return" in msg or "error" in msg:
            return msg
cmd("qmp_capabilities")
print(cmd("human-monitor-command", **{"command-line": "info usernet"}).get("return", ""))
"""


class HostKeyRejected(InfraError):
    """The host's key is not in known_hosts, or differs from it: the farm never accepts it by itself."""


def remote_kvm_problem(cpuinfo: str, modules: str, dev_exists: bool, dev_rw: bool, dev: str = "/dev/kvm") -> str | None:
    """farm.vm.accel.kvm_problem for a host whose /dev/kvm was examined over SSH."""
    if not dev_exists:
        return f"{dev} does not exist"
    if not dev_rw:
        return f"{dev} is not readable and writable by the farm user (join the kvm group)"
    loaded = {line.split()[0] for line in modules.splitlines() if line.strip()}
    if "kvm_pvm" in loaded:
        return f"{dev} is KVM-PVM (module kvm_pvm), a software nested hypervisor that ignores -cpu"
    if not _cpu_flags(cpuinfo) & {"vmx", "svm"}:
        return f"{dev} exists but the CPU has no vmx/svm flag (nested or paravirtual KVM)"
    return None


# Every pool with a connection, so an interrupted run can cut them all at once (kill_all).
_POOLS: weakref.WeakSet = weakref.WeakSet()

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _DIGESTS_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


class RemotePool(Pool):
    """Guests on one farm host. Thread-safe: every slot of the host shares the one SSH connection."""

    def __init__(self, host: Host, key: ClientKey, accel: str = "auto", connect_timeout: float = 10.0):
        self.host = host
        self.name = host.name
        self.key = key
        self.requested_accel = accel
        self.accel: str | None = None
        self.accel_reason = ""
        self.connect_timeout = connect_timeout
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
            _POOLS.add(self)
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
        problem = remote_kvm_problem(cpuinfo, modules, "exists" in dev.split(), "rw" in dev.split())
        if problem:
            self.accel, self.accel_reason = "tcg", f"KVM not usable on {self.name}: {problem}"
        else:
            self.accel, self.accel_reason = "kvm", f"/dev/kvm on {self.name} usable: vmx/svm and no PVM module"
        return self.accel, self.accel_reason

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
        status, _, err = self.exec(f"mkdir -p {w}/cache {w}/vms && test -w {w}")
        if status != 0:
            raise InfraError(f"host {self.name}: working directory {self.host.workdir} is not writable: "
                             f"{err.strip()[:200]}")
        if self.accel is None:
            self.probe_accel()

    # --- kernel and initrd, once per digest ----------------------------------------------------------

    def stage(self, local: Path) -> str:
        """The host's copy of a local file, copied only when no file with its digest is there yet."""
        digest = _digest(local)
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

    # --- Pool interface -------------------------------------------------------------------------------

    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> RemoteInstance:
        try:
            self.ready()
            self._start_watchdog()
        except HostKeyRejected as e:
            raise HostLost(str(e)) from None
        except InfraError as e:
            if isinstance(e, HostLost) or not self.alive():
                raise HostLost(str(e)) from None
            raise
        return RemoteInstance(self, spec, workdir, boot_timeout)


def kill_all() -> None:
    """On SIGINT/SIGTERM: close every host connection. Each host's wrapper then ends its QEMU, and every
    worker blocked on a remote guest returns at once."""
    for pool in list(_POOLS):
        conn = pool._conn
        if conn and conn.transport:
            conn.transport.close()


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


class RemoteInstance(Instance):
    def __init__(self, pool: RemotePool, spec: MachineSpec, workdir: Path, boot_timeout: float):
        self.pool = pool
        self.spec = spec
        self.workdir = workdir
        self.ssh: GuestSSH | None = None
        self.port = 0
        self.chan: paramiko.Channel | None = None
        self.console: ConsoleWatcher | None = None
        self._stderr_thread: threading.Thread | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.qemu_log = workdir / "qemu.log"
        start = time.monotonic()
        self.vm_dir = f"{pool.host.workdir}/vms/{uuid.uuid4().hex[:12]}"
        qmp = f"{self.vm_dir}/qmp.sock"
        remote_spec = dataclasses.replace(spec, kernel=Path(pool.stage(spec.kernel)),
                                          initrd=Path(pool.stage(spec.initrd)))
        command = command_line(remote_spec, Path(qmp))
        command[0] = QEMU  # the host's, found on its PATH
        self.boot = BootInfo(command=command)
        try:
            transport = pool.transport()
            self.chan = transport.open_session(timeout=10)
            self.chan.exec_command(_launcher(command, self.vm_dir))
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostLost(f"host {pool.name}: starting QEMU failed: {e}") from None
        self._log = open(self.qemu_log, "wb")
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True, name=f"qemu-stderr:{workdir}")
        self._stderr_thread.start()
        self.console = ConsoleWatcher(_ChannelReader(self.chan), workdir / "console.log", READY_MARKER)
        try:
            self._wait_ready(start, boot_timeout, qmp)
        except BaseException:
            self.close()
            raise

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

    def _qemu_exited(self) -> bool:
        return self.chan.exit_status_ready()

    def _qemu_stderr(self) -> str:
        try:
            return self.qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _host_check(self) -> None:
        if not self.pool.alive():
            raise HostLost(f"host {self.pool.name} stopped answering")

    def _boot_failed(self, why: str, crashed: bool = False) -> BootError:
        self.console.wait(lambda s: False, 0.5 if crashed else 0.1)
        return BootError(why, console=self.console.tail(), crashed=crashed)

    def _forwarded_port(self, qmp: str, deadline: float) -> int:
        wait = max(1.0, deadline - time.monotonic())
        cmd = f"python3 -c {shlex.quote(_QMP_USERNET)} {shlex.quote(qmp)} {wait:.0f}"
        status, out, err = self.pool.exec(cmd, timeout=wait + 10)
        if status != 0:
            self._host_check()
            if self._qemu_exited():
                self._stderr_thread.join(1)
                raise self._boot_failed(f"QEMU exited with status {self.chan.exit_status} at start on "
                                        f"{self.pool.name}: {self._qemu_stderr().strip()[-500:]}")
            raise self._boot_failed(f"host {self.pool.name}: QMP query failed: {err.strip()[-300:]}")
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0].startswith("TCP[HOST_FORWARD]") and "127.0.0.1" in parts:
                return int(parts[parts.index("127.0.0.1") + 1])
        raise InfraError(f"no forwarded SSH port in QEMU's 'info usernet' on {self.pool.name}: {out!r}")

    def _wait_ready(self, start: float, timeout: float, qmp: str) -> None:
        deadline = start + timeout
        self.port = self._forwarded_port(qmp, deadline)
        ok = self.console.wait(lambda s: s.ready or s.panicked, max(0.0, deadline - time.monotonic()))
        state = self.console.state
        if self.console.closed and not self._qemu_exited():
            self._host_check()  # the console ended without QEMU's exit status: the connection went
        self._stderr_thread.join(0.2 if self._qemu_exited() else 0)
        stderr = self._qemu_stderr()
        self.boot.filtered_features = parse_filtered_features(stderr)
        self.boot.qemu_warnings = [ln for ln in stderr.splitlines() if ln.strip()][:50]
        if state.panicked:
            raise self._boot_failed(f"guest kernel panicked during boot: {state.first_crash().line}", True)
        if self._qemu_exited():
            last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
            raise self._boot_failed(f"QEMU exited with status {self.chan.exit_status} during boot on "
                                    f"{self.pool.name}{': ' + last if last else ''}", crashed=bool(state.crashes))
        if not ok or not state.ready:
            self._host_check()
            raise self._boot_failed(f"guest did not reach '{READY_MARKER}' within {timeout:.0f} s")
        self.boot.seconds_to_marker = time.monotonic() - start
        while not self._banner_ready():
            if self._qemu_exited() or self.console.state.panicked:
                raise self._boot_failed("guest died before its SSH server answered", self.console.state.panicked)
            if time.monotonic() > deadline:
                self._host_check()
                raise self._boot_failed(f"guest SSH server never answered within {timeout:.0f} s")
            time.sleep(0.05)
        try:
            tunnel = self._tunnel()
            self.ssh = GuestSSH("127.0.0.1", self.port, self.spec.host_key, self.pool.key.load(),
                                timeout=max(1.0, deadline - time.monotonic()), sock=tunnel)
        except InfraError:
            self._host_check()
            raise
        self.boot.seconds_to_ssh = time.monotonic() - start

    def _tunnel(self, timeout: float = 10.0) -> paramiko.Channel:
        """A TCP stream to the guest's forwarded port on the host's loopback."""
        try:
            return self.pool.transport().open_channel("direct-tcpip", ("127.0.0.1", self.port),
                                                      ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise InfraError(f"tunnel to 127.0.0.1:{self.port} on {self.pool.name} failed: {e}") from None

    def _banner_ready(self) -> bool:
        try:
            chan = self._tunnel(timeout=2.0)
        except InfraError:
            return False
        try:
            chan.settimeout(1.0)
            return chan.recv(4).startswith(b"SSH-")
        except (OSError, EOFError, paramiko.SSHException):
            return False
        finally:
            chan.close()

    # --- Instance interface -------------------------------------------------------------------------

    def copy(self, local: Path, remote: str) -> None:
        try:
            self.ssh.put(local, remote)
        except InfraError:
            self._host_check()
            raise

    def run(self, argv: list[str], timeout: float) -> RunResult:
        result = self.ssh.run(argv, timeout)
        if result.lost or result.timed_out:
            self._host_check()  # a dead host is not the test's failure: its cell runs elsewhere
        if result.lost and self._qemu_exited():
            result.lost += f"; QEMU exited with status {self.chan.exit_status}"
        return result

    def diagnose(self) -> dict:
        exited = self._qemu_exited()
        return {"qemu_running": not exited, "qemu_status": self.chan.exit_status if exited else None,
                **self.console.diagnosis(), "host": self.pool.name}

    def close(self) -> None:
        if self.ssh:
            self.ssh.close()
            self.ssh = None
        if self.chan is not None:
            try:
                self.chan.shutdown_write()  # the wrapper's watchdog sees EOF and ends QEMU
                if not self.chan.closed and self.pool.alive(2.0):
                    self.chan.status_event.wait(5)
            except (OSError, EOFError, paramiko.SSHException):
                pass
            self.chan.close()
        if self.console:
            self.console.join()
        if self._stderr_thread:
            self._stderr_thread.join(2)
        if getattr(self, "_log", None):
            self._log.close()


# --- the command line's use of hosts ------------------------------------------------------------------


def add_hosts(sched, inventory: Path, accel: str = "auto") -> list[RemotePool]:
    """Give a Scheduler the inventory's hosts beside its local pool (`farm run --hosts FILE`).

    Each host is connected and checked first: a host key that is not known stops the run (exit 3); a host
    that cannot be reached is left out with a warning, and its slots go to the others."""
    from .. import hosts as hostfile

    pools: list[tuple[Pool, int]] = []
    ready: list[RemotePool] = []
    record = sched.run_record.host.setdefault("hosts", {})
    for host in hostfile.load(inventory):
        pool = RemotePool(host, sched.key, accel)
        try:
            pool.ready()
        except HostLost as e:
            sched.progress.note(f"warning: host {host.name} left out: {e}")
            record[host.name] = {"address": host.address, "slots": host.slots, "unreachable": str(e)}
            continue
        record[host.name] = {"address": host.address, "port": host.port, "slots": host.slots,
                             "workdir": host.workdir, "accel": pool.accel, "accel_reason": pool.accel_reason}
        pools.append((pool, host.slots))
        ready.append(pool)
    if not ready:
        sched.progress.note("warning: no farm host could be reached; running on this machine only")
    sched.pools = [(sched.local, sched.parallel), *pools]
    return ready


def check_hosts(inventory: Path) -> tuple[bool, list[str]]:
    """`farm doctor --hosts FILE`: each host reachable, its key known, QEMU there, its accelerator, disk."""
    from .. import hosts as hostfile
    from ..guest.keys import client_key
    from ..paths import cache_root

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
