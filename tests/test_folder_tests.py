"""Folder tests: each program of a folder is a KTAP case (exit 0 ok, 4 skip, else not ok; each timed out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm import ktap
from farm.guest.image import folder_runner

from . import faultlib
from .conftest import run_farm


def test_runner_script_shape():
    script = folder_runner("sel", ["a_64", "b_64"], 30)
    assert script.startswith("#!/bin/sh\n")
    assert "echo '1..2'" in script and "timeout 30 ./a_64" in script and "timeout 30 ./b_64" in script


@pytest.mark.boot
def test_folder_of_programs_in_a_real_guest(tmp_path: Path):
    root = faultlib.make_root(tmp_path)
    (root / "guests" / "tests" / "folder.yaml").write_text(
        f"name: folder\nbinary: {faultlib.FAULTS / 'folder'}\nrun: [folder]\nformat: ktap\ncase_timeout: 3\n")
    job = faultlib.add_job(root, ["stock"], ["folder"], retries=0)
    out = tmp_path / "o"
    result = run_farm("run", "--job", str(job), "--out", str(out), root=root)
    assert result.returncode == 1, result.stderr
    cell = json.loads((out / "run.json").read_text())["cells"][0]
    assert cell["status"] == "FAIL"
    got = {c["name"]: (c["status"], c["reason"]) for c in cell["cases"]}
    assert got == {"a_pass": ("PASS", ""), "b_skip": ("SKIP", "exit 4"), "c_fail": ("FAIL", ""),
                   "d_hang": ("FAIL", "")}
    parsed = ktap.parse((out / cell["files"]["output"]).read_text())
    assert parsed.cases[2].diagnostics == ["<b>bad</b>"]
    assert "timed out after 3 s" in (out / cell["files"]["output"]).read_text()
