"""Patch series: a folder with a quilt `series` file, or a single mbox / git format-patch file.

Applied one patch file at a time, in order: `git am` on a git work tree, `git apply` on an unpacked tree.
A patch that does not apply raises BuildError naming the patch file and the first failing hunk; a patch
touching a path outside the tree (absolute, `..`, `.git/`) is refused before anything is applied.

On an unpacked tree the work tree persists between builds, so applying is incremental: the files the
previous series touched are put back to pristine, the new series is applied, and every touched file whose
content came out the same as before gets its old mtime back, so make rebuilds only what really changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache import sha256_file
from .errors import BuildError
from .run import Runner


@dataclass(frozen=True)
class Patch:
    path: Path
    sha256: str
    strip: int = 1  # -pN

    @property
    def name(self) -> str:
        return self.path.name


# --- reading series --------------------------------------------------------------------------------


def parse_series(text: str, where: str = "series") -> list[tuple[str, int]]:
    """Entries of a quilt series file: (patch file, strip level). Comments (#) and blank lines are skipped;
    `-pN` after the name sets the strip level; other options are refused."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        name, *opts = line.split()
        strip = 1
        for opt in opts:
            m = re.fullmatch(r"-p(\d+)", opt)
            if not m:
                raise BuildError(f"{where}:{number}: unsupported option '{opt}' for {name} (only -pN)")
            strip = int(m.group(1))
        entries.append((name, strip))
    return entries


def expand(entries: tuple[Path, ...] | list[Path]) -> list[Patch]:
    """The patch files of a kernel's `patches` list, in order: folders are read through their series file."""
    out: list[Patch] = []
    for entry in entries:
        if entry.is_dir():
            series = entry / "series"
            if not series.is_file():
                raise BuildError(f"patch folder {entry} has no 'series' file")
            for name, strip in parse_series(series.read_text(), str(series)):
                p = entry / name
                if not p.is_file():
                    raise BuildError(f"{series}: patch '{name}' is listed but {p} does not exist", patch=p)
                out.append(Patch(p, sha256_file(p), strip))
        elif entry.is_file():
            out.append(Patch(entry, sha256_file(entry)))
        else:
            raise BuildError(f"no such patch file or folder: {entry}", patch=entry)
    return out


# --- checking --------------------------------------------------------------------------------------

_DIFF_GIT = re.compile(r'^diff --git ("?a/.*?"?) ("?b/.*"?)$')


def _unquote(p: str) -> str:
    if p.startswith('"') and p.endswith('"'):
        p = p[1:-1].encode().decode("unicode_escape")
    return p


def touched_paths(text: str, strip: int = 1) -> list[str]:
    """Tree-relative paths a patch text reads or writes (in order, once each)."""
    found: list[str] = []

    def add(raw: str, strip_here: int) -> None:
        raw = _unquote(raw.strip().split("\t")[0])
        if raw == "/dev/null" or not raw:
            return
        if raw.startswith("/") and strip_here == 0:
            found.append(raw)  # absolute: refused by check_paths
            return
        parts = raw.split("/")
        rel = "/".join(parts[strip_here:]) if len(parts) > strip_here else raw
        if rel not in found:
            found.append(rel)

    for line in text.splitlines():
        m = _DIFF_GIT.match(line)
        if m:
            add(m.group(1), 1)
            add(m.group(2), 1)
        elif line.startswith(("--- ", "+++ ")):
            add(line[4:], strip)
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            add(line.split(" ", 2)[2], 0)
    return found


def bad_path(rel: str) -> str | None:
    """Why rel is not a path inside the tree, or None if it is."""
    if rel.startswith("/"):
        return "absolute path"
    parts = rel.split("/")
    if ".." in parts:
        return "'..' leaves the tree"
    if parts[0] == ".git":
        return "writes into .git"
    return None


def check_patch(patch: Patch) -> list[str]:
    """The paths patch touches; BuildError if one is outside the tree or the file holds no diff."""
    try:
        text = patch.path.read_text(errors="replace")
    except OSError as e:
        raise BuildError(f"cannot read patch {patch.path}: {e}", patch=patch.path) from None
    touched = touched_paths(text, patch.strip)
    if not touched:
        raise BuildError(f"patch {patch.path} contains no diff", patch=patch.path)
    for rel in touched:
        why = bad_path(rel)
        if why:
            raise BuildError(f"patch {patch.path} touches '{rel}' outside the tree ({why}); refused", patch=patch.path)
    return touched


def failing_hunk(text: str, path: str, line: int | None) -> list[str]:
    """The hunk of `path` starting at old line `line` (the first hunk of path if line is None): its header
    and up to 12 lines of body."""
    lines = text.splitlines()
    in_file = False
    for i, row in enumerate(lines):
        if row.startswith("diff --git ") or row.startswith("--- "):
            if row.startswith("diff --git "):
                in_file = f" b/{path}" in row or f" a/{path}" in row
            elif not in_file:
                in_file = row[4:].split("\t")[0].endswith("/" + path) or row[4:] == path
        m = re.match(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@", row)
        if in_file and m and (line is None or int(m.group(1)) == line):
            body = [row]
            for nxt in lines[i + 1 : i + 13]:
                if nxt.startswith(("@@", "diff --git ", "-- ")):
                    break
                body.append(nxt)
            return body
    return []


def explain_failure(patch: Patch, output: list[str]) -> tuple[str, list[str]]:
    """The one-line reason and the detail lines (git's errors, the failing hunk) for a failed apply."""
    text = patch.path.read_text(errors="replace")
    errors = [ln for ln in output if ln.startswith(("error:", "fatal:", "Patch failed", "warning:"))]
    for ln in output:
        m = re.match(r"^error: patch failed: (.+):(\d+)$", ln)
        if m:
            hunk = failing_hunk(text, m.group(1), int(m.group(2)))
            where = f"{m.group(1)}:{m.group(2)}"
            head = hunk[0] if hunk else ""
            return f"patch {patch.path} does not apply: first failing hunk {where} {head}".rstrip(), errors + hunk
        m = re.match(r"^error: (.+): (does not exist in index|No such file or directory|already exists in .*)$", ln)
        if m:
            hunk = failing_hunk(text, m.group(1), None)
            return f"patch {patch.path} does not apply: {m.group(1)}: {m.group(2)}", errors + hunk
    return f"patch {patch.path} does not apply", errors or output[-10:]


GIT_AM_ENV = {"GIT_COMMITTER_NAME": "farm", "GIT_COMMITTER_EMAIL": "farm@localhost", "GIT_COMMITTER_DATE": "@0 +0000"}

# --- applying --------------------------------------------------------------------------------------


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _restore(tree: Path, pristine: Path, rel: str) -> None:
    """Put tree/rel back to its pristine content as a new file (new inode, new mtime)."""
    dst = tree / rel
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    src = pristine / rel
    if src.is_file() and not src.is_symlink():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        shutil.copymode(src, dst)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)


def sync(
    tree: Path,
    pristine: Path,
    kind: str,
    base: str,
    patches: list[Patch],
    state_path: Path,
    runner: Runner,
    log,
    git_base: str | None = None,
) -> list[str]:
    """Bring the work tree to pristine + patches. Returns the tree-relative paths the series touches."""
    touched_by = [check_patch(p) for p in patches]  # refuse bad paths before changing anything
    want = {"base": base, "patches": [[str(p.path), p.sha256] for p in patches]}
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = None
    if state and state.get("base") == base and state.get("patches") == want["patches"] and state.get("done"):
        return sorted({rel for t in touched_by for rel in t})
    if kind == "git":
        return _sync_git(tree, git_base or "HEAD", patches, touched_by, want, state_path, runner, log)
    return _sync_plain(tree, pristine, patches, touched_by, want, state, state_path, runner, log)


def _sync_plain(tree, pristine, patches, touched_by, want, state, state_path, runner, log) -> list[str]:
    old_files: dict[str, dict] = (state or {}).get("files", {})
    before = {rel: info for rel, info in old_files.items()}
    all_touched = sorted(set(old_files) | {rel for t in touched_by for rel in t})
    state_path.write_text(json.dumps({"files": {r: old_files.get(r, {}) for r in all_touched}, "done": False}))
    for rel in old_files:
        _restore(tree, pristine, rel)
    env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}
    for patch, _touched in zip(patches, touched_by, strict=True):
        log(f"applying {patch.path.name}")
        rc, out = runner.run(
            ["git", "apply", f"-p{patch.strip}", "--whitespace=nowarn", str(patch.path)], cwd=tree, env=env
        )
        if rc != 0:
            for rel in all_touched:
                _restore(tree, pristine, rel)
            state_path.write_text(json.dumps({"files": {r: {} for r in all_touched}, "done": False}))
            message, lines = explain_failure(patch, out)
            raise BuildError(message, lines, patch=patch.path)
    files = {}
    new_touched = sorted({rel for t in touched_by for rel in t})
    for rel in new_touched:
        p = tree / rel
        sha = _sha(p)
        old = before.get(rel)
        if sha and old and old.get("sha") == sha and old.get("mtime_ns"):
            os.utime(p, ns=(old["mtime_ns"], old["mtime_ns"]))  # same content as last build: no rebuild
        mtime = p.stat().st_mtime_ns if sha else None
        files[rel] = {"sha": sha, "mtime_ns": mtime}
    state_path.write_text(json.dumps({**want, "files": files, "done": True}, indent=1))
    return new_touched


def _sync_git(tree, base, patches, touched_by, want, state_path, runner, log) -> list[str]:
    state_path.write_text(json.dumps({"done": False}))
    runner.run(["git", "am", "--abort"], cwd=tree, record=False)
    # the build dir lives in the tree (source.BUILD_SUBDIR): git clean must leave it
    for argv in (["git", "reset", "-q", "--hard", base], ["git", "clean", "-fdq", "-e", "/.farm-build"]):
        rc, out = runner.run(argv, cwd=tree)
        if rc != 0:
            raise BuildError(f"cannot reset the worktree {tree} to {base}", out[-10:])
    env = GIT_AM_ENV
    for patch in patches:
        log(f"applying {patch.path.name}")
        rc, out = runner.run(["git", "am", "-q", f"-p{patch.strip}", str(patch.path)], cwd=tree, env=env)
        if rc != 0:
            runner.run(["git", "am", "--abort"], cwd=tree, record=False)
            runner.run(["git", "reset", "-q", "--hard", base], cwd=tree, record=False)
            message, lines = explain_failure(patch, out)
            raise BuildError(message, lines, patch=patch.path)
    state_path.write_text(json.dumps({**want, "done": True}, indent=1))
    return sorted({rel for t in touched_by for rel in t})
