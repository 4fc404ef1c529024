"""The edit loop: the farm's rebuild after a one-line change next to raw make in the same state, and edit to
verdict for one cell.

  .venv/bin/python bench/build.py [--repeat 3] [--jobs N] [--verdict] [--cache DIR]

Rebuild rows (issue 17; goal: farm <= 1.2x raw make for both):
  .c      one line changed in arch/x86/kernel/fpu/xstate.c
  header  one line changed in arch/x86/include/asm/fpu/api.h (included by every FPU user, KVM, signal code)
The kernel is linux-6.1-xcr0's series plus one bench patch that adds a line to each of the two files; a
step changes one of those lines. The farm side rewrites the patch and calls build_kernel (key, seed, tree,
patches, config check, make, collect, store: everything a `farm run` pays); the raw side is a copy of the
same work dir made once at the start (tree hard-linked, build dir copied), where the same one-line edit is
made by hand and the farm's recorded make command is run. Sides alternate which goes first.

--verdict: edit to verdict, `farm run --cpu Skylake-Server --test xcr0 --kernel linux-6.1-xcr0` after a
one-line .c change in the series (a copy of the data files under FARM_ROOT with the bench patch added to
kernels/patches/xcr0), timed from the edit to the command's exit, with run.json's build/boot/test split;
goal <= 15 s. The first run (build and snapshot for that series) is untimed.
Uses FARM_CACHE (default /var/tmp/farm-test-cache): it adds kernels and work dirs, it wipes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm import paths  # noqa: E402
from farm.catalog import Catalog  # noqa: E402
from farm.kernel import build, source, workdirs  # noqa: E402
from farm.kernel.run import Runner  # noqa: E402

CASES = {  # name -> (file, the line after which the bench line goes)
    ".c": ("arch/x86/kernel/fpu/xstate.c", "#include \"xstate.h\"\n"),
    "header": ("arch/x86/include/asm/fpu/api.h", "#include <asm/fpu/types.h>\n"),
}


def hunk(text: str, target: str, anchor: str, added: str) -> str:
    """A one-hunk patch of target (its content `text`) adding `added` after `anchor`."""
    lines = text.splitlines(keepends=True)
    i = lines.index(anchor)
    before, after = lines[max(0, i - 2) : i + 1], lines[i + 1 : i + 4]
    body = [" " + ln for ln in before] + ["+" + added + "\n"] + [" " + ln for ln in after]
    start = i + 1 - len(before) + 1
    return (f"diff --git a/{target} b/{target}\n--- a/{target}\n+++ b/{target}\n"
            f"@@ -{start},{len(before) + len(after)} +{start},{len(before) + len(after) + 1} @@\n" + "".join(body))


def bench_patch(tree_text: dict[str, str], versions: dict[str, int], tag: str) -> str:
    out = ["From: farm bench <farm@localhost>\nSubject: [PATCH] bench: one line per file\n\n---\n"]
    for case, (target, anchor) in CASES.items():
        if case not in versions:
            continue
        name = "c" if case == ".c" else "h"
        # the header line is a comment: make rebuilds every includer, ccache answers from the preprocessed
        # hash (a declaration would make every includer a ccache miss, minutes per step on this machine)
        decl = (f"static int farm_bench_{tag}_{name}_{versions[case]} __attribute__((used));" if case == ".c"
                else f"/* farm_bench_{tag}_{name}_{versions[case]} */")
        out.append(hunk(tree_text[target], target, anchor, decl))
    return "".join(out)


def patched_text(pristine: Path, kernel) -> dict[str, str]:
    """The two files as the series leaves them (the bench patch applies on top)."""
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    try:
        for target, _ in CASES.values():
            (tmp / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pristine / target, tmp / target)
        from farm.kernel import patches

        for p in patches.expand(kernel.patches):
            files = [f for f in patches.touched_paths(p.path.read_text(), p.strip) if f in dict(CASES.values())]
            if files:
                subprocess.run(["git", "apply", f"-p{p.strip}", *[f"--include={f}" for f in files], str(p.path)],
                               cwd=tmp, check=True, env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp)})
        return {t: (tmp / t).read_text() for t, _ in CASES.values()}
    finally:
        shutil.rmtree(tmp)


def make_series(folder: Path, base_series: Path | None, extra: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for line in (base_series / "series").read_text().splitlines() if base_series else []:
        name = line.split("#")[0].strip()
        if name:
            shutil.copyfile(base_series / name.split()[0], folder / name.split()[0])
            names.append(name)
    (folder / "9999-bench.patch").write_text(extra)
    (folder / "series").write_text("\n".join(names + ["9999-bench.patch"]) + "\n")


def raw_copy(work: Path, raw: Path) -> None:
    """A raw work dir in the farm's state: the tree hard-linked (never written through: edits replace
    files), the build dir (inside the tree) a real copy."""
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(work / "src"), str(raw / "src")], check=True)
    shutil.rmtree(raw / "src" / source.BUILD_SUBDIR)
    subprocess.run(["cp", "-a", str(work / "src" / source.BUILD_SUBDIR), str(raw / "src" / source.BUILD_SUBDIR)],
                   check=True)
    workdirs.retarget(raw / "src" / source.BUILD_SUBDIR, work, raw)  # objtool's absolute paths (workdirs.py)


def raw_make(md: dict, farm_work: Path, raw: Path) -> float:
    cmd = next(c for c in md["commands_run"] if c["argv"][0] == "make" and "-C" in c["argv"])
    swap = lambda s: s.replace(str(farm_work), str(raw))  # noqa: E731
    start = time.monotonic()
    subprocess.run([swap(a) for a in cmd["argv"]], cwd=swap(cmd["cwd"]), check=True,
                   env={**os.environ, **{k: swap(v) for k, v in cmd["env"].items()}},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def rebuilds(args, catalog: Catalog, cache: Path) -> list[dict]:
    xcr0 = catalog.kernels[args.kernel]
    base_series = xcr0.patches[0] if xcr0.patches else None
    res = source.resolve(xcr0.source)
    pristine = source.pristine_tree(res, Runner(), print)
    texts = patched_text(pristine, xcr0)
    tag = os.urandom(3).hex()  # new content every run: never a cache hit
    versions = {case: 0 for case in args.cases.split(",")}
    folder = cache / "bench-edit-series"
    shutil.rmtree(folder, ignore_errors=True)
    kernel = replace(xcr0, name="bench-edit", patches=(folder,), checkpatch=False)
    make_series(folder, base_series, bench_patch(texts, versions, tag))
    t = time.monotonic()
    built = build.build_kernel(kernel, log=lambda s: None, jobs=args.jobs)
    print(f"setup: bench-edit v0 built in {time.monotonic() - t:.1f} s "
          f"(seeded from {built.metadata.get('seeded_from')}, cache hit {built.cache_hit})", flush=True)
    raw = cache / "bench-raw"
    raw_copy(Path(built.metadata["work_dir"]), raw)
    rows = []
    for case in versions:
        target = CASES[case][0]
        farm_s, raw_s, make_s, steps = [], [], [], []
        letter = "c" if case == ".c" else "h"
        raw_version = versions[case]  # what the raw tree holds
        for n in range(1, args.repeat + 1):
            for side in ("farm", "raw") if n % 2 else ("raw", "farm"):
                # every side's edit is new content: neither side's make may find the other's objects in ccache
                versions[case] += 1
                if side == "farm":
                    make_series(folder, base_series, bench_patch(texts, versions, tag))
                    t = time.monotonic()
                    b = build.build_kernel(kernel, log=lambda s: None, jobs=args.jobs)
                    farm_s.append(time.monotonic() - t)
                    assert not b.cache_hit and b.metadata["seeded_from"], b.metadata.get("seeded_from")
                    make_s.append(b.metadata["durations"]["make"])
                    steps.append(b.metadata["kbuild_steps"])
                else:  # the edit a developer makes by hand: one line, the file replaced (never written through)
                    f = raw / "src" / target
                    text = f.read_text()
                    old, new = (f"farm_bench_{tag}_{letter}_{v}" for v in (raw_version, versions[case]))
                    raw_version = versions[case]
                    assert old in text, (old, target)
                    f.unlink()
                    f.write_text(text.replace(old, new))
                    raw_s.append(raw_make(built.metadata, Path(built.metadata["work_dir"]), raw))
        row = {"case": case, "file": target, "farm_s": statistics.median(farm_s), "raw_s": statistics.median(raw_s),
               "farm_make_s": statistics.median(make_s), "objects": statistics.median(steps), "n": args.repeat}
        row["ratio"] = row["farm_s"] / row["raw_s"]
        rows.append(row)
        print(f"{case:7} farm {row['farm_s']:6.2f} s   raw make {row['raw_s']:6.2f} s   {row['ratio']:4.2f}x   "
              f"(farm's make {row['farm_make_s']:.2f} s, {row['objects']:.0f} objects, median of {args.repeat}: "
              f"farm {' '.join(f'{x:.2f}' for x in farm_s)}, raw {' '.join(f'{x:.2f}' for x in raw_s)})", flush=True)
    return rows


def verdict(args, cache: Path) -> dict:
    """Edit to verdict for one cell after a one-line .c change in the XCR0 series."""
    root = Path(tempfile.mkdtemp(prefix="farm-bench-root-"))
    for d in ("cpumodels", "kernels", "guests", "jobs"):
        shutil.copytree(ROOT / d, root / d, symlinks=True)
    catalog = Catalog(root)
    xcr0 = catalog.kernels[args.kernel]
    base_series = ROOT / "kernels" / xcr0.patches[0].relative_to(root / "kernels") if xcr0.patches else None
    series = xcr0.patches[0] if xcr0.patches else root / "kernels" / "patches" / "bench"
    if not xcr0.patches:  # the entry gets the bench series
        with open(xcr0.path, "a") as f:
            f.write("patches: [patches/bench]\n")
    res = source.resolve(xcr0.source)
    texts = patched_text(source.pristine_tree(res, Runner(), print), xcr0)
    tag = os.urandom(3).hex()
    versions = {".c": 0}

    def write() -> None:
        make_series(series, base_series, bench_patch(texts, versions, tag))

    def run(out: Path) -> tuple[float, int, dict]:
        argv = [sys.executable, "-m", "farm.cli", "run", "--cpu", "Skylake-Server", "--test", "xcr0", "--kernel",
                args.kernel, "--out", str(out)]
        env = {**os.environ, "FARM_ROOT": str(root), "CI": "true"}
        t = time.monotonic()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t
        if proc.returncode not in (0, 1):
            print(proc.stderr[-2000:], file=sys.stderr)
        return wall, proc.returncode, json.loads((out / "run.json").read_text())

    write()
    first, rc0, _ = run(root / "run-0")
    print(f"verdict setup: first run {first:.1f} s (exit {rc0}; builds the series and snapshots the guest)")
    walls = []
    for n in range(1, args.repeat + 1):
        versions[".c"] += 1
        t = time.monotonic()
        write()  # the edit
        wall, rc, record = run(root / f"run-{n}")
        walls.append(time.monotonic() - t)
        cell = record["cells"][0]
        build_rec = record["kernels"][args.kernel]["build"]
        print(f"edit to verdict {walls[-1]:5.1f} s  exit {rc}  {cell['status']}  build outcome {build_rec['outcome']}"
              f"  make {build_rec.get('metadata', {}).get('durations', {}).get('make', '?')} s"
              f"  stages {json.dumps(cell.get('timings') or cell.get('stages') or {})}", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return {"edit_to_verdict_s": statistics.median(walls), "runs": walls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.environ.get("FARM_CACHE", "/var/tmp/farm-test-cache"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--kernel", default="linux-6.1-xcr0", help="the entry whose series gets the bench patch")
    ap.add_argument("--cases", default=".c,header", help="rebuild rows to run (.c, header)")
    ap.add_argument("--verdict", action="store_true", help="also time edit to verdict for one cell")
    ap.add_argument("--no-rebuilds", action="store_true", help="only the edit-to-verdict figure")
    args = ap.parse_args()
    os.environ["FARM_CACHE"] = args.cache
    cache = paths.cache_root().resolve()
    out: dict = {}
    if not args.no_rebuilds:
        out["rebuilds"] = rebuilds(args, Catalog(ROOT), cache)
    if args.verdict or args.no_rebuilds:
        out["verdict"] = verdict(args, cache)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
