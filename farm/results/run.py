"""run.json: the one canonical record of a run. Every report is rendered from it and from nothing else.

Typed dataclasses, validated once, in load(); nothing downstream defends itself with .get or isinstance.
Schema 2. Runs written by schema 1 (before the typed record) are read too: load() converts them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pydantic

from ..errors import InputError
from ..fsutil import atomic_write
from .status import FAILING, Status

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
STATUSES = Status.cell_statuses()

__all__ = ["FAILING", "SCHEMA", "STATUSES", "BuildOutcome", "BuildRecord", "Case", "Cell", "Checkpatch", "Crash",
           "HostRecord", "KernelRecord", "PatchApplies", "Run", "SeriesRecord", "RunWriter", "Status", "from_dict",
           "load"]


@dataclass
class Case:
    """One KTAP result line of a test."""

    number: int
    name: str
    status: Status  # PASS, FAIL, SKIP (XFAIL/XPASS for known failures)
    reason: str = ""  # the SKIP/TODO/XFAIL reason
    diagnostics: list[str] = field(default_factory=list)  # '# ' lines printed before this result

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # "PASS" from code or a file becomes Status.PASS


@dataclass
class Crash:
    """A crash the console showed: a panic, an oops, a WARN splat, a reset..."""

    kind: str  # panic, bug, oops, gpf, warning, calltrace, reset, ...
    line: str  # the line that names it
    lineno: int = 0  # its line in console.log (1-based; 0 when unknown, e.g. runs of schema 1)
    title: str = ""  # a short name for grouping (e.g. "WARNING in xcr0_set_state")
    fingerprint: str = ""  # the same crash in other cells and runs has the same fingerprint
    frames: list[str] = field(default_factory=list)  # top stack frames, decoded to file:line when possible


@dataclass
class Checkpatch:
    """scripts/checkpatch.pl --strict on one patch of a series."""

    patch: str
    ok: bool
    errors: int | None = None  # None: checkpatch did not run to its summary line
    warnings: int | None = None
    checks: int | None = None
    problems: list[str] = field(default_factory=list)


def checkpatch_summary(results: list[Checkpatch]) -> str:
    if not results:
        return ""
    bad = [r for r in results if not r.ok]
    if not bad:
        return f"checkpatch --strict: all {len(results)} patch(es) clean"
    return (f"checkpatch --strict: {len(bad)} of {len(results)} patch(es) with problems: "
            + "; ".join(f"{r.patch} ({r.errors}E/{r.warnings}W/{r.checks}C)" for r in bad))


class BuildOutcome(StrEnum):
    BUILT = "built"
    CACHED = "cached"  # found in the kernel cache, no make ran
    PREBUILT = "prebuilt"  # someone else's kernel (Debian's), used as it is
    FAILED = "failed"  # the kernel does not build: a patch does not apply, a compile error (the series' fault)
    ERROR = "error"  # the build could not be done (infrastructure)

    @property
    def ok(self) -> bool:
        return self in (BuildOutcome.BUILT, BuildOutcome.CACHED, BuildOutcome.PREBUILT)


@dataclass
class BuildRecord:
    """How a kernel was obtained. `metadata` is the kernel cache's metadata.json (or, for a prebuilt kernel,
    its image and release), kept whole for the report's details; the fields above it are what every
    report reads."""

    outcome: BuildOutcome
    error: str = ""  # one line, when it did not build
    error_lines: list[str] = field(default_factory=list)
    log: str = ""  # build.log
    image: str = ""
    key: str = ""  # content key in the kernel cache
    release: str = ""  # kernel release (uname -r)
    version: str = ""  # make kernelversion
    compiler: str = ""
    source_kind: str = ""  # debian, git, dir ("" for prebuilt)
    source_location: str = ""
    source_digest: str = ""
    source_commit: str = ""
    patches: list[dict[str, Any]] = field(default_factory=list)  # {file, name, sha256, strip}
    commands: list[dict[str, Any]] = field(default_factory=list)  # {cwd, env, argv}: reproduce the build
    checkpatch: list[Checkpatch] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, metadata: dict, outcome: BuildOutcome, log: str = "") -> BuildRecord:
        """From a kernel cache entry's metadata.json (see farm.kernel.build)."""
        src = metadata.get("source") or {}
        return cls(outcome=outcome, log=log, image=str(metadata.get("image_path") or ""),
                   key=str(metadata.get("key") or ""),
                   release=str(metadata.get("kernel_release") or metadata.get("kernel_version") or ""),
                   version=str(metadata.get("kernel_version") or ""), compiler=str(metadata.get("compiler") or ""),
                   source_kind=str(src.get("kind") or ""), source_location=str(src.get("location") or ""),
                   source_digest=str(src.get("digest") or ""), source_commit=str(src.get("commit") or ""),
                   patches=list(metadata.get("patches") or []), commands=list(metadata.get("commands") or []),
                   metadata=dict(metadata))

    @property
    def cache_hit(self) -> bool:
        return self.outcome is BuildOutcome.CACHED

    @property
    def prebuilt(self) -> bool:
        return self.outcome is BuildOutcome.PREBUILT

    def summary(self) -> str:
        """One line: release, source, patches, build key, how it was obtained, compiler, checkpatch."""
        if self.prebuilt:
            return f"prebuilt {self.release} ({self.image})".replace("  ", " ")
        if not self.outcome.ok:
            return f"{self.outcome}: {self.error}" if self.error else str(self.outcome)
        parts = [self.release] if self.release else []
        if self.source_location:
            commit = f"@{self.source_commit[:12]}" if self.source_commit else ""
            parts.append(f"{self.source_kind}:{self.source_location}{commit}")
        if self.patches:
            parts.append(f"{len(self.patches)} patch(es)")
        if self.key:
            parts.append(f"key {self.key[:12]}")
        parts.append(str(self.outcome))
        if self.compiler:
            parts.append(self.compiler)
        if self.checkpatch:
            parts.append(checkpatch_summary(self.checkpatch))
        return ", ".join(parts)


