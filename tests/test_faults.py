"""Each injected fault ends in the expected class, leaves no QEMU behind and loses nothing finished.

`bench/faults.py` runs the same scenarios and prints the table with the seconds from fault to verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import faultlib
from .conftest import DEBUG_KERNEL_TESTS

pytestmark = pytest.mark.boot


@pytest.mark.parametrize("scenario", faultlib.SCENARIOS, ids=lambda s: s.__name__)
def test_fault(scenario, tmp_path: Path):
    if scenario in faultlib.DEBUG_KERNEL_SCENARIOS and not DEBUG_KERNEL_TESTS:
        pytest.skip("needs the debug capture kernel: FARM_DEBUG_KERNEL_TESTS=1 (or bench/faults.py)")
    got = scenario(tmp_path)
    rows = got if isinstance(got, list) else [got]  # crash_classes: one row per crash class
    assert rows
    for row in rows:
        print(f"\n{faultlib.HEADER}\n{row.line()}\n    {row.notes}")
    for row in rows:
        assert row.leftover == 0, row
        assert row.lost == [], row
        assert row.others_ok, row
        assert row.ok, row
