"""The xcr0 test is the series' own selftest: built from linux-6.1-xcr0's patched tools/ tree, 64- and 32-bit,
one source shared by the kernel and the farm. Built for real with the selftests' Makefile (seconds); run on
the host, whose kernel lacks the feature, it must report the baseline shape (feature cases SKIP, none FAIL)."""

from __future__ import annotations

import subprocess

from farm.catalog import Catalog
from farm.guest.image import ImageBuilder
from farm.paths import cache_root

from .conftest import REPO, run_farm


def _built(name: str):
    cat = Catalog(REPO)
    return ImageBuilder(cache_root(), cat.root / "guests", "test", cat.kernels).build_test(cat.tests[name])


def test_the_test_comes_from_the_patched_tree_and_reports_the_baseline_on_the_host():
    assert not (REPO / "guests/tests/xcr0/xcr0.c").exists()  # one source: the series' file
    prog = _built("xcr0")
    src = prog.parent / "src/tools/testing/selftests/x86/xcr0.c"
    assert src.is_file() and "ARCH_SET_XCR0" in src.read_text()  # only the patched tree has it
    out = subprocess.run([str(prog)], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert lines[0] == "TAP version 13" and "1..62" in lines
    assert out.returncode == 0, out.stdout[-2000:]
    assert not [ln for ln in lines if ln.startswith("not ok")]
    assert "ok 1 get_works_or_einval" in lines
    assert any(ln.endswith("reduce_to_x87_sse # SKIP kernel lacks ARCH_GET_XCR0 (EINVAL)") for ln in lines)


def test_the_ia32_build_is_a_32_bit_program_with_its_own_cases():
    prog = _built("xcr0-ia32")
    assert prog.read_bytes()[:5] == b"\x7fELF\x01"  # ELFCLASS32
    out = subprocess.run([str(prog)], capture_output=True, text=True, timeout=60)
    assert "1..8" in out.stdout and "ok 6 sigreturn_xmm_edit_restored_ia32" in out.stdout, out.stdout


def test_a_program_name_that_is_not_one_exits_2_naming_the_field(farm_root):
    test = farm_root / "guests/tests/xcr0.yaml"
    test.write_text(test.read_text().replace("program: xcr0_64", "program: ../xcr0_64"))
    result = run_farm("check", root=farm_root)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("field 'program': '../xcr0_64' is not a program name"), result.stderr
    assert "Traceback" not in result.stderr
