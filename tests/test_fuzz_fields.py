"""Fuzzing that gets past the front door: each valid data file of the repository with exactly one field
mutated (a new value, the field removed, an unknown field added). `farm check` must accept it or reject it
with one line naming the file (exit 2); and what it accepts must also survive the next stage, as a run would
meet it: a kernel is prepared (prebuilt: its image, release and modules resolved and its guest image made;
from source: its content key computed from source, patches and config), a job is planned over the catalog.
Generated documents that get past YAML and top-level checks are counted: most of them must."""

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
from farm.errors import FarmError

from . import faultlib
from .conftest import REPO

EXAMPLES = 200
KINDS = {"kernels": "kernels", "jobs": "jobs", "cpumodels": "cpumodels", "tests": "guests/tests"}


def _valid(kind: str) -> list[tuple[str, dict]]:
    folder = REPO / KINDS[kind]
    return [(p.name, yaml.safe_load(p.read_text())) for p in sorted(folder.glob("*.yaml"))]


# values a data file plausibly holds, right or wrong: drawn as often as all the random ones together
specials = st.sampled_from(["stock", "linux-6.1", "Broadwell", "cpuinfo", "tinyconfig", "guest.config", "../x", "/etc/passwd",
                     "{release}", "{rel}", "/lib/modules/{rel}/kernel", "{", "}", "*", "-cpu", "", " ", "a\nb",
                     "patches/xcr0", "drivers/virtio/virtio", "/boot/vmlinuz-*", "tcg", "kvm", "ktap", "exit-code",
                     "/lib/modules/{release}/kernel", "/lib/modules/{release.x}/kernel", "/x/{0}", 0, -1, 4, 139])
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), specials,
)
value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(
                                                       ["image", "modules", "load", "debian", "git", "dir", "base",
                                                        "fragments", "boot", "test", "build", "tcg", "x"]),
                                                       inner, max_size=3)), max_leaves=6) | specials


def _mutate(doc: dict, data, others: list[dict]) -> dict:
    """One field changed: at the top level or one level down (prebuilt.modules, timeouts.boot, ...); the new
    value is random, or the same field's value from another valid file (plausible, so it gets further)."""
    doc = dict(doc)
    target = doc
    keys = list(doc)
    nested = [k for k in keys if isinstance(doc[k], dict)]
    if nested and data.draw(st.booleans()):
        k = data.draw(st.sampled_from(nested))
        target = doc[k] = dict(doc[k])
        keys = list(target)
    action = data.draw(st.sampled_from(["set", "set", "swap", "swap", "edit", "edit", "drop", "add"]))
    strings = [k for k in keys if isinstance(target[k], str)]
    if action == "edit" and strings:  # a plausible typo in a string: a placeholder, a brace, a path step
        k = data.draw(st.sampled_from(strings))
        at = data.draw(st.integers(0, len(target[k])))
        bit = data.draw(st.sampled_from(["{rel}", "{release}", "{", "}", "/..", "*", " ", "\n", "{0}", "%s"]))
        target[k] = target[k][:at] + bit + target[k][at:]
        return doc
    donors = [o.get(k) for o in others for k in keys if k in o and o.get(k) is not None]
    if action == "swap" and keys and target is doc:
        k = data.draw(st.sampled_from(keys))
        choices = [o[k] for o in others if k in o]
        if choices:
            target[k] = data.draw(st.sampled_from(choices))
            return doc
    if action == "drop" and keys:
        target.pop(data.draw(st.sampled_from(keys)))
    elif action == "add":
        target[data.draw(st.text(min_size=1, max_size=8))] = data.draw(value)
    elif keys:
        target[data.draw(st.sampled_from(keys))] = data.draw(value | st.sampled_from(donors or [None]))
    return doc


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return faultlib.make_root(tmp_path_factory.mktemp("fuzz-fields"))


def _farm_check(root: Path, args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    old = os.environ.get("FARM_ROOT")
    os.environ["FARM_ROOT"] = str(root)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["check", *args])
    finally:
        if old is None:
            os.environ.pop("FARM_ROOT")
        else:
            os.environ["FARM_ROOT"] = old
    return code, err.getvalue()


def _next_stage(root: Path, kind: str, name: str) -> None:
    """What a run does with an accepted file next; a FarmError is fine (one line), anything else is a bug."""
    from farm.catalog import Catalog
    from farm.guest.image import ImageBuilder
    from farm.guest.keys import client_key
    from farm.paths import cache_root
    from farm.prepare import prepare_kernel

    catalog = Catalog(root)
    try:
        if kind == "kernels":
            kernel = next(k for k in catalog.kernels.values() if Path(k.path).name == name)
            if kernel.prebuilt:
                builder = ImageBuilder(cache_root(), root / "guests", client_key(cache_root() / "keys"))
                prepared = prepare_kernel(kernel, builder, [catalog.tests["cpuinfo"]])
                assert prepared.error == "" or "\n" not in prepared.error
            else:
                from farm.kernel.build import kernel_key

                kernel_key(kernel)
        elif kind == "jobs":
            job = catalog.job(str(root / "jobs" / name))
            assert job.kernels and job.cpus and job.tests
    except FarmError as e:
        assert "\n" not in str(e), str(e)


STATS = {"generated": 0, "accepted": 0}


def _case(root: Path, kind: str, data) -> None:
    valid = _valid(kind)
    name, doc = data.draw(st.sampled_from(valid))
    mutated = _mutate(doc, data, [d for _, d in valid])
    path = root / KINDS[kind] / name
    original = path.read_text()
    path.write_text(yaml.safe_dump(mutated, allow_unicode=True))
    try:
        code, message = _farm_check(root, ["--job", str(path)] if kind == "jobs" else [])
        assert code in (0, 2), message
        STATS["generated"] += 1
        if code == 2:
            lines = message.strip().splitlines()
            assert len(lines) == 1, message
            return
        assert message == ""
        STATS["accepted"] += 1
        _next_stage(root, kind, name)
    finally:
        path.write_text(original)


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_one_field_of_a_kernel(root: Path, data):
    _case(root, "kernels", data)


@SETTINGS
@given(st.data())
def test_one_field_of_a_job(root: Path, data):
    _case(root, "jobs", data)


@SETTINGS
@given(st.data())
def test_one_field_of_a_test(root: Path, data):
    _case(root, "tests", data)


@SETTINGS
@given(st.data())
def test_one_field_of_a_cpu_model(root: Path, data):
    _case(root, "cpumodels", data)


def test_most_mutants_reach_the_checks_past_yaml():
    """Run after the four above (pytest keeps file order): one-field mutants of valid files are mostly
    well-formed, so they test the field checks and the next stage, not the YAML reader."""
    assert STATS["generated"] >= 4 * EXAMPLES * 0.9, STATS
    assert STATS["accepted"] >= 0.15 * STATS["generated"], STATS
