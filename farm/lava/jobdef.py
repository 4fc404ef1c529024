"""LAVA job definitions generated from a cell's data: the same kernel, initramfs, -cpu model, accelerator,
memory, CPUs and test argv the local backend uses. Pure: no I/O, so every field can be tested as data.

One cell is one job on device type `qemu` (arch amd64): deploy the kernel and the farm's initramfs to tmpfs,
boot QEMU with the cell's options, and run the test from the serial console (the guest's init runs a shell
there when the kernel command line has farm.console=1). The farm reads the job's log back, not LAVA's verdict.

Facts about LAVA 2023.01's qemu device template (device-types/qemu.jinja2) that shape this file:
- for arch amd64 it adds `-cpu host -enable-kvm` unless the context sets `no_kvm`; with `no_kvm: true` it adds
  no -cpu at all, so the cell's `-cpu MODEL` in `extra_options` is the only one on the command line;
- it adds `-nographic` (the serial console on stdio, which LAVA reads), `-net nic,model=virtio` and
  `-net {netdevice}`: `user,restrict=on` keeps the guest off every network, as the farm's own QEMU does;
- the kernel command line goes with the kernel's `image_arg`.
"""

from __future__ import annotations

import math
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import InputError
from ..vm.accel import guest_cmdline, qemu_accel

PROMPT = "farm-console# "  # guests/initramfs/init sets PS1 to this in console mode
CONSOLE_ARGS = ("farm.sshd=0", "farm.console=1")  # the console path for LAVA; no SSH server in the guest
BEGIN_MARKER = "farm-test-begin"  # the test's stdout is the console between these two lines
END_MARKER = "farm-test-end"
END_RE = re.compile(rf"^{END_MARKER}: (?P<status>\d+)$")
PANIC = "Kernel panic - not syncing"

DEPLOY_SECONDS = 120
TEST_SLACK_SECONDS = 5  # the console round trip: typing the command, echo, the prompt coming back
FINALIZE_SECONDS = 60


@dataclass(frozen=True)
class LavaCell:
    """What one LAVA job needs from a cell. URLs point at files the lab's worker can download."""

    name: str  # the cell id, kernel/cpu/test
    kernel_url: str
    initrd_url: str
    cmdline: str  # the kernel entry's command line (the console arguments are added here)
    cpu: str  # QEMU -cpu model
    accel: str  # "tcg" or "kvm"
    argv: tuple[str, ...]  # the test's argv in the guest, as the SSH path runs it
    boot_timeout: float
    test_timeout: float
    memory_mb: int = 512
    smp: int = 2
    tcg_thread: str = "single"
    kernel_sha256: str = ""
    initrd_sha256: str = ""
    device_type: str = "qemu"
    priority: str = "medium"
    tags: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)


def file_url(path: Path) -> str:
    """A file:// URL the worker reads directly (a lab on this machine, or a folder it shares)."""
    return "file://" + urllib.parse.quote(str(Path(path).resolve()))


def console_command(argv: tuple[str, ...] | list[str]) -> str:
    """The one shell line typed at the guest's console: markers around the test, its exit status after it.
    The typed line is echoed back, so the markers in it are spelled so they never equal an output line."""
    return (f'echo {BEGIN_MARKER[:-5]}""{BEGIN_MARKER[-5:]}; {shlex.join(argv)}; '
            f'echo "{END_MARKER}: $?"')


def kernel_cmdline(cmdline: str) -> str:
    """The kernel entry's command line plus the console-mode arguments. It is passed inside double quotes on
    the worker's QEMU command line, so it must not carry quotes, backslashes or control characters."""
    if re.search(r"[\"'\\\x00-\x1f\x7f]", cmdline):
        raise InputError(f"kernel command line {cmdline!r}: quotes, backslashes and control characters "
                         "cannot be passed to LAVA's QEMU command line")
    words = [w for w in cmdline.split() if w.split("=")[0] not in ("farm.sshd", "farm.console")]
    return " ".join([*words, *CONSOLE_ARGS])


