"""A/B verdicts: a patched kernel against its baseline (in one run), or one run against another.

Each compared item is a KTAP case of a test on a CPU model, or the whole test when it has no cases (or
when its status is not just the sum of its cases: a crash, a timeout, an incomplete plan). Kinds:

  regression     baseline PASS, patched FAIL/CRASH/TIMEOUT/FLAKY (or -> CRASH from another failure)
  new-failure    patched FAIL/CRASH/TIMEOUT/FLAKY where the baseline gave no verdict (absent, SKIP, ERROR, not run)
  lost-coverage  ran on the baseline (PASS or failing), SKIP on the patched kernel: could hide a regression
  missing        present on the baseline only
  inconclusive   one side ERROR (infrastructure) or not run, so nothing can be said
  still-failing  failing on both sides, differently
  fixed          baseline FAIL/CRASH/TIMEOUT/FLAKY, patched PASS
  new-coverage   baseline SKIP, patched PASS: the series makes the test applicable
  new            present on the patched side only, not failing
  skipped-both   SKIP on both sides of a kernel with patches: nothing was proven either way (shown, never
                 folded away as unchanged: a series whose feature silently disappeared looks like this)
  unchanged      the same status on both sides

FLAKY (failed, then passed on its retry) counts as failing, as it does for the run's exit code.
Rows are ordered by that list, so regressions come first everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..results.run import FAILING, Cell, Run, Status
from .common import ascii_line, explained_by_cases, quiet_gc

BAD = FAILING  # FAIL CRASH TIMEOUT FLAKY
UNKNOWN = ("ERROR", "PENDING")
KINDS = ("regression", "new-failure", "lost-coverage", "missing", "inconclusive", "still-failing", "fixed",
         "new-coverage", "new", "skipped-both", "unchanged")
RANK = {k: i for i, k in enumerate(KINDS)}
BLOCKING = ("regression", "new-failure")  # what keeps a series from a Tested-by and makes `farm compare` exit 1
WHOLE = ""  # the case name of a whole-test row


def classify(base: str | None, new: str | None, patched: bool = False) -> str:
    """The A/B kind for one item: base/new are statuses (PASS FAIL SKIP CRASH TIMEOUT FLAKY ERROR PENDING) or None;
    `patched`: the new side is a kernel with patches (then SKIP on both sides is flagged)."""
    if new is None:
        return "missing" if base is not None else "unchanged"
    if base == new:
        return "skipped-both" if patched and new == "SKIP" else "unchanged"
    if new in BAD:
        if base == "PASS" or (new == "CRASH" and base in BAD):
            return "regression"
        if base in BAD:
            return "still-failing"
        return "new-failure"
    if base is None:
        return "new"
    if new in UNKNOWN or base in UNKNOWN:
        return "inconclusive"
    if new == "SKIP":  # base is PASS or failing
        return "lost-coverage"
    # new == PASS
    if base in BAD:
        return "fixed"
    return "new-coverage"  # base SKIP


@dataclass
class Row:
    kind: str
    kernel: str  # the patched side's kernel (the same on both sides when comparing runs)
    cpu: str
    test: str
    case: str  # WHOLE for the whole test
    base: str | None
    new: str | None
    reason: str = ""  # why the patched side is what it is, when it says

    @property
    def name(self) -> str:
        return f"{self.test}.{self.case}" if self.case else self.test

    def sort_key(self) -> tuple:
        return (RANK[self.kind], self.cpu, self.test, self.case, self.kernel)


@dataclass
class Comparison:
    base_label: str  # kernel name, or run id
    new_label: str
    rows: list[Row] = field(default_factory=list)
    _grouped: dict = field(default_factory=dict, repr=False, compare=False)  # grouped() per column order

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in KINDS}
        for r in self.rows:
            out[r.kind] += 1
        return out

    def of(self, *kinds: str) -> list[Row]:
        return [r for r in self.rows if r.kind in kinds]

    @property
    def blocking(self) -> list[Row]:
        return self.of(*BLOCKING)

    @property
    def regressions(self) -> list[Row]:
        return self.of("regression")


def _items(cell: Cell | None, whole: bool) -> dict[str, tuple[str, str]]:
    """case name -> (status, reason) for one side; WHOLE -> the cell's own status when asked for."""
    if cell is None:
        return {}
    out = {}
    for k in cell.cases:
        out.setdefault(k.name or f"case{k.number}", (k.status, k.reason))
    if whole:
        out[WHOLE] = (cell.status, cell.reason)
    return out


