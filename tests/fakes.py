"""A scripted fake VM backend, for testing the scheduling rules without QEMU (in milliseconds).

Each cell id maps to a list of Steps, one per attempt: what its boot does (ok, a boot error, a kernel crash
at boot, a lost host) and what its test run returns (output, exit status, timeout, a dropped connection, a
crash on the console). It is an addition to the real-boot tests, never a replacement: every behaviour it
scripts is one the real backends were seen to show.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from farm.catalog import Catalog
from farm.guest.image import GuestImage
from farm.guest.keys import ClientKey
from farm.plan import Plan
from farm.prepare import PreparedKernel
from farm.results.run import BuildOutcome, BuildRecord, Cell, Crash, Run
from farm.vm import registry
from farm.vm.accel import Accel
from farm.vm.base import BootError, BootInfo, Diagnosis, HostLost, Instance, MachineSpec, Pool, RunResult

KTAP_PASS = "TAP version 13\n1..1\nok 1 works\n"
KTAP_FAIL = "TAP version 13\n1..1\nnot ok 1 works\n"


@dataclass
class Step:
    boot: str = "ok"  # ok | error (infrastructure) | crash (kernel panic at boot) | lost (host gone) | raise
    stdout: str = KTAP_PASS
    exit_status: int | None = 0
    timed_out: bool = False
    lost: str = ""  # the connection dropped mid-test
    crash: str = ""  # a crash line the console shows during the test
    host_lost_in_run: bool = False
    block: threading.Event | None = None  # run() waits for this (or for the pool's shutdown)


@dataclass
class FakePool(Pool):
    name: str = "fake"
    script: dict[str, list[Step]] = field(default_factory=dict)
    slots: int = 1
    accel: str = "tcg"
    creates: list[str] = field(default_factory=list)  # cell ids, one per boot
    restores: list[bool] = field(default_factory=list)  # per boot: asked to start from the pair's snapshot
    stopped: threading.Event = field(default_factory=threading.Event)
    snapshots: bool = False

    def snapshot_key(self, spec: MachineSpec) -> str:
        return f"snap-{spec.kernel.name}-{spec.cpu}"

    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> Instance:
        if self.stopped.is_set():
            raise BootError("the run is stopping")
        steps = self.script.get(spec.name) or [Step()]
        n = sum(1 for c in self.creates if c == spec.name)
        self.creates.append(spec.name)
        self.restores.append(spec.restore)
        step = steps[min(n, len(steps) - 1)]
        if step.boot == "lost":
            raise HostLost(f"host {self.name} stopped answering")
        if step.boot == "error":
            raise BootError("guest did not reach 'farm-init: ready' within 60 s", command=["fake-qemu", spec.cpu])
        if step.boot == "crash":
            raise BootError("guest kernel panicked during boot: Kernel panic - not syncing: fake", crashed=True,
                            command=["fake-qemu"], crashes=[Crash("panic", "Kernel panic - not syncing: fake", 3)])
        if step.boot == "raise":
            raise RuntimeError("a bug in a backend")
        instance = FakeInstance(self, step)
        instance.boot.restored_from = spec.snapshot if spec.restore else ""
        return instance

    def shutdown(self) -> None:
        self.stopped.set()


class FakeInstance(Instance):
    def __init__(self, pool: FakePool, step: Step):
        self.pool = pool
        self.step = step
        self.boot = BootInfo(command=["fake-qemu"], seconds_to_marker=0.01, seconds_to_ssh=0.02)
        self.closed = False

    def wait_for_crash(self, seconds: float) -> None:
        pass

    def copy(self, local: Path, remote: str) -> None:
        pass

    def run(self, argv: list[str], timeout: float) -> RunResult:
        s = self.step
        if s.block is not None:
            while not s.block.wait(0.01):
                if self.pool.stopped.is_set():
                    return RunResult(argv, None, "", "", 0.1, lost="SSH connection dropped before the command ended")
        if s.host_lost_in_run:
            raise HostLost(f"host {self.pool.name} stopped answering")
        return RunResult(argv, None if (s.timed_out or s.lost) else s.exit_status, s.stdout, "", 0.01,
                         timed_out=s.timed_out, lost=s.lost)

    def diagnose(self) -> Diagnosis:
        crashes = [Crash("bug", self.step.crash, 7)] if self.step.crash else []
        return Diagnosis(running=True, crashes=crashes, first_crash=crashes[0] if crashes else None,
                         host=self.pool.name)

    def close(self) -> None:
        self.closed = True


def pools(options: registry.PoolOptions) -> list[Pool]:
    """The registry's entry: `--pool fake:NAME` (an empty script: every cell passes)."""
    return [FakePool(name=options.arg or "fake")]


def plan(tmp: Path, cells: list[tuple[str, str, str]], pools: list[Pool], retries: int = 1) -> tuple[Plan, dict]:
    """A plan over the repository's catalog with the given (kernel, cpu, test) cells, run by `pools`, and
    prepared kernels that point nowhere (the fake never boots them)."""
    import dataclasses

    from .conftest import REPO

    catalog = Catalog(REPO)
    job = dataclasses.replace(catalog.job("probe"), retries=retries)
    record = Run(run_id=tmp.name, job=job.name, job_file=str(job.path), started="2026-12-01T00:00:00+00:00")
    record.cells = [Cell(id=f"{k}/{c}/{t}", kernel=k, cpu=c, test=t, cpu_qemu=c) for k, c, t in cells]
    key = ClientKey(tmp / "no-key", "ssh-ed25519 AAAAfake farm")
    p = Plan(catalog, job, tmp, Accel("tcg", "fake"), record, key, slots=1, pools=list(pools))
    prepared = {k: PreparedKernel(Path("/fake/bzImage"), GuestImage(Path("/fake/initrd"), "ssh-ed25519 AAAA", "d"),
                                  BuildRecord(BuildOutcome.BUILT)) for k in {c[0] for c in cells}}
    return p, prepared
