"""report.html: the page a reviewer opens, rendered from run.json (and the logs it names).

Order, most important first: the verdict, what was tested (tree, base, series) and the matrix, all visible
without scrolling in a 1400x900 window; then regressions and crashes (crashes grouped by fingerprint), each with
its excerpt inline; the A/B comparison as a pivot (cases x CPU models, baseline -> patched), unchanged rows
folded away and new coverage in one line per test and model group; the history strip and the timeline; what
each CPU model delivered; the kernels; every cell in one table with its files linked (consoles and outputs stay
files next to the report), and the cells that did not pass in full.

Everything shown is escaped (autoescape) and the page's Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..crash import site_frames
from ..results.history import Changes, CrashSeen, crash_key, crash_title
from ..results.run import FAILING, Case, Cell, Crash, Run, Status
from . import abtest, pictures
from .common import atomic_write, build_commands, build_summary, clean, farm_command, quiet_gc, tail_lines
from .common import verdict as _verdict

FULL_CELLS = 300  # cells that did not pass shown in full (their cases, reproduce lines); the rest are table rows
EXCERPT_LINES = 40  # lines of one inline excerpt (a crash, a failing case's diagnostics, an output tail)
EXCERPT_WIDTH = 240  # characters of one excerpt line
EXCERPT_BUDGET = 512 << 10  # bytes of excerpts inlined in the whole page; beyond it only links
MAX_PIVOT_ROWS = 500  # A/B rows listed per comparison (the most important first); `farm compare` prints them all
MAX_QUIET_ROWS = 300  # unchanged rows listed in the folded part

_ENV: jinja2.Environment | None = None
_ORDER = {s: i for i, s in enumerate(Status)}


def _env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("farm.report", "templates"),
            autoescape=True,  # every string from a guest or a log is escaped
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["anchor"] = pictures.anchor
        env.filters["kanchor"] = lambda s: "kernel-" + re.sub(r"[^A-Za-z0-9_-]", "_", s)
        env.filters["shjoin"] = shlex.join
        # control characters shown as \xNN; already-escaped Markup stays Markup (\xNN is safe in HTML)
        env.filters["clean"] = lambda s: Markup(clean(str(s))) if isinstance(s, Markup) else clean(str(s))
        env.filters["secs"] = _secs
        _ENV = env
    return _ENV


def verdict(run: Run) -> tuple[str, str]:
    return _verdict(run)


def _secs(v: float | None) -> str:
    if v is None:
        return ""
    v = float(v)
    if v >= 120:
        return f"{int(v // 60)}m{int(v % 60):02d}s"
    return f"{v:.1f} s"


# --- excerpts ---------------------------------------------------------------------------------------------

class Budget:
    """Bytes of excerpts the page may still inline."""

    def __init__(self, left: int):
        self.left = left

    def take(self, lines: list[str]) -> list[str] | None:
        size = sum(len(x) + 1 for x in lines)
        if size > self.left:
            return None
        self.left -= size
        return lines


def _clip_line(line: str) -> str:
    line = clean(line.removesuffix("\r"))
    return line if len(line) <= EXCERPT_WIDTH else line[:EXCERPT_WIDTH] + " [...]"


def _lines_around(path: Path, lineno: int, before: int = 4, after: int = EXCERPT_LINES - 5) -> list[tuple[int, str]]:
    """Lines lineno-before .. lineno+after of a file (1-based numbers), read up to there only."""
    first = max(1, lineno - before)
    try:
        with open(path, "rb") as f:
            chosen = list(islice(f, first - 1, lineno + after))
    except OSError:
        return []
    return [(first + i, _clip_line(b.decode("utf-8", "replace").rstrip("\n"))) for i, b in enumerate(chosen)]


def _crash_excerpt(run_dir: Path, cell: Cell, crash: Crash) -> list[dict]:
    """The console from just before the crash line to the end of its report (or EXCERPT_LINES)."""
    if crash.lineno and "console" in cell.files:
        got = _lines_around(run_dir / cell.files["console"], crash.lineno)
        out = []
        for n, text in got:
            out.append({"n": n, "text": text, "crash": n == crash.lineno})
            if n > crash.lineno and re.search(r"---\[ end (trace|Kernel panic)", text):
                break
        if out:
            return out
    return [{"n": crash.lineno or "", "text": _clip_line(crash.line), "crash": True}]


def _case_excerpt(cases: list[Case]) -> list[str]:
    """The diagnostics and result line of each failing case, as the KTAP output had them."""
    out = []
    for k in cases:
        out += [f"# {d}" for d in k.diagnostics[-12:]]
        out.append(f"not ok {k.number} {k.name}" + (f" # {k.reason}" if k.reason else ""))
        if len(out) >= EXCERPT_LINES:
            break
    return [_clip_line(x) for x in out[:EXCERPT_LINES]]


def _tail_excerpt(run_dir: Path, cell: Cell, name: str, lines: int = 25) -> list[str]:
    if name not in cell.files:
        return []
    got = tail_lines(run_dir / cell.files[name], 16 << 10)
    if got is None:
        return []
    return [_clip_line(x) for x in got[1][-lines:]]


# --- what the page shows ----------------------------------------------------------------------------------

@dataclass
class CrashGroup:
    key: str
    title: str
    kind: str
    hits: list[tuple[Cell, Crash]] = field(default_factory=list)
    seen: CrashSeen | None = None
    excerpt: list[dict] | None = None
    frames: list[str] = field(default_factory=list)

    @property
    def cpus(self) -> list[str]:
        return list(dict.fromkeys(c.cpu for c, _ in self.hits))

    @property
    def kernels(self) -> list[str]:
        return list(dict.fromkeys(c.kernel for c, _ in self.hits))

    @property
    def cells(self) -> list[Cell]:
        return list({c.id: c for c, _ in self.hits}.values())


@dataclass
class Problem:
    """Cells that failed the same way (status, test, failing cases or reason, A/B rows), shown once with the
    first one's excerpt, every one of them linked."""

    status: Status
    test: str
    what: str  # the failing cases, or the reason when no case failed
    rows: list[abtest.Row]  # the first cell's blocking A/B rows (the same kinds and cases for every member)
    members: list[tuple[Cell, str | None]] = field(default_factory=list)  # (cell, its baseline's status)
    excerpt: list[str] | None = None  # None: over the page's budget (the files are linked)
    excerpt_from: str = ""  # where the excerpt comes from
    groups: list[int] = field(default_factory=list)  # crash groups (indexes) its cells are in

    @property
    def cell(self) -> Cell:
        return self.members[0][0]


