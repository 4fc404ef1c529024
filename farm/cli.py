"""The `farm` command: parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import signal
import sys
from pathlib import Path

from . import doctor
from .catalog import Catalog
from .errors import FarmError, InputError
from .paths import data_root


def one_line(text: str) -> str:
    """Control characters from a data file (a key with a newline in it) must not split the error line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _catalog() -> Catalog:
    return Catalog(data_root())


def _interrupt_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from .progress import make as make_progress
    from .report import html
    from .results import run as runfile
    from .scheduler import Scheduler, default_parallel
    from .vm import accel

    catalog = _catalog()
    existing = None
    if args.resume:
        existing = runfile.load(Path(args.resume))
        job = catalog.job(existing.job_file if Path(existing.job_file).is_file() else existing.job)
        out = Path(args.resume)
    else:
        job = catalog.job(args.job)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else data_root() / "results" / f"{stamp}-{job.name}-{secrets.token_hex(2)}"
    kernels = catalog.match_kernels(args.kernel) if args.kernel else list(job.kernels)
    cpus = catalog.match_cpus(args.cpu) if args.cpu else list(job.cpus)
    tests = catalog.match_tests(args.test) if args.test else list(job.tests)
    if existing:
        kernels = list(dict.fromkeys(c.kernel for c in existing.cells))
        cpus = list(dict.fromkeys(c.cpu for c in existing.cells))
        tests = list(dict.fromkeys(c.test for c in existing.cells))
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: folder exists and is not empty (use --resume to finish a run)")
    acc = accel.probe(args.accel)
    progress = make_progress()
    if acc.name == "tcg" and args.accel == "auto":
        progress.note(f"warning: using TCG, not KVM: {acc.reason}")
    parallel = args.jobs or default_parallel()
    sched = Scheduler(catalog, job, kernels, cpus, tests, out, acc, parallel, progress, sys.argv, existing)
    _interrupt_on_sigterm()
    try:
        record = sched.run()
    except KeyboardInterrupt:
        record = sched.run_record
        html.write(record, out)
        print(f"interrupted; finished cells and a report are in {out}", file=sys.stderr)
        print(out)
        return 130
    html.write(record, out)
    counts = record.counts()
    print(" ".join(f"{s}={n}" for s, n in counts.items() if n), file=sys.stderr)
    print(out)
    return record.exit_code()


def cmd_list(args: argparse.Namespace) -> int:
    catalog = _catalog()
    if args.what == "cpus":
        for m in catalog.cpus.values():
            alias = f" (aliases: {', '.join(m.aliases)})" if m.aliases else ""
            print(f"{m.name:20} -cpu {m.qemu}{alias}")
    elif args.what == "kernels":
        for k in catalog.kernels.values():
            kind = "prebuilt" if k.prebuilt else f"{k.source.kind}:{k.source.location}"
            extra = f", {len(k.patches)} patch set(s)" if k.patches else ""
            print(f"{k.name:20} {kind}{extra}")
    elif args.what == "tests":
        for t in catalog.tests.values():
            print(f"{t.name:20} {t.format:9} {t.description[:70]}")
    else:
        for name, path in sorted(catalog.jobs.items()):
            job = catalog.job(str(path))
            print(f"{name:20} {len(job.kernels)} kernel(s) x {len(job.cpus)} CPU(s) x {len(job.tests)} test(s)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    ok, lines = doctor.check(data_root())
    for line in lines:
        print(line)
    return 0 if ok else 3


def cmd_check(args: argparse.Namespace) -> int:
    """Validate every data file (and a job) without running anything."""
    catalog = _catalog()
    jobs = [args.job] if args.job else [str(p) for p in catalog.jobs.values()]
    for job in jobs:
        catalog.job(job)
    print(f"ok: {len(catalog.cpus)} CPU models, {len(catalog.kernels)} kernels, {len(catalog.tests)} tests, "
          f"{len(jobs)} job(s)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import html
    from .results import run as runfile

    run_dir = Path(args.run_dir)
    record = runfile.load(run_dir)
    print(html.write(record, run_dir))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .kernel.build import BuildError, build_kernel

    catalog = _catalog()
    for name in catalog.match_kernels([args.kernel]):
        kernel = catalog.kernels[name]
        if kernel.prebuilt:
            print(f"{name}: prebuilt, nothing to build", file=sys.stderr)
            continue
        try:
            built = build_kernel(kernel, log=lambda line: print(line, file=sys.stderr))
        except BuildError as e:
            print(f"{name}: build failed: {e}", file=sys.stderr)
            for line in getattr(e, "lines", ())[:20]:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(built.image)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="farm", description="Boot patched kernels on many CPU models and test them.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a job: build, boot, test, report")
    r.add_argument("--job", default="default", help="job name (jobs/NAME.yaml) or a job file (default: default)")
    r.add_argument("--cpu", action="append", help="CPU model name, alias or prefix (repeatable)")
    r.add_argument("--kernel", action="append", help="kernel name or prefix (repeatable)")
    r.add_argument("--test", action="append", help="test name or prefix (repeatable)")
    r.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    r.add_argument("-j", "--jobs", type=int, help="cells in parallel (default: free cores)")
    r.add_argument("--out", help="run directory (default: results/<run-id>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="list what the data files define")
    ls.add_argument("what", choices=("cpus", "kernels", "tests", "jobs"))
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("doctor", help="report what this host can do")
    d.set_defaults(func=cmd_doctor)

    chk = sub.add_parser("check", help="validate the data files (and a job) without running anything")
    chk.add_argument("--job", help="job name or file (default: every job in jobs/)")
    chk.set_defaults(func=cmd_check)

    rep = sub.add_parser("report", help="render the reports of a run again from its run.json")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)

    b = sub.add_parser("build", help="build a kernel and print its image path")
    b.add_argument("--kernel", required=True)
    b.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "jobs", None) is not None and args.jobs < 1:
        print("farm: -j/--jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except FarmError as e:
        print(f"farm: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("farm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
