"""--keep-failed and `farm shell`: a failed cell's guest kept running, an interactive session into it through
a real pseudo-terminal, the gdb stub, and no kept guest outliving --stop, its deadline or a rerun."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from farm import keep

from . import faultlib
from .conftest import REPO, run_farm

pytestmark = pytest.mark.boot

CELL = "stock/Broadwell/fails"


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphaned QEMU that exited may wait a while to be reaped here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _kept_run(tmp_path: Path, minutes: str = "5") -> tuple[Path, Path, keep.Kept]:
    root = faultlib.make_root(tmp_path)
    faultlib.add_test(root, "fails", "fails.sh")
    job = faultlib.add_job(root, ["stock"], ["fails"], retries=0)
    out = tmp_path / "run"
    result = run_farm("run", "--job", str(job), "--keep-failed", minutes, "--out", str(out), root=root)
    assert result.returncode == 1, result.stderr
    assert f"kept {CELL}" in result.stderr and f"farm shell {out} {CELL}" in result.stderr
    record = keep.record(out, CELL)
    kept = keep.load(record)
    assert kept.alive() and kept.port > 0
    cell = json.loads((out / "run.json").read_text())["cells"][0]
    assert cell["status"] == "FAIL" and cell["files"]["kept"] == "kept/stock__Broadwell__fails.json"
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    return root, out, kept


def test_shell_into_a_kept_guest_through_a_real_terminal(tmp_path: Path):
    root, out, kept = _kept_run(tmp_path)
    try:
        env = dict(os.environ, FARM_ROOT=str(root), TERM="xterm")
        child = pexpect.spawn(sys.executable, ["-m", "farm.cli", "shell", str(out), CELL], cwd=str(REPO), env=env,
                              encoding="utf-8", timeout=60, dimensions=(40, 120))
        child.expect("shell into the kept guest")
        child.expect(r"# ")  # busybox sh's prompt, on a pty the guest allocated
        child.sendline("echo kept-$((40 + 2)); tty")
        child.expect("kept-42")
        child.expect("/dev/pts/")
        child.sendline("exit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert kept.alive()  # a session ends, the kept guest stays until stopped
        gdb = run_farm("shell", "--gdb", str(out), CELL, "--", "true", root=root)
        assert gdb.returncode == 0 and "target remote 127.0.0.1:" in gdb.stderr, gdb.stderr
    finally:
        stop = run_farm("shell", "--stop", str(out), root=root)
    assert stop.returncode == 0 and f"stopped {CELL}" in stop.stderr
    assert _wait_gone(kept.pid, 10) and not keep.record(out, CELL).exists()
    assert not _alive(kept.watchdog)


def test_a_kept_guest_ends_at_its_deadline(tmp_path: Path):
    _, out, kept = _kept_run(tmp_path, minutes="0.05")  # 3 s
    assert _wait_gone(kept.pid, 20), "the kept guest outlived its deadline"
    assert _wait_gone(kept.watchdog, 5)  # the watchdog removes the record after it stopped QEMU
    assert not keep.record(out, CELL).exists()


def test_a_rerun_into_the_run_dir_stops_its_kept_guests(tmp_path: Path):
    root, out, kept = _kept_run(tmp_path)
    again = run_farm("run", "--resume", str(out), root=root)
    assert f"stopped the kept guest of {CELL}" in again.stderr
    assert _wait_gone(kept.pid, 10)


def test_shell_boots_the_cell_again_when_nothing_is_kept(tmp_path: Path):
    root, out, kept = _kept_run(tmp_path)
    run_farm("shell", "--stop", str(out), root=root)
    assert _wait_gone(kept.pid, 10)
    result = run_farm("shell", str(out), CELL, "--", "sh", "-c", "echo again; cat /proc/cmdline", root=root,
                      timeout=180)
    assert result.returncode == 0, result.stderr
    assert "booting stock/Broadwell/fails again (Broadwell" in result.stderr
    assert result.stdout.splitlines()[0] == "again" and "console=ttyS0" in result.stdout
    bad = run_farm("shell", str(out), "stock/Broadwell/nope", root=root)
    assert bad.returncode == 2 and "no cell 'stock/Broadwell/nope'" in bad.stderr
