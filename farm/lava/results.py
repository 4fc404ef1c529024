"""A LAVA job's log read back into what a local cell has: the console text, the test's stdout and exit
status, timings, and LAVA's outcome mapped onto the farm's (the farm judges the test, not LAVA).

The log is LAVA's YAML list, one entry a line: {dt, lvl, msg}. `target` entries are the device's console
(QEMU's stdout and stderr, as the worker read them), `results` entries are LAVA's own results; the last of
those, {definition: lava, case: job}, carries error_type and error_msg when the job is Incomplete.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import yaml

from .jobdef import BEGIN_MARKER, END_RE

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pyyaml built without libyaml
    _Loader = yaml.SafeLoader

COMPLETE, INCOMPLETE, CANCELED = "Complete", "Incomplete", "Canceled"


def parse_time(value) -> dt.datetime | None:
    """LAVA's timestamps: the log's "2026-12-01T23:29:39.660483" and the API's "...Z" (both UTC)."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).replace("Z", "+00:00")
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# The guest's console in a job log: "target" lines are read while an action waits on the connection;
# "feedback" lines are what LAVA drains from it between actions. When a failure pattern (the panic) matches,
# the action ends and the rest of the panic arrives as feedback (seen in CI: the panic line itself).
CONSOLE_LEVELS = ("target", "feedback")


def is_console(entry: dict) -> bool:
    return entry.get("lvl") in CONSOLE_LEVELS


@dataclass
class JobLog:
    """The entries of one job's log, fed in pieces as the API hands them out from entry `count` on.
    A last line without its newline is dropped: the next request, from `count`, sends it again whole."""

    entries: list[dict] = field(default_factory=list)

    def feed(self, text: str) -> list[dict]:
        complete = text[: text.rfind("\n") + 1]
        if not complete.strip():
            return []
        try:
            new = yaml.load(complete, Loader=_Loader) or []
        except yaml.YAMLError:
            # A line the YAML parser refuses (LAVA escapes everything, but a guest is untrusted): keep the
            # others, one at a time, and the bad one as console text so nothing the guest said is lost.
            new = []
            for line in complete.splitlines():
                try:
                    new += yaml.load(line, Loader=_Loader) or []
                except yaml.YAMLError:
                    new.append({"dt": None, "lvl": "target", "msg": line})
        new = [e if isinstance(e, dict) else {"dt": None, "lvl": "target", "msg": str(e)} for e in new]
        self.entries += new
        return new

    @property
    def count(self) -> int:
        """How many entries were read: the `start` of the next request."""
        return len(self.entries)

    def console_lines(self) -> list[str]:
        return [console_line(e) for e in self.entries if is_console(e)]

    def console_text(self) -> str:
        lines = self.console_lines()
        return "\n".join(lines) + "\n" if lines else ""

    def first_console_time(self) -> dt.datetime | None:
        for e in self.entries:
            if is_console(e) and e.get("dt"):
                return parse_time(e["dt"])
        return None

    def job_result(self) -> dict:
        """LAVA's own verdict on the job: {result, error_type, error_msg} (empty until the job ends)."""
        for e in reversed(self.entries):
            msg = e.get("msg")
            if e.get("lvl") == "results" and isinstance(msg, dict) and msg.get("definition") == "lava" \
                    and msg.get("case") == "job":
                return msg
        return {}

    def boot_command(self) -> str:
        for e in self.entries:
            msg = e.get("msg")
            if e.get("lvl") == "info" and isinstance(msg, str) and msg.startswith("Boot command: "):
                return msg.removeprefix("Boot command: ")
        return ""


def console_line(entry: dict) -> str:
    msg = entry.get("msg")
    return (msg if isinstance(msg, str) else str(msg)).rstrip("\r")


@dataclass
class CommandOutput:
    began: bool  # the begin marker was seen: the command ran in the guest
    stdout: str
    exit_status: int | None  # None: the end marker never came


def command_output(console_lines: list[str]) -> CommandOutput:
    """The test's stdout: the console lines between the markers the console command prints."""
    out: list[str] = []
    began = False
    for line in console_lines:
        text = line.strip()
        if not began:
            began = text == BEGIN_MARKER
            continue
        m = END_RE.match(text)
        if m:
            return CommandOutput(True, "\n".join(out) + "\n" if out else "", int(m.group("status")))
        out.append(line)
    return CommandOutput(began, "\n".join(out) + "\n" if out else "", None)


@dataclass
class Outcome:
    """What a finished LAVA job means for the cell, before the farm's own console scan has its say."""

    kind: str  # "ran" (the test's exit status is known), "timeout", "lost" (mid-test), "boot", "canceled"
    health: str  # LAVA's: Complete, Incomplete, Canceled
    error_type: str = ""  # LAVA's error type and message of an Incomplete job
    error_msg: str = ""
    output: CommandOutput | None = None

    @property
    def lava_error(self) -> str:
        if not (self.error_type or self.error_msg):
            return self.health or "no health"
        return f"{self.health}: {self.error_type or '?'} error: {self.error_msg}"


def outcome(job: dict, log: JobLog) -> Outcome:
    """Map a finished job. LAVA's health alone is not the verdict: a test that printed its exit status ran
    (PASS or FAIL is the farm's to decide from its KTAP); a user's cancel is no verdict at all (PENDING);
    an Incomplete job is the infrastructure's, with LAVA's error type and message."""
    health = str(job.get("health", ""))
    result = log.job_result()
    error_type = str(result.get("error_type", "") or "")
    error_msg = str(result.get("error_msg", "") or job.get("failure_comment") or "")
    out = command_output(log.console_lines())
    if health == CANCELED or error_type == "Canceled":
        return Outcome("canceled", health, error_type, error_msg, out)
    if out.exit_status is not None:
        return Outcome("ran", health, error_type, error_msg, out)
    if out.began:
        # The test action (or the whole job) ran out of time: "lava-test-interactive timed out after 65
        # seconds" (error type Test), "job timed out" (LAVATimeout): the test's TIMEOUT, as a local cell's.
        kind = "timeout" if error_type == "LAVATimeout" or re.search(r"\btimed out\b", error_msg) else "lost"
        return Outcome(kind, health, error_type, error_msg, out)
    return Outcome("boot", health, error_type, error_msg, out)


@dataclass
class JobTimes:
    """Where a LAVA job's time went: in the lab's queue, starting QEMU on the worker, and in all."""

    submitted: dt.datetime | None
    started: dt.datetime | None
    first_console: dt.datetime | None
    ended: dt.datetime | None

    def figures(self) -> dict[str, float]:
        out = {}
        for name, a, b in (("lava_queue", self.submitted, self.started),
                           ("lava_start_to_console", self.started, self.first_console),
                           ("lava_job", self.started, self.ended)):
            if a and b:
                out[name] = round((b - a).total_seconds(), 3)
        return out


def job_times(job: dict, log: JobLog) -> JobTimes:
    return JobTimes(parse_time(job.get("submit_time")), parse_time(job.get("start_time")),
                    log.first_console_time(), parse_time(job.get("end_time")))
