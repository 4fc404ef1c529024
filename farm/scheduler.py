"""A run from its plan: prepare (kernels, images, the KVM check), then execute, into run.json.

    record = scheduler.run(plan, progress)

run.json is written before anything starts and after every change, so a run killed half-way keeps what it
finished. Ctrl-C and SIGTERM (raised as KeyboardInterrupt) take one path: Executor.stop().
"""

from __future__ import annotations

import time

from . import prepare
from .executor import Executor
from .plan import Plan, now
from .results.run import Run, RunWriter


def run(plan: Plan, progress) -> tuple[Run, RunWriter]:
    plan.out.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(plan.record, plan.out / "run.json")
    writer.save()
    executor = Executor(plan, writer, progress)
    phases = plan.record.phases
    t0 = time.monotonic()
    try:
        prepared = prepare.kernels(plan, progress, executor.stopping)
        writer.save()
        prepare.confirm_kvm(plan, prepared, progress)
        phases["prepare"] = round(phases.get("prepare", 0.0) + time.monotonic() - t0, 3)
        t1 = time.monotonic()
        executor.run(prepared, t0)
        phases["execute"] = round(phases.get("execute", 0.0) + time.monotonic() - t1, 3)
    except KeyboardInterrupt:
        executor.stop()
        raise
    finally:
        plan.record.finished = now()
        writer.save()
        progress.stop()
    return plan.record, writer
