"""Watching a guest's serial console: readiness marker, crash lines, and QEMU's feature warnings."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import BinaryIO

from .. import crash
from ..results.run import Crash

# What a kernel prints when something is wrong: farm/crash.py's catalogue. A panic ends the guest; the others
# may leave it alive.
FATAL_KINDS = {"panic"}
# which crash names a failure best (first_crash): a panic, then any named report, then a bare WARN or trace
_RANK = {"panic": 0, "warning": 2, "kmemleak": 2, "calltrace": 3}
# A panic that only says the oops before it was fatal: that oops names the failure.
_FATAL_ECHO = re.compile(r"Kernel panic - not syncing: (?:Fatal exception|Attempted to kill the idle task)")

# Bounds against a guest that floods its console: a line without a newline is cut at MAX_LINE characters
# (printk's own lines are < 1 KiB) and the rest dropped until one comes; at most MAX_CRASHES crashes are kept
# (a panic always), the others counted in ConsoleState.dropped.
MAX_LINE = 4096
MAX_CRASHES = 200

# qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.07H:EBX.avx512f [bit 16]
_FEATURE_RE = re.compile(r"doesn't support requested feature: (?P<reg>\S+?)\.(?P<name>[\w.-]+) \[bit (?P<bit>\d+)\]")

# A guest flooding its console cannot fill the disk or memory: console.log keeps this much (FARM_CONSOLE_LIMIT).
MAX_CONSOLE_BYTES = int(os.environ.get("FARM_CONSOLE_LIMIT", 16 << 20))


# a cheap test before the catalogue's regexes: every header has one of these words
_MAYBE = re.compile(r"BUG|WARNING|panic|Oops|UBSAN|corruption|refcount_t|unreferenced|kmemleak|INFO: |"
                    r"general protection|invalid opcode|Call Trace")


def _rank(c: CrashLine) -> float:
    """Lower names a failure better; within a kind, a title that says where ("... in f") first."""
    return _RANK.get(c.kind, 1) + (0 if " in " in c.title else 0.5)


def _strip_timestamp(line: str) -> str:
    return re.sub(r"^\[\s*\d+\.\d+\]\s*", "", line)


CrashLine = Crash  # kind, line, lineno: what the console scan finds


@dataclass
class ConsoleState:
    """Everything learned from a console stream; pure, so fixtures can be fed to it in tests. Time and memory
    are linear in the input: no line is kept longer than MAX_LINE, no more than MAX_CRASHES crashes."""

    marker: str
    ready: bool = False
    crashes: list[CrashLine] = field(default_factory=list)
    lines: int = 0
    dropped: int = 0  # crashes not kept (over MAX_CRASHES)
    _partial: str = ""
    _report: crash.Report | None = None
    _panicked: bool = False

    def feed(self, text: str) -> list[CrashLine]:
        """Take more console text; return crashes that start in it (their titles and frames fill in as
        their reports' lines arrive)."""
        found: list[CrashLine] = []
        start = 0
        while True:
            nl = text.find("\n", start)
            if nl < 0:
                room = MAX_LINE - len(self._partial)
                if room > 0:
                    self._partial += text[start:start + room]
                return found
            room = max(0, MAX_LINE - len(self._partial))
            raw = self._partial + text[start:min(nl, start + room)]
            self._partial = ""
            start = nl + 1
            self._line(raw, found)

    def _line(self, raw: str, found: list[CrashLine]) -> None:
        self.lines += 1
        line = _strip_timestamp(raw.rstrip("\r"))
        if not self.ready and line.strip() == self.marker:
            self.ready = True
            return
        hit = crash.match(line) if _MAYBE.search(line) else None
        report = self._report
        if report is not None and report.done:
            report = self._report = None
        if hit is None or crash.continues(hit[0], report):
            if report is not None:
                report.take(line)
            return
        pattern, groups = hit
        fatal = pattern.kind in FATAL_KINDS
        self._panicked = self._panicked or fatal
        if len(self.crashes) >= MAX_CRASHES and not fatal:
            self.dropped += 1
            self._report = None
            return
        c = CrashLine(pattern.kind, line.strip(), self.lines)
        self._report = crash.Report(c, pattern, groups)
        self._report.finish()
        self.crashes.append(c)
        found.append(c)

    @property
    def panicked(self) -> bool:
        return self._panicked

    def first_crash(self) -> CrashLine | None:
        """The crash that names the failure: a panic (or the report a "Fatal exception" panic ends on), then
        the first named report, then a WARN, a leak or a bare call trace."""
        if not self.crashes:
            return None
        best = min(self.crashes, key=_rank)
        if best.kind == "panic" and _FATAL_ECHO.match(best.line):
            before = [c for c in self.crashes if c.lineno < best.lineno and c.kind not in ("panic", "calltrace")]
            if before:
                return min(before, key=_rank)
        return best


def parse_filtered_features(qemu_stderr: str) -> list[str]:
    """The CPU features QEMU dropped from the model, from its 'doesn't support requested feature' warnings."""
    out = []
    for m in _FEATURE_RE.finditer(qemu_stderr):
        name = m.group("name")
        if name not in out:
            out.append(name)
    return out


class ConsoleWatcher:
    """Copies a console stream to a log file in a thread, and raises events for the waiting side."""

    def __init__(self, stream: BinaryIO, log_path, marker: str):
        self.state = ConsoleState(marker)
        self.log_path = log_path
        self.changed = threading.Condition()
        self.closed = False
        self.truncated = False
        self.write_error = ""  # why console.log is incomplete (e.g. no space left), if it is
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, name=f"console:{log_path}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        """Drain the stream until QEMU closes it. Writing may fail (a full disk); draining must not stop,
        or QEMU blocks on a full pipe and the guest hangs."""
        written = 0
        try:
            log = open(self.log_path, "wb")
        except OSError as e:
            log, self.write_error = None, str(e)
        while True:
            chunk = self._stream.read1(65536) if hasattr(self._stream, "read1") else self._stream.read(4096)
            if not chunk:
                break
            if log and written < MAX_CONSOLE_BYTES:
                try:
                    log.write(chunk[: MAX_CONSOLE_BYTES - written])
                    written += len(chunk)
                    if written >= MAX_CONSOLE_BYTES:
                        log.write(b"\n[farm: console output truncated here]\n")
                        self.truncated = True
                    log.flush()
                except OSError as e:
                    self.write_error = str(e)
                    written = MAX_CONSOLE_BYTES  # stop writing, keep draining
            with self.changed:
                self.state.feed(chunk.decode("utf-8", "replace"))
                self.changed.notify_all()
        if log:
            try:
                log.close()
            except OSError as e:
                self.write_error = str(e)
        with self.changed:
            self.state.feed("\n")
            self.closed = True
            self.changed.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.state) or self.closed, timeout)

    def diagnosis(self) -> dict:
        """What the console says about the guest's health: the console's part of every backend's
        Diagnosis (panicked, crashes, first_crash, console_truncated)."""
        with self.changed:
            return {
                "panicked": self.state.panicked,
                "crashes": list(self.state.crashes[:20]),
                "first_crash": self.state.first_crash(),
                "console_truncated": self.truncated,
            }

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def tail(self, max_bytes: int = 8192) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""
