"""The VM interface: a pool makes instances; an instance is booted, copied to, run in, diagnosed, closed.

Backends (local QEMU now, remote hosts later) implement this and nothing above them knows which one ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InfraError
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
    command: list[str]  # the QEMU command line, as run
    seconds_to_marker: float = 0.0
    seconds_to_ssh: float = 0.0
    filtered_features: list[str] = field(default_factory=list)
    qemu_warnings: list[str] = field(default_factory=list)


class BootError(InfraError):
    """The guest never became usable. Carries the console so the report can show why."""

    def __init__(self, message: str, console: str = "", crashed: bool = False):
        super().__init__(message)
        self.console = console
        self.crashed = crashed  # the kernel panicked or oopsed: a CRASH result, not infrastructure


class HostLost(InfraError):
    """The machine that runs guests (a remote farm host) is gone: its cells go to another host."""


class Instance(ABC):
    boot: BootInfo
    console: ConsoleWatcher  # every backend watches the guest's serial console

    def wait_for_crash(self, seconds: float) -> None:
        """Give a dying guest a moment to print its panic after a command was cut off."""
        self.console.wait(lambda s: s.panicked, seconds)

    @abstractmethod
    def copy(self, local: Path, remote: str) -> None: ...

    @abstractmethod
    def run(self, argv: list[str], timeout: float) -> RunResult: ...

    @abstractmethod
    def diagnose(self) -> dict:
        """What is known about the guest now: console crash lines, whether QEMU still runs."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Pool(ABC):
    name: str = "local"  # the host it runs guests on, recorded per cell
    accel: str | None = None  # the accelerator it uses, when it decides for itself (remote hosts)

    @abstractmethod
    def create(self, spec: MachineSpec, workdir: Path, boot_timeout: float) -> Instance:
        """Boot a guest; raise BootError (with the console) when it never becomes usable."""
