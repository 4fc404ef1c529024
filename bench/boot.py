#!/usr/bin/env python3
"""Boot-to-first-command: the farm's QEMU backend against a raw qemu + ssh loop, in the same script.

Prints per-boot figures, the medians and their ratio (goal: farm / raw <= 1.10).
Usage: .venv/bin/python bench/boot.py [--boots N] [--cpu MODEL] [--kernel NAME]
"""

from __future__ import annotations

import argparse
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
from farm.guest.image import ImageBuilder  # noqa: E402
from farm.guest.keys import client_key  # noqa: E402
from farm.paths import cache_root, data_root  # noqa: E402
from farm.scheduler import prepare_kernel  # noqa: E402
from farm.vm import accel as accel_probe  # noqa: E402
from farm.vm.base import MachineSpec  # noqa: E402
from farm.vm.qemu import QemuPool, qemu_binary  # noqa: E402
from farm.vm.ssh import parse_host_key  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_boot(spec: MachineSpec, key: paramiko.PKey, workdir: Path) -> float:
    """What one would write by hand: start QEMU, poll SSH until a command runs."""
    port = free_port()
    argv = [qemu_binary(), "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", "tcg,tb-size=64" if spec.accel == "tcg" else "kvm", "-M", "pc", "-cpu", spec.cpu,
            "-m", f"{spec.memory_mb}M", "-smp", str(spec.smp), "-kernel", str(spec.kernel), "-initrd",
            str(spec.initrd), "-append", spec.cmdline, "-serial", f"file:{workdir / 'raw-console.log'}",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-no-reboot"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host_key = parse_host_key(spec.host_key)
    try:
        while True:
            if time.monotonic() - start > 120:
                raise RuntimeError("raw boot did not reach SSH in 120 s")
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[127.0.0.1]:{port}", host_key.get_name(), host_key)
            try:
                client.connect("127.0.0.1", port, username="root", pkey=key, allow_agent=False,
                               look_for_keys=False, timeout=2, banner_timeout=2, auth_timeout=2)
                _, out, _ = client.exec_command("true")
                out.channel.recv_exit_status()
                return time.monotonic() - start
            except (paramiko.SSHException, OSError, EOFError):
                time.sleep(0.05)
            finally:
                client.close()
    finally:
        proc.kill()
        proc.wait()


def farm_boot(pool: QemuPool, spec: MachineSpec, workdir: Path) -> float:
    start = time.monotonic()
    with pool.create(spec, workdir, boot_timeout=120) as vm:
        result = vm.run(["true"], timeout=10)
        elapsed = time.monotonic() - start
        assert result.exit_status == 0
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boots", type=int, default=5)
    ap.add_argument("--cpu", default="Broadwell")
    ap.add_argument("--kernel", default="stock")
    ap.add_argument("--smp", type=int, default=1)
    args = ap.parse_args()

    catalog = Catalog(data_root())
    key = client_key(cache_root() / "keys")
    builder = ImageBuilder(cache_root(), data_root() / "guests", key)
    kernel = catalog.kernels[args.kernel]
    prepared = prepare_kernel(kernel, builder, [catalog.tests["cpuinfo"]])
    if prepared.error:
        print(f"cannot prepare {args.kernel}: {prepared.error}", file=sys.stderr)
        return 1
    acc = accel_probe.probe("auto")
    spec = MachineSpec(prepared.image, prepared.guest.initrd, kernel.cmdline, catalog.cpus[args.cpu].qemu,
                       acc.name, prepared.guest.host_key, smp=args.smp)
    pool = QemuPool(key)
    pkey = key.load()
    farm_times, raw_times = [], []
    print(f"kernel {args.kernel}, -cpu {spec.cpu}, accel {acc.name}, -smp {args.smp}, {args.boots} boots each")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.boots):  # interleaved, so both see the same machine load
            raw_times.append(raw_boot(spec, pkey, Path(tmp)))
            farm_times.append(farm_boot(pool, spec, Path(tmp) / f"farm{i}"))
            print(f"  boot {i + 1}: raw {raw_times[-1]:.2f} s   farm {farm_times[-1]:.2f} s")
    raw_med, farm_med = statistics.median(raw_times), statistics.median(farm_times)
    print(f"raw qemu+ssh boot-to-first-command median: {raw_med:.2f} s")
    print(f"farm         boot-to-first-command median: {farm_med:.2f} s")
    print(f"ratio farm/raw: {farm_med / raw_med:.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
