"""The executor: a queue of cells, one worker per pool slot, the retry policy, and the one interrupt path.

It knows pools only through the VM interface (farm/vm/base.py) and verdicts only through farm/verdict.py,
so the scheduling rules are tested with a scripted fake pool in milliseconds (tests/fakes.py).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path

from . import crash, verdict
from .catalog import Test
from .errors import FarmError, InputError
from .eta import RunEta
from .guest.image import PAYLOAD_DIR
from .plan import Plan
from .prepare import PreparedKernel
from .results.history import History
from .results.run import Cell, RunWriter, Status
from .verdict import Outcome
from .vm.base import BootError, Cancelled, HostLost, MachineSpec, Pool, RunResult

KEEPABLE = (Status.FAIL, Status.CRASH, Status.TIMEOUT)  # a guest still running after these may be kept


def longest_first(cells: list[Cell], past: dict[tuple[str, str, str], float]) -> list[Cell]:
    """Longest cells first by their past durations (unknown ones first of all: they may be long),
    so a run does not end waiting on one slow cell. Stable: ties keep the job's order."""
    return sorted(cells, key=lambda c: -past.get((c.kernel, c.cpu, c.test), float("inf")))


class Executor:
    def __init__(self, plan: Plan, writer: RunWriter, progress):
        self.plan = plan
        self.writer = writer
        self.progress = progress
        self.stopping = threading.Event()
        self.queue: collections.deque[Cell] = collections.deque()
        self.queue_lock = threading.Lock()
        self.in_flight = 0  # cells being run now: one may come back to the queue if its pool is lost
        self.workers: list[threading.Thread] = []
        self.finished: list[threading.Event] = []  # one per slot, set when its worker has returned
        self.prepared: dict[str, PreparedKernel] = {}
        self.t0 = time.monotonic()  # the run's start: cells record when they started and ended, after it
        # (pool, kernel, CPU model) pairs that booted for real in this run: every pair does once (the boot is
        # evidence), and only then may its other cells start from the pair's snapshot
        self.booted: set[tuple[str, str, str]] = set()
        self.booting: set[tuple[str, str, str]] = set()  # pairs a slot is booting for the first time now
        self.booted_lock = threading.Lock()
        self.held: dict[str, object] = {}  # cell id -> a failed guest --keep-failed may keep
        self.eta = RunEta({}, 1)  # what is left of the run, for the progress display

    # --- the whole run ---------------------------------------------------------------------------------

    def run(self, prepared: dict[str, PreparedKernel], t0: float | None = None) -> None:
        """Run every pending cell whose kernel was prepared; returns when all are done (or raises
        KeyboardInterrupt, after which the caller calls stop())."""
        self.prepared = prepared
        self.t0 = t0 if t0 is not None else time.monotonic()
        cells = [c for c in self.plan.pending() if c.kernel in prepared]
        past = self._past_durations()
        slots = [(pool, threading.Event()) for pool in self.plan.pools for _ in range(pool.slots)]
        self.eta = RunEta(past, len(slots))
        for c in cells:
            self.eta.queue(c.id, (c.kernel, c.cpu, c.test))
        self.progress.eta = lambda: self.eta.remaining(time.monotonic())
        self.progress.start(len(cells))
        self.queue.extend(longest_first(cells, past))
        self.finished = [done for _, done in slots]
        self.workers = [threading.Thread(target=self._slot, args=(pool, done), daemon=True, name=f"{pool.name}#{i}")
                        for i, (pool, done) in enumerate(slots)]
        for w in self.workers:
            w.start()
        for done in self.finished:
            while not done.wait(0.2):  # short waits keep the main thread responsive to Ctrl-C
                pass

    def stop(self) -> None:
        """The one interrupt path (Ctrl-C, SIGTERM): queued cells do not start, every pool's guests die now,
        running cells end as PENDING (not a verdict: --resume runs them)."""
        self.stopping.set()
        self.plan.record.interrupted = True
        for pool in self.plan.pools:
            pool.shutdown()
        # Each slot says when it is done: Thread.join() interrupted by Ctrl-C can return at once afterwards.
        for done in self.finished:
            done.wait(30)
        self.writer.save()

    def _past_durations(self) -> dict:
        try:
            with History(self.plan.out.parent / "history.sqlite", create=False) as db:
                return db.durations()
        except (FarmError, OSError):
            return {}  # no history yet, or a damaged one: keep the job's order

    # --- workers ---------------------------------------------------------------------------------------

    def _slot(self, pool: Pool, done: threading.Event) -> None:
        try:
            self._worker(pool)
        finally:
            done.set()

    def _worker(self, pool: Pool) -> None:
        """One slot: take cells until none are left. A lost pool gives its cell back and stops."""
        while not self.stopping.is_set():
            with self.queue_lock:
                if not self.queue and not self.in_flight:
                    return
                cell = self._next(pool) if self.queue else None
                self.in_flight += cell is not None
            if cell is None:  # nothing queued, but a running cell may yet come back from a lost pool
                time.sleep(0.05)
                continue
            self.eta.begin(cell.id, (cell.kernel, cell.cpu, cell.test), time.monotonic())
            requeued = False
            try:
                self._guarded(cell, pool)
            except HostLost as e:
                requeued = not self.stopping.is_set()
                cell.status, cell.reason = Status.PENDING, f"host {pool.name} lost: {e}"
                if self.stopping.is_set():  # our own Ctrl-C cut the connection: not the host's fault
                    self.writer.save()
                    return
                cell.retried_from.append(pool.name)
                cell.timings.clear()  # the lost attempt's stages say nothing about the rerun
                self.progress.cell(cell, f"requeued: {cell.reason}")
                with self.queue_lock:
                    self.queue.appendleft(cell)
                self.writer.save()
                return
            finally:
                self.eta.end(cell.id, time.monotonic(), requeued)
                with self.queue_lock:
                    self.in_flight -= 1

    def _next(self, pool: Pool) -> Cell:
        """The next cell for this slot (under queue_lock): the queue's order (longest first), except that a
        cell whose kernel and model another slot is booting right now waits for that boot, so it can start
        from the pair's snapshot instead of booting the same pair twice at once."""
        if self.plan.snapshots and pool.snapshots:
            with self.booted_lock:
                for i, cell in enumerate(self.queue):
                    pair = (pool.name, cell.kernel, cell.cpu)
                    if pair in self.booted or pair not in self.booting:
                        del self.queue[i]
                        if pair not in self.booted:
                            self.booting.add(pair)
                        return cell
        return self.queue.popleft()

    def _guarded(self, cell: Cell, pool: Pool) -> None:
        """A cell's unexpected error is that cell's ERROR, never a traceback that ends the run."""
        try:
            self._run_cell(cell, pool)
        except HostLost:
            raise
        except InputError as e:
            self._apply(cell, Outcome(Status.ERROR, cell.stage or "setup", str(e)))
        except Exception as e:  # noqa: BLE001 - recorded in the cell, with its type
            if self.stopping.is_set():
                cell.status, cell.reason = Status.PENDING, "interrupted"
                self.writer.save()
            else:
                self._apply(cell, Outcome(Status.ERROR, cell.stage or "farm", f"{type(e).__name__}: {e}"))

    # --- one cell ---------------------------------------------------------------------------------------

    def _run_cell(self, cell: Cell, pool: Pool) -> None:
        if self.stopping.is_set():
            return
        prepared = self.prepared[cell.kernel]
        catalog, job = self.plan.catalog, self.plan.job
        test = catalog.tests[cell.test]
        cell_dir = self.plan.out / "cells" / cell.kernel / cell.cpu / cell.test
        cell_dir.mkdir(parents=True, exist_ok=True)
        cell.kernel_image = str(prepared.image or "")
        if prepared.guest:
            cell.initrd, cell.host_key = str(prepared.guest.initrd), prepared.guest.host_key
        if not prepared.ready:
            self._apply(cell, Outcome(Status.ERROR, verdict.STAGE_BUILD, prepared.error))
            if prepared.build.error_lines:
                (cell_dir / "build-errors.txt").write_text("\n".join(prepared.build.error_lines) + "\n")
                cell.files["build_errors"] = self._rel(cell_dir / "build-errors.txt")
            return
        spec = MachineSpec(
            kernel=prepared.image, initrd=prepared.guest.initrd, cmdline=catalog.kernels[cell.kernel].cmdline,
            cpu=catalog.cpus[cell.cpu].qemu, accel=pool.accel or self.plan.accel.name,
            host_key=prepared.guest.host_key, memory_mb=job.memory_mb, smp=job.smp,
            tcg_thread=job.tcg_thread, name=cell.id,
        )
        cell.accel = spec.accel
        cell.host = pool.name
        cell.timings["start"] = round(time.monotonic() - self.t0, 3)  # seconds into the run: the timeline
        timeout = job.timeouts.test or test.timeout
        attempts: list[Outcome] = []
        while True:
            if attempts:
                self._keep_attempt(cell, cell_dir, len(attempts))
                self.eta.begin(cell.id, (cell.kernel, cell.cpu, cell.test), time.monotonic())  # running again
            cell.attempts = len(attempts) + 1
            outcome = self._attempt(cell, cell_dir, self._snapshot_spec(spec, cell, pool, retry=bool(attempts)),
                                    test, timeout, pool)
            attempts.append(outcome)
            if outcome.crashes and prepared.image:  # DEBUG_INFO kernels: frames as file:line
                t = time.monotonic()
                if crash.decode(outcome.crashes, cell_dir / "console.log", Path(prepared.image).parent):
                    cell.timings["decode"] = round(time.monotonic() - t, 3)
            with self.booted_lock:  # booted or not, this slot's first boot of the pair is over
                self.booting.discard((pool.name, cell.kernel, cell.cpu))
            self._apply(cell, outcome)
            if self.stopping.is_set() or not verdict.should_retry(attempts, job.retries):
                break
            self._keep_or_close(cell, keep=False)  # a retry boots a fresh guest
            if outcome.infra:
                self.progress.cell(cell, f"infrastructure error, retrying on a fresh guest: {outcome.reason}")
            else:
                self.progress.cell(cell, f"{outcome.status}, trying once more to tell a flake from a failure")
        result = verdict.known(verdict.final(attempts), test.known.get(spec.accel), spec.accel)
        if result is not outcome:
            self._apply(cell, result)
        self._keep_or_close(cell, keep=cell.status.failing and not self.stopping.is_set())
        if self.stopping.is_set() and cell.status is Status.ERROR:
            cell.status, cell.reason = Status.PENDING, "interrupted"  # not a verdict: --resume reruns it
        cell.timings["end"] = round(time.monotonic() - self.t0, 3)
        self.writer.save()

    def _attempt(self, cell: Cell, cell_dir: Path, spec: MachineSpec, test: Test, timeout: float,
                 pool: Pool) -> Outcome:
        """One boot and test."""
        start = time.monotonic()
        cell.files.update(console=self._rel(cell_dir / "console.log"), qemu_log=self._rel(cell_dir / "qemu.log"))
        cell.files.pop("output", None)
        cell.files.pop("stderr", None)
        self.progress.cell(cell, "booting")
        try:
            instance = pool.create(spec, cell_dir, self.plan.job.timeouts.boot)
        except HostLost:
            raise
        except BootError as e:
            cell.timings["boot"] = round(time.monotonic() - start, 3)
            cell.qemu_command = e.command
            return verdict.from_boot_error(e)
        except Exception as e:  # noqa: BLE001 - anything else that stops a boot is the infrastructure's
            return verdict.from_exception(e)
        try:
            cell.qemu_command = instance.boot.command
            cell.booted = "restored" if instance.boot.restored_from else "booted"
            cell.snapshot = (instance.boot.restored_from or instance.boot.saved_snapshot)[:40]
            if not instance.boot.restored_from:
                with self.booted_lock:
                    self.booted.add((pool.name, cell.kernel, cell.cpu))
                    self.booting.discard((pool.name, cell.kernel, cell.cpu))
            if instance.boot.seconds_saving:
                cell.timings["snapshot_save"] = round(instance.boot.seconds_saving, 3)
            self.progress.cell(cell, "testing")
            # FARM_ATTEMPT lets a test log which try it is, FARM_PROVIDES what the kernel declares it has;
            # env keeps it an argv list, no shell involved.
            provides = ",".join(self.plan.catalog.kernels[cell.kernel].provides)
            argv = ["env", f"FARM_ATTEMPT={cell.attempts}", f"FARM_ACCEL={spec.accel}", f"FARM_PROVIDES={provides}",
                    f"{PAYLOAD_DIR}/{test.run[0]}", *test.run[1:]]
            try:
                result = instance.run(argv, timeout)
            except BootError as e:  # a backend that boots with the test (LAVA) reports its boot here
                cell.qemu_command = e.command or cell.qemu_command
                return verdict.from_boot_error(e)
            except Cancelled as e:  # cancelled in its lab by a user: not a verdict, --resume runs it
                return Outcome(Status.PENDING, verdict.STAGE_TEST, str(e))
            if not (result.lost or result.timed_out or instance.boot.lab_job):
                self._leak_scan(cell, instance, result)
            cell.filtered_features = instance.boot.filtered_features
            cell.timings["boot_to_marker"] = round(instance.boot.seconds_to_marker, 3)
            cell.timings["boot_to_ssh"] = round(instance.boot.seconds_to_ssh, 3)
            cell.timings["test"] = round(result.seconds, 3)
            if result.lost or result.timed_out:
                instance.wait_for_crash(1.0)  # a guest that died mid-test usually says why on the console
            diag = instance.diagnose()
            outcome = verdict.from_run(test.format, result, diag, self._provided(cell, test))
        finally:
            if instance.boot.lab_job:
                cell.lab_jobs.append(instance.boot.lab_job)
                cell.qemu_command = instance.boot.command or cell.qemu_command
            held = (self.plan.keep_failed and pool.can_keep and not self.stopping.is_set()
                    and "outcome" in locals() and outcome.status in KEEPABLE and diag.running)
            if held:  # --keep-failed: the caller keeps it, or closes it when a retry follows
                self.held[cell.id] = instance
            else:
                self._close(cell, instance)
            cell.timings["total"] = round(time.monotonic() - start, 3)
        self._write_output(cell, cell_dir, result)
        return outcome

    def _leak_scan(self, cell: Cell, instance, result: RunResult) -> None:
        """On a kmemleak kernel, one scan after the test; what it finds reaches the console (farm.crash)."""
        if not crash.leak_scan(self.plan.catalog.kernels[cell.kernel]):
            return
        t = time.monotonic()
        time.sleep(max(0.0, crash.LEAK_MIN_AGE - result.seconds))
        before = len(instance.console.state.crashes)
        scan = instance.run(["sh", "-c", crash.LEAK_SCAN], 120)
        if scan.stdout.strip():  # leaks: give the console a moment to carry the report to the crash scan
            instance.console.wait(lambda s: len(s.crashes) > before, 5.0)
        cell.timings["leak_scan"] = round(time.monotonic() - t, 3)

    def _provided(self, cell: Cell, test: Test) -> set[str]:
        return set(test.checks) & set(self.plan.catalog.kernels[cell.kernel].provides)

    def _close(self, cell: Cell, instance) -> None:
        t = time.monotonic()
        instance.close()
        cell.timings["shutdown"] = round(time.monotonic() - t, 3)

    def _keep_or_close(self, cell: Cell, keep: bool) -> None:
        """A failed cell's guest held for --keep-failed: kept (a record, a watchdog, how to reach it) when the
        cell ended failing, closed otherwise."""
        instance = self.held.pop(cell.id, None)
        if instance is None:
            return
        if not keep:
            self._close(cell, instance)
            return
        from . import keep as keeping

        kept = keeping.Kept(cell=cell.id, deadline=time.time() + self.plan.keep_failed, kernel=cell.kernel,
                            **instance.detach())
        path = keeping.save(self.plan.out, kept)
        try:
            keeping.start_watchdog(path, kept)
        except OSError:
            kept.stop()  # a kept guest is never left without its watchdog
            path.unlink(missing_ok=True)
            raise
        cell.files["kept"] = self._rel(path)
        self.progress.note(f"kept {cell.id} for {self.plan.keep_failed / 60:.0f} min: farm shell {self.plan.out} "
                           f"{cell.id}   (ssh on 127.0.0.1:{kept.port}; farm shell --stop {self.plan.out} ends it)")

    def _snapshot_spec(self, spec: MachineSpec, cell: Cell, pool: Pool, retry: bool) -> MachineSpec:
        """Whether this attempt may start from the pair's snapshot: not the pair's first boot of the run, not a
        retry (a retry boots, to rule the snapshot out), and snapshots on for the run and the pool."""
        if not (self.plan.snapshots and pool.snapshots):
            return spec
        with self.booted_lock:
            booted = (pool.name, cell.kernel, cell.cpu) in self.booted
        return dataclasses.replace(spec, snapshot=pool.snapshot_key(spec), restore=booted and not retry)

    def _apply(self, cell: Cell, o: Outcome) -> None:
        cell.status, cell.stage, cell.reason = o.status, o.stage, o.reason
        cell.cases, cell.facts, cell.crashes, cell.exit_status = o.cases, o.facts, o.crashes, o.exit_status
        if o.status.done:  # before the progress line, so the line's ETA counts this cell as finished
            self.eta.end(cell.id, time.monotonic())
        self.progress.cell(cell, o.status + (f": {o.reason}" if o.reason else ""))
        self.writer.save()

    def _keep_attempt(self, cell: Cell, cell_dir: Path, attempt: int) -> None:
        """Move an attempt's logs aside so the evidence of a failed try survives its retry."""
        keep = cell_dir / f"attempt-{attempt}"
        keep.mkdir(exist_ok=True)
        for name, rel in list(cell.files.items()):
            src = self.plan.out / rel
            if src.exists() and src.parent == cell_dir:
                src.rename(keep / src.name)
                cell.files[f"attempt{attempt}_{name}"] = self._rel(keep / src.name)

    def _write_output(self, cell: Cell, cell_dir: Path, result: RunResult) -> None:
        (cell_dir / "output.txt").write_text(result.stdout)
        cell.files["output"] = self._rel(cell_dir / "output.txt")
        if result.stderr:
            (cell_dir / "stderr.txt").write_text(result.stderr)
            cell.files["stderr"] = self._rel(cell_dir / "stderr.txt")

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.plan.out))
