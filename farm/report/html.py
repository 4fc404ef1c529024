"""report.html: one self-contained page for reviewers, rendered from run.json (and the logs it names).

Everything shown is escaped (autoescape) and the page's Content-Security-Policy allows no script at all.
It stays usable for large runs: small runs show every cell in full with its console inline; large runs
show failing cells in full and passing cells as one table row each, and console logs beyond a budget
are linked (relative to the run directory), not inlined.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from ..results.history import Changes
from ..results.run import FAILING, Run
from ..vm.console import CRASH_PATTERNS
from . import abtest
from .common import atomic_write, build_commands, build_summary, clean, farm_command, kernel_builds, quiet_gc
from .common import tail as _read_tail
from .common import verdict as _verdict

MAX_SHOWN = 64 << 10  # bytes of each console/output shown inline; the file has it all
INLINE_BUDGET = 4 << 20  # bytes of console/output inlined in the whole page
FULL_CELLS = 300  # runs up to this size show every cell in full; larger ones only the cells that did not pass
MAX_AB_ROWS = 1000  # A/B rows listed per comparison (regressions first); `farm compare` prints them all

_ENV: jinja2.Environment | None = None


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
        env.filters["anchor"] = _anchor
        env.filters["kanchor"] = lambda s: "kernel-" + re.sub(r"[^A-Za-z0-9_-]", "_", s)
        env.filters["shjoin"] = shlex.join
        # control characters shown as \xNN; already-escaped Markup stays Markup (\xNN is safe in HTML)
        env.filters["clean"] = lambda s: Markup(clean(str(s))) if isinstance(s, Markup) else clean(str(s))
        _ENV = env
    return _ENV


def _tail(path: Path) -> str | None:
    return _read_tail(path, MAX_SHOWN)


def verdict(run: Run) -> tuple[str, str]:
    return _verdict(run)


def _anchor(s: str) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]", "_", s)


def _grid(run: Run, kernels: list[str], cpus: list[str], tests: list[str], marks: dict[str, str]) -> Markup:
    """The results grid (kernel x test rows, one column per CPU model), built here: it has a cell per result."""
    grid = {(c.kernel, c.cpu, c.test): c for c in run.cells}
    out = ["<tr><th>kernel</th><th>test</th>", *(f"<th>{escape(cpu)}</th>" for cpu in cpus), "</tr>\n"]
    for kernel in kernels:
        ek = escape(kernel)
        for test in tests:
            out.append(f"<tr><td>{ek}</td><td>{escape(test)}</td>")
            for cpu in cpus:
                c = grid.get((kernel, cpu, test))
                if c is None:
                    out.append("<td></td>")
                    continue
                st = escape(c.status)
                mark = f'<span class="mark">{escape(marks[c.id])}</span>' if c.id in marks else ""
                out.append(f'<td class="s {st}" data-cell="{escape(c.id)}"><a href="#{_anchor(c.id)}">{st}</a>'
                           f"{mark}</td>")
            out.append("</tr>\n")
    return Markup("".join(out))


def _compact(cells: list) -> Markup:
    """One table row per cell that passed or skipped, in large runs: files linked, nothing inlined."""
    out = []
    for c in cells:
        st = escape(c.status)
        files = " ".join(f'<a href="{escape(v)}">{escape(k)}</a>' for k, v in c.files.items())
        total = c.timings.get("total")
        out.append(f'<tr id="{_anchor(c.id)}"><td>{escape(c.id)}</td><td class="s {st}">{st}</td>'
                   f"<td>{len(c.cases)}</td><td>{'' if total is None else f'{total:.1f}'}</td><td>{files}</td></tr>\n")
    return Markup("".join(out))


_CRASH_ANY = re.compile("|".join(f"(?:{p.pattern})" for _, p in CRASH_PATTERNS))


def render(run: Run, run_dir: Path, comparisons: list[abtest.Comparison] | None = None,
           changes: Changes | None = None) -> str:
    if comparisons is None:
        comparisons = abtest.within_run(run)
    ordered = sorted(run.cells, key=lambda c: (c.status not in FAILING, c.status != "ERROR",
                                               c.status != "PENDING", c.status != "SKIP", c.id))
    if len(run.cells) <= FULL_CELLS:
        full, compact = ordered, []
    else:
        full = [c for c in ordered if c.status not in ("PASS", "SKIP")][:FULL_CELLS]
        shown = {c.id for c in full}
        compact = [c for c in ordered if c.id not in shown]
    consoles, outputs = {}, {}
    budget = INLINE_BUDGET
    for c in full:
        if budget <= 0:
            break
        if "console" in c.files:
            text = _tail(run_dir / c.files["console"])
            if text is not None:
                budget -= len(text)
                consoles[c.id] = [{"text": clean(line), "crash": bool(_CRASH_ANY.search(line))}
                                  for line in text.splitlines()]
        if "output" in c.files:
            text = _tail(run_dir / c.files["output"])
            if text is not None:
                budget -= len(text)
                outputs[c.id] = clean(text)
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
    builds = kernel_builds(run)
    kernel_names = list(dict.fromkeys(c.kernel for c in run.cells))
    kernels = [{"name": k, "info": run.kernels.get(k) or {}, "build": builds.get(k) or {},
                "summary": build_summary(builds.get(k) or {}), "commands": build_commands(builds.get(k) or {})}
               for k in dict.fromkeys([*kernel_names, *run.kernels])]
    marks = {}
    if changes is not None:
        for c in run.cells:
            m = changes.mark(c.kernel, c.cpu, c.test)
            if m:
                marks[c.id] = m
    ab = []
    for comp in comparisons:
        rows = [r for r in comp.rows if r.kind != "unchanged"]
        unchanged = [r for r in comp.rows if r.kind == "unchanged"]
        ab.append({"comp": comp, "counts": {k: n for k, n in comp.counts().items() if n},
                   "rows": rows[:MAX_AB_ROWS], "more": max(0, len(rows) - MAX_AB_ROWS),
                   "unchanged": unchanged if len(unchanged) <= 200 else [], "n_unchanged": len(unchanged)})
    name, summary = verdict(run)
    cpus = list(dict.fromkeys(c.cpu for c in run.cells))
    tests = list(dict.fromkeys(c.test for c in run.cells))
    return _env().get_template("report.html.j2").render(
        run=run,
        run_dir=str(run_dir),
        verdict=name,
        summary=summary,
        missing=run.missing(),
        kernels=kernel_names,
        kernel_info=kernels,
        build_summaries={k["name"]: k["summary"] for k in kernels},
        cpus=cpus,
        grid=_grid(run, kernel_names, cpus, tests, marks),
        delivered=delivered,
        cells=full,
        compact=len(compact),
        compact_rows=_compact(compact),
        consoles=consoles,
        outputs=outputs,
        ab=ab,
        blocking=abtest.BLOCKING,
        changes=changes,
        marks=marks,
        farm_command=farm_command,
        max_shown=MAX_SHOWN,
    )


def write(run: Run, run_dir: Path, comparisons: list[abtest.Comparison] | None = None,
          changes: Changes | None = None) -> Path:
    with quiet_gc():
        return atomic_write(run_dir / "report.html", render(run, run_dir, comparisons, changes))