def _cell_rows(kernel: str, cpu: str, test: str, base: Cell | None, new: Cell | None,
               patched: bool = False) -> list[Row]:
    # The whole test is compared when the cases alone cannot tell (no cases, a crash, a bad plan, not run).
    whole = any(c is not None and not explained_by_cases(c) for c in (base, new))
    # A side that died before printing any case is compared as a whole only: its cases are not "missing".
    only_whole = any(c is not None and not c.cases and c.status not in (Status.PASS, Status.FAIL, Status.SKIP)
                     for c in (base, new))
    b_items = _items(base, whole)
    n_items = _items(new, whole)
    if only_whole:
        b_items = {WHOLE: b_items[WHOLE]} if WHOLE in b_items else {}
        n_items = {WHOLE: n_items[WHOLE]} if WHOLE in n_items else {}
    rows = []
    for name in dict.fromkeys([*b_items, *n_items]):
        b = b_items.get(name)
        n = n_items.get(name)
        # A case absent from a side whose test crashed or timed out is "missing" (or "new") there: the
        # whole-test row, always present then, carries the regression once.
        b_status = b[0] if b else None
        n_status = n[0] if n else None
        reason = (n[1] if n else "") or (new.reason if new is not None and name == WHOLE else "")
        rows.append(Row(classify(b_status, n_status, patched), kernel, cpu, test, name, b_status, n_status, reason))
    return rows


def _compare(base_label: str, new_label: str, pairs, patched: bool = False) -> Comparison:
    comp = Comparison(base_label, new_label)
    with quiet_gc():
        for kernel, cpu, test, b, n in pairs:
            comp.rows += _cell_rows(kernel, cpu, test, b, n, patched)
    comp.rows.sort(key=Row.sort_key)
    return comp


def within_run(run: Run) -> list[Comparison]:
    """Every kernel with a `baseline` in run.kernels against that baseline, cell by cell on the same CPU/test."""
    by_kernel: dict[str, dict[tuple[str, str], Cell]] = {}
    for c in run.cells:
        by_kernel.setdefault(c.kernel, {})[(c.cpu, c.test)] = c
    out = []
    for kernel, info in run.kernels.items():
        base = info.baseline
        if not base or kernel not in by_kernel or base not in by_kernel or base == kernel:
            continue
        b_cells, n_cells = by_kernel[base], by_kernel[kernel]
        keys = list(dict.fromkeys([*n_cells, *b_cells]))
        out.append(_compare(base, kernel, ((kernel, cpu, test, b_cells.get((cpu, test)), n_cells.get((cpu, test)))
                                           for cpu, test in keys), patched=bool(info.patches)))
    return out


def between_runs(a: Run, b: Run) -> Comparison:
    """Run A (before) against run B (after): the same kernel/cpu/test/case on both sides."""
    a_cells = {(c.kernel, c.cpu, c.test): c for c in a.cells}
    b_cells = {(c.kernel, c.cpu, c.test): c for c in b.cells}
    keys = list(dict.fromkeys([*b_cells, *a_cells]))
    return _compare(a.run_id, b.run_id, ((k, cpu, t, a_cells.get((k, cpu, t)), b_cells.get((k, cpu, t)))
                                         for k, cpu, t in keys))


def table(comp: Comparison, with_kernel: bool = False, width: int = 72, unchanged: bool = False,
          limit: int | None = None) -> list[str]:
    """Plain-text lines (each at most `width` columns), regressions first; unchanged rows only when asked."""
    counts = comp.counts()
    head = f"{comp.new_label} vs {comp.base_label}: " + (
        ", ".join(f"{n} {k}" for k, n in counts.items() if n) if comp.rows else "nothing to compare")
    lines = _wrap(ascii_line(head), width, "    ")
    shown = [r for r in comp.rows if unchanged or r.kind != "unchanged"]
    if limit is not None and len(shown) > limit:
        more, shown = len(shown) - limit, shown[:limit]
    else:
        more = 0
    for r in shown:
        where = f"{r.kernel} {r.cpu}" if with_kernel else r.cpu
        head = f"  {r.kind:<13} {r.base or '-':>7} -> {r.new or '-':<7} "
        rest = ascii_line(f"{where} {r.name}")
        line = head + rest
        if len(line) > width:
            lines.append(head.rstrip())
            lines += _wrap("      " + rest, width)
        else:
            lines.append(line)
        if r.reason and r.kind in BLOCKING:
            lines += _wrap("      " + ascii_line(r.reason), width)
    if more:
        lines.append(f"  ... and {more} more")
    return lines


