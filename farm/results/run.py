"""run.json: the one canonical record of a run. Every report is rendered from it and from nothing else."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError

SCHEMA = 1
STATUSES = ("PASS", "FAIL", "SKIP", "CRASH", "TIMEOUT", "ERROR", "FLAKY")
# FLAKY (failed, then passed on its retry) counts as failing: a patch is not proven by a coin toss.
FAILING = ("FAIL", "CRASH", "TIMEOUT", "FLAKY")


@dataclass
class Cell:
    id: str  # "kernel/cpu/test"
    kernel: str
    cpu: str
    test: str
    status: str = "PENDING"  # one of STATUSES once finished
    stage: str = ""  # where it ended: build, image, boot, test
    reason: str = ""  # one line saying why, for anything but PASS
    cpu_qemu: str = ""
    accel: str = ""
    qemu_command: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    filtered_features: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # what the model delivered (from the probe)
    cases: list[dict] = field(default_factory=list)
    crashes: list[dict] = field(default_factory=list)
    exit_status: int | None = None
    attempts: int = 0
    host: str = ""  # which farm host ran it ("local" or an inventory name)
    retried_from: list[str] = field(default_factory=list)  # hosts lost while running it
    kernel_image: str = ""
    files: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir

    @property
    def done(self) -> bool:
        return self.status in STATUSES


@dataclass
class Run:
    run_id: str
    job: str
    job_file: str
    started: str
    argv: list[str] = field(default_factory=list)
    finished: str | None = None
    interrupted: bool = False
    resumed: list[str] = field(default_factory=list)  # when --resume picked the run up again
    host: dict = field(default_factory=dict)
    kernels: dict[str, dict] = field(default_factory=dict)  # name -> description, source, patches, build
    cells: list[Cell] = field(default_factory=list)
    schema: int = SCHEMA

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (*STATUSES, "PENDING")}
        for c in self.cells:
            out[c.status if c.status in out else "PENDING"] += 1
        return out

    def missing(self) -> list[Cell]:
        return [c for c in self.cells if not c.done]

    def exit_code(self) -> int:
        counts = self.counts()
        if any(counts[s] for s in FAILING):
            return 1
        if counts["ERROR"] or counts["PENDING"]:
            return 3
        return 0

    def to_dict(self) -> dict:
        return asdict(self)


class RunWriter:
    """Writes run.json atomically after every change, so a killed run leaves what it finished."""

    def __init__(self, run: Run, path: Path):
        self.run = run
        self.path = path
        self.lock = threading.Lock()
        self.error = ""  # the last write's failure, if the last write failed

    def save(self) -> None:
        """Replace run.json whole. A failed write (disk full) keeps the last good file and is remembered,
        so the run carries on and ends as an infrastructure error instead of dying with a traceback."""
        with self.lock:
            data = json.dumps(self.run.to_dict(), indent=1, sort_keys=False)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(data)
                os.replace(tmp, self.path)
                self.error = ""
            except OSError as e:
                self.error = f"cannot write {self.path}: {e.strerror}"
                try:
                    tmp.unlink(missing_ok=True)
                except OSError:
                    pass


def load(path: Path) -> Run:
    """Read a run.json back; a damaged file is an input error naming what is wrong."""
    if path.is_dir():
        path = path / "run.json"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{path}: not a farm run.json (schema {SCHEMA})")
    try:
        cells = [Cell(**c) for c in data.pop("cells")]
        return Run(cells=cells, **data)
    except (TypeError, KeyError) as e:
        raise InputError(f"{path}: malformed run.json: {e}") from None
