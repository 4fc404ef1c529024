"""The pieces of the shared QEMU boot sequence that need no guest: parsing what QEMU says."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.errors import InfraError
from farm.vm.base import MachineSpec
from farm.vm.boot import command_line, forwarded_port

FIXTURES = Path(__file__).parent / "fixtures"


def test_forwarded_port_from_real_info_usernet():
    # captured from QEMU 7.2 with the SSH connection already open: the forward is the HOST_FORWARD row
    assert forwarded_port((FIXTURES / "qemu-info-usernet.txt").read_text()) == 44709


def test_no_forward_is_an_infrastructure_error_showing_the_text():
    with pytest.raises(InfraError, match="no forwarded SSH port"):
        forwarded_port("Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port\r\n")


def test_command_line_keeps_the_guest_on_loopback_and_names_the_model():
    spec = MachineSpec(Path("/k"), Path("/i"), "console=ttyS0", "Skylake-Server", "tcg", "ssh-ed25519 AAAA")
    cmd = command_line(spec, "/tmp/q.sock", "qemu-system-x86_64")
    assert cmd[cmd.index("-cpu") + 1] == "Skylake-Server"
    netdev = cmd[cmd.index("-netdev") + 1]
    assert "restrict=on" in netdev and "hostfwd=tcp:127.0.0.1:0-:22" in netdev
    assert "-no-reboot" in cmd and cmd[cmd.index("-qmp") + 1] == "unix:/tmp/q.sock,server=on,wait=off"


def test_the_snapshot_cache_drops_the_least_recently_used_first(tmp_path):
    import os

    from farm.vm.qemu import prune_snapshots

    for i, name in enumerate(["a", "b", "c", "d"]):
        f = tmp_path / f"{name}.vmstate"
        f.write_bytes(b"\0" * (1 << 20))
        os.utime(f, (1000 + i, 1000 + i))
    (tmp_path / "old.gz").write_bytes(b"x")  # a snapshot of the previous format
    (tmp_path / "c.json").write_text('{"kernel": "%s"}' % (tmp_path / "gone-bzImage"))  # its kernel was collected
    (tmp_path / "e.vmstate").write_bytes(b"\0")
    (tmp_path / "e.json").write_text('{"kernel": "%s"}' % (tmp_path / "d.vmstate"))  # its kernel is still there
    os.utime(tmp_path / "e.vmstate", (2000, 2000))
    dropped = prune_snapshots(tmp_path, keep=tmp_path / "d.vmstate", limit_mb=2)
    assert sorted(p.name for p in dropped) == ["a.vmstate", "b.vmstate", "c.vmstate", "old.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.vmstate", "e.json", "e.vmstate"]
