"""The scheduling rules, with the scripted fake pool (no QEMU): retries, FLAKY, requeue, interrupts."""

from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path

import pytest

from farm import verdict
from farm.executor import Executor, longest_first
from farm.results.run import BuildOutcome, BuildRecord, Cell, Crash, RunWriter, Status
from farm.vm import registry
from farm.vm.base import BootError, Diagnosis, RunResult

from . import fakes
from .fakes import KTAP_FAIL, KTAP_PASS, FakePool, Step

CELL = ("stock", "Broadwell", "cpuinfo")
CID = "stock/Broadwell/cpuinfo"


class Quiet:
    def note(self, text): pass
    def start(self, total): pass
    def cell(self, cell, state): pass
    def stop(self): pass


def _run(tmp_path: Path, script: dict, pools=None, retries: int = 1, cells=(CELL,)):
    pools = pools or [FakePool(script=script)]
    plan, prepared = fakes.plan(tmp_path, list(cells), pools, retries=retries)
    ex = Executor(plan, RunWriter(plan.record, tmp_path / "run.json"), Quiet())
    ex.run(prepared)
    return plan.record, pools


def _cell(record, cid=CID) -> Cell:
    return next(c for c in record.cells if c.id == cid)


def test_a_crash_is_never_retried(tmp_path):
    record, (pool,) = _run(tmp_path, {CID: [Step(crash="kernel BUG at fs/x.c:1!")]})
    c = _cell(record)
    assert (c.status, c.attempts, c.reason) == (Status.CRASH, 1, "kernel BUG at fs/x.c:1!")
    assert c.crashes[0].lineno == 7
    assert pool.creates == [CID]


def test_a_crash_at_boot_is_a_crash_not_an_infrastructure_error(tmp_path):
    record, (pool,) = _run(tmp_path, {CID: [Step(boot="crash")]})
    c = _cell(record)
    assert (c.status, c.stage, c.attempts) == (Status.CRASH, "boot", 1)
    assert c.qemu_command == ["fake-qemu"]  # the command that really ran, from the BootError


def test_fail_then_pass_is_flaky(tmp_path):
    record, _ = _run(tmp_path, {CID: [Step(stdout=KTAP_FAIL, exit_status=1), Step()]})
    c = _cell(record)
    assert (c.status, c.attempts) == (Status.FLAKY, 2)
    assert "FAIL on attempt 1" in c.reason
    assert record.exit_code() == 1  # FLAKY fails the run


def test_fail_twice_is_fail(tmp_path):
    record, (pool,) = _run(tmp_path, {CID: [Step(stdout=KTAP_FAIL, exit_status=1)]})
    c = _cell(record)
    assert (c.status, c.attempts, c.reason) == (Status.FAIL, 2, "failed: works")


def test_fail_then_error_keeps_the_fail(tmp_path):
    record, _ = _run(tmp_path, {CID: [Step(stdout=KTAP_FAIL, exit_status=1), Step(boot="error")]})
    c = _cell(record)
    assert (c.status, c.stage, c.attempts) == (Status.FAIL, "test", 2)


def test_timeout_then_error_keeps_the_timeout(tmp_path):
    record, _ = _run(tmp_path, {CID: [Step(timed_out=True), Step(lost="SSH connection dropped")]})
    assert (_cell(record).status, _cell(record).attempts) == (Status.TIMEOUT, 2)


def test_error_is_retried_on_a_fresh_guest(tmp_path):
    record, (pool,) = _run(tmp_path, {CID: [Step(boot="error"), Step()]})
    c = _cell(record)
    assert (c.status, c.attempts) == (Status.PASS, 2)
    assert pool.creates == [CID, CID]  # two boots: the retry never reuses the failed guest


def test_error_twice_is_error_and_exit_3(tmp_path):
    record, _ = _run(tmp_path, {CID: [Step(lost="SSH connection dropped before the command ended")]})
    c = _cell(record)
    assert (c.status, c.attempts) == (Status.ERROR, 2)
    assert record.exit_code() == 3


def test_no_retries_means_one_attempt(tmp_path):
    record, _ = _run(tmp_path, {CID: [Step(boot="error"), Step()]}, retries=0)
    assert (_cell(record).status, _cell(record).attempts) == (Status.ERROR, 1)


def test_a_backend_exception_is_the_cells_error_not_a_traceback(tmp_path):
    record, _ = _run(tmp_path, {CID: [Step(boot="raise")]})
    c = _cell(record)
    assert c.status is Status.ERROR and "RuntimeError: a bug in a backend" in c.reason


def test_a_lost_host_requeues_its_cell_on_another_pool(tmp_path):
    lost = FakePool(name="a", script={CID: [Step(boot="lost")]})
    good = FakePool(name="b")
    record, _ = _run(tmp_path, {}, pools=[lost, good])
    c = _cell(record)
    assert (c.status, c.host, c.retried_from) == (Status.PASS, "b", ["a"])
    assert lost.creates == [CID] and good.creates == [CID]


