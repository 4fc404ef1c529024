"""KTAP / TAP 13 parsing: test output into cases, plus the key=value facts a probe prints.

Lenient like kunit_tool's parser: lines that are not KTAP are kept as diagnostics, a missing plan or
missing cases (a test that died half-way) are reported, not fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .results.run import Case, Status

_RESULT = re.compile(r"^\s*(?P<ok>ok|not ok)\s+(?P<num>\d+)\s*(?:-\s*)?(?P<name>[^#]*?)\s*(?:#\s*(?P<directive>.*))?$")
_PLAN = re.compile(r"^\s*1\.\.(?P<n>\d+)")
_VERSION = re.compile(r"^\s*(KTAP|TAP) version (\d+)")
_FACT = re.compile(r"^(?P<key>[a-z][a-z0-9_]*)=(?P<value>.*)$")

PASS, FAIL, SKIP, ERROR = Status.PASS, Status.FAIL, Status.SKIP, Status.ERROR
XFAIL, XPASS = Status.XFAIL, Status.XPASS


@dataclass
class KtapResult:
    seen_header: bool = False
    plan: int | None = None
    cases: list[Case] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # a missing plan, missing cases, bad numbering

    @property
    def status(self) -> Status:
        """The test's overall status from its cases: any FAIL fails; all SKIP skips; an incomplete plan errs
        (XFAIL and XPASS cases count as passes: the known failure is named, not hidden)."""
        if any(c.status == FAIL for c in self.cases):
            return FAIL
        if self.problems or not self.cases:
            return ERROR
        if all(c.status == SKIP for c in self.cases):
            return SKIP
        return PASS

    def counts(self) -> dict[Status, int]:
        out = {PASS: 0, FAIL: 0, SKIP: 0}  # XFAIL and XPASS only when there are some
        for c in self.cases:
            out[c.status] = out.get(c.status, 0) + 1
        return out


def parse(text: str) -> KtapResult:
    result = KtapResult()
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if _VERSION.match(line):
            result.seen_header = True
            continue
        m = _PLAN.match(line)
        if m and result.plan is None:
            result.plan = int(m.group("n"))
            continue
        m = _RESULT.match(line)
        if m and not line.startswith((" ", "\t")):  # indented lines are subtests; the parent line sums them
            directive = (m.group("directive") or "").strip()
            status = PASS if m.group("ok") == "ok" else FAIL
            reason = ""
            if directive.upper().startswith("SKIP"):
                status, reason = SKIP, directive[4:].strip()
            elif directive.upper().startswith("XFAIL"):  # kselftest's ksft_test_result_xfail
                status, reason = XFAIL, directive[5:].strip()
            elif directive.upper().startswith("XPASS"):  # ksft_test_result_xpass: known to fail, passed
                status, reason = XPASS, directive[5:].strip()
            elif directive.upper().startswith("TODO"):
                reason = directive
            result.cases.append(Case(int(m.group("num")), m.group("name").strip() or f"case{m.group('num')}",
                                     status, reason, pending))
            pending = []
            continue
        if line.lstrip().startswith("#"):
            pending.append(line.lstrip()[1:].strip())
            continue
        m = _FACT.match(line)
        if m:
            result.facts[m.group("key")] = m.group("value")
    if not result.seen_header and result.cases:
        result.problems.append("no 'TAP version' / 'KTAP version' header")
    if result.plan is None:
        if result.cases or result.seen_header:
            result.problems.append("no plan line (1..N)")
    elif len(result.cases) < result.plan:
        result.problems.append(f"plan says {result.plan} cases, output has {len(result.cases)}: the test stopped early")
    elif len(result.cases) > result.plan:
        result.problems.append(f"plan says {result.plan} cases, output has {len(result.cases)}")
    return result
