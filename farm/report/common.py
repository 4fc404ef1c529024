"""Small helpers shared by the report writers: atomic writes, guest-text cleaning, console tails."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from ..results.run import FAILING, Cell, Run

# C0 controls but tab/newline, DEL, C1 controls, lone surrogates and the XML non-characters: a guest may
# print any of them, and none may reach a terminal, a mail or an XML file raw.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_NON_ASCII = re.compile(r"[^\x20-\x7e]")


def _hex(m: re.Match) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def clean(text: str) -> str:
    """Text with control characters shown as \\xNN (tab and newline kept)."""
    return _CONTROL.sub(_hex, text)


def ascii_line(text: str) -> str:
    """One printable-ASCII line: for mail, where one character must be one column."""
    return _NON_ASCII.sub(_hex, text.replace("\t", " ").replace("\r", "").replace("\n", " "))


def atomic_write(path: Path, text: str) -> Path:
    """Write a file so that a reader sees the old or the new content, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def tail(path: Path, limit: int) -> str | None:
    """The last `limit` bytes of a file, decoded leniently, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return ("[... earlier output in the file ...]\n" if size > limit else "") + text


def derived_status(cases: list[dict]) -> str:
    """What the cases alone say about the test (as the KTAP parser sums them)."""
    if any(k.get("status") == "FAIL" for k in cases):
        return "FAIL"
    if cases and all(k.get("status") == "SKIP" for k in cases):
        return "SKIP"
    return "PASS"


def explained_by_cases(cell: Cell) -> bool:
    """True when the cell's status is just the sum of its cases (so the cases alone tell the story)."""
    return bool(cell.cases) and cell.status in ("PASS", "FAIL", "SKIP") and derived_status(cell.cases) == cell.status


def verdict(run: Run) -> tuple[str, str]:
    counts = run.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if any(counts[s] for s in FAILING):
        return "FAIL", summary
    if counts["PENDING"] or run.interrupted:
        return "INCOMPLETE", summary
    if counts["ERROR"]:
        return "ERROR", summary
    return "PASS", summary


def farm_command(run: Run, cell: Cell | None = None) -> str:
    """The `farm run` command line that runs this cell (or the whole job) again."""
    argv = ["farm", "run", "--job", run.job or run.job_file]
    if cell is not None:
        argv += ["--kernel", cell.kernel, "--cpu", cell.cpu, "--test", cell.test]
    accel = (cell.accel if cell is not None else "") or run.host.get("accel", "")
    if accel in ("kvm", "tcg"):
        argv += ["--accel", accel]
    return shlex.join(argv)


def build_commands(build: dict) -> list[str]:
    """The shell commands that reproduce a kernel build, from its metadata (empty for prebuilt kernels)."""
    out = []
    for c in build.get("commands") or []:
        if not isinstance(c, dict) or not c.get("argv"):
            continue
        env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted((c.get("env") or {}).items()))
        cwd = f"cd {shlex.quote(str(c['cwd']))} && " if c.get("cwd") else ""
        out.append(f"{cwd}{env + ' ' if env else ''}{shlex.join(str(a) for a in c['argv'])}")
    return out


def build_summary(build: dict) -> str:
    """One line about how a kernel was obtained: release, source, patches, build key."""
    if not build:
        return "no build metadata"
    if "prebuilt" in build:
        return f"prebuilt {build.get('release') or ''} ({build['prebuilt']})".replace("  ", " ")
    parts = []
    release = build.get("kernel_release") or build.get("kernel_version")
    if release:
        parts.append(str(release))
    src = build.get("source") or {}
    if isinstance(src, dict) and src.get("location"):
        commit = f"@{str(src['commit'])[:12]}" if src.get("commit") else ""
        parts.append(f"{src.get('kind', '')}:{src['location']}{commit}")
    patches = build.get("patches") or []
    if patches:
        parts.append(f"{len(patches)} patch(es)")
    if build.get("key"):
        parts.append(f"key {str(build['key'])[:12]}")
    if "cache_hit" in build:
        parts.append("cached" if build["cache_hit"] else "built")
    if build.get("compiler"):
        parts.append(str(build["compiler"]))
    if build.get("checkpatch"):
        from ..kernel.checkpatch import summary

        parts.append(summary(build["checkpatch"]))
    return ", ".join(parts) or "no build metadata"


class quiet_gc:
    """No cyclic garbage collection while rendering: reports allocate millions of small acyclic objects
    next to a big run record, and each full collection would walk all of them (halves the time at 10k cells)."""

    def __enter__(self):
        import gc

        self.was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        import gc

        if self.was:
            gc.enable()
        return False


def kernel_builds(run) -> dict[str, dict]:
    """Build metadata per kernel (kept once per kernel in run.kernels, not in every cell)."""
    return {k: info["build"] for k, info in run.kernels.items() if isinstance(info, dict) and info.get("build")}
