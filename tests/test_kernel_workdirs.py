"""Work dirs (seeding, GC), the dir-source mirror that replaced rsync, the cache key's toolchain and recipe,
and build progress (the kbuild line counter, the 30 s rule of plain output, the rich bar through a pty)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from farm import progress as farm_progress
from farm.kernel import build, cache, workdirs
from farm.kernel import progress as kprogress
from farm.kernel.source import mirror

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kbuild"


# --- mirror (dir sources) ------------------------------------------------------------------------------


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / "a.c").write_text("a\n")
    (root / "sub" / "b.h").write_text("b\n")
    os.symlink("a.c", root / "link")
    for p in (root / "a.c", root / "sub" / "b.h"):
        os.utime(p, ns=(10**18, 10**18))


def test_mirror_copies_what_differs_and_keeps_the_rest(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    assert mirror(src, dst, skip_src={".git"}, skip_dst={".farm-build"}) == 3
    assert not (dst / ".git").exists() and os.readlink(dst / "link") == "a.c"
    assert (dst / "sub" / "b.h").stat().st_mtime_ns == 10**18  # mtimes kept: make sees old files as old
    (dst / ".farm-build").mkdir()
    (dst / "stale.c").write_text("gone from the source\n")
    inode = (dst / "a.c").stat().st_ino
    (src / "sub" / "b.h").write_text("B\n")  # edited: new mtime
    assert mirror(src, dst, skip_src={".git"}, skip_dst={".farm-build"}) == 1
    assert (dst / "sub" / "b.h").read_text() == "B\n" and (dst / "a.c").stat().st_ino == inode
    assert not (dst / "stale.c").exists() and (dst / ".farm-build").is_dir()


def test_mirror_never_writes_through_a_hard_link(tmp_path):
    src, seed = tmp_path / "src", tmp_path / "seed"
    _tree(src)
    mirror(src, seed, skip_src={".git"})
    subprocess.run(["cp", "-al", str(seed), str(tmp_path / "new")], check=True)  # how a seeded tree starts
    (src / "a.c").write_text("changed\n")
    mirror(src, tmp_path / "new", skip_src={".git"})
    assert (tmp_path / "new" / "a.c").read_text() == "changed\n"
    assert (seed / "a.c").read_text() == "a\n"  # the seed's tree is intact


# --- seeds and GC ------------------------------------------------------------------------------------


def _work(root: Path, name: str, kernel: str, family: str = "fam", finished: str | None = "2026-01-01",
          size: int = 0) -> Path:
    p = root / name
    p.mkdir(parents=True)
    workdirs.write(p, {"kernel": kernel, "family": family, "key": name * 4, "created": "2026-01-01",
                       "finished": finished})
    if size:
        (p / "blob").write_bytes(b"x" * size)
    return p


def test_seed_is_the_newest_finished_build_of_the_same_entry_first(tmp_path):
    _work(tmp_path, "a", "k1", finished="2026-01-03")
    _work(tmp_path, "b", "k2", finished="2026-01-05")
    _work(tmp_path, "c", "k1", finished="2026-01-02")
    _work(tmp_path, "d", "k1", finished=None)  # a build that did not finish
    _work(tmp_path, "e", "k1", family="other", finished="2026-01-09")
    me = tmp_path / "me"
    assert workdirs.find_seed(tmp_path, "fam", "k1", me).path.name == "a"
    assert workdirs.find_seed(tmp_path, "fam", "k3", me).path.name == "b"  # same family, newest
    assert workdirs.find_seed(tmp_path, "nothing", "k1", me) is None


def test_seed_with_the_same_config_content_wins_over_the_same_entry(tmp_path):
    """After an edit to a config fragment, another entry already built with the new config rebuilds less
    than this entry's build of the old one (measured: the debug capture kernel was fully rebuilt)."""
    for name, kernel, config, when in (("old", "k1", "cfg-old", "2026-01-05"), ("new", "k2", "cfg-new", "2026-01-04")):
        p = _work(tmp_path, name, kernel, finished=when)
        workdirs.write(p, {**workdirs.read(p).info, "config": config})
    me = tmp_path / "me"
    assert workdirs.find_seed(tmp_path, "fam", "k1", me, config="cfg-new").path.name == "new"
    assert workdirs.find_seed(tmp_path, "fam", "k1", me, config="cfg-old").path.name == "old"
    assert workdirs.find_seed(tmp_path, "fam", "k1", me, config="cfg-other").path.name == "old"  # entry, then newest


