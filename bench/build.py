"""Kernel build times through the farm next to the same commands run raw.

  .venv/bin/python bench/build.py [--cache DIR] [--stages cold,warm,edit,hit] [--jobs N]

Stages, each timed through farm.kernel.build.build_kernel and then as the very commands the farm recorded
in metadata.json (argv, cwd, env), replayed with subprocess in a parallel raw work dir:
  cold  empty ccache, fresh work tree and build dir (the tarball is unpacked beforehand, untimed)
  warm  warm ccache, fresh build dir
  edit  one .c file changed (arch/x86/kernel/process.c, through a one-patch series), incremental make
  hit   the same kernel again: the farm returns it from its cache; raw is a no-op `make` in the built tree
Goal: farm <= 1.05x raw for cold/warm/edit, cache hit <= 1 s. The bench uses its own cache
(default /var/tmp/farm-bench-cache) and wipes its kernels/, work/ and ccache/ as each stage needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def replay(commands: list[dict], farm_work: Path, raw_work: Path, raw_ccache: Path, skip=()) -> float:
    """Run the farm's recorded commands with the work dir and ccache dir swapped for the raw ones."""
    farm_ccache = str(paths.cache_root().resolve() / "ccache")

    def swap(s: str) -> str:
        return s.replace(str(farm_work), str(raw_work)).replace(farm_ccache, str(raw_ccache))

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
    raw_ccache = cache / "raw-ccache"
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
        for d in (cache / "kernels", cache / "work", cache / "ccache", raw, raw_ccache):
            shutil.rmtree(d, ignore_errors=True)
        farm_s, built = farm(0)
        commands = built.metadata["commands"]
        raw.mkdir(parents=True)
        raw_s = replay(commands, work, raw, raw_ccache, skip=("tar",))
        report("cold", farm_s, raw_s, f"ccache {built.metadata['ccache']}")
    if commands is None:  # later stages need a built work dir and the recorded commands
        shutil.rmtree(cache / "kernels", ignore_errors=True)
        _, built = farm(0)
        commands = built.metadata["commands"]
        if not (raw / "build").is_dir():
            shutil.rmtree(raw, ignore_errors=True)
            raw.mkdir(parents=True)
            replay(commands, work, raw, raw_ccache, skip=("tar",))
    make_only = [c for c in commands if c["argv"][0] == "make"]
    if "warm" in stages:
        shutil.rmtree(cache / "kernels", ignore_errors=True)
        shutil.rmtree(work / "build", ignore_errors=True)
        (work / "config.stamp").unlink(missing_ok=True)
        farm_s, built = farm(0)
        shutil.rmtree(raw / "build")
        raw_s = replay(commands, work, raw, raw_ccache, skip=("tar", "cp", "git"))
        report("warm", farm_s, raw_s, f"ccache {built.metadata['ccache']}")
    if "edit" in stages:
        shutil.rmtree(cache / "kernels", ignore_errors=True)
        farm_s, built = farm(1)
        assert built.metadata["incremental"]
        f = raw / "src" / TARGET
        text = f.read_text().replace("farm_bench_0", "farm_bench_1")
        f.unlink()  # never write through a hard link into the pristine tree
        f.write_text(text)
        raw_s = replay(make_only, work, raw, raw_ccache)
        report("edit", farm_s, raw_s, f"make {built.metadata['durations']['make']:.2f} s in the farm")
    if "hit" in stages:
        farm_s, built = farm(1)
        assert built.cache_hit
        raw_s = replay(make_only, work, raw, raw_ccache)
        report("hit", farm_s, raw_s, "raw = no-op make in the built tree")
    print(json.dumps([dict(zip(("stage", "farm_s", "raw_s", "note"), r, strict=True)) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
