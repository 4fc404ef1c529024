"""The `farm` command: parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import signal
import sys
from pathlib import Path

from . import doctor
from . import series as intake_series
from .catalog import Catalog
from .errors import FarmError, InfraError, InputError
from .paths import data_root
from .textsafe import one_line


def _catalog() -> Catalog:
    return Catalog(data_root())


def _interrupt_on_sigterm() -> None:
    """SIGTERM (CI cancelling a job) and SIGINT end a run the same way: finished cells kept, guests reaped.
    SIGINT is taken over too, since a shell starts background jobs with it ignored."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _check_out(out: Path) -> None:
    """The run directory: new or empty, and writable, before anything is built or booted."""
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"--out {out}: exists and is not an empty folder (use --resume to finish a run)")
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".farm-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"--out {out}: cannot write a run there: {e.strerror or e}") from None


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from . import scheduler
    from .capacity import default_slots
    from .guest.keys import client_key
    from .paths import cache_root
    from .plan import Plan, parse_shard
    from .progress import make as make_progress
    from .results import run as runfile
    from .vm import accel, registry

    catalog = _catalog()
    existing = runfile.load(Path(args.resume)) if args.resume else None
    if existing:
        job = catalog.job(existing.job_file if Path(existing.job_file).is_file() else existing.job)
        out = Path(args.resume)
    else:
        job = catalog.job(args.job)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else data_root() / "results" / f"{stamp}-{job.name}-{secrets.token_hex(2)}"
    if not existing:
        _check_out(out)
    series = None
    if existing and existing.series:  # a run of a series: its kernels come from the series again
        series = intake_series.again(existing.series, out)
    elif args.series:
        series = intake_series.intake(args.series, out / "series", Path(args.series_mbox) if args.series_mbox else None)
    run_kernels = intake_series.add_kernels(catalog, job, series, _note) if series else list(job.kernels)
    kernels = catalog.match_kernels(args.kernel) if args.kernel else run_kernels
    cpus = catalog.match_cpus(args.cpu) if args.cpu else list(job.cpus)
    tests = catalog.match_tests(args.test) if args.test else list(job.tests)
    pools = [registry.parse(p) for p in args.pool or []] + [("remote", h) for h in args.hosts or []]
    pools += [("lava", url) for url in args.lava or []]
    if args.jobs == 0 and not pools:
        raise InputError("-j 0 (no guests on this machine) needs another pool: --hosts, --pool or --lava")
    shard = parse_shard(args.shard) if args.shard and not existing else None
    key = client_key(cache_root() / "keys")
    key.load()  # a damaged key is bad input, found before any guest boots
    acc = accel.probe(args.accel)
    progress = make_progress()
    if acc.name == "tcg" and args.accel == "auto":
        progress.note(f"warning: using TCG, not KVM: {acc.reason}")
    slots = args.jobs if args.jobs is not None else default_slots(job.memory_mb)
    if existing:
        plan = Plan.resume(catalog, job, existing, out, acc, sys.argv, key, slots, args.accel)
    else:
        plan = Plan.new(catalog, job, kernels, cpus, tests, out, acc, sys.argv, key, slots, args.accel)
    if series:
        plan.record.series = series.record
    plan.snapshots = not args.no_snapshots
    plan.keep_failed = (args.keep_failed or 0) * 60
    if existing:  # a run dir is used again: the guests kept from it end first (they hold its state)
        from . import keep

        for cell in keep.stop_all(out):
            progress.note(f"stopped the kept guest of {cell}")
    if shard:
        plan.shard(*shard)
    for kind, arg in pools:  # farm hosts, labs: more pools beside the local one, in the same run
        plan.add_backend(kind, arg, progress.note, token_file=args.lava_token_file)
    _interrupt_on_sigterm()
    try:
        record, writer = scheduler.run(plan, progress)
    except KeyboardInterrupt:
        _write_reports(plan.record, out)
        print(f"interrupted; finished cells and a report are in {out}", file=sys.stderr)
        print(out)
        return 130
    try:
        _write_reports(record, out)
    except OSError as e:
        raise InfraError(f"cannot write the reports in {out}: {e.strerror}") from None
    from .report.text import closing_lines

    counts = record.counts()
    print(" ".join(f"{s}={n}" for s, n in counts.items() if n), file=sys.stderr)
    for line in closing_lines(record, out)[:-1]:  # the verdict, and the wall time split into build, boot, test
        print(line, file=sys.stderr)
    print(out)
    if writer.error:  # the run went on, but its record on disk is not complete
        raise InfraError(f"{writer.error}; results in {out} are incomplete")
    return record.exit_code()


