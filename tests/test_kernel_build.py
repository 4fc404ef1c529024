"""The kernel build layer: pure logic (series, config check, keys, warnings, patch sync on a toy tree) and,
marked `build`, real builds of the tiny linux-6.1 kernel.

Real builds share one cache: FARM_CACHE if set, else /var/tmp/farm-test-cache, so a second run is all cache
hits (the first run builds linux-6.1 cold, ~2-3 min on 2 cores, plus two variants from a warm ccache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from farm import paths
from farm.catalog import Catalog, ConfigRecipe, Kernel, Source
from farm.errors import FarmError
from farm.kernel import cache, config, patches, source, warnings
from farm.kernel.build import (
    BuildError,
    BuiltKernel,
    build_kernel,
    cached_kernel,
    ccache_stats,
    kernel_key,
    make_target,
)
from farm.kernel.run import Runner

ROOT = Path(__file__).resolve().parent.parent

GOOD_PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Farm Test <farm@localhost>
Subject: [PATCH] toy: change b

---
 a.txt | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,3 @@
 one
-b
+B
 three
--
2.39.5
"""

BROKEN_PATCH = """\
diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,3 @@
 one
-this line is not there
+X
 three
"""


# --- series and patch checks -------------------------------------------------------------------------


def test_parse_series_skips_comments_and_reads_strip_level():
    text = "# the series\n\n0001-a.patch\n0002-b.patch -p0  # trailing comment\n  \n"
    assert patches.parse_series(text) == [("0001-a.patch", 1), ("0002-b.patch", 0)]


def test_parse_series_refuses_unknown_options():
    with pytest.raises(BuildError, match=r"series:1: unsupported option '-R'"):
        patches.parse_series("0001-a.patch -R\n")


def test_expand_folder_file_and_empty_series(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "series").write_text("")
    assert patches.expand([folder]) == []
    (folder / "0001.patch").write_text(GOOD_PATCH)
    (folder / "series").write_text("0001.patch\n")
    single = tmp_path / "one.mbox"
    single.write_text(GOOD_PATCH)
    got = patches.expand([folder, single])
    assert [p.path for p in got] == [folder / "0001.patch", single]
    assert got[0].sha256 == got[1].sha256 == cache.sha256_text(GOOD_PATCH)


def test_expand_names_missing_patch_and_missing_series(tmp_path):
    (tmp_path / "series").write_text("0001-gone.patch\n")
    with pytest.raises(BuildError, match="0001-gone.patch") as e:
        patches.expand([tmp_path])
    assert e.value.patch == tmp_path / "0001-gone.patch"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildError, match="no 'series' file"):
        patches.expand([empty])


