"""The farm as a client of a real LAVA lab: lava-server (gunicorn, scheduler, publisher), PostgreSQL and one
lava-dispatcher worker with one qemu device, all from Debian 12's packages, started by tests/lava/lab.py.

Every cell here is a real LAVA job that boots a real QEMU guest on the lab's worker. The same cells run
locally too, and their statuses and case names must match. The LAVA packages come with ./install.sh --lava;
without them this module is skipped with that reason, unless FARM_LAVA_TESTS=1 (.ci/run sets it), which makes
a missing lab a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from .conftest import run_farm
from .faultlib import add_job, add_test, make_root
from .lava.lab import NEEDED, Lab

pytestmark = pytest.mark.boot

if not all(shutil.which(p) for p in NEEDED):
    if os.environ.get("FARM_LAVA_TESTS") == "1":
        raise RuntimeError(f"FARM_LAVA_TESTS=1 but the LAVA lab's programs are missing ({', '.join(NEEDED)}): "
                           "run ./install.sh --lava")
    pytest.skip("LAVA not installed: ./install.sh --lava installs it (FARM_LAVA_TESTS=1 makes this a failure)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def lab():
    # Its own folder, not pytest's: the server's services run as lavaserver and must reach their log folder.
    lab = Lab.start()
    print(f"LAVA lab up in {lab.timings['total']} s: {lab.timings}", file=sys.stderr)
    yield lab
    lab.stop()
    # no job outlives the lab: a farm killed before it could cancel leaves lava-run and QEMU to the lab's stop
    left = subprocess.run(["pgrep", "-f", r"lava-run \[job|qemu-system-x86_64 -nographic"], capture_output=True,
                          text=True).stdout.split()
    assert not left, f"processes of LAVA jobs left after the lab stopped: {left}"


def lava_args(lab: Lab) -> list[str]:
    return ["--lava", lab.url, "--lava-token-file", str(lab.token_file)]


def api(lab: Lab, path: str, **kw):
    r = requests.get(f"{lab.url}/api/v0.2/{path}", headers={"Authorization": f"Token {lab.token()}"}, timeout=30,
                     **kw)
    r.raise_for_status()
    return r


def job_log(lab: Lab, job_id: int) -> str:
    """A job's log so far ("" until the worker has sent any: the API answers 404 then)."""
    r = requests.get(f"{lab.url}/api/v0.2/jobs/{job_id}/logs/", headers={"Authorization": f"Token {lab.token()}"},
                     timeout=30)
    return r.text if r.status_code == 200 else ""


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def cells(out: Path) -> dict[str, dict]:
    return {c["id"]: c for c in run_json(out)["cells"]}


