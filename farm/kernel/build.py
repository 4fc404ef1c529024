"""build_kernel(): from a catalog Kernel to a bzImage in the kernel cache.

  built = build_kernel(kernel, log=print)
  built.image, built.key, built.metadata, built.cache_hit, built.log_path

Pipeline: resolve the source and its digest -> expand the patch series -> content key (source, patches,
config recipe, toolchain, the farm's build recipe); a key already in the cache returns at once without
make. Otherwise, under a lock on the key and one on the work dir: pristine tree (tarball unpacked once) ->
work tree (hard-linked copy / git worktree / mirrored copy) -> the seed's build dir copied in -> patches
-> .config (merge_config.sh, only when its inputs changed) -> make O=<build dir> with ccache -> image,
metadata.json and build.log stored under cache_root()/kernels/<key>/.

Each build has its own work dir, cache_root()/work/<key[:20]>/ (workdirs.py), seeded from the nearest
earlier build of the same entry and config: its build dir is copied and only the files whose content
differs get new mtimes, so editing one line of a patch rebuilds what that line affects (the record says
`seeded_from`). Old work dirs are collected (FARM_KEEP_WORK per entry, `farm gc`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..catalog import Kernel
from . import cache, config, patches, source, warnings, workdirs
from . import progress as build_progress
from .cache import digest_json, sha256_file
from .errors import BuildError
from .run import Runner

__all__ = ["BuildError", "BuiltKernel", "build_kernel", "cached_kernel", "kernel_key", "work_dir"]

CC = "ccache gcc"
# fixed so two builds of the same inputs give the same image
BUILD_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 1970",
    "KBUILD_BUILD_USER": "farm",
    "KBUILD_BUILD_HOST": "farm",
    "KBUILD_BUILD_VERSION": "1",
}
# bump when the way a kernel is made changes in a way recipe() does not show (it is part of the key)
RECIPE_VERSION = 2


def recipe() -> dict:
    """The farm's own build recipe as it enters the key: a change here must not reuse old kernels."""
    return {
        "version": RECIPE_VERSION,
        "cc": CC,
        "env": dict(BUILD_ENV),
        "arch": config.ARCH,
        "make": ["--output-sync=target"],
        "build_dir": source.BUILD_SUBDIR,
        "config_bases": {k: list(v) for k, v in config.BASE_FRAGMENTS.items()},
    }


@dataclass
class BuiltKernel:
    image: Path  # the image in the cache
    key: str  # content key (hex)
    metadata: dict  # also in metadata.json next to the image
    cache_hit: bool  # True when no make ran
    log_path: Path  # build.log
    vmlinux: Path | None = None  # the unstripped vmlinux, kept when the config has DEBUG_INFO (oops decoding)


