"""Shared fixtures: a private farm root (data files copied) and the farm command run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# One cache for the whole suite (kernels, ccache, unpacked sources, guest images): the kernel build
# tests and the job tests share their builds, and a second run of the suite is mostly cache hits.
os.environ.setdefault("FARM_CACHE", "/var/tmp/farm-test-cache")
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def farm_root(tmp_path: Path) -> Path:
    """A copy of the repo's data folders, which a test may edit or add broken files to."""
    from .faultlib import make_root

    return make_root(tmp_path)


def run_farm(*args: str, root: Path | None = None, timeout: float = 900, env: dict | None = None):
    """Run the real `farm` command line in a subprocess (as a user would) and return the CompletedProcess."""
    full_env = dict(os.environ, CI="true")
    if root:
        full_env["FARM_ROOT"] = str(root)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "farm.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=root or REPO)
