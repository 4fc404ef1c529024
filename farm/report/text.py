"""summary.txt: the run as plain text for a reply on a mailing list (every line at most 72 columns).

Order: what was tested, the verdict, regressions (A/B against each kernel's baseline), other failures,
flaky results and infrastructure problems, what each CPU model delivered, how to reproduce, and a
Tested-by line only when everything passed.
"""

from __future__ import annotations

from pathlib import Path

from ..results.history import Changes
from ..results.run import FAILING, STATUSES, Run
from . import abtest
from .common import ascii_line, build_summary, farm_command, kernel_builds, verdict

WIDTH = 72
MAX_LISTED = 25  # rows per list; the HTML report and `farm compare` have them all
TESTED_BY = "farm <farm@{host}>"


def _wrap(text: str, indent: str = "", cont: str | None = None) -> list[str]:
    """Wrap one (already ASCII) line to WIDTH, breaking at spaces, or anywhere when a word is too long."""
    cont = indent + "  " if cont is None else cont
    line, out = indent + text, []
    first = True
    while len(line) > WIDTH:
        lead = len(indent if first else cont)
        cut = line.rfind(" ", lead + 1, WIDTH + 1)
        if cut <= lead:
            cut = WIDTH
        out.append(line[:cut].rstrip())
        line = cont + line[cut:].lstrip(" ")
        first = False
    out.append(line.rstrip())
    return out


def _cmd(command: str, indent: str = "  ") -> list[str]:
    """A shell command, continued with backslashes so that each line fits."""
    words = command.split(" ")
    out, cur = [], indent
    for w in words:
        candidate = (cur + " " + w) if cur.strip() else cur + w
        if len(candidate) > WIDTH - 2 and cur.strip():
            out.append(cur + " \\")
            cur = indent + "    " + w
        else:
            cur = candidate
    out.append(cur)
    return [x for line in out for x in _wrap(line, "", indent + "    ")]


def tested_by(run: Run, comparisons: list[abtest.Comparison]) -> str | None:
    """The Tested-by line, only when every cell finished and passed (a SKIP is not a failure: the exit code
    is 0 as well), at least one passed, nothing was interrupted and no A/B item is blocking."""
    counts = run.counts()
    if run.interrupted or not run.cells or not counts["PASS"]:
        return None
    if any(counts[s] for s in (*FAILING, "ERROR", "PENDING")):
        return None
    if any(c.blocking for c in comparisons):
        return None
    host = ascii_line(str(run.host.get("hostname") or "localhost")).replace(" ", "") or "localhost"
    return "Tested-by: " + TESTED_BY.format(host=host)


def _models(run: Run) -> list[str]:
    per: dict[str, dict] = {}
    for c in run.cells:
        d = per.setdefault(c.cpu, {"accel": c.accel, "facts": {}, "counts": dict.fromkeys((*STATUSES, "PENDING"), 0)})
        if c.facts.get("xcr0") and not d["facts"]:
            d["facts"] = c.facts
        d["accel"] = d["accel"] or c.accel
        d["counts"][c.status if c.status in d["counts"] else "PENDING"] += 1
    cols = f"{'accel':<5} {'XCR0':<7} {'XSAVE':>5} PASS FAIL SKIP CRSH TIME FLKY  ERR"
    width = min(max([5, *(len(ascii_line(m)) for m in per)]), WIDTH - 3 - len(cols))
    out = [f"  {'model':<{width}} {cols}"]
    for m, d in per.items():
        name = ascii_line(m)
        if len(name) > width:
            name = name[: width - 1] + "~"
        n = d["counts"]
        f = d["facts"]
        row = (f"  {name:<{width}} {ascii_line(d['accel'] or '?')[:5]:<5} {ascii_line(f.get('xcr0', '?'))[:7]:<7} "
               f"{ascii_line(f.get('xsave_size', '?'))[:5]:>5} {n['PASS']:>4} {n['FAIL']:>4} {n['SKIP']:>4} "
               f"{n['CRASH']:>4} {n['TIMEOUT']:>4} {n.get('FLAKY', 0):>4} {n['ERROR'] + n['PENDING']:>4}")
        out.append(row)
    return out


