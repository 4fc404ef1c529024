"""Farm hosts for tests and benchmarks: network namespaces on this machine, each with its own OpenSSH server.

Each host is a namespace `farmh<N>` joined to this machine by a veth pair on 10.231.<N>.0/30 (this side .1,
the host .2) and runs Debian's sshd (`sshd -D -f` with its own config and host key in a private folder).
Only addresses inside these namespaces and loopback are ever used. `down()` takes a host away for real
(every process in it killed, its link cut); `close()` removes everything it made.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
_SFTP = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server") if Path(p).exists()),
             "/usr/lib/openssh/sftp-server")


def available() -> str | None:
    """Why namespace hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if not shutil.which("ip"):
        return "needs iproute2"
    if not Path(SSHD).exists():
        return "needs openssh-server (sshd)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _free_index() -> int:
    used = set(_ip("netns", "list").stdout.split())
    addrs = _ip("-o", "addr").stdout
    for n in range(10, 250):
        if f"farmh{n}" not in used and f"10.231.{n}." not in addrs:
            return n
    raise RuntimeError("no free 10.231.N.0/30 subnet for a namespace host")


class NetnsHost:
    def __init__(self, name: str, authorized_keys: list[str]):
        self.name = name
        self.n = _free_index()
        self.ns = f"farmh{self.n}"
        self.veth = f"fh{self.n}o"  # this side
        self.peer = f"fh{self.n}i"  # inside the namespace
        self.address = f"10.231.{self.n}.2"
        # Not under /tmp: sshd refuses authorized_keys below a world-writable directory.
        self.dir = Path(tempfile.mkdtemp(prefix=f"farm-netns-{name}-", dir="/run"))
        self.sshd: subprocess.Popen | None = None
        self.workdir = f"/var/tmp/farm-host-{name}-{self.n}"
        try:
            self._network()
            self._start_sshd(authorized_keys)
        except BaseException:
            self.close()
            raise

    def _network(self) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
        _ip("link", "set", self.peer, "netns", self.ns)
        _ip("addr", "add", f"10.231.{self.n}.1/30", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        self.exec("ip", "addr", "add", f"{self.address}/30", "dev", self.peer)
        self.exec("ip", "link", "set", self.peer, "up")
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True, check=check)

    def _start_sshd(self, authorized_keys: list[str]) -> None:
        key = self.dir / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", str(key)], check=True)
        self.host_key = " ".join((self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        (self.dir / "authorized_keys").write_text("".join(k.strip() + "\n" for k in authorized_keys))
        (self.dir / "authorized_keys").chmod(0o600)
        self.dir.chmod(0o700)
        config = self.dir / "sshd_config"
        config.write_text(
            f"ListenAddress {self.address}:22\n"
            f"HostKey {key}\n"
            f"PidFile {self.dir}/sshd.pid\n"
            f"AuthorizedKeysFile {self.dir}/authorized_keys .ssh/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "AllowTcpForwarding yes\n"
            "MaxSessions 64\n"
            "MaxStartups 64\n"
            "ClientAliveInterval 5\n"
            f"Subsystem sftp {_SFTP}\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.sshd = subprocess.Popen(["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "sshd.log", "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd in {self.ns} exited: {(self.dir / 'sshd.log').read_text()[-500:]}")
            r = self.exec("ss", "-ltn", check=False)
            if f"{self.address}:22" in r.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd in {self.ns} never listened")

    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_key}\n"

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def down(self) -> None:
        """The host dies: every process in it killed (sshd, its sessions, QEMU), its link cut."""
        _ip("link", "set", self.veth, "down", check=False)
        for _ in range(3):
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)
        if self.sshd:
            self.sshd.wait(5)

    def close(self) -> None:
        if self.sshd and self.sshd.poll() is None:
            self.sshd.terminate()
        try:
            self.down()
        finally:
            _ip("netns", "del", self.ns, check=False)
            _ip("link", "del", self.veth, check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
            shutil.rmtree(self.workdir, ignore_errors=True)
