"""Ctrl-C and SIGTERM: finished cells stay on disk, the report names what is missing, no QEMU survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, run_farm

pytestmark = pytest.mark.boot


def _qemus_of(pid: int) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"farm-qmp-{pid}-"], capture_output=True, text=True).stdout
    return out.split()


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _cells(out: Path) -> list[dict]:
    try:
        return json.loads((out / "run.json").read_text())["cells"]
    except (OSError, ValueError):
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_keeps_finished_cells_and_resume_completes(tmp_path: Path, sig):
    out = tmp_path / "r"
    env = dict(os.environ, CI="true")
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", "--job", "probe", "--cpu", "Skylake", "--cpu", "Broadwell",
                             "-j", "1", "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until one cell has finished and the next guest is booting.
        assert _wait_for(lambda: sum(c["status"] == "PASS" for c in _cells(out)) >= 1, 180), proc.stderr
        assert _wait_for(lambda: _qemus_of(proc.pid), 60)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert _qemus_of(proc.pid) == []  # no guest outlives the farm
    run = json.loads((out / "run.json").read_text())
    assert run["interrupted"] is True
    done = [c for c in run["cells"] if c["status"] == "PASS"]
    missing = [c for c in run["cells"] if c["status"] == "PENDING"]
    assert done and missing and len(done) + len(missing) == 3
    for c in done:
        assert (out / c["files"]["console"]).exists()
    html = (out / "report.html").read_text()
    assert "Missing results" in html
    for c in missing:
        assert c["id"] in html

    resumed = run_farm("run", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    run2 = json.loads((out / "run.json").read_text())
    assert [c["status"] for c in run2["cells"]] == ["PASS"] * 3
    # Finished cells were kept, not redone.
    by_id = {c["id"]: c for c in run2["cells"]}
    for c in done:
        assert by_id[c["id"]]["timings"] == c["timings"]
    assert run2["resumed"]
