"""The LAVA backend: cells run as jobs of a LAVA lab (`farm run --lava URL`, or --pool lava:URL).

A LAVA job boots and tests in one go, so create() is lazy and run(argv) does it all: generate the job
definition (farm/lava/jobdef.py), submit it, follow it while its console streams into console.log and the
farm's own ConsoleState (the same crash rules as a local cell), then map what came back:
  - the test printed its exit status             -> a RunResult; the farm's KTAP parser and verdict judge it
  - the test action timed out (LAVATimeout)      -> a timed-out RunResult (TIMEOUT, as a local cell)
  - the job ended mid-test for another reason    -> a lost RunResult (ERROR, LAVA's error type and message)
  - the job ended before the test started        -> BootError (CRASH if the console shows a crash, else ERROR)
  - a user cancelled the job in LAVA             -> Cancelled: the cell stays PENDING, no verdict
LAVA itself retries nothing (failure_retry: 1 everywhere); the farm's retry policy applies as for local cells.

The kernel and initramfs are given to the lab as file:// URLs of the farm's cache: the lab's worker must see
the same paths (a lab on this machine, or FARM_CACHE shared at the same place).
"""

from __future__ import annotations

import shlex
import threading
from pathlib import Path

from ..errors import InfraError, InputError
from ..guest.image import file_digest
from ..lava import jobdef
from ..lava.client import LavaClient, read_token
from ..lava.jobdef import LavaCell
from ..lava.results import is_console
from ..lava.runner import Follower, JobRun
from .base import BootError, BootInfo, Cancelled, Diagnosis, Instance, MachineSpec, Pool, RunResult
from .console import ConsoleState, parse_filtered_features

DEVICE_TYPE = "qemu"
RUN_MARGIN_SECONDS = 60.0  # past LAVA's own job timeout, the farm cancels the job and stops following it


class LogConsole:
    """The console of a finished LAVA job, with the ConsoleWatcher calls the executor makes."""

    def __init__(self, state: ConsoleState, log_path: Path, truncated: bool = False):
        self.state = state
        self.log_path = log_path
        self.truncated = truncated

    def wait(self, predicate, timeout: float) -> bool:
        return bool(predicate(self.state))  # the job is over: nothing more will arrive

    def diagnosis(self) -> dict:
        first = self.state.first_crash()
        return {"panicked": self.state.panicked, "crashes": list(self.state.crashes[:20]), "first_crash": first,
                "console_truncated": self.truncated}

    def tail(self, max_bytes: int = 8192) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", "replace")


class LavaInstance(Instance):
    def __init__(self, pool: LavaPool, spec: MachineSpec, workdir: Path, boot_timeout: float):
        self.pool = pool
        self.spec = spec
        self.workdir = workdir
        self.boot_timeout = boot_timeout
        self.boot = BootInfo(command=[])
        self.console = LogConsole(ConsoleState(jobdef.PROMPT), workdir / "console.log")
        self.job_run: JobRun | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def copy(self, local: Path, remote: str) -> None:
        raise InfraError("a LAVA guest gets files only through its job's images")

    def run(self, argv: list[str], timeout: float) -> RunResult:
        cell = self.pool.lava_cell(self.spec, argv, timeout, self.boot_timeout)
        definition = jobdef.to_yaml(jobdef.definition(cell))
        (self.workdir / "lava-job.yaml").write_text(definition)
        follower = Follower(self.pool.client, self.workdir / "console.log", poll=self.pool.poll,
                            stop=self.pool.stopping)
        run_timeout = jobdef.definition(cell)["timeouts"]["job"]["seconds"] + RUN_MARGIN_SECONDS
        jr = follower.run(definition, run_timeout)
        self.job_run = jr
        self.console = LogConsole(jr.console, self.workdir / "console.log", jr.console_truncated)
        self._boot_info(jr)
        where = f"LAVA job {jr.job_id} ({jr.url})"
        o = jr.outcome
        if o.kind == "canceled" and not jr.gave_up:
            raise Cancelled(f"{where} was cancelled in LAVA: no verdict (--resume runs the cell again)")
        if jr.gave_up and o.kind != "ran":
            return RunResult(list(argv), None, o.output.stdout if o.output else "", "", 0.0,
                             lost=f"{where}: the farm cancelled it: {jr.gave_up}")
        if o.kind == "boot":
            state = jr.console
            raise BootError(f"{where} ended before the test: {o.lava_error}", console=self.console.tail(),
                            crashed=bool(state.crashes), command=self.boot.command, crashes=list(state.crashes))
        seconds = self._test_seconds(jr)
        if o.kind == "ran":
            return RunResult(list(argv), o.output.exit_status, o.output.stdout, "", seconds)
        if o.kind == "timeout":
            return RunResult(list(argv), None, o.output.stdout, "", float(timeout), timed_out=True)
        return RunResult(list(argv), None, o.output.stdout, "", seconds, lost=f"{where}: {o.lava_error}")

    def _boot_info(self, jr: JobRun) -> None:
        command = jr.log.boot_command()
        try:
            self.boot.command = shlex.split(command)
        except ValueError:
            self.boot.command = command.split()
        text = jr.log.console_text()
        self.boot.filtered_features = parse_filtered_features(text)
        warnings = [ln for ln in text.splitlines() if ln.startswith("qemu-system-")]
        self.boot.qemu_warnings = warnings[:50]
        (self.workdir / "qemu.log").write_text("".join(ln + "\n" for ln in warnings))
        self.boot.lab_job = jr.record()
        ready = _entry_time(jr, lambda line: line.strip() == "farm-init: ready")
        first = jr.log.first_console_time()
        if ready and first:
            self.boot.seconds_to_marker = round((ready - first).total_seconds(), 3)

    def _test_seconds(self, jr: JobRun) -> float:
        begin = _entry_time(jr, lambda line: line.strip() == jobdef.BEGIN_MARKER)
        end = _entry_time(jr, lambda line: bool(jobdef.END_RE.match(line.strip())))
        return round((end - begin).total_seconds(), 3) if begin and end else 0.0

    def diagnose(self) -> Diagnosis:
        d = self.console.diagnosis()
        return Diagnosis(running=False, panicked=d["panicked"], crashes=d["crashes"], first_crash=d["first_crash"],
                         console_truncated=d["console_truncated"], host=self.pool.name)

    def close(self) -> None:
        pass  # the job is over when run() returns; an interrupted one was cancelled by the follower