def jobs_default() -> int:
    env = os.environ.get("FARM_BUILD_JOBS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 2


def make_target(image: str) -> str:
    """The make goal that produces image: arch/x86/boot/bzImage -> bzImage, vmlinux -> vmlinux."""
    return Path(image).name


def ccache_env() -> dict[str, str]:
    root = cache.root()
    # FARM_CCACHE_DIR shares one ccache between caches (a test's fresh FARM_CACHE, CI)
    ccdir = os.environ.get("FARM_CCACHE_DIR") or str(root / "ccache")
    return {"CCACHE_DIR": ccdir, "CCACHE_BASEDIR": str(root)}


def ccache_stats(stats_log: Path) -> dict[str, int]:
    """Hits and misses of this build, from its own CCACHE_STATSLOG (the shared counters are not zeroed)."""
    counts = {"hits": 0, "misses": 0, "uncached": 0}
    try:
        text = stats_log.read_text()
    except OSError:
        return counts
    for block in text.split("# ")[1:]:
        ids = block.splitlines()[1:]
        if "direct_cache_hit" in ids or "preprocessed_cache_hit" in ids:
            counts["hits"] += 1
        elif "cache_miss" in ids:
            counts["misses"] += 1
        else:
            counts["uncached"] += 1
    return counts


def _family(res: source.Resolved, kernel: Kernel) -> str:
    """What makes two builds comparable for seeding: the same source (by identity) and config recipe."""
    assert kernel.config is not None
    fragments = [str(f) for f in kernel.config.fragments]
    return digest_json([res.identity, kernel.config.base, fragments, kernel.image])[:20]


def work_dir(kernel: Kernel) -> Path:
    """The work dir a build of kernel (as it is now) uses."""
    return cache.root() / "work" / kernel_key(kernel)[:20]


def _has_debug_info(config_path: Path) -> bool:
    try:
        return "CONFIG_DEBUG_INFO=y" in config_path.read_text().splitlines()
    except OSError:
        return False


def _move_tree(res: source.Resolved, src: Path, dst: Path, runner: Runner) -> None:
    if res.source.kind == "git":
        rc, out = runner.run(["git", "worktree", "move", str(src), str(dst)], cwd=res.path, record=False)
        if rc != 0:
            raise BuildError(f"cannot move the worktree {src} to {dst}", out[-10:])
    else:
        os.rename(src, dst)


def _age_unchanged(tree: Path, seed_commit: str | None, runner: Runner, candidates: list[str] | None) -> int:
    """git rewrites what it checks out or patches (new mtimes): give each file whose content is the same as
    in the seed's tree an old mtime, so make does not rebuild what did not change. candidates: the files
    git may have rewritten (a moved tree: what this series touches); None: all
    (a fresh checkout). A file the seed's series touched and this one does not differs from the seed's."""
    if not seed_commit:
        return 0
    rc, changed = runner.run(["git", "diff", "--name-only", "--no-renames", seed_commit, "HEAD"], cwd=tree)
    if rc:
        return 0
    if candidates is None:
        rc, tracked = runner.run(["git", "ls-files", "-z"], cwd=tree, record=False)
        if rc:
            return 0
        candidates = "\n".join(tracked).split("\0")
    skip = set(changed)
    aged = 0
    for rel in candidates:
        if rel and rel not in skip:
            try:
                os.utime(tree / rel, ns=(1_000_000_000, 1_000_000_000), follow_symlinks=False)
                aged += 1
            except OSError:
                pass
    return aged


def _kconfig_inputs(tree: Path, touched: list[str]) -> list[list]:
    """The patched files that can change the outcome of configuring (Kconfig files, config fragments):
    the .config is regenerated only when these change, so editing a .c file in a patch stays incremental."""
    out = []
    for rel in touched:
        name = os.path.basename(rel)
        if name.startswith("Kconfig") or "/configs/" in f"/{rel}" or name.endswith(".config") or "kconfig" in rel:
            p = tree / rel
            out.append([rel, sha256_file(p) if p.is_file() else None])
    return out


def _recipe(res, pristine, tree, build_dir, series, kernel, make_vars, make_argv, make_env) -> list[dict]:
    """Every command that makes this kernel from nothing, in order (what ran this time is only part of it
    when the build was incremental): unpack, work tree, patches, config, make."""
    out: list[dict] = []

    def add(argv: list[str], cwd: Path, env: dict | None = None) -> None:
        out.append({"cwd": str(cwd), "env": dict(env or {}), "argv": [str(a) for a in argv]})

    kind = res.source.kind
    if kind == "debian":
        add(["mkdir", "-p", pristine], pristine.parent)
        add(["tar", "-xf", res.path, "-C", pristine, "--strip-components=1"], pristine.parent)
        add(["cp", "-al", pristine, tree], tree.parent)
    elif kind == "git":
        add(["git", "worktree", "add", "--detach", "--force", tree, res.commit], res.path)
    elif tree != pristine:
        add(["cp", "-a", f"{pristine}/.", tree], tree.parent)
        add(["rm", "-rf", tree / ".git"], tree.parent)
    for p in series:
        if kind == "git":
            add(["git", "am", "-q", f"-p{p.strip}", p.path], tree, patches.GIT_AM_ENV)
        else:
            env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}
            add(["git", "apply", f"-p{p.strip}", "--whitespace=nowarn", p.path], tree, env)
    add(["mkdir", "-p", build_dir], tree)
    for argv in config.commands(tree, build_dir, kernel.config, make_vars):
        add(argv, tree, {"ARCH": config.ARCH})
    add(make_argv, tree, make_env)
    return out


