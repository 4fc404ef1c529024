"""The VM interface: a pool makes instances; an instance is booted, copied to, run in, diagnosed, closed.

Backends (local QEMU, QEMU on farm hosts over SSH, a LAVA lab, the tests' scripted fake) implement this;
nothing above them knows which one ran a cell. farm/vm/registry.py names them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InfraError
from ..results.run import Crash
from .console import ConsoleWatcher


@dataclass(frozen=True)
class MachineSpec:
    """Everything needed to boot one guest."""

    kernel: Path
    initrd: Path
    cmdline: str
    cpu: str  # QEMU -cpu model
    accel: str  # "kvm" or "tcg"
    host_key: str  # the guest's SSH host key, pinned
    memory_mb: int = 512
    smp: int = 2
    tcg_thread: str = "single"  # under TCG: "single" (round-robin vCPUs) or "multi" (MTTCG); farm/vm/accel.py
    name: str = ""  # what the guest is for (the cell id): job names, logs
    snapshot: str = ""  # booted-guest snapshots on: the key of this machine's snapshot ("" = off)
    restore: bool = False  # start from that snapshot (if the pool has it) instead of booting


@dataclass
class RunResult:
    argv: list[str]
    exit_status: int | None  # None: killed by the timeout or lost with the connection
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    truncated: bool = False
    lost: str = ""  # why the command's end was never seen (connection dropped, guest died)


@dataclass
class BootInfo:
    command: list[str]  # the QEMU command line, as run (on the host that ran it)
    seconds_to_marker: float = 0.0
    seconds_to_ssh: float = 0.0
    filtered_features: list[str] = field(default_factory=list)
    qemu_warnings: list[str] = field(default_factory=list)
    restored_from: str = ""  # the snapshot this guest was restored from ("" when it booted)
    saved_snapshot: str = ""  # the snapshot this boot saved, when it made one
    seconds_saving: float = 0.0
    lab_job: dict = field(default_factory=dict)  # the lab's job that ran this guest (LAVA: id, url, health...)


# Why a machine stopped (QMP SHUTDOWN reasons), when the guest did it to itself: the kernel's fault, a CRASH.
GUEST_STOPS = {"guest-reset": "guest reset itself", "guest-panic": "guest kernel panicked (pvpanic)"}


@dataclass
class Diagnosis:
    """What is known about a guest now: from its console, and whether its machine still runs."""

    running: bool
    exit_status: int | None = None
    panicked: bool = False
    crashes: list[Crash] = field(default_factory=list)
    first_crash: Crash | None = None  # the one that names the failure best (a panic before a warning)
    console_truncated: bool = False
    host: str = "local"
    stop_reason: str = ""  # why the machine stopped, when it says (QMP SHUTDOWN: guest-reset, guest-panic...)


class BootError(InfraError):
    """The guest never became usable. Carries the console so the report can show why, and the command
    that really ran (on the host that ran it)."""

    def __init__(self, message: str, console: str = "", crashed: bool = False, command: list[str] | None = None,
                 crashes: list[Crash] | None = None):
        super().__init__(message)
        self.console = console
        self.crashed = crashed  # the kernel panicked, oopsed or reset itself: a CRASH result, not infrastructure
        self.command = list(command or [])
        self.crashes = list(crashes or [])


class Cancelled(InfraError):
    """Someone cancelled the guest's job in its lab (a LAVA user): no verdict, the cell stays PENDING."""


class HostLost(InfraError):
    """The machine that runs guests (a farm host) is gone: its cells go to another pool."""


class Instance(ABC):
    boot: BootInfo
    console: ConsoleWatcher  # every backend watches the guest's serial console

    def wait_for_crash(self, seconds: float) -> None:
        """Give a dying guest a moment to print its panic after a command was cut off."""
        self.console.wait(lambda s: s.panicked, seconds)

    @abstractmethod
    def copy(self, local: Path, remote: str) -> None: ...

    @abstractmethod
    def run(self, argv: list[str], timeout: float) -> RunResult:
        """Run argv in the guest. A backend that boots lazily (LAVA) may raise BootError here."""

    @abstractmethod
    def diagnose(self) -> Diagnosis: ...

    @abstractmethod
    def close(self) -> None: ...

    def detach(self) -> dict:
        """Leave the guest running after the farm lets go of it (--keep-failed): what reaching it takes
        (pid, qmp, port, host_key, client_key). Only pools with can_keep support it."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Pool(ABC):
    """Machines of one kind in one place: this host's QEMU, one farm host, one LAVA lab."""

    name: str = "local"  # recorded per cell
    accel: str = "tcg"  # the accelerator its guests use
    slots: int = 1  # guests at once
    snapshots: bool = False  # it can save a booted guest and start others from it (MachineSpec.snapshot)
    can_keep: bool = False  # its guests can be left running for a look inside (Instance.detach)

    @abstractmethod
    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> Instance:
        """Boot a guest; raise BootError (with the console) when it never becomes usable, HostLost when the
        pool's machine is gone."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop at once (Ctrl-C): every guest of the pool ends now and no new one starts."""

    def describe(self) -> dict:
        """What the run record says about this pool."""
        return {"kind": type(self).__name__, "slots": self.slots, "accel": self.accel}

    def qemu_version(self) -> str:
        return ""

    def snapshot_key(self, spec: MachineSpec) -> str:
        """The name of the snapshot a guest of `spec` would be saved as ("" when the pool keeps none)."""
        return ""
