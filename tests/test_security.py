"""Security checks on live runs: loopback-only sockets, argv never through a shell, unreadable keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import faultlib
from .conftest import REPO, run_farm

pytestmark = pytest.mark.boot


def _listeners(pids: list[str]) -> list[str]:
    out = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True).stdout
    mine = []
    for line in out.splitlines():
        if any(re.search(rf"pid={p}\b", line) for p in pids):
            mine.append(line.split()[4])  # Local Address:Port
    return mine


def test_every_listening_socket_of_a_live_run_is_on_loopback(tmp_path: Path):
    root = faultlib.make_root(tmp_path)
    faultlib.add_test(root, "slow", "die-later.sh")
    job = faultlib.add_job(root, ["stock"], ["slow"])
    env = dict(os.environ, CI="true", FARM_ROOT=str(root))
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", "--job", str(job), "--out", str(tmp_path / "o")],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        console = tmp_path / "o" / "cells" / "stock" / "Broadwell" / "slow" / "console.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if console.exists() and "farm-fault: kill me now" in console.read_text(errors="replace"):
                qemus = subprocess.run(["pgrep", "-f", f"farm-qmp-{proc.pid}-"], capture_output=True,
                                       text=True).stdout.split()
                seen = _listeners([str(proc.pid), *qemus])
                break
            time.sleep(0.1)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen, "the live guest's forwarded port was not seen"
    for addr in seen:
        assert addr.startswith("127.0.0.1:"), seen


def test_job_strings_never_reach_a_shell(tmp_path: Path):
    root = faultlib.make_root(tmp_path)
    script = tmp_path / "echo-args.sh"
    script.write_text('#!/bin/sh\nfor a in "$@"; do echo "arg=[$a]"; done\n')
    script.chmod(0o755)
    (root / "guests" / "tests" / "args.yaml").write_text(
        f"name: args\nbinary: {script}\nformat: exit-code\n"
        "run: [args, '$(touch /tmp/pwned)', '; poweroff -f', '`id`', 'a b']\n")
    job = faultlib.add_job(root, ["stock"], ["args"])
    out = tmp_path / "o"
    result = run_farm("run", "--job", str(job), "--out", str(out), root=root)
    assert result.returncode == 0, result.stderr
    cell = json.loads((out / "run.json").read_text())["cells"][0]
    text = (out / cell["files"]["output"]).read_text()
    assert text == "arg=[$(touch /tmp/pwned)]\narg=[; poweroff -f]\narg=[`id`]\narg=[a b]\n"


def test_unreadable_client_key_is_bad_input(tmp_path: Path):
    cache = tmp_path / "cache"
    (cache / "keys").mkdir(parents=True)
    (cache / "keys" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n")
    (cache / "keys" / "id_ed25519.pub").write_text("ssh-ed25519 AAAA farm\n")
    result = run_farm("run", "--job", "probe", "--cpu", "Broadwell", "--out", str(tmp_path / "o"), env={"FARM_CACHE": str(cache)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "id_ed25519" in lines[-1] and "cannot read" in lines[-1]
    assert "Traceback" not in result.stderr


def test_missing_prebuilt_kernel_image_is_a_clear_cell_error(tmp_path: Path):
    root = faultlib.make_root(tmp_path)
    (root / "kernels" / "gone.yaml").write_text("name: gone\nprebuilt:\n  image: /boot/vmlinuz-does-not-exist-*\n"
                                                "cmdline: console=ttyS0\n")
    out = tmp_path / "o"
    result = run_farm("run", "--job", "probe", "--kernel", "gone", "--cpu", "Broadwell", "--out", str(out), root=root)
    assert result.returncode == 3
    cell = json.loads((out / "run.json").read_text())["cells"][0]
    assert cell["status"] == "ERROR" and cell["stage"] == "build"
    assert "vmlinuz-does-not-exist" in cell["reason"]
    assert cell["attempts"] == 0 and cell["qemu_command"] == []  # nothing was booted for it


def test_cache_holding_keys_is_private(tmp_path: Path):
    """The farm's SSH key and every image carrying a guest's private host key: 0600 files in 0700 folders."""
    import stat

    from farm.catalog import Catalog
    from farm.guest.image import ImageBuilder
    from farm.guest.keys import client_key

    cache = tmp_path / "cache"
    os.umask(0o022)  # what a user's shell usually has: files 0644 unless the farm says otherwise
    key = client_key(cache / "keys")
    image = ImageBuilder(cache, REPO / "guests", key).image([Catalog(REPO).tests["cpuinfo"]])

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(cache) == mode(cache / "keys") == mode(cache / "images") == 0o700
    assert mode(key.path) == 0o600
    assert mode(image.initrd) == 0o600
    base_layers = list((cache / "images").glob("base-*/base.cpio.gz"))
    assert base_layers and all(mode(p) == 0o600 for p in base_layers)
    assert all(mode(p.parent) == 0o700 for p in base_layers)
