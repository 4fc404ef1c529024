"""Build progress: kbuild's quiet lines (`  CC      init/main.o`) counted against the expected total.

    tracker = Tracker("linux-6.1", expected_total(family, config), stats_log, emit)
    runner.run(make, on_line=tracker.line); tracker.finish()

The expected total is the object count of the last full build of the same family (source and config
recipe) in the kernel cache, else an estimate from the .config (ESTIMATE_PER_OPTION objects per `=y`
option: 1417 objects for 483 options, linux-6.1 tinyconfig + guest.config). A build seeded from an
earlier one has no meaningful total (make decides what is stale) and shows its count only. ccache hits
come from the build's own CCACHE_STATSLOG, read as it grows. make runs with --output-sync=target, so
kbuild's lines come a whole directory at a time; between bursts a ticker thread (start()) reads the
stats log every TICK seconds and counts the compiles it shows (done is the larger of the two counts), so
the bar moves while arch/x86/kernel builds. emit() gets a BuildStatus at most every EMIT_EVERY seconds,
and always once at the end (finished=True); the sinks (farm/progress.py) decide what to show.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# the kbuild steps that make an object: compile, assemble, link, archive
COUNTED = ("CC", "AS", "LD", "AR")
_STEP = re.compile(r"^  ([A-Z][A-Z0-9_]{1,11}) +(\S.*)$")
ESTIMATE_PER_OPTION = 2.9
EMIT_EVERY = 0.25
TICK = 1.0


@dataclass
class BuildStatus:
    kernel: str
    done: int  # objects made so far
    total: int | None  # expected objects, None when unknown (a seeded, incremental build)
    estimated: bool  # total is an estimate from the config, not a previous build
    hits: int  # ccache hits so far
    misses: int
    elapsed: float
    finished: bool = False
    last: str = ""  # the last object made (its path, as kbuild prints it)

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None until there is a rate or without a total."""
        if not self.total or self.done < 5 or self.finished:
            return None
        left = max(self.total - self.done, 0)
        return self.elapsed / self.done * left

    def text(self) -> str:
        """One plain line: `linux-6.1: 412/1383 objects (30%), ccache 400 hits, ETA 1m05s`."""
        if self.finished:
            return f"{self.kernel}: make done, {self.done} objects, ccache {self.hits} hits in {self.elapsed:.0f} s"
        if self.total:
            pct = min(100, 100 * self.done // self.total)
            head = f"{self.kernel}: {self.done}/{'~' if self.estimated else ''}{self.total} objects ({pct}%)"
        else:
            head = f"{self.kernel}: {self.done} objects (incremental)"
        eta = self.eta
        return head + f", ccache {self.hits} hits" + (f", ETA {fmt_seconds(eta)}" if eta is not None else "")


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def count_steps(lines) -> int:
    return sum(1 for ln in lines if (m := _STEP.match(ln)) and m.group(1) in COUNTED)


def estimate(config_text: str) -> int:
    return max(1, int(ESTIMATE_PER_OPTION * sum(1 for ln in config_text.splitlines() if ln.endswith("=y"))))


def expected_total(kernels_root: Path, family: str, config_path: Path) -> tuple[int | None, bool]:
    """(total, estimated): the newest full build's object count for family, else the config estimate."""
    best: tuple[str, int] | None = None
    for md_path in kernels_root.glob("*/metadata.json"):
        try:
            md = json.loads(md_path.read_text())
        except (OSError, ValueError):
            continue
        steps = md.get("kbuild_steps")
        if md.get("family") == family and not md.get("incremental") and isinstance(steps, int) and steps > 0:
            if best is None or md.get("built_at", "") > best[0]:
                best = (md.get("built_at", ""), steps)
    if best:
        return best[1], False
    try:
        return estimate(config_path.read_text()), True
    except OSError:
        return None, True


class Tracker:
    def __init__(
        self,
        kernel: str,
        total: int | None,
        estimated: bool,
        stats_log: Path | None,
        emit: Callable[[BuildStatus], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.kernel, self.total, self.estimated = kernel, total, estimated
        self.stats_log, self.emit, self.clock = stats_log, emit, clock
        self.t0 = clock()
        self.done = 0
        self.hits = self.misses = 0
        self.last = ""
        self.lines = 0  # kbuild lines counted
        self.compiles = 0  # compiles the ccache stats log shows
        self._offset = 0
        self._partial = ""
        self._emitted = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Tracker:
        """Tick between kbuild's bursts of lines (see the module doc); finish() stops it."""
        self._thread = threading.Thread(target=self._tick, name=f"build-progress-{self.kernel}", daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                self._read_ccache()
                self.done = max(self.lines, self.compiles)
                self._emitted = self.clock()
                st = self.status()
            self.emit(st)

    def _read_ccache(self) -> None:
        """Count the compiles CCACHE_STATSLOG gained since the last read (ccache appends a block each)."""
        if self.stats_log is None:
            return
        try:
            with open(self.stats_log) as f:
                f.seek(self._offset)
                chunk = f.read()
                self._offset = f.tell()
        except OSError:
            return
        text = self._partial + chunk
        blocks = text.split("# ")
        self._partial = blocks.pop() if not text.endswith("\n") else ""
        for block in blocks:
            ids = block.splitlines()[1:]
            if not ids:
                continue
            self.compiles += 1
            if "direct_cache_hit" in ids or "preprocessed_cache_hit" in ids:
                self.hits += 1
            elif "cache_miss" in ids:
                self.misses += 1

    def status(self, finished: bool = False) -> BuildStatus:
        return BuildStatus(self.kernel, self.done, self.total, self.estimated, self.hits, self.misses,
                           self.clock() - self.t0, finished, self.last)

    def line(self, text: str) -> None:
        m = _STEP.match(text)
        if not m or m.group(1) not in COUNTED:
            return
        with self._lock:
            self.lines += 1
            self.done = max(self.lines, self.compiles)
            self.last = m.group(2)
            now = self.clock()
            if now - self._emitted < EMIT_EVERY:
                return
            self._emitted = now
            self._read_ccache()
            self.done = max(self.lines, self.compiles)
            st = self.status()
        self.emit(st)

    def finish(self) -> BuildStatus:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._read_ccache()
            self.done = self.lines  # the count the next build's total is compared with
            st = self.status(finished=True)
        self.emit(st)
        return st
