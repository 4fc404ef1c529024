"""summary.txt: the run as plain text for a reply on a mailing list (every line at most 72 columns).

Order, as on the page: the verdict, what was tested (series, base, kernels), regressions and new failures
against the baseline, crashes grouped by fingerprint, other failing cells, flaky results and infrastructure
problems, the A/B comparison grouped (new coverage in one line per test and model group), what each CPU model
delivered, how to reproduce, and a Tested-by line only when everything passed.
"""

from __future__ import annotations

from pathlib import Path

from ..crash import site_frames
from ..results.history import Changes, crash_key, crash_title
from ..results.run import FAILING, STATUSES, BuildOutcome, Cell, Run, Status
from . import abtest
from .common import ascii_line, build_summary, farm_command, verdict

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
    if run.interrupted or not run.cells or not counts[Status.PASS]:
        return None
    if any(counts[s] for s in (*FAILING, Status.ERROR, Status.PENDING)):
        return None
    if any(c.blocking for c in comparisons):
        return None
    host = ascii_line(run.host.hostname or "localhost").replace(" ", "") or "localhost"
    return "Tested-by: " + TESTED_BY.format(host=host)


def _models(run: Run) -> list[str]:
    per: dict[str, dict] = {}
    for c in run.cells:
        d = per.setdefault(c.cpu, {"accel": c.accel, "facts": {}, "counts": dict.fromkeys(STATUSES, 0)})
        if c.facts.get("xcr0") and not d["facts"]:
            d["facts"] = c.facts
        d["accel"] = d["accel"] or c.accel
        d["counts"][c.status] += 1
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
               f"{n['CRASH']:>4} {n['TIMEOUT']:>4} {n['FLAKY']:>4} {n['ERROR'] + n['PENDING']:>4}")
        out.append(row)
    return out


def _tested(run: Run, add) -> None:
    """What was tested: the series (subject, version, message-id), its base and where it applies, each kernel."""
    add("Tested")
    series = run.series
    if series is not None:
        add(f"Series: {series.subject or '(no subject)'} (v{series.version}, {len(series.patches)} patch(es))",
            "  ", "    ")
        if series.message_id:
            add(f"Message-ID: {series.message_id}", "    ", "      ")
        if series.link:
            add(f"Link: {series.link}", "    ", "      ")
        base = f"base-commit {series.base_commit}" if series.base_commit else "no base-commit in the series"
        if series.base_used:
            base += f"; built on {series.base_used}"
        add(f"Base: {base}" + (f". {series.base_note}" if series.base_note else ""), "  ", "    ")
        bad = [(k, e) for k, entries in series.applies.items() for e in entries if not e.applies]
        seen = set()
        for kernel, e in bad:
            if kernel in seen:
                continue
            seen.add(kernel)
            add(f"Does not apply to {kernel} at {e.patch}" + (f": {e.detail}" if e.detail else ""), "  ", "    ")
        if series.applies and not bad:
            add(f"Applies to: {', '.join(series.applies)}", "  ", "    ")
    builds = run.builds()
    for kernel in dict.fromkeys([*run.kernels, *(c.kernel for c in run.cells)]):
        info = run.kernels.get(kernel)
        line = f"{kernel}: {(info.source if info else '') or '?'}"
        if info and info.patches and series is None:
            line += " + " + ", ".join(info.patches)
        if info and info.baseline:
            line += f"; baseline {info.baseline}"
        add(line, "  ", "    ")
        if kernel in builds:
            add(build_summary(builds[kernel]), "    ", "    ")
            if series is None:
                for p in builds[kernel].patches:
                    if p.get("name"):
                        add(f"- {p['name']}", "    ", "      ")
    wall = sum(run.phases.values())
    took = f", {_secs(wall)} wall" if wall else (f", finished {run.finished}" if run.finished else "")
    add(f"Job {run.job} ({run.job_file}), started {run.started}{took}.", "  ", "    ")
    host = run.host
    if host.hostname:
        add(f"Host {host.hostname}, {host.qemu or '?'}, accelerator {host.accel or '?'}"
            + (f" ({host.accel_reason})" if host.accel_reason else "") + ".", "  ", "    ")


def _where(where: list[tuple[str, str]]) -> str:
    """(kernel, cpu) pairs as 'linux-6.1: Broadwell, max; linux-6.1-xcr0: max'."""
    per: dict[str, list[str]] = {}
    for kernel, cpu in where:
        per.setdefault(kernel, []).append(cpu)
    return "; ".join(f"{k}: {', '.join(cpus)}" for k, cpus in per.items())


def _secs(v: float) -> str:
    return f"{int(v // 60)}m{int(v % 60):02d}s" if v >= 120 else f"{v:.1f} s"


def crash_groups(run: Run) -> list[tuple[str, str, str, list[Cell], list[str], list[str]]]:
    """(fingerprint, title, kind, cells, lines, frames) per distinct crash, the most frequent first."""
    groups: dict[str, tuple[str, str, str, list[Cell], list[str], list[str]]] = {}
    for c in run.cells:
        for x in c.crashes:
            key = crash_key(x)
            g = groups.setdefault(key, (key, crash_title(x), x.kind, [], [], x.frames))
            if c not in g[3]:
                g[3].append(c)
            if x.line not in g[4]:
                g[4].append(x.line)
    return sorted(groups.values(), key=lambda g: (-len(g[3]), g[1]))