def test_touched_paths_and_outside_paths_refused(tmp_path):
    assert patches.touched_paths(GOOD_PATCH) == ["a.txt"]
    rename = "diff --git a/x/old.c b/x/new.c\nsimilarity index 100%\nrename from x/old.c\nrename to x/new.c\n"
    assert patches.touched_paths(rename) == ["x/old.c", "x/new.c"]
    for bad in ("../etc/passwd", ".git/config"):
        p = tmp_path / "bad.patch"
        p.write_text(f"--- a/{bad}\n+++ b/{bad}\n@@ -1 +1 @@\n-a\n+b\n")
        with pytest.raises(BuildError, match="outside the tree"):
            patches.check_patch(patches.Patch(p, "x"))
    p = tmp_path / "abs.patch"
    p.write_text("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(BuildError, match="outside the tree"):
        patches.check_patch(patches.Patch(p, "x", strip=0))
    p.write_text("just words\n")
    with pytest.raises(BuildError, match="contains no diff"):
        patches.check_patch(patches.Patch(p, "x"))


def test_failing_hunk_is_found_by_file_and_line():
    hunk = patches.failing_hunk(BROKEN_PATCH, "a.txt", 1)
    assert hunk[0] == "@@ -1,3 +1,3 @@"
    assert "-this line is not there" in hunk
    assert patches.failing_hunk(BROKEN_PATCH, "other.c", 1) == []


def _toy_trees(tmp_path):
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    (pristine / "a.txt").write_text("one\nb\nthree\n")
    (pristine / "c.txt").write_text("untouched\n")
    tree = tmp_path / "work" / "src"
    shutil.copytree(pristine, tree)
    return pristine, tree


def _patch(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return patches.Patch(p, cache.sha256_text(text))


def test_sync_applies_restores_and_keeps_mtimes_of_unchanged_files(tmp_path):
    pristine, tree = _toy_trees(tmp_path)
    state = tmp_path / "work" / "state.json"
    runner = Runner()
    good = _patch(tmp_path, "0001-good.patch", GOOD_PATCH)
    assert patches.sync(tree, pristine, "debian", "d", [good], state, runner, print) == ["a.txt"]
    assert (tree / "a.txt").read_text() == "one\nB\nthree\n"
    assert (pristine / "a.txt").read_text() == "one\nb\nthree\n"
    os.utime(tree / "a.txt", ns=(10**18, 10**18))
    json_state = json.loads(state.read_text())
    json_state["files"]["a.txt"]["mtime_ns"] = 10**18
    json_state["patches"] = []  # force a re-apply of the same content
    state.write_text(json.dumps(json_state))
    patches.sync(tree, pristine, "debian", "d", [good], state, runner, print)
    assert (tree / "a.txt").stat().st_mtime_ns == 10**18  # same content as before: make sees no change
    patches.sync(tree, pristine, "debian", "d", [], state, runner, print)
    assert (tree / "a.txt").read_text() == "one\nb\nthree\n"  # back to pristine
    assert (tree / "a.txt").stat().st_mtime_ns != 10**18


def test_sync_broken_patch_names_patch_and_hunk_and_leaves_tree_pristine(tmp_path):
    pristine, tree = _toy_trees(tmp_path)
    state = tmp_path / "work" / "state.json"
    good = _patch(tmp_path, "0001-good.patch", GOOD_PATCH)
    broken = _patch(tmp_path, "0002-broken.patch", BROKEN_PATCH)
    with pytest.raises(BuildError) as e:
        patches.sync(tree, pristine, "debian", "d", [good, broken], state, Runner(), print)
    assert "0002-broken.patch" in e.value.message
    assert "a.txt:1" in e.value.message and "@@ -1,3 +1,3 @@" in e.value.message
    assert e.value.patch == broken.path
    assert isinstance(e.value, FarmError)
    assert (tree / "a.txt").read_text() == "one\nb\nthree\n"
    patches.sync(tree, pristine, "debian", "d", [good], state, Runner(), print)  # recovers
    assert (tree / "a.txt").read_text() == "one\nB\nthree\n"


def test_sync_git_tree_uses_git_am_and_resets_on_failure(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("one\nb\nthree\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    for argv in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "base"]):
        subprocess.run(argv, cwd=repo, env=env, check=True)
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    state = tmp_path / "state.json"
    good = _patch(tmp_path, "0001-good.patch", GOOD_PATCH)
    patches.sync(repo, repo, "git", "git:" + base, [good], state, Runner(), print, git_base=base)
    assert (repo / "a.txt").read_text() == "one\nB\nthree\n"
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True).stdout
    assert log.splitlines()[0] == "toy: change b"
    broken = _patch(tmp_path, "0002-broken.patch", "Subject: [PATCH] broken\n\n" + BROKEN_PATCH)
    with pytest.raises(BuildError, match="0002-broken.patch does not apply") as e:
        patches.sync(repo, repo, "git", "git:" + base, [good, broken], state, Runner(), print, git_base=base)
    assert "@@ -1,3 +1,3 @@" in e.value.lines
    assert (repo / "a.txt").read_text() == "one\nb\nthree\n"  # reset to the base commit


def test_dir_source_digest_and_patched_work_copy(tmp_path):
    pristine, _ = _toy_trees(tmp_path)
    res = source.resolve(Source("dir", str(pristine)))
    assert res.digest.startswith("dir:") and res.identity == "dir:" + str(pristine.resolve())
    work = tmp_path / "w"
    work.mkdir()
    assert source.work_tree(res, pristine, work, False, Runner(), print) == pristine  # no patches: as it is
    tree = source.work_tree(res, pristine, work, True, Runner(), print)
    assert tree == work / "src" and (tree / "c.txt").read_text() == "untouched\n"
    good = _patch(tmp_path, "0001-good.patch", GOOD_PATCH)
    patches.sync(tree, pristine, "dir", res.digest, [good], work / "state.json", Runner(), print)
    assert (tree / "a.txt").read_text() == "one\nB\nthree\n" and (pristine / "a.txt").read_text() == "one\nb\nthree\n"
    (pristine / "c.txt").write_text("edited\n")
    os.utime(pristine / "c.txt", ns=(1, 1))
    assert source.resolve(Source("dir", str(pristine))).digest != res.digest


# --- config ----------------------------------------------------------------------------------------


def test_config_parse_and_unmet():
    text = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_N=8\nCONFIG_S="x y"\n# a comment\n'
    assert config.parse_config(text) == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_N": "8", "CONFIG_S": '"x y"'}
    want = {
        "CONFIG_A": ("y", "f"),
        "CONFIG_B": ("n", "f"),
        "CONFIG_C": ("n", "f"),
        "CONFIG_N": ("8", "f"),
        "CONFIG_KVM": ("y", "g"),
    }
    final = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_N": "2"}
    got = config.unmet(want, final)
    assert [u["option"] for u in got] == ["CONFIG_N", "CONFIG_KVM"]
    assert got[1] == {"option": "CONFIG_KVM", "requested": "y", "actual": None, "fragment": "g"}


def test_later_fragment_wins(tmp_path):
    a, b = tmp_path / "a.config", tmp_path / "b.config"
    a.write_text("CONFIG_X=y\nCONFIG_Y=y\n")
    b.write_text("# CONFIG_X is not set\n")
    assert config.requested([a, b]) == {"CONFIG_X": ("n", "b.config"), "CONFIG_Y": ("y", "a.config")}


# --- keys and cache --------------------------------------------------------------------------------


def test_kernel_key_depends_on_every_input():
    base = ("debian:1", ["p1"], {"base": "tinyconfig", "fragments": [["g", "h"]]}, "gcc 12", "bzImage")
    key, inputs = cache.kernel_key(*base)
    assert key == cache.kernel_key(*base)[0] and len(key) == 64
    assert inputs["patches"] == ["p1"]
    for i, other in enumerate(
        ["debian:2", ["p2"], {"base": "tinyconfig", "fragments": [["g", "h2"]]}, "gcc 13", "vmlinux"]
    ):
        changed = list(base)
        changed[i] = other
        assert cache.kernel_key(*changed)[0] != key


def test_cache_lookup_and_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_CACHE", str(tmp_path / "cache"))
    image, log = tmp_path / "bzImage", tmp_path / "build.log"
    image.write_bytes(b"kernel")
    log.write_text("log\n")
    assert cache.lookup("k" * 64, "bzImage") is None
    folder = cache.store("k" * 64, image, "bzImage", {"kernel": "x"}, log)
    assert cache.lookup("k" * 64, "bzImage") == folder
    assert cache.load_metadata("k" * 64) == {"kernel": "x"}
    assert (folder / "build.log").read_text() == "log\n"
    # a second builder of the same key finishing later keeps the first entry
    assert cache.store("k" * 64, image, "bzImage", {"kernel": "y"}, log) == folder
    assert cache.load_metadata("k" * 64) == {"kernel": "x"}
    (folder / "metadata.json").unlink()  # damaged: not a hit, and the next store replaces it
    assert cache.lookup("k" * 64, "bzImage") is None
    cache.store("k" * 64, image, "bzImage", {"kernel": "z"}, log)
    assert cache.load_metadata("k" * 64) == {"kernel": "z"}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".k")]  # no temp dir left


def test_lock_keeps_a_second_process_out(tmp_path):
    lock = tmp_path / "build.lock"
    probe = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    with cache.locked(lock):
        assert subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True).returncode != 0
    assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 0


