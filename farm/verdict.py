"""Verdicts: pure functions from what happened in a guest to a cell's outcome, and the retry rules.

Nothing here boots, waits or writes: the executor hands in a test's RunResult and the guest's Diagnosis
(or the BootError that stopped it) and gets an Outcome; the scheduling-rule tests drive it with a fake pool.
Result formats are a table (FORMATS): the catalog validates each test's `format` against it, and a new
format is one entry plus its parser.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from . import ktap
from .results.run import Case, Crash, Status
from .vm.base import GUEST_STOPS, BootError, Diagnosis, RunResult

STAGE_BOOT, STAGE_TEST, STAGE_BUILD = "boot", "test", "build"


@dataclass
class Outcome:
    status: Status
    stage: str
    reason: str = ""
    cases: list[Case] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    crashes: list[Crash] = field(default_factory=list)
    exit_status: int | None = None

    @property
    def infra(self) -> bool:
        """The infrastructure failed, not the kernel: worth a retry on a fresh guest."""
        return self.status is Status.ERROR


@dataclass
class Parsed:
    """What a result format makes of a test's output alone."""

    status: Status
    reason: str = ""
    cases: list[Case] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


def _ktap(result: RunResult) -> Parsed:
    parsed = ktap.parse(result.stdout)
    status, reason = parsed.status, "; ".join(parsed.problems)
    if status is Status.ERROR:  # output that is not a complete KTAP report is the test's failure
        status, reason = Status.FAIL, reason or "no KTAP results in the output"
    elif status is Status.PASS and result.exit_status not in (0, None):
        status, reason = Status.FAIL, f"all cases passed but the test exited {result.exit_status}"
    failed = [c.name for c in parsed.cases if c.status is Status.FAIL]
    if failed:
        reason = f"failed: {', '.join(failed[:10])}" + (" ..." if len(failed) > 10 else "")
    return Parsed(status, reason, parsed.cases, parsed.facts)


def _exit_code(result: RunResult) -> Parsed:
    status = {0: Status.PASS, 4: Status.SKIP}.get(result.exit_status, Status.FAIL)
    parsed = ktap.parse(result.stdout)  # a probe may still print facts and cases: kept, not judged
    return Parsed(status, "" if status is Status.PASS else f"exit status {result.exit_status}",
                  parsed.cases, parsed.facts)


FORMATS: dict[str, Callable[[RunResult], Parsed]] = {
    "ktap": _ktap,  # KTAP / TAP 13 on stdout (kselftest, kunit, the farm's own tests)
    "exit-code": _exit_code,  # 0 pass, 4 skip (kselftest's KSFT_SKIP), anything else fail
}


def from_boot_error(error: BootError) -> Outcome:
    """A guest that never became usable: a crash if its kernel said so, else the infrastructure's."""
    if error.crashed:
        return Outcome(Status.CRASH, STAGE_BOOT, str(error), crashes=list(error.crashes))
    return Outcome(Status.ERROR, STAGE_BOOT, str(error), crashes=list(error.crashes))


def from_exception(error: BaseException, stage: str = STAGE_BOOT) -> Outcome:
    """Anything else that stopped an attempt is the infrastructure's (the cell's ERROR, never a traceback)."""
    from .errors import FarmError

    text = str(error) if isinstance(error, FarmError) else f"{type(error).__name__}: {error}"
    return Outcome(Status.ERROR, stage, text)


def from_run(fmt: str, result: RunResult, diag: Diagnosis, provided: set[str] | frozenset = frozenset()) -> Outcome:
    """A test that ran: the console outranks the output (a kernel that oopsed failed, whatever the test
    printed), then a timeout, then a lost connection (infrastructure), then the format's own verdict.
    `provided`: features the test checks that the kernel declares; skipping all of them is a failure (a
    series whose feature silently disappeared must not pass)."""
    parsed = FORMATS[fmt](result)
    out = Outcome(parsed.status, STAGE_TEST, parsed.reason, parsed.cases, parsed.facts, list(diag.crashes),
                  result.exit_status)
    if diag.crashes:
        first = diag.first_crash or diag.crashes[0]
        out.status, out.reason = Status.CRASH, first.line
    elif diag.stop_reason in GUEST_STOPS:  # the guest reset or panicked without a line on the console
        why = f"{GUEST_STOPS[diag.stop_reason]} during the test (QEMU: {diag.stop_reason})"
        out.status, out.reason = Status.CRASH, why
        out.crashes = [Crash("reset", out.reason)]
    elif result.timed_out:
        out.status, out.reason = Status.TIMEOUT, f"test did not finish within {result.seconds:.0f} s"
    elif result.lost:
        out.status, out.reason = Status.ERROR, result.lost
    elif provided and out.status is Status.SKIP:
        feature = ", ".join(sorted(provided))
        out.status, out.reason = Status.FAIL, f"the kernel provides {feature} but the test skipped it" + (
            f" ({out.cases[0].reason})" if out.cases and out.cases[0].reason else "")
    return out


def known(outcome: Outcome, expect, accel: str) -> Outcome:
    """A cell the test data says is known to end a certain way under this accelerator (catalog.Known):
    that end is XFAIL with the reason, a pass XPASS (a change worth a look), anything else stays as it is."""
    if expect is None:
        return outcome
    lines = [outcome.reason, *(c.line for c in outcome.crashes)]
    if outcome.status == expect.status and any(re.search(expect.match, x) for x in lines):
        return dataclasses.replace(outcome, status=Status.XFAIL,
                                   reason=f"known {expect.status} under {accel}: {expect.reason} ({outcome.reason})")
    if outcome.status is Status.PASS:
        return dataclasses.replace(outcome, status=Status.XPASS,
                                   reason=f"passed, but known to end {expect.status} under {accel}: {expect.reason}")
    return outcome


def _real_failure(o: Outcome) -> bool:
    return o.status in (Status.FAIL, Status.TIMEOUT)


def should_retry(attempts: list[Outcome], retries: int) -> bool:
    """After an attempt: is one more worth it? An infrastructure error is retried on a fresh guest; a FAIL or
    TIMEOUT once (to tell a flake from a failure); a crash never (it is never retried away)."""
    if len(attempts) > retries:
        return False
    last = attempts[-1]
    if last.infra:
        return True
    return _real_failure(last) and not any(_real_failure(o) for o in attempts[:-1])


def final(attempts: list[Outcome]) -> Outcome:
    """The cell's outcome from all its attempts: a failure then a pass is FLAKY (which fails the run); the
    first real verdict wins over a later infrastructure error."""
    last = attempts[-1]
    first_failure = next((o for i, o in enumerate(attempts[:-1]) if _real_failure(o)), None)
    if last.status is Status.PASS and first_failure is not None:
        n = attempts.index(first_failure) + 1
        return Outcome(Status.FLAKY, last.stage,
                       f"passed only on a retry; {first_failure.status} on attempt {n}: {first_failure.reason}",
                       last.cases, last.facts, last.crashes, last.exit_status)
    if last.infra:
        real = [o for o in attempts[:-1] if not o.infra]
        if real:
            return real[0]
    return last
