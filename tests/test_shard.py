"""`--shard I/N` slices and `farm merge`: N shards cover every cell once, and merge back into one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.errors import InputError
from farm.merge import merge
from farm.plan import parse_shard
from farm.plan import shard_of as shard
from farm.results.run import Cell, HostRecord, KernelRecord, Run, RunWriter, Status

from .conftest import run_farm


def _cells(n: int = 7) -> list[Cell]:
    return [Cell(id=f"stock/cpu{i}/cpuinfo", kernel="stock", cpu=f"cpu{i}", test="cpuinfo") for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 9])
def test_shards_cover_every_cell_exactly_once(n):
    cells = _cells(7)
    parts = [shard(cells, i, n) for i in range(1, n + 1)]
    ids = [c.id for p in parts for c in p]
    assert sorted(ids) == sorted(c.id for c in cells)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert [c.id for c in shard(_cells(7), 1, n)] == [c.id for c in parts[0]]  # deterministic


@pytest.mark.parametrize("text", ["", "1", "0/2", "3/2", "a/b", "1/0", "-1/2", "1/2/3"])
def test_bad_shard_specs(text):
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)


def test_good_shard_spec():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1 / 1 ") == (1, 1)


def _shard_dir(root: Path, i: int, n: int, statuses: dict[str, str] | None = None) -> Path:
    d = root / f"shard{i}"
    cells = shard(_cells(7), i, n)
    for c in cells:
        c.status = Status((statuses or {}).get(c.id, "PASS"))
        c.host = f"runner{i}"
        cell_dir = d / "cells" / c.kernel / c.cpu / c.test
        cell_dir.mkdir(parents=True)
        (cell_dir / "console.log").write_text(f"farm-init: ready\n{c.id} on runner {i}\n")
        c.files = {"console": str((cell_dir / "console.log").relative_to(d))}
    run = Run(run_id=f"night-{i}", job="default", job_file="jobs/default.yaml", started=f"2026-01-01T00:0{i}:00",
              host=HostRecord(hostname=f"runner{i}", shard=f"{i}/{n}", accel="tcg", qemu="QEMU 7.2",
                              accel_reason="test", cores=2, parallel=2), cells=cells)
    run.finished = f"2026-01-01T01:0{i}:00"
    run.kernels = {"stock": KernelRecord(source="prebuilt")}
    RunWriter(run, d / "run.json").save()
    return d


def test_merge_joins_shards_in_job_order_with_their_files(tmp_path):
    dirs = [_shard_dir(tmp_path, i, 3) for i in (1, 2, 3)]
    merged = merge(tmp_path / "merged", list(reversed(dirs)))
    assert [c.id for c in merged.cells] == [c.id for c in _cells(7)]  # the unsharded order
    assert merged.started == "2026-01-01T00:01:00" and merged.finished == "2026-01-01T01:03:00"
    assert [s["shard"] for s in merged.host.shards] == ["3/3", "2/3", "1/3"]
    for c in merged.cells:
        assert c.id in (tmp_path / "merged" / c.files["console"]).read_text()
    assert merged.exit_code() == 0


def test_merge_refuses_overlap_and_mixed_jobs(tmp_path):
    a = _shard_dir(tmp_path / "a", 1, 2)
    b = _shard_dir(tmp_path / "b", 1, 2)
    with pytest.raises(InputError, match="run by both"):
        merge(tmp_path / "m1", [a, b])
    data = json.loads((b / "run.json").read_text())
    data["job"] = "other"
    (b / "run.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="different jobs"):
        merge(tmp_path / "m2", [a, b])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(InputError, match="not empty"):
        merge(tmp_path / "full", [a])


def test_farm_merge_command_writes_reports_and_exit_code(tmp_path):
    failing = "stock/cpu1/cpuinfo"
    dirs = [_shard_dir(tmp_path, 1, 2), _shard_dir(tmp_path, 2, 2, {failing: "FAIL"})]
    out = tmp_path / "merged"
    r = run_farm("merge", str(out), *map(str, dirs), timeout=120)
    assert r.returncode == 1, r.stderr  # a failed cell in any shard fails the merged run
    assert r.stdout.strip() == str(out)
    run = json.loads((out / "run.json").read_text())
    assert len(run["cells"]) == 7
    assert (out / "report.html").is_file() and failing in (out / "report.html").read_text()
    r = run_farm("merge", str(tmp_path / "again"), str(tmp_path / "missing"), timeout=120)
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_shard_option_runs_a_slice(tmp_path, farm_root):
    """`farm run --shard` on a job whose kernel cannot boot: no QEMU, just the slice in run.json."""
    (farm_root / "kernels" / "nowhere.yaml").write_text(
        "name: nowhere\nextends: stock\nprebuilt:\n  image: /nonexistent/vmlinuz-*\n")
    runs = []
    for i in (1, 2):
        out = tmp_path / f"s{i}"
        r = run_farm("run", "--job", "probe", "--kernel", "nowhere", "--cpu", "Broadwell", "--cpu", "Skylake-Client",
                     "--cpu", "Skylake-Server", "--shard", f"{i}/2", "--out", str(out), root=farm_root, timeout=300)
        assert r.returncode == 3, r.stderr  # ERROR at build: an infrastructure failure, but a complete record
        runs.append(json.loads((out / "run.json").read_text()))
    assert [c["cpu"] for c in runs[0]["cells"]] == ["Broadwell", "Skylake-Server"]
    assert [c["cpu"] for c in runs[1]["cells"]] == ["Skylake-Client"]
    assert runs[0]["host"]["shard"] == "1/2"
    r = run_farm("run", "--shard", "3/2", "--out", str(tmp_path / "bad"), root=farm_root)
    assert r.returncode == 2 and "--shard" in r.stderr


def test_ci_examples_shard_merge_and_keep_history():
    import yaml

    from .conftest import REPO

    gh = yaml.safe_load((REPO / "ci-examples" / "github-actions.yml").read_text())
    shards = gh["jobs"]["shard"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, int(gh["env"]["SHARDS"]) + 1))
    steps = " ".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in gh["jobs"]["merge"]["steps"])
    assert "--shard" in str(gh["jobs"]["shard"]["steps"]) and "farm merge" in steps
    assert "actions/cache/restore" in steps and "actions/cache/save" in steps and "deploy-pages" in steps
    gl = yaml.safe_load((REPO / "ci-examples" / "gitlab-ci.yml").read_text())
    assert gl["farm-shard"]["parallel"] >= 2 and "--shard" in " ".join(gl["farm-shard"]["script"])
    assert "farm merge" in " ".join(gl["pages"]["script"]) and gl["pages"]["cache"]["paths"] == ["history/"]
    assert (REPO / "docs" / "nightly-ci.md").is_file()
