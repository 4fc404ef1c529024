"""Runs a job's cells: kernels prepared once each, then boot + test per cell, in parallel, into run.json."""

from __future__ import annotations

import collections
import datetime as dt
import glob
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import ktap
from .catalog import Catalog, Job, Kernel, Test
from .errors import FarmError, InputError
from .guest.image import PAYLOAD_DIR, GuestImage, ImageBuilder
from .guest.keys import client_key
from .paths import cache_root
from .progress import Progress
from .results.history import History
from .results.run import Cell, Run, RunWriter
from .vm import qemu, remote
from .vm.accel import Accel
from .vm.base import BootError, HostLost, MachineSpec, Pool, RunResult


@dataclass
class PreparedKernel:
    image: Path | None
    guest: GuestImage | None
    build: dict
    error: str = ""  # why this kernel cannot be booted (its cells end as ERROR at stage build)
    error_lines: tuple[str, ...] = ()


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def default_parallel(memory_mb: int = 512) -> int:
    """One guest per free core (TCG is CPU-bound), and no more than available memory holds
    (each guest costs its RAM plus ~300 MB of QEMU and TCG translation cache)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    by_cores = max(1, round((os.cpu_count() or 1) - load))
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available_mb = int(re.search(r"MemAvailable:\s+(\d+)", meminfo).group(1)) // 1024
    except (OSError, AttributeError):
        return by_cores
    return max(1, min(by_cores, available_mb // (memory_mb + 300)))


def prepare_kernel(kernel: Kernel, builder: ImageBuilder, tests: list[Test], note=lambda text: None) -> PreparedKernel:
    """The kernel image to boot (found, or built once) and the guest image that goes with it."""
    modules = None
    build: dict = {}
    if kernel.prebuilt:
        images = sorted(glob.glob(kernel.prebuilt.image), key=_natural)
        if not images:
            return PreparedKernel(None, None, {}, f"{kernel.path}: prebuilt image "
                                  f"'{kernel.prebuilt.image}' matches no file")
        image = Path(images[-1])
        release = image.name.removeprefix("vmlinuz-")
        if kernel.prebuilt.modules:
            modules = (Path(kernel.prebuilt.modules.format(release=release)), kernel.prebuilt.load)
        build = {"prebuilt": str(image), "release": release}
    else:
        from .kernel.build import BuildError, build_kernel  # heavy; only when something is built

        note(f"kernel {kernel.name}: building")
        try:
            built = build_kernel(kernel, log=lambda line: note(f"kernel {kernel.name}: {line}"))
        except BuildError as e:
            return PreparedKernel(None, None, {"log": str(getattr(e, "log_path", ""))}, str(e),
                                  tuple(getattr(e, "lines", ()) or ()))
        image = built.image
        build = dict(built.metadata, cache_hit=built.cache_hit, key=built.key, log=str(built.log_path))
        if kernel.checkpatch:
            from .kernel.checkpatch import check_series, summary

            build["checkpatch"] = check_series(kernel)
            note(f"kernel {kernel.name}: {summary(build['checkpatch'])}")
    try:
        guest = builder.image(tests, modules)
    except FarmError as e:
        return PreparedKernel(image, None, build, f"guest image: {e}")
    return PreparedKernel(image, guest, build)


def longest_first(cells: list[Cell], past: dict[tuple[str, str, str], float]) -> list[Cell]:
    """Longest cells first by their past durations (unknown ones first of all: they may be long),
    so a run does not end waiting on one slow cell. Stable: ties keep the job's order."""
    return sorted(cells, key=lambda c: -past.get((c.kernel, c.cpu, c.test), float("inf")))


