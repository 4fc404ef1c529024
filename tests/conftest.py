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


def failed_cells(out: Path, lines: int = 40) -> str:
    """For an assertion message: each cell of the run in `out` that did not PASS or SKIP, with its reason and
    its console's last lines, so a flake in CI can be diagnosed from CI's output alone."""
    import json

    try:
        cells = json.loads((out / "run.json").read_text())["cells"]
    except (OSError, ValueError) as e:
        return f"no run.json in {out}: {e}"
    parts = []
    for c in cells:
        if c["status"] in ("PASS", "SKIP"):
            continue
        console = out / c.get("files", {}).get("console", "-")
        text = console.read_text(errors="replace").splitlines() if console.is_file() else ["(no console)"]
        # from just before the first crash line (a stall's header and its t=... jiffies), else the last lines
        first = min((k.get("lineno") or len(text) for k in c.get("crashes") or []), default=len(text))
        shown = text[max(0, min(first - 5, len(text) - lines)):][:lines]
        parts.append(f"--- {c['id']} on {c.get('host')} ({c.get('booted') or 'not booted'}, timings "
                     f"{c.get('timings')}): {c['status']}: {c.get('reason')}\n" + "\n".join(shown))
    return "\n".join(parts)


def git(repo: Path, *args: str, name: str = "A U Thor", email: str = "author@example.org") -> str:
    """git in a test repository: a fixed identity, no user or system config; its output, stripped."""
    env = dict(os.environ, GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name,
               GIT_COMMITTER_EMAIL=email, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


# A skip is a test that did not run. Only these may skip, each for the reason given; any other skip fails the
# suite, so a missing package or tool cannot silently turn tests off (`-rs` lists every skip as well).
ALLOWED_SKIPS = {
    "tests/test_boot.py::test_probe_reports_what_the_model_delivers_under_tcg":
        "the figures it checks are TCG's; under KVM the host CPU decides what each model delivers",
}
if os.environ.get("FARM_LAVA_TESTS") != "1":  # .ci/run sets it: there a missing lab fails
    ALLOWED_SKIPS["tests/test_lava.py::"] = "the LAVA lab is opt-in (./install.sh --lava, ~200 packages)"
# The live crash-catalogue checks need linux-6.1-debug-lkdtm (KASAN + lockdep + DEBUG_INFO): ~10 min to build
# on 2 cores and slow TCG boots, more than CI's budget leaves. The captured fixtures are checked always;
# bench/faults.py runs the live rows, and FARM_DEBUG_KERNEL_TESTS=1 makes them part of the suite.
DEBUG_KERNEL_TESTS = os.environ.get("FARM_DEBUG_KERNEL_TESTS") == "1"
if not DEBUG_KERNEL_TESTS:
    for nodeid in ("tests/test_faults.py::test_fault[crash_classes]", "tests/test_faults.py::test_fault[splat_in_report]",
                   "tests/test_crash.py::test_frames_decode_to_file_and_line_with_the_kernels_own_script"):
        ALLOWED_SKIPS[nodeid] = "needs the debug capture kernel (FARM_DEBUG_KERNEL_TESTS=1; bench/faults.py)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        if not any(item.nodeid.startswith(allowed) for allowed in ALLOWED_SKIPS):
            report.outcome = "failed"
            report.longrepr = (f"unexpected skip (only tests on ALLOWED_SKIPS in tests/conftest.py may skip): "
                               f"{report.longrepr}")