@dataclass
class KernelRecord:
    description: str = ""
    baseline: str | None = None  # the kernel this one is compared against
    source: str = ""  # where it came from: a source location, or "prebuilt"
    patches: list[str] = field(default_factory=list)  # patch-series folders or mbox files
    provides: list[str] = field(default_factory=list)  # features it declares (FARM_PROVIDES in the guest)
    build: BuildRecord | None = None  # None until prepared


@dataclass
class PatchApplies:
    """Whether one patch of a series applies to one kernel (0-day's "cannot apply to")."""

    patch: str
    applies: bool
    detail: str = ""  # the first failing hunk, when it does not


@dataclass
class SeriesRecord:
    """A patch series as it arrived (an mbox, a folder of git format-patch files, `b4 am` output)."""

    subject: str = ""  # the cover letter's (or the only patch's) subject, "[PATCH v2 0/3] ..."
    version: int = 1
    message_id: str = ""  # of the cover letter (or first patch): what a reply answers
    link: str = ""  # lore link, when the series says
    author: str = ""  # the cover letter's From: ("Name <addr>"): whom a reply goes to
    cc: list[str] = field(default_factory=list)  # the cover letter's To: and Cc: addresses: a reply's Cc (reply-all)
    source: str = ""  # what was given to --series
    patches: list[dict[str, str]] = field(default_factory=list)  # {subject, message_id, file}
    base_commit: str = ""  # base-commit: from git format-patch --base
    base_used: str = ""  # what the tree was built from
    base_note: str = ""  # why base_used differs from base_commit, when it does
    applies: dict[str, list[PatchApplies]] = field(default_factory=dict)  # kernel -> one entry per patch


@dataclass
class HostRecord:
    """Where the run ran: the orchestrator, its accelerator decision and every pool of guests."""

    hostname: str = ""
    qemu: str = ""
    accel: str = ""
    accel_reason: str = ""
    cores: int = 0
    parallel: int = 0  # local guests at once
    shard: str = ""  # "I/N" when this run is one shard of a job
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # farm hosts and other pools: what each is
    shards: list[dict[str, Any]] = field(default_factory=list)  # a merged run: the runs it was made of


