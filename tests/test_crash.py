"""The crash catalogue on real consoles: each class provoked with LKDTM in a farm guest of the debug kernel and
captured (tests/fixtures/crashes/, tests/crashcases.py) gets its kind and title; fingerprints ignore what
differs between cells and runs (addresses, CPUs, PIDs, timestamps) and tell different crashes apart; frames
decode to file:line with the kernel's own decode_stacktrace.sh; one crash seen in several cells and runs is
one entry in the report and the history database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from farm import crash
from farm.report import write_all
from farm.report.synthetic import make_run
from farm.results.history import History
from farm.results.run import RunWriter
from farm.vm.console import ConsoleState

from .conftest import FIXTURES
from .crashcases import CASES

CRASHES = FIXTURES / "crashes"


def scan(name: str) -> ConsoleState:
    state = ConsoleState("farm-init: ready")
    state.feed((CRASHES / f"{name}.log").read_text())
    state.feed("\n")
    return state


def named(state: ConsoleState, kind: str):
    return next((c for c in state.crashes if c.kind == kind), None)


@pytest.mark.parametrize("name", list(CASES))
def test_each_captured_crash_has_its_kind_and_title(name: str):
    case = CASES[name]
    state = scan(name)
    hit = named(state, case.kind)
    assert hit is not None, [(c.kind, c.title) for c in state.crashes]
    assert hit.title == case.title
    assert hit.fingerprint and (hit.frames or not case.frames)
    for kind, title in case.also:
        assert (kind, title) in [(c.kind, c.title) for c in state.crashes]
    assert state.panicked == case.fatal
    if case.fatal:  # the panic only says the oops was fatal: the oops names the failure
        assert state.first_crash() is hit


def test_every_catalogue_kind_has_a_captured_fixture():
    kinds = {p.kind for p in crash.CATALOGUE} - {"panic", "calltrace"}
    assert kinds <= {c.kind for c in CASES.values()} | {k for c in CASES.values() for k, _ in c.also}


def test_fingerprints_differ_between_crash_classes():
    prints = {}
    for name, case in CASES.items():
        prints.setdefault(named(scan(name), case.kind).fingerprint, []).append(name)
    assert all(len(v) == 1 for v in prints.values()), prints


def test_same_crash_on_two_cpu_models_has_one_fingerprint():
    """Captured twice (Broadwell and Skylake-Server guests): other addresses, timestamps, PIDs; one crash."""
    for name, kind in (("warning", "warning"), ("kasan-uaf", "kasan")):
        a, b = named(scan(name), kind), named(scan(f"{name}@Skylake-Server"), kind)
        assert (CRASHES / f"{name}.log").read_text() != (CRASHES / f"{name}@Skylake-Server.log").read_text()
        assert (a.title, a.fingerprint) == (b.title, b.fingerprint)


def test_report_and_history_show_one_entry_per_fingerprint(tmp_path: Path):
    """Two runs, the same KASAN report on two models each: one crash group seen on both, first seen in run0."""
    log = (CRASHES / "kasan-uaf.log").read_text()
    db = tmp_path / "history.sqlite"
    kasan = [c.id for c in make_run(tmp_path / "x", files=False).cells if c.test == "xcr0" and
             c.kernel == "linux-6.1-xcr0"]
    for i in range(2):
        run_dir = tmp_path / f"run{i}"
        run = make_run(run_dir, run_id=f"run{i}", started=f"2026-12-0{i + 1}T10:00:00+00:00",
                       statuses=dict.fromkeys(kasan, "CRASH"))
        for c in run.cells:
            if c.id in kasan:
                (run_dir / c.files["console"]).write_text(log)
                state = ConsoleState("farm-init: ready")
                state.feed(log)
                c.crashes = [dataclasses.replace(x) for x in state.crashes]
                c.reason = state.first_crash().line
        RunWriter(run, run_dir / "run.json").save()
        write_all(run, run_dir, history=db)
    summary = (tmp_path / "run1" / "summary.txt").read_text()
    assert "Crashes (1 distinct)" in summary
    assert "seen on Broadwell, Skylake-Server" in summary
    assert "first seen in run run0" in summary
    page = (tmp_path / "run1" / "report.html").read_text()
    assert page.count('class="problem crashgroup"') == 1
    prints = {x.fingerprint for c in run.cells for x in c.crashes}
    assert len(prints) == 1
    with History(db) as h:
        seen = h.first_seen(prints)
    assert [(s.run_id, s.runs) for s in seen.values()] == [("run0", 2)]


@pytest.mark.build
def test_frames_decode_to_file_and_line_with_the_kernels_own_script():
    """The kernel the fixtures were captured with, built (or found in the cache) with DEBUG_INFO: its cache
    entry keeps vmlinux and decode_stacktrace.sh, and the frames of a captured KASAN report get file:line,
    while title and fingerprint stay the same."""
    from farm.catalog import Catalog
    from farm.kernel.build import build_kernel

    from .conftest import DEBUG_KERNEL_TESTS, REPO

    if not DEBUG_KERNEL_TESTS:
        pytest.skip("needs the debug capture kernel: FARM_DEBUG_KERNEL_TESTS=1")
    built = build_kernel(Catalog(REPO).kernels["linux-6.1-debug-lkdtm"], log=lambda line: None)
    assert built.vmlinux is not None and built.vmlinux.parent == built.image.parent
    state = scan("kasan-uaf")
    hit = named(state, "kasan")
    before = (hit.title, hit.fingerprint, [crash.frame_func(f) for f in hit.frames])
    assert not any(".c:" in f for f in hit.frames)
    assert crash.decode(state.crashes, CRASHES / "kasan-uaf.log", built.image.parent) >= 1
    assert any("drivers/misc/lkdtm/heap.c:" in f for f in hit.frames), hit.frames
    assert (hit.title, hit.fingerprint, [crash.frame_func(f) for f in hit.frames]) == before


def test_no_vmlinux_leaves_frames_as_they_are(tmp_path: Path):
    state = scan("kasan-uaf")
    frames = list(named(state, "kasan").frames)
    assert crash.decode(state.crashes, CRASHES / "kasan-uaf.log", tmp_path) == 0
    assert named(state, "kasan").frames == frames