def _crash_groups(run: Run, run_dir: Path, changes: Changes | None, budget: Budget) -> list[CrashGroup]:
    groups: dict[str, CrashGroup] = {}
    for c in run.cells:
        for x in c.crashes:
            key = crash_key(x)
            g = groups.get(key)
            if g is None:
                g = groups[key] = CrashGroup(key, crash_title(x), x.kind, frames=site_frames(x.frames))
            g.hits.append((c, x))
    out = sorted(groups.values(), key=lambda g: (-len(g.hits), g.title))
    for g in out:
        if changes is not None:
            g.seen = changes.crashes.get(g.key)
        cell, crash = next(((c, x) for c, x in g.hits if x.lineno), g.hits[0])
        lines = _crash_excerpt(run_dir, cell, crash)
        if budget.take([str(x["text"]) for x in lines]) is not None:
            g.excerpt = lines
    return out


def _problems(run: Run, run_dir: Path, comparisons: list[abtest.Comparison], groups: list[CrashGroup],
              budget: Budget) -> tuple[list[Problem], list[Problem]]:
    """(regressions and new failures against a baseline, other failing cells), the worst first."""
    blocking: dict[str, list[abtest.Row]] = {}
    for comp in comparisons:
        for r in comp.blocking:
            blocking.setdefault(f"{r.kernel}/{r.cpu}/{r.test}", []).append(r)
    baseline_of = {k: info.baseline for k, info in run.kernels.items() if info.baseline}
    by_key = {(c.kernel, c.cpu, c.test): c for c in run.cells}
    in_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        for c in g.cells:
            in_group.setdefault(c.id, []).append(i)
    severity = {Status.CRASH: 0, Status.TIMEOUT: 1, Status.FAIL: 2, Status.FLAKY: 3}
    cells = sorted((c for c in run.cells if c.status in FAILING or c.id in blocking),
                   key=lambda c: (severity.get(c.status, 9), c.id))
    found: dict[tuple, Problem] = {}
    for c in cells:
        failing_cases = [k for k in c.cases if k.status is Status.FAIL]
        rows = blocking.get(c.id, [])
        what = ", ".join(k.name for k in failing_cases) or c.reason
        key = (bool(rows), c.status, c.test, what, tuple((r.kind, r.case, r.base, r.new) for r in rows),
               tuple(in_group.get(c.id, [])))
        base = baseline_of.get(c.kernel)
        base_cell = by_key.get((base, c.cpu, c.test)) if base else None
        p = found.get(key)
        if p is None:
            if len(found) >= FULL_CELLS:
                continue
            p = found[key] = Problem(c.status, c.test, what, rows, groups=in_group.get(c.id, []))
            if c.status is Status.CRASH and c.id in in_group:
                lines, p.excerpt_from = [], "crash"  # the crash group has the console excerpt
            elif failing_cases:
                lines, p.excerpt_from = _case_excerpt(failing_cases), "the failing cases' diagnostics"
            elif c.status is Status.TIMEOUT or "output" not in c.files:
                lines, p.excerpt_from = _tail_excerpt(run_dir, c, "console"), "the end of the console"
            else:
                lines, p.excerpt_from = _tail_excerpt(run_dir, c, "output"), "the end of the test's output"
            p.excerpt = budget.take(lines) if lines else []
        p.members.append((c, str(base_cell.status) if base_cell else None))
    regressions = [p for p in found.values() if p.rows]
    others = [p for p in found.values() if not p.rows]
    return regressions, others


