"""The catalog: data files into typed objects, names matched, every bad input named by file:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from farm.catalog import Catalog
from farm.errors import InputError

from .conftest import REPO, run_farm


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(REPO)


def test_repo_data_loads(catalog: Catalog):
    for name in ("Broadwell", "Skylake-Client", "Skylake-Server", "Cascadelake-Server", "Icelake-Server", "max",
                 "qemu64"):
        assert name in catalog.cpus
    assert catalog.kernels["stock"].prebuilt is not None
    assert catalog.tests["cpuinfo"].format == "ktap"
    job = catalog.job("default")
    assert job.kernels and job.cpus and job.tests


def test_prefix_matches_both_skylakes(catalog: Catalog):
    assert catalog.match_cpus(["Skylake"]) == ["Skylake-Client", "Skylake-Server"]


def test_exact_name_and_alias_match_one(catalog: Catalog):
    assert catalog.match_cpus(["Skylake-Server"]) == ["Skylake-Server"]
    assert catalog.match_cpus(["skx"]) == ["Skylake-Server"]
    assert catalog.match_cpus(["broadwell"]) == ["Broadwell"]


def test_repeated_cpu_options_are_merged_without_duplicates(catalog: Catalog):
    assert catalog.match_cpus(["Skylake", "Skylake-Server", "max"]) == ["Skylake-Client", "Skylake-Server", "max"]


def test_unknown_cpu_lists_known_models(catalog: Catalog):
    with pytest.raises(InputError) as e:
        catalog.match_cpus(["Pentium4"])
    msg = str(e.value)
    assert "Pentium4" in msg and "Broadwell" in msg and "Skylake-Server" in msg and "\n" not in msg


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("kernels: [stock]\ncpus: [Broadwell]\ntests: [cpuinfo]\nretires: 2\n", "bad.yaml:4: job: unknown field 'retires'"),
        ("kernels: [stock]\ncpus: [Pentium]\ntests: [cpuinfo]\n", "bad.yaml:2: field 'cpus': unknown CPU model 'Pentium'"),
        ("kernels: [stock]\ncpus: [Broadwell]\ntests: [nope]\n", "bad.yaml:3: field 'tests': unknown test 'nope'"),
        ("kernels: stock2\ncpus: [Broadwell]\ntests: [cpuinfo]\n", "bad.yaml:1: field 'kernels': unknown kernel"),
        ("kernels: [stock]\ncpus: [Broadwell]\ntests: [cpuinfo]\nretries: many\n", "bad.yaml:4: field 'retries': expected an integer"),
        ("kernels: [stock]\ncpus: [Broadwell]\ntests: [cpuinfo]\ntimeouts: {boot: -1}\n", "bad.yaml:4: field 'boot': must be > 0"),
        ("kernels: [stock]\ncpus: [Broadwell\ntests: [cpuinfo]\n", "bad.yaml:3: YAML error"),
        ("- just\n- a list\n", "bad.yaml:1: expected a mapping"),
        ("cpus: [Broadwell]\ntests: [cpuinfo]\n", "job: missing required field 'kernels'"),
        ("kernels: [stock]\nkernels: [stock]\ncpus: [Broadwell]\ntests: [cpuinfo]\n", "bad.yaml:2: duplicate key 'kernels'"),
        ("kernels: []\ncpus: [Broadwell]\ntests: [cpuinfo]\n", "bad.yaml:1: field 'kernels': the list is empty"),
        ("kernels: [stock]\ncpus: [Broadwell]\ntests: [cpuinfo]\ntcg_thread: multiple\n",
         "bad.yaml:4: field 'tcg_thread': expected one of single, multi, got 'multiple'"),
    ],
)
def test_bad_job_files_are_named_by_line_and_field(farm_root: Path, text: str, expect: str):
    path = _write(farm_root, "jobs/bad.yaml", text)
    with pytest.raises(InputError) as e:
        Catalog(farm_root).job(str(path))
    assert expect in str(e.value)
    assert "\n" not in str(e.value)


def test_cpu_model_with_unknown_field(farm_root: Path):
    _write(farm_root, "cpumodels/Odd.yaml", "name: Odd\nqemu: Broadwell\nflags: [x]\n")
    with pytest.raises(InputError, match=r"Odd.yaml:3: CPU model: unknown field 'flags'"):
        Catalog(farm_root)


def test_cpu_model_qemu_string_cannot_smuggle_options(farm_root: Path):
    _write(farm_root, "cpumodels/Evil.yaml", "name: Evil\nqemu: 'Broadwell -device foo'\n")
    with pytest.raises(InputError, match=r"Evil.yaml:2: field 'qemu'"):
        Catalog(farm_root)


def test_names_cannot_escape_the_run_directory(farm_root: Path):
    _write(farm_root, "cpumodels/Evil.yaml", "name: ../../etc\nqemu: Broadwell\n")
    with pytest.raises(InputError, match=r"Evil.yaml:1: field 'name'"):
        Catalog(farm_root)


def test_kernel_extends_inherits_and_adds_patches(farm_root: Path):
    (farm_root / "kernels" / "p").mkdir()
    _write(farm_root, "kernels/p/series", "")
    _write(farm_root, "kernels/stock-extra.yaml", "name: stock-extra\nextends: stock\npatches: [p]\nbaseline: stock\n")
    cat = Catalog(farm_root)
    k = cat.kernels["stock-extra"]
    assert k.prebuilt == cat.kernels["stock"].prebuilt
    assert k.cmdline == cat.kernels["stock"].cmdline
    assert [p.name for p in k.patches] == ["p"]
    assert k.baseline == "stock"


def test_kernel_extends_unknown_and_cycles(farm_root: Path):
    _write(farm_root, "kernels/a.yaml", "name: a\nextends: b\n")
    _write(farm_root, "kernels/b.yaml", "name: b\nextends: a\n")
    with pytest.raises(InputError, match="extends itself"):
        Catalog(farm_root)
    _write(farm_root, "kernels/b.yaml", "name: b\nextends: nothere\n")
    with pytest.raises(InputError, match=r"b.yaml:2: field 'extends': unknown kernel 'nothere'"):
        Catalog(farm_root)


def test_cli_unknown_cpu_exits_2_with_one_line():
    result = run_farm("run", "--cpu", "Pentium4")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "Pentium4" in lines[0] and "Skylake-Client" in lines[0]


def test_cli_unknown_kernel_and_test_exit_2():
    for option, known in (("--kernel", "stock"), ("--test", "cpuinfo")):
        result = run_farm("run", option, "nothing-like-it")
        assert result.returncode == 2, result.stderr
        assert known in result.stderr


def test_cli_bad_job_file_exits_2_naming_the_line(farm_root: Path):
    path = _write(farm_root, "jobs/bad.yaml", "kernels: [stock]\ncpus: [Broadwell]\ntests: [cpuinfo]\nbogus: 1\n")
    result = run_farm("run", "--job", str(path), root=farm_root)
    assert result.returncode == 2
    assert "bad.yaml:4" in result.stderr and "bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_list_shows_the_data():
    cpus = run_farm("list", "cpus")
    assert cpus.returncode == 0
    assert "Skylake-Server" in cpus.stdout and "-cpu Broadwell" in cpus.stdout
    for what, expect in (("kernels", "stock"), ("tests", "cpuinfo"), ("jobs", "default")):
        result = run_farm("list", what)
        assert result.returncode == 0 and expect in result.stdout


def test_every_test_kind_has_a_builder():
    from farm.catalog import TEST_KINDS
    from farm.guest.image import BUILDERS

    assert set(BUILDERS) == set(TEST_KINDS)
    assert {t.kind for t in Catalog(REPO).tests.values()} <= set(TEST_KINDS)


def test_provides_is_inherited_through_extends_and_validated(farm_root: Path):
    k = farm_root / "kernels"
    (k / "child.yaml").write_text("name: child\nextends: linux-6.1-xcr0\nprovides: [other-feature]\n")
    cat = Catalog(farm_root)
    assert cat.kernels["linux-6.1-xcr0"].provides == ("xcr0",)
    assert cat.kernels["child"].provides == ("xcr0", "other-feature")
    assert cat.kernels["linux-6.1"].provides == ()
    assert cat.tests["xcr0"].checks == ("xcr0",)
    (k / "child.yaml").write_text("name: child\nextends: linux-6.1\nprovides: [Bad Name]\n")
    with pytest.raises(InputError, match=r"child.yaml:3: field 'provides': 'Bad Name'"):
        Catalog(farm_root)


@pytest.mark.parametrize(("modules", "message"), [
    ("/lib/modules/{rel}/kernel", "field 'modules': unknown placeholder {rel} (known: {release})"),
    ("/lib/modules/{release/kernel", "field 'modules'"),
])
def test_prebuilt_module_placeholders_are_checked_when_the_catalog_loads(farm_root: Path, modules, message):
    (farm_root / "kernels" / "bad.yaml").write_text(
        f"name: bad\nprebuilt:\n  image: /boot/vmlinuz-*\n  modules: {modules}\n  load: [x]\ncmdline: c\n")
    with pytest.raises(InputError, match=r"bad.yaml:\d+: " + re.escape(message)):
        Catalog(farm_root)
    result = run_farm("check", root=farm_root)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "bad.yaml" in result.stderr