def cmd_lava_jobs(args: argparse.Namespace) -> int:
    from .lava.export import write_jobs

    catalog = _catalog()
    job = catalog.job(args.job)
    kernels = catalog.match_kernels(args.kernel) if args.kernel else list(job.kernels)
    cpus = catalog.match_cpus(args.cpu) if args.cpu else list(job.cpus)
    tests = catalog.match_tests(args.test) if args.test else list(job.tests)
    written = write_jobs(catalog, job, kernels, cpus, tests, Path(args.out), args.artifacts_url, args.accel,
                         note=lambda text: print(text, file=sys.stderr))
    for path in written:
        print(path)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    from . import shell
    from .results import run as runfile

    run_dir = Path(args.run_dir)
    if args.stop:
        for cell in shell.stop(run_dir, args.cell):
            print(f"stopped {cell}", file=sys.stderr)
        return 0
    if not args.cell:
        raise InputError("farm shell: name the cell (kernel/cpu/test), or give --stop")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return shell.shell(runfile.load(run_dir), run_dir, args.cell, command, gdb=args.gdb)


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
        hosts_ok, host_lines = doctor.check_hosts(Path(args.hosts))
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


def cmd_reply(args: argparse.Namespace) -> int:
    from .report import reply

    print(reply.main(Path(args.run_dir), Path(args.out) if args.out else None, args.report_url, args.sender))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from . import progress as progress_mod
    from .kernel.build import BuildError, build_kernel

    catalog = _catalog()
    for name in catalog.match_kernels([args.kernel]):
        kernel = catalog.kernels[name]
        if kernel.prebuilt:
            print(f"{name}: prebuilt, nothing to build", file=sys.stderr)
            continue
        show = progress_mod.make()
        try:
            built = build_kernel(kernel, log=show.note, progress=show.build)
        except BuildError as e:
            show.stop()
            print(f"{name}: build failed: {e}", file=sys.stderr)
            for line in e.lines[:20]:
                print(f"  {line}", file=sys.stderr)
            return 1
        show.stop()
        print(built.image)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from .kernel import cache, workdirs

    if args.keep is not None and args.keep < 0:
        print(f"farm gc: --keep must be 0 or more, not {args.keep}", file=sys.stderr)
        return 2
    keep = workdirs.keep_default() if args.keep is None else args.keep
    freed = workdirs.collect(cache.root() / "work", keep, dry_run=args.dry_run)
    mib = sum(size for _, size in freed) / 2**20
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {mib:.0f} MiB in {len(freed)} work dir(s), keeping the newest {keep} per kernel")
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
    r.add_argument("-j", "--jobs", type=int, help="cells in parallel (default: cores + 1, as memory allows)")
    r.add_argument("--out", help="run directory (default: results/<run-id>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run")
    r.add_argument("--hosts", metavar="FILE", action="append",
                   help="Ansible inventory of farm hosts to spread cells over (same as --pool remote:FILE)")
    r.add_argument("--pool", metavar="KIND:ARG", action="append",
                   help="guests of another VM backend beside the local ones (farm/vm/registry.py)")
    r.add_argument("--keep-failed", metavar="MINUTES", type=float, nargs="?", const=30.0,
                   help="leave a failed cell's guest running this long (default 30) for `farm shell`")
    r.add_argument("--no-snapshots", action="store_true",
                   help="boot every cell's guest (default: each kernel and CPU model boots once per run, and its "
                        "other cells start from that booted guest's snapshot)")
    r.add_argument("--series", metavar="PATH|MSGID",
                   help="a patch series to test: an mbox, a folder of git format-patch files, b4 am output, or a "
                        "message-id (through b4); it goes on top of the job's unpatched kernels, at its base-commit")
    r.add_argument("--series-mbox", metavar="MBOX", help="with a message-id: b4 am reads it from this mbox "
                   "(offline) instead of lore")
    r.add_argument("--shard", metavar="I/N", help="run only shard I of N of the cells (merge with `farm merge`)")
    r.add_argument("--lava", metavar="URL", action="append",
                   help="a LAVA lab to run cells on as LAVA jobs (same as --pool lava:URL; -j 0: only there)")
    r.add_argument("--lava-token-file", metavar="FILE",
                   help="the LAVA API token (a private file; or set FARM_LAVA_TOKEN; never on the command line)")
    r.set_defaults(func=cmd_run)

    lj = sub.add_parser("lava-jobs", help="write a job's cells as LAVA job definitions, without submitting them")
    lj.add_argument("job", help="job name (jobs/NAME.yaml) or a job file")
    lj.add_argument("--out", required=True, help="folder for jobs/ and artifacts/")
    lj.add_argument("--artifacts-url", metavar="URL",
                    help="where the lab downloads OUT/artifacts/ from (default: file:// URLs of that folder)")
    lj.add_argument("--cpu", action="append", help="CPU model name, alias or prefix (repeatable)")
    lj.add_argument("--kernel", action="append", help="kernel name or prefix (repeatable)")
    lj.add_argument("--test", action="append", help="test name or prefix (repeatable)")
    lj.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="the accelerator on the lab's workers")
    lj.set_defaults(func=cmd_lava_jobs)

    sh = sub.add_parser("shell", help="an SSH session into a cell's guest (kept by --keep-failed, or booted again)")
    sh.add_argument("run_dir", metavar="RUN_DIR")
    sh.add_argument("cell", nargs="?", metavar="CELL", help="kernel/cpu/test")
    sh.add_argument("command", nargs=argparse.REMAINDER,
                    help="a command to run instead of an interactive shell (after the cell; options go before it)")
    sh.add_argument("--stop", action="store_true", help="stop the kept guest (of CELL, or every one of RUN_DIR)")
    sh.add_argument("--gdb", action="store_true", help="also open QEMU's gdb stub on 127.0.0.1 and print how to attach")
    sh.set_defaults(func=cmd_shell)

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

    rp = sub.add_parser("reply", help="write the run's summary as a reply to its series (RFC 5322; never sent)")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--report-url", metavar="URL", help="where the HTML report is published: linked in the reply")
    rp.add_argument("--out", metavar="FILE", help="the message file (default: RUN_DIR/reply.eml)")
    rp.add_argument("--from", dest="sender", metavar="ADDR",
                    help="From: and Tested-by identity, 'Name <addr>' (default: the farm's, as in summary.txt)")
    rp.set_defaults(func=cmd_reply)

    b = sub.add_parser("build", help="build a kernel and print its image path")
    b.add_argument("--kernel", required=True)
    b.set_defaults(func=cmd_build)

    gc = sub.add_parser("gc", help="remove old kernel work dirs (the newest FARM_KEEP_WORK per kernel stay)")
    gc.add_argument("--keep", type=int, default=None, help="work dirs kept per kernel (default: FARM_KEEP_WORK or 3)")
    gc.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    gc.set_defaults(func=cmd_gc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "jobs", None) is not None and args.jobs < 0:
        print("farm: -j/--jobs must be at least 1 (or 0: no guests on this machine, with another pool)",
              file=sys.stderr)
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