def test_copy_build_copies_the_build_dir_for_real_and_forces_the_series_again(tmp_path):
    seed = _work(tmp_path, "s", "k1")
    (seed / "src" / ".farm-build").mkdir(parents=True)
    (seed / "src" / ".farm-build" / "Makefile").write_text("m\n")
    (seed / "src" / ".farm-build" / "x.o").write_text("object\n")
    (seed / "patches-state.json").write_text(json.dumps({"patches": [["p", "h"]], "files": {}, "done": True}))
    new = tmp_path / "n"
    (new / "src").mkdir(parents=True)
    assert workdirs.copy_build(workdirs.read(seed), new, "src/.farm-build")
    obj = new / "src" / ".farm-build" / "x.o"
    assert obj.read_text() == "object\n"
    assert obj.stat().st_ino != (seed / "src" / ".farm-build" / "x.o").stat().st_ino  # never a hard link
    assert obj.stat().st_mtime_ns == (seed / "src" / ".farm-build" / "x.o").stat().st_mtime_ns
    assert json.loads((new / "patches-state.json").read_text())["done"] is False


def test_retarget_points_objtools_absolute_paths_at_the_new_work_dir(tmp_path):
    seed, new = tmp_path / "w" / "aaa", tmp_path / "w" / "bbb"
    cmd = new / "src/.farm-build/tools/objtool/.check.o.cmd"
    cmd.parent.mkdir(parents=True)
    cmd.write_text(f"cmd_{seed}/src/.farm-build/tools/objtool/check.o := gcc -o {seed}/src/x.o {seed}/src/tools/c\n")
    os.utime(cmd, ns=(10**18, 10**18))
    (cmd.parent / "check.o").write_text(f"{seed} in an object is left alone\n")
    assert workdirs.retarget(new / "src/.farm-build", seed, new) == 1
    assert str(seed) not in cmd.read_text() and f"{new}/src/tools/c" in cmd.read_text()
    assert cmd.stat().st_mtime_ns == 10**18 and str(seed) in (cmd.parent / "check.o").read_text()


def test_take_moves_the_tree_over_and_the_seed_is_never_a_seed_again(tmp_path):
    seed = _work(tmp_path, "s", "k1")
    (seed / "src" / ".farm-build").mkdir(parents=True)
    (seed / "src" / ".farm-build" / "Makefile").write_text("m\n")
    (seed / "src" / "a.c").write_text("a\n")
    (seed / "src.base").write_text("debian:x\n")
    (seed / "patches-state.json").write_text(json.dumps({"files": {}, "done": True}))
    ino = (seed / "src" / "a.c").stat().st_ino
    new = tmp_path / "n"
    new.mkdir()
    assert workdirs.take(workdirs.read(seed), new, "src/.farm-build", "newkey", os.rename)
    assert (new / "src" / "a.c").stat().st_ino == ino and (new / "src.base").read_text() == "debian:x\n"
    assert not (seed / "src").exists() and not (seed / "patches-state.json").exists()
    assert json.loads((new / "patches-state.json").read_text())["done"] is False
    assert workdirs.read(seed).info["moved_to"] == "newkey"
    assert workdirs.find_seed(tmp_path, "fam", "k1", tmp_path / "other") is None
    assert not workdirs.take(workdirs.read(seed), tmp_path / "m", "src/.farm-build", "k", os.rename)


def test_gc_keeps_the_newest_per_kernel_skips_locked_and_dry_run_removes_nothing(tmp_path):
    for i in range(5):
        _work(tmp_path, f"k1-{i}", "k1", finished=f"2026-01-0{i + 1}", size=1 << 20)
    _work(tmp_path, "k2-0", "k2", size=1 << 20)
    (tmp_path / "legacy").mkdir()  # the layout before work.json: never seeded from, collected
    held = workdirs.try_lock(tmp_path / "k1-0")  # a build (or a seed copy) is using it
    lines: list[str] = []
    would = workdirs.collect(tmp_path, 2, dry_run=True, log=lines.append)
    assert sorted(p.name for p, _ in would) == ["k1-1", "k1-2", "legacy"]
    assert all((tmp_path / n).is_dir() for n in ("k1-1", "k1-2", "legacy"))
    assert sum(size for _, size in would) >= 2 << 20 and "would remove" in lines[0]
    freed = workdirs.collect(tmp_path, 2)
    assert sorted(p.name for p, _ in freed) == ["k1-1", "k1-2", "legacy"]
    held.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1-0", "k1-3", "k1-4", "k2-0"]
    assert workdirs.collect(tmp_path, 1, kernel="k2") == []  # only k2's, and it has one


def test_freeable_bytes_does_not_count_files_linked_from_the_pristine_tree(tmp_path):
    (tmp_path / "pristine").mkdir()
    (tmp_path / "pristine" / "big").write_bytes(b"x" * (1 << 20))
    (tmp_path / "w").mkdir()
    os.link(tmp_path / "pristine" / "big", tmp_path / "w" / "big")
    (tmp_path / "w" / "own").write_bytes(b"y" * (1 << 20))
    assert (1 << 20) <= workdirs.freeable_bytes(tmp_path / "w") < (2 << 20)


