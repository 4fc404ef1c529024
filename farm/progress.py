"""Progress of a run: a live rich table on a terminal, plain timestamped lines in CI or a pipe."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import eta
from .textsafe import one_line

BUILD_EVERY = 30.0  # plain output: at most one build progress line per kernel this often


class Progress:
    """Plain lines: `[  12.3s] kernel/cpu/test: state`."""

    def __init__(self, stream=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.clock = clock  # for the build lines' 30 s rule (tests inject one)
        self._build_last: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.lock = threading.RLock()  # LiveProgress renders under it, from rich's refresh thread too
        self.total = 0
        self.finished = 0
        self.done_ids: set[str] = set()
        self.eta: Callable[[], float | None] = lambda: None  # the executor's estimate of the run's time left

    def _line(self, text: str) -> None:
        with self.lock:  # a guest's text (a case name, a reason) never reaches the terminal raw
            print(f"[{time.monotonic() - self.t0:7.1f}s] {one_line(text)}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self._line(text)

    def start(self, total: int) -> None:
        self.total = total
        self._line(f"{total} cells to run")

    def cell(self, cell, state: str) -> None:
        if cell.status.done and state.startswith(cell.status):
            self.done_ids.add(cell.id)
            self.finished = len(self.done_ids)
            self._line(f"{cell.id}: {state}  ({self.finished}/{self.total}, {eta.show(self.eta())})")
        else:
            self._line(f"{cell.id}: {state}")

    def build(self, status) -> None:
        """A kernel build's progress (farm.kernel.progress.BuildStatus): the first status at once, then one
        line at most every BUILD_EVERY seconds; the end is the build's own 'built ...' note."""
        if status.finished:
            return
        now = self.clock()
        last = self._build_last.get(status.kernel)
        if last is None or now - last >= BUILD_EVERY:
            self._build_last[status.kernel] = now
            self._line(status.text())

    def stop(self) -> None:
        pass


class LiveProgress(Progress):
    """A rich table of cells and their state, redrawn in place."""

    def __init__(self):
        super().__init__()
        self.console = Console(stderr=True)
        self.states: dict[str, str] = {}
        self.live: Live | None = None
        self.notes: list[str] = []
        self.bars = None  # rich.progress.Progress while kernels build
        self.bar_tasks: dict[str, int] = {}

    def __rich__(self) -> Table:
        with self.lock:
            return self._table()

    def _table(self) -> Table:
        counts: dict[str, int] = {}
        for s in self.states.values():
            key = s.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        summary = "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        table = Table(title=f"farm  {time.monotonic() - self.t0:6.1f}s  {self.finished}/{self.total} done  "
                            f"{eta.show(self.eta())}  {summary}")
        table.add_column("cell")
        table.add_column("state")
        for cid, state in self.states.items():
            style = {"PASS": "green", "SKIP": "yellow", "FAIL": "red", "CRASH": "bold red",
                     "TIMEOUT": "magenta", "ERROR": "red"}.get(state.split(":")[0], "cyan")
            # Text, not markup: a case named "evil[/bold]" is shown as it is and cannot break the display
            table.add_row(Text(one_line(cid)), Text(one_line(state[:100]), style=style))
        return table

    def build(self, status) -> None:
        """A rich bar per kernel: objects done/total, ccache hits, ETA (the kernel that runs is the live one)."""
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as Bars

        with self.lock:
            if self.bars is None:
                self.bars = Bars(TextColumn("{task.description}", markup=False), BarColumn(),
                                 TextColumn("{task.fields[count]}", markup=False),
                                 TextColumn("{task.fields[extra]}", markup=False), console=self.console)
                self.bars.start()
            task = self.bar_tasks.get(status.kernel)
            if task is None:
                task = self.bars.add_task(one_line(status.kernel), total=status.total, count="", extra="")
                self.bar_tasks[status.kernel] = task
            if status.finished:
                count, extra = f"{status.done} objects", f"ccache {status.hits} hits, {status.elapsed:.0f} s"
                total = status.done
            else:
                total = status.total
                tilde = "~" if status.estimated else ""
                count = f"{status.done}/{tilde}{status.total}" if status.total else f"{status.done} (incremental)"
                eta = status.eta
                extra = f"ccache {status.hits} hits" + (f"  ETA {int(eta) // 60}:{int(eta) % 60:02d}" if eta else "")
            self.bars.update(task, completed=status.done, total=total, count=count, extra=extra)

    def _stop_bars(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
            self.bar_tasks = {}

    def note(self, text: str) -> None:
        text = one_line(text)
        if self.bars is not None:
            self.bars.console.print(text, markup=False, highlight=False)
        elif self.live:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def start(self, total: int) -> None:
        self.total = total
        self._stop_bars()  # the builds are over: one live display at a time
        self.live = Live(self, console=self.console, refresh_per_second=4)  # __rich__: the clock and ETA tick
        self.live.start()

    def cell(self, cell, state: str) -> None:
        with self.lock:
            if cell.status.done and state.startswith(cell.status):
                self.done_ids.add(cell.id)
                self.finished = len(self.done_ids)
            self.states[cell.id] = state
        if self.live:  # outside self.lock: rich's refresh thread takes Live's lock, then ours in __rich__
            self.live.refresh()

    def stop(self) -> None:
        self._stop_bars()
        if self.live:
            self.live.refresh()
            self.live.stop()
            self.live = None


def make() -> Progress:
    if sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return LiveProgress()
    return Progress()
