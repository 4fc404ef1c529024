"""Remote farm hosts, for real: network namespaces on this machine, each running Debian's OpenSSH server.

The playbook (ansible/site.yml) provisions them over SSH (twice: the second run must change nothing), then the
farm uses them as the `farm` user it made: guests booted there, a matrix spread over two hosts plus this
machine, and one host killed mid-run whose cells finish elsewhere. Only namespace addresses and loopback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farm.catalog import Catalog
from farm.guest.image import ImageBuilder
from farm.guest.keys import client_key
from farm.hosts import Host, load
from farm.paths import cache_root
from farm.prepare import prepare_kernel
from farm.vm.base import HostLost, MachineSpec
from farm.vm.remote import HostKeyRejected, RemotePool

from . import netns
from .conftest import REPO, failed_cells, run_farm

pytestmark = [pytest.mark.boot, pytest.mark.skipif(bool(netns.available()), reason=netns.available() or "")]

ANSIBLE = Path(sys.executable).parent


class Lab:
    def __init__(self, folder: Path, hosts: dict[str, netns.NetnsHost], root_key: Path):
        self.dir = folder
        self.hosts = hosts
        self.root_key = root_key
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text("".join(h.known_hosts_line() for h in hosts.values()))
        self.key = client_key(cache_root() / "keys")
        self.inventory = folder / "inventory.yml"

    def write_inventory(self, wheelhouse: Path, slots: dict[str, int]) -> None:
        lines = [
            "all:", "  children:", "    farm_hosts:", "      vars:",
            "        ansible_user: farm",
            "        farm_known_hosts: known_hosts",
            "        farm_host_apt_update: false",
            f"        farm_host_pip_args: --no-index --find-links {wheelhouse}",  # the namespaces see this folder
            f"        farm_host_orchestrator_pubkey_file: {self.key.path}.pub",
            "      hosts:",
        ]
        for name, h in self.hosts.items():
            lines += [f"        {name}:", f"          ansible_host: {h.address}",
                      f"          farm_slots: {slots.get(name, 1)}", f"          farm_workdir: {h.workdir}",
                      f"          farm_host_venv: {h.workdir}/venv", f"          farm_host_wheel_dir: {h.workdir}/wheels"]
        self.inventory.write_text("\n".join(lines) + "\n")

    def playbook(self) -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible" / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   # one connection per host for the whole play, gone 2 s after it
                   ANSIBLE_SSH_ARGS=f"-o ControlMaster=auto -o ControlPersist=2s -o ControlPath={self.dir}/cp-%C "
                                    f"-o UserKnownHostsFile={self.known_hosts} "
                                    f"-o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null",
                   ANSIBLE_LOCAL_TEMP=str(self.dir / "ansible-tmp"), PATH=f"{ANSIBLE}:{os.environ['PATH']}")
        return subprocess.run(
            [str(ANSIBLE / "ansible-playbook"), "-i", str(self.inventory), str(REPO / "ansible" / "site.yml"),
             "-f", "1",  # the namespaces share one /etc/passwd: provision them one after the other
             "-e", "ansible_user=root", "-e", f"ansible_ssh_private_key_file={self.root_key}",
             "-e", "ansible_become_method=su"],
            capture_output=True, text=True, timeout=600, env=env, cwd=REPO / "ansible")

    def host(self, name: str, **kw) -> Host:
        h = self.hosts[name]
        return Host(name=name, address=h.address, user=kw.get("user", "farm"), workdir=h.workdir,
                    known_hosts=kw.get("known_hosts", self.known_hosts), slots=kw.get("slots", 1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    root_key = folder / "root_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root_key)], check=True)
    made: dict[str, netns.NetnsHost] = {}
    try:
        for name in ("hosta", "hostb"):
            made[name] = netns.NetnsHost(name, [(folder / "root_key.pub").read_text()])
        lab = Lab(folder, made, root_key)
        wheelhouse = folder / "wheelhouse"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "--wheel-dir", str(wheelhouse), str(REPO)], check=True, capture_output=True, timeout=600)
        lab.write_inventory(wheelhouse, {"hosta": 1, "hostb": 2})
        lab.first = lab.playbook()
        lab.second = lab.playbook() if lab.first.returncode == 0 else None
        yield lab
    finally:
        for h in made.values():
            h.close()


def _recap(output: str) -> dict[str, dict[str, int]]:
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def test_playbook_provisions_hosts_and_second_run_changes_nothing(lab):
    assert lab.first.returncode == 0, lab.first.stdout[-3000:] + lab.first.stderr[-2000:]
    first = _recap(lab.first.stdout)
    assert set(first) == {"hosta", "hostb"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in first.values())
    assert lab.second.returncode == 0, lab.second.stdout[-3000:]
    second = _recap(lab.second.stdout)
    assert {name: r["changed"] for name, r in second.items()} == {"hosta": 0, "hostb": 0}, lab.second.stdout[-3000:]
    # what it made: the farm user in kvm, the orchestrator's key, the farm package in its venv
    assert "kvm" in subprocess.run(["id", "-nG", "farm"], capture_output=True, text=True).stdout.split()
    assert lab.key.public.split()[1] in Path("/home/farm/.ssh/authorized_keys").read_text()
    for h in lab.hosts.values():
        # this project (its VM registry), installed by path from the wheel the role built of this checkout,
        # never a same-named package resolved from an index
        r = subprocess.run([f"{h.workdir}/venv/bin/python", "-c", "import farm.vm.registry as r; print(r.__file__)"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert Path(r.stdout.strip()).read_bytes() == (REPO / "farm" / "vm" / "registry.py").read_bytes()
        assert list(Path(h.workdir, "wheels").glob("farm-*.whl")), "the wheel the role built was not copied"
        assert Path(h.workdir).stat().st_uid == int(subprocess.check_output(["id", "-u", "farm"]))


def test_example_inventory_and_playbook_pass_ansible_lint():
    r = subprocess.run([str(ANSIBLE / "ansible-lint"), "--offline", "--nocolor"], capture_output=True, text=True,
                       cwd=REPO / "ansible", timeout=300, env=dict(os.environ, PATH=f"{ANSIBLE}:{os.environ['PATH']}"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def stock(lab):
    catalog = Catalog(REPO)
    builder = ImageBuilder(cache_root(), REPO / "guests", lab.key)
    kernel = catalog.kernels["stock"]
    prepared = prepare_kernel(kernel, builder, [catalog.tests["cpuinfo"]])
    return MachineSpec(prepared.image, prepared.guest.initrd, kernel.cmdline, "Skylake-Server", "tcg",
                       prepared.guest.host_key, smp=1)


def test_remote_guest_boots_runs_and_copies_once_per_digest(lab, stock, tmp_path):
    assert lab.first.returncode == 0
    pool = RemotePool(lab.host("hosta"), lab.key)
    try:
        pool.ready()
        assert pool.accel in ("tcg", "kvm") and pool.accel_reason
        with pool.create(stock, tmp_path / "one", boot_timeout=120) as vm:
            local = tmp_path / "hello.sh"
            local.write_text("#!/bin/sh\necho \"argv:$1:$2\"\n")
            vm.copy(local, "/tmp/hello.sh")
            r = vm.run(["/tmp/hello.sh", "a b", "$(reboot)"], timeout=20)
            assert (r.exit_status, r.stdout) == (0, "argv:a b:$(reboot)\n")
            assert vm.run(["sh", "-c", "exit 7"], timeout=10).exit_status == 7
            assert vm.run(["sleep", "30"], timeout=1.5).timed_out
            assert vm.diagnose().running
            assert "avx512f" in vm.boot.filtered_features  # QEMU's stderr came back from the host
            assert vm.boot.command[0] == "qemu-system-x86_64" and lab.hosts["hosta"].workdir in vm.boot.command[
                vm.boot.command.index("-kernel") + 1]
        console = (tmp_path / "one" / "console.log").read_text()
        assert "farm-init: ready" in console  # the console was streamed back here
        assert len(pool.uploads) == 2  # kernel and initrd
        with pool.create(stock, tmp_path / "two", boot_timeout=120) as vm:
            assert vm.run(["true"], timeout=10).exit_status == 0
        assert len(pool.uploads) == 2  # the second guest found both already there
        fresh = RemotePool(lab.host("hosta"), lab.key)  # a new orchestrator: the host still has them
        try:
            with fresh.create(stock, tmp_path / "three", boot_timeout=120):
                pass
            assert fresh.uploads == []
        finally:
            fresh.close()
        time.sleep(0.5)
        procs = [Path(f"/proc/{p}/comm").read_text().strip() for p in lab.hosts["hosta"].pids()
                 if Path(f"/proc/{p}/comm").exists()]
        assert not [p for p in procs if p.startswith("qemu")], procs  # no guest outlives close()
        assert not list(Path(lab.hosts["hosta"].workdir, "vms").iterdir())
    finally:
        pool.close()


def test_unknown_or_changed_host_key_is_refused(lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected, match="not in"):
        RemotePool(lab.host("hosta", known_hosts=empty), lab.key).connect()
    other = " ".join(lab.hosts["hostb"].host_key.split()[:2])
    wrong = tmp_path / "wrong"
    wrong.write_text(f"{lab.hosts['hosta'].address} {other}\n")
    with pytest.raises(HostKeyRejected, match="differs"):
        RemotePool(lab.host("hosta", known_hosts=wrong), lab.key).connect()
    assert "hosta" not in empty.read_text()  # nothing was written back either


def test_unreachable_host_is_host_lost(lab, stock, tmp_path):
    # a namespace address with no SSH server on the port: only our own addresses are ever tried
    host = Host(name="nowhere", address=lab.hosts["hosta"].address, port=2, known_hosts=lab.known_hosts,
                workdir="/var/tmp/x")
    pool = RemotePool(host, lab.key, connect_timeout=2)
    with pytest.raises(HostLost):
        pool.create(stock, tmp_path / "x", boot_timeout=10)


def test_doctor_checks_every_host(lab):
    assert lab.first.returncode == 0
    r = run_farm("doctor", "--hosts", str(lab.inventory), timeout=120)
    for name in ("hosta", "hostb"):
        assert re.search(rf"\[ok\] host {name} \(farm@[\d.]+:22\): reachable, host key known", r.stdout), r.stdout
        assert re.search(rf"\[ok\] host {name}: QEMU: QEMU emulator version", r.stdout)
        assert re.search(rf"\[ok\] host {name}: accelerator: (tcg|kvm)", r.stdout)
        assert re.search(rf"\[(ok|warn)\] host {name}: disk: [\d.]+ GiB free", r.stdout)
    inv = lab.dir / "bad-inventory.yml"
    inv.write_text(lab.inventory.read_text().replace("farm_known_hosts: known_hosts", "farm_known_hosts: nothing"))
    r = run_farm("doctor", "--hosts", str(inv), timeout=120)
    assert r.returncode == 3
    assert "[FAIL] host hosta" in r.stdout and "host key not in" in r.stdout
    # a run refuses to start with a host whose key is not known, before any guest boots
    r = run_farm("run", "--job", "probe", "--hosts", str(inv), "--out", str(lab.dir / "refused"), "--cpu", "Broadwell", timeout=120)
    assert r.returncode == 3 and "host key not in" in r.stderr, r.stderr


def test_matrix_over_two_hosts_and_local_survives_a_host_dying(lab, tmp_path, farm_root):
    """2 kernels x 7 CPU models over local (1 slot), hosta (1) and hostb (2); hostb dies once it has finished a
    cell and is running another: its running cells finish elsewhere, marked, and what it finished is kept."""
    assert lab.first.returncode == 0
    # a second name for the stock kernel: twice the cells (so hostb surely has work left when it dies), and
    # still one kernel image and one initrd to copy
    (farm_root / "kernels" / "stock-again.yaml").write_text("name: stock-again\nextends: stock\n")
    out = tmp_path / "run"
    cpus = sorted(m.name for m in Catalog(REPO).cpus.values())
    args = [sys.executable, "-m", "farm.cli", "run", "--hosts", str(lab.inventory), "--out", str(out), "-j", "1",
            "--accel", "tcg", "--test", "cpuinfo", "--kernel", "stock", "--kernel", "stock-again",
            *(a for c in cpus for a in ("--cpu", c))]
    proc = subprocess.Popen(args, cwd=farm_root, env=dict(os.environ, CI="true", FARM_ROOT=str(farm_root)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hostb = lab.hosts["hostb"]
    killed = False
    try:
        deadline = time.monotonic() + 400
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                run = json.loads((out / "run.json").read_text())
            except (OSError, ValueError):
                run = {"cells": []}
            done_on_b = [c for c in run["cells"] if c["host"] == "hostb" and c["status"] != "PENDING"]
            qemu_on_b = [p for p in hostb.pids() if Path(f"/proc/{p}/comm").exists()
                         and Path(f"/proc/{p}/comm").read_text().startswith("qemu")]
            if done_on_b and qemu_on_b:
                hostb.down()
                killed = True
                break
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert killed, "hostb never had a finished cell and a running guest at once"
    assert proc.returncode == 0, stderr[-3000:] + failed_cells(out)
    run = json.loads((out / "run.json").read_text())
    cells = run["cells"]
    # qemu64 has no XSAVE: the probe skips; every other model passes
    assert len(cells) == 2 * len(cpus) and all(c["status"] in ("PASS", "SKIP") for c in cells), [
        (c["id"], c["status"]) for c in cells]
    hosts = {c["host"] for c in cells}
    assert {"local", "hosta", "hostb"} <= hosts
    retried = [c for c in cells if c["retried_from"]]
    assert retried and all(c["retried_from"] == ["hostb"] and c["host"] != "hostb" for c in retried)
    kept = [c for c in cells if c["host"] == "hostb"]
    assert kept and all(c["status"] in ("PASS", "SKIP") and not c["retried_from"] for c in kept)  # kept
    assert set(run["host"]["hosts"]) == {"hosta", "hostb"}
    for c in cells:  # every cell's console is here, whichever host ran it
        assert "farm-init: ready" in (out / c["files"]["console"]).read_text()
    # copied once per digest: hosta's cells all booted one kernel and one initrd from its cache
    on_a = [c for c in cells if c["host"] == "hosta"]
    used = {arg for c in on_a for arg in c["qemu_command"] if arg.startswith(f"{lab.hosts['hosta'].workdir}/cache/")}
    assert len(on_a) >= 2 and len(used) == 2, used
    for path in used:
        assert len(list(Path(path).parent.iterdir())) == 1  # cache/<sha256>/<file>, nothing half-copied
    assert [h.name for h in load(lab.inventory)] == ["hosta", "hostb"]

