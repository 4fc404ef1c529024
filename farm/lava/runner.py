"""One LAVA job, followed from submission to its end: the console streamed into console.log and the farm's
own ConsoleState (the same crash rules as a local cell), the log kept for the outcome mapping.

A farm run that is interrupted cancels the jobs it submitted, so a lab is never left running them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..guest.image import READY_MARKER
from ..vm.console import MAX_CONSOLE_BYTES, ConsoleState
from .client import FINISHED, LavaClient
from .results import JobLog, JobTimes, Outcome, console_line, is_console, job_times, outcome

CANCEL_GRACE_SECONDS = 60.0  # how long a cancelled job may take to reach Finished before the farm gives up
# The job's state can say Finished before the worker's last log lines reach the server (seen in CI: a panic
# cell read without its panic line was an infrastructure error, then retried). LAVA's own last entry is its
# job result; after Finished the farm keeps reading the log until that entry is there, this long at most.
LOG_SETTLE_SECONDS = 30.0


@dataclass
class JobRun:
    job_id: int
    url: str
    job: dict  # the API's last answer about it
    log: JobLog
    console: ConsoleState
    outcome: Outcome
    times: JobTimes
    console_truncated: bool = False
    gave_up: str = ""  # set when the farm stopped following it (it was cancelled, or never finished)

    def record(self) -> dict:
        """What run.json keeps about the LAVA job of a cell."""
        return {"job_id": self.job_id, "url": self.url, "health": self.outcome.health,
                "error_type": self.outcome.error_type, "error_msg": self.outcome.error_msg,
                "device": self.job.get("actual_device"), **self.times.figures()}


class Follower:
    """Submits one definition and follows the job; `submitted` fires with the job id as soon as LAVA gives it."""

    def __init__(self, client: LavaClient, console_path: Path, poll: float = 1.0,
                 stop: threading.Event | None = None, on_state=lambda state: None):
        self.client = client
        self.console_path = console_path
        self.poll = poll
        self.stop = stop or threading.Event()
        self.on_state = on_state
        self.job_id: int | None = None

    def run(self, definition: str, run_timeout: float) -> JobRun:
        """run_timeout: how long the job may run once started (LAVA's own job timeout, plus a margin)."""
        job_id = self.client.submit(definition)
        self.job_id = job_id
        log = JobLog()
        console = ConsoleState(READY_MARKER)
        written = 0
        truncated = False
        cancelled_at: float | None = None
        started_at: float | None = None
        gave_up = ""
        last_state = ""
        settle_until: float | None = None
        with open(self.console_path, "wb") as out:
            try:
                while True:
                    job = self.client.job(job_id)
                    finished = job.get("state") == FINISHED
                    for entry in log.feed(self.client.logs(job_id, log.count)):
                        if not is_console(entry):
                            continue
                        line = console_line(entry) + "\n"
                        console.feed(line)
                        data = line.encode("utf-8", "replace")
                        if written < MAX_CONSOLE_BYTES:
                            out.write(data[: MAX_CONSOLE_BYTES - written])
                            written += len(data)
                            if written >= MAX_CONSOLE_BYTES:
                                out.write(b"\n[farm: console output truncated here]\n")
                                truncated = True
                    out.flush()
                    if job.get("state") != last_state:
                        last_state = str(job.get("state"))
                        self.on_state(last_state)
                    if finished and (log.job_result() or settle_until is not None and
                                     time.monotonic() > settle_until):
                        break
                    if finished:
                        settle_until = settle_until or time.monotonic() + LOG_SETTLE_SECONDS
                        time.sleep(min(self.poll, 0.5))
                        continue
                    now = time.monotonic()
                    if job.get("state") == "Running" and started_at is None:
                        started_at = now
                    if cancelled_at is None and (self.stop.is_set() or
                                                 (started_at is not None and now - started_at > run_timeout)):
                        gave_up = "interrupted" if self.stop.is_set() else \
                            f"the job did not finish within {run_timeout:.0f} s of starting"
                        self.client.cancel(job_id)
                        cancelled_at = now
                    if cancelled_at is not None and now - cancelled_at > CANCEL_GRACE_SECONDS:
                        gave_up += f"; still not finished {CANCEL_GRACE_SECONDS:.0f} s after it was cancelled"
                        break
                    if cancelled_at is None:
                        self.stop.wait(self.poll)  # a Ctrl-C wakes it at once
                    else:
                        time.sleep(self.poll)
            except BaseException:
                # Ctrl-C, or the farm failing while following: the lab must not keep running the job.
                if cancelled_at is None:
                    try:
                        self.client.cancel(job_id)
                    except Exception:  # noqa: BLE001 - the original error is the one to report
                        pass
                raise
        console.feed("\n")
        return JobRun(job_id, self.client.job_url(job_id), job, log, console, outcome(job, log),
                      job_times(job, log), truncated, gave_up)
