"""The history database: every cell (and KTAP case) of every run, in SQLite, next to the runs.

    with History(results_dir / "history.sqlite") as h:
        h.record(run)                                  # idempotent per run_id (a re-render replaces it)
        h.line("xcr0", "Skylake-Server")               # the result over time, oldest first
        h.changes(run)                                 # new failures / fixed / flaky vs the job's previous run

A file that is not a farm history database is an InputError naming it, never a traceback.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..errors import InputError
from .run import FAILING, Crash, Run, Status

SCHEMA_VERSION = 1
FLAKY_WINDOW = 10  # runs of the same job looked at for flip-flopping results
WHOLE = ""  # the case name of a cell's own row

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    job      TEXT NOT NULL,
    started  TEXT NOT NULL,
    finished TEXT,
    recorded TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id  TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    kernel  TEXT NOT NULL,
    cpu     TEXT NOT NULL,
    test    TEXT NOT NULL,
    name    TEXT NOT NULL,   -- the KTAP case name; '' for the whole test
    status  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    PRIMARY KEY (run_id, kernel, cpu, test, name)
);
CREATE INDEX IF NOT EXISTS results_by_item ON results (test, cpu, kernel, name);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started);
CREATE TABLE IF NOT EXISTS durations (  -- seconds each cell took, for scheduling the longest first
    run_id  TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    kernel  TEXT NOT NULL,
    cpu     TEXT NOT NULL,
    test    TEXT NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (run_id, kernel, cpu, test)
);
CREATE TABLE IF NOT EXISTS crashes (  -- the crashes of each cell by fingerprint: "first seen in run X"
    run_id      TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    kernel      TEXT NOT NULL,
    cpu         TEXT NOT NULL,
    test        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    title       TEXT NOT NULL,
    PRIMARY KEY (run_id, kernel, cpu, test, fingerprint)
);
CREATE INDEX IF NOT EXISTS crashes_by_fingerprint ON crashes (fingerprint);
"""


@dataclass(frozen=True)
class Point:
    run_id: str
    started: str
    kernel: str
    cpu: str
    test: str
    case: str  # '' for the whole test
    status: str


@dataclass
class Change:
    kernel: str
    cpu: str
    test: str
    case: str
    before: str | None
    now: str
    line: str = ""  # the recent results, oldest first, one letter each (P F S C T K=FLAKY E)

    @property
    def name(self) -> str:
        return f"{self.test}.{self.case}" if self.case else self.test

    @property
    def where(self) -> str:
        return f"{self.kernel}/{self.cpu}/{self.name}"


@dataclass(frozen=True)
class CrashSeen:
    """Where a crash (by fingerprint) was first recorded, and in how many runs of any job since."""

    run_id: str
    started: str
    runs: int


@dataclass
class Changes:
    """What the history says about one run: against the job's previous run (new failures, fixed, flaky), the
    recent runs of the job cell by cell (the report's pass/fail strip), and where its crashes were first seen."""

    previous: str | None  # the run compared against: the job's last run before this one
    new_failures: list[Change] = field(default_factory=list)
    fixed: list[Change] = field(default_factory=list)
    flaky: list[Change] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)  # (run_id, started) of the recent runs, oldest first
    strips: dict[tuple[str, str, str], list[str | None]] = field(default_factory=dict)  # (kernel, cpu, test) ->
    # the whole test's status in each of `runs` (None: not in that run)
    crashes: dict[str, CrashSeen] = field(default_factory=dict)  # fingerprint -> first seen

    def mark(self, kernel: str, cpu: str, test: str, case: str = WHOLE) -> str:
        """'new failure', 'fixed', 'flaky' or '' for one item (used to mark the report's grid)."""
        return self._marks().get((kernel, cpu, test, case), "")

    def _marks(self) -> dict:
        if not hasattr(self, "_m"):
            m = {}
            for label, items in (("fixed", self.fixed), ("new failure", self.new_failures), ("flaky", self.flaky)):
                for c in items:
                    m[(c.kernel, c.cpu, c.test, c.case)] = label
                    m.setdefault((c.kernel, c.cpu, c.test, WHOLE), label)
            self._m = m
        return self._m


LETTER = {s.value: s.letter for s in Status}


def _items(run: Run):
    for c in run.cells:
        if not c.done:
            continue
        yield (run.run_id, c.kernel, c.cpu, c.test, WHOLE, str(c.status), c.reason)
        seen = set()
        for k in c.cases:
            name = k.name or f"case{k.number}"
            if name in seen or name == WHOLE:
                continue
            seen.add(name)
            yield (run.run_id, c.kernel, c.cpu, c.test, name, str(k.status), k.reason)


