"""Real boots: Debian's stock kernel under QEMU on named CPU models, reached over real SSH."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from farm.catalog import Catalog
from farm.errors import InfraError
from farm.guest.image import ImageBuilder
from farm.guest.keys import client_key
from farm.paths import cache_root
from farm.prepare import prepare_kernel
from farm.vm.accel import TCG_CMDLINE, TCG_THREADS, guest_cmdline
from farm.vm.base import MachineSpec
from farm.vm.qemu import QemuPool

from .conftest import REPO, run_farm

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def skylake_run(tmp_path_factory) -> tuple[Path, dict, object]:
    """`farm run --cpu Skylake --cpu Broadwell`, once, through the real command line."""
    out = tmp_path_factory.mktemp("run") / "r"
    result = run_farm("run", "--job", "probe", "--cpu", "Skylake", "--cpu", "Broadwell", "--out", str(out), "-j", "2")
    run = json.loads((out / "run.json").read_text())
    return out, run, result


def _cell(run: dict, cpu: str) -> dict:
    return next(c for c in run["cells"] if c["cpu"] == cpu)


def test_skylake_prefix_runs_both_skylake_models(skylake_run):
    out, run, result = skylake_run
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)  # the run dir's path is printed at the end
    assert sorted(c["cpu"] for c in run["cells"]) == ["Broadwell", "Skylake-Client", "Skylake-Server"]
    assert {c["status"] for c in run["cells"]} == {"PASS"}


@pytest.mark.parametrize(("cpu", "xcr0", "size"), [("Broadwell", "0x7", "832"), ("Skylake-Server", "0x207", "2696"),
                                                   ("Skylake-Client", "0x7", "832")])
def test_probe_reports_what_the_model_delivers_under_tcg(skylake_run, cpu, xcr0, size):
    _, run, _ = skylake_run
    cell = _cell(run, cpu)
    assert cell["accel"] == run["host"]["accel"]
    if cell["accel"] != "tcg":
        pytest.skip("XCR0 figures are TCG's; under KVM the host CPU decides")
    assert cell["facts"]["xcr0"] == xcr0
    assert cell["facts"]["xsave_size"] == size
    assert cell["facts"]["avx512f"] == "0"


def test_degraded_model_is_recorded(skylake_run):
    _, run, _ = skylake_run
    sks = _cell(run, "Skylake-Server")
    if sks["accel"] == "tcg":
        assert "avx512f" in sks["filtered_features"]  # nobody mistakes it for a real Skylake-Server
    assert "-cpu" in sks["qemu_command"]
    assert sks["qemu_command"][sks["qemu_command"].index("-cpu") + 1] == "Skylake-Server"


def test_run_dir_has_console_output_and_report(skylake_run):
    out, run, _ = skylake_run
    cell = _cell(run, "Broadwell")
    console = (out / cell["files"]["console"]).read_text()
    assert "farm-init: ready" in console
    assert "TAP version 13" in (out / cell["files"]["output"]).read_text()
    for stage in ("boot_to_marker", "boot_to_ssh", "test", "total"):
        assert cell["timings"][stage] > 0
    html = (out / "report.html").read_text()
    assert "Skylake-Server" in html and "0x207" in html or run["host"]["accel"] != "tcg"
    assert run["host"]["accel_reason"]


def test_guest_panic_is_a_crash_with_the_panic_line(farm_root: Path, tmp_path: Path):
    (farm_root / "kernels" / "stock-noinit.yaml").write_text(
        "name: stock-noinit\nextends: stock\ncmdline: console=ttyS0 panic=-1 rdinit=/nothing-here\n")
    out = tmp_path / "r"
    result = run_farm("run", "--job", "probe", "--kernel", "stock-noinit", "--cpu", "Broadwell", "--out", str(out), root=farm_root)
    assert result.returncode == 1, result.stderr
    cell = json.loads((out / "run.json").read_text())["cells"][0]
    assert cell["status"] == "CRASH"
    assert cell["stage"] == "boot"
    # The verdict came from the console, not from waiting out the boot timeout.
    assert "Kernel panic - not syncing" in cell["reason"]
    assert cell["attempts"] == 1  # a crash is never retried away
    assert "Kernel panic" in (out / cell["files"]["console"]).read_text()


def _stock_spec():
    """The farm's key and a one-CPU Broadwell guest of the stock kernel with the probe payload."""
    catalog = Catalog(REPO)
    key = client_key(cache_root() / "keys")
    builder = ImageBuilder(cache_root(), REPO / "guests", key)
    kernel = catalog.kernels["stock"]
    prepared = prepare_kernel(kernel, builder, [catalog.tests["cpuinfo"]])
    return key, MachineSpec(prepared.image, prepared.guest.initrd, kernel.cmdline, "Broadwell", "tcg",
                            prepared.guest.host_key, smp=1)


