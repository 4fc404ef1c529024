"""KTAP parsing: real probe output, interrupted output, and the corner cases kunit_tool handles."""

from __future__ import annotations

from farm import ktap

from .conftest import FIXTURES


def test_real_probe_output():
    result = ktap.parse((FIXTURES / "ktap-cpuinfo-skylake-server.txt").read_text())
    assert result.status == "PASS"
    assert [c.name for c in result.cases] == ["xsave_enabled", "xcr0_within_supported", "xsave_size_matches_xcr0"]
    assert result.facts["xcr0"] == "0x207"
    assert result.facts["xsave_size"] == "2696"
    assert result.facts["avx512f"] == "0"
    assert result.problems == []


def test_interrupted_output_is_not_a_pass():
    result = ktap.parse((FIXTURES / "ktap-cpuinfo-interrupted.txt").read_text())
    assert len(result.cases) == 2
    assert result.status == "ERROR"
    assert "plan says 3 cases, output has 2" in result.problems[0]


def test_skip_fail_and_diagnostics():
    text = ("TAP version 13\n1..4\n# about to try\nok 1 first\nnot ok 2 second\n"
            "ok 3 third # SKIP no AVX-512 on this model\nok 4 - fourth # TODO later\n")
    result = ktap.parse(text)
    assert [c.status for c in result.cases] == ["PASS", "FAIL", "SKIP", "PASS"]
    assert result.cases[0].diagnostics == ["about to try"]
    assert result.cases[2].reason == "no AVX-512 on this model"
    assert result.cases[3].name == "fourth"
    assert result.status == "FAIL"
    assert result.counts() == {"PASS": 2, "FAIL": 1, "SKIP": 1}


def test_all_skipped_is_skip_and_empty_output_is_error():
    assert ktap.parse("KTAP version 1\n1..1\nok 1 a # SKIP nope\n").status == "SKIP"
    assert ktap.parse("").status == "ERROR"
    assert ktap.parse("Segmentation fault\n").status == "ERROR"


def test_indented_subtests_do_not_count_as_top_level_cases():
    text = "KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 a\n    not ok 2 b\nnot ok 1 suite\n"
    result = ktap.parse(text)
    assert [c.name for c in result.cases] == ["suite"]
    assert result.status == "FAIL"
