#!/usr/bin/env python3
"""The fault table: every fault injected into a real run, what was expected, what happened, seconds from
the fault to the verdict, QEMU processes left behind, results lost. Usage: bench/faults.py [SCENARIO...]"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import faultlib  # noqa: E402


def main() -> int:
    rows = []
    print(faultlib.HEADER, flush=True)
    for row in faultlib.run_all(sys.argv[1:] or None):
        rows.append(row)
        print(row.line(), flush=True)
    bad = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed")
    for r in bad:
        print(f"  {r.fault}: {r.notes}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
