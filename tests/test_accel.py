"""The accelerator probe: /dev/kvm alone is not enough."""

from __future__ import annotations

from pathlib import Path

from farm.vm import accel

VMX = "processor\t: 0\nflags\t\t: fpu vme vmx sse2 avx\n"
NO_VMX = "processor\t: 0\nflags\t\t: fpu vme sse2 avx hypervisor\n"


def test_missing_device(tmp_path: Path):
    assert "does not exist" in accel.kvm_problem(VMX, "", tmp_path / "kvm")


def test_pvm_module_is_rejected_even_with_vmx(tmp_path: Path):
    dev = tmp_path / "kvm"
    dev.touch()
    assert "KVM-PVM" in accel.kvm_problem(VMX, "kvm_pvm 123 0 - Live 0x0\nkvm 1 1 - Live\n", dev)


def test_no_virtualisation_flag_is_rejected(tmp_path: Path):
    dev = tmp_path / "kvm"
    dev.touch()
    assert "no vmx/svm" in accel.kvm_problem(NO_VMX, "", dev)


def test_vmx_and_device_look_usable(tmp_path: Path):
    dev = tmp_path / "kvm"
    dev.touch()
    assert accel.kvm_problem(VMX, "kvm_intel 1 0 - Live\n", dev) is None


def test_requested_tcg_and_this_host():
    assert accel.probe("tcg").name == "tcg"
    chosen = accel.probe("auto")
    assert chosen.reason  # the run records why, whichever it is
    if chosen.name == "kvm":
        assert chosen.probe_boot  # auto-chosen KVM is confirmed by a real boot before use
