"""The accelerator probe: /dev/kvm alone is not enough."""

from __future__ import annotations

from farm.vm import accel

VMX = "processor\t: 0\nflags\t\t: fpu vme vmx sse2 avx\n"
NO_VMX = "processor\t: 0\nflags\t\t: fpu vme sse2 avx hypervisor\n"


def test_missing_device():
    assert "does not exist" in accel.kvm_problem(VMX, "", dev_exists=False, dev_rw=False)


def test_unwritable_device_names_the_user():
    assert "farm user" in accel.kvm_problem(VMX, "", dev_exists=True, dev_rw=False, user="the farm user")


def test_pvm_module_is_rejected_even_with_vmx():
    assert "KVM-PVM" in accel.kvm_problem(VMX, "kvm_pvm 123 0 - Live 0x0\nkvm 1 1 - Live\n", True, True)


def test_no_virtualisation_flag_is_rejected():
    assert "no vmx/svm" in accel.kvm_problem(NO_VMX, "", True, True)


def test_vmx_and_device_look_usable():
    assert accel.kvm_problem(VMX, "kvm_intel 1 0 - Live\n", True, True) is None


def test_requested_tcg_and_this_host():
    assert accel.probe("tcg").name == "tcg"
    chosen = accel.probe("auto")
    assert chosen.reason  # the run records why, whichever it is
    if chosen.name == "kvm":
        assert chosen.probe_boot  # auto-chosen KVM is confirmed by a real boot before use
