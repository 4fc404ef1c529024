"""junit.xml: one <testsuite> per cell (kernel/cpu/test), one <testcase> per KTAP case.

FAIL and FLAKY -> <failure>, SKIP -> <skipped>, CRASH/TIMEOUT/ERROR -> <error> (a crash carries its crash line);
a cell whose status is not the sum of its cases (a crash, a timeout, an incomplete plan, no cases at
all) gets one more testcase named after the test itself. Not run (PENDING) -> <skipped>. A console
excerpt goes into the suite's <system-out> for cells that did not pass. Everything is escaped and
characters XML cannot carry are shown as \\xNN.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..results.run import Cell, Run, Status
from .common import atomic_write, clean, explained_by_cases, quiet_gc, tail

EXCERPT = 8 << 10  # console bytes per non-passing cell


_NEEDS_TEXT = re.compile("[&<>\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_NEEDS_ATTR = re.compile("[&<>\"\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _t(text) -> str:
    """Element text: escaped, and characters XML 1.0 cannot carry shown as \\xNN."""
    text = str(text)
    if not _NEEDS_TEXT.search(text):
        return text
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@lru_cache(maxsize=1 << 16)
def _a(text) -> str:
    """A quoted attribute value (most values repeat: cached)."""
    text = str(text)
    if _NEEDS_ATTR.search(text):
        text = (clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
                .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))
    return f'"{text}"'


def _result(status: Status, message: str, body: str) -> str:
    kind = status.junit  # FLAKY is a failure: failed, then passed on its retry; the farm counts it as failing
    if kind == "failure":
        return f"<failure type={_a(status)} message={_a(message or 'failed')}>{_t(body)}</failure>"
    if kind == "skipped":
        return f"<skipped message={_a(message or ('not run' if status is Status.PENDING else 'skipped'))}/>"
    if kind == "error":
        return f"<error type={_a(status)} message={_a(message or status.lower())}>{_t(body)}</error>"
    return ""


def _suite(run: Run, cell: Cell, run_dir: Path | None) -> tuple[str, dict[str, int]]:
    classname = f"{cell.kernel}.{cell.cpu}.{cell.test}"
    cases = []
    n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

    def add(name: str, status: Status, message: str, body: str, seconds: float | None = None) -> None:
        n["tests"] += 1
        kind = status.junit
        if kind == "failure":
            n["failures"] += 1
        elif kind == "skipped":
            n["skipped"] += 1
        elif kind == "error":
            n["errors"] += 1
        t = f" time=\"{seconds:.3f}\"" if seconds is not None else ""
        inner = _result(status, message, body)
        cases.append(f"<testcase name={_a(name)} classname={_a(classname)}{t}"
                     + (f">{inner}</testcase>" if inner else "/>"))

    for k in cell.cases:
        add(k.name or f"case{k.number}", k.status, k.reason, "\n".join(k.diagnostics))
    if not explained_by_cases(cell):
        crash = "\n".join(x.line for x in cell.crashes)
        message = (cell.crashes[0].line if cell.crashes else "") or cell.reason
        add(cell.test, cell.status, message, crash or cell.reason, cell.timings.get("total"))
    props = {"kernel": cell.kernel, "cpu": cell.cpu, "cpu_qemu": cell.cpu_qemu, "accel": cell.accel,
             "test": cell.test, "status": cell.status, "stage": cell.stage, "attempts": cell.attempts,
             **{f"fact.{k}": v for k, v in cell.facts.items()}}
    if cell.filtered_features:
        props["filtered_features"] = ",".join(cell.filtered_features)
    if run.series is not None:  # the series under test (farm run --series): its trailers, on every suite
        s = run.series
        props.update({k: v for k, v in (("series.subject", s.subject), ("series.version", s.version),
                                        ("series.message_id", s.message_id), ("series.link", s.link),
                                        ("series.base_commit", s.base_commit)) if v})
    out = "".join(f"<property name={_a(k)} value={_a(v)}/>" for k, v in props.items())
    system_out = ""
    quiet = cell.status in (Status.PASS, Status.SKIP, Status.PENDING)
    if not quiet and run_dir is not None and "console" in cell.files:
        text = tail(run_dir / cell.files["console"], EXCERPT)
        if text is not None:
            system_out = f"<system-out>{_t(text)}</system-out>"
    if not system_out and cell.files:
        files = "\n".join(f"{k}: {v}" for k, v in cell.files.items())
        system_out = f"<system-out>{_t(files)}</system-out>"
    head = (f"<testsuite name={_a(cell.id)} tests=\"{n['tests']}\" failures=\"{n['failures']}\" "
            f"errors=\"{n['errors']}\" skipped=\"{n['skipped']}\" time=\"{cell.timings.get('total', 0.0):.3f}\" "
            f"hostname={_a(run.host.hostname)}>")
    return f"{head}<properties>{out}</properties>{''.join(cases)}{system_out}</testsuite>", n


def render(run: Run, run_dir: Path | None = None) -> str:
    suites = []
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for cell in run.cells:
        text, n = _suite(run, cell, run_dir)
        suites.append(text)
        for k in total:
            total[k] += n[k]
    head = (f"<testsuites name={_a('farm run ' + run.run_id)} tests=\"{total['tests']}\" "
            f"failures=\"{total['failures']}\" errors=\"{total['errors']}\" skipped=\"{total['skipped']}\">")
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + head + "\n" + "\n".join(suites) + "\n</testsuites>\n"


def write(run: Run, run_dir: Path) -> Path:
    with quiet_gc():
        return atomic_write(run_dir / "junit.xml", render(run, run_dir))
