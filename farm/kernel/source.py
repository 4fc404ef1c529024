"""Kernel source trees.

Three kinds (farm.catalog.Source):
  debian  a linux-source-X package's tarball (`debian: linux-source-6.1` is /usr/src/linux-source-6.1.tar.xz,
          an absolute path names any tarball), unpacked once into cache.root()/src/<digest>/
  git     a git repository; its HEAD commit is built, uncommitted changes are not
  dir     an unpacked tree used as it is

The pristine tree is never written to. Builds run from a work tree (`work_tree()`): a hard-linked copy of
the unpacked tarball (git apply replaces a file rather than writing into it, so the links to the pristine
tree are never written through), a git worktree, or for `dir` the folder itself when there are no patches
and a mirrored copy when there are (`mirror()`: only files whose size or mtime differ are copied, so a
tree seeded from an earlier build keeps the mtimes of what did not change). Every work tree sits at
<work>/src with its build dir inside it (BUILD_SUBDIR): kbuild then uses `..` as srctree, so the command
lines it records (and compares to decide what to rebuild) are the same in every work dir, a build dir
copied from an earlier build stays valid, and ccache hits across kernels and series.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..catalog import Source
from . import cache
from .cache import digest_json, locked, sha256_file
from .errors import BuildError
from .run import Runner

DEBIAN_SRC = Path("/usr/src")
BUILD_SUBDIR = ".farm-build"  # the build dir, inside the work tree (see above)
TARBALL_SUFFIXES = (".tar.xz", ".tar.gz", ".tar.bz2", ".tar")


@dataclass(frozen=True)
class Resolved:
    """A Source with what the build needs to know of it."""

    source: Source
    path: Path  # tarball, repository or folder
    digest: str  # content digest, part of the kernel's key
    identity: str  # what the persistent work dir is named after: stays the same across edits/commits
    commit: str | None = None  # git: the commit that is built


def resolve(source: Source) -> Resolved:
    if source.kind == "debian":
        tarball = debian_tarball(source.location)
        digest = tarball_digest(tarball)
        return Resolved(source, tarball, "debian:" + digest, "debian:" + digest)
    path = Path(source.location).expanduser()
    if not path.is_absolute():
        path = paths.data_root() / path
    if not path.is_dir():
        raise BuildError(f"source {source.kind}: {source.location}: no such folder ({path})")
    if source.kind == "git":
        commit = _git(path, "rev-parse", "--verify", "--quiet", f"{source.ref or 'HEAD'}^{{commit}}")
        if commit is None:
            if source.ref:
                raise BuildError(f"source git: {path}: no commit '{source.ref}' in that repository")
            raise BuildError(f"source git: {path} is not a git repository with a commit")
        return Resolved(source, path, "git:" + commit, "git:" + str(path.resolve()), commit)
    if source.kind == "dir":
        return Resolved(source, path, "dir:" + tree_digest(path), "dir:" + str(path.resolve()))
    raise BuildError(f"unknown source kind '{source.kind}'")


def debian_tarball(location: str) -> Path:
    if "/" in location:
        candidates = [Path(location).expanduser()]
    else:
        candidates = [DEBIAN_SRC / f"{location}{suffix}" for suffix in TARBALL_SUFFIXES]
    for c in candidates:
        if c.is_file():
            return c
    raise BuildError(
        f"source debian: {location}: no tarball at {candidates[0]}"
        + (f" (install it: apt-get install {location})" if "/" not in location else "")
    )


def tarball_digest(tarball: Path) -> str:
    """sha256 of the tarball, remembered by (path, size, mtime, inode) so it is hashed only once."""
    st = tarball.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    memo_path = cache.root() / "src" / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(tarball.resolve()))
    if entry and all(entry.get(k) == v for k, v in stamp.items()):
        return entry["sha256"]
    digest = sha256_file(tarball)
    memo[str(tarball.resolve())] = {**stamp, "sha256": digest}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_name(f".digests.{os.getpid()}.json")
    tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
    os.replace(tmp, memo_path)
    return digest


def tree_digest(folder: Path) -> str:
    """A digest of a plain folder from each file's path, size and mtime (not its content: 1.5 GB)."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            entries.append((os.path.relpath(p, folder), st.st_size, st.st_mtime_ns))
    return digest_json(entries)


def pristine_tree(res: Resolved, runner: Runner, log) -> Path:
    """The unmodified tree: for a tarball, unpacked once into the cache (concurrent callers wait)."""
    if res.source.kind != "debian":
        return res.path
    short = res.digest.split(":", 1)[1][:20]
    root = cache.root() / "src"
    dest = root / short
    if (dest / "Makefile").is_file() and (root / f"{short}.complete").is_file():
        return dest
    with locked(root / f"{short}.lock"):
        if (dest / "Makefile").is_file() and (root / f"{short}.complete").is_file():
            return dest
        log(f"unpacking {res.path} into {dest} (once)")
        if dest.exists():
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{short}-", dir=root))
        rc, lines = runner.run(["tar", "-xf", str(res.path), "-C", str(tmp), "--strip-components=1"], cwd=root)
        if rc != 0 or not (tmp / "Makefile").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(f"cannot unpack {res.path}", lines[-10:], log_path=None)
        os.rename(tmp, dest)
        (root / f"{short}.complete").write_text(res.digest + "\n")
    return dest


