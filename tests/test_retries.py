"""Retries: a failure is tried once more; fail-then-pass is FLAKY, fail-twice is FAIL; evidence is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import faultlib
from .conftest import run_farm

pytestmark = pytest.mark.boot


def test_flaky_and_failing_tests(tmp_path: Path):
    root = faultlib.make_root(tmp_path)
    faultlib.add_test(root, "flaky", "flaky.sh")
    faultlib.add_test(root, "fails", "fails.sh")
    job = faultlib.add_job(root, ["stock"], ["flaky", "fails"])
    out = tmp_path / "o"
    result = run_farm("run", "--job", str(job), "--out", str(out), "-j", "2", root=root)
    assert result.returncode == 1, result.stderr
    cells = {c["test"]: c for c in json.loads((out / "run.json").read_text())["cells"]}
    flaky, fails = cells["flaky"], cells["fails"]
    assert flaky["status"] == "FLAKY" and flaky["attempts"] == 2
    assert "FAIL on attempt 1" in flaky["reason"]
    assert fails["status"] == "FAIL" and fails["attempts"] == 2
    assert fails["reason"] == "failed: broken"
    assert [c["diagnostics"] for c in fails["cases"] if c["name"] == "broken"] == [["expected 0x7, got 0x207"]]
    # The first attempt's evidence survives its retry.
    first = (out / flaky["files"]["attempt1_output"]).read_text()
    assert "not ok 1 coin_toss" in first
    assert "ok 1 coin_toss" in (out / flaky["files"]["output"]).read_text()
    assert (out / flaky["files"]["attempt1_console"]).exists()
