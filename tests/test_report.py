"""report.html and run.json: rendered from the record only, everything from a guest escaped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.errors import InputError
from farm.report import html
from farm.results import run as runfile
from farm.results.run import Cell, Run, RunWriter

EVIL = "<script>document.title='pwned'</script>"


def _run(tmp_path: Path) -> Run:
    cells = [
        Cell(id="k/Broadwell/t", kernel="k", cpu="Broadwell", test="t", status="PASS", stage="test",
             facts={"xcr0": "0x7", "xsave_size": "832"}, files={"output": "cells/k/Broadwell/t/output.txt",
                                                             "console": "cells/k/Broadwell/t/console.log"},
             cases=[{"number": 1, "name": EVIL, "status": "PASS", "reason": "", "diagnostics": [EVIL]}]),
        Cell(id="k/Skylake-Server/t", kernel="k", cpu="Skylake-Server", test="t", status="CRASH", stage="test",
             reason="Kernel panic - not syncing: " + EVIL, filtered_features=["avx512f"],
             crashes=[{"kind": "panic", "line": "Kernel panic - not syncing: " + EVIL}]),
        Cell(id="k/max/t", kernel="k", cpu="max", test="t"),
    ]
    d = tmp_path / "cells/k/Broadwell/t"
    d.mkdir(parents=True)
    (d / "output.txt").write_text(f"TAP version 13\n1..1\nok 1 {EVIL}\n")
    (d / "console.log").write_text(f"farm-init: ready\n{EVIL}\nWARNING: CPU: 0 PID: 1 at x.c:1 f\n")
    return Run(run_id="r1", job="j", job_file="jobs/j.yaml", started="now", cells=cells, interrupted=True,
               host={"hostname": "h", "qemu": "QEMU 7.2", "accel": "tcg", "accel_reason": "test"})


def test_report_escapes_guest_text_and_lists_missing_cells(tmp_path: Path):
    run = _run(tmp_path)
    page = html.render(run, tmp_path)
    assert "<script>" not in page
    assert "&lt;script&gt;document.title=" in page
    assert "Missing results" in page and "k/max/t" in page
    assert "FAIL" in page  # the verdict: a crash fails the run
    assert 'class="crash"' in page  # the WARN line in the console is highlighted
    assert "0x7" in page and "avx512f" in page


def test_run_json_round_trip_and_exit_codes(tmp_path: Path):
    run = _run(tmp_path)
    RunWriter(run, tmp_path / "run.json").save()
    back = runfile.load(tmp_path)
    assert back.cells[1].status == "CRASH" and back.cells[2].status == "PENDING"
    assert back.exit_code() == 1
    back.cells[1].status = "PASS"
    assert back.exit_code() == 3  # a pending cell is missing evidence
    back.cells[2].status = "SKIP"
    assert back.exit_code() == 0


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema": 99}', '{"schema": 1, "cells": [{"bogus": 1}]}'])
def test_damaged_run_json_is_an_input_error(tmp_path: Path, content: str):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(InputError, match="run.json"):
        runfile.load(tmp_path)


def test_report_command_rerenders(tmp_path: Path):
    from .conftest import run_farm

    RunWriter(_run(tmp_path), tmp_path / "run.json").save()
    result = run_farm("report", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "&lt;script&gt;" in (tmp_path / "report.html").read_text()
    (tmp_path / "run.json").write_text("{")
    bad = run_farm("report", str(tmp_path))
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    json.loads('{"ok": 1}')
