"""The status of a cell or a case, and everything that depends on it, in one place.

A StrEnum: it is written to run.json as its name and compares equal to it ("PASS"), so run files of every
version read the same. Each status knows whether it is a verdict, whether it fails a run, and how JUnit,
KCIDB and the history line spell it.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    CRASH = "CRASH"  # the kernel panicked, oopsed, warned or reset itself: the kernel is at fault
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"  # infrastructure: no verdict about the kernel
    FLAKY = "FLAKY"  # failed, then passed on its retry: counts as failing
    XFAIL = "XFAIL"  # a case failed as the test's data says it is known to (with the reason)
    XPASS = "XPASS"  # a case known to fail passed: a change worth a look, not a failure
    PENDING = "PENDING"  # not run (yet): interrupted, cancelled, or queued

    @property
    def done(self) -> bool:
        """A verdict or a recorded infrastructure error; PENDING cells are run again by --resume."""
        return self is not Status.PENDING

    @property
    def failing(self) -> bool:
        """Fails the run (exit 1) and withholds Tested-by."""
        return self in _FAILING

    @property
    def unknown(self) -> bool:
        """No verdict about the kernel: an infrastructure error or not run."""
        return self in (Status.ERROR, Status.PENDING)

    @property
    def junit(self) -> str | None:
        """The JUnit result element: failure, skipped, error, or None for a pass."""
        return _JUNIT[self]

    @property
    def kcidb(self) -> str:
        """KCIDB v5 test status. CRASH and FLAKY are FAIL (the kernel is at fault; a coin toss proves
        nothing), TIMEOUT is ERROR, infrastructure errors and cells not run are MISS."""
        return _KCIDB[self]

    @property
    def letter(self) -> str:
        """One letter for a result over time (the history line)."""
        return _LETTER[self]

    @classmethod
    def cell_statuses(cls) -> tuple[Status, ...]:
        """What a whole cell can end as: every status (XFAIL/XPASS for a cell whose test data says how it is
        known to end under its accelerator)."""
        return tuple(cls)


_FAILING = frozenset({Status.FAIL, Status.CRASH, Status.TIMEOUT, Status.FLAKY})
_JUNIT = {Status.PASS: None, Status.XFAIL: None, Status.XPASS: None, Status.FAIL: "failure",
          Status.FLAKY: "failure", Status.SKIP: "skipped", Status.PENDING: "skipped", Status.CRASH: "error",
          Status.TIMEOUT: "error", Status.ERROR: "error"}
_KCIDB = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "SKIP", Status.CRASH: "FAIL",
          Status.TIMEOUT: "ERROR", Status.FLAKY: "FAIL", Status.ERROR: "MISS", Status.PENDING: "MISS",
          Status.XFAIL: "PASS", Status.XPASS: "PASS"}
_LETTER = {Status.PASS: "P", Status.FAIL: "F", Status.SKIP: "S", Status.CRASH: "C", Status.TIMEOUT: "T",
           Status.FLAKY: "K", Status.ERROR: "E", Status.PENDING: "-", Status.XFAIL: "x", Status.XPASS: "X"}

FAILING = tuple(s for s in Status if s.failing)
