#!/usr/bin/env python3
"""Console parser cost on hostile input, against the parser before the caps (git main~ of farm/vm/console.py
as of 16fa358): 16 MiB without a newline, and 50,000 WARN splats, fed in 64 KiB chunks as the console pump
reads them. Prints seconds and what each kept. Usage: bench/console.py [MiB]"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from farm.vm import console  # noqa: E402

BASELINE_COMMIT = "16fa358"  # the parser before the caps: unbounded line and crash list


def baseline():
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE_COMMIT}:farm/vm/console.py"],
                         capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType("farm.vm.console_baseline")
    mod.__package__ = "farm.vm"
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, "console_baseline.py", "exec"), mod.__dict__)  # noqa: S102 - our own file at a commit
    return mod


def feed(mod, text: str, chunk: int = 65536) -> tuple[float, object]:
    state = mod.ConsoleState("farm-init: ready")
    t = time.perf_counter()
    longest = 0
    for i in range(0, len(text), chunk):
        state.feed(text[i:i + chunk])
        longest = max(longest, len(state._partial))  # what the parser holds of an unfinished line
    state.feed("\n")
    state.longest = longest
    return time.perf_counter() - t, state


def main() -> int:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    cases = {
        f"{mib} MiB, no newline": "x" * (mib << 20),
        "50000 WARN splats": "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2\n" * 50000,
    }
    print(f"{'input':24} {'parser':9} {'seconds':>8} {'crashes kept':>13} {'longest line kept':>18}")
    for name, text in cases.items():
        for label, mod in (("baseline", baseline()), ("farm", console)):
            s, state = feed(mod, text)
            print(f"{name:24} {label:9} {s:8.2f} {len(state.crashes):13} {state.longest:18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
