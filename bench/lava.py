#!/usr/bin/env python3
"""The same cells on this machine's QEMU and as jobs of a real LAVA lab on this machine (tests/lava/lab.py),
in the same script: the lab's start-up, each run's wall time, and what LAVA adds per job (submission to
start, start to the first console line, the job's own duration against the local cell's).

Usage: .venv/bin/python bench/lava.py [--xcr0]   (needs ./install.sh --lava)
  --xcr0  also one cell of the xcr0 job (linux-6.1-xcr0, Skylake-Server, xcr0): a farm-built kernel
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lava.lab import Lab  # noqa: E402

RUNS = {
    "probe": ["--job", "probe"],
    "xcr0 cell": ["--job", "xcr0", "--kernel", "linux-6.1-xcr0", "--cpu", "Skylake-Server", "--test", "xcr0"],
}


def farm(args: list[str]) -> float:
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "farm.cli", "run", *args], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, CI="true"))
    if r.returncode != 0:
        sys.exit(f"farm run {' '.join(args)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--xcr0", action="store_true")
    opts = ap.parse_args()
    t = time.monotonic()
    lab = Lab.start()
    startup = time.monotonic() - t
    print(f"lab start-up: {startup:.1f} s ({', '.join(f'{k} {v} s' for k, v in lab.timings.items())})")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-lava-") as tmp:
            for name, args in RUNS.items():
                if name == "xcr0 cell" and not opts.xcr0:
                    continue
                local, lava = Path(tmp) / f"{name}-local", Path(tmp) / f"{name}-lava"
                wall_local = farm([*args, "-j", "1", "--out", str(local)])
                wall_lava = farm([*args, "-j", "0", "--lava", lab.url, "--lava-token-file", str(lab.token_file),
                                  "--out", str(lava)])
                cells_local = {c["id"]: c for c in json.loads((local / "run.json").read_text())["cells"]}
                cells_lava = {c["id"]: c for c in json.loads((lava / "run.json").read_text())["cells"]}
                print(f"\n{name}: wall time, whole `farm run`: local {wall_local:.1f} s, LAVA {wall_lava:.1f} s "
                      f"(x{wall_lava / wall_local:.2f})")
                print(f"  {'cell':36} {'status':14} {'local s':>8} {'LAVA s':>8} {'queue s':>8} {'start->console':>15}"
                      f" {'LAVA job s':>10}")
                for cid, c in cells_lava.items():
                    j = c["lab_jobs"][-1]
                    lc = cells_local[cid]
                    print(f"  {cid:36} {lc['status'] + '/' + c['status']:14} {lc['timings'].get('total', 0):8.1f} "
                          f"{c['timings'].get('total', 0):8.1f} {j.get('lava_queue', 0):8.2f} "
                          f"{j.get('lava_start_to_console', 0):15.2f} {j.get('lava_job', 0):10.1f}")
    finally:
        lab.stop()
    print("\nlocal s: the local cell's boot+test+shutdown; LAVA s: submission to the job's end as the farm saw it;"
          "\nqueue: LAVA's submit_time to start_time; start->console: start_time to the first console line;"
          "\nLAVA job: start_time to end_time (the worker reports the end at its next ping: --ping-interval 2).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