def _entry_time(jr: JobRun, match):
    from ..lava.results import parse_time

    for e in jr.log.entries:
        if is_console(e) and isinstance(e.get("msg"), str) and match(e["msg"].rstrip("\r")):
            return parse_time(e.get("dt"))
    return None


class LavaPool(Pool):
    """One LAVA lab: its devices of type qemu are the pool's slots."""

    def __init__(self, client: LavaClient, accel: str, slots: int, devices: list[str], version: str,
                 poll: float = 1.0):
        self.client = client
        self.name = f"lava@{client.base.split('://', 1)[1]}"
        self.accel = accel
        self.slots = slots
        self.devices = devices
        self.version = version
        self.poll = poll
        self.stopping = threading.Event()
        self._digests: dict[Path, str] = {}
        self._lock = threading.Lock()

    def lava_cell(self, spec: MachineSpec, argv: list[str], timeout: float, boot_timeout: float) -> LavaCell:
        return LavaCell(
            name=spec.name or "farm", kernel_url=jobdef.file_url(spec.kernel), initrd_url=jobdef.file_url(spec.initrd),
            kernel_sha256=self._digest(spec.kernel), initrd_sha256=self._digest(spec.initrd),
            cmdline=spec.cmdline, cpu=spec.cpu, accel=spec.accel, argv=tuple(argv), boot_timeout=boot_timeout,
            test_timeout=timeout, memory_mb=spec.memory_mb, smp=spec.smp, tcg_thread=spec.tcg_thread,
            device_type=DEVICE_TYPE,
            metadata={"cell": spec.name, "cpu": spec.cpu, "accel": spec.accel},
        )

    def _digest(self, path: Path) -> str:
        with self._lock:
            if path not in self._digests:
                self._digests[path] = file_digest(path)
            return self._digests[path]

    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> LavaInstance:
        if self.stopping.is_set():
            raise InfraError("interrupted")
        return LavaInstance(self, spec, workdir, boot_timeout)

    def shutdown(self) -> None:
        self.stopping.set()  # each follower cancels its job and returns

    def describe(self) -> dict:
        return {"kind": "lava", "url": self.client.base, "version": self.version, "device_type": DEVICE_TYPE,
                "devices": self.devices, "slots": self.slots, "accel": self.accel}

    def qemu_version(self) -> str:
        return ""


def pools(options) -> list[LavaPool]:
    """The registry's entry: `options.arg` is the lab's URL; the token comes from options.token_file or
    $FARM_LAVA_TOKEN. The lab is asked once, before any cell, whether the token works and which qemu
    devices it has: a bad token or URL is bad input (exit 2), a lab that does not answer exit 3."""
    client = LavaClient(options.arg, read_token(getattr(options, "token_file", None)))
    version = client.version()
    if not client.whoami():
        raise InputError(f"--lava {client.base}: the token from {client.token.source} is not accepted "
                         "(LAVA answers as an anonymous user)")
    if client.device_type(DEVICE_TYPE) is None:
        raise InputError(f"--lava {client.base}: the lab has no device type '{DEVICE_TYPE}'")
    devices = [d["hostname"] for d in client.devices(DEVICE_TYPE) if d.get("health") not in ("Retired", "Bad")]
    if not devices:
        raise InputError(f"--lava {client.base}: no usable device of type '{DEVICE_TYPE}' "
                         "(all are retired or bad)")
    # The lab's workers run QEMU as the job says: TCG unless --accel kvm asks for KVM there.
    accel = "kvm" if options.accel == "kvm" else "tcg"
    options.note(f"LAVA {version} at {client.base}: {len(devices)} {DEVICE_TYPE} device(s), {accel}")
    return [LavaPool(client, accel, len(devices), devices, version)]

