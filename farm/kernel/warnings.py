"""Compiler and linker diagnostics pulled out of a kbuild log.

Each diagnostic is attributed to the kbuild step whose output it is part of (`  CC      kernel/fork.o`);
make runs with --output-sync=target so a step's quiet line and its diagnostics stay together under -j.
A persistent build dir rebuilds only some objects, so the build dir keeps a table step -> diagnostics: the
steps that ran this time replace their rows, the others keep theirs, and the union is the build's full list
(as a clean build would report it; ccache replays the warnings of cached compiles).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

QUIET = re.compile(r"^  ([A-Z][A-Z0-9_-]*)(?: \[M\])?\s+(\S+)$")
DIAG = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d+):(?:(?P<col>\d+):)? "
    r"(?P<kind>warning|error|fatal error): (?P<msg>.*)$"
)
TOOL_DIAG = re.compile(r"^(?P<file>[^\s:]+): (?P<kind>warning|error): (?P<msg>.*)$")
MAKE_ERROR = re.compile(r"^make(\[\d+\])?: \*\*\* ")
LINK_ERROR = re.compile(r"(undefined reference to|multiple definition of|ld: .*error)")


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def clean(text: str) -> str:
    """A message without colour codes and with ASCII quotes (gcc's depend on the locale)."""
    return ANSI.sub("", text).translate(QUOTES)


def normalize(file: str, tree: Path, build_dir: Path) -> str:
    """A diagnostic's file as a path relative to the source tree (or 'O/...' for a generated file)."""
    p = Path(os.path.normpath(file if os.path.isabs(file) else build_dir / file))
    for root, prefix in ((build_dir, "O/"), (tree, "")):  # the build dir may sit inside the tree
        try:
            return prefix + str(p.relative_to(root))
        except ValueError:
            continue
    return file


def extract(lines: list[str], tree: Path | None = None, build_dir: Path | None = None) -> dict[str, list[dict]]:
    """step ('CC kernel/fork.o') -> its diagnostics, for every step in the log (steps without any get [])."""
    steps: dict[str, list[dict]] = {}
    current = "-"
    for line in lines:
        line = clean(line)
        m = QUIET.match(line)
        if m:
            current = f"{m.group(1)} {m.group(2)}"
            steps.setdefault(current, [])
            continue
        m = DIAG.match(line)
        if m:
            kind = "error" if "error" in m.group("kind") else "warning"
            file, lineno, col = m.group("file"), int(m.group("line")), m.group("col")
        else:
            m = TOOL_DIAG.match(line)
            if not m:
                continue
            kind, file, lineno, col = m.group("kind"), m.group("file"), None, None
        if tree is not None and build_dir is not None:
            file = normalize(file, tree, build_dir)
        diag = {
            "file": file,
            "line": lineno,
            "col": int(col) if col else None,
            "kind": kind,
            "message": m.group("msg"),
            "step": current,
        }
        steps.setdefault(current, []).append(diag)
    return steps


def error_lines(lines: list[str]) -> list[str]:
    """The lines that say why a build failed: compiler/linker errors, then make's own."""
    lines = [clean(ln) for ln in lines]
    errs = [ln for ln in lines if (DIAG.match(ln) or TOOL_DIAG.match(ln)) and " error: " in ln]
    errs += [ln for ln in lines if LINK_ERROR.search(ln) and ln not in errs]
    errs += [ln for ln in lines if MAKE_ERROR.match(ln)]
    return errs[:40]


def merge(table_path: Path, steps: dict[str, list[dict]], fresh: bool, build_dir: Path) -> list[dict]:
    """Update the build dir's step table with this build's steps; return every diagnostic, in step order.
    Rows of objects no longer in the build dir (a config change dropped them) are forgotten."""
    table: dict[str, list[dict]] = {}
    if not fresh:
        try:
            table = json.loads(table_path.read_text())
        except (OSError, ValueError):
            table = {}
    table.update(steps)
    table = {k: v for k, v in table.items() if v and (k in steps or _exists(build_dir, k))}
    tmp = table_path.with_name(table_path.name + ".tmp")
    tmp.write_text(json.dumps(table, sort_keys=True))
    os.replace(tmp, table_path)
    out: list[dict] = []
    seen = set()
    for step in sorted(table):
        for d in table[step]:
            sig = (d["file"], d["line"], d["col"], d["kind"], d["message"])
            if sig not in seen:
                seen.add(sig)
                out.append(d)
    return out


def _exists(build_dir: Path, step: str) -> bool:
    target = step.split(" ", 1)[-1]
    return (build_dir / target).exists()


def signature(d: dict) -> tuple[str, str, str]:
    """What makes two diagnostics 'the same' across a patch: file, kind and message (lines move)."""
    return (d["file"], d["kind"], clean(d["message"]))


def new_since(warnings: list[dict], baseline: list[dict]) -> list[dict]:
    known = {signature(d) for d in baseline}
    return [d for d in warnings if signature(d) not in known]
