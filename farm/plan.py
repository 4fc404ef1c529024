"""A plan: the cells of a run and the pools they may run on, built by the command line before anything runs.

    plan = Plan.new(catalog, job, kernels, cpus, tests, out, accel, argv, key, slots)   # or Plan.resume(...)
    plan.shard(2, 4)                    # --shard: a filter on the cell list
    plan.add_backend("remote", "inv.yml")   # --hosts / --pool: more pools beside the local one
    scheduler.run(plan, progress)

The plan owns the run record from the start (run.json's header and its PENDING cells); only the plan's
methods and the scheduler's modules change it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import Catalog, Job
from .errors import InputError
from .guest.keys import ClientKey
from .results.run import Cell, KernelRecord, Run
from .vm import registry
from .vm.accel import Accel
from .vm.base import Pool


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def parse_shard(text: str) -> tuple[int, int]:
    import re

    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise InputError(f"--shard {text!r}: expected I/N, e.g. 2/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise InputError(f"--shard {text}: I must be between 1 and N (N >= 1)")
    return i, n


def shard_of(cells: list[Cell], i: int, n: int) -> list[Cell]:
    """Shard i of n (1-based): every n-th cell of the job's kernel x CPU x test order, starting at the i-th.
    Every runner computes the same list, so N runners given 1/N .. N/N run every cell exactly once."""
    return cells[i - 1::n]


@dataclass
class Plan:
    catalog: Catalog
    job: Job
    out: Path
    accel: Accel
    record: Run
    key: ClientKey
    slots: int  # local guests at once
    accel_request: str = "auto"  # --accel as given, for backends that decide on their own hosts
    pools: list[Pool] = field(default_factory=list)
    snapshots: bool = True  # booted-guest snapshots (--no-snapshots: every cell boots)
    keep_failed: float = 0.0  # --keep-failed: seconds a failed cell's guest is kept running (0: never)

    # --- making one ------------------------------------------------------------------------------

    @classmethod
    def new(cls, catalog: Catalog, job: Job, kernels: list[str], cpus: list[str], tests: list[str], out: Path,
            accel: Accel, argv: list[str], key: ClientKey, slots: int, accel_request: str = "auto") -> Plan:
        record = Run(run_id=out.name, job=job.name, job_file=str(job.path), started=now(), argv=list(argv))
        record.cells = [Cell(id=f"{k}/{c}/{t}", kernel=k, cpu=c, test=t, cpu_qemu=catalog.cpus[c].qemu,
                             accel=accel.name) for k in kernels for c in cpus for t in tests]
        plan = cls(catalog, job, out, accel, record, key, slots, accel_request)
        plan._start()
        return plan

    @classmethod
    def resume(cls, catalog: Catalog, job: Job, existing: Run, out: Path, accel: Accel, argv: list[str],
               key: ClientKey, slots: int, accel_request: str = "auto") -> Plan:
        """Finish an interrupted run: its finished cells are kept, the rest run again (a shard stays one)."""
        record = existing
        for name in dict.fromkeys(c.kernel for c in record.cells):
            if name not in catalog.kernels:
                raise InputError(f"--resume {out}: kernel '{name}' of that run is no longer in the catalog")
        record.cells = [c if c.done else Cell(id=c.id, kernel=c.kernel, cpu=c.cpu, test=c.test,
                                              cpu_qemu=c.cpu_qemu, accel=accel.name) for c in record.cells]
        record.resumed = [*record.resumed, now()]
        record.interrupted = False
        record.finished = None
        plan = cls(catalog, job, out, accel, record, key, slots, accel_request)
        plan._start()
        return plan

    def _start(self) -> None:
        local = registry.pools("qemu", self._options(""))
        self.pools = list(local)
        host = self.record.host
        self.record.host = dataclasses.replace(
            host, hostname=socket.gethostname(), qemu=local[0].qemu_version(), accel=self.accel.name,
            accel_reason=self.accel.reason, cores=os.cpu_count() or 0, parallel=self.slots)
        for k in self.kernels:
            kern = self.catalog.kernels[k]
            old = self.record.kernels.get(k)
            self.record.kernels[k] = KernelRecord(
                description=kern.description, baseline=kern.baseline,
                source=_where(kern),
                patches=[str(p) for p in kern.patches], provides=list(kern.provides),
                build=old.build if old else None)

    def _options(self, arg: str, note=print) -> registry.PoolOptions:
        return registry.PoolOptions(arg=arg, key=self.key, accel=self.accel_request, local_accel=self.accel,
                                    slots=self.slots, note=note)

    # --- changing it before it runs ---------------------------------------------------------------

    def shard(self, i: int, n: int) -> None:
        self.record.cells = shard_of(self.record.cells, i, n)
        self.record.host.shard = f"{i}/{n}"

    def add_backend(self, kind: str, arg: str, note=print, token_file: str | None = None) -> list[Pool]:
        """Pools of another backend beside the local one (`--hosts FILE` is remote:FILE, `--lava URL` lava:URL)."""
        options = self._options(arg, note)
        options.token_file = token_file
        added = registry.pools(kind, options)
        self.add_pools(added)
        self.record.host.hosts.update(options.left_out)
        return added

    def add_pools(self, pools: list[Pool]) -> None:
        for pool in pools:
            if any(p.name == pool.name for p in self.pools):
                raise InputError(f"pool name '{pool.name}' is used twice")
            self.pools.append(pool)
            self.record.host.hosts[pool.name] = pool.describe()

    # --- reading it ------------------------------------------------------------------------------

    @property
    def kernels(self) -> list[str]:
        return list(dict.fromkeys(c.kernel for c in self.record.cells))

    @property
    def cpus(self) -> list[str]:
        return list(dict.fromkeys(c.cpu for c in self.record.cells))

    @property
    def tests(self) -> list[str]:
        return list(dict.fromkeys(c.test for c in self.record.cells))

    def pending(self) -> list[Cell]:
        return [c for c in self.record.cells if not c.done]


def _where(kernel) -> str:
    """Where a kernel comes from, for run.json: its source (with the git ref it is built at) or "prebuilt"."""
    if kernel.source is None:
        return "prebuilt"
    return kernel.source.location + (f"@{kernel.source.ref}" if kernel.source.ref else "")
