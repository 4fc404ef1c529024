"""Sharding a run over several runners (`farm run --shard I/N`) and joining the shards (`farm merge`).

A shard is a deterministic slice of the job's cell list: cell k (0-based, in the job's kernel x CPU x test
order) belongs to shard (k mod N) + 1. Every runner computes the same list, so N runners given 1/N .. N/N
run every cell exactly once. `farm merge OUT DIR...` joins their run directories into one run with one report.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .errors import InputError
from .results import run as runfile
from .results.run import Cell, Run, RunWriter


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise InputError(f"--shard {text!r}: expected I/N, e.g. 2/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise InputError(f"--shard {text}: I must be between 1 and N (N >= 1)")
    return i, n


def shard(cells: list[Cell], i: int, n: int) -> list[Cell]:
    """Shard i of n (1-based): every n-th cell, starting at the i-th."""
    return cells[i - 1::n]


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
    merged.host = dict(first.host)
    merged.host["shards"] = [{"dir": str(d), "run_id": r.run_id, "shard": r.host.get("shard", ""),
                              "hostname": r.host.get("hostname", ""), "accel": r.host.get("accel", ""),
                              "cells": len(r.cells)} for d, r in runs]
    cells: dict[str, tuple[Cell, Path]] = {}
    position: dict[str, float] = {}  # a cell's index in the unsharded job, where the shards say
    for d, r in runs:
        merged.kernels.update(r.kernels)
        try:
            i, n = parse_shard(r.host.get("shard", ""))
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


def apply_shard(sched, spec: str | None, existing: Run | None = None) -> None:
    """Narrow a Scheduler's cells to one shard (before it runs); a resumed shard keeps its own cells."""
    record = sched.run_record
    if existing is not None:
        if existing.host.get("shard"):
            ids = {c.id for c in existing.cells}
            record.cells = [c for c in record.cells if c.id in ids]
            record.host["shard"] = existing.host["shard"]
        return
    if not spec:
        return
    i, n = parse_shard(spec)
    record.cells = shard(record.cells, i, n)
    record.host["shard"] = f"{i}/{n}"


def main(out: Path, run_dirs: list[Path], history: Path | None = None) -> int:
    """`farm merge`: join, then render every report of the merged run; prints its folder."""
    import sys

    merged = merge(out, run_dirs)
    if history is None:  # as `farm run` does: the history database beside the run directories
        history = out.resolve().parent / "history.sqlite"
    try:
        from . import report

        write_all = getattr(report, "write_all", None)
    except ImportError:
        write_all = None
    if write_all is not None:
        write_all(merged, out, history=history,
                  on_history_error=lambda msg: print(f"farm: warning: history not updated: {msg}", file=sys.stderr))
    else:
        from .report import html

        html.write(merged, out)
    counts = merged.counts()
    print(" ".join(f"{s}={n}" for s, n in counts.items() if n), file=sys.stderr)
    print(out)
    return merged.exit_code()
