"""Scheduling order from the history database's past durations."""

from __future__ import annotations

from pathlib import Path

from farm.executor import longest_first
from farm.results.history import History
from farm.results.run import Cell, Run


def _cell(cpu: str, total: float | None = None) -> Cell:
    c = Cell(id=f"k/{cpu}/t", kernel="k", cpu=cpu, test="t", status="PASS")
    if total is not None:
        c.timings["total"] = total
    return c


def test_longest_first_from_recorded_durations(tmp_path: Path):
    run = Run(run_id="r1", job="j", job_file="j.yaml", started="2026-01-01T00:00:00",
              cells=[_cell("a", 5.0), _cell("b", 50.0), _cell("c", 20.0)])
    with History(tmp_path / "h.sqlite") as db:
        db.record(run)
        past = db.durations()
    assert past[("k", "b", "t")] == 50.0
    todo = [_cell("a"), _cell("b"), _cell("c"), _cell("new")]
    assert [c.cpu for c in longest_first(todo, past)] == ["new", "b", "c", "a"]
    assert [c.cpu for c in longest_first(todo, {})] == ["a", "b", "c", "new"]  # no history: the job's order


def test_default_slots_is_cores_plus_one_capped_by_memory():
    from farm.capacity import QEMU_OVERHEAD_MB, default_slots

    per_guest = 512 + QEMU_OVERHEAD_MB
    assert default_slots(512, cores=2, mem_mb=100 * per_guest) == 3  # the measured best on 2 cores
    assert default_slots(512, cores=16, mem_mb=100 * per_guest) == 17
    assert default_slots(512, cores=16, mem_mb=4 * per_guest) == 4  # memory holds only four guests
    assert default_slots(512, cores=2, mem_mb=per_guest - 1) == 1  # never zero
    assert default_slots(2048, cores=8, mem_mb=3 * (2048 + QEMU_OVERHEAD_MB)) == 3  # the job's -m counts
