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
from .errors import FarmError, InfraError, InputError
from .paths import data_root


def one_line(text: str) -> str:
    """Control characters from a data file (a key with a newline in it) must not split the error line."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: f"\\x{ord(m.group()):02x}", text)


def _catalog() -> Catalog:
    return Catalog(data_root())


def _interrupt_on_sigterm() -> None:
    """SIGTERM (CI cancelling a job) and SIGINT end a run the same way: finished cells kept, guests reaped.
    SIGINT is taken over too, since a shell starts background jobs with it ignored."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from .progress import make as make_progress
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
    parallel = args.jobs or default_parallel(job.memory_mb)
    sched = Scheduler(catalog, job, kernels, cpus, tests, out, acc, parallel, progress, sys.argv, existing)
    from .merge import apply_shard  # --shard I/N: this runner's slice of the cells
    apply_shard(sched, args.shard, existing)
    if args.hosts:  # remote farm hosts beside the local pool, in the same scheduler
        from .vm.remote import add_hosts
        add_hosts(sched, Path(args.hosts), args.accel)
    _interrupt_on_sigterm()
    try:
        record = sched.run()
    except KeyboardInterrupt:
        record = sched.run_record
        _write_reports(record, out)
        print(f"interrupted; finished cells and a report are in {out}", file=sys.stderr)
        print(out)
        return 130
    try:
        _write_reports(record, out)
    except OSError as e:
        raise InfraError(f"cannot write the reports in {out}: {e.strerror}") from None
    counts = record.counts()
    print(" ".join(f"{s}={n}" for s, n in counts.items() if n), file=sys.stderr)
    print(out)
    if sched.writer.error:  # the run went on, but its record on disk is not complete
        raise InfraError(f"{sched.writer.error}; results in {out} are incomplete")
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


def cmd_merge(args: argparse.Namespace) -> int:
    from . import merge

    return merge.main(Path(args.out), [Path(d) for d in args.run_dirs], Path(args.history) if args.history else None)


def cmd_doctor(args: argparse.Namespace) -> int:
    ok, lines = doctor.check(data_root())
    if args.hosts:
        from .vm.remote import check_hosts
        hosts_ok, host_lines = check_hosts(Path(args.hosts))
        ok, lines = ok and hosts_ok, [*lines, *host_lines]
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


# --- reports, A/B and history (report helper) ---------------------------------------------------


def _write_reports(record, out: Path, strict: bool = False) -> list[Path]:
    """Every report of a run, recorded in the history DB next to the runs (out.parent/history.sqlite).
    A damaged DB only warns (the reports are written without history), unless strict."""
    from .report import write_all

    def warn(msg: str) -> None:
        print(f"farm: warning: history not updated: {msg}", file=sys.stderr)

    return write_all(record, out, history=out.resolve().parent / "history.sqlite",
                     on_history_error=None if strict else warn)


def cmd_report(args: argparse.Namespace) -> int:
    from .results import run as runfile

    run_dir = Path(args.run_dir)
    record = runfile.load(run_dir)
    for path in _write_reports(record, run_dir):
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import abtest
    from .results import run as runfile

    comp = abtest.between_runs(runfile.load(Path(args.run_a)), runfile.load(Path(args.run_b)))
    for line in abtest.table(comp, with_kernel=True, width=200, unchanged=args.all):
        print(line)
    return 1 if comp.blocking else 0


def cmd_history(args: argparse.Namespace) -> int:
    from .results.history import LETTER, History

    db = Path(args.db) if args.db else data_root() / "results" / "history.sqlite"
    with History(db, create=False) as h:
        points = h.line(args.test, args.cpu, args.kernel, args.case)
    if not points:
        raise InputError(f"{db}: no results for test {args.test!r}"
                         + "".join(f" {k} {v!r}" for k, v in (("cpu", args.cpu), ("kernel", args.kernel),
                                                                ("case", args.case)) if v))
    series: dict[tuple[str, str], list] = {}
    for p in points:
        series.setdefault((p.kernel, p.cpu), []).append(p)
    for (kernel, cpu), pts in series.items():
        name = f"{args.test}.{args.case}" if args.case else args.test
        print(f"{kernel} {cpu} {name}: {''.join(LETTER.get(p.status, '?') for p in pts)}  (oldest first)")
        for p in pts:
            print(f"  {p.started:25} {p.run_id:40} {p.status}")
    return 0


# --- end of report helper additions ----------------------------------------------------------------


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
    r.add_argument("--hosts", metavar="FILE", help="Ansible inventory of farm hosts to spread cells over")
    r.add_argument("--shard", metavar="I/N", help="run only shard I of N of the cells (merge with `farm merge`)")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="list what the data files define")
    ls.add_argument("what", choices=("cpus", "kernels", "tests", "jobs"))
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("doctor", help="report what this host can do")
    d.add_argument("--hosts", metavar="FILE", help="also check every farm host of this Ansible inventory")
    d.set_defaults(func=cmd_doctor)

    mg = sub.add_parser("merge", help="join shard run directories into one run and render its reports")
    mg.add_argument("out", help="the merged run directory (new or empty)")
    mg.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    mg.add_argument("--history", metavar="DB", help="the history database to record the merged run in "
                    "(default: history.sqlite beside OUT)")
    mg.set_defaults(func=cmd_merge)

    chk = sub.add_parser("check", help="validate the data files (and a job) without running anything")
    chk.add_argument("--job", help="job name or file (default: every job in jobs/)")
    chk.set_defaults(func=cmd_check)

    rep = sub.add_parser("report", help="render the reports of a run again from its run.json")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)

    # report helper: A/B between runs and the history line
    cmp = sub.add_parser("compare", help="A/B: the same kernel/cpu/test/case in run A vs run B, regressions first")
    cmp.add_argument("run_a", metavar="RUN_A")
    cmp.add_argument("run_b", metavar="RUN_B")
    cmp.add_argument("--all", action="store_true", help="list unchanged results too")
    cmp.set_defaults(func=cmd_compare)

    hist = sub.add_parser("history", help="a test's results over time, from the history database")
    hist.add_argument("--test", required=True)
    hist.add_argument("--cpu")
    hist.add_argument("--kernel")
    hist.add_argument("--case", help="a KTAP case of the test (default: the whole test)")
    hist.add_argument("--db", help="history database (default: results/history.sqlite)")
    hist.set_defaults(func=cmd_history)

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
