#!/usr/bin/env python3
"""Guest ready for its first command: the farm (booted, and restored from a snapshot) against a fair raw
qemu + ssh script, interleaved in one run, with medians and spread.

The raw side is what a careful hand-written script does: the same QEMU machine (kernel, image, -cpu, -m,
-smp, -M pc), the serial console read until the init marker, then an SSH-banner probe every 50 ms (QEMU's
user networking accepts TCP before the guest listens), then paramiko with the pinned host key and one
command. The farm side is its QEMU backend (QMP, forwarded port read back, pvpanic, pinned SSH), cold
booted; and restored from the booted-guest snapshot (fresh clock and entropy included). Goals (issue 13):
farm booted / raw <= 1.10; restored first command <= 1.0 s; a booted farm-built guest <= 2.0 s.

--vng adds a fourth column, `vng --disable-kvm -r KERNEL -- true` (virtme-ng, from PyPI, on PATH), on the
same kernel for all four: linux-6.1 + guest.config + bench/virtme/virtme.config (the 9p root, virtio console
and overlayfs virtme-ng needs; the farm's own kernels have none of it), built by the farm in a scratch data
root. virtme-ng runs a command with the host's root file system as the guest's: no SSH, no image, no
isolation from the host; it is the "how fast can a kernel run one command" reference, not a like-for-like.

Usage: .venv/bin/python bench/boot.py [--boots 10] [--cpu Broadwell] [--kernel linux-6.1] [--job xcr0] [--vng]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.catalog import Catalog  # noqa: E402
from farm.guest.image import READY_MARKER, ImageBuilder  # noqa: E402
from farm.guest.keys import client_key  # noqa: E402
from farm.paths import cache_root, data_root  # noqa: E402
from farm.prepare import prepare_kernel  # noqa: E402
from farm.vm import accel as accel_probe  # noqa: E402
from farm.vm.base import MachineSpec  # noqa: E402
from farm.vm.qemu import QemuPool, qemu_binary  # noqa: E402
from farm.vm.ssh import parse_host_key  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def raw_boot(spec: MachineSpec, key: paramiko.PKey) -> float:
    """The fair hand-written baseline: console marker, short banner poll, pinned SSH, one command."""
    port = free_port()
    accel = ["-accel", accel_probe.qemu_accel(spec.accel, spec.tcg_thread)]  # as the farm's
    argv = [qemu_binary(), "-nodefaults", "-no-user-config", "-display", "none", *accel, "-M", "pc",
            "-cpu", spec.cpu, "-m", f"{spec.memory_mb}M", "-smp", str(spec.smp), "-kernel", str(spec.kernel),
            "-initrd", str(spec.initrd), "-append", spec.cmdline, "-serial", "stdio",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile=", "-no-reboot"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    host_key = parse_host_key(spec.host_key)
    try:
        for line in proc.stdout:
            if line.strip() == READY_MARKER.encode():
                break
        else:
            raise RuntimeError("raw boot: QEMU ended before the marker")
        while not _banner(port):
            if time.monotonic() - start > 120:
                raise RuntimeError("raw boot did not reach SSH in 120 s")
            time.sleep(0.05)
        client = paramiko.SSHClient()
        client.get_host_keys().add(f"[127.0.0.1]:{port}", host_key.get_name(), host_key)
        client.connect("127.0.0.1", port, username="root", pkey=key, allow_agent=False, look_for_keys=False,
                       timeout=10, banner_timeout=10, auth_timeout=10)
        _, out, _ = client.exec_command("true")
        out.channel.recv_exit_status()
        elapsed = time.monotonic() - start
        client.close()
        return elapsed
    finally:
        proc.kill()
        proc.wait()
        # drain nothing more: the pipe closes with the process


def farm_boot(pool: QemuPool, spec: MachineSpec, workdir: Path) -> tuple[float, float, float]:
    """(first command, QEMU start to SSH, SSH handshake+auth) for one farm guest."""
    start = time.monotonic()
    with pool.create(spec, workdir, boot_timeout=120) as vm:
        result = vm.run(["true"], timeout=10)
        elapsed = time.monotonic() - start
        assert result.exit_status == 0, result
        return elapsed, vm.boot.seconds_to_ssh, vm.boot.seconds_to_ssh - vm.boot.seconds_to_marker


VIRTME_KERNEL = """name: linux-6.1-virtme
description: linux-6.1 with what virtme-ng needs (bench/virtme/virtme.config); bench/boot.py --vng only.
extends: linux-6.1
config:
  base: tinyconfig
  fragments: [guest.config, virtme.config]
"""


def virtme_root(tmp: Path) -> Path:
    """A scratch data root: the checkout's data folders plus the linux-6.1-virtme kernel."""
    repo = Path(__file__).resolve().parent.parent
    root = tmp / "farm"
    for sub in ("cpumodels", "guests", "jobs", "kernels"):
        shutil.copytree(repo / sub, root / sub, symlinks=True)
    shutil.copy(repo / "bench" / "virtme" / "virtme.config", root / "kernels" / "configs" / "virtme.config")
    (root / "kernels" / "linux-6.1-virtme.yaml").write_text(VIRTME_KERNEL)
    return root


