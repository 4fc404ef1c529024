"""Which accelerator QEMU can really use here: probed, never assumed.

/dev/kvm can exist and still be useless: on KVM-PVM (a software nested hypervisor) a guest crawls and every
-cpu model is ignored. KVM counts only when the CPU shows vmx/svm, the device opens, and no PVM module runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The kernel's stall and lockup detectors count wall seconds. Under TCG a guest runs several times slower than on
# hardware and shares the host's cores with the other guests, so they can fire on a healthy kernel (CI once saw
# "rcu_preempt self-detected stall" from the stock kernel with 4 two-vCPU TCG guests on 2 cores). syzbot runs its
# emulated targets at 3x its native thresholds; the farm does the same with the kernel's defaults (RCU stall
# 21 s, soft lockup 2 x 10 s) under TCG, unless the kernel's command line sets them itself. A real stall still
# reports (after 60 s), and a guest that stops answering is still a hang: never a PASS.
TCG_CMDLINE = {"rcupdate.rcu_cpu_stall_timeout": "60", "watchdog_thresh": "30"}


# How TCG runs a guest's vCPUs. "single" (round-robin, one host thread per guest) is the farm's default, chosen
# by measurement on 2 cores at 3 guests at once: the XCR0 job took 49-71 s against 144-148 s with "multi"
# (MTTCG, one host thread per vCPU), the x86-selftests cell 7.4 s against 32.9 s, with the same verdict for
# every case. Several MTTCG guests on few cores spin on each other's descheduled vCPUs, and once under load an
# MTTCG guest's CPU 0 hung in an int3 loop at a static-key site the kernel was patching (an RCU stall, then a
# CRASH for a healthy stock kernel; an earlier CI stall looked the same, its console was not kept). The price:
# a guest's vCPUs take turns, never run at the same instant. A job that wants truly parallel vCPUs under TCG
# says `tcg_thread: multi`; under KVM they are always parallel.
TCG_THREADS = ("single", "multi")


def qemu_accel(accel: str, tcg_thread: str = "single") -> str:
    """The value of QEMU's -accel for a guest: kvm, or tcg with its translation cache and thread mode."""
    return "kvm" if accel == "kvm" else f"tcg,tb-size=64,thread={tcg_thread}"


def guest_cmdline(cmdline: str, accel: str) -> str:
    """The kernel command line a guest under `accel` boots with: the kernel's own, plus TCG_CMDLINE under TCG."""
    if accel != "tcg":
        return cmdline
    given = {w.split("=", 1)[0] for w in cmdline.split()}
    return " ".join([cmdline, *(f"{k}={v}" for k, v in TCG_CMDLINE.items() if k not in given)]).strip()


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str
    probe_boot: bool = False  # KVM chosen by "auto": the scheduler confirms it with one real boot


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def kvm_problem(cpuinfo: str, modules: str, dev_exists: bool, dev_rw: bool, dev: str = "/dev/kvm",
                user: str = "this user") -> str | None:
    """Why KVM cannot be used, or None when it looks usable. The same rules for this machine and for a farm
    host examined over SSH: the device must exist and open, no PVM module, and the CPU must show vmx/svm."""
    if not dev_exists:
        return f"{dev} does not exist"
    if not dev_rw:
        return f"{dev} is not readable and writable by {user} (join the kvm group)"
    loaded = {line.split()[0] for line in modules.splitlines() if line.strip()}
    if "kvm_pvm" in loaded:
        return f"{dev} is KVM-PVM (module kvm_pvm), a software nested hypervisor that ignores -cpu"
    if not _cpu_flags(cpuinfo) & {"vmx", "svm"}:
        return f"{dev} exists but the CPU has no vmx/svm flag (nested or paravirtual KVM)"
    return None


def probe(requested: str = "auto") -> Accel:
    """Pick the accelerator. `requested` is "auto", "kvm" or "tcg" (from --accel)."""
    if requested == "tcg":
        return Accel("tcg", "requested with --accel tcg")

    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    dev = Path("/dev/kvm")
    problem = kvm_problem(read("/proc/cpuinfo"), read("/proc/modules"), dev.exists(),
                          os.access(dev, os.R_OK | os.W_OK))
    if requested == "kvm":
        note = f" (the probe disagrees: {problem})" if problem else ""
        return Accel("kvm", f"requested with --accel kvm{note}")
    if problem:
        return Accel("tcg", f"KVM not usable: {problem}")
    return Accel("kvm", "/dev/kvm usable: CPU has vmx/svm and no PVM module", probe_boot=True)
