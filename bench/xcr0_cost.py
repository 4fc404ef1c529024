#!/usr/bin/env python3
"""What a per-thread XCR0 override costs, measured in the guest: a plain syscall, a context switch between two
threads on one CPU, and a signal delivered and returned from (bench/xcr0_cost.c), on the patched kernel in three
phases of one fresh boot (static key off / key on without an override / with an override of 0x3), next to the
unpatched baseline kernel (linux-6.1-fpu) as the fair baseline for the "off" phase.

    .venv/bin/python bench/xcr0_cost.py                     # Skylake-Server, 5 rounds (best of)
    .venv/bin/python bench/xcr0_cost.py --cpu Broadwell --rounds 9

Under TCG every figure is the emulator's, so ratios matter more than nanoseconds; XSETBV is a helper call there,
not the ~100+ cycles it is on hardware. Each figure is one real `farm run` of a throwaway test entry in a copy
of the data folders (FARM_ROOT), as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNELS = ("linux-6.1-fpu", "linux-6.1-xcr0")


def data_copy(rounds: int) -> Path:
    """The data folders with one more test: the cost program, argv carrying the rounds."""
    root = Path(tempfile.mkdtemp(prefix="xcr0-cost-"))
    for d in ("cpumodels", "kernels", "guests", "jobs"):
        shutil.copytree(REPO / d, root / d, symlinks=True)
    shutil.copy2(REPO / "bench" / "xcr0_cost.c", root / "guests" / "tests" / "xcr0_cost.c")
    (root / "guests" / "tests" / "xcr0-cost.yaml").write_text(
        "name: xcr0-cost\ndescription: bench/xcr0_cost.c\nsources: [xcr0_cost.c]\n"
        "cflags: [-static, -O2, -pthread]\n"
        f"run: [xcr0-cost, '{rounds}']\nformat: exit-code\ntimeout: 900\n")
    return root


def run_cell(root: Path, kernel: str, cpu: str) -> dict[tuple[str, str], float]:
    out = root / f"run-{kernel}"
    env = dict(os.environ, FARM_ROOT=str(root), CI="true")
    proc = subprocess.run([sys.executable, "-m", "farm.cli", "run", "--job", "xcr0", "--kernel", kernel,
                           "--cpu", cpu, "--test", "xcr0-cost", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    cells = json.loads((out / "run.json").read_text())["cells"] if (out / "run.json").is_file() else []
    outputs = list(out.glob("cells/*/*/xcr0-cost/output.txt"))
    if proc.returncode != 0 or not outputs:
        sys.exit(f"{kernel} on {cpu}: farm run exited {proc.returncode}: "
                 f"{[(c['id'], c['status'], c['reason']) for c in cells]} {proc.stderr[-1500:]}")
    figures = {}
    for line in outputs[0].read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "figure":
            figures[(parts[1], parts[2])] = float(parts[3])
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", default="Skylake-Server")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = data_copy(args.rounds)
    try:
        base = run_cell(root, KERNELS[0], args.cpu)
        patched = run_cell(root, KERNELS[1], args.cpu)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"ns per operation in the guest, {args.cpu}, best of {args.rounds} rounds "
          f"(baseline: {KERNELS[0]}; patched: {KERNELS[1]})")
    print(f"{'operation':<10} {'baseline':>10} {'off':>10} {'key-on':>10} {'override':>10}"
          f"   {'off/base':>8} {'key-on/off':>10} {'override/off':>12}")
    for what in ("syscall", "ctxsw", "signal"):
        b = base.get(("off", what))
        off, on, ov = (patched.get((p, what)) for p in ("off", "key-on", "override"))
        print(f"{what:<10} {b:>10.1f} {off:>10.1f} {on:>10.1f} {ov:>10.1f}"
              f"   {off / b:>8.2f} {on / off:>10.2f} {ov / off:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