def vng_boot(vng: str, spec: MachineSpec, workdir: Path) -> float:
    """`vng --disable-kvm -r KERNEL -- true`, as its README shows it, with the job's -cpu, -m and -smp, and
    --force-9p: without it vng first waits ~3 s for a virtiofsd that cannot start here (see virtme.config)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [vng, "--disable-kvm", "--force-9p", "-r", str(spec.kernel), "--cpus", str(spec.smp), "--memory",
            f"{spec.memory_mb}M", f"--qemu-opts=-cpu {spec.cpu}", "--", "true"]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:  # vng passes the guest command's exit status through; 0 means `true` ran
        raise RuntimeError(f"vng exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return elapsed


def spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 4 else [min(xs), statistics.median(xs), max(xs)]
    return f"median {statistics.median(xs):5.2f} s  IQR {q[0]:5.2f}-{q[-1]:5.2f}  range {min(xs):5.2f}-{max(xs):5.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boots", type=int, default=10)
    ap.add_argument("--cpu", default="Broadwell")
    ap.add_argument("--kernel", default="linux-6.1")
    ap.add_argument("--job", default="xcr0", help="the job whose -m and -smp the guests use")
    ap.add_argument("--vng", action="store_true", help="add virtme-ng's column (on the linux-6.1-virtme kernel)")
    args = ap.parse_args()
    vng = None
    if args.vng:
        vng = shutil.which("vng")
        if not vng:
            print("--vng: no vng on PATH (pip install virtme-ng into a venv and put its bin/ on PATH)",
                  file=sys.stderr)
            return 2
        os.environ["FARM_ROOT"] = str(virtme_root(Path(tempfile.mkdtemp(prefix="boot-vng-"))))
        args.kernel = "linux-6.1-virtme"

    catalog = Catalog(data_root())
    job = catalog.job(args.job)
    key = client_key(cache_root() / "keys")
    builder = ImageBuilder(cache_root(), data_root() / "guests", key, catalog.kernels)
    kernel = catalog.kernels[args.kernel]
    prepared = prepare_kernel(kernel, builder, [catalog.tests["cpuinfo"]])
    if prepared.error:
        print(f"cannot prepare {args.kernel}: {prepared.error}", file=sys.stderr)
        return 1
    acc = accel_probe.probe("auto")
    spec = MachineSpec(prepared.image, prepared.guest.initrd, kernel.cmdline, catalog.cpus[args.cpu].qemu,
                       acc.name, prepared.guest.host_key, memory_mb=job.memory_mb, smp=job.smp,
                       tcg_thread=job.tcg_thread, name="bench")
    pool = QemuPool(key, 1, acc.name)
    snap = dataclasses.replace(spec, snapshot=pool.snapshot_key(spec))
    pkey = key.load()
    figures: dict[str, list[float]] = {"raw": [], "booted": [], "restored": [], "vng": []}
    ssh_booted, ssh_restored = [], []
    print(f"kernel {args.kernel}, -cpu {spec.cpu}, accel {acc.name}, -m {spec.memory_mb}M -smp {spec.smp} "
          f"(job {args.job}), {args.boots} interleaved boots each, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        with pool.create(snap, Path(tmp) / "make-snapshot", boot_timeout=120):
            pass  # the first boot saves the pair's snapshot (when the cache has none yet)
        for i in range(args.boots):  # interleaved, so all three see the same machine load
            figures["raw"].append(raw_boot(spec, pkey))
            t, _, handshake = farm_boot(pool, spec, Path(tmp) / f"b{i}")
            figures["booted"].append(t)
            ssh_booted.append(handshake)
            t, to_ssh, _ = farm_boot(pool, dataclasses.replace(snap, restore=True), Path(tmp) / f"r{i}")
            figures["restored"].append(t)
            ssh_restored.append(to_ssh)
            line = (f"  {i + 1:2}: raw {figures['raw'][-1]:5.2f} s   farm booted {figures['booted'][-1]:5.2f} s   "
                    f"farm restored {figures['restored'][-1]:5.2f} s")
            if vng:
                figures["vng"].append(vng_boot(vng, spec, Path(tmp) / f"v{i}"))
                line += f"   vng {figures['vng'][-1]:5.2f} s"
            print(line, flush=True)
    print(f"raw qemu+ssh (fair)  first command: {spread(figures['raw'])}")
    print(f"farm, booted         first command: {spread(figures['booted'])}")
    print(f"farm, restored       first command: {spread(figures['restored'])}")
    if vng:
        print(f"vng --disable-kvm -- true (wall):  {spread(figures['vng'])}")
    print(f"  of which marker->SSH ready (banner probe, handshake, auth) when booted: {spread(ssh_booted)}")
    raw, booted, restored = (statistics.median(figures[k]) for k in ("raw", "booted", "restored"))
    print(f"ratio farm booted / raw: {booted / raw:.3f} (goal <= 1.10)")
    print(f"restored: {restored:.2f} s (goal <= 1.0 s), {raw / restored:.1f}x faster than the raw boot")
    print(f"booted farm-built guest: {booted:.2f} s (goal <= 2.0 s)")
    if vng:
        v = statistics.median(figures["vng"])
        print(f"vng / farm booted: {v / booted:.2f}; vng / farm restored: {v / restored:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