def _tested(run: Run) -> dict:
    """What was tested, for the top of the page: the series, the base, each kernel in one line."""
    builds = run.builds()
    kernels = []
    for name in dict.fromkeys([*(c.kernel for c in run.cells), *run.kernels]):
        info = run.kernels.get(name)
        b = builds.get(name)
        source = (b.source_location and f"{b.source_kind}:{b.source_location}") if b else ""
        commit = (b.source_commit[:12] if b and b.source_commit else "")
        kernels.append({"name": name, "source": source or (info.source if info else "") or "?", "commit": commit,
                        "release": b.release if b else "", "patches": len(b.patches) if b else 0,
                        "outcome": str(b.outcome) if b else "not built", "ok": bool(b and b.outcome.ok),
                        "error": b.error if b else "", "baseline": info.baseline if info else None})
    applies = []
    if run.series is not None:
        for kernel, entries in run.series.applies.items():
            bad = [e for e in entries if not e.applies]
            applies.append({"kernel": kernel, "entries": entries, "bad": bad})
    return {"kernels": kernels, "applies": applies, "applies_bad": any(a["bad"] for a in applies)}


def _cell_rows(cells: list[Cell], full: set[str], problems: set[str]) -> Markup:
    """Every cell as one table row: status, cases, how it booted, how long, where, its files (linked).

    A cell's anchor (what the matrix links to) is its excerpt in the problems section, else its full section
    (cells that did not pass), else this row."""
    out = []
    for c in cells:
        st = c.status.value
        counts: dict[Status, int] = {}
        for k in c.cases:
            counts[k.status] = counts.get(k.status, 0) + 1
        cases = " ".join(f"{n}&nbsp;{s.value}" for s, n in sorted(counts.items(), key=lambda x: _ORDER[x[0]]))
        # names and paths are nearly always safe: one check for all of them, escaping only when needed
        esc = pictures.esc if pictures.needs_escape(c.id + c.host + c.booted + "".join(c.files.values())) else str
        files = " ".join(f'<a href="{esc(v)}">{esc(k)}</a>' for k, v in c.files.items())
        total = c.timings.get("total")
        booted = esc(c.booted) + (f' <span class="small">{esc(c.snapshot[:16])}</span>' if c.snapshot else "")
        tail = pictures.anchor(c.id)[5:]
        cid = esc(c.id)
        if c.id in full or c.id in problems:
            row_id = f"row-{tail}"
            link = f'<a href="#full-{tail}">{cid}</a>' if c.id in problems else f'<a href="#cell-{tail}">{cid}</a>'
        else:
            row_id, link = f"cell-{tail}", cid
        out.append(f'<tr id="{row_id}"><td>{link}<td class="s {st}">{st}<td>{cases}<td>{booted}'
                   f"<td>{'' if total is None else f'{total:.1f}'}<td>{esc(c.host)}<td>{files}</tr>\n")
    return Markup("".join(out))


def _pivot(rows: list[abtest.PivotRow], cpus: list[str], quiet: bool = False) -> Markup:
    """The A/B pivot's rows: a case per row, a CPU model per column, 'baseline -> patched' where it changed."""
    esc = pictures.esc
    out = []
    for r in rows:
        cells = []
        for cpu in cpus:
            x = r.cells.get(cpu)
            if x is None:
                cells.append("<td>")
            elif quiet or x.kind == "unchanged":
                cells.append(f'<td class="ab unchanged">{x.new or ""}')
            else:
                why = f"{x.kind}: {esc(clean(x.reason))}" if x.reason else x.kind
                cells.append(f'<td class="ab {x.kind}" title="{why}">{x.base or "-"} &rarr; {x.new or "-"}')
        case = esc(clean(r.case)) if r.case else "(whole test)"
        kind = "" if quiet else f' class="{r.kind}"'
        out.append(f"<tr{kind}><td>{esc(r.test)}<td>{case}{''.join(cells)}</tr>\n")
    return Markup("".join(out))


