"""The report in a real browser: headless Chromium (Debian's, driven by Playwright) at 1400x900 with JavaScript
off. Element boxes come from the browser's layout: the verdict, what was tested and the matrix are in the first
screen; each picture (matrix, timeline, history strip) is there with the right number of cells and colours for
a run whose statuses are known, and nothing is wider than the window.

Screenshots are written to the test's tmp_path (and copied to $FARM_SHOTS when that is set)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from farm.report import html, pictures, write_all
from farm.report.synthetic import make_run
from farm.results import run as runfile
from farm.results.run import Crash, Status

from .test_reply import format_patch_series

CHROMIUM = "/usr/bin/chromium"
W, H = 1400, 900
XCR0 = "linux-6.1-xcr0"
BASE = "linux-6.1"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[test]'` installs it (browsers are not "
                    "downloaded: Debian's chromium is used)")
    assert Path(CHROMIUM).is_file(), "chromium is not installed: install.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def open_page(browser, tmp_path: Path, request):
    contexts = []

    def go(path: Path, shot: str | None = None, full: bool = False):
        ctx = browser.new_context(viewport={"width": W, "height": H}, java_script_enabled=False)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(path.as_uri())
        if shot:
            png = tmp_path / f"{shot}.png"
            page.screenshot(path=str(png), full_page=full)
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("FARM_SHOTS"):
                Path(os.environ["FARM_SHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(png, Path(os.environ["FARM_SHOTS"]) / png.name)
        return page

    yield go
    for ctx in contexts:
        ctx.close()


def _shot(page, selector: str, name: str, tmp_path: Path) -> None:
    """A screenshot of one picture (scrolled into view), kept like the page screenshots."""
    png = tmp_path / f"{name}.png"
    page.locator(selector).screenshot(path=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("FARM_SHOTS"):
        shutil.copy(png, Path(os.environ["FARM_SHOTS"]) / png.name)


def _inside_viewport(box: dict | None) -> bool:
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= W \
        and box["y"] + box["height"] <= H


def _no_overflow(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= W
    widest = page.evaluate("""Math.max(...[...document.querySelectorAll('body > *, svg.picture, svg.picture *')]
        .map(e => e.getBoundingClientRect().right))""")
    culprit = page.evaluate(f"""[...document.querySelectorAll('body > *, svg.picture, svg.picture *')]
        .filter(e => e.getBoundingClientRect().right > {W}).slice(0, 3).map(e => e.outerHTML.slice(0, 200))""")
    assert widest <= W, f"an element reaches x={widest}: {culprit}"


def _real_run(tmp_path: Path, name: str = "run-v1-xcr0"):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "run.json").write_bytes(gzip.decompress((FIXTURES / name / "run.json.gz").read_bytes()))
    return run_dir, runfile.load(run_dir)


def test_verdict_what_was_tested_and_matrix_fill_the_first_screen(open_page, tmp_path: Path):
    """A failing run of the real xcr0 job with a series: the verdict, the series and the matrix are visible
    without scrolling; the page has no script and its links work with JavaScript off."""
    run_dir, run = _real_run(tmp_path)
    run.series = format_patch_series(tmp_path)
    broken = next(c for c in run.cells if c.id == f"{XCR0}/Skylake-Server/xcr0")
    base = next(c for c in run.cells if c.id == f"{BASE}/Skylake-Server/xcr0")
    passed = {k.name for k in base.cases if k.status is Status.PASS}
    case = next(k for k in broken.cases if k.status is Status.PASS and k.name in passed)
    broken.status, broken.reason = Status.FAIL, "failed: " + case.name
    case.status, case.diagnostics = Status.FAIL, ["xcr0 after set: 0x3, expected 0x7"]
    crashed = next(c for c in run.cells if c.id == f"{XCR0}/Broadwell/cpuinfo")
    crashed.status, crashed.reason = Status.CRASH, "Kernel panic - not syncing: Fatal exception"
    crashed.crashes = [Crash("panic", "[    3.1] Kernel panic - not syncing: Fatal exception", 0)]
    page_path = html.write(run, run_dir)
    page = open_page(page_path, "top-failing")
    assert page.evaluate("document.scripts.length") == 0
    assert "script-src" not in page.content() and "default-src 'none'" in page.content()
    for sel in ("#verdict", "#tested", "#matrix"):
        assert _inside_viewport(page.locator(sel).bounding_box()), sel
    assert page.locator("#verdict").inner_text().startswith("FAIL: 22 PASS, 1 FAIL, 1 CRASH")
    assert "2 regression(s) against the baseline" in page.locator("#verdict").inner_text()
    tested = page.locator("#tested").inner_text()
    assert "[PATCH v2 0/3] x86/fpu: per-thread XCR0 override" in tested and run.series.message_id in tested
    assert f"base-commit {run.series.base_commit}" in tested
    assert page.locator("#matrix a").count() == 24
    _no_overflow(page)
    # a matrix square is a link to its cell's excerpt, and it works without JavaScript
    page.locator(f'#matrix a[data-cell="{broken.id}"]').click()
    assert page.evaluate("location.hash") == "#" + pictures.anchor(broken.id)
    target = page.locator("#" + pictures.anchor(broken.id))
    group = page.locator("div.problem", has=target)  # the cells that failed this way, with the excerpt
    assert _inside_viewport(target.bounding_box()) and _inside_viewport(group.bounding_box())
    assert "xcr0 after set: 0x3, expected 0x7" in group.inner_text()


def test_matrix_svg_has_a_square_per_cell_in_its_status_colour(open_page, tmp_path: Path):
    statuses = {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "CRASH",
                f"{BASE}/Broadwell/cpuinfo": "SKIP", f"{BASE}/Skylake-Server/xcr0": "TIMEOUT",
                f"{BASE}/Broadwell/xcr0": "ERROR", f"{XCR0}/Skylake-Server/xcr0": "PENDING",
                f"{XCR0}/Broadwell/cpuinfo": "FLAKY"}
    run = make_run(tmp_path, cpus=("Broadwell", "Skylake-Server", "Skylake-Client", "max"),
                   tests=("xcr0", "cpuinfo", "x86-selftests"), statuses=statuses)
    page = open_page(html.write(run, tmp_path), "matrix")
    _shot(page, "#matrix", "matrix-svg", tmp_path)
    squares = page.locator("#matrix rect.cell")
    assert squares.count() == len(run.cells) == 24
    got = page.evaluate("""[...document.querySelectorAll('#matrix a')].map(a => [a.dataset.cell,
        getComputedStyle(a.querySelector('rect')).fill, a.querySelector('text') ? a.querySelector('text').textContent : ''])""")
    want = {c.id: str(c.status) for c in run.cells}
    assert {cid for cid, _, _ in got} == set(want)

    def rgb(hex_colour: str) -> str:
        h = hex_colour.lstrip("#")
        return "rgb({}, {}, {})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))

    for cid, fill, label in got:
        assert fill == rgb(pictures.FILL[Status(want[cid])][0]), (cid, fill)
        assert label == want[cid]
    colours = {fill for _, fill, _ in got}
    assert len(colours) == 8  # PASS + the seven other statuses, each its own colour
    regressed = page.locator(f'#matrix a[data-cell="{XCR0}/Broadwell/xcr0"] rect')
    assert "flagged" in regressed.get_attribute("class")  # a regression against the baseline is outlined
    assert page.locator("#matrix rect.flagged").count() == 3  # FAIL, CRASH, FLAKY on the patched kernel
    assert _inside_viewport(page.locator("#matrix").bounding_box())
    _no_overflow(page)


def test_matrix_of_a_wide_run_fits_the_window(open_page, tmp_path: Path):
    cpus = [f"Model-With-A-Long-Name-{i:02d}" for i in range(40)]
    run = make_run(tmp_path, kernels=("linux-6.1-with-a-long-kernel-name", "linux-6.1-with-a-long-kernel-name-xcr0"),
                   cpus=cpus, tests=("a-test-with-a-rather-long-name", "x"), files=False, fail_rate=0.1, timeline=True)
    page = open_page(html.write(run, tmp_path), "matrix-wide")
    assert page.locator("#matrix rect.cell").count() == len(run.cells) == 160
    box = page.locator("#matrix").bounding_box()  # drawn at its own size (not shrunk to fit: legible)
    assert box["width"] == float(page.locator("#matrix").get_attribute("width")) <= W - 32
    _no_overflow(page)


def test_timeline_svg_has_a_bar_per_cell_and_shows_the_straggler(open_page, tmp_path: Path):
    run = make_run(tmp_path, cpus=("Broadwell", "Skylake-Server", "Skylake-Client", "max"),
                   tests=("xcr0", "cpuinfo", "x86-selftests"), timeline=True,
                   statuses={f"{XCR0}/max/x86-selftests": "FAIL"})
    slow = next(c for c in run.cells if c.id == f"{BASE}/Skylake-Server/x86-selftests")
    slow.timings["test"] += 120.0  # the straggler; the cells after it start later
    slow.timings["total"] += 120.0
    slow.timings["end"] += 120.0
    after = run.cells[run.cells.index(slow) + 1:]
    for c in after:
        c.timings["start"] += 120.0
        c.timings["end"] += 120.0
    run.phases["execute"] += 120.0
    page = open_page(html.write(run, tmp_path), "timeline")
    _shot(page, "#timeline", "timeline-svg", tmp_path)
    bars = page.locator("#timeline g.bar")
    assert bars.count() == len(run.cells) == 24
    widths = page.evaluate("""Object.fromEntries([...document.querySelectorAll('#timeline g.bar')].map(g =>
        [g.dataset.cell, Math.max(...[...g.querySelectorAll('rect.seg-test')].map(r => r.getBBox().width))]))""")
    assert max(widths, key=widths.get) == slow.id and widths[slow.id] > 10 * sorted(widths.values())[-2]
    kinds = page.evaluate("[...new Set([...document.querySelectorAll('#timeline g.bar rect[class^=seg-]')].map(r => r.getAttribute('class')))]")
    assert set(kinds) == {"seg-build", "seg-queue", "seg-boot", "seg-setup", "seg-test", "seg-shutdown"}
    fills = page.evaluate("""Object.fromEntries([...document.querySelectorAll('#timeline g.bar rect[class^=seg-]')].map(r =>
        [r.getAttribute('class'), getComputedStyle(r).fill]))""")
    assert len(set(fills.values())) == len(fills)  # each segment its own colour
    status = page.evaluate("""Object.fromEntries([...document.querySelectorAll('#timeline g.bar')].map(g =>
        [g.dataset.cell, g.querySelector('a rect').getAttribute('class')]))""")
    assert status == {c.id: str(c.status) for c in run.cells}  # each bar ends with its cell's status
    # bars are ordered by start: the first starts right after the 30 s prepare phase
    first = page.locator("#timeline g.bar").first
    assert first.get_attribute("data-cell") == run.cells[0].id
    _no_overflow(page)


def test_history_strip_marks_new_failures_fixes_and_flakes(open_page, tmp_path: Path):
    results = tmp_path / "results"
    new_fail, fixed, blip, flaky = (f"{BASE}/Broadwell/xcr0", f"{BASE}/Broadwell/cpuinfo",
                                    f"{XCR0}/Broadwell/xcr0", f"{XCR0}/Skylake-Server/cpuinfo")
    plan = [{fixed: "FAIL"}, {blip: "FAIL"}, {}, {new_fail: "FAIL", flaky: "FLAKY"}]
    db = results / "history.sqlite"
    for i, statuses in enumerate(plan):
        run_dir = results / f"run{i}"
        run_dir.mkdir(parents=True)
        run = make_run(run_dir, run_id=f"run{i}", started=f"2026-11-0{i + 1}T10:00:00+00:00", statuses=statuses)
        write_all(run, run_dir, history=db)
    page = open_page(run_dir / "report.html", "strip")
    _shot(page, "#strip", "strip-svg", tmp_path)
    assert page.locator("#strip").count() == 1
    rows = page.locator("#strip g.strip-row")
    assert rows.count() == len(run.cells) == 8
    assert page.locator("#strip g.strip-row rect.run").count() == 8 * 4
    marks = page.evaluate("""[...document.querySelectorAll('#strip g.strip-row')].flatMap(g =>
        [...g.querySelectorAll('circle.mark')].map(c => [g.dataset.cell, c.getAttribute('class'),
         [...g.querySelectorAll('rect.run')].findIndex(r => Math.abs(r.x.baseVal.value + 8 - c.cx.baseVal.value) < 1)]))""")
    assert sorted(marks) == sorted([[fixed, "mark m-fixed", 1], [blip, "mark m-flaky", 1],
                                    [new_fail, "mark m-new", 3], [flaky, "mark m-flaky", 3]])
    colours = page.evaluate("""Object.fromEntries([...document.querySelectorAll('#strip circle.mark')].map(c =>
        [c.getAttribute('class'), getComputedStyle(c).fill]))""")
    assert len(set(colours.values())) == len(colours) >= 2
    statuses = page.evaluate("""[...document.querySelectorAll('#strip g.strip-row')].map(g =>
        [g.dataset.cell, [...g.querySelectorAll('rect.run')].map(r => r.dataset.status).join(' ')])""")
    assert [new_fail, "PASS PASS PASS FAIL"] in statuses and [flaky, "PASS PASS PASS FLAKY"] in statuses
    _no_overflow(page)


def test_real_failing_run_with_history_and_timeline(open_page, tmp_path: Path):
    """Run B of the real xcr0 pair (7 FAIL under load) after run A: every picture present and within the window."""
    from .test_reports import real_runs

    _, b = real_runs(tmp_path)
    page = open_page(b / "report.html", "real-top")
    for sel in ("#verdict", "#tested", "#matrix"):
        assert _inside_viewport(page.locator(sel).bounding_box()), sel
    assert page.locator("#matrix rect.cell").count() == 24
    fails = page.evaluate("[...document.querySelectorAll('#matrix a')].filter(a => a.dataset.status == 'FAIL').length")
    assert fails == 7
    assert page.locator("#timeline g.bar").count() == 24
    assert page.locator("#strip g.strip-row").count() == 24
    assert page.locator("#strip g.strip-row rect.run").count() == 48  # 24 cells x 2 runs
    assert page.locator("#strip circle.mark.m-new").count() == 7  # (the legend has one more, no .mark)
    for sel, name in (("#timeline", "real-timeline"), ("#strip", "real-strip")):
        _shot(page, sel, name, tmp_path)
    open_page(b / "report.html", "real-full", full=True)
    _no_overflow(page)
