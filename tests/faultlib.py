"""Fault injection into real runs (real QEMU, real SSH): each scenario runs `farm run` as a user would,
injects one fault, and measures what happened. Shared by tests/test_faults.py (asserts every row) and
bench/faults.py (prints the table)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAULTS = Path(__file__).resolve().parent / "faults"

HEALTHY = "cpuinfo"
CONSOLE_LIMIT = 1 << 20  # FARM_CONSOLE_LIMIT for these runs, so a flood needs only a few MiB


@dataclass
class Row:
    fault: str
    expected: str
    got: str = ""
    seconds_to_verdict: float = 0.0
    leftover: int = 0  # QEMU processes of that farm run still alive after it exited
    lost: list[str] = field(default_factory=list)  # finished results missing from disk
    others_ok: bool = True  # the healthy cell next to the faulty one passed
    notes: str = ""
    ok: bool = False

    def line(self) -> str:
        return (f"{self.fault:34} {self.expected:22} {self.got:22} {self.seconds_to_verdict:7.1f} "
                f"{self.leftover:5} {len(self.lost):5} {'yes' if self.ok else 'NO'}")


HEADER = f"{'fault':34} {'expected':22} {'got':22} {'s':>7} {'procs':>5} {'lost':>5} ok"


def make_root(tmp: Path) -> Path:
    root = tmp / "farm"
    for sub in ("cpumodels", "jobs", "guests"):
        shutil.copytree(REPO / sub, root / sub)
    (root / "kernels").mkdir()
    for item in (REPO / "kernels").iterdir():
        if item.suffix == ".yaml":
            shutil.copy(item, root / "kernels")
        elif item.is_dir():
            (root / "kernels" / item.name).symlink_to(item)
    return root


def add_test(root: Path, name: str, script: str, timeout: float = 60, fmt: str = "ktap") -> None:
    (root / "guests" / "tests" / f"{name}.yaml").write_text(
        f"name: {name}\nbinary: {FAULTS / script}\nrun: [{name}]\nformat: {fmt}\ntimeout: {timeout}\n")


def add_kernel(root: Path, name: str, cmdline: str) -> None:
    (root / "kernels" / f"{name}.yaml").write_text(f"name: {name}\nextends: stock\ncmdline: {cmdline}\n")


def add_job(root: Path, kernels: list[str], tests: list[str], boot: float = 60, retries: int = 1) -> Path:
    path = root / "jobs" / "fault.yaml"
    path.write_text(f"name: fault\nkernels: {kernels}\ncpus: [Broadwell]\ntests: {tests}\n"
                    f"timeouts: {{boot: {boot}}}\nretries: {retries}\n")
    return path


def qemus_of(pid: int) -> int:
    out = subprocess.run(["pgrep", "-f", f"farm-qmp-{pid}-"], capture_output=True, text=True).stdout
    return len(out.split())


def read_run(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def cell_of(run: dict, test: str) -> dict:
    return next((c for c in run.get("cells", []) if c["test"] == test), {})


@dataclass
class Outcome:
    returncode: int
    stderr: str
    run: dict
    out: Path
    fault_at: float
    verdict_at: float
    peak_rss_kb: int
    pid: int


def run_farm(root: Path, out: Path, args: list[str], inject: Callable | None = None, faulty: str = "",
             timeout: float = 300) -> Outcome:
    """Run `farm run` in a subprocess; `inject(proc, out)` runs alongside and returns the fault's time."""
    env = dict(os.environ, CI="true", FARM_ROOT=str(root), FARM_CONSOLE_LIMIT=str(CONSOLE_LIMIT))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", "--out", str(out), "-j", "1", *args],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fault_at, verdict_at, peak = start, 0.0, 0
    try:
        if inject:
            fault_at = inject(proc, out) or fault_at
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, _rss_hwm(proc.pid))
            if faulty and not verdict_at and cell_of(read_run(out), faulty).get("status") not in (None, "PENDING"):
                verdict_at = time.monotonic()
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    end = time.monotonic()
    return Outcome(proc.returncode, stderr, read_run(out), out, fault_at, verdict_at or end, peak, proc.pid)