def render(run: Run, comparisons: list[abtest.Comparison] | None = None, changes: Changes | None = None) -> str:
    """The same order as the page: verdict, what was tested, regressions and crashes, other failures, the A/B
    comparison grouped (new coverage in one line per test and model group), history, models, reproduce."""
    if comparisons is None:
        comparisons = abtest.within_run(run)
    name, summary = verdict(run)
    blocking = sum(len(c.blocking) for c in comparisons)
    out: list[str] = []

    def add(text: str = "", indent: str = "", cont: str | None = None) -> None:
        out.extend(_wrap(ascii_line(text), indent, cont) if text else [""])

    add(f"farm run {run.run_id}: {name}")
    verdict_line = f"Verdict: {name} ({summary})"
    if comparisons:
        regressions = sum(len(c.regressions) for c in comparisons)
        verdict_line += f"; {regressions} regression(s)"
        if blocking - regressions:
            verdict_line += f", {blocking - regressions} new failure(s)"
        verdict_line += " against the baseline"
    add(verdict_line + ".")
    add()
    _tested(run, add)

    by_cell: dict[str, list[abtest.Row]] = {}
    for comp in comparisons:
        for r in comp.blocking:
            by_cell.setdefault(f"{r.kernel}/{r.cpu}/{r.test}", []).append(r)
    cells = {c.id: c for c in run.cells}
    if by_cell:
        add()
        add(f"Regressions and new failures against the baseline ({len(by_cell)} cell(s))")
        grouped_rows: dict[tuple, list[tuple[str, str]]] = {}  # (kind, item, base, new) -> (kernel, cpu)
        for cid, rows in by_cell.items():
            c = cells[cid]
            for r in rows:
                grouped_rows.setdefault((r.kind, r.name, r.base, r.new), []).append((c.kernel, c.cpu))
        for (kind, item, base, new), where in list(grouped_rows.items())[:MAX_LISTED]:
            add(f"{kind}: {item} {base or '-'} -> {new or '-'}", "  ", "      ")
            add(f"on {_where(where)}", "    ", "      ")
        if len(grouped_rows) > MAX_LISTED:
            add(f"... and {len(grouped_rows) - MAX_LISTED} more", "  ")
        reasons = dict.fromkeys(("crash: " + crash_title(cells[cid].crashes[0])) if cells[cid].crashes
                                else cells[cid].reason for cid in by_cell)
        for why in [r for r in reasons if r][:5]:
            add(f"why: {why}", "    ", "      ")

    groups = crash_groups(run)
    if groups:
        seen = changes.crashes if changes is not None else {}
        add()
        add(f"Crashes ({len(groups)} distinct)")
        for key, title, kind, gcells, lines, frames in groups[:MAX_LISTED]:
            cpus = list(dict.fromkeys(c.cpu for c in gcells))
            add(f"{title} ({kind}, {len(gcells)} cell(s))", "  ", "      ")
            add(f"seen on {', '.join(cpus)}", "    ", "      ")
            # where it happened, decoded to file:line: the first frame past the reporting machinery
            where = next((f for f in site_frames(frames)[:1] if " (" in f), "")
            if where:
                add(f"at {where}", "    ", "      ")
            first = seen.get(key)
            if first is not None:
                add(f"first seen in run {first.run_id} ({first.started})", "    ", "      ")
            if lines[0].strip() != title:
                add(lines[0], "    ", "      ")
        if len(groups) > MAX_LISTED:
            add(f"... and {len(groups) - MAX_LISTED} more", "  ")

    failing = [c for c in run.cells if c.status in FAILING and c.id not in by_cell]
    if failing:
        add()
        add(f"Other failing cells ({len(failing)})")
        severity = {"CRASH": 0, "TIMEOUT": 1, "FAIL": 2, "FLAKY": 3}
        failing.sort(key=lambda c: (severity.get(c.status, 9), c.id))
        same: dict[tuple[str, str, str], list[tuple[str, str]]] = {}  # (status, test, why) -> (kernel, cpu)
        for c in failing:
            why = ("crash: " + crash_title(c.crashes[0])) if c.crashes else c.reason
            same.setdefault((c.status, c.test, why), []).append((c.kernel, c.cpu))
        for (status, test, why), where in list(same.items())[:MAX_LISTED]:
            add(f"{status} {test}" + (f": {why}" if why else ""), "  ", "      ")
            add(f"on {_where(where)}", "    ", "      ")
        if len(same) > MAX_LISTED:
            add(f"... and {len(same) - MAX_LISTED} more", "  ")

    infra = [c for c in run.cells if c.status.unknown]
    retried = [c for c in run.cells if c.attempts > 1 and not c.status.unknown and c.status is not Status.FLAKY]
    flaky = changes.flaky if changes is not None else []
    flaky_cells = [c for c in run.cells if c.status is Status.FLAKY]
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
            what = "not run" if c.status is Status.PENDING else f"ERROR at {c.stage or '?'}"
            add(f"{what}: {c.id}" + (f": {c.reason}" if c.reason else ""), "  ", "      ")
        if len(infra) > MAX_LISTED:
            add(f"... and {len(infra) - MAX_LISTED} more", "  ")
        again: dict[str, list[tuple[str, str]]] = {}
        for c in retried:
            again.setdefault(f"{c.status} {c.test}", []).append((c.kernel, c.cpu))
        for what, where in again.items():
            add(f"retried before {what} (a second attempt confirmed it): {_where(where)}", "  ", "      ")

    cpus = list(dict.fromkeys(c.cpu for c in run.cells))
    for comp in comparisons:
        g = abtest.grouped(comp, cpus)
        counts = comp.counts()
        add()
        add(f"A/B: {comp.new_label} against {comp.base_label}: "
            + (", ".join(f"{n} {k}" for k, n in counts.items() if n) if comp.rows else "nothing to compare"))
        for gr in g.groups[:MAX_LISTED]:
            add(f"{gr.kind}: {gr.line(g.cpus)}", "  ", "      ")
        if len(g.groups) > MAX_LISTED:
            add(f"... and {len(g.groups) - MAX_LISTED} more groups", "  ")
        if comp.blocking:
            add(f"{len(comp.blocking)} regression(s) and new failure(s): listed above", "  ", "      ")
        listed = [r for p in g.rows for r in p.cells.values()
                  if r.kind not in abtest.QUIET and r.kind not in abtest.BLOCKING]
        listed.sort(key=abtest.Row.sort_key)
        for r in listed[:MAX_LISTED]:
            add(f"{r.kind}: {r.cpu} {r.name} {r.base or '-'} -> {r.new or '-'}", "  ", "      ")
        if len(listed) > MAX_LISTED:
            add(f"... and {len(listed) - MAX_LISTED} more (farm compare lists them all)", "  ")

    if changes is not None and changes.previous:
        add()
        add(f"Against the previous run of this job ({changes.previous}): {len(changes.new_failures)} new "
            f"failure(s), {len(changes.fixed)} fixed, {len(changes.flaky)} flaky")
        for label, items in (("new failure", changes.new_failures), ("fixed", changes.fixed)):
            with_cases = {(ch.kernel, ch.cpu, ch.test) for ch in items if ch.case}
            same_change: dict[tuple, list[tuple[str, str]]] = {}
            for ch in items:  # a whole test's change is told by its cases' when they have one
                if ch.case or (ch.kernel, ch.cpu, ch.test) not in with_cases:
                    same_change.setdefault((ch.name, ch.before, ch.now), []).append((ch.kernel, ch.cpu))
            for (item, before, now), where in list(same_change.items())[:MAX_LISTED]:
                add(f"{label}: {item} {before or '-'} -> {now} on {_where(where)}", "  ", "      ")

    add()
    add("What each CPU model delivered")
    out.extend(_models(run))

    add()
    add("Reproduce")
    shown, kinds = [], set()  # one command per way of failing (the first cell of each group above)
    for c in [cells[cid] for cid in by_cell if cid in cells] + failing + infra:
        kind = (c.status, c.test, c.reason)
        if kind not in kinds and len(shown) < 5:
            kinds.add(kind)
            shown.append(c)
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