def test_farm_gc_cli_dry_run_and_bad_keep(tmp_path):
    root = tmp_path / "cache"
    _work(root / "work", "a", "k", finished="2026-01-01", size=1 << 20)
    _work(root / "work", "b", "k", finished="2026-01-02")
    env = {**os.environ, "FARM_CACHE": str(root)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "farm.cli", "gc", *a], env=env,  # noqa: E731
                                    capture_output=True, text=True)
    proc = run("--keep", "1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would free 1 MiB in 1 work dir(s)" in proc.stdout and (root / "work" / "a").is_dir()
    proc = run("--keep", "1")
    assert "freed 1 MiB in 1 work dir(s)" in proc.stdout and not (root / "work" / "a").exists()
    proc = run("--keep", "-1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--keep" in proc.stderr


# --- the key: toolchain and recipe ---------------------------------------------------------------------


def test_key_changes_with_the_toolchain_and_the_recipe():
    args = ("debian:1", [], {"base": "tinyconfig", "fragments": []}, "gcc 12", "bzImage")
    tools, rcp = cache.toolchain(), build.recipe()
    assert set(tools) == {"ld", "make"} and tools["ld"].startswith("GNU ld")
    key = cache.kernel_key(*args, tools, rcp)[0]
    assert cache.kernel_key(*args, {**tools, "ld": "GNU ld 2.99"}, rcp)[0] != key
    assert cache.kernel_key(*args, {**tools, "make": "GNU Make 9"}, rcp)[0] != key
    assert cache.kernel_key(*args, tools, {**rcp, "env": {**rcp["env"], "KBUILD_BUILD_USER": "x"}})[0] != key
    assert cache.kernel_key(*args, tools, {**rcp, "version": rcp["version"] + 1})[0] != key


# --- progress ------------------------------------------------------------------------------------------


def test_tracker_counts_objects_and_ccache_hits_from_a_real_build():
    """The fixture is a real farm build's log and CCACHE_STATSLOG (linux-6.1, cold: 1024 ccache misses)."""
    lines = (FIXTURES / "make-cold.log").read_text().splitlines()
    stats = FIXTURES / "ccache-stats-cold.log"
    seen: list[kprogress.BuildStatus] = []
    clock = iter(range(0, 10**6)).__next__  # a second per call: every line may emit
    tracker = kprogress.Tracker("linux-6.1", 2000, False, stats, seen.append, clock=lambda: float(clock()))
    for ln in lines:
        tracker.line(ln)
    end = tracker.finish()
    assert end.finished and end.done == kprogress.count_steps(lines) and end.done > 100
    assert end.hits == build.ccache_stats(stats)["hits"] and end.hits > 0
    dones = [s.done for s in seen if not s.finished]
    assert dones == sorted(dones) and len(set(dones)) > 10  # it moves
    mid = seen[len(seen) // 2]
    assert mid.eta is not None and mid.eta > 0 and "objects (" in mid.text() and "ETA" in mid.text()


def test_plain_build_lines_at_most_every_30_s():
    now = [0.0]
    out = io.StringIO()
    p = farm_progress.Progress(stream=out, clock=lambda: now[0])
    for t in range(0, 100):  # a status each second for 100 s, for two kernels one after the other
        now[0] = float(t)
        kernel = "linux-6.1" if t < 50 else "linux-6.1-xcr0"
        p.build(kprogress.BuildStatus(kernel, t * 10, 1000, False, t, 0, float(t % 50)))
    p.build(kprogress.BuildStatus("linux-6.1-xcr0", 999, 1000, False, 9, 0, 50.0, finished=True))
    lines = out.getvalue().splitlines()
    assert [ln.split("] ", 1)[1].split(":")[0] for ln in lines] == ["linux-6.1", "linux-6.1", "linux-6.1-xcr0",
                                                                   "linux-6.1-xcr0"]
    assert "0/1000 objects (0%)" in lines[0] and "300/1000 objects (30%)" in lines[1]
    assert "500/1000" in lines[2] and "800/1000" in lines[3]  # t=50 and t=80: 30 s apart


def test_estimate_and_expected_total_prefer_a_previous_full_build(tmp_path):
    cfg = tmp_path / ".config"
    cfg.write_text("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n")
    assert kprogress.expected_total(tmp_path / "kernels", "fam", cfg) == (kprogress.estimate(cfg.read_text()), True)
    for key, md in {"k1": {"family": "fam", "kbuild_steps": 1300, "incremental": False, "built_at": "1"},
                    "k2": {"family": "fam", "kbuild_steps": 7, "incremental": True, "built_at": "2"},
                    "k3": {"family": "x", "kbuild_steps": 5, "incremental": False, "built_at": "3"}}.items():
        (tmp_path / "kernels" / key).mkdir(parents=True)
        (tmp_path / "kernels" / key / "metadata.json").write_text(json.dumps(md))
    assert kprogress.expected_total(tmp_path / "kernels", "fam", cfg) == (1300, False)


def test_status_text_without_total():
    st = kprogress.BuildStatus("k", 12, None, False, 3, 1, 4.0)
    assert st.text() == "k: 12 objects (incremental), ccache 3 hits" and st.eta is None