def test_instance_interface_copy_run_timeout_and_diagnose(tmp_path: Path):
    key, spec = _stock_spec()
    with QemuPool(key).create(spec, tmp_path / "vm", boot_timeout=90) as vm:
        local = tmp_path / "hello.sh"
        local.write_text("#!/bin/sh\necho \"argv:$1:$2\"\n")
        vm.copy(local, "/tmp/hello.sh")
        result = vm.run(["/tmp/hello.sh", "a b", "$(reboot)"], timeout=20)
        assert result.exit_status == 0
        assert result.stdout == "argv:a b:$(reboot)\n"  # argv, quoted: nothing reaches a shell unquoted
        slow = vm.run(["sleep", "30"], timeout=1.5)
        assert slow.timed_out and slow.exit_status is None
        assert vm.run(["sh", "-c", "exit 7"], timeout=10).exit_status == 7
        diag = vm.diagnose()
        assert diag.running and not diag.panicked and diag.crashes == []
    assert vm.proc.exit_status() is not None  # closed means QEMU is gone


def test_tcg_guest_runs_with_raised_stall_thresholds_unless_the_kernel_sets_them(tmp_path: Path):
    """Under TCG the RCU-stall and lockup detectors get TCG_CMDLINE's thresholds (read back in the guest);
    a value the kernel's own command line gives wins; KVM boots the kernel's command line as it is."""
    key, spec = _stock_spec()
    assert guest_cmdline(spec.cmdline, "kvm") == spec.cmdline
    own = dataclasses.replace(spec, cmdline=spec.cmdline + " watchdog_thresh=45")
    pool = QemuPool(key)
    for which, machine, want in (("farm's", spec, TCG_CMDLINE["watchdog_thresh"]), ("kernel's", own, "45")):
        with pool.create(machine, tmp_path / which, boot_timeout=90) as vm:
            got = vm.run(["cat", "/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout",
                          "/proc/sys/kernel/watchdog_thresh"], timeout=20)
            assert got.exit_status == 0, got.stderr
            assert got.stdout.split() == [TCG_CMDLINE["rcupdate.rcu_cpu_stall_timeout"], want], which
        append = vm.boot.command[vm.boot.command.index("-append") + 1]
        assert append.split().count(f"watchdog_thresh={want}") == 1  # the kernel's value is not doubled


def test_tcg_thread_modes_both_boot_and_run_the_guests_vcpus(tmp_path: Path):
    """The farm's default round-robin TCG and MTTCG (a job's `tcg_thread: multi`) both reach SSH with both
    vCPUs online, and QEMU is told which (its command line, as run.json records it)."""
    key, spec = _stock_spec()
    pool = QemuPool(key)
    for mode in TCG_THREADS:
        machine = dataclasses.replace(spec, smp=2, tcg_thread=mode)
        with pool.create(machine, tmp_path / mode, boot_timeout=90) as vm:
            got = vm.run(["cat", "/sys/devices/system/cpu/online"], timeout=20)
            assert got.exit_status == 0 and got.stdout.strip() == "0-1", (mode, got.stdout, got.stderr)
        cmd = vm.boot.command
        assert cmd[cmd.index("-accel") + 1] == f"tcg,tb-size=64,thread={mode}"


def test_changed_host_key_is_refused(tmp_path: Path):
    key, spec = _stock_spec()
    other = client_key(tmp_path / "other").public  # any ed25519 key that is not the guest's
    spec = dataclasses.replace(spec, host_key=" ".join(other.split()[:2]))
    pool = QemuPool(key)
    with pytest.raises(InfraError, match="not the one pinned"):
        pool.create(spec, tmp_path / "vm", boot_timeout=90)
    assert pool._live == set()  # the refused guest's QEMU was stopped and forgotten, not left running
    assert "farm-init: ready" in (tmp_path / "vm" / "console.log").read_text()  # it did boot: the key was the problem