def test_kernel_version_from_makefile(tmp_path):
    (tmp_path / "Makefile").write_text("# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION = -rc1\n")
    assert source.kernel_version(tmp_path) == "6.1.192-rc1"


def test_debian_tarball_missing_is_a_clear_error():
    with pytest.raises(BuildError, match="apt-get install linux-source-0.0"):
        source.debian_tarball("linux-source-0.0")


def test_make_target():
    assert make_target("arch/x86/boot/bzImage") == "bzImage"
    assert make_target("vmlinux") == "vmlinux"


# --- warnings and ccache stats -----------------------------------------------------------------------


LOG = """\
  CC      kernel/fork.o
  CC      arch/x86/kernel/process.o
../src/arch/x86/kernel/process.c:42:12: warning: 'farm' defined but not used [-Wunused-variable]
   42 | static int farm;
      |            ^~~~
In file included from ../src/include/linux/sched.h:5,
../src/include/linux/x.h:7:1: error: unknown type name 'foo'
  LD      vmlinux.o
vmlinux.o: warning: objtool: something odd
make[2]: *** [scripts/Makefile.build:250: kernel/fork.o] Error 1
"""


def test_extract_warnings_per_step_with_tree_relative_paths(tmp_path):
    tree, build = tmp_path / "src", tmp_path / "build"
    steps = warnings.extract(LOG.splitlines(), tree, build)
    assert steps["CC kernel/fork.o"] == []
    (w,) = steps["CC arch/x86/kernel/process.o"][:1]
    assert (w["file"], w["line"], w["col"], w["kind"]) == ("arch/x86/kernel/process.c", 42, 12, "warning")
    assert w["message"] == "'farm' defined but not used [-Wunused-variable]"
    assert steps["CC arch/x86/kernel/process.o"][1]["kind"] == "error"
    assert steps["LD vmlinux.o"][0]["file"] == "O/vmlinux.o"
    errs = warnings.error_lines(LOG.splitlines())
    assert errs[0].endswith("unknown type name 'foo'") and errs[-1].startswith("make[2]: ***")


