"""The job the farm exists for: linux-6.1-fpu (baseline) against linux-6.1-xcr0 on every CPU model (qemu64,
without XSAVE, included), built, booted and tested for real, with the A/B verdict in the reports."""

from __future__ import annotations

import json

import pytest

from .conftest import failed_cells, run_farm

pytestmark = [pytest.mark.boot, pytest.mark.build]

FEATURE_CASES = ("set_current_value_noop", "reduce_to_x87_sse", "avx_sigill_with_x87_sse",
                 "reenable_sees_zeros_not_other_thread", "signal_handler_xgetbv_override",
                 "ptrace_setregset_cont_override_intact", "fork_inherits", "execve_resets_to_kernel",
                 "kernel_fpu_af_alg_override", "get_unmapped_efault", "invalid_bit63_alone",
                 "signal_frame_user_xrstor", "signal_frame_switched_off_edit_ignored", "set_while_registers_not_loaded",
                 "signal_to_blocked_thread_override", "execve_blocked_kernel_xcr0_elsewhere")
# What the baseline can run too (no override needed): these must pass on both kernels.
COMMON_CASES = ("get_works_or_einval", "xgetbv_equals_xcomp_supp", "unknown_code_einval", "ctxsw_pinned_one_cpu",
                "ctxsw_unpinned_migrating", "preempt_involuntary_vector_state", "signal_frame_kernel_format",
                "signal_nested_min_sigaltstack", "signal_frame_ymm_edit_restored", "ptrace_xstate_full_size",
                "ptrace_sw_reserved_kernel_xcr0", "core_dump_xstate_kernel_format", "kernel_fpu_af_alg_kernel_xcr0")
IA32_FEATURE_CASES = ("reduce_to_x87_sse_ia32", "signal_handler_xgetbv_override_ia32", "signal_frame_user_xrstor_ia32",
                      "execve_resets_to_kernel_ia32")
XSAVE_MODELS = ("Broadwell", "Skylake-Server", "Skylake-Client", "max")


@pytest.fixture(scope="module")
def xcr0_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("xcr0") / "run"
    result = run_farm("run", "--job", "xcr0", "--out", str(out), "-j", "2", timeout=3600)
    return out, json.loads((out / "run.json").read_text()), result


def _cases(cell: dict) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["status"], c["reason"]) for c in cell["cases"]}


def test_every_cell_passes_and_the_run_exits_0(xcr0_run):
    out, run, result = xcr0_run
    assert result.returncode == 0, result.stderr[-3000:] + failed_cells(out)
    assert len(run["cells"]) == 2 * 5 * 4
    assert run["kernels"]["linux-6.1-xcr0"]["baseline"] == "linux-6.1-fpu"


def test_patched_kernel_runs_the_feature_cases_on_every_model(xcr0_run):
    _, run, _ = xcr0_run
    for cell in run["cells"]:
        if cell["test"] not in ("xcr0", "xcr0-ia32") or cell["cpu"] not in XSAVE_MODELS:
            continue
        cases = _cases(cell)
        assert not [n for n, (s, _) in cases.items() if s == "FAIL"]
        if cell["test"] == "xcr0-ia32":
            assert len(cases) == 8
            for name in IA32_FEATURE_CASES:
                status, reason = cases[name]
                assert status == ("PASS" if cell["kernel"] == "linux-6.1-xcr0" else "SKIP"), (cell["id"], name, reason)
            assert cases["sigreturn_xmm_edit_restored_ia32"][0] == "PASS"
            continue
        assert len(cases) == 62
        for name in FEATURE_CASES:
            status, reason = cases[name]
            if cell["kernel"] == "linux-6.1-xcr0":
                assert status == "PASS", (cell["id"], name, reason)
            else:  # the baseline lacks the feature: SKIP, never PASS
                assert status == "SKIP" and "ARCH_GET_XCR0" in reason, (cell["id"], name, reason)
        for name in COMMON_CASES:
            assert cases[name][0] == "PASS", (cell["id"], name, cases[name])
    by_id = {c["id"]: c for c in run["cells"]}
    # max exposes MPX state under TCG, so the MPX rules are exercised there and only there.
    assert _cases(by_id["linux-6.1-xcr0/max/xcr0"])["reduce_without_mpx"][0] == "PASS"
    assert _cases(by_id["linux-6.1-xcr0/Broadwell/xcr0"])["reduce_without_mpx"][0] == "SKIP"
    # Skylake-Server has PKRU under TCG: the reduction without it runs.
    assert _cases(by_id["linux-6.1-xcr0/Skylake-Server/xcr0"])["reduce_without_pkru"][0] == "PASS"
    # The PKRU canary needs OSPKE: Skylake-Server and max under TCG.
    assert _cases(by_id["linux-6.1-xcr0/Skylake-Server/xcr0"])["pkru_canary_survives"][0] == "PASS"
    assert _cases(by_id["linux-6.1-xcr0/Broadwell/xcr0"])["pkru_canary_survives"][0] == "SKIP"
    # qemu64 has no XSAVE: the patched kernel answers ENODEV, the baseline EINVAL (SKIP).
    qemu64 = _cases(by_id["linux-6.1-xcr0/qemu64/xcr0"])
    assert list(qemu64) == ["enodev_without_xsave"] and qemu64["enodev_without_xsave"][0] == "PASS"
    assert _cases(by_id["linux-6.1-fpu/qemu64/xcr0"])["enodev_without_xsave"][0] == "SKIP"
    # AVX-512 is not emulated by TCG: SKIP with the reason, never PASS.
    status, reason = _cases(by_id["linux-6.1-xcr0/Skylake-Server/xcr0"])["reduce_without_avx512"]
    assert status == "SKIP" and "AVX-512" in reason


def test_reports_carry_the_ab_verdict_without_regressions(xcr0_run, tmp_path):
    out, run, _ = xcr0_run
    summary = (out / "summary.txt").read_text()
    assert "; 0 regression(s) against the baseline." in summary
    assert summary.rstrip().splitlines()[-1].startswith("Tested-by: farm <farm@")
    assert all(len(line) <= 72 for line in summary.splitlines())
    html = (out / "report.html").read_text()
    assert "linux-6.1-xcr0" in html and "0x21f" in html  # what max delivered
    # The same run with one patched case broken: compare finds exactly that regression and exits 1.
    broken = json.loads((out / "run.json").read_text())
    cell = next(c for c in broken["cells"] if c["id"] == "linux-6.1-xcr0/Skylake-Server/xcr0")
    case = next(c for c in cell["cases"] if c["name"] == "signal_handler_xgetbv_override")
    case["status"], cell["status"] = "FAIL", "FAIL"
    (tmp_path / "run.json").write_text(json.dumps(broken))
    compare = run_farm("compare", str(out), str(tmp_path))
    assert compare.returncode == 1, compare.stdout
    rows = [line for line in compare.stdout.splitlines() if line.strip().startswith("regression")]
    assert len(rows) == 1 and "Skylake-Server xcr0.signal_handler_xgetbv_override" in rows[0], compare.stdout
