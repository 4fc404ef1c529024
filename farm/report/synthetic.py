"""Synthetic runs for the report tests and bench/render.py: realistic shape, hostile guest text."""

from __future__ import annotations

import random
from pathlib import Path

from ..results.run import (
    BuildOutcome,
    BuildRecord,
    Case,
    Cell,
    Crash,
    HostRecord,
    KernelRecord,
    Run,
    SeriesRecord,
    Status,
)

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
             statuses: dict[str, str] | None = None, series: SeriesRecord | None = None,
             timeline: bool = False) -> Run:
    """A finished run: every cell PASS unless `statuses` (cell id -> status) or fail_rate say otherwise.

    Case 1 of every test is named with NASTY text; output and console files are written when `files`.
    timeline: cells get start/end times (one guest at a time, after a 30 s prepare) and Run.phases."""
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
                    ks.append(Case(i, name, Status.PASS, "", [EVIL] if i == 1 else []))
                if status == "FAIL" and ks:
                    ks[-1].status = Status.FAIL
                if status == "SKIP":
                    for x in ks:
                        x.status, x.reason = Status.SKIP, "not supported"
                if status in ("ERROR", "PENDING"):
                    ks = []
                if status == "TIMEOUT":
                    ks = ks[:1]
                rel = f"cells/{k}/{cpu}/{t}"
                cell = Cell(
                    id=cid, kernel=k, cpu=cpu, test=t, status=Status(status),
                    stage="" if status == "PENDING" else "test",
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
                    crashes=[Crash("panic", "Kernel panic - not syncing: " + EVIL, 4)]
                    if status == "CRASH" else [],
                    exit_status=0 if status in ("PASS", "FLAKY") else 1,
                    attempts={"PENDING": 0, "FLAKY": 2}.get(status, 1),
                    kernel_image="/cache/bzImage",
                    files={"console": f"{rel}/console.log", "output": f"{rel}/output.txt",
                           "qemu_log": f"{rel}/qemu.log"} if files and status != "PENDING" else {},
                )
                if timeline and status != "PENDING":
                    clock = cells[-1].timings["end"] if cells and "end" in cells[-1].timings else 30.0
                    took = {"boot_to_ssh": 2.5 + rng.random(), "test": 1.25 + 3 * rng.random(), "shutdown": 0.1}
                    total = sum(took.values()) + 0.2
                    cell.timings = {**took, "total": round(total, 3), "start": round(clock, 3),
                                    "end": round(clock + total, 3)}
                cells.append(cell)
                if files and status != "PENDING":
                    d = run_dir / rel
                    d.mkdir(parents=True, exist_ok=True)
                    lines = "".join(f"{'ok' if x.status != 'FAIL' else 'not ok'} {x.number} {x.name}\n"
                                    for x in ks)
                    (d / "output.txt").write_text(f"KTAP version 1\n1..{len(ks)}\n{lines}")
                    console = f"farm-init: ready\n{EVIL}\n{NASTY}\n"
                    if status == "CRASH":
                        console += "Kernel panic - not syncing: " + EVIL + "\n"
                    (d / "console.log").write_text(console)
                    (d / "qemu.log").write_text("")
    return Run(run_id=run_id, job="default", job_file="jobs/default.yaml", started=started, argv=["farm", "run"],
               finished=started, host=HostRecord(hostname="farmhost", qemu="QEMU emulator version 7.2.0",
                                                 accel="tcg", accel_reason="no /dev/kvm"),
               kernels={k: KernelRecord(description=f"{k} <b>desc</b>",
                                        baseline="linux-6.1" if k.endswith("xcr0") else None,
                                        source="linux-source-6.1" if k != "stock" else "prebuilt",
                                        patches=["patches/xcr0"] if k.endswith("xcr0") else [],
                                        build=BuildRecord.from_metadata(build_meta(k, k.endswith("xcr0")),
                                                                        BuildOutcome.BUILT))
                        for k in kernels},
               cells=cells, series=series,
               phases={"prepare": 30.0, "execute": round(max([0.0, *(c.timings.get("end", 0.0) for c in cells)])
                                                         - 30.0, 3)} if timeline else {})