def test_warning_table_survives_incremental_builds(tmp_path):
    build = tmp_path / "build"
    (build / "a").mkdir(parents=True)
    for name in ("a/x.o", "a/y.o"):
        (build / name).write_text("")
    w = {"file": "a/x.c", "line": 1, "col": 1, "kind": "warning", "message": "m"}
    table = tmp_path / "warnings.json"
    first = warnings.merge(table, {"CC a/x.o": [w], "CC a/y.o": []}, True, build)
    assert first == [w]
    # the next build recompiles only y: x's warning is still part of the build
    assert warnings.merge(table, {"CC a/y.o": []}, False, build) == [w]
    # x recompiled clean: gone
    assert warnings.merge(table, {"CC a/x.o": []}, False, build) == []
    assert warnings.new_since([dict(w, message="\u2018m\u2019")], [dict(w, message="'m'")]) == []
    colour = "\x1b[01m\x1b[Ka.c:1:2:\x1b[m\x1b[K \x1b[01;35m\x1b[Kwarning: \x1b[m\x1b[K\u2018x\u2019 unused"
    assert warnings.extract([colour])["-"][0]["message"] == "'x' unused"
    moved = dict(w, line=9, message="n")
    assert warnings.new_since([dict(w, line=5), moved], [w]) == [moved]


def test_ccache_stats_counts_per_compile(tmp_path):
    log = tmp_path / "stats"
    log.write_text("# a.c\ncache_miss\ndirect_cache_miss\n# b.c\ndirect_cache_hit\n# c.c\ncalled_for_link\n")
    assert ccache_stats(log) == {"hits": 1, "misses": 1, "uncached": 1}
    assert ccache_stats(tmp_path / "none") == {"hits": 0, "misses": 0, "uncached": 0}


def test_kernels_in_catalog():
    cat = Catalog(ROOT)
    k = cat.kernels["linux-6.1"]
    assert k.source.kind == "debian" and k.config.base == "tinyconfig"
    assert [f.name for f in k.config.fragments] == ["guest.config"]
    x, fpu = cat.kernels["linux-6.1-xcr0"], cat.kernels["linux-6.1-fpu"]
    assert [f.name for f in fpu.config.fragments] == ["guest.config", "fpu.config"]
    assert x.baseline == "linux-6.1-fpu" and x.source == k.source and x.config == fpu.config
    assert x.patches == (ROOT / "kernels/patches/xcr0",)


def test_build_refuses_kernel_without_source():
    k = Kernel(name="p", description="", path=Path("p.yaml"), cmdline="")
    with pytest.raises(BuildError, match="no source"):
        build_kernel(k, log=lambda s: None)


