"""Kernel build times through the farm next to the same commands run raw.

  .venv/bin/python bench/build.py [--cache DIR] [--stages cold,warm,edit,hit] [--jobs N]

Stages, each timed through farm.kernel.build.build_kernel and then as the very commands the farm recorded
in metadata.json (argv, cwd, env), replayed with subprocess in a parallel raw work dir:
  cold  empty ccache, fresh work tree and build dir (the tarball is unpacked beforehand, untimed)
  warm  warm ccache, fresh build dir
  edit  one .c file changed (arch/x86/kernel/process.c, through a one-patch series), incremental make
  hit   the same kernel again: the farm returns it from its cache; raw is a no-op `make` in the built tree
Goal: farm <= 1.05x raw for cold/warm/edit, cache hit <= 1 s. The bench uses its own cache
(default /var/tmp/farm-bench-cache) and wipes its kernels/, work/ and ccache/ as each stage needs;
raw and farm share the ccache dir, which is emptied before each side's cold run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm import paths  # noqa: E402
from farm.catalog import Catalog  # noqa: E402
from farm.kernel import build, source  # noqa: E402
from farm.kernel.run import Runner  # noqa: E402

TARGET = "arch/x86/kernel/process.c"
ANCHOR = '#include "process.h"\n'


def patch_text(pristine: Path, n: int) -> str:
    """A one-hunk patch adding a harmless line after ANCHOR in TARGET (n makes each version different)."""
    lines = (pristine / TARGET).read_text().splitlines(keepends=True)
    i = lines.index(ANCHOR)
    ctx_before, ctx_after = lines[i - 3 : i + 1], lines[i + 1 : i + 4]
    added = f"static int farm_bench_{n} __attribute__((used));\n"
    body = [" " + ln for ln in ctx_before] + ["+" + added] + [" " + ln for ln in ctx_after]
    start = i - 2
    return f"diff --git a/{TARGET} b/{TARGET}\n--- a/{TARGET}\n+++ b/{TARGET}\n@@ -{start},7 +{start},8 @@\n" + "".join(
        body
    )


def replay(commands: list[dict], farm_work: Path, raw_work: Path, skip=()) -> float:
    """Run the farm's recorded commands with the farm's work dir swapped for the raw one (same ccache dir:
    it is emptied before each cold run, so warm runs of both sides start from the same ccache)."""

    def swap(s: str) -> str:
        return s.replace(str(farm_work), str(raw_work))

    start = time.monotonic()
    for c in commands:
        if c["argv"][0] in skip:
            continue
        env = {**os.environ, **{k: swap(v) for k, v in c["env"].items()}}
        subprocess.run(
            [swap(a) for a in c["argv"]],
            cwd=swap(c["cwd"]),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="/var/tmp/farm-bench-cache")
    ap.add_argument("--stages", default="cold,warm,edit,hit")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="edit and hit runs (the median is reported)")
    args = ap.parse_args()
    stages = args.stages.split(",")
    os.environ["FARM_CACHE"] = args.cache
    cache = paths.cache_root().resolve()
    cache.mkdir(parents=True, exist_ok=True)

    base = Catalog(ROOT).kernels["linux-6.1"]
    res = source.resolve(base.source)
    pristine = source.pristine_tree(res, Runner(), print)  # untimed: once per machine
    series = cache / "bench-series"
    series.mkdir(exist_ok=True)
    kernel = replace(base, name="bench", patches=(series,))

    def set_patch(n: int) -> None:
        (series / "0001-bench.patch").write_text(patch_text(pristine, n))
        (series / "series").write_text("0001-bench.patch\n")

    work = cache / "work" / build._work_id(res, kernel)
    raw = cache / "raw"
    quiet = lambda s: None  # noqa: E731
    rows: list[tuple[str, float, float | None, str]] = []

    def farm(n: int) -> tuple[float, build.BuiltKernel]:
        set_patch(n)
        t = time.monotonic()
        built = build.build_kernel(kernel, log=quiet, jobs=args.jobs)
        return time.monotonic() - t, built

    def report(stage: str, farm_s: float, raw_s: float | None, note: str = "") -> None:
        rows.append((stage, farm_s, raw_s, note))
        ratio = f"{farm_s / raw_s:5.2f}x" if raw_s else "   -  "
        raw_text = f"{raw_s:7.2f} s" if raw_s is not None else "      - "
        print(f"{stage:6} farm {farm_s:7.2f} s   raw {raw_text}   {ratio}   {note}", flush=True)

    commands = None
    if "cold" in stages:
        for d in (cache / "kernels", cache / "work", cache / "ccache", raw):
            shutil.rmtree(d, ignore_errors=True)
        farm_s, built = farm(0)
        commands = built.metadata["commands"]
        shutil.rmtree(cache / "ccache")
        raw.mkdir(parents=True)
        raw_s = replay(commands, work, raw, skip=("tar",))
        report("cold", farm_s, raw_s, f"ccache {built.metadata['ccache']}")
    if commands is None:  # later stages need a built work dir and the recorded commands
        shutil.rmtree(cache / "kernels", ignore_errors=True)
        _, built = farm(0)
        commands = built.metadata["commands"]
        if not (raw / "build").is_dir():
            shutil.rmtree(raw, ignore_errors=True)
            raw.mkdir(parents=True)
            replay(commands, work, raw, skip=("tar",))
    make_only = [c for c in commands if c["argv"][0] == "make"]
    if "warm" in stages:
        shutil.rmtree(cache / "kernels", ignore_errors=True)
        shutil.rmtree(work / "build", ignore_errors=True)
        (work / "config.stamp").unlink(missing_ok=True)
        farm_s, built = farm(0)
        shutil.rmtree(raw / "build")
        raw_s = replay(commands, work, raw, skip=("tar", "cp", "git"))
        report("warm", farm_s, raw_s, f"ccache {built.metadata['ccache']}")
    if "edit" in stages:
        farm_times, raw_times, make_times = [], [], []
        for new in range(1, args.repeat + 1):

            def farm_side(new=new) -> None:
                shutil.rmtree(cache / "kernels", ignore_errors=True)
                farm_s, built = farm(new)
                assert built.metadata["incremental"] and not built.cache_hit
                farm_times.append(farm_s)
                make_times.append(built.metadata["durations"]["make"])

            def raw_side(new=new) -> None:
                f = raw / "src" / TARGET
                text = re.sub(r"farm_bench_\d+", f"farm_bench_{new}", f.read_text())
                f.unlink()  # never write through a hard link into the pristine tree
                f.write_text(text)
                raw_times.append(replay(make_only, work, raw))

            for side in (farm_side, raw_side) if new % 2 else (raw_side, farm_side):  # alternate the order
                side()
        last = args.repeat
        overhead = statistics.median(f - m for f, m in zip(farm_times, make_times, strict=True))
        note = f"median of {args.repeat}; farm time outside make {overhead:.3f} s"
        report("edit", statistics.median(farm_times), statistics.median(raw_times), note)
    else:
        last = 0
    if "hit" in stages:
        farm_times, raw_times = [], []
        for _ in range(args.repeat):
            farm_s, built = farm(last)
            assert built.cache_hit
            farm_times.append(farm_s)
            raw_times.append(replay(make_only, work, raw))
        report("hit", statistics.median(farm_times), statistics.median(raw_times), "raw = no-op make in the built tree")
    print(json.dumps([dict(zip(("stage", "farm_s", "raw_s", "note"), r, strict=True)) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