def verdicts(out: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """What must match between a local run and a LAVA run: each cell's status and its cases."""
    return {i: (c["status"], [(k["name"], k["status"]) for k in c["cases"]]) for i, c in cells(out).items()}


def test_probe_job_through_lava_matches_the_local_run(lab, tmp_path):
    local, lava = tmp_path / "local", tmp_path / "lava"
    r = run_farm("run", "--job", "probe", "-j", "1", "--out", str(local))
    assert r.returncode == 0, r.stderr
    r = run_farm("run", "--job", "probe", "-j", "0", *lava_args(lab), "--out", str(lava))
    assert r.returncode == 0, r.stderr
    assert verdicts(lava) == verdicts(local)
    assert all(status == "PASS" for status, _ in verdicts(lava).values())
    report = (lava / "report.html").read_text()
    for cell_id, c in cells(lava).items():
        assert c["host"] == f"lava@{lab.url.removeprefix('http://')}"
        [job] = c["lab_jobs"]  # one attempt, one LAVA job
        assert job["health"] == "Complete" and job["url"] == f"{lab.url}/scheduler/job/{job['job_id']}"
        assert f'<a href="{job["url"]}">job {job["job_id"]}</a>' in report
        assert api(lab, f"jobs/{job['job_id']}/").json()["description"] == f"farm {cell_id}"
        # the model wins: one -cpu on the worker's QEMU command line, the cell's, and no KVM
        cmd = c["qemu_command"]
        assert cmd.count("-cpu") == 1 and cmd[cmd.index("-cpu") + 1] == c["cpu_qemu"] and "-enable-kvm" not in cmd
        # what the model delivered is what it delivers locally (Skylake-Server's PKRU: XCR0 0x207)
        assert c["facts"] == cells(local)[cell_id]["facts"]
        console = (lava / c["files"]["console"]).read_text()
        assert "farm-init: ready" in console and "farm-test-begin" in console
        assert (lava / c["files"]["output"]).read_text().startswith("vendor=")
    assert cells(lava)["stock/Skylake-Server/cpuinfo"]["facts"]["xcr0"] == "0x207"
    assert cells(lava)["stock/Broadwell/cpuinfo"]["facts"]["xcr0"] == "0x7"


def test_one_xcr0_cell_of_a_farm_built_kernel_through_lava(lab, tmp_path):
    pick = ["--job", "xcr0", "--kernel", "linux-6.1-xcr0", "--cpu", "Skylake-Server", "--test", "xcr0"]
    local, lava = tmp_path / "local", tmp_path / "lava"
    r = run_farm("run", *pick, "-j", "1", "--out", str(local), timeout=3600)
    assert r.returncode == 0, r.stderr
    r = run_farm("run", *pick, "-j", "0", *lava_args(lab), "--out", str(lava), timeout=3600)
    assert r.returncode == 0, r.stderr
    assert verdicts(lava) == verdicts(local)
    [c] = cells(lava).values()
    assert c["status"] == "PASS" and len(c["cases"]) >= 40 and c["lab_jobs"][0]["health"] == "Complete"
    assert "/kernels/" in c["kernel_image"]  # the farm's own build, from the kernel cache


def fault_root(tmp_path: Path, name: str, script: str, timeout: float = 60, boot: float = 90,
               retries: int = 1) -> Path:
    root = make_root(tmp_path)
    add_test(root, name, script, timeout=timeout)
    add_job(root, ["stock"], [name], boot=boot, retries=retries)
    return root


def run_fault(lab: Lab, root: Path, out: Path, *extra: str):
    return run_farm("run", "--job", str(root / "jobs" / "fault.yaml"), "--out", str(out), *extra, root=root)


def test_a_kernel_panic_is_a_crash_never_retried(lab, tmp_path):
    root = fault_root(tmp_path, "panic", "sysrq-panic.sh")
    r = run_fault(lab, root, tmp_path / "out", "-j", "0", *lava_args(lab))
    assert r.returncode == 1, r.stderr
    [c] = cells(tmp_path / "out").values()
    assert c["status"] == "CRASH" and c["reason"].startswith("Kernel panic - not syncing: sysrq triggered crash")
    assert c["attempts"] == 1 and len(c["lab_jobs"]) == 1
    # LAVA saw it too: the job's failure pattern fired
    assert (c["lab_jobs"][0]["health"], c["lab_jobs"][0]["error_type"], c["lab_jobs"][0]["error_msg"]) == \
        ("Incomplete", "Test", "kernel panic")


def test_an_incomplete_job_is_an_error_with_lavas_reason_retried_by_the_farm_only(lab, tmp_path):
    # a boot timeout of 3 s: LAVA gives up waiting for the prompt, the job is Incomplete
    root = fault_root(tmp_path, "healthy", "fails.sh", boot=3)
    r = run_fault(lab, root, tmp_path / "out", "-j", "0", *lava_args(lab))
    assert r.returncode == 3, r.stderr
    [c] = cells(tmp_path / "out").values()
    assert (c["status"], c["stage"]) == ("ERROR", "boot")
    # which of LAVA's nested timeouts fires first (the prompt wait, the login action around it, or the
    # auto-login action around both) is a race; all three were seen here
    assert re.search(r"Incomplete: Job error: (wait for prompt|(auto-)?login-action) timed out",
                     c["reason"]), c["reason"]
    # the farm's retry policy: one more attempt on a fresh job; LAVA itself tried each boot once
    assert c["attempts"] == 2 and [j["health"] for j in c["lab_jobs"]] == ["Incomplete", "Incomplete"]
    for job in c["lab_jobs"]:
        assert "failed: 1 of 1 attempts" in job_log(lab, job["job_id"])
    assert (tmp_path / "out" / c["files"]["attempt1_console"]).exists()  # the first try's evidence is kept


def test_a_hung_test_times_out_as_it_does_locally(lab, tmp_path):
    root = fault_root(tmp_path, "hang", "hang.sh", timeout=5, retries=0)
    r = run_fault(lab, root, tmp_path / "local", "-j", "1")
    assert r.returncode == 1, r.stderr
    r = run_fault(lab, root, tmp_path / "lava", "-j", "0", *lava_args(lab))
    assert r.returncode == 1, r.stderr
    assert verdicts(tmp_path / "lava") == verdicts(tmp_path / "local")
    [c] = cells(tmp_path / "lava").values()
    assert c["status"] == "TIMEOUT" and "timed out" in c["lab_jobs"][0]["error_msg"]


def start_hanging_run(lab, tmp_path):
    """`farm run` of one cell whose test hangs, on the lab only, in the background: (process, run dir)."""
    root = fault_root(tmp_path, "hang", "hang.sh", timeout=120)
    out = tmp_path / "out"
    env = dict(os.environ, FARM_ROOT=str(root), CI="true")
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", "--job", str(root / "jobs" / "fault.yaml"),
                             "--out", str(out), "-j", "0", *lava_args(lab)], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


