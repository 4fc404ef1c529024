"""Small helpers shared by the report writers: guest-text cleaning, console tails, verdict lines.

atomic_write is farm.fsutil's, re-exported for the writers."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ..fsutil import atomic_write  # noqa: F401 - the writers' one atomic write
from ..results.run import FAILING, BuildRecord, Case, Cell, Run, Status

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


def tail_lines(path: Path, limit: int) -> tuple[int, list[str]] | None:
    """The last `limit` bytes of a file as lines, with the 1-based number of the first one in the file
    (crash records name console lines by number), or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            start = max(0, size - limit)
            f.seek(0)
            before = 0
            left = start
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                before += chunk.count(b"\n")
                left -= len(chunk)
            data = f.read()
    except OSError:
        return None
    lines = [ln.removesuffix("\r") for ln in data.decode("utf-8", "replace").split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    first = before + 1
    if start > 0 and not data.startswith(b"\n"):  # the first line is cut: show it from where it starts here
        lines[0] = "[...] " + lines[0] if lines else ""
    return first, lines


def derived_status(cases: list[Case]) -> Status:
    """What the cases alone say about the test (as the KTAP parser sums them)."""
    if any(k.status is Status.FAIL for k in cases):
        return Status.FAIL
    if cases and all(k.status is Status.SKIP for k in cases):
        return Status.SKIP
    return Status.PASS


def explained_by_cases(cell: Cell) -> bool:
    """True when the cell's status is just the sum of its cases (so the cases alone tell the story)."""
    return (bool(cell.cases) and cell.status in (Status.PASS, Status.FAIL, Status.SKIP)
            and derived_status(cell.cases) == cell.status)


def verdict(run: Run) -> tuple[str, str]:
    counts = run.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if any(counts[s] for s in FAILING):
        return "FAIL", summary
    if counts[Status.PENDING] or run.interrupted:
        return "INCOMPLETE", summary
    if counts[Status.ERROR]:
        return "ERROR", summary
    return "PASS", summary


def farm_command(run: Run, cell: Cell | None = None) -> str:
    """The `farm run` command line that runs this cell (or the whole job) again."""
    argv = ["farm", "run", "--job", run.job or run.job_file]
    if cell is not None:
        argv += ["--kernel", cell.kernel, "--cpu", cell.cpu, "--test", cell.test]
    accel = (cell.accel if cell is not None else "") or run.host.accel
    if accel in ("kvm", "tcg"):
        argv += ["--accel", accel]
    return shlex.join(argv)


def build_commands(build: BuildRecord | None) -> list[str]:
    """The shell commands that reproduce a kernel build (empty for prebuilt kernels)."""
    out = []
    for c in build.commands if build else []:
        if not c.get("argv"):
            continue
        env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted((c.get("env") or {}).items()))
        cwd = f"cd {shlex.quote(str(c['cwd']))} && " if c.get("cwd") else ""
        out.append(f"{cwd}{env + ' ' if env else ''}{shlex.join(str(a) for a in c['argv'])}")
    return out


def build_summary(build: BuildRecord | None) -> str:
    """One line about how a kernel was obtained: release, source, patches, build key."""
    return build.summary() if build else "no build metadata"


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