def qemu_options(cell: LavaCell) -> list[str]:
    """The cell's QEMU options, as the local backend gives them (farm/vm/qemu.py command_line)."""
    if cell.accel not in ("tcg", "kvm"):
        raise InputError(f"accelerator {cell.accel!r}: LAVA cells run under tcg or kvm")
    if not re.fullmatch(r"[A-Za-z0-9][\w.,=+-]*", cell.cpu):
        raise InputError(f"CPU model {cell.cpu!r}: not a -cpu model name")
    accel = f"-accel {qemu_accel(cell.accel, cell.tcg_thread)}"
    # The template's NIC is `-net nic,model=virtio`: -global skips its iPXE ROM, as the local romfile= does.
    return ["-M pc", f"-cpu {cell.cpu}", accel, f"-smp {cell.smp}", "-no-reboot", "-global virtio-net-pci.romfile="]


def _seconds(value: float) -> dict:
    return {"seconds": int(math.ceil(value))}


def definition(cell: LavaCell) -> dict:
    """The job definition as data (yaml.safe_dump turns it into what LAVA is sent)."""
    for label, url in (("kernel", cell.kernel_url), ("initrd", cell.initrd_url)):
        if not re.match(r"^(file|https?)://\S+$", url):
            raise InputError(f"{label} URL {url!r}: LAVA downloads file://, http:// or https:// URLs without spaces")
    test_seconds = cell.test_timeout + TEST_SLACK_SECONDS
    append = kernel_cmdline(guest_cmdline(cell.cmdline, cell.accel))
    images = {
        "kernel": {"image_arg": f'-kernel {{kernel}} -append "{append}"',
                   "url": cell.kernel_url},
        "initrd": {"image_arg": "-initrd {initrd}", "url": cell.initrd_url},
    }
    for label, digest in (("kernel", cell.kernel_sha256), ("initrd", cell.initrd_sha256)):
        if digest:
            images[label]["sha256sum"] = digest  # the worker checks what it downloaded
    job = {
        "device_type": cell.device_type,
        "job_name": f"farm {cell.name}",
        "priority": cell.priority,
        "visibility": "public",
        "timeouts": {
            "job": _seconds(DEPLOY_SECONDS + cell.boot_timeout + test_seconds + FINALIZE_SECONDS),
            "action": _seconds(max(cell.boot_timeout, test_seconds)),
            "connection": _seconds(max(cell.boot_timeout, test_seconds)),
        },
        "context": {
            "arch": "amd64",
            "no_kvm": True,  # or the template adds -cpu host -enable-kvm before the cell's own -cpu
            "memory": cell.memory_mb,
            "netdevice": "user,restrict=on",
            "extra_options": qemu_options(cell),
        },
        "metadata": {f"farm.{k}": str(v) for k, v in cell.metadata.items()},
        "actions": [
            {"deploy": {"to": "tmpfs", "timeout": _seconds(DEPLOY_SECONDS), "failure_retry": 1,
                        "images": images}},
            {"boot": {
                "method": "qemu", "media": "tmpfs", "timeout": _seconds(cell.boot_timeout),
                "failure_retry": 1,  # the farm's retry policy applies, not LAVA's
                "prompts": [PROMPT],
                # The farm's kernels boot quiet: LAVA must not wait for "Linux version", and watches kernel
                # messages (panics) from QEMU's start instead.
                "parameters": {"kernel-start-message": ""},
            }},
            {"test": {
                "timeout": _seconds(test_seconds), "failure_retry": 1,
                "interactive": [{
                    "name": "farm",
                    "prompts": [PROMPT],
                    "script": [{
                        "name": "test",
                        "command": console_command(cell.argv),
                        "successes": [{"message": rf"{END_MARKER}: \d+"}],
                        "failures": [{"message": PANIC, "exception": "TestError", "error": "kernel panic"}],
                    }],
                }],
            }},
        ],
    }
    if cell.tags:
        job["tags"] = list(cell.tags)
    if not job["metadata"]:
        del job["metadata"]
    return job


def to_yaml(job: dict) -> str:
    return yaml.safe_dump(job, sort_keys=False, default_flow_style=False, width=1000)
