"""Sharding a run over several runners (`farm run --shard I/N`) and joining the shards (`farm merge`).

A shard is a deterministic slice of the job's cell list: cell k (0-based, in the job's kernel x CPU x test
order) belongs to shard (k mod N) + 1. Every runner computes the same list, so N runners given 1/N .. N/N
run every cell exactly once. `farm merge OUT DIR...` joins their run directories into one run with one report.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from .errors import InputError
from .plan import parse_shard
from .results import run as runfile
from .results.run import Cell, Run, RunWriter


def merge(out: Path, run_dirs: list[Path]) -> Run:
    """Join shard run directories into `out`: one run.json (cells from all), their files copied."""
    if not run_dirs:
        raise InputError("farm merge: give at least one run directory")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: folder exists and is not empty")
    runs = [(Path(d), runfile.load(Path(d))) for d in run_dirs]
    jobs = {r.job for _, r in runs}
    if len(jobs) > 1:
        raise InputError(f"farm merge: the runs are of different jobs ({', '.join(sorted(jobs))})")
    first = runs[0][1]
    merged = Run(run_id=out.name, job=first.job, job_file=first.job_file,
                 started=min(r.started for _, r in runs), argv=first.argv)
    merged.finished = None if any(r.finished is None for _, r in runs) else max(r.finished for _, r in runs)
    merged.interrupted = any(r.interrupted for _, r in runs)
    merged.host = dataclasses.replace(first.host, shard="", shards=[
        {"dir": str(d), "run_id": r.run_id, "shard": r.host.shard, "hostname": r.host.hostname,
         "accel": r.host.accel, "cells": len(r.cells)} for d, r in runs])
    cells: dict[str, tuple[Cell, Path]] = {}
    position: dict[str, float] = {}  # a cell's index in the unsharded job, where the shards say
    for d, r in runs:
        merged.kernels.update(r.kernels)
        try:
            i, n = parse_shard(r.host.shard)
        except InputError:
            i, n = 0, 0
        for j, c in enumerate(r.cells):
            if n:
                position.setdefault(c.id, (i - 1) + j * n)
            have = cells.get(c.id)
            if have and have[0].done and not c.done:
                continue  # a finished cell wins over the same cell left pending elsewhere
            if have and have[0].done and c.done:
                raise InputError(f"farm merge: cell {c.id} was run by both {have[1]} and {d}: "
                                 f"were the shards given the same --shard?")
            cells[c.id] = (c, d)
    out.mkdir(parents=True, exist_ok=True)
    for c, d in cells.values():
        for rel in c.files.values():
            src, dst = d / rel, out / rel
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    order = {name: i for i, name in enumerate(merged.kernels)}
    merged.cells = sorted((c for c, _ in cells.values()),
                          key=lambda c: (position.get(c.id, 1e9), order.get(c.kernel, 1 << 30), c.id))
    RunWriter(merged, out / "run.json").save()
    return merged


def main(out: Path, run_dirs: list[Path], history: Path | None = None) -> int:
    """`farm merge`: join, then render every report of the merged run; prints its folder."""
    import sys

    merged = merge(out, run_dirs)
    if history is None:  # as `farm run` does: the history database beside the run directories
        history = out.resolve().parent / "history.sqlite"
    from .report import write_all

    write_all(merged, out, history=history,
              on_history_error=lambda msg: print(f"farm: warning: history not updated: {msg}", file=sys.stderr))
    counts = merged.counts()
    print(" ".join(f"{s}={n}" for s, n in counts.items() if n), file=sys.stderr)
    print(out)
    return merged.exit_code()