def crash_key(crash: Crash) -> str:
    """The crash's fingerprint, or, for a crash recorded without one (runs of schema 1), its kind and line
    with the numbers that differ between boots (addresses, PIDs, CPU numbers, timestamps) taken out."""
    if crash.fingerprint:
        return crash.fingerprint
    line = re.sub(r"^\[\s*\d+\.\d+\]\s*", "", crash.line)
    line = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-f]{8,16}\b|\d+", "N", line)
    return f"{crash.kind}:{line.strip()}"


def crash_title(crash: Crash) -> str:
    return crash.title or re.sub(r"^\[\s*\d+\.\d+\]\s*", "", crash.line).strip() or crash.kind


class History:
    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise InputError(f"{self.path}: no history database (it is written by `farm run` and `farm report`)")
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30)
        except sqlite3.Error as e:
            raise InputError(f"{self.path}: cannot open the history database: {e}") from None
        try:
            self._check_schema()
        except BaseException:
            self.db.close()
            raise

    def _check_schema(self) -> None:
        with self._guard():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version == 0 and not tables:
                self.db.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
            elif version != SCHEMA_VERSION or not {"runs", "results"} <= tables:
                raise InputError(f"{self.path}: not a farm history database (schema {version}, tables "
                                 f"{', '.join(sorted(tables)) or 'none'})")
            elif not {"durations", "crashes"} <= tables:  # added within schema 1: created in place
                self.db.executescript(_SCHEMA)
            self.db.execute("PRAGMA foreign_keys = ON")

    # --- plumbing ------------------------------------------------------------------------------

    def _guard(self):
        path = self.path

        class Guard:
            def __enter__(self):
                return self

            def __exit__(self, kind, exc, tb):
                if exc is not None and isinstance(exc, sqlite3.Error):
                    raise InputError(f"{path}: damaged or unreadable history database: {exc}") from None
                return False

        return Guard()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------------

    def record(self, run: Run) -> int:
        """Store every finished cell and case of a run; recording a run again replaces it. Returns rows stored."""
        rows = list(_items(run))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._guard(), self.db:
            self.db.execute("DELETE FROM results WHERE run_id = ?", (run.run_id,))
            self.db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                            (run.run_id, run.job or run.job_file, run.started or "", run.finished, now))
            self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("DELETE FROM durations WHERE run_id = ?", (run.run_id,))
            self.db.executemany("INSERT OR REPLACE INTO durations VALUES (?, ?, ?, ?, ?)",
                                [(run.run_id, c.kernel, c.cpu, c.test, float(c.timings["total"]))
                                 for c in run.cells if c.timings.get("total")])
            self.db.execute("DELETE FROM crashes WHERE run_id = ?", (run.run_id,))
            self.db.executemany("INSERT OR IGNORE INTO crashes VALUES (?, ?, ?, ?, ?, ?)",
                                [(run.run_id, c.kernel, c.cpu, c.test, crash_key(x), crash_title(x))
                                 for c in run.cells for x in c.crashes])
        return len(rows)

    def durations(self) -> dict[tuple[str, str, str], float]:
        """The latest known seconds per (kernel, cpu, test)."""
        q = ("SELECT d.kernel, d.cpu, d.test, d.seconds FROM durations d JOIN runs USING (run_id) "
             "ORDER BY runs.started, d.run_id")
        with self._guard():
            return {(k, c, t): secs for k, c, t, secs in self.db.execute(q)}

    # --- reading -------------------------------------------------------------------------------

    def runs(self, job: str | None = None) -> list[tuple[str, str, str]]:
        """(run_id, job, started) oldest first."""
        q = "SELECT run_id, job, started FROM runs"
        args: tuple = ()
        if job is not None:
            q, args = q + " WHERE job = ?", (job,)
        with self._guard():
            return self.db.execute(q + " ORDER BY started, run_id", args).fetchall()

    def line(self, test: str, cpu: str | None = None, kernel: str | None = None,
             case: str | None = None) -> list[Point]:
        """The results of a test (a case of it with `case`, else the whole test) over time, oldest first."""
        q = ("SELECT r.run_id, runs.started, r.kernel, r.cpu, r.test, r.name, r.status FROM results r "
             "JOIN runs USING (run_id) WHERE r.test = ? AND r.name = ?")
        args: list = [test, case or WHOLE]
        if cpu is not None:
            q += " AND r.cpu = ?"
            args.append(cpu)
        if kernel is not None:
            q += " AND r.kernel = ?"
            args.append(kernel)
        q += " ORDER BY runs.started, r.run_id, r.kernel, r.cpu"
        with self._guard():
            return [Point(*row) for row in self.db.execute(q, args)]

    def previous(self, run: Run) -> str | None:
        """The run of the same job recorded just before this one."""
        job = run.job or run.job_file
        with self._guard():
            row = self.db.execute(
                "SELECT run_id FROM runs WHERE job = ? AND run_id != ? AND (started < ? OR (started = ? AND "
                "run_id < ?)) ORDER BY started DESC, run_id DESC LIMIT 1",
                (job, run.run_id, run.started or "", run.started or "", run.run_id)).fetchone()
        return row[0] if row else None

    def changes(self, run: Run, window: int = FLAKY_WINDOW) -> Changes:
        """New failures and fixes against the job's previous run, and items flip-flopping over recent runs.

        Flaky: over the last `window` runs of the job (this one included) the item went back and forth between
        passing and failing, with a one-run blip (PASS FAIL PASS, FAIL PASS FAIL) or three flips or more, and
        it fails now or failed in the previous run. A flaky item is listed as flaky, not as a new failure or a
        fix. A clean break then a fix (PASS PASS FAIL FAIL PASS) is a fix. A FLAKY cell (failed, then passed
        on its retry) is flaky."""
        job = run.job or run.job_file
        prev = self.previous(run)
        out = Changes(prev, crashes=self.first_seen({crash_key(x) for c in run.cells for x in c.crashes}))
        if prev is None:
            out.runs = [(run.run_id, run.started or "")]
            return out
        with self._guard():
            recent_rows = self.db.execute(
                "SELECT run_id, started FROM runs WHERE job = ? AND (started < ? OR (started = ? AND run_id <= ?)) "
                "ORDER BY started DESC, run_id DESC LIMIT ?",
                (job, run.started or "", run.started or "", run.run_id, window)).fetchall()[::-1]
            recent = [r[0] for r in recent_rows]
            out.runs = [(r[0], r[1]) for r in recent_rows]
            if run.run_id not in recent:
                recent.append(run.run_id)
                out.runs.append((run.run_id, run.started or ""))
            index = {rid: i for i, rid in enumerate(recent)}
            marks = ",".join("?" * len(recent))
            series: dict[tuple, list[str]] = {}
            for rid, kernel, cpu, test, name, status in self.db.execute(
                    f"SELECT run_id, kernel, cpu, test, name, status FROM results WHERE run_id IN ({marks})",
                    recent):
                series.setdefault((kernel, cpu, test, name), [None] * len(recent))[index[rid]] = status
        cur_i, prev_i = index[run.run_id], index[prev]
        for key, statuses in sorted(series.items()):
            if key[3] == WHOLE:
                out.strips[key[:3]] = statuses
            now, before = statuses[cur_i], statuses[prev_i]
            if now is None:
                continue
            seen = [s == "PASS" for s in statuses if s in ("PASS", *FAILING)]  # True: passed, False: failed
            flips = sum(1 for x, y in zip(seen, seen[1:], strict=False) if x != y)
            blip = any(seen[i - 1] == seen[i + 1] != seen[i] for i in range(1, len(seen) - 1))
            change = Change(*key, before, now, "".join(LETTER.get(s, "?") if s else "." for s in statuses))
            if now == "FLAKY" or ((flips >= 3 or blip) and (now in FAILING or before in FAILING)):
                out.flaky.append(change)
            elif now in FAILING and before == "PASS":
                out.new_failures.append(change)
            elif now == "PASS" and before in FAILING:
                out.fixed.append(change)
        return out

    def first_seen(self, fingerprints: set[str]) -> dict[str, CrashSeen]:
        """For each crash fingerprint: the first run (of any job) that recorded it, and how many runs did."""
        out: dict[str, CrashSeen] = {}
        if not fingerprints:
            return out
        q = ("SELECT c.fingerprint, c.run_id, runs.started FROM crashes c JOIN runs USING (run_id) "
             "WHERE c.fingerprint = ? ORDER BY runs.started, c.run_id")
        with self._guard():
            for fp in sorted(fingerprints):
                rows = self.db.execute(q, (fp,)).fetchall()
                if rows:
                    out[fp] = CrashSeen(rows[0][1], rows[0][2], len({r[1] for r in rows}))
        return out


def open_history(path: Path | None) -> History | None:
    return History(path) if path is not None else None