# --- real builds -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def build_cache():
    """One cache for every real build of the session (persistent, so a second run is all cache hits)."""
    old = os.environ.get("FARM_CACHE")
    os.environ["FARM_CACHE"] = old or "/var/tmp/farm-test-cache"
    yield paths.cache_root()
    if old is None:
        del os.environ["FARM_CACHE"]
    else:
        os.environ["FARM_CACHE"] = old


@pytest.fixture(scope="session")
def linux61() -> Kernel:
    return Catalog(ROOT).kernels["linux-6.1"]


@pytest.fixture(scope="session")
def built61(build_cache, linux61) -> BuiltKernel:
    return build_kernel(linux61, log=print)


@pytest.mark.build
def test_first_build_gives_a_bzimage(built61):
    md = built61.metadata
    assert built61.image.is_file() and built61.image.name == "bzImage"
    assert built61.image.read_bytes()[0x202:0x206] == b"HdrS"  # the x86 boot protocol header
    assert built61.image.parent == paths.cache_root() / "kernels" / built61.key
    assert md["kernel_version"] == "6.1.192" and md["kernel"] == "linux-6.1"
    assert md["options_not_set"] == [], md["config"]["unmet"]  # guest.config is fully honoured
    assert json.loads((built61.image.parent / "metadata.json").read_text())["key"] == built61.key
    assert built61.log_path.is_file()
    assert any(c["argv"][0] == "make" for c in md["commands"])


@pytest.mark.build
def test_second_build_is_a_cache_hit_without_make(built61, linux61):
    lines: list[str] = []
    again = build_kernel(linux61, log=lines.append)
    assert again.cache_hit and again.key == built61.key and again.image == built61.image
    assert not any("make" in line for line in lines), lines


@pytest.mark.build
def test_xcr0_kernel_key_follows_its_series(built61, build_cache):
    xcr0 = Catalog(ROOT).kernels["linux-6.1-xcr0"]
    assert cached_kernel(Catalog(ROOT).kernels["linux-6.1"]).key == built61.key
    if patches.expand(xcr0.patches):
        assert kernel_key(xcr0) != built61.key
    else:  # an empty series is the same kernel as linux-6.1
        got = build_kernel(xcr0, log=lambda s: None)
        assert got.cache_hit and got.key == built61.key and got.metadata["kernel"] == "linux-6.1-xcr0"


def _remove_work_dir(kernel: Kernel) -> None:
    from farm.kernel.build import work_dir

    shutil.rmtree(work_dir(kernel), ignore_errors=True)


@pytest.mark.build
def test_broken_patch_names_the_patch_file(build_cache, linux61, tmp_path):
    series = tmp_path / "broken"
    series.mkdir()
    (series / "0001-broken.patch").write_text(
        "--- a/Makefile\n+++ b/Makefile\n@@ -2,3 +2,3 @@\n VERSION = 6\n-PATCHLEVEL = 99\n+PATCHLEVEL = 1\n SUBLEVEL = 192\n"
    )
    (series / "series").write_text("0001-broken.patch\n")
    kernel = replace(linux61, name="broken", patches=(series,))
    try:
        with pytest.raises(BuildError) as e:
            build_kernel(kernel, log=lambda s: None)
        assert "0001-broken.patch" in str(e.value) and "Makefile:2" in e.value.message
        assert e.value.patch == series / "0001-broken.patch"
        assert e.value.log_path and e.value.log_path.is_file()
    finally:
        _remove_work_dir(kernel)


@pytest.mark.build
def test_dropped_option_is_reported_by_name(build_cache, linux61, tmp_path):
    extra = tmp_path / "kvm.config"
    extra.write_text("# KVM needs CONFIG_VIRTUALIZATION, which nothing turns on\nCONFIG_KVM=y\n")
    recipe = ConfigRecipe(linux61.config.base, linux61.config.fragments + (extra,))
    kernel = replace(linux61, name="dropped", config=recipe)
    built = build_kernel(kernel, log=print)
    assert built.metadata["options_not_set"] == ["CONFIG_KVM"]
    assert built.metadata["config"]["unmet"][0]["fragment"] == "kvm.config"