class Scheduler:
    def __init__(self, catalog: Catalog, job: Job, kernels: list[str], cpus: list[str], tests: list[str],
                 out_dir: Path, accel: Accel, parallel: int, progress: Progress, argv: list[str],
                 existing: Run | None = None, pools: list[tuple[Pool, int]] | None = None):
        self.catalog = catalog
        self.job = job
        self.kernels = kernels
        self.cpus = cpus
        self.tests = tests
        self.out = out_dir
        self.accel = accel
        self.parallel = parallel
        self.progress = progress
        self.stopping = threading.Event()
        self.key = client_key(cache_root() / "keys")
        self.key.load()  # a damaged key is bad input, found before any guest boots
        self.local = qemu.QemuPool(self.key)
        # Where cells run: (pool, slots). The local QEMU pool by default; remote hosts add theirs.
        self.pools: list[tuple[Pool, int]] = pools if pools is not None else [(self.local, parallel)]
        self.queue: collections.deque[Cell] = collections.deque()
        self.queue_lock = threading.Lock()
        self.in_flight = 0  # cells being run now: one may come back to the queue if its host is lost
        self.run_record = Run(
            run_id=out_dir.name, job=job.name, job_file=str(job.path), started=now(), argv=argv,
            host={"hostname": socket.gethostname(), "qemu": qemu.qemu_version(), "accel": accel.name,
                  "accel_reason": accel.reason, "cores": os.cpu_count(), "parallel": parallel},
        )
        for k in kernels:
            kern = catalog.kernels[k]
            self.run_record.kernels[k] = {"description": kern.description, "baseline": kern.baseline,
                                          "source": kern.source.location if kern.source else "prebuilt",
                                          "patches": [str(p) for p in kern.patches]}
        self.run_record.cells = [
            Cell(id=f"{k}/{c}/{t}", kernel=k, cpu=c, test=t, cpu_qemu=catalog.cpus[c].qemu, accel=accel.name)
            for k in kernels for c in cpus for t in tests
        ]
        if existing:  # --resume: keep every finished cell, redo the rest
            done = {c.id: c for c in existing.cells if c.done}
            self.run_record.cells = [done.get(c.id, c) for c in self.run_record.cells]
            self.run_record.run_id, self.run_record.started = existing.run_id, existing.started
            self.run_record.argv = existing.argv
            self.run_record.resumed = [*existing.resumed, now()]
        self.writer = RunWriter(self.run_record, out_dir / "run.json")

    # --- one cell ------------------------------------------------------------------------------

    def _run_cell(self, cell: Cell, prepared: PreparedKernel, pool: Pool) -> None:
        if self.stopping.is_set():
            return
        kernel = self.catalog.kernels[cell.kernel]
        test = self.catalog.tests[cell.test]
        cell_dir = self.out / "cells" / cell.kernel / cell.cpu / cell.test
        cell_dir.mkdir(parents=True, exist_ok=True)
        cell.kernel_image = str(prepared.image or "")
        if prepared.error:
            self._finish(cell, "ERROR", "build", prepared.error)
            if prepared.error_lines:
                (cell_dir / "build-errors.txt").write_text("\n".join(prepared.error_lines) + "\n")
                cell.files["build_errors"] = str((cell_dir / "build-errors.txt").relative_to(self.out))
            return
        spec = MachineSpec(
            kernel=prepared.image, initrd=prepared.guest.initrd, cmdline=kernel.cmdline,
            cpu=self.catalog.cpus[cell.cpu].qemu, accel=getattr(pool, "accel", None) or self.accel.name,
            host_key=prepared.guest.host_key, memory_mb=self.job.memory_mb, smp=self.job.smp,
        )
        cell.accel = spec.accel
        cell.host = getattr(pool, "name", "local")
        timeout = self.job.timeouts.test or test.timeout
        first_failure = ""
        for attempt in range(1, self.job.retries + 2):
            if attempt > 1:
                self._keep_attempt(cell, cell_dir, attempt - 1)
            cell.attempts = attempt
            infra = self._attempt(cell, cell_dir, spec, test, timeout, pool)
            if self.stopping.is_set() or attempt > self.job.retries:
                break
            if infra:
                self.progress.cell(cell, f"infrastructure error, retrying on a fresh guest: {cell.reason}")
            elif cell.status in ("FAIL", "TIMEOUT") and not first_failure:
                # A failure is tried once more; a crash never is (it is never retried away).
                first_failure = f"{cell.status} on attempt {attempt}: {cell.reason}"
                self.progress.cell(cell, f"{cell.status}, trying once more to tell a flake from a failure")
            else:
                break
        if first_failure and cell.status == "PASS":
            self._finish(cell, "FLAKY", cell.stage, f"passed only on a retry; {first_failure}")
        if self.stopping.is_set() and cell.status == "ERROR":
            cell.status, cell.reason = "PENDING", "interrupted"  # not a verdict: --resume reruns it
        self.writer.save()

    def _keep_attempt(self, cell: Cell, cell_dir: Path, attempt: int) -> None:
        """Move an attempt's logs aside so the evidence of a failed try survives its retry."""
        keep = cell_dir / f"attempt-{attempt}"
        keep.mkdir(exist_ok=True)
        for name, rel in list(cell.files.items()):
            src = self.out / rel
            if src.exists() and src.parent == cell_dir:
                src.rename(keep / src.name)
                cell.files[f"attempt{attempt}_{name}"] = self._rel(keep / src.name)

    def _attempt(self, cell: Cell, cell_dir: Path, spec: MachineSpec, test: Test, timeout: float,
                 pool: Pool) -> bool:
        """One boot and test. Returns True when the failure was the infrastructure's (worth a retry)."""
        start = time.monotonic()
        cell.files.update(console=self._rel(cell_dir / "console.log"), qemu_log=self._rel(cell_dir / "qemu.log"))
        cell.files.pop("output", None)
        cell.files.pop("stderr", None)
        self.progress.cell(cell, "booting")
        try:
            instance = pool.create(spec, cell_dir, self.job.timeouts.boot)
        except HostLost:
            raise
        except BootError as e:
            cell.timings["boot"] = round(time.monotonic() - start, 3)
            cell.qemu_command = qemu.command_line(spec, Path("QMP_SOCKET"))
            if e.crashed:
                self._finish(cell, "CRASH", "boot", str(e))
                return False
            self._finish(cell, "ERROR", "boot", str(e))
            return True
        except Exception as e:  # noqa: BLE001 - anything else that stops a boot is the infrastructure's
            self._finish(cell, "ERROR", "boot", f"{type(e).__name__}: {e}" if not isinstance(e, FarmError) else str(e))
            return True
        try:
            cell.qemu_command = instance.boot.command
            cell.filtered_features = instance.boot.filtered_features
            cell.timings["boot_to_marker"] = round(instance.boot.seconds_to_marker, 3)
            cell.timings["boot_to_ssh"] = round(instance.boot.seconds_to_ssh, 3)
            self.progress.cell(cell, "testing")
            # FARM_ATTEMPT lets a test log which try it is; env keeps it an argv list, no shell involved.
            argv = ["env", f"FARM_ATTEMPT={cell.attempts}", f"FARM_ACCEL={spec.accel}",
                    f"{PAYLOAD_DIR}/{test.run[0]}", *test.run[1:]]
            result = instance.run(argv, timeout)
            cell.timings["test"] = round(result.seconds, 3)
            if result.lost or result.timed_out:
                instance.wait_for_crash(1.0)  # a guest that died mid-test usually says why on the console
            diag = instance.diagnose()
        finally:
            t = time.monotonic()
            instance.close()
            cell.timings["shutdown"] = round(time.monotonic() - t, 3)
            cell.timings["total"] = round(time.monotonic() - start, 3)
        self._write_output(cell, cell_dir, result)
        return self._classify(cell, test, result, diag)

    def _classify(self, cell: Cell, test: Test, result: RunResult, diag: dict) -> bool:
        cell.exit_status = result.exit_status
        cell.crashes = diag["crashes"]
        parsed = ktap.parse(result.stdout)
        cell.facts = parsed.facts
        cell.cases = [c.to_dict() for c in parsed.cases]
        if diag["crashes"]:
            self._finish(cell, "CRASH", "test", diag["first_crash"])
            return False
        if result.timed_out:
            self._finish(cell, "TIMEOUT", "test", f"test did not finish within {result.seconds:.0f} s")
            return False
        if result.lost:
            self._finish(cell, "ERROR", "test", result.lost)
            return True
        if test.format == "ktap":
            status = parsed.status
            reason = "; ".join(parsed.problems)
            if status == "ERROR":  # output that is not a complete KTAP report is the test's failure
                status = "FAIL"
                reason = reason or "no KTAP results in the output"
            elif status == "PASS" and result.exit_status not in (0, None):
                status, reason = "FAIL", f"all cases passed but the test exited {result.exit_status}"
            failed = [c.name for c in parsed.cases if c.status == "FAIL"]
            if failed:
                reason = f"failed: {', '.join(failed[:10])}" + (" ..." if len(failed) > 10 else "")
        else:
            status = {0: "PASS", 4: "SKIP"}.get(result.exit_status, "FAIL")
            reason = "" if status == "PASS" else f"exit status {result.exit_status}"
        self._finish(cell, status, "test", reason)
        return False

    def _write_output(self, cell: Cell, cell_dir: Path, result: RunResult) -> None:
        (cell_dir / "output.txt").write_text(result.stdout)
        cell.files["output"] = self._rel(cell_dir / "output.txt")
        if result.stderr:
            (cell_dir / "stderr.txt").write_text(result.stderr)
            cell.files["stderr"] = self._rel(cell_dir / "stderr.txt")

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.out))

    def _finish(self, cell: Cell, status: str, stage: str, reason: str) -> None:
        cell.status, cell.stage, cell.reason = status, stage, reason
        self.progress.cell(cell, status + (f": {reason}" if reason else ""))
        self.writer.save()

    # --- the whole run -------------------------------------------------------------------------

    def run(self) -> Run:
        self.out.mkdir(parents=True, exist_ok=True)
        self.writer.save()
        builder = ImageBuilder(cache_root(), self.catalog.root / "guests", self.key, self.catalog.kernels)
        tests = [self.catalog.tests[t] for t in self.tests]
        try:
            prepared = {}
            todo = {c.kernel for c in self.run_record.cells if not c.done}
            for k in [k for k in self.kernels if k in todo]:
                if self.stopping.is_set():
                    break
                prepared[k] = prepare_kernel(self.catalog.kernels[k], builder, tests, self.progress.note)
                self.run_record.kernels[k]["build"] = prepared[k].build
            self._confirm_kvm(prepared)
            cells = [c for c in self.run_record.cells if not c.done and c.kernel in prepared]
            self.progress.start(len(cells))
            self.queue.extend(self._longest_first(cells))
            workers = [threading.Thread(target=self._worker, args=(pool, prepared), daemon=True,
                                        name=f"{getattr(pool, 'name', 'local')}#{i}")
                       for pool, slots in self.pools for i in range(slots)]
            for w in workers:
                w.start()
            try:
                for w in workers:
                    while w.is_alive():  # short joins keep the main thread responsive to Ctrl-C
                        w.join(0.2)
            except KeyboardInterrupt:
                # Stop first, then wait: queued cells must not start, running guests die now.
                self.stopping.set()
                self.run_record.interrupted = True
                qemu.kill_all()
                remote.kill_all()
                for w in workers:
                    w.join(30)
                raise
        except KeyboardInterrupt:
            self.stopping.set()
            self.run_record.interrupted = True
            qemu.kill_all()
            remote.kill_all()
            raise
        finally:
            self.run_record.finished = now()
            self.writer.save()
            self.progress.stop()
        return self.run_record

    def _confirm_kvm(self, prepared: dict[str, PreparedKernel]) -> None:
        """A KVM that passed the static checks must also boot a guest to its marker, or TCG it is."""
        if self.accel.name != "kvm" or not self.accel.probe_boot:
            return
        ready = next((p for p in prepared.values() if not p.error), None)
        if not ready:
            return
        first = self.run_record.cells[0]
        spec = MachineSpec(kernel=ready.image, initrd=ready.guest.initrd,
                           cmdline=self.catalog.kernels[first.kernel].cmdline,
                           cpu=self.catalog.cpus[first.cpu].qemu, accel="kvm", host_key=ready.guest.host_key, smp=1)
        try:
            with self.local.create(spec, self.out / "accel-probe", boot_timeout=30):
                pass
        except FarmError as e:
            self.accel = Accel("tcg", f"KVM probe boot failed, using TCG: {str(e).splitlines()[0]}")
            self.progress.note(f"warning: {self.accel.reason}")
            self.run_record.host.update(accel="tcg", accel_reason=self.accel.reason)
            for c in self.run_record.cells:
                if not c.done:
                    c.accel = "tcg"
            self.writer.save()

    def _longest_first(self, cells: list[Cell]) -> list[Cell]:
        past: dict = {}
        try:
            with History(self.out.parent / "history.sqlite", create=False) as db:
                past = db.durations()
        except (FarmError, OSError):
            pass  # no history yet, or a damaged one: keep the job's order
        return longest_first(cells, past)

    def _worker(self, pool: Pool, prepared: dict[str, PreparedKernel]) -> None:
        """One slot: take cells until none are left. A lost host gives its cell back and stops."""
        while not self.stopping.is_set():
            with self.queue_lock:
                if not self.queue and not self.in_flight:
                    return
                cell = self.queue.popleft() if self.queue else None
                self.in_flight += cell is not None
            if cell is None:  # nothing queued, but a running cell may yet come back from a lost host
                time.sleep(0.2)
                continue
            try:
                self._guarded(cell, prepared[cell.kernel], pool)
            except HostLost as e:
                cell.status, cell.reason = "PENDING", f"host {getattr(pool, 'name', '?')} lost: {e}"
                if self.stopping.is_set():  # our own Ctrl-C cut the connection: not the host's fault
                    self.writer.save()
                    return
                cell.retried_from.append(getattr(pool, "name", "?"))
                cell.timings.clear()  # the lost attempt's stages say nothing about the rerun
                self.progress.cell(cell, f"requeued: {cell.reason}")
                with self.queue_lock:
                    self.queue.appendleft(cell)
                self.writer.save()
                return
            finally:
                with self.queue_lock:
                    self.in_flight -= 1

    def _guarded(self, cell: Cell, prepared: PreparedKernel, pool: Pool) -> None:
        """A cell's unexpected error is that cell's ERROR, never a traceback that ends the run."""
        try:
            self._run_cell(cell, prepared, pool)
        except HostLost:
            raise
        except InputError as e:
            self._finish(cell, "ERROR", cell.stage or "setup", str(e))
        except Exception as e:  # noqa: BLE001 - recorded in the cell, with its type
            if self.stopping.is_set():
                cell.status, cell.reason = "PENDING", "interrupted"
                self.writer.save()
            else:
                self._finish(cell, "ERROR", cell.stage or "farm", f"{type(e).__name__}: {e}")
