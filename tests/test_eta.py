"""The run's ETA: expected durations from the history, over the slots; shown in plain progress lines."""

from __future__ import annotations

import io
import re
from pathlib import Path

from farm.eta import RunEta, show
from farm.executor import Executor
from farm.progress import Progress
from farm.results.run import RunWriter

from . import fakes
from .fakes import FakePool

A, B, C = ("k", "Broadwell", "xcr0"), ("k", "Skylake-Server", "xcr0"), ("k", "Broadwell", "x86-selftests")


def test_queued_cells_at_their_past_durations_over_the_slots():
    eta = RunEta({A: 10.0, B: 20.0, C: 60.0}, slots=2)
    for i, key in enumerate((A, B, C)):
        eta.queue(str(i), key)
    assert eta.remaining(now=0.0) == 45.0  # (10 + 20 + 60) / 2
    eta.begin("2", C, now=0.0)
    assert eta.remaining(now=50.0) == 20.0  # 10 + 20 + 10 left of C, over 2 slots: 20 (C alone: 10)
    eta.end("2", now=55.0)
    eta.begin("0", A, now=55.0)
    eta.begin("1", B, now=55.0)
    assert eta.remaining(now=56.0) == 19.0  # the longest running cell decides: 20 - 1


def test_unknown_cells_have_no_eta_until_a_cell_of_their_test_finished():
    eta = RunEta({}, slots=1)
    eta.queue("0", A)
    eta.queue("1", B)
    assert eta.remaining(now=0.0) is None and show(None) == "ETA ?"
    eta.begin("0", A, now=0.0)
    eta.end("0", now=8.0)
    assert eta.remaining(now=8.0) == 8.0  # B: the mean of xcr0 cells finished in this run


def test_a_cell_over_its_time_counts_as_about_to_end_and_a_requeued_one_is_queued_again():
    eta = RunEta({A: 10.0, B: 10.0}, slots=1)
    eta.queue("0", A)
    eta.begin("0", A, now=0.0)
    assert eta.remaining(now=100.0) == 1.0
    eta.end("0", now=100.0, requeued=True)  # its pool was lost: it runs again, in full
    assert eta.remaining(now=100.0) == 10.0
    assert show(75) == "ETA 1m15s" and show(9.6) == "ETA 10s"


def test_plain_progress_lines_carry_the_run_eta(tmp_path: Path):
    cells = [("stock", "Broadwell", "cpuinfo"), ("stock", "Skylake-Server", "cpuinfo"),
             ("stock", "max", "cpuinfo")]
    plan, prepared = fakes.plan(tmp_path, cells, [FakePool(script={})])
    out = io.StringIO()
    ex = Executor(plan, RunWriter(plan.record, tmp_path / "run.json"), Progress(out))
    ex.run(prepared)
    done = [line for line in out.getvalue().splitlines() if re.search(r"\(\d/3, ETA", line)]
    assert len(done) == 3, out.getvalue()
    assert "(1/3, ETA" in done[0] and "ETA ?" not in done[0]  # the first finished cell gives the estimate
    assert done[-1].endswith("(3/3, ETA 0s)")