def _plan(kernel: Kernel):
    if kernel.source is None:
        raise BuildError(f"kernel '{kernel.name}' has no source to build (prebuilt kernels are used as they are)")
    if kernel.config is None:
        raise BuildError(f"kernel '{kernel.name}' has no config recipe")
    res = source.resolve(kernel.source)
    series = patches.expand(kernel.patches)
    cfg_inputs = config.recipe_inputs(kernel.config)
    compiler = cache.compiler_version()
    key, inputs = _key(res.digest, [p.sha256 for p in series], cfg_inputs, compiler, kernel.image)
    return res, series, cfg_inputs, compiler, key, inputs


def _key(source_digest: str, patch_digests: list[str], cfg_inputs: dict, compiler: str, image: str):
    return cache.kernel_key(source_digest, patch_digests, cfg_inputs, compiler, image, cache.toolchain(), recipe())


def kernel_key(kernel: Kernel) -> str:
    """The content key build_kernel would use (no build; the tarball is hashed once per machine)."""
    return _plan(kernel)[4]


def cached_kernel(kernel: Kernel) -> BuiltKernel | None:
    """The kernel from the cache if it was built before, else None; never builds."""
    return _cached(kernel, kernel_key(kernel), Path(kernel.image).name, lambda s: None)


def build_kernel(
    kernel: Kernel, log: Callable[[str], None] = print, jobs: int | None = None, progress=None
) -> BuiltKernel:
    """Build kernel (or find it in the cache). Raises BuildError when it cannot be built.
    progress: called with a kernel.progress.BuildStatus as make goes (see farm/kernel/progress.py)."""
    t0 = time.monotonic()
    res, series, cfg_inputs, compiler, key, inputs = _plan(kernel)
    image_name = Path(kernel.image).name

    hit = _cached(kernel, key, image_name, log)
    if hit:
        return hit
    with cache.locked(cache.key_lock(key)):
        hit = _cached(kernel, key, image_name, log)  # built by someone else while we waited
        if hit:
            return hit
        work = cache.root() / "work" / key[:20]
        work.mkdir(parents=True, exist_ok=True)
        with cache.locked(work / "lock"):
            built = _build(kernel, res, series, cfg_inputs, compiler, key, inputs, work, log, jobs, t0, progress)
        freed = workdirs.collect(work.parent, workdirs.keep_default(), kernel=kernel.name, log=lambda s: None)
        if freed:
            mib = sum(size for _, size in freed) / 2**20
            log(f"{kernel.name}: removed {len(freed)} old work dir(s), {mib:.0f} MiB (FARM_KEEP_WORK)")
        return built


def _cached(kernel: Kernel, key: str, image_name: str, log) -> BuiltKernel | None:
    folder = cache.lookup(key, image_name)
    if folder is None:
        return None
    metadata = cache.load_metadata(key)
    if metadata is None:
        return None
    if metadata.get("kernel") != kernel.name:
        metadata = {**metadata, "built_as": metadata.get("kernel"), "kernel": kernel.name}
    log(f"{kernel.name}: cached kernel {key[:12]} ({folder / image_name})")
    vmlinux = folder / "vmlinux"
    return BuiltKernel(folder / image_name, key, metadata, True, folder / "build.log",
                       vmlinux if vmlinux.is_file() else None)


