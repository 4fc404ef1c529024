"""Synthetic runs for the report tests and bench/render.py: realistic shape, hostile guest text."""

from __future__ import annotations

import random
from pathlib import Path

from ..results.run import Cell, Run

EVIL = "<script>document.title='pwned'</script>"
NASTY = "]]>\x00\x1b[31m\x07\x7f" + EVIL  # CDATA end, NUL, an ANSI escape, BEL, DEL and a script


def build_meta(kernel: str, patched: bool) -> dict:
    patches = [{"file": f"kernels/patches/xcr0/000{i}.patch", "name": f"x86/fpu: part {i}",
                "sha256": f"{i:064x}", "strip": 1} for i in range(1, 4)] if patched else []
    return {
        "kernel": kernel, "key": ("ab" if patched else "cd") * 32, "cache_hit": False,
        "source": {"kind": "debian", "location": "linux-source-6.1", "path": "/src/linux-6.1",
                   "digest": "e" * 64, "commit": None},
        "kernel_version": "6.1.119", "kernel_release": "6.1.119" + ("-xcr0" if patched else ""),
        "patches": patches, "config": {"base": "tinyconfig", "fragments": [{"file": "kernels/configs/guest.config",
                                                                            "sha256": "f" * 64}]},
        "compiler": "gcc (Debian 12.2.0-14) 12.2.0", "ccache": {"hits": 10, "misses": 2},
        "commands": [{"cwd": "/src/linux-6.1", "env": {"KBUILD_OUTPUT": "/b"}, "argv": ["make", "-j2", "bzImage"]}],
        "durations": {"make": 100.5, "total": 120.25}, "warnings": [], "new_warnings": [],
        "image": "bzImage", "image_sha256": "0" * 64, "image_size": 1400000, "built_at": "2026-11-26T10:00:00+00:00",
    }


def make_run(run_dir: Path, kernels=("linux-6.1", "linux-6.1-xcr0"), cpus=("Broadwell", "Skylake-Server"),
             tests=("xcr0", "cpuinfo"), cases: int = 4, seed: int = 1, fail_rate: float = 0.0,
             files: bool = True, run_id: str = "r1", started: str = "2026-11-26T10:00:00+00:00",
             statuses: dict[str, str] | None = None) -> Run:
    """A finished run: every cell PASS unless `statuses` (cell id -> status) or fail_rate say otherwise.

    Case 1 of every test is named with NASTY text; output and console files are written when `files`."""
    rng = random.Random(seed)
    cells = []
    for k in kernels:
        for cpu in cpus:
            for t in tests:
                cid = f"{k}/{cpu}/{t}"
                status = (statuses or {}).get(cid)
                if status is None:
                    status = rng.choice(("FAIL", "CRASH", "TIMEOUT", "ERROR")) if rng.random() < fail_rate else "PASS"
                ks = []
                for i in range(1, cases + 1):
                    name = NASTY if i == 1 else f"{t}_case_{i}"
                    ks.append({"number": i, "name": name, "status": "PASS", "reason": "", "diagnostics":
                               [EVIL] if i == 1 else []})
                if status == "FAIL" and ks:
                    ks[-1]["status"] = "FAIL"
                if status == "SKIP":
                    for x in ks:
                        x["status"], x["reason"] = "SKIP", "not supported"
                if status in ("ERROR", "PENDING"):
                    ks = []
                if status == "TIMEOUT":
                    ks = ks[:1]
                rel = f"cells/{k}/{cpu}/{t}"
                cell = Cell(
                    id=cid, kernel=k, cpu=cpu, test=t, status=status, stage="" if status == "PENDING" else "test",
                    reason={"PASS": "", "SKIP": "", "FAIL": f"failed: {t}_case_{cases}",
                            "CRASH": "Kernel panic - not syncing: " + EVIL,
                            "TIMEOUT": "test did not finish within 60 s",
                            "ERROR": "boot: no SSH within 60 s", "PENDING": "",
                            "FLAKY": "passed only on a retry; FAIL on attempt 1: failed: " + EVIL}[status],
                    cpu_qemu=cpu, accel="tcg", qemu_command=["qemu-system-x86_64", "-cpu", cpu, "-append", EVIL],
                    timings={"boot": 2.5, "test": 1.25, "total": 4.0} if status != "PENDING" else {},
                    facts={"xcr0": "0x207" if "Skylake" in cpu else "0x7", "xsave_size": "2696" if "Skylake" in cpu
                           else "832", "avx512f": "0"},
                    filtered_features=["avx512f"] if "Server" in cpu else [], cases=ks,
                    crashes=[{"kind": "panic", "line": "Kernel panic - not syncing: " + EVIL, "lineno": 3}]
                    if status == "CRASH" else [],
                    exit_status=0 if status in ("PASS", "FLAKY") else 1,
                    attempts={"PENDING": 0, "FLAKY": 2}.get(status, 1),
                    kernel_image="/cache/bzImage",
                    files={"console": f"{rel}/console.log", "output": f"{rel}/output.txt",
                           "qemu_log": f"{rel}/qemu.log"} if files and status != "PENDING" else {},
                )
                cells.append(cell)
                if files and status != "PENDING":
                    d = run_dir / rel
                    d.mkdir(parents=True, exist_ok=True)
                    lines = "".join(f"{'ok' if x['status'] != 'FAIL' else 'not ok'} {x['number']} {x['name']}\n"
                                    for x in ks)
                    (d / "output.txt").write_text(f"KTAP version 1\n1..{len(ks)}\n{lines}")
                    console = f"farm-init: ready\n{EVIL}\n{NASTY}\n"
                    if status == "CRASH":
                        console += "Kernel panic - not syncing: " + EVIL + "\n"
                    (d / "console.log").write_text(console)
                    (d / "qemu.log").write_text("")
    return Run(run_id=run_id, job="default", job_file="jobs/default.yaml", started=started, argv=["farm", "run"],
               finished=started, host={"hostname": "farmhost", "qemu": "QEMU emulator version 7.2.0",
                                       "accel": "tcg", "accel_reason": "no /dev/kvm"},
               kernels={k: {"description": f"{k} <b>desc</b>", "baseline": "linux-6.1" if k.endswith("xcr0") else None,
                            "source": "linux-source-6.1" if k != "stock" else "prebuilt",
                            "patches": ["patches/xcr0"] if k.endswith("xcr0") else [],
                            "build": build_meta(k, k.endswith("xcr0"))} for k in kernels},
               cells=cells)