@pytest.mark.build
def test_patched_build_reports_its_new_warning(built61, linux61, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    lines = [
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
        "From: Farm Test <farm@localhost>",
        "Subject: [PATCH] x86: an unused variable",
        "",
        "---",
        "diff --git a/arch/x86/kernel/process.c b/arch/x86/kernel/process.c",
        "--- a/arch/x86/kernel/process.c",
        "+++ b/arch/x86/kernel/process.c",
        "@@ -51,5 +51,7 @@",
        ' #include "process.h"',
        " ",
        "+static int farm_unused_variable;",
        "+",
        " /*",
        "  * per-CPU TSS segments. Threads are completely 'soft' on Linux,",
        "  * no more per-task TSS's. The TSS size is kept cacheline-aligned",
    ]
    (folder / "0001-unused.patch").write_text("\n".join(lines) + "\n")
    (folder / "series").write_text("0001-unused.patch\n")
    kernel = replace(linux61, name="patched", patches=(folder,), baseline="linux-6.1")
    built = build_kernel(kernel, log=print)
    md = built.metadata
    assert md["patches"][0]["name"] == "0001-unused.patch" and md["touched_files"] == ["arch/x86/kernel/process.c"]
    assert md["baseline_key"] == built61.key
    assert [(w["file"], "farm_unused_variable" in w["message"]) for w in md["new_warnings"]] == [
        ("arch/x86/kernel/process.c", True)
    ]
    if not built.cache_hit:
        assert md["ccache"]["hits"] > 10 * md["ccache"]["misses"]  # shared ccache across work dirs


# --- the edit loop: builds seeded from the previous one, reproducibility, a fresh cache -------------------

EDIT_TARGET = "arch/x86/kernel/process.c"
EDIT_ANCHOR = '#include "process.h"\n'


def _edit_patch(pristine: Path, line: str) -> str:
    """A one-hunk patch adding `line` after EDIT_ANCHOR in EDIT_TARGET."""
    lines = (pristine / EDIT_TARGET).read_text().splitlines(keepends=True)
    i = lines.index(EDIT_ANCHOR)
    body = [" " + ln for ln in lines[i - 3 : i + 1]] + ["+" + line + "\n"] + [" " + ln for ln in lines[i + 1 : i + 4]]
    return (f"diff --git a/{EDIT_TARGET} b/{EDIT_TARGET}\n--- a/{EDIT_TARGET}\n+++ b/{EDIT_TARGET}\n"
            f"@@ -{i - 2},7 +{i - 2},8 @@\n" + "".join(body))


@pytest.fixture(scope="module")
def edit_builds(build_cache, built61, linux61, tmp_path_factory):
    """The same kernel entry built twice, its one-patch series changed by one line in between (a nonce keeps
    every session's builds new, so the second is never a cache hit)."""
    pristine = source.pristine_tree(source.resolve(linux61.source), Runner(), print)
    series = tmp_path_factory.mktemp("edit") / "series"
    series.mkdir()
    kernel = replace(linux61, name="edit-loop", patches=(series,))
    nonce = os.urandom(4).hex()
    built = []
    for n in (1, 2):
        (series / "0001-edit.patch").write_text(_edit_patch(pristine, f"static int farm_{nonce}_{n} __used;"))
        (series / "series").write_text("0001-edit.patch\n")
        built.append(build_kernel(kernel, log=print))
    return kernel, pristine, built[0], built[1]


@pytest.mark.build
def test_one_line_edit_is_built_from_the_previous_build(edit_builds):
    kernel, pristine, first, second = edit_builds
    md = second.metadata
    assert not second.cache_hit and md["seeded_from"] == first.key and md["incremental"]
    # make redid process.o and the links above it, nothing else
    compiled = [c for c in md["commands_run"] if c["argv"][0] == "make"]
    assert compiled and md["kbuild_steps"] <= 25, md["kbuild_steps"]
    assert md["ccache"]["misses"] <= 5, md["ccache"]  # (the hits are mostly kbuild's cc-option probes)
    work = Path(md["work_dir"])
    assert work != Path(first.metadata["work_dir"])
    # the unchanged files are the pristine tree's (same inode, same old mtime); the patched one is new
    assert (work / "src/Makefile").stat().st_ino == (pristine / "Makefile").stat().st_ino
    assert (work / "src" / EDIT_TARGET).stat().st_ino != (pristine / EDIT_TARGET).stat().st_ino
    # the entry's previous build handed its tree (and the build dir in it) over; its shell is collected
    assert (work / "src/.farm-build/arch/x86/kernel/process.o").is_file()
    assert not (Path(first.metadata["work_dir"]) / "src").exists()
    info = json.loads((work / "work.json").read_text())
    assert info["seeded_from"] == first.key and info["finished"] and info["kernel"] == "edit-loop"
    assert info["seeded_how"] == "moved"


@pytest.mark.build
def test_fresh_empty_cache_builds_clean_on_a_terminal_with_a_moving_bar(edit_builds, build_cache, tmp_path):
    """`farm build` in a pseudo-terminal with a fresh, empty FARM_CACHE (the tarball unpacked again, no
    kernel, no work dir: a fresh machine, except that ccache is shared through FARM_CCACHE_DIR to keep it
    affordable) builds the edit loop's second kernel from nothing. The rich bar moves (objects done/total,
    ETA); the build is not a cache hit, not seeded, and its bzImage is byte for byte the seeded incremental
    build's: kbuild is reproducible here because the timestamp, user, host and build number are pinned
    (BUILD_ENV) and every path kbuild records is relative to the tree (the build dir sits inside it)."""
    import re

    import pexpect

    kernel, _, _, seeded = edit_builds
    root = tmp_path / "root"
    for d in ("cpumodels", "kernels", "guests", "jobs"):
        shutil.copytree(ROOT / d, root / d, symlinks=True)
    (root / "kernels" / "edit-loop.yaml").write_text(
        f"name: edit-loop\nextends: linux-6.1\npatches: [{kernel.patches[0]}]\n")
    fresh = tmp_path / "fresh-cache"
    env = {**os.environ, "FARM_ROOT": str(root), "FARM_CACHE": str(fresh), "TERM": "xterm", "COLUMNS": "120",
           "FARM_CCACHE_DIR": str(build_cache.resolve() / "ccache")}
    env.pop("CI", None)
    child = pexpect.spawn(sys.executable, ["-m", "farm.cli", "build", "--kernel", "edit-loop"], cwd=str(ROOT),
                          env=env, encoding="utf-8", timeout=3000, dimensions=(40, 120))
    child.expect(pexpect.EOF)
    child.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)
    assert child.exitstatus == 0, screen[-3000:]
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/~?(\d+)\s", screen)]
    dones = sorted({a for a, _ in counts})
    assert len(dones) >= 3 and dones[-1] > dones[0], screen[-2000:]  # the bar moved
    assert "ETA" in screen and "edit-loop" in screen
    image = Path(screen.strip().splitlines()[-1].strip())
    assert image.parent.parent == (fresh / "kernels").resolve() and image.is_file()
    md = json.loads((image.parent / "metadata.json").read_text())
    assert md["key"] == seeded.key and md["seeded_from"] is None and not md["incremental"]
    assert md["kbuild_steps"] > 500  # everything was made
    assert md["image_sha256"] == seeded.metadata["image_sha256"], "seeded and clean builds differ"
    assert (image.parent / "config").read_bytes() == (seeded.image.parent / "config").read_bytes()


@pytest.mark.build
def test_a_toolchain_or_recipe_change_misses_the_cache(built61, linux61, monkeypatch):
    from farm.kernel import build as kbuild

    assert cached_kernel(linux61).key == built61.key
    real = cache.toolchain()
    monkeypatch.setattr(cache, "toolchain", lambda: {**real, "ld": "GNU ld (a newer binutils) 2.99"})
    assert cached_kernel(linux61) is None
    monkeypatch.setattr(cache, "toolchain", lambda: {**real, "make": "GNU Make 9.9"})
    assert cached_kernel(linux61) is None
    monkeypatch.setattr(cache, "toolchain", lambda: real)
    assert cached_kernel(linux61).key == built61.key
    monkeypatch.setitem(kbuild.BUILD_ENV, "KBUILD_BUILD_USER", "someone-else")
    assert cached_kernel(linux61) is None
