#!/usr/bin/env python3
"""Report rendering at scale: every output (report.html, summary.txt, junit.xml, kcidb.json) for a
synthetic run of 10,000 cells (2 kernels x 50 CPU models x 100 tests, 5 KTAP cases each, 2% failing,
console and output files on disk), then the history DB on top.

Prints the time of each output and the total (goal: all four outputs <= 2 s), and the page size.
With --against REV, the same figures for the code of git revision REV first (a fair baseline: same machine,
same run, same synthetic run), then this checkout's.
Usage: .venv/bin/python bench/render.py [--cells N] [--repeat R] [--keep DIR] [--against REV]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.report import abtest, html, junit, kcidb, text, write_all  # noqa: E402
from farm.report.synthetic import make_run  # noqa: E402
from farm.results.history import History  # noqa: E402
from farm.results.run import RunWriter  # noqa: E402
from farm.results.run import load as load_run  # noqa: E402

GOAL = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="render into this folder (kept) instead of a temporary one")
    ap.add_argument("--against", metavar="REV", help="first run this benchmark on git revision REV's code")
    args = ap.parse_args()
    if args.against:
        repo = Path(__file__).resolve().parent.parent
        with tempfile.TemporaryDirectory() as base:
            archive = subprocess.run(["git", "-C", str(repo), "archive", args.against], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
            print(f"--- baseline: {args.against} ---", flush=True)
            subprocess.run([sys.executable, f"{base}/bench/render.py", "--cells", str(args.cells), "--repeat",
                            str(args.repeat)], check=False)
        print("--- this checkout ---", flush=True)
    tests_n = max(1, args.cells // 100)
    cpus = [f"Model-{i:02d}" for i in range(50)]
    tests = [f"test{i:03d}" for i in range(tests_n)]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.keep or tmp)
        run_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        run = make_run(run_dir, cpus=cpus, tests=tests, cases=5, fail_rate=0.02, run_id="bench")
        RunWriter(run, run_dir / "run.json").save()
        print(f"synthetic run: {len(run.cells)} cells, {sum(len(c.cases) for c in run.cells)} cases "
              f"(made in {time.perf_counter() - t:.1f} s)")

        record = load_run(run_dir)
        t, c = time.perf_counter(), time.process_time()
        load_run(run_dir)
        print(f"  load run.json  {time.perf_counter() - t:6.3f} s wall {time.process_time() - c:6.3f} s CPU "
              "(not part of the goal: `farm run` renders from the record in memory)")
        totals, cpu_totals = [], []
        for _ in range(args.repeat):
            figures = {}
            t0, c0 = time.perf_counter(), time.process_time()
            t, c = t0, c0
            comps = abtest.within_run(record)
            figures["A/B"] = (time.perf_counter() - t, time.process_time() - c)
            for name, fn, extra in (("report.html", html.write, (comps,)), ("summary.txt", text.write, (comps,)),
                                    ("junit.xml", junit.write, ()), ("kcidb.json", kcidb.write, ())):
                t, c = time.perf_counter(), time.process_time()
                fn(record, run_dir, *extra)
                figures[name] = (time.perf_counter() - t, time.process_time() - c)
            totals.append(time.perf_counter() - t0)
            cpu_totals.append(time.process_time() - c0)
        for name, (secs, cpu) in figures.items():
            print(f"  {name:14} {secs:6.3f} s wall {cpu:6.3f} s CPU")
        best, med, cpu = min(totals), statistics.median(totals), statistics.median(cpu_totals)
        sizes = ", ".join(f"{p} {(run_dir / p).stat().st_size / 1e6:.1f} MB"
                          for p in ("report.html", "summary.txt", "junit.xml", "kcidb.json"))
        load = os.getloadavg()[0]
        ok = best <= GOAL
        print(f"all four outputs: best {best:.3f} s, median {med:.3f} s wall, median {cpu:.3f} s CPU over "
              f"{args.repeat} (goal <= {GOAL:.1f} s): {'OK' if ok else 'TOO SLOW'} (load average {load:.1f} "
              f"on {os.cpu_count()} cores)")
        print(f"sizes: {sizes}")

        db = run_dir / "history.sqlite"
        t = time.perf_counter()
        with History(db) as h:
            h.record(record)
        first = time.perf_counter() - t
        record2 = load_run(run_dir)
        record2.run_id, record2.started = "bench2", "2026-11-27T10:00:00+00:00"
        t = time.perf_counter()
        write_all(record2, run_dir, history=db)
        print(f"history: record {first:.3f} s; second run recorded + compared + all outputs "
              f"{time.perf_counter() - t:.3f} s")
        json.loads((run_dir / "kcidb.json").read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