def _build(kernel, res, series, cfg_inputs, compiler, key, inputs, work, log, jobs, t0, progress) -> BuiltKernel:
    log_path = work / "build.log"
    durations: dict[str, float] = {"key": time.monotonic() - t0}
    family = _family(res, kernel)
    in_place = res.source.kind == "dir" and not series
    build_dir = work / "build" if in_place else work / "src" / source.BUILD_SUBDIR
    build_rel = str(build_dir.relative_to(work))
    config_digest = digest_json(cfg_inputs)[:20]  # the fragments' content: an edited fragment is a new config
    seed = None
    if not (build_dir / "Makefile").is_file():
        seed = workdirs.find_seed(work.parent, family, kernel.name, exclude=work, config=config_digest)
    info = {"kernel": kernel.name, "family": family, "key": key, "created": workdirs.now(), "finished": None,
            "build_rel": build_rel, "seeded_from": seed.info.get("key") if seed else None,
            "config": config_digest}
    workdirs.write(work, info)
    with open(log_path, "w") as log_file:
        runner = Runner(log_file)
        runner.note(f"# farm build of {kernel.name}, key {key}")

        def stage(name: str, started: float) -> None:
            durations[name] = round(time.monotonic() - started, 3)

        # source and patches
        t = time.monotonic()
        pristine = source.pristine_tree(res, runner, log)
        moved = False
        if seed and seed.info.get("kernel") == kernel.name and not in_place:
            # the edit loop: this entry's previous build hands its tree over (workdirs.py says why)
            moved = workdirs.take(seed, work, build_rel, key, lambda a, b: _move_tree(res, a, b, runner))
        base = seed.path / "src" if seed and not moved and res.source.kind == "dir" else None
        tree = source.work_tree(res, pristine, work, bool(series), runner, log, base=base)
        stage("source", t)
        if seed:
            t = time.monotonic()
            if moved or workdirs.copy_build(seed, work, build_rel):
                how = "its tree moved over" if moved else "its build dir copied"
                log(f"{kernel.name}: starting from build {seed.info['key'][:12]} ({seed.info.get('kernel')}, {how})")
                runner.note(f"# seeded from {seed.path} ({seed.info.get('kernel')}, key {seed.info['key']}, {how})")
                info["seeded_how"] = "moved" if moved else "copied"
            else:
                seed = None
                info["seeded_from"] = None
            stage("seed", t)
        t = time.monotonic()
        touched: list[str] = []
        if tree != pristine:
            try:
                touched = patches.sync(
                    tree,
                    pristine,
                    res.source.kind,
                    res.digest,
                    series,
                    work / "patches-state.json",
                    runner,
                    log,
                    git_base=res.commit,
                )
            except BuildError as e:
                e.log_path = log_path
                runner.note("\n".join([e.message, *e.lines]))
                raise
        if seed and res.source.kind == "git":
            aged = _age_unchanged(tree, seed.info.get("tree_commit"), runner, None if not moved else touched)
            runner.note(f"# {aged} unchanged files aged")
        stage("patch", t)

        # config, regenerated only when its inputs changed
        t = time.monotonic()
        fresh = not (build_dir / "Makefile").is_file()
        build_dir.mkdir(parents=True, exist_ok=True)
        stamp = work / "config.stamp"
        config_key = digest_json([res.digest, cfg_inputs, _kconfig_inputs(tree, touched)])
        make_vars = ["ARCH=" + config.ARCH, "CC=" + CC]
        if stamp.is_file() and stamp.read_text() == config_key and (build_dir / ".config").is_file():
            final = config.parse_config((build_dir / ".config").read_text())
            unmet = config.unmet(config.requested(kernel.config.fragments), final)
            runner.note("# .config is up to date")
        else:
            log(
                f"{kernel.name}: configuring {kernel.config.base} + "
                + ", ".join(f.name for f in kernel.config.fragments)
            )
            stamp.unlink(missing_ok=True)
            try:
                unmet = config.configure(tree, build_dir, kernel.config, runner, make_vars)
            except BuildError as e:
                e.log_path = log_path
                raise
            stamp.write_text(config_key)
        for u in unmet:
            msg = f"{u['option']}={u['requested']} requested by {u['fragment']} is {u['actual'] or 'not set'}"
            log(f"{kernel.name}: config: {msg}")
            runner.note(f"# config: {msg}")
        stage("config", t)

        # make
        t = time.monotonic()
        stats_log = work / "ccache-stats.log"
        stats_log.unlink(missing_ok=True)
        env = {**BUILD_ENV, **ccache_env(), "CCACHE_STATSLOG": str(stats_log)}
        argv = [
            "make",
            "-C",
            str(tree),
            f"O={build_dir}",
            *make_vars,
            f"-j{jobs or jobs_default()}",
            "--output-sync=target",
            make_target(kernel.image),
        ]
        log(f"{kernel.name}: make {make_target(kernel.image)} in {build_dir}")
        if fresh:
            total, estimated = build_progress.expected_total(cache.kernels_root(), family, build_dir / ".config")
        else:
            total, estimated = None, False
        tracker = build_progress.Tracker(kernel.name, total, estimated, stats_log, progress or (lambda st: None))
        if progress:
            tracker.start()
        try:
            rc, out = runner.run(argv, cwd=tree, env=env, on_line=tracker.line)
        finally:
            tracker.finish()
        stage("make", t)
        t = time.monotonic()
        steps = warnings.extract(out, tree.resolve(), build_dir.resolve())
        if rc != 0:
            lines = warnings.error_lines(out) or out[-20:]
            first = lines[0] if lines else f"make exited with {rc}"
            raise BuildError(f"kernel '{kernel.name}' does not build: {first}", lines, log_path=log_path,
                             kernel_fault=True)
        image = build_dir / kernel.image
        if not image.is_file():
            raise BuildError(f"kernel '{kernel.name}': make succeeded but {image} is missing", log_path=log_path)
        diags = warnings.merge(work / "warnings.json", steps, fresh, build_dir)
        found = [d for d in diags if d["kind"] == "warning"]

        baseline_key = new = None
        if series or kernel.baseline or kernel.extends:
            baseline_key, _ = _key(res.digest, [], cfg_inputs, compiler, kernel.image)
            if baseline_key != key:
                base_md = cache.load_metadata(baseline_key)
                if base_md is not None:
                    new = warnings.new_since(found, base_md.get("warnings", []))
                    log(f"{kernel.name}: {len(new)} new warning(s) against the unpatched build")
            else:
                new = []
        release = build_dir / "include/config/kernel.release"
        metadata = {
            "kernel": kernel.name,
            "key": key,
            "key_inputs": inputs,
            "source": {
                "kind": res.source.kind,
                "location": res.source.location,
                "path": str(res.path),
                "digest": res.digest,
                "commit": res.commit,
            },
            "kernel_version": source.kernel_version(tree),
            "kernel_release": release.read_text().strip() if release.is_file() else None,
            "patches": [{"file": str(p.path), "name": p.name, "sha256": p.sha256, "strip": p.strip} for p in series],
            "touched_files": touched,
            "config": {
                "base": kernel.config.base,
                "fragments": [{"file": str(f), "sha256": sha256_file(f)} for f in kernel.config.fragments],
                "sha256": sha256_file(build_dir / ".config"),
                "unmet": unmet,
            },
            "options_not_set": [u["option"] for u in unmet],
            "compiler": compiler.splitlines()[0],
            "ccache": ccache_stats(stats_log),
            "commands": _recipe(res, pristine, tree, build_dir, series, kernel, make_vars, argv, env),
            "commands_run": runner.commands,
            "durations": durations,
            "warnings": found,
            "errors": [d for d in diags if d["kind"] == "error"],
            "baseline_key": baseline_key,
            "new_warnings": new,
            "image": Path(kernel.image).name,
            "image_sha256": sha256_file(image),
            "image_size": image.stat().st_size,
            "work_dir": str(work),
            "incremental": not fresh,
            "family": family,
            "seeded_from": info["seeded_from"],
            "kbuild_steps": tracker.done,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        stage("collect", t)
        durations["total"] = round(time.monotonic() - t0, 3)
        runner.note(f"# durations: {json.dumps(durations)}")
    t = time.monotonic()
    extra = {"config": build_dir / ".config"}
    if _has_debug_info(build_dir / ".config"):
        # decoding oopses to file:line after the work tree is gone: the image's symbols and the tree's script
        extra["vmlinux"] = build_dir / "vmlinux"
        extra["decode_stacktrace.sh"] = tree / "scripts/decode_stacktrace.sh"
    folder = cache.store(key, image, metadata["image"], metadata, log_path, extra)
    durations["store"] = round(time.monotonic() - t, 3)
    if res.source.kind == "git":
        info["tree_commit"] = source._git(tree, "rev-parse", "HEAD")
    workdirs.write(work, {**info, "finished": workdirs.now()})
    log(
        f"{kernel.name}: built {key[:12]} in {durations['total']:.1f} s "
        f"(make {durations['make']:.1f} s, ccache {metadata['ccache']['hits']} hits "
        f"{metadata['ccache']['misses']} misses)"
    )
    vmlinux = folder / "vmlinux"
    return BuiltKernel(folder / metadata["image"], key, metadata, False, folder / "build.log",
                       vmlinux if vmlinux.is_file() else None)