def work_tree(
    res: Resolved, pristine: Path, work: Path, patched: bool, runner: Runner, log, base: Path | None = None
) -> Path:
    """The tree this work dir builds from, at <work>/src, brought to the source's current content
    (patches are applied afterwards, by patches.sync). base: an earlier build's tree for a dir source to
    start from (hard links, then only what differs is copied)."""
    tree = work / "src"
    kind = res.source.kind
    if kind == "dir" and not patched:
        return pristine
    if kind == "debian":
        marker = work / "src.base"
        if tree.is_dir() and marker.is_file() and marker.read_text().strip() == res.digest:
            return tree
        log(f"linking a work tree {tree}")
        if tree.exists():
            shutil.rmtree(tree)
        (work / "patches-state.json").unlink(missing_ok=True)
        tmp = work / "src.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        rc, lines = runner.run(["cp", "-al", str(pristine), str(tmp)], cwd=work)
        if rc != 0:
            raise BuildError(f"cannot make the work tree {tree}", lines[-10:])
        os.rename(tmp, tree)
        marker.write_text(res.digest + "\n")
        return tree
    if kind == "git":
        if not (tree / ".git").exists():
            log(f"adding a git worktree {tree}")
            runner.run(["git", "worktree", "prune"], cwd=res.path, record=False)
            if tree.exists():
                shutil.rmtree(tree)
            rc, lines = runner.run(
                ["git", "worktree", "add", "--detach", "--force", str(tree), res.commit or "HEAD"], cwd=res.path
            )
            if rc != 0:
                raise BuildError(f"cannot add a git worktree of {res.path} at {tree}", lines[-10:])
        return tree
    if kind == "dir":
        if not tree.exists() and base is not None and base.is_dir():
            rc, lines = runner.run(["cp", "-al", str(base), str(tree)], cwd=work)
            if rc != 0:
                raise BuildError(f"cannot link {base} to the work tree {tree}", lines[-10:])
            shutil.rmtree(tree / BUILD_SUBDIR, ignore_errors=True)  # links to the seed's objects: never ours
        runner.note(f"# mirror {pristine}/ -> {tree}/ (without .git)")
        try:
            copied = mirror(pristine, tree, skip_src={".git"}, skip_dst={BUILD_SUBDIR})
        except OSError as e:
            raise BuildError(f"cannot copy {pristine} to the work tree {tree}: {e}") from None
        runner.note(f"# {copied} file(s) copied")
        return tree
    raise BuildError(f"unknown source kind '{kind}'")


def mirror(src: Path, dst: Path, skip_src: set[str] = frozenset(), skip_dst: set[str] = frozenset()) -> int:
    """Make dst a copy of src: files whose type, size or mtime differ are copied (a new file, never written
    through a hard link), what src does not have is removed, the rest is left alone. Top-level names in
    skip_src are not copied, those in skip_dst not removed. Returns how many files were copied."""
    copied = 0
    dst.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        here = dst / rel if rel != "." else dst
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in skip_src]
            files = [f for f in files if f not in skip_src]
        want = set(dirs) | set(files)
        for name in os.listdir(here):
            if name not in want and not (rel == "." and name in skip_dst):
                p = here / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for d in dirs:
            p = here / d
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                p.unlink()
            if os.path.islink(os.path.join(root, d)):
                if not p.is_symlink():
                    os.symlink(os.readlink(os.path.join(root, d)), p)
                continue
            p.mkdir(exist_ok=True)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for f in files:
            s_path, d_path = os.path.join(root, f), here / f
            st = os.lstat(s_path)
            try:
                dt = os.lstat(d_path)
            except FileNotFoundError:
                dt = None
            if dt is not None and (dt.st_mode, dt.st_size, dt.st_mtime_ns) == (st.st_mode, st.st_size, st.st_mtime_ns):
                continue
            if dt is not None:
                if os.path.isdir(d_path) and not os.path.islink(d_path):
                    shutil.rmtree(d_path)
                else:
                    d_path.unlink()
            if os.path.islink(s_path):
                os.symlink(os.readlink(s_path), d_path)
                os.utime(d_path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            else:
                shutil.copy2(s_path, d_path)
            copied += 1
    return copied


def kernel_version(tree: Path) -> str:
    """What `make kernelversion` prints, read from the top Makefile (no make run)."""
    fields = {}
    try:
        with open(tree / "Makefile") as f:
            for _ in range(12):
                m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", f.readline())
                if m:
                    fields[m.group(1)] = m.group(2)
    except OSError:
        return "unknown"
    if "VERSION" not in fields:
        return "unknown"
    version = f"{fields['VERSION']}.{fields.get('PATCHLEVEL', '0')}"
    if fields.get("SUBLEVEL"):
        version += f".{fields['SUBLEVEL']}"
    return version + fields.get("EXTRAVERSION", "")


def _git(repo: Path, *args: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
