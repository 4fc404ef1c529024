"""Progress of a run: a live rich table on a terminal, plain timestamped lines in CI or a pipe."""

from __future__ import annotations

import os
import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

DONE = ("PASS", "FAIL", "SKIP", "CRASH", "TIMEOUT", "ERROR", "FLAKY")


class Progress:
    """Plain lines: `[  12.3s] kernel/cpu/test: state`."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.total = 0
        self.finished = 0
        self.done_ids: set[str] = set()

    def _line(self, text: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self._line(text)

    def start(self, total: int) -> None:
        self.total = total
        self._line(f"{total} cells to run")

    def cell(self, cell, state: str) -> None:
        if cell.status in DONE and state.startswith(cell.status):
            self.done_ids.add(cell.id)
            self.finished = len(self.done_ids)
            self._line(f"{cell.id}: {state}  ({self.finished}/{self.total})")
        else:
            self._line(f"{cell.id}: {state}")

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

    def _table(self) -> Table:
        counts: dict[str, int] = {}
        for s in self.states.values():
            key = s.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        summary = "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        table = Table(title=f"farm  {time.monotonic() - self.t0:6.1f}s  {self.finished}/{self.total} done  {summary}")
        table.add_column("cell")
        table.add_column("state")
        for cid, state in self.states.items():
            style = {"PASS": "green", "SKIP": "yellow", "FAIL": "red", "CRASH": "bold red",
                     "TIMEOUT": "magenta", "ERROR": "red"}.get(state.split(":")[0], "cyan")
            table.add_row(cid, f"[{style}]{state[:100]}[/]")
        return table

    def note(self, text: str) -> None:
        if self.live:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def start(self, total: int) -> None:
        self.total = total
        self.live = Live(self._table(), console=self.console, refresh_per_second=4)
        self.live.start()

    def cell(self, cell, state: str) -> None:
        with self.lock:
            if cell.status in DONE and state.startswith(cell.status):
                self.done_ids.add(cell.id)
                self.finished = len(self.done_ids)
            self.states[cell.id] = state
            if self.live:
                self.live.update(self._table())

    def stop(self) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.stop()
            self.live = None


def make() -> Progress:
    if sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return LiveProgress()
    return Progress()