@dataclass
class Cell:
    id: str  # "kernel/cpu/test"
    kernel: str
    cpu: str
    test: str
    status: Status = Status.PENDING
    stage: str = ""  # where it ended: build, boot, test (or setup/farm for the farm's own errors)
    reason: str = ""  # one line saying why, for anything but PASS
    cpu_qemu: str = ""
    accel: str = ""
    qemu_command: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    filtered_features: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # what the model delivered (from the probe)
    cases: list[Case] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    exit_status: int | None = None
    attempts: int = 0
    host: str = ""  # which pool ran it ("local", a farm host's inventory name, ...)
    retried_from: list[str] = field(default_factory=list)  # hosts lost while running it
    kernel_image: str = ""
    initrd: str = ""  # the guest image it booted, and that image's pinned SSH host key (public):
    host_key: str = ""  # what `farm shell` needs to boot the cell's exact guest again
    booted: str = ""  # "booted" (a cold boot) or "restored" (from a booted-guest snapshot)
    snapshot: str = ""  # the snapshot a restored guest came from
    lab_jobs: list[dict[str, Any]] = field(default_factory=list)  # a lab's job per attempt (LAVA: job_id, url...)
    files: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def done(self) -> bool:
        return self.status.done


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
    host: HostRecord = field(default_factory=HostRecord)
    kernels: dict[str, KernelRecord] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    series: SeriesRecord | None = None  # the series under test, when it came in with --series
    phases: dict[str, float] = field(default_factory=dict)  # seconds: prepare (builds, images), execute (cells)
    schema: int = SCHEMA

    def counts(self) -> dict[Status, int]:
        out = dict.fromkeys(Status.cell_statuses(), 0)
        for c in self.cells:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def missing(self) -> list[Cell]:
        return [c for c in self.cells if not c.done]

    def exit_code(self) -> int:
        counts = self.counts()
        if any(counts[s] for s in FAILING):
            return 1
        if counts[Status.ERROR] or counts[Status.PENDING]:
            return 3
        return 0

    def builds(self) -> dict[str, BuildRecord]:
        """Build records per kernel (kept once per kernel, not in every cell)."""
        return {k: info.build for k, info in self.kernels.items() if info.build is not None}

    def to_json(self) -> str:
        return _RUN.dump_json(self, indent=1).decode()


_RUN = pydantic.TypeAdapter(Run)


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
            try:
                atomic_write(self.path, self.run.to_json())
                self.error = ""
            except OSError as e:
                self.error = f"cannot write {self.path}: {e.strerror}"


def load(path: Path) -> Run:
    """Read a run.json back (schema 1 or 2); a damaged file is an input error naming what is wrong."""
    if path.is_dir():
        path = path / "run.json"
    try:
        text = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    try:  # the common case, a run of this schema, parsed and validated in one pass
        run = _RUN.validate_json(text)
        if run.schema == SCHEMA:
            return run
    except (pydantic.ValidationError, ValueError):
        pass
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON: {e}") from None
    return from_dict(data, str(path))


def from_dict(data: Any, where: str = "run.json") -> Run:
    if not isinstance(data, dict) or data.get("schema") not in READABLE_SCHEMAS:
        raise InputError(f"{where}: not a farm run.json (schema {', '.join(map(str, READABLE_SCHEMAS))})")
    if data["schema"] == 1:
        data = _from_schema_1(data)
    try:
        return _RUN.validate_python(data)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise InputError(f"{where}: malformed run.json: {loc}: {first['msg']}{more}") from None
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: malformed run.json: {e}") from None


def _from_schema_1(data: dict) -> dict:
    """Schema 1 kept each kernel's build as the raw metadata dict, and told a kernel that does not build
    from one that could not be built only by the wording of its cells' reason; crashes had no line number."""
    data = dict(data, schema=SCHEMA)
    cells = data.get("cells")
    kernels = data.get("kernels")
    if not isinstance(cells, list) or not isinstance(kernels, dict):
        return data  # validation says what is wrong
    for name, info in kernels.items():
        if not isinstance(info, dict) or not isinstance(info.get("build"), dict):
            continue
        build = info["build"]
        if "prebuilt" in build:
            record = BuildRecord(BuildOutcome.PREBUILT, image=str(build["prebuilt"]),
                                 release=str(build.get("release") or ""), metadata=dict(build))
        elif build.get("image_sha256"):
            outcome = BuildOutcome.CACHED if build.get("cache_hit") else BuildOutcome.BUILT
            record = BuildRecord.from_metadata(build, outcome, log=str(build.get("log") or ""))
            record.checkpatch = [Checkpatch(**r) for r in build.get("checkpatch") or []]
        else:
            reasons = [c.get("reason", "") for c in cells if isinstance(c, dict) and c.get("kernel") == name
                       and c.get("stage") == "build"]
            failed = any("does not build" in r or "does not apply" in r for r in reasons)
            record = BuildRecord(BuildOutcome.FAILED if failed else BuildOutcome.ERROR,
                                 error=reasons[0] if reasons else "", log=str(build.get("log") or ""))
        info["build"] = _RECORD.dump_python(record)
    return data


_RECORD = pydantic.TypeAdapter(BuildRecord)