def test_a_job_cancelled_by_a_user_leaves_the_cell_pending(lab, tmp_path):
    proc, out = start_hanging_run(lab, tmp_path)
    try:
        job_id = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the test runs in the guest, then cancel as a user
            running = api(lab, "jobs/", params={"state": "Running"}).json()["results"]
            if running and "farm-test-begin" in job_log(lab, running[0]["id"]):
                job_id = running[0]["id"]
                break
            time.sleep(0.5)
        assert job_id, "the job never reached the test"
        api(lab, f"jobs/{job_id}/cancel/")
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr
    [c] = cells(out).values()
    assert c["status"] == "PENDING" and "cancelled in LAVA" in c["reason"] and c["attempts"] == 1
    assert [j["health"] for j in c["lab_jobs"]] == ["Canceled"]


def test_interrupting_the_farm_cancels_its_lava_job(lab, tmp_path):
    proc, out = start_hanging_run(lab, tmp_path)
    try:
        deadline = time.monotonic() + 120
        job_id = None
        while time.monotonic() < deadline and job_id is None:
            running = api(lab, "jobs/", params={"state": "Running"}).json()["results"]
            job_id = running[0]["id"] if running else None
            time.sleep(0.3)
        assert job_id
        proc.send_signal(2)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    deadline = time.monotonic() + 60
    while api(lab, f"jobs/{job_id}/").json()["state"] != "Finished" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert api(lab, f"jobs/{job_id}/").json()["health"] == "Canceled"  # the lab is not left running it
    [c] = cells(out).values()
    assert c["status"] == "PENDING"


def test_local_slots_and_a_lava_lab_share_one_run(lab, tmp_path):
    out = tmp_path / "mixed"
    r = run_farm("run", "--job", "probe", "-j", "1", *lava_args(lab), "--out", str(out))
    assert r.returncode == 0, r.stderr
    hosts = {c["host"] for c in cells(out).values()}
    assert hosts == {"local", f"lava@{lab.url.removeprefix('http://')}"}
    record = run_json(out)
    assert set(record["host"]["hosts"]) >= {f"lava@{lab.url.removeprefix('http://')}"}
    assert all(c["status"] == "PASS" for c in cells(out).values())


def test_a_bad_token_or_lab_is_refused_before_any_cell(lab, tmp_path):
    bad = tmp_path / "token"
    bad.write_text("not-the-token\n")
    bad.chmod(0o600)
    r = run_farm("run", "--job", "probe", "-j", "0", "--lava", lab.url, "--lava-token-file", str(bad),
                 "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "refused the token" in r.stderr and "not-the-token" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr
    bad.chmod(0o644)
    r = run_farm("run", "--job", "probe", "-j", "0", "--lava", lab.url, "--lava-token-file", str(bad),
                 "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "chmod 600" in r.stderr
    r = run_farm("run", "--job", "probe", "-j", "0", "--lava", "http://127.0.0.1:9", "--out", str(tmp_path / "c"),
                 env={"FARM_LAVA_TOKEN": lab.token()})
    assert r.returncode == 3 and "LAVA at http://127.0.0.1:9" in r.stderr
    r = run_farm("run", "--job", "probe", "-j", "0", "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "-j 0" in r.stderr


def test_lava_jobs_writes_definitions_the_lab_runs_as_they_are(lab, tmp_path):
    out = tmp_path / "defs"
    r = run_farm("lava-jobs", "probe", "--out", str(out))
    assert r.returncode == 0, r.stderr
    written = [Path(p) for p in r.stdout.split()]
    assert sorted(p.relative_to(out).as_posix() for p in written) == \
        ["jobs/stock/Broadwell/cpuinfo.yaml", "jobs/stock/Skylake-Server/cpuinfo.yaml"]
    for p in written:
        job = yaml.safe_load(p.read_text())
        url = job["actions"][0]["deploy"]["images"]["kernel"]["url"]
        assert url.startswith(f"file://{out}/artifacts/")
    # submitted through the lab's own API, not the farm's: it completes and prints the cases the farm expects
    definition = (out / "jobs/stock/Skylake-Server/cpuinfo.yaml").read_text()
    h = {"Authorization": f"Token {lab.token()}"}
    job_id = requests.post(f"{lab.url}/api/v0.2/jobs/", json={"definition": definition}, headers=h,
                           timeout=30).json()["job_ids"][0]
    deadline = time.monotonic() + 240
    while api(lab, f"jobs/{job_id}/").json()["state"] != "Finished" and time.monotonic() < deadline:
        time.sleep(1)
    assert api(lab, f"jobs/{job_id}/").json()["health"] == "Complete"
    log = job_log(lab, job_id)
    assert "ok 3 xsave_size_matches_xcr0" in log and "xcr0=0x207" in log
    r = run_farm("lava-jobs", "probe", "--out", str(tmp_path / "e"), "--artifacts-url", "ftp://x")
    assert r.returncode == 2 and "--artifacts-url" in r.stderr

