"""SSH to a guest with paramiko: host key pinned from the image build, commands given as argv lists."""

from __future__ import annotations

import base64
import logging
import select
import shlex
import socket
import time
from pathlib import Path

import paramiko

from ..errors import InfraError
from .base import RunResult

MAX_OUTPUT = 8 << 20  # bytes kept of each of stdout and stderr; the rest is counted, not stored

# paramiko logs a traceback for every failed handshake; the farm reports its own errors.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class HostKeyMismatch(InfraError):
    pass


def parse_host_key(line: str) -> paramiko.PKey:
    kind, b64 = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))


def banner_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an SSH server (not just QEMU's slirp, which accepts early) sends its banner."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class GuestSSH:
    def __init__(self, host: str, port: int, host_key: str, pkey: paramiko.PKey, timeout: float = 10.0,
                 sock=None):
        self.client = paramiko.SSHClient()
        key = parse_host_key(host_key)
        name = host if port == 22 else f"[{host}]:{port}"
        self.client.get_host_keys().add(name, key.get_name(), key)
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.client.connect(
                host, port, username="root", pkey=pkey, allow_agent=False, look_for_keys=False,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, sock=sock,
            )
        except paramiko.BadHostKeyException as e:
            self.client.close()
            raise HostKeyMismatch(f"guest at {name} presented host key {e.key.get_base64()[:24]}..., "
                                  f"not the one pinned at image build: refusing it") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.client.close()
            raise InfraError(f"SSH to {name} failed: {e}") from None
        transport = self.client.get_transport()
        if transport:
            transport.set_keepalive(5)

    def run(self, argv: list[str], timeout: float, stdin: bytes | None = None) -> RunResult:
        start = time.monotonic()
        transport = self.client.get_transport()
        if not transport or not transport.is_active():
            return RunResult(argv, None, "", "", 0.0, lost="SSH connection is gone")
        try:
            chan = transport.open_session(timeout=10)
            chan.exec_command(shlex.join(argv))  # the guest's shell gets each argument quoted, never a job string
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as e:
            return RunResult(argv, None, "", "", time.monotonic() - start, lost=f"SSH exec failed: {e}")
        out, err = bytearray(), bytearray()
        counts = [0, 0]
        deadline = start + timeout
        timed_out, lost = False, ""
        while True:
            drained = False
            while chan.recv_ready():
                drained = True
                self._keep(out, chan.recv(65536), counts, 0)
            while chan.recv_stderr_ready():
                drained = True
                self._keep(err, chan.recv_stderr(65536), counts, 1)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if chan.closed or not transport.is_active():
                lost = "SSH connection dropped before the command ended"
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            if not drained:
                select.select([chan], [], [], 0.2)
        status = None
        if not timed_out and not lost:
            status = chan.recv_exit_status()
            if status == -1:  # paramiko's "never received": the connection died, the command did not end
                status, lost = None, "SSH connection dropped before the command ended"
        chan.close()
        return RunResult(
            argv=argv,
            exit_status=status,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            seconds=time.monotonic() - start,
            timed_out=timed_out,
            truncated=counts[0] > MAX_OUTPUT or counts[1] > MAX_OUTPUT,
            lost=lost,
        )

    @staticmethod
    def _keep(buf: bytearray, data: bytes, counts: list[int], i: int) -> None:
        counts[i] += len(data)
        room = MAX_OUTPUT - len(buf)
        if room > 0:
            buf += data[:room]

    def put(self, local: Path, remote: str, timeout: float = 60.0) -> None:
        result = self.run(["sh", "-c", 'cat > "$1" && chmod 755 "$1"', "sh", remote], timeout, local.read_bytes())
        if result.exit_status != 0:
            raise InfraError(f"copying {local} to guest:{remote} failed: {result.stderr.strip() or result.lost}")

    def close(self) -> None:
        self.client.close()
