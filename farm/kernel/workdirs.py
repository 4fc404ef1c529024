"""Work folders: one per build (cache.root()/work/<key[:20]>/), seeded from the nearest earlier one, and
their garbage collection.

A work folder holds src/ (the patched tree), the build dir, the patch state and work.json:
  {"kernel", "family", "key", "created", "finished", "seeded_from"}
The family is what makes two builds comparable (source identity and config recipe): a new build of a
family starts from the most recent finished build of the same kernel entry, else of the family, so make
only rebuilds what changed. How it takes over the seed's state:
  same entry  the seed's tree (with its build dir inside) is moved over (`take()`): the edit loop's
              previous version is superseded, its kernel stays in the cache, and a linux-sized tree is not
              linked again (cp -al of 84k files and its later rm take 6-8 s each on a busy 2-core host)
  other entry the tree is made fresh and the seed's build dir copied in (`copy_build()`): a real copy
              (`cp --reflink=auto -a`, a reflink where the filesystem has them), never hard links, since the
              compiler rewrites objects in place; the seed (say the unpatched baseline) stays usable.

GC keeps the most recent FARM_KEEP_WORK (default 3) finished folders with a tree per kernel entry; a folder
whose lock is held (a build running in it, or being copied) is never removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import BuildError

KEEP_DEFAULT = 3
# what a seed hands over besides its build dir: the patch state (which files it touched, with their
# content and mtime) and the config stamp and warning table that make incremental configure/warnings work
STATE_FILES = ("patches-state.json", "config.stamp", "warnings.json")


def keep_default() -> int:
    env = os.environ.get("FARM_KEEP_WORK", "")
    return int(env) if env.isdigit() else KEEP_DEFAULT


@dataclass
class WorkDir:
    path: Path
    info: dict  # work.json; {} for a folder of an older layout

    @property
    def finished(self) -> bool:
        return bool(self.info.get("finished"))

    @property
    def when(self) -> str:
        return self.info.get("finished") or self.info.get("created") or ""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def read(path: Path) -> WorkDir:
    try:
        info = json.loads((path / "work.json").read_text())
    except (OSError, ValueError):
        info = {}
    return WorkDir(path, info if isinstance(info, dict) else {})


def write(path: Path, info: dict) -> None:
    tmp = path / f".work.{os.getpid()}.json"
    tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path / "work.json")


def all_dirs(root: Path) -> list[WorkDir]:
    try:
        return [read(p) for p in sorted(root.iterdir()) if p.is_dir()]
    except FileNotFoundError:
        return []


def find_seed(root: Path, family: str, kernel: str, exclude: Path, config: str | None = None) -> WorkDir | None:
    """The nearest earlier finished build: same family; of those, one built with the same config content
    first (after an edit to a fragment, another entry's build of the new config rebuilds less than this
    entry's build of the old one), then the same kernel entry, then the most recent."""
    mine = [w for w in all_dirs(root) if w.path != exclude and w.finished and w.info.get("family") == family
            and not w.info.get("moved_to")]
    if not mine:
        return None
    return max(mine, key=lambda w: (config is not None and w.info.get("config") == config,
                                    w.info.get("kernel") == kernel, w.when))


def try_lock(path: Path):
    """The folder's lock file, held (the caller closes it to release), or None when someone holds it."""
    try:
        f = open(path / "lock", "a")
    except OSError:
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def copy_tree(src: Path, dst: Path) -> None:
    """A real copy keeping mtimes (a reflink where the filesystem can), never hard links."""
    rc = subprocess.run(["cp", "--reflink=auto", "-a", "--", str(src), str(dst)], capture_output=True, text=True)
    if rc.returncode != 0:
        raise BuildError(f"cannot copy {src} to {dst}: {rc.stderr.strip()[:300]}")


def retarget(build: Path, old: Path, new: Path) -> int:
    """kbuild records paths relative to the tree, but the objtool build under tools/ records absolute ones
    (O=$(abspath $(objtree))) in its .cmd and .d files: left pointing at the seed, objtool is rebuilt and
    then, since every object depends on the objtool binary, the whole kernel. Point them at the new work
    dir (mtimes kept). Returns how many files were rewritten."""
    before, after = f"{old}/".encode(), f"{new}/".encode()
    count = 0
    for root, _dirs, files in os.walk(build / "tools"):
        for name in files:
            if not (name.startswith(".") and name.endswith((".cmd", ".d"))):
                continue
            path = Path(root) / name
            data = path.read_bytes()
            if before in data:
                st = path.stat()
                path.write_bytes(data.replace(before, after))
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                count += 1
    return count


def _hold(seed: WorkDir):
    """The seed's lock, waiting for a build running there (it is short); None if it cannot be had."""
    held = try_lock(seed.path)
    if held is None:
        with open(seed.path / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)
        held = try_lock(seed.path)
    return held


def _usable(seed: WorkDir, build_rel: str) -> bool:
    now = read(seed.path)
    return now.finished and not now.info.get("moved_to") and (seed.path / build_rel / "Makefile").is_file()


def _take_state(seed: Path, work: Path, names=STATE_FILES) -> None:
    for name in names:
        if (seed / name).is_file():
            shutil.copy2(seed / name, work / name)
    state = work / "patches-state.json"
    if state.is_file():  # re-apply: the seed's series is undone and the new one applied (mtimes kept)
        data = json.loads(state.read_text())
        data["done"] = False
        state.write_text(json.dumps(data, indent=1))


def copy_build(seed: WorkDir, work: Path, build_rel: str) -> bool:
    """Copy the seed's build dir and state into the new work folder; False if the seed went away (GC)."""
    held = _hold(seed)
    if held is None:
        return False
    try:
        if not _usable(seed, build_rel):
            return False
        dst_build = work / build_rel
        dst_build.parent.mkdir(parents=True, exist_ok=True)
        copy_tree(seed.path / build_rel, dst_build)
        retarget(dst_build, seed.path, work)
        _take_state(seed.path, work)
        return True
    finally:
        held.close()


def take(seed: WorkDir, work: Path, build_rel: str, key: str, move_tree) -> bool:
    """Move the seed's tree (and the build dir in it) and state to the new work folder; the seed keeps its
    logs and records where its tree went. move_tree(src, dst) moves a tree (a rename; `git worktree move`
    for git). False if the seed went away or is in use elsewhere."""
    held = _hold(seed)
    if held is None:
        return False
    try:
        if not _usable(seed, build_rel) or (work / "src").exists():
            return False
        move_tree(seed.path / "src", work / "src")
        retarget(work / build_rel, seed.path, work)
        _take_state(seed.path, work, STATE_FILES + ("src.base",))
        for name in STATE_FILES + ("src.base", "config.stamp"):
            (seed.path / name).unlink(missing_ok=True)
        write(seed.path, {**read(seed.path).info, "moved_to": key})
        return True
    finally:
        held.close()


def freeable_bytes(path: Path) -> int:
    """Bytes removing path gives back: files linked from elsewhere (the pristine tree) do not count."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_nlink == 1 or name in dirs:
                total += st.st_blocks * 512
    return total


def collect(root: Path, keep: int, kernel: str | None = None, dry_run: bool = False, log=print) -> list[tuple]:
    """Remove all but the `keep` most recent finished work folders per kernel entry (only `kernel`'s when
    given); folders of an older layout (no work.json) and unfinished ones go too unless a build holds
    their lock. Returns [(path, bytes)] of what was (or, dry_run, would be) removed."""
    groups: dict[str, list[WorkDir]] = {}
    for w in all_dirs(root):
        name = w.info.get("kernel") or ""
        if kernel is not None and name != kernel:
            continue
        groups.setdefault(name, []).append(w)
    doomed: list[WorkDir] = []
    for name, dirs in groups.items():
        live = [w for w in dirs if w.finished and name and not w.info.get("moved_to")]
        doomed += sorted(live, key=lambda w: w.when, reverse=True)[keep:]
        # unfinished (failed) ones, the older layout's, and shells whose tree moved on (the cache has the log)
        doomed += [w for w in dirs if w not in live]
    freed = []
    for w in doomed:
        held = try_lock(w.path)
        if held is None:
            continue  # in use
        try:
            size = freeable_bytes(w.path)
            if not dry_run:
                shutil.rmtree(w.path, ignore_errors=True)
        finally:
            held.close()
        freed.append((w.path, size))
        log(f"{'would remove' if dry_run else 'removed'} {w.path} ({w.info.get('kernel') or 'old layout'}, "
            f"{size / 2**20:.0f} MiB)")
    return freed
