"""The report's pictures, as inline SVG built from the run record: no script, no external font, no image file.

    matrix(run, ...)      the results grid: kernel x CPU model x test, one coloured, linked square per cell
    timeline(run)         one bar per cell: build wait, queue, earlier attempts, boot, setup, test, shutdown
    strip(run, changes)   the job's recent runs cell by cell (from the history DB), new failures/fixes/flakes marked

Every string in a picture comes from the record (a guest may have chosen it) and is escaped. Colours are CSS
classes (status and segment names) so that the page's one style sheet, made from FILL and SEGMENTS here, paints
the grid, the tables and the pictures alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from markupsafe import Markup, escape

from ..results.history import Changes
from ..results.run import Cell, Run, Status

WIDTH = 1340  # px: the widest picture, to fit a 1400 px window beside the page's margins and a scrollbar
CHAR = 7.3  # px per character of the 12 px monospace labels (an estimate: labels are given room, not measured)

# status -> (fill, text colour): the one palette of the page
FILL = {
    Status.PASS: ("#8fd18f", "#102010"), Status.FAIL: ("#e86a6a", "#fff"), Status.SKIP: ("#e8e29a", "#303000"),
    Status.CRASH: ("#a01818", "#fff"), Status.TIMEOUT: ("#b07cd0", "#fff"), Status.ERROR: ("#f0a850", "#301800"),
    Status.FLAKY: ("#e87cc8", "#fff"), Status.PENDING: ("#cfcfcf", "#303030"), Status.XFAIL: ("#b8d8b8", "#102010"),
    Status.XPASS: ("#9ad0e8", "#102030"),
}
# timeline segments, in the order they happen
SEGMENTS = {
    "build": ("#e4e4e4", "waiting for the kernel builds and guest images (prepare)"),
    "queue": ("#f4f1e0", "queued: waiting for a free guest slot"),
    "retry": ("#f0b070", "earlier attempts (retried)"),
    "boot": ("#6fa8dc", "boot to SSH"),
    "setup": ("#b8d4ec", "payload and start of the test"),
    "test": ("#5cb85c", "test"),
    "shutdown": ("#666666", "shutdown"),
}
MARKS = {"new": ("#000", "new failure"), "fixed": ("#1a7a1a", "fixed"), "flaky": ("#c000c0", "flaky")}
_MARK_CLASS = {"new failure": "new", "fixed": "fixed", "flaky": "flaky"}
MAX_TIMELINE = 150  # bars; larger runs show the longest cells
MAX_STRIP = 60  # rows; larger runs show the rows with a failure or a mark


def css() -> str:
    """The style rules the pictures (and the page's status cells) need."""
    out = []
    for s, (fill, ink) in FILL.items():
        out.append(f".{s} {{ background: {fill}; color: {ink}; }} svg .{s} {{ fill: {fill}; }} "
                   f"svg text.t-{s} {{ fill: {ink}; }}")
    for name, (fill, _) in SEGMENTS.items():
        out.append(f"svg .seg-{name} {{ fill: {fill}; }}")
    for name, (fill, _) in MARKS.items():
        out.append(f"svg .m-{name} {{ fill: {fill}; }}")
    return "\n".join(out)


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")
_NEEDS_ESCAPE = re.compile(r"[&<>\"']")


@lru_cache(maxsize=1 << 16)
def anchor(cell_id: str) -> str:
    return "cell-" + _UNSAFE_ID.sub("_", cell_id)


def needs_escape(text: str) -> bool:
    return _NEEDS_ESCAPE.search(text) is not None


def esc(text: str) -> str:
    """HTML-escaped text (most names need nothing: checked first, as this runs for every cell)."""
    return text if not _NEEDS_ESCAPE.search(text) else str(escape(text))


def _n(x: float) -> str:
    return f"{x:.1f}"


def _svg(svg_id: str, width: float, height: float, body: list[str], label: str) -> Markup:
    return Markup(f'<svg id="{svg_id}" class="picture" xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" '
                  f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" role="img" '
                  f'aria-label="{escape(label)}">' + "".join(body) + "</svg>")


def _text_width(text: str, char: float = CHAR) -> float:
    return len(text) * char


def _clip(text: str, chars: int) -> str:
    """At most `chars` characters, cut in the middle: names that differ at their end stay apart."""
    if len(text) <= chars:
        return text
    head = (chars - 1) // 2
    return text[:head] + "~" + text[len(text) - (chars - 1 - head):]


# --- the matrix -----------------------------------------------------------------------------------------

def matrix(run: Run, marks: dict[str, str] | None = None, flagged: set[str] | None = None) -> Markup:
    """Rows: each test, then each kernel under it (a patched kernel next to its baseline); columns: CPU models.

    marks: cell id -> 'new failure' | 'fixed' | 'flaky' (from the history DB); flagged: cells of a patched
    kernel with a blocking A/B row (a regression or a new failure against the baseline): outlined."""
    marks, flagged = marks or {}, flagged or set()
    kernels = list(dict.fromkeys(c.kernel for c in run.cells))
    cpus = list(dict.fromkeys(c.cpu for c in run.cells))
    tests = list(dict.fromkeys(c.test for c in run.cells))
    grid = {(c.kernel, c.cpu, c.test): c for c in run.cells}
    rows = [(t, k) for t in tests for k in kernels if any((k, cpu, t) in grid for cpu in cpus)]
    test_w = min(max([4, *(len(t) for t in tests)]), 28) * CHAR + 14
    kernel_w = min(max([6, *(len(k) for k in kernels)]), 28) * CHAR + 14
    left = test_w + kernel_w
    cw = max(14.0, min(112.0, (WIDTH - left - 4) / max(1, len(cpus))))
    rh = 22.0 if len(rows) <= 40 else 15.0
    longest = min(24, max([1, *(len(c) for c in cpus)]))
    rotate = _text_width("x" * longest) > cw - 6  # names too long for their column are written upwards
    head = (longest * CHAR + 12) if rotate else 20.0
    width = left + cw * len(cpus) + 4
    height = head + rh * len(rows) + 4
    out = [f'<text x="4" y="{_n(head - 6)}" class="h">test</text>',
           f'<text x="{_n(test_w + 4)}" y="{_n(head - 6)}" class="h">kernel</text>']
    for j, cpu in enumerate(cpus):
        x = left + cw * j + cw / 2
        name = escape(_clip(cpu, 24))
        if rotate:
            out.append(f'<text x="{_n(x + 4)}" y="{_n(head - 4)}" class="h" transform="rotate(-90 {_n(x + 4)} '
                       f'{_n(head - 4)})">{name}<title>{escape(cpu)}</title></text>')
        else:
            out.append(f'<text x="{_n(x)}" y="{_n(head - 6)}" class="h" text-anchor="middle">{name}</text>')
    text_fits = cw >= 48
    letter_fits = cw >= 14 and rh >= 14
    box_w, box_h = _n(cw - 2), _n(rh - 2)
    col_x = [_n(left + cw * j + 1) for j in range(len(cpus))]  # the same for every row: formatted once
    col_text = [_n(left + cw * j + cw / 2) for j in range(len(cpus))]
    col_mark = [_n(left + cw * j + cw - 6) for j in range(len(cpus))]
    prev_test = None
    for i, (test, kernel) in enumerate(rows):
        y = head + rh * i
        if test != prev_test:
            if prev_test is not None:
                out.append(f'<line x1="0" x2="{_n(width)}" y1="{_n(y)}" y2="{_n(y)}" class="sep"/>')
            out.append(f'<text x="4" y="{_n(y + rh * 0.68)}">{escape(_clip(test, 28))}</text>')
            prev_test = test
        out.append(f'<text x="{_n(test_w + 4)}" y="{_n(y + rh * 0.68)}">{escape(_clip(kernel, 28))}</text>')
        ty, ry, my = _n(y + rh * 0.68), _n(y + 1), _n(y + 6)
        for j, cpu in enumerate(cpus):
            c = grid.get((kernel, cpu, test))
            if c is None:
                continue
            st = c.status
            cid = esc(c.id)
            mark = marks.get(c.id, "") if marks else ""
            tip = f"{cid}: {st}" + (f" ({mark})" if mark else "") + (f": {esc(c.reason[:200])}" if c.reason else "")
            label = (f'<text x="{col_text[j]}" y="{ty}" class="c t-{st}">{st if text_fits else st.letter}</text>'
                     if text_fits or letter_fits else "")
            dot = (f'<circle cx="{col_mark[j]}" cy="{my}" r="3.5" class="mark m-{_MARK_CLASS[mark]}"/>'
                   if mark else "")
            out.append(f'<a href="#{anchor(c.id)}" data-cell="{cid}" data-status="{st}"><rect x="{col_x[j]}" '
                       f'y="{ry}" width="{box_w}" height="{box_h}" class="cell {st}'
                       f'{" flagged" if c.id in flagged else ""}"/>{label}{dot}<title>{tip}</title></a>')
    return _svg("matrix", width, height, out, f"results of {len(run.cells)} cells")


# --- the timeline ---------------------------------------------------------------------------------------

@dataclass
class Bar:
    cell: Cell
    segments: list[tuple[str, float, float]]  # (segment, from, to) in seconds into the run
    end: float


def bars(run: Run) -> list[Bar]:
    """Each cell with a start and an end as its segments, from Cell.timings and Run.phases."""
    prepare = float(run.phases.get("prepare", 0.0))
    out = []
    for c in run.cells:
        t = c.timings
        if "start" not in t or "end" not in t:
            continue
        start, end = float(t["start"]), float(t["end"])
        total = float(t.get("total", end - start))
        attempt = max(start, end - total)  # the last attempt began here; earlier ones were retried
        segs = []
        if prepare > 0:
            segs.append(("build", 0.0, min(prepare, start)))
        if start > prepare:
            segs.append(("queue", prepare, start))
        if attempt > start + 0.01:
            segs.append(("retry", start, attempt))
        boot = float(t.get("boot_to_ssh", t.get("boot", 0.0)))
        shutdown = float(t.get("shutdown", 0.0))
        test = float(t.get("test", 0.0))
        boot_end = min(attempt + boot, end)
        test_end = max(boot_end, end - shutdown)
        test_start = max(boot_end, test_end - test)
        if boot > 0:
            segs.append(("boot", attempt, boot_end))
        if test_start > boot_end + 0.01:
            segs.append(("setup", boot_end, test_start))
        if test > 0:
            segs.append(("test", test_start, test_end))
        if shutdown > 0:
            segs.append(("shutdown", test_end, end))
        out.append(Bar(c, [s for s in segs if s[2] > s[1]], end))
    return out


def _step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def timeline(run: Run) -> tuple[Markup | None, str]:
    """The picture and a note (what is shown, or why nothing is)."""
    all_bars = bars(run)
    if not all_bars:
        return None, ("no timeline: this run's record has no cell start and end times (written by an older farm, "
                      "or no cell ran)")
    shown = all_bars
    note = f"{len(all_bars)} cells, ordered by start"
    if len(all_bars) > MAX_TIMELINE:
        longest = sorted(all_bars, key=lambda b: b.end - float(b.cell.timings["start"]), reverse=True)
        keep = {id(b) for b in longest[:MAX_TIMELINE]}
        shown = [b for b in all_bars if id(b) in keep]
        note = f"the {MAX_TIMELINE} longest of {len(all_bars)} cells, ordered by start"
    shown.sort(key=lambda b: (float(b.cell.timings["start"]), b.cell.id))
    span = max([1.0, *(b.end for b in all_bars), sum(run.phases.values())])
    label_chars = min(44, max(len(b.cell.id) for b in shown))
    left = label_chars * 6.6 + 10
    right = 110.0  # the status and seconds after each bar
    area = WIDTH - left - right
    scale = area / span
    rh, top = 14.0, 34.0
    legend = []
    x = 0.0
    for name, (_, what) in SEGMENTS.items():
        legend.append(f'<rect x="{_n(x)}" y="2" width="10" height="10" class="seg-{name}"><title>{escape(what)}'
                      f'</title></rect><text x="{_n(x + 13)}" y="11" class="s">{name}</text>')
        x += 13 + len(name) * 6.6 + 14
    out = legend
    step = _step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = left + tick * scale
        out.append(f'<line x1="{_n(tx)}" x2="{_n(tx)}" y1="{_n(top - 4)}" y2="{_n(top + rh * len(shown))}" '
                   f'class="grid"/><text x="{_n(tx)}" y="{_n(top - 7)}" class="s" text-anchor="middle">'
                   f'{_n(tick)} s</text>')
        tick += step
    for i, b in enumerate(shown):
        y = top + rh * i
        c = b.cell
        out.append(f'<g class="bar" data-cell="{escape(c.id)}"><text x="{_n(left - 6)}" y="{_n(y + 10.5)}" '
                   f'class="s" text-anchor="end">{escape(_clip(c.id, 44))}</text>')
        for seg, a, z in b.segments:
            out.append(f'<rect x="{_n(left + a * scale)}" y="{_n(y + 2)}" width="{_n(max(0.5, (z - a) * scale))}" '
                       f'height="10" class="seg-{seg}"><title>{escape(c.id)}: {seg} {z - a:.1f} s</title></rect>')
        took = b.end - float(c.timings["start"])
        ex = left + b.end * scale + 4
        out.append(f'<a href="#{anchor(c.id)}"><rect x="{_n(ex)}" y="{_n(y + 3)}" width="8" height="8" '
                   f'class="{c.status}"/><text x="{_n(ex + 11)}" y="{_n(y + 10.5)}" class="s st">{c.status} '
                   f"{took:.1f} s</text></a></g>")
    height = top + rh * len(shown) + 4
    return _svg("timeline", WIDTH, height, out, f"timeline of {len(shown)} cells"), note


# --- the history strip ------------------------------------------------------------------------------------

def strip_marks(statuses: list[str | None]) -> list[str]:
    """Per run: 'new' (failing after a pass), 'fixed' (passing after a failure), 'flaky' (a FLAKY result, or
    a one-run blip between passing and failing) or ''."""
    failing = {str(s) for s in Status if s.failing}
    out = [""] * len(statuses)
    prev = None
    for i, s in enumerate(statuses):
        if s is None:
            continue
        if s == "FLAKY":
            out[i] = "flaky"
        elif s in failing and prev == "PASS":
            out[i] = "new"
        elif s == "PASS" and prev in failing:
            out[i] = "fixed"
        if s in ("PASS", *failing):
            prev = s
    verdicts = [(i, s == "PASS") for i, s in enumerate(statuses) if s in ("PASS", *failing)]
    for (_, a), (i, b), (k, z) in zip(verdicts, verdicts[1:], verdicts[2:], strict=False):
        if a == z != b:  # a one-run blip: the blip is the flake, the way back is no fix (or new failure)
            out[i] = "flaky"
            if out[k] in ("new", "fixed"):
                out[k] = ""
    return out


def strip(run: Run, changes: Changes | None) -> tuple[Markup | None, str]:
    if changes is None or len(changes.runs) < 2 or not changes.strips:
        return None, ""
    order = {c.id: i for i, c in enumerate(run.cells)}
    tests = {t: i for i, t in enumerate(dict.fromkeys(c.test for c in run.cells))}
    keys = [k for k in changes.strips if "/".join(k) in order]  # this run's cells: by test, then in its order
    keys.sort(key=lambda k: (tests[k[2]], order["/".join(k)]))
    rows = [(k, changes.strips[k], strip_marks(changes.strips[k])) for k in keys]
    note = f"{len(rows)} cells over the job's last {len(changes.runs)} runs, oldest first; the last column is this run"
    if len(rows) > MAX_STRIP:
        failing = {str(s) for s in Status if s.failing}
        busy = [r for r in rows if any(m for m in r[2]) or any(s in failing for s in r[1] if s)]
        note = (f"{len(busy)} of {len(rows)} cells (those with a failure or a mark; the others passed every time) "
                f"over the job's last {len(changes.runs)} runs, oldest first")
        rows = busy[:MAX_STRIP]
    if not rows:
        return None, note
    label_chars = min(44, max(len("/".join(k)) for k, _, _ in rows))
    left = label_chars * 6.6 + 10
    size, gap, top = 16.0, 6.0, 30.0
    n = len(changes.runs)
    out = []
    for j, (rid, started) in enumerate(changes.runs):
        x = left + j * (size + gap) + size / 2
        name = "now" if j == n - 1 else f"-{n - 1 - j}"
        out.append(f'<text x="{_n(x)}" y="{_n(top - 8)}" class="s" text-anchor="middle">{name}'
                   f"<title>{escape(rid)} {escape(started)}</title></text>")
        if j == n - 1:  # this run's column
            out.append(f'<rect x="{_n(x - size / 2 - 2)}" y="{_n(top - 3)}" width="{_n(size + 4)}" '
                       f'height="{_n(len(rows) * (size + gap) + 2)}" class="now"/>')
    for i, (key, statuses, marks) in enumerate(rows):
        y = top + i * (size + gap)
        cid = "/".join(key)
        out.append(f'<g class="strip-row" data-cell="{escape(cid)}"><text x="{_n(left - 6)}" y="{_n(y + 12)}" '
                   f'class="s" text-anchor="end">{escape(_clip(cid, 44))}</text>')
        for j, (s, m) in enumerate(zip(statuses, marks, strict=True)):
            x = left + j * (size + gap)
            rid = changes.runs[j][0]
            if s is None:
                out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(size)}" height="{_n(size)}" class="absent">'
                           f"<title>{escape(rid)}: not run</title></rect>")
                continue
            tip = f"{rid}: {s}" + (f" ({MARKS[m][1]})" if m else "")
            out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(size)}" height="{_n(size)}" class="run {s}" '
                       f'data-status="{s}"><title>{escape(tip)}</title></rect>')
            if m:
                out.append(f'<circle cx="{_n(x + size / 2)}" cy="{_n(y + size / 2)}" r="4" class="mark m-{m}">'
                           f"<title>{escape(tip)}</title></circle>")
        out.append("</g>")
    lx = left + n * (size + gap) + 16
    for k, (name, (_, what)) in enumerate(MARKS.items()):
        ly = top + k * 16
        out.append(f'<circle cx="{_n(lx + 5)}" cy="{_n(ly + 8)}" r="4" class="m-{name}"/>'
                   f'<text x="{_n(lx + 14)}" y="{_n(ly + 12)}" class="s">{what}</text>')
    width = min(WIDTH, lx + 120)
    height = top + max(len(rows), 3) * (size + gap) + 4
    return _svg("strip", width, height, out, f"history of {len(rows)} cells"), note
