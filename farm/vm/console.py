"""Watching a guest's serial console: readiness marker, crash lines, and QEMU's feature warnings."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import BinaryIO

from ..results.run import Crash

# What a kernel prints when something is wrong. A panic ends the guest; the others may leave it alive.
CRASH_PATTERNS = [
    ("panic", re.compile(r"Kernel panic - not syncing.*")),
    ("bug", re.compile(r"\bBUG: .*")),
    ("oops", re.compile(r"\bOops: .*")),
    ("gpf", re.compile(r"general protection fault.*")),
    # WARN() prints "WARNING: CPU: 0 PID: 1 at file:line"; "RETBleed: WARNING: ..." notices are not crashes.
    ("warning", re.compile(r"\bWARNING: (?:CPU: \d+ PID: \d+|at ).*")),
    ("calltrace", re.compile(r"Call Trace:")),
]
FATAL_KINDS = {"panic"}

# qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.07H:EBX.avx512f [bit 16]
_FEATURE_RE = re.compile(r"doesn't support requested feature: (?P<reg>\S+?)\.(?P<name>[\w.-]+) \[bit (?P<bit>\d+)\]")

# A guest flooding its console cannot fill the disk or memory: console.log keeps this much (FARM_CONSOLE_LIMIT).
MAX_CONSOLE_BYTES = int(os.environ.get("FARM_CONSOLE_LIMIT", 16 << 20))


def _strip_timestamp(line: str) -> str:
    return re.sub(r"^\[\s*\d+\.\d+\]\s*", "", line)


CrashLine = Crash  # kind, line, lineno: what the console scan finds


@dataclass
class ConsoleState:
    """Everything learned from a console stream; pure, so fixtures can be fed to it in tests."""

    marker: str
    ready: bool = False
    crashes: list[CrashLine] = field(default_factory=list)
    lines: int = 0
    _partial: str = ""

    def feed(self, text: str) -> list[CrashLine]:
        """Take more console text; return crash lines found in it."""
        found = []
        data = self._partial + text
        *complete, self._partial = data.split("\n")
        for raw in complete:
            self.lines += 1
            line = _strip_timestamp(raw.rstrip("\r"))
            if not self.ready and line.strip() == self.marker:
                self.ready = True
                continue
            for kind, pattern in CRASH_PATTERNS:
                m = pattern.search(line)
                if m:
                    crash = CrashLine(kind, line.strip(), self.lines)
                    self.crashes.append(crash)
                    found.append(crash)
                    break
        return found

    @property
    def panicked(self) -> bool:
        return any(c.kind in FATAL_KINDS for c in self.crashes)

    def first_crash(self) -> CrashLine | None:
        for kinds in (FATAL_KINDS, {"bug", "oops", "gpf"}, {"warning"}):
            for c in self.crashes:
                if c.kind in kinds:
                    return c
        return self.crashes[0] if self.crashes else None


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