def _rss_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def lost_results(run: dict, out: Path) -> list[str]:
    """Finished cells whose files are not on disk."""
    lost = []
    for c in run.get("cells", []):
        if c["status"] in ("PENDING", ""):
            continue
        for name, rel in c.get("files", {}).items():
            if name in ("console", "output") and not (out / rel).exists():
                lost.append(f"{c['id']}:{name}")
    return lost


def _finish(row: Row, o: Outcome, faulty: str, want_status: str, extra_ok: bool = True) -> Row:
    cell = cell_of(o.run, faulty)
    healthy = cell_of(o.run, HEALTHY) if faulty != HEALTHY else {}  # no healthy neighbour in boot faults
    row.got = f"{cell.get('status', '?')} (x{cell.get('attempts', 0)})"
    row.seconds_to_verdict = round(o.verdict_at - o.fault_at, 1)
    row.leftover = qemus_of(o.pid)
    row.lost = lost_results(o.run, o.out)
    row.others_ok = healthy.get("status") == "PASS" if healthy else True
    row.notes = cell.get("reason", "")[:100]
    row.ok = (cell.get("status") == want_status and row.leftover == 0 and not row.lost and row.others_ok
              and "Traceback" not in o.stderr and extra_ok)
    return row


# --- scenarios --------------------------------------------------------------------------------------------


def boot_panic(tmp: Path) -> Row:
    root = make_root(tmp)
    add_kernel(root, "stock-noinit", "console=ttyS0 panic=-1 rdinit=/nothing-here")
    job = add_job(root, ["stock-noinit"], [HEALTHY])
    o = run_farm(root, tmp / "out", ["--job", str(job)], faulty=HEALTHY)
    row = Row("kernel panic during boot", "CRASH (x1)")
    cell = cell_of(o.run, HEALTHY)
    row = _finish(row, o, HEALTHY, "CRASH", cell.get("attempts") == 1 and "Kernel panic" in cell.get("reason", ""))
    row.seconds_to_verdict = cell.get("timings", {}).get("boot", 0.0)  # QEMU start to the panic verdict
    return row


def _in_guest(tmp: Path, fault: str, script: str, want: str, timeout: float = 60, retries: int = 1,
              check: Callable[[dict, Outcome], bool] | None = None, expected: str | None = None,
              kernel: str = "stock") -> Row:
    root = make_root(tmp)
    add_test(root, "faulty", script, timeout=timeout)
    job = add_job(root, [kernel], [HEALTHY, "faulty"], retries=retries)
    # A farm-built kernel may need building first: allow for that, not just the boots.
    o = run_farm(root, tmp / "out", ["--job", str(job)], faulty="faulty",
                 timeout=300 if kernel == "stock" else 3600)
    row = Row(fault, expected or f"{want}")
    cell = cell_of(o.run, "faulty")
    ok = check(cell, o) if check else True
    row = _finish(row, o, "faulty", want, ok)
    # The fault fires when the test starts: from then to the verdict is the test stage and the shutdown.
    t = cell.get("timings", {})
    row.seconds_to_verdict = round(t.get("test", 0.0) + t.get("shutdown", 0.0), 1)
    return row


def panic_in_test(tmp: Path) -> Row:
    return _in_guest(tmp, "kernel panic during a test", "sysrq-panic.sh", "CRASH",
                     check=lambda c, o: "sysrq" in c.get("reason", "").lower() and c.get("attempts") == 1,
                     expected="CRASH (x1)")


def warning_guest_lives(tmp: Path) -> Row:
    """A WARN() splat (LKDTM, in the farm-built linux-6.1) while the guest stays up: still a CRASH."""

    def check(cell, o):
        output = (o.out / cell["files"]["output"]).read_text() if cell.get("files", {}).get("output") else ""
        return (cell.get("attempts") == 1 and cell.get("reason", "").startswith("WARNING: CPU:")
                and "ok 1 survived_warning" in output)

    return _in_guest(tmp, "Oops/WARNING, guest stays alive", "lkdtm-warn.sh", "CRASH", check=check,
                     expected="CRASH (x1), test ran on", kernel="linux-6.1")


def reset_in_test(tmp: Path) -> Row:
    """The guest resets itself mid-test (sysrq b): no panic line, QEMU exits under -no-reboot. A CRASH,
    never an infrastructure error that a passing retry would hide."""
    return _in_guest(tmp, "guest resets itself during a test", "sysrq-reboot.sh", "CRASH",
                     check=lambda c, o: c.get("attempts") == 1 and "guest reset itself" in c.get("reason", ""),
                     expected="CRASH (x1)")


