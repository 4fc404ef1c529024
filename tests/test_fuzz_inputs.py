"""Property-based fuzzing of the data files: every document is accepted, or rejected with exit code 2 and one
line naming the file; never a traceback. Over 1,000 generated documents per run (three kinds x 350)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farm import cli

from . import faultlib

EXAMPLES = 350

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["stock", "Broadwell", "cpuinfo", "tinyconfig", "../x", "-cpu", "", " "]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=10)


def _doc(known: list[str], required: dict[str, object]):
    """Mostly-plausible mappings: known keys with good or bad values, plus the odd unknown key."""
    good = st.fixed_dictionaries({k: st.just(v) for k, v in required.items()})
    mutated = st.dictionaries(st.sampled_from(known) | st.text(min_size=1, max_size=12), values, max_size=6)
    return st.one_of(
        st.builds(lambda a, b: {**a, **b}, good, mutated),
        mutated,
        values,
    )


def _render(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True) if not isinstance(doc, str) else doc


raw_text = st.text(alphabet=st.sampled_from(list("abc:-[]{}#&*!|>'\"%@` \n\t1.\\")), max_size=80)

JOB = _doc(["name", "description", "kernels", "cpus", "tests", "timeouts", "retries", "memory_mb", "smp"],
           {"kernels": ["stock"], "cpus": ["Broadwell"], "tests": ["cpuinfo"]})
CPU = _doc(["name", "qemu", "aliases", "vendor", "purpose"], {"name": "Fuzz", "qemu": "Broadwell"})
KERNEL = _doc(["name", "description", "extends", "prebuilt", "source", "config", "patches", "image", "cmdline",
               "baseline"], {"name": "fuzz", "extends": "stock"})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return faultlib.make_root(tmp_path_factory.mktemp("fuzz"))


def _check(root: Path, path: Path, text: str, args: list[str]) -> None:
    path.write_text(text)
    err = io.StringIO()
    old = os.environ.get("FARM_ROOT")
    os.environ["FARM_ROOT"] = str(root)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["check", *args])
    finally:
        path.unlink()
        if old is None:
            os.environ.pop("FARM_ROOT")
        else:
            os.environ["FARM_ROOT"] = old
    message = err.getvalue()
    assert code in (0, 2), message
    if code == 2:
        lines = message.strip().splitlines()
        assert len(lines) == 1, message
        assert path.name in lines[0], message  # the culprit file is named
    else:
        assert message == ""


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(st.one_of(JOB.map(_render), raw_text))
def test_fuzzed_job_files(root: Path, text: str):
    _check(root, root / "jobs" / "fuzz.yaml", text, ["--job", str(root / "jobs" / "fuzz.yaml")])


@SETTINGS
@given(st.one_of(CPU.map(_render), raw_text))
def test_fuzzed_cpu_model_files(root: Path, text: str):
    _check(root, root / "cpumodels" / "fuzz.yaml", text, [])


@SETTINGS
@given(st.one_of(KERNEL.map(_render), raw_text))
def test_fuzzed_kernel_files(root: Path, text: str):
    _check(root, root / "kernels" / "fuzz.yaml", text, [])
