"""How long a run has left: the cells still queued and running, each at its expected duration, over the slots.

A cell's expected duration is its own from the history database (the same kernel, CPU model and test in an
earlier run: the numbers the executor already orders cells by), else the mean of that test's cells finished
in this run, else that test's mean in the history, else the mean of every cell finished so far. A cell that
has run longer than expected counts as about to finish. Pure: the clock is passed in.
"""

from __future__ import annotations

import threading
from statistics import fmean

Key = tuple[str, str, str]  # (kernel, cpu, test)


class RunEta:
    def __init__(self, past: dict[Key, float], slots: int):
        self.past = past
        self.slots = max(1, slots)
        self.queued: dict[str, Key] = {}  # cell id -> key
        self.running: dict[str, tuple[Key, float]] = {}  # cell id -> (key, started at)
        self.done: dict[str, list[float]] = {}  # test -> durations of its cells finished in this run
        self.lock = threading.Lock()
        self._past_by_test: dict[str, list[float]] = {}
        for (_k, _c, test), secs in past.items():
            self._past_by_test.setdefault(test, []).append(secs)

    def queue(self, cell_id: str, key: Key) -> None:
        with self.lock:
            self.queued[cell_id] = key

    def begin(self, cell_id: str, key: Key, now: float) -> None:
        with self.lock:
            self.queued.pop(cell_id, None)
            self.running[cell_id] = (key, now)

    def end(self, cell_id: str, now: float, requeued: bool = False) -> None:
        with self.lock:
            key, started = self.running.pop(cell_id, (None, now))
            if key is None:
                return
            if requeued:
                self.queued[cell_id] = key
            else:
                self.done.setdefault(key[2], []).append(now - started)

    def expected(self, key: Key) -> float | None:
        if key in self.past:
            return self.past[key]
        if self.done.get(key[2]):
            return fmean(self.done[key[2]])
        if self._past_by_test.get(key[2]):
            return fmean(self._past_by_test[key[2]])
        finished = [s for secs in self.done.values() for s in secs]
        return fmean(finished) if finished else None

    def remaining(self, now: float) -> float | None:
        """Seconds until the last cell ends, or None while nothing is known to estimate from."""
        with self.lock:
            work = 0.0
            for key in self.queued.values():
                est = self.expected(key)
                if est is None:
                    return None
                work += est
            longest_running = 0.0
            for key, started in self.running.values():
                est = self.expected(key)
                if est is None:
                    return None
                left = max(est - (now - started), 1.0)
                work += left
                longest_running = max(longest_running, left)
            if not self.queued and not self.running:
                return 0.0
            return max(work / self.slots, longest_running)


def show(seconds: float | None) -> str:
    if seconds is None:
        return "ETA ?"
    seconds = int(round(seconds))
    return f"ETA {seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"ETA {seconds}s"