def render(run: Run, comparisons: list[abtest.Comparison] | None = None, changes: Changes | None = None) -> str:
    if comparisons is None:
        comparisons = abtest.within_run(run)
    name, summary = verdict(run)
    blocking = sum(len(c.blocking) for c in comparisons)
    out: list[str] = []

    def add(text: str = "", indent: str = "", cont: str | None = None) -> None:
        out.extend(_wrap(ascii_line(text), indent, cont) if text else [""])

    add(f"farm run {run.run_id}: {name}")
    add(f"Job {run.job} ({run.job_file}), started {run.started}"
        + (f", finished {run.finished}" if run.finished else "") + ".")
    host = run.host or {}
    if host:
        add(f"Host {host.get('hostname', '?')}, {host.get('qemu', '?')}, accelerator {host.get('accel', '?')}"
            + (f" ({host['accel_reason']})" if host.get("accel_reason") else "") + ".")
    add()
    add("Tree and series tested")
    builds = kernel_builds(run)
    for kernel in dict.fromkeys([*run.kernels, *(c.kernel for c in run.cells)]):
        info = run.kernels.get(kernel) or {}
        patches = info.get("patches") or []
        line = f"{kernel}: {info.get('source') or '?'}"
        if patches:
            line += " + " + ", ".join(str(p) for p in patches)
        if info.get("baseline"):
            line += f"; baseline {info['baseline']}"
        add(line, "  ", "    ")
        if kernel in builds:
            add(build_summary(builds[kernel]), "    ", "    ")
        for p in (builds.get(kernel) or {}).get("patches") or []:
            if isinstance(p, dict) and p.get("name"):
                add(f"- {p['name']}", "    ", "      ")
    add()
    verdict_line = f"Verdict: {name} ({summary})"
    if comparisons:
        regressions = sum(len(c.regressions) for c in comparisons)
        verdict_line += f"; {regressions} regression(s)"
        if blocking - regressions:
            verdict_line += f", {blocking - regressions} new failure(s)"
        verdict_line += " against the baseline"
    add(verdict_line + ".")

    for comp in comparisons:
        add()
        add(f"A/B: {comp.new_label} against {comp.base_label} (regressions first)")
        out.extend(abtest.table(comp, width=WIDTH, limit=MAX_LISTED))

    failing = [c for c in run.cells if c.status in FAILING]
    if failing:
        add()
        add(f"Failing cells ({len(failing)})")
        severity = {"CRASH": 0, "TIMEOUT": 1, "FAIL": 2, "FLAKY": 3}
        failing.sort(key=lambda c: (severity.get(c.status, 9), c.id))
        for c in failing[:MAX_LISTED]:
            add(f"{c.status:<7} {c.id}", "  ", "          ")
            if c.reason:
                add(c.reason, "          ", "          ")
        if len(failing) > MAX_LISTED:
            add(f"... and {len(failing) - MAX_LISTED} more", "  ")

    if changes is not None and changes.previous:
        add()
        add(f"Against the previous run of this job ({changes.previous}): {len(changes.new_failures)} new "
            f"failure(s), {len(changes.fixed)} fixed, {len(changes.flaky)} flaky")
        for label, items in (("new failure", changes.new_failures), ("fixed", changes.fixed)):
            for ch in items[:MAX_LISTED]:
                add(f"{label}: {ch.where} {ch.before or '-'} -> {ch.now}", "  ", "      ")

    infra = [c for c in run.cells if c.status in ("ERROR", "PENDING")]
    retried = [c for c in run.cells if c.attempts > 1 and c.status not in ("ERROR", "PENDING", "FLAKY")]
    flaky = changes.flaky if changes is not None else []
    flaky_cells = [c for c in run.cells if c.status == "FLAKY"]
    if flaky or flaky_cells or infra or retried or run.interrupted:
        add()
        add("Flaky results and infrastructure problems")
        for c in flaky_cells[:MAX_LISTED]:
            add(f"FLAKY (failed, then passed on its retry): {c.id}" + (f": {c.reason}" if c.reason else ""),
                "  ", "      ")
        for ch in flaky[:MAX_LISTED]:
            add(f"flaky: {ch.where} (recent: {ch.line})", "  ", "      ")
        if run.interrupted:
            add("the run was interrupted; finish it with farm run --resume", "  ", "    ")
        for c in infra[:MAX_LISTED]:
            what = "not run" if c.status == "PENDING" else f"ERROR at {c.stage or '?'}"
            add(f"{what}: {c.id}" + (f": {c.reason}" if c.reason else ""), "  ", "      ")
        if len(infra) > MAX_LISTED:
            add(f"... and {len(infra) - MAX_LISTED} more", "  ")
        for c in retried[:MAX_LISTED]:
            add(f"retried ({c.attempts} attempts) before {c.status}: {c.id}", "  ", "      ")

    add()
    add("What each CPU model delivered")
    out.extend(_models(run))

    add()
    add("Reproduce")
    shown = (failing + infra)[:5]
    for c in shown:
        out.extend(_cmd(ascii_line(farm_command(run, c))))
    out.extend(_cmd(ascii_line(farm_command(run))))
    if len(run.cells) > 0:
        out.append("  then: farm report <run-dir>; farm compare <run-a> <run-b>")
    line = tested_by(run, comparisons)
    if line:
        add()
        add(line)
    # a last guard: nothing longer than WIDTH leaves, whatever a line above was made of
    return "\n".join(x for line in out for x in (_wrap(line, "", "    ") if len(line) > WIDTH else [line])) + "\n"


def write(run: Run, run_dir: Path, comparisons=None, changes: Changes | None = None) -> Path:
    from .common import atomic_write

    return atomic_write(run_dir / "summary.txt", render(run, comparisons, changes))