def test_a_host_lost_mid_test_requeues_too(tmp_path):
    lost = FakePool(name="a", script={CID: [Step(host_lost_in_run=True)]})
    good = FakePool(name="b")
    record, _ = _run(tmp_path, {}, pools=[lost, good])
    c = _cell(record)
    assert (c.status, c.host, c.retried_from) == (Status.PASS, "b", ["a"])


def test_a_kernel_that_did_not_build_boots_nothing(tmp_path):
    pool = FakePool()
    plan, prepared = fakes.plan(tmp_path, [CELL], [pool])
    prepared["stock"].error = "kernel 'stock' does not build: x.c:1: error"
    prepared["stock"].build = BuildRecord(BuildOutcome.FAILED, error=prepared["stock"].error, error_lines=["x.c:1: error"])
    Executor(plan, RunWriter(plan.record, tmp_path / "run.json"), Quiet()).run(prepared)
    c = plan.record.cells[0]
    assert (c.status, c.stage) == (Status.ERROR, "build")
    assert pool.creates == []
    assert (tmp_path / c.files["build_errors"]).read_text() == "x.c:1: error\n"


def test_ctrl_c_stops_queued_cells_and_leaves_them_pending(tmp_path):
    gate = threading.Event()  # never set: the second cell's test hangs until the pool is shut down
    cells = [("stock", "Broadwell", "cpuinfo"), ("stock", "Skylake-Server", "cpuinfo"), ("stock", "max", "cpuinfo")]
    pool = FakePool(script={"stock/Skylake-Server/cpuinfo": [Step(block=gate)]})
    plan, prepared = fakes.plan(tmp_path, cells, [pool])
    ex = Executor(plan, RunWriter(plan.record, tmp_path / "run.json"), Quiet())

    def interrupt():
        while len(pool.creates) < 2:
            time.sleep(0.005)
        time.sleep(0.02)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        try:
            ex.run(prepared)
        except KeyboardInterrupt:
            ex.stop()  # what scheduler.run does: the one interrupt path
            raise
    by = {c.id: c.status for c in plan.record.cells}
    assert by == {"stock/Broadwell/cpuinfo": Status.PASS, "stock/Skylake-Server/cpuinfo": Status.PENDING,
                  "stock/max/cpuinfo": Status.PENDING}
    assert plan.record.interrupted and pool.stopped.is_set()
    assert "stock/max/cpuinfo" not in pool.creates  # queued cells never started
    assert all(done.is_set() for done in ex.finished)


def test_every_slot_of_every_pool_runs_cells(tmp_path):
    cells = [("stock", cpu, "cpuinfo") for cpu in ("Broadwell", "Skylake-Server", "Skylake-Client", "max")]
    a, b = FakePool(name="a", slots=2), FakePool(name="b", slots=2)
    record, _ = _run(tmp_path, {}, pools=[a, b], cells=cells)
    assert {c.status for c in record.cells} == {Status.PASS}
    assert len(a.creates) + len(b.creates) == 4


def test_the_fake_is_a_registered_backend(tmp_path):
    registry.register("fake", "tests.fakes")
    try:
        plan, _ = fakes.plan(tmp_path, [CELL], [])
        added = plan.add_backend("fake", "lab1")
        assert [p.name for p in added] == ["lab1"] and plan.record.host.hosts["lab1"]["slots"] == 1
    finally:
        registry.BACKENDS.pop("fake")


def test_longest_first_unknown_durations_first():
    cells = [Cell(id=f"k/{c}/t", kernel="k", cpu=c, test="t") for c in ("a", "b", "new")]
    past = {("k", "a", "t"): 5.0, ("k", "b", "t"): 50.0}
    assert [c.cpu for c in longest_first(cells, past)] == ["new", "b", "a"]


# --- the verdict alone -------------------------------------------------------------------------------


def _result(stdout=KTAP_PASS, exit_status=0, **kw) -> RunResult:
    return RunResult(["t"], exit_status, stdout, "", 1.0, **kw)


def test_verdict_console_outranks_output():
    crash = Crash("warning", "WARNING: CPU: 0 PID: 1 at x.c:1 f", 12)
    o = verdict.from_run("ktap", _result(), Diagnosis(running=True, crashes=[crash], first_crash=crash))
    assert (o.status, o.reason, o.crashes[0].lineno) == (Status.CRASH, crash.line, 12)