def build_triple_fault_image(tmp: Path) -> Path:
    """A multiboot "kernel" that triple-faults as it starts (tests/faults/triplefault.S), built with binutils."""
    obj, elf = tmp / "triplefault.o", tmp / "vmlinuz-triplefault"
    subprocess.run(["as", "--32", "-o", str(obj), str(FAULTS / "triplefault.S")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext", "0x100000", "-o", str(elf), str(obj)], check=True)
    return elf


def triple_fault_at_boot(tmp: Path) -> Row:
    root = make_root(tmp)
    image = build_triple_fault_image(tmp)
    (root / "kernels" / "triplefault.yaml").write_text(
        f"name: triplefault\nprebuilt:\n  image: {image}\ncmdline: console=ttyS0\n")
    job = add_job(root, ["triplefault"], [HEALTHY])
    o = run_farm(root, tmp / "out", ["--job", str(job)], faulty=HEALTHY)
    row = Row("kernel triple-faults at boot", "CRASH (x1, boot)")
    cell = cell_of(o.run, HEALTHY)
    ok = (cell.get("attempts") == 1 and cell.get("stage") == "boot" and "guest reset itself" in cell.get("reason", "")
          and o.returncode == 1)
    row = _finish(row, o, HEALTHY, "CRASH", ok)
    row.seconds_to_verdict = cell.get("timings", {}).get("boot", 0.0)
    return row


def kept_guest_deadline(tmp: Path) -> Row:
    """--keep-failed leaves the failed guest running; it must still end on its own (deadline 3 s), leaving
    no QEMU of that run behind once farm run has exited."""
    root = make_root(tmp)
    add_test(root, "fails", "fails.sh")
    job = add_job(root, ["stock"], ["fails"], retries=0)
    o = run_farm(root, tmp / "out", ["--job", str(job), "--keep-failed", "0.05"], faulty="fails")
    row = Row("kept failed guest, deadline 3 s", "FAIL, kept, then gone")
    cell = cell_of(o.run, "fails")
    kept_while_running = "kept stock/Broadwell/fails" in o.stderr
    deadline = time.monotonic() + 20
    while qemus_of(o.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    row = _finish(row, o, "fails", "FAIL", kept_while_running)
    row.got = f"{cell.get('status', '?')}, {'kept' if kept_while_running else 'not kept'}"
    return row


def hanging_test(tmp: Path) -> Row:
    # A timeout is tried once more (a flake or a hang?); both tries time out.
    return _in_guest(tmp, "test binary hangs", "hang.sh", "TIMEOUT", timeout=5,
                     check=lambda c, o: c.get("attempts") == 2, expected="TIMEOUT (x2)")


def flooding_output(tmp: Path) -> Row:
    def bounded(c, o):
        size = (o.out / c["files"]["output"]).stat().st_size if c.get("files", {}).get("output") else -1
        return 0 < size <= 8 << 20 and o.peak_rss_kb < 400_000

    row = _in_guest(tmp, "test floods stdout (10 MiB)", "flood-output.sh", "FAIL", timeout=240, check=bounded,
                    expected="FAIL, output <= 8 MiB")
    return row


def flooding_console(tmp: Path) -> Row:
    def bounded(c, o):
        size = (o.out / c["files"]["console"]).stat().st_size
        return CONSOLE_LIMIT <= size <= CONSOLE_LIMIT + 100 and o.peak_rss_kb < 400_000

    return _in_guest(tmp, "test floods console (3 MiB)", "flood-console.sh", "PASS", timeout=240, check=bounded,
                     expected="PASS, console <= 1 MiB")


def ssh_dropped(tmp: Path) -> Row:
    return _in_guest(tmp, "SSH server killed mid-test", "drop-ssh.sh", "ERROR",
                     check=lambda c, o: c.get("attempts") == 2 and "dropped" in c.get("reason", ""),
                     expected="ERROR (x2, retried)")


def qemu_killed(tmp: Path) -> Row:
    root = make_root(tmp)
    add_test(root, "faulty", "die-later.sh")
    job = add_job(root, ["stock"], [HEALTHY, "faulty"])

    def inject(proc, out):
        console = out / "cells" / "stock" / "Broadwell" / "faulty" / "console.log"
        while proc.poll() is None:
            try:
                if "farm-fault: kill me now" in console.read_text(errors="replace"):
                    pids = subprocess.run(["pgrep", "-f", f"farm-qmp-{proc.pid}-"], capture_output=True,
                                          text=True).stdout.split()
                    for p in pids:
                        os.kill(int(p), signal.SIGKILL)
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(0.05)
        return None

    o = run_farm(root, tmp / "out", ["--job", str(job)], inject=inject, faulty="faulty")
    row = Row("QEMU killed mid-test", "PASS (x2, retried)")
    c = cell_of(o.run, "faulty")
    row = _finish(row, o, "faulty", "PASS", c.get("attempts") == 2)
    # The verdict for the fault is the retry's start: the cell's own verdict comes after a whole new boot.
    return row


def _boot_fault(tmp: Path, fault: str, cmdline: str, expect_reason: str) -> Row:
    root = make_root(tmp)
    add_kernel(root, "stock-faulty", cmdline)
    job = add_job(root, ["stock-faulty"], [HEALTHY], boot=15)
    o = run_farm(root, tmp / "out", ["--job", str(job)], inject=lambda proc, out: time.monotonic(), faulty=HEALTHY)
    row = Row(fault, "ERROR (x2, boot)")
    c = cell_of(o.run, HEALTHY)
    row = _finish(row, o, HEALTHY, "ERROR",
                  c.get("attempts") == 2 and c.get("stage") == "boot" and expect_reason in c.get("reason", "")
                  and o.returncode == 3)
    return row


def silent_guest(tmp: Path) -> Row:
    return _boot_fault(tmp, "guest never prints anything", "console=ttyS1 panic=-1 quiet", "did not reach")


def no_sshd(tmp: Path) -> Row:
    return _boot_fault(tmp, "guest SSH server never starts", "console=ttyS0 panic=-1 quiet farm.sshd=0",
                       "SSH server never answered")


def _signal_at(tmp: Path, sig: int, stage: str) -> Row:
    root = make_root(tmp)
    add_test(root, "slow", "die-later.sh")
    job = add_job(root, ["stock"], [HEALTHY, "slow"])

    def inject(proc, out):
        console = out / "cells" / "stock" / "Broadwell" / "slow" / "console.log"
        while proc.poll() is None:
            c = cell_of(read_run(out), HEALTHY)
            if c.get("status") == "PASS" and console.exists():
                text = console.read_text(errors="replace")
                if stage == "boot" or "farm-fault: kill me now" in text:
                    proc.send_signal(sig)
                    return time.monotonic()
            time.sleep(0.05)
        return None

    o = run_farm(root, tmp / "out", ["--job", str(job)], inject=inject)
    name = signal.Signals(sig).name
    row = Row(f"{name} to farm run while {stage}ing", "exit 130, PENDING kept")
    slow = cell_of(o.run, "slow")
    row.got = f"exit {o.returncode}, {slow.get('status', '?')}"
    row.seconds_to_verdict = round(o.verdict_at - o.fault_at, 1)
    row.leftover = qemus_of(o.pid)
    row.lost = lost_results(o.run, o.out)
    row.others_ok = cell_of(o.run, HEALTHY).get("status") == "PASS"
    report = (o.out / "report.html").read_text() if (o.out / "report.html").exists() else ""
    row.ok = (o.returncode == 130 and slow.get("status") == "PENDING" and o.run.get("interrupted") is True
              and row.leftover == 0 and not row.lost and row.others_ok and "Missing results" in report
              and "Traceback" not in o.stderr)
    return row


def sigint_boot(tmp: Path) -> Row:
    return _signal_at(tmp, signal.SIGINT, "boot")


def sigterm_test(tmp: Path) -> Row:
    return _signal_at(tmp, signal.SIGTERM, "test")


def two_runs_at_once(tmp: Path) -> Row:
    root = make_root(tmp)
    env = dict(os.environ, CI="true", FARM_ROOT=str(root))
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "farm.cli", "run", "--job", "probe", "--cpu", "Broadwell", "-j", "1"],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    dirs = [Path(o[0].strip().splitlines()[-1]) if o[0].strip() else None for o in outs]
    runs = [read_run(d) if d else {} for d in dirs]
    row = Row("two farm runs at once, one results dir", "both PASS, 2 run dirs")
    statuses = [cell_of(r, HEALTHY).get("status", "?") for r in runs]
    row.got = ", ".join(statuses) + f", {len({d for d in dirs if d})} dirs"
    row.seconds_to_verdict = round(time.monotonic() - start, 1)
    row.leftover = sum(qemus_of(p.pid) for p in procs)
    row.lost = [x for r, d in zip(runs, dirs, strict=True) if d for x in lost_results(r, d)]
    row.ok = (statuses == ["PASS", "PASS"] and len({d for d in dirs if d}) == 2 and row.leftover == 0
              and not row.lost and all(p.returncode == 0 for p in procs))
    return row


def full_disk(tmp: Path) -> Row:
    """The results directory is a 1 MiB tmpfs: a console flood fills it mid-run."""
    root = make_root(tmp)
    add_test(root, "faulty", "flood-console.sh", timeout=240)
    job = add_job(root, ["stock"], [HEALTHY, "faulty"])
    mnt = tmp / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        o = run_farm(root, mnt / "out", ["--job", str(job)], inject=lambda proc, out: time.monotonic())
        row = Row("results dir fills up (1 MiB tmpfs)", "exit 3, one-line error")
        last = o.stderr.strip().splitlines()[-1] if o.stderr.strip() else ""
        row.got = f"exit {o.returncode}"
        row.seconds_to_verdict = round(o.verdict_at - o.fault_at, 1)
        row.leftover = qemus_of(o.pid)
        row.others_ok = cell_of(o.run, HEALTHY).get("status") == "PASS"
        row.notes = last[:100]
        row.ok = (o.returncode == 3 and "No space left" in last and "Traceback" not in o.stderr
                  and row.leftover == 0 and bool(o.run))
        return row
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def corrupt_run_json(tmp: Path) -> Row:
    out = tmp / "run"
    out.mkdir()
    (out / "run.json").write_text('{"schema": 1, "cells": [')
    env = dict(os.environ, CI="true")
    start = time.monotonic()
    results = [subprocess.run([sys.executable, "-m", "farm.cli", *args, str(out)], capture_output=True,
                              text=True, cwd=REPO, env=env) for args in (["report"], ["run", "--resume"])]
    row = Row("corrupted run.json on report/--resume", "exit 2, one line")
    row.got = ", ".join(f"exit {r.returncode}" for r in results)
    row.seconds_to_verdict = round(time.monotonic() - start, 1)
    row.ok = all(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "run.json" in r.stderr
                 for r in results)
    return row


CRASH_KERNEL = "linux-6.1-debug-lkdtm"  # the debug profile plus kernels/patches/lkdtm-extra


def _add_lkdtm(root: Path, name: str, lkdtm: str) -> str:
    test = f"lkdtm-{name}"
    (root / "guests" / "tests" / f"{test}.yaml").write_text(
        f"name: {test}\nbinary: {FAULTS / 'lkdtm.sh'}\nrun: [{test}, {lkdtm}]\nformat: ktap\ntimeout: 120\n")
    return test


def _run_crash_job(tmp: Path, root: Path, cpus: list[str], tests: list[str]) -> Outcome:
    """One run of CRASH_KERNEL on `cpus`, the healthy test first."""
    path = root / "jobs" / "fault.yaml"
    path.write_text(f"name: fault\nkernels: [{CRASH_KERNEL}]\ncpus: [{', '.join(cpus)}]\n"
                    f"tests: [{', '.join([HEALTHY, *tests])}]\ntimeouts: {{boot: 300, build: 7200}}\nretries: 1\n")
    return run_farm(root, tmp / "out", ["--job", str(path)], timeout=7200)


def crash_classes(tmp: Path) -> list[Row]:
    """Every crash class of the catalogue provoked (LKDTM) in one run of the debug kernel, one cell each next
    to a healthy one: each is a CRASH on its first attempt, named by the kind and title it should have."""
    from .crashcases import LIVE as CASES

    root = make_root(tmp)
    tests = [_add_lkdtm(root, name, case.lkdtm) for name, case in CASES.items()]
    o = _run_crash_job(tmp, root, ["Broadwell"], tests)
    healthy = cell_of(o.run, HEALTHY).get("status") == "PASS"
    rows = []
    for name, case in CASES.items():
        cell = cell_of(o.run, f"lkdtm-{name}")
        crashes = cell.get("crashes", [])
        named = [x for x in crashes if (x.get("kind"), x.get("title")) == (case.kind, case.title)]
        first = named[0] if named else (crashes[0] if crashes else {})
        row = Row(f"LKDTM {case.lkdtm} ({case.kind})"[:34], "CRASH (x1)")
        row.got = f"{cell.get('status', '?')} (x{cell.get('attempts', 0)})"
        t = cell.get("timings", {})
        row.seconds_to_verdict = round(t.get("test", 0.0) + t.get("shutdown", 0.0), 1)
        row.leftover = qemus_of(o.pid)
        row.lost = lost_results(o.run, o.out)
        row.others_ok = healthy
        row.notes = f"{first.get('kind', '?')}: {first.get('title', '')}"[:100]
        row.ok = (cell.get("status") == "CRASH" and cell.get("attempts") == 1 and first.get("kind") == case.kind
                  and first.get("title") == case.title and healthy and row.leftover == 0 and not row.lost
                  and "Traceback" not in o.stderr)
        rows.append(row)
    return rows


def splat_in_report(tmp: Path) -> Row:
    """A KASAN use-after-free provoked in the same test on two CPU models of the debug kernel: the report
    shows it once (one fingerprint, seen on both models) with its frames decoded to file:line."""
    root = make_root(tmp)
    test = _add_lkdtm(root, "kasan", "READ_AFTER_FREE")
    o = _run_crash_job(tmp, root, ["Broadwell", "Skylake-Server"], [test])
    cells = [c for c in o.run.get("cells", []) if c["test"] == test]
    prints = {x.get("fingerprint") for c in cells for x in c.get("crashes", []) if x.get("kind") == "kasan"}
    frames = [f for c in cells for x in c.get("crashes", []) if x.get("kind") == "kasan" for f in x.get("frames", [])]
    summary = (o.out / "summary.txt").read_text() if (o.out / "summary.txt").exists() else ""
    page = (o.out / "report.html").read_text() if (o.out / "report.html").exists() else ""
    row = Row("KASAN splat on 2 models: report", "1 fingerprint, file:line")
    row.got = f"{len(prints)} fingerprint(s), {'file:line' if any('heap.c:' in f for f in frames) else 'raw'}"
    row.leftover = qemus_of(o.pid)
    row.lost = lost_results(o.run, o.out)
    row.others_ok = all(c.get("status") == "PASS" for c in o.run.get("cells", []) if c["test"] == HEALTHY)
    row.notes = next((line.strip() for line in summary.splitlines() if line.strip().startswith("at ")), "")[:100]
    row.ok = (len(cells) == 2 and all(c.get("status") == "CRASH" for c in cells) and len(prints) == 1
              and any("drivers/misc/lkdtm/heap.c:" in f for f in frames)
              and "seen on Broadwell, Skylake-Server" in summary and "drivers/misc/lkdtm/heap.c:" in page
              and page.count('class="problem crashgroup"') == 1 and row.others_ok and row.leftover == 0)
    return row


SCENARIOS: list[Callable[[Path], Row | list[Row]]] = [
    boot_panic, triple_fault_at_boot, panic_in_test, reset_in_test, warning_guest_lives, hanging_test,
    kept_guest_deadline, flooding_output, flooding_console, qemu_killed, ssh_dropped, no_sshd, silent_guest, sigint_boot, sigterm_test, two_runs_at_once, full_disk, corrupt_run_json,
    crash_classes, splat_in_report,
]
# The rows that need the debug capture kernel (CRASH_KERNEL: KASAN, lockdep, DEBUG_INFO; ~10 min to build
# on 2 cores, and its guests boot several times slower): bench/faults.py always runs them, the suite only
# with FARM_DEBUG_KERNEL_TESTS=1 (tests/conftest.py), which keeps CI under its time budget.
DEBUG_KERNEL_SCENARIOS = {crash_classes, splat_in_report}


def run_all(names: list[str] | None = None) -> list[Row]:
    rows = []
    for scenario in SCENARIOS:
        if names and scenario.__name__ not in names:
            continue
        with tempfile.TemporaryDirectory(prefix=f"fault-{scenario.__name__}-") as tmp:
            got = scenario(Path(tmp))
            rows.extend(got if isinstance(got, list) else [got])  # a scenario may give one row per class
    return rows
