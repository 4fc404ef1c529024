"""Each injected fault ends in the expected class, leaves no QEMU behind and loses nothing finished.

`bench/faults.py` runs the same scenarios and prints the table with the seconds from fault to verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import faultlib

pytestmark = pytest.mark.boot


@pytest.mark.parametrize("scenario", faultlib.SCENARIOS, ids=lambda s: s.__name__)
def test_fault(scenario, tmp_path: Path):
    row = scenario(tmp_path)
    print(f"\n{faultlib.HEADER}\n{row.line()}\n    {row.notes}")
    assert row.leftover == 0, row
    assert row.lost == [], row
    assert row.others_ok, row
    assert row.ok, row