@pytest.mark.parametrize(("stdout", "exit_status", "want", "reason"), [
    (KTAP_PASS, 0, Status.PASS, ""),
    (KTAP_PASS, 3, Status.FAIL, "all cases passed but the test exited 3"),
    ("TAP version 13\n1..2\nok 1 a\n", 1, Status.FAIL, "plan says 2 cases, output has 1: the test stopped early"),
    ("hello\n", 0, Status.FAIL, "no KTAP results in the output"),
    ("TAP version 13\n1..1\nok 1 a # SKIP no AVX-512\n", 4, Status.SKIP, ""),
])
def test_verdict_ktap(stdout, exit_status, want, reason):
    o = verdict.from_run("ktap", _result(stdout, exit_status), Diagnosis(running=True))
    assert (o.status, o.reason) == (want, reason)


@pytest.mark.parametrize(("exit_status", "want"), [(0, Status.PASS), (4, Status.SKIP), (1, Status.FAIL)])
def test_verdict_exit_code(exit_status, want):
    assert verdict.from_run("exit-code", _result("", exit_status), Diagnosis(running=True)).status is want


def test_verdict_boot_error_kinds():
    assert verdict.from_boot_error(BootError("no marker")).status is Status.ERROR
    assert verdict.from_boot_error(BootError("panic", crashed=True)).status is Status.CRASH


def test_catalog_formats_are_the_verdict_table():
    from farm import catalog

    assert set(catalog.RESULT_FORMATS) == set(verdict.FORMATS)


def test_a_skipped_feature_the_kernel_provides_fails():
    skipped = _result("TAP version 13\n1..2\nok 1 a # SKIP ARCH_GET_XCR0: EINVAL\nok 2 b # SKIP ARCH_GET_XCR0: EINVAL\n", 4)
    o = verdict.from_run("ktap", skipped, Diagnosis(running=True), {"xcr0"})
    assert o.status is Status.FAIL and "provides xcr0 but the test skipped it" in o.reason and "EINVAL" in o.reason
    assert verdict.from_run("ktap", skipped, Diagnosis(running=True)).status is Status.SKIP  # the baseline


def test_a_reset_without_a_console_line_is_a_crash():
    o = verdict.from_run("ktap", _result(lost="SSH connection dropped before the command ended", exit_status=None),
                         Diagnosis(running=False, exit_status=0, stop_reason="guest-reset"))
    assert o.status is Status.CRASH and "guest reset itself" in o.reason
    quit_by_us = verdict.from_run("ktap", _result(lost="dropped", exit_status=None),
                                  Diagnosis(running=False, exit_status=0, stop_reason="host-signal"))
    assert quit_by_us.status is Status.ERROR  # QEMU killed from outside: infrastructure, retried


def test_each_pair_boots_once_per_run_then_restores_and_a_retry_boots(tmp_path):
    cells = [("stock", "Broadwell", t) for t in ("cpuinfo", "xcr0", "x86-selftests")] + [("stock", "max", "cpuinfo")]
    pool = FakePool(snapshots=True, script={"stock/Broadwell/x86-selftests": [Step(boot="error"), Step()]})
    record, _ = _run(tmp_path, {}, pools=[pool], cells=cells)
    assert list(zip(pool.creates, pool.restores, strict=True)) == [
        ("stock/Broadwell/cpuinfo", False),  # the pair's first boot in this run is a real one
        ("stock/Broadwell/xcr0", True),
        ("stock/Broadwell/x86-selftests", True),
        ("stock/Broadwell/x86-selftests", False),  # its retry boots: the snapshot is ruled out
        ("stock/max/cpuinfo", False),  # another model: its own first boot
    ]
    by = {c.id: c for c in record.cells}
    assert [by[f"stock/Broadwell/{t}"].booted for t in ("cpuinfo", "xcr0")] == ["booted", "restored"]
    assert by["stock/Broadwell/xcr0"].snapshot == "snap-bzImage-Broadwell"


def test_no_snapshots_boots_every_cell(tmp_path):
    cells = [("stock", "Broadwell", t) for t in ("cpuinfo", "xcr0")]
    pool = FakePool(snapshots=True)
    plan, prepared = fakes.plan(tmp_path, cells, [pool])
    plan.snapshots = False
    Executor(plan, RunWriter(plan.record, tmp_path / "run.json"), Quiet()).run(prepared)
    assert pool.restores == [False, False] and {c.booted for c in plan.record.cells} == {"booted"}


def test_two_slots_do_not_boot_the_same_pair_at_once(tmp_path):
    cells = [("stock", cpu, t) for cpu in ("Broadwell", "max") for t in ("cpuinfo", "xcr0", "x86-selftests")]
    pool = FakePool(snapshots=True, slots=2)
    record, _ = _run(tmp_path, {}, pools=[pool], cells=cells)
    first = {}
    for cid, restore in zip(pool.creates, pool.restores, strict=True):
        first.setdefault(cid.split("/")[1], restore)
    assert sorted(first) == ["Broadwell", "max"] and not any(first.values())  # each pair's first boot is real
    assert pool.restores.count(False) == 2 and pool.restores.count(True) == 4  # and each pair booted only once