def render(run: Run, run_dir: Path, comparisons: list[abtest.Comparison] | None = None,
           changes: Changes | None = None) -> str:
    if comparisons is None:
        comparisons = abtest.within_run(run)
    run_dir = Path(run_dir)
    budget = Budget(EXCERPT_BUDGET)
    cpus = list(dict.fromkeys(c.cpu for c in run.cells))
    marks = {}
    if changes is not None:
        for c in run.cells:
            m = changes.mark(c.kernel, c.cpu, c.test)
            if m:
                marks[c.id] = m
    groups = _crash_groups(run, run_dir, changes, budget)
    regressions, others = _problems(run, run_dir, comparisons, groups, budget)
    flagged = {c.id for p in regressions for c, _ in p.members}
    problem_ids = {c.id for p in (*regressions, *others) for c, _ in p.members}
    infra = [c for c in run.cells if c.status.unknown]
    ordered = sorted(run.cells, key=lambda c: (c.status not in FAILING, c.status is not Status.ERROR,
                                               c.status is not Status.PENDING, c.status is not Status.SKIP, c.id))
    # failing cells, and every cell that ran on a LAVA lab (its job link belongs on the page)
    full = [c for c in ordered if c.status not in (Status.PASS, Status.SKIP) or c.lab_jobs][:FULL_CELLS]
    full_ids = {c.id for c in full}
    delivered = {}
    for c in run.cells:  # per model: the probe's facts where a cell has them, features QEMU dropped from any
        d = delivered.get(c.cpu)
        if d is None:
            d = delivered[c.cpu] = {"cpu_qemu": c.cpu_qemu, "accel": c.accel, "facts": {}, "filtered_features": []}
        if not d["facts"] and c.facts.get("xcr0"):
            d["facts"] = c.facts
        for f in c.filtered_features:
            if f not in d["filtered_features"]:
                d["filtered_features"].append(f)
    builds = run.builds()
    kernel_names = list(dict.fromkeys(c.kernel for c in run.cells))
    kernels = [{"name": k, "info": run.kernels.get(k), "build": builds.get(k),
                "summary": build_summary(builds.get(k)), "commands": build_commands(builds.get(k))}
               for k in dict.fromkeys([*kernel_names, *run.kernels])]
    ab = []
    for comp in comparisons:
        g = abtest.grouped(comp, cpus)
        ab.append({"comp": comp, "g": g, "counts": {k: n for k, n in comp.counts().items() if n},
                   "rows": _pivot(g.rows[:MAX_PIVOT_ROWS], g.cpus), "more": max(0, len(g.rows) - MAX_PIVOT_ROWS),
                   "quiet": _pivot(g.quiet[:MAX_QUIET_ROWS], g.cpus, quiet=True),
                   "more_quiet": max(0, len(g.quiet) - MAX_QUIET_ROWS),
                   "regressions": len(comp.regressions), "blocking": len(comp.blocking)})
    name, summary = verdict(run)
    timeline, timeline_note = pictures.timeline(run)
    strip, strip_note = pictures.strip(run, changes)
    wall = sum(run.phases.values()) or None
    return _env().get_template("report.html.j2").render(
        run=run,
        run_dir=str(run_dir),
        verdict=name,
        summary=summary,
        missing=run.missing(),
        tested=_tested(run),
        wall=wall,
        kernel_info=kernels,
        build_summaries={k["name"]: k["summary"] for k in kernels},
        cpus=cpus,
        css=Markup(pictures.css()),
        matrix=pictures.matrix(run, marks, flagged),
        counts={s: n for s, n in run.counts().items() if n},
        timeline=timeline,
        timeline_note=timeline_note,
        strip=strip,
        strip_note=strip_note,
        groups=groups,
        regressions=regressions,
        others=others,
        infra=infra,
        delivered=delivered,
        cells=full,
        cell_rows=_cell_rows(run.cells, full_ids, problem_ids),
        problem_ids=problem_ids,
        ab=ab,
        changes=changes,
        marks=marks,
        farm_command=farm_command,
    )


def write(run: Run, run_dir: Path, comparisons: list[abtest.Comparison] | None = None,
          changes: Changes | None = None) -> Path:
    with quiet_gc():
        return atomic_write(run_dir / "report.html", render(run, run_dir, comparisons, changes))