def closing_lines(run: Run, run_dir: Path) -> list[str]:
    """What `farm run` prints when it ends: the verdict and counts, the wall time split into build, boot and
    test, and the run directory (the last line). Boot and test are summed over the cells (guest time): with
    several guests at once they add up to more than the cells' wall time."""
    name, summary = verdict(run)
    comparisons = abtest.within_run(run)
    lines = [f"{name}: {summary}" + (f"; {sum(len(c.regressions) for c in comparisons)} regression(s) against "
                                     "the baseline" if comparisons else "")]
    prepare, execute = run.phases.get("prepare", 0.0), run.phases.get("execute", 0.0)
    built = {k: b for k, b in run.builds().items() if b.outcome is BuildOutcome.BUILT}
    make = sum(float((b.metadata.get("durations") or {}).get("total", 0.0)) for b in built.values())
    boot = sum(c.timings.get("boot_to_ssh", c.timings.get("boot", 0.0)) for c in run.cells)
    test = sum(c.timings.get("test", 0.0) for c in run.cells)
    if run.phases:
        what = f"{len(built)} kernel(s) built in {_secs(make)}" if built else "kernels cached"
        lines.append(f"time: {_secs(prepare + execute)} wall = build {_secs(prepare)} ({what}) + cells "
                     f"{_secs(execute)}; in the cells: boot {_secs(boot)}, test {_secs(test)} "
                     f"(guest time, {run.host.parallel or 1} at once)")
    lines.append(str(run_dir))
    return lines


def write(run: Run, run_dir: Path, comparisons=None, changes: Changes | None = None) -> Path:
    from .common import atomic_write

    return atomic_write(run_dir / "summary.txt", render(run, comparisons, changes))