def _wrap(line: str, width: int, cont: str | None = None) -> list[str]:
    out = []
    if cont is None:
        cont = " " * (len(line) - len(line.lstrip(" ")))
    lead = len(line) - len(line.lstrip(" "))
    while len(line) > width:
        cut = line.rfind(" ", lead + 1, width + 1)
        if cut <= lead:
            cut = width
        out.append(line[:cut].rstrip())
        line = cont + line[cut:].lstrip(" ")
        lead = len(cont)
    out.append(line)
    return out


# --- grouped views for the reports: a pivot (cases as rows, CPU models as columns) and one line per group ---

QUIET = ("unchanged", "new-coverage", "new", "skipped-both")  # kinds summarised (or folded) instead of listed
SUMMARISED = ("new-coverage", "new", "skipped-both")


@dataclass
class PivotRow:
    test: str
    case: str  # WHOLE for the whole test
    cells: dict[str, Row]  # CPU model -> the row on that model
    kind: str  # the most important kind of the row's cells (the order of KINDS)

    @property
    def name(self) -> str:
        return f"{self.test}.{self.case}" if self.case else self.test


@dataclass
class Group:
    """Items of one kind, one test and the same set of CPU models: 'xcr0: 46 cases SKIP -> PASS on ...'."""

    kind: str
    test: str
    cpus: tuple[str, ...]
    cases: list[str]
    base: str
    new: str

    def line(self, all_cpus: list[str]) -> str:
        where = f"all {len(all_cpus)} CPU models" if len(self.cpus) == len(all_cpus) > 1 else ", ".join(self.cpus)
        what = (f"{len(self.cases)} case(s)" if self.cases != [WHOLE] else "the whole test")
        return f"{self.test}: {what} {self.base or '-'} -> {self.new or '-'} on {where}"


@dataclass
class Grouped:
    """One comparison for a reader: rows worth a look as a pivot, the rest in one line per group."""

    comp: Comparison
    cpus: list[str]
    rows: list[PivotRow]  # rows with anything but unchanged/new coverage, the most important first
    quiet: list[PivotRow]  # unchanged rows (folded away in the page)
    groups: list[Group]  # new coverage and new items: one line per test and set of CPU models


def grouped(comp: Comparison, cpus: list[str] | None = None) -> Grouped:
    """The comparison as a pivot and groups; `cpus`: the column order (the run's), else as the rows have them.
    Computed once per comparison and order (the page and summary.txt both ask)."""
    key = tuple(cpus or ())
    if key not in comp._grouped:
        comp._grouped[key] = _grouped(comp, cpus)
    return comp._grouped[key]


def _grouped(comp: Comparison, cpus: list[str] | None) -> Grouped:
    seen = list(dict.fromkeys(r.cpu for r in comp.rows))
    cpus = [c for c in cpus or [] if c in seen] + [c for c in seen if c not in (cpus or [])]
    by_item: dict[tuple[str, str], dict[str, Row]] = {}
    for r in comp.rows:
        by_item.setdefault((r.test, r.case), {})[r.cpu] = r
    rows, quiet = [], []
    summarised: dict[tuple[str, str, str, str, str], list[str]] = {}  # (kind, test, case, base, new) -> cpus
    for (test, case), cells in by_item.items():
        kind = min((r.kind for r in cells.values()), key=RANK.__getitem__)
        row = PivotRow(test, case, cells, kind)
        if kind not in QUIET:
            rows.append(row)
            continue
        loud = [r for r in cells.values() if r.kind in SUMMARISED]
        if not loud:
            quiet.append(row)
        for r in loud:
            summarised.setdefault((r.kind, test, case, r.base or "", r.new or ""), []).append(r.cpu)
    groups: dict[tuple, Group] = {}
    for (kind, test, case, base, new), on in summarised.items():
        key = (kind, test, tuple(sorted(on, key=cpus.index)), base, new)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(kind, test, key[2], [], base, new)
        g.cases.append(case)
    rows.sort(key=lambda p: (RANK[p.kind], p.test, p.case))
    ordered = sorted(groups.values(), key=lambda g: (RANK[g.kind], g.test, -len(g.cpus), g.cpus, g.base))
    return Grouped(comp, cpus, rows, quiet, ordered)
