"""Every report from synthetic runs with hostile guest text: A/B, summary.txt, junit.xml, kcidb.json, the
history DB, the HTML report (also loaded in headless Chromium), and the compare/history commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from farm.errors import InputError
from farm.report import abtest, html, junit, kcidb, text, write_all
from farm.report.synthetic import EVIL, NASTY, make_run
from farm.results.history import History
from farm.results.run import RunWriter

XCR0 = "linux-6.1-xcr0"
BASE = "linux-6.1"


def _run(tmp_path: Path, statuses: dict | None = None, **kw):
    return make_run(tmp_path, statuses=statuses, **kw)


# --- A/B -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("base, new, kind", [
    ("PASS", "FAIL", "regression"),
    ("PASS", "CRASH", "regression"),
    ("PASS", "TIMEOUT", "regression"),
    ("FAIL", "CRASH", "regression"),  # a crash where there was a plain failure is worse
    ("FAIL", "PASS", "fixed"),
    ("CRASH", "PASS", "fixed"),
    ("TIMEOUT", "PASS", "fixed"),
    ("PASS", "PASS", "unchanged"),
    ("FAIL", "FAIL", "unchanged"),
    ("SKIP", "SKIP", "unchanged"),
    ("SKIP", "PASS", "new-coverage"),  # not a regression: the series makes the test applicable
    ("SKIP", "FAIL", "new-failure"),
    ("ERROR", "FAIL", "new-failure"),
    (None, "FAIL", "new-failure"),
    (None, "PASS", "new"),
    (None, "SKIP", "new"),
    ("PASS", None, "missing"),
    ("PASS", "SKIP", "lost-coverage"),
    ("FAIL", "SKIP", "lost-coverage"),
    ("PASS", "ERROR", "inconclusive"),
    ("ERROR", "PASS", "inconclusive"),
    ("PASS", "PENDING", "inconclusive"),
    ("CRASH", "FAIL", "still-failing"),
    ("FAIL", "TIMEOUT", "still-failing"),
    ("PASS", "FLAKY", "regression"),  # failed, then passed on its retry: not proven
    ("FLAKY", "PASS", "fixed"),
    ("FLAKY", "FLAKY", "unchanged"),
    ("SKIP", "FLAKY", "new-failure"),
])
def test_classify(base, new, kind):
    assert abtest.classify(base, new) == kind


def test_ab_within_run_cases_and_whole_tests_regressions_first(tmp_path: Path):
    run = _run(tmp_path, {
        f"{XCR0}/Broadwell/xcr0": "FAIL",  # the last case fails: a case-level regression
        f"{BASE}/Broadwell/cpuinfo": "SKIP", f"{XCR0}/Broadwell/cpuinfo": "PASS",  # new coverage
        f"{XCR0}/Skylake-Server/cpuinfo": "CRASH",  # a crash after one case passed: the whole test regresses
        f"{BASE}/Skylake-Server/xcr0": "FAIL",  # fixed by the series
    })
    [comp] = abtest.within_run(run)
    assert (comp.base_label, comp.new_label) == (BASE, XCR0)
    kinds = [r.kind for r in comp.rows]
    assert kinds == sorted(kinds, key=abtest.RANK.__getitem__)  # regressions first
    regressions = {(r.cpu, r.test, r.case) for r in comp.regressions}
    assert ("Broadwell", "xcr0", "xcr0_case_4") in regressions
    assert ("Skylake-Server", "cpuinfo", abtest.WHOLE) in regressions
    assert len(comp.regressions) == 2
    assert {(r.cpu, r.case) for r in comp.of("fixed")} == {("Skylake-Server", "xcr0_case_4")}
    assert len(comp.of("new-coverage")) == 4 and not comp.of("new-failure")
    lines = abtest.table(comp)
    assert all(len(x) <= 72 for x in lines)
    rows = [x for x in lines if " -> " in x]
    assert rows[0].split()[0] == "regression" and rows[-1].split()[0] != "regression"


def test_ab_crash_without_cases_is_one_whole_test_row(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "ERROR"})
    run.cells[[c.id for c in run.cells].index(f"{XCR0}/Broadwell/xcr0")].status = "CRASH"
    [comp] = abtest.within_run(run)
    rows = [r for r in comp.rows if r.cpu == "Broadwell" and r.test == "xcr0"]
    assert [(r.kind, r.case, r.base, r.new) for r in rows] == [("regression", "", "PASS", "CRASH")]


def test_compare_two_runs_command(tmp_path: Path):
    from .conftest import run_farm

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    RunWriter(_run(a, run_id="run-a"), a / "run.json").save()
    RunWriter(_run(b, {f"{BASE}/Skylake-Server/cpuinfo": "TIMEOUT"}, run_id="run-b"), b / "run.json").save()
    comp = abtest.between_runs(_run(a, run_id="run-a"), _run(b, {f"{BASE}/Skylake-Server/cpuinfo": "TIMEOUT"}))
    assert [r.kind for r in comp.blocking] == ["regression"]
    res = run_farm("compare", str(a), str(b))
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert "1 regression" in lines[0]
    rows = [x for x in lines if " -> " in x]
    assert rows[0].split()[0] == "regression" and "TIMEOUT" in rows[0]
    same = run_farm("compare", str(a), str(a))
    assert same.returncode == 0 and "unchanged" in same.stdout
    bad = run_farm("compare", str(a), str(tmp_path / "nope"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# --- summary.txt -------------------------------------------------------------------------------------

def _summary_ok(body: str) -> None:
    for line in body.splitlines():
        assert len(line) <= 72, line
        assert re.fullmatch(r"[\x20-\x7e]*", line), repr(line)  # no control characters, one char per column
    assert not re.search(r"<(html|body|table|p|pre|div)\b", body)


def test_summary_regressions_first_and_no_tested_by_on_failure(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "ERROR"})
    failing = next(c for c in run.cells if c.status == "FAIL")
    failing.reason = "x" * 300 + NASTY  # a long, hostile reason
    body = text.render(run)
    _summary_ok(body)
    assert "Tested-by" not in body
    assert body.index("regression") < body.index("Failing cells") < body.index("infrastructure problems")
    assert "Verdict: FAIL" in body and "1 regression(s)" in body
    assert "]]>\\x00" in body and "\\x07\\x7f" in body  # the guest's control characters are shown, not sent
    assert "model" in body and "0x207" in body and "2696" in body  # the per-model table
    assert "farm run --job default --kernel linux-6.1-xcr0 --cpu Broadwell" in body
    assert "--test xcr0" in body


@pytest.mark.parametrize("status", ["FAIL", "CRASH", "TIMEOUT", "FLAKY", "ERROR", "PENDING"])
def test_tested_by_only_when_everything_passed(tmp_path: Path, status: str):
    good = text.render(_run(tmp_path))
    _summary_ok(good)
    assert good.rstrip().splitlines()[-1] == "Tested-by: farm <farm@farmhost>"
    bad = text.render(_run(tmp_path, {f"{BASE}/Broadwell/cpuinfo": status}))
    _summary_ok(bad)
    assert "Tested-by" not in bad
    if status == "FLAKY":
        assert "FLAKY (failed, then passed on its retry): linux-6.1/Broadwell/cpuinfo" in bad
    interrupted = _run(tmp_path)
    interrupted.interrupted = True
    assert "Tested-by" not in text.render(interrupted)


# --- junit.xml ---------------------------------------------------------------------------------------

def test_junit_xml_parses_with_expected_suites_and_cases(tmp_path: Path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "CRASH",
                          f"{BASE}/Broadwell/cpuinfo": "SKIP", f"{BASE}/Skylake-Server/xcr0": "PENDING",
                          f"{BASE}/Broadwell/xcr0": "FLAKY"})
    path = junit.write(run, tmp_path)
    ET.parse(path)  # well-formed for a strict parser too (no raw control characters)
    xml = JUnitXml.fromfile(str(path))
    suites = {s.name: s for s in xml}
    assert len(suites) == len(run.cells) == 8
    assert suites[f"{BASE}/Skylake-Server/cpuinfo"].tests == 4  # one per case
    assert suites[f"{BASE}/Broadwell/xcr0"].tests == 5  # and one for the whole test when the cases don't tell
    results = {s: [(c.name, [type(r).__name__ for r in c.result]) for c in suite] for s, suite in suites.items()}
    assert results[f"{XCR0}/Broadwell/xcr0"][-1] == ("xcr0_case_4", ["Failure"])
    assert all(r == ["Skipped"] for _, r in results[f"{BASE}/Broadwell/cpuinfo"])
    crash = suites[f"{XCR0}/Skylake-Server/cpuinfo"]
    errors = [r for c in crash for r in c.result if isinstance(r, Error)]
    assert len(errors) == 1 and errors[0].message.startswith("Kernel panic - not syncing: <script>")
    assert crash.errors == 1
    pending = suites[f"{BASE}/Skylake-Server/xcr0"]
    assert [type(r) for c in pending for r in c.result] == [Skipped]
    flaky = suites[f"{BASE}/Broadwell/xcr0"]
    assert flaky.failures == 1 and [r.type for c in flaky for r in c.result] == ["FLAKY"]
    assert any(isinstance(r, Failure) for s in xml for c in s for r in c.result)
    raw = path.read_text()
    assert "<script>" not in raw and "&lt;script&gt;" in raw and "]]>" not in raw
    assert "\x00" not in raw and "\x1b" not in raw and "\\x00\\x1b[31m" in raw
    assert "<system-out>" in raw and "farm-init: ready" in raw  # the crash cell's console excerpt


# --- kcidb.json --------------------------------------------------------------------------------------

def test_kcidb_json_is_valid_for_kcidb_io(tmp_path: Path):
    import kcidb_io

    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "CRASH",
                          f"{BASE}/Skylake-Server/xcr0": "PENDING", f"{BASE}/Broadwell/xcr0": "TIMEOUT",
                          f"{BASE}/Broadwell/cpuinfo": "FLAKY"})
    data = json.loads(kcidb.write(run, tmp_path).read_text())
    kcidb_io.schema.LATEST.validate(data)
    kcidb_io.schema.V5_3.validate_exactly(data)
    assert data["version"] == {"major": 5, "minor": 3}
    assert len(data["checkouts"]) == len(data["builds"]) == 2
    objs = data["checkouts"] + data["builds"] + data["tests"]
    assert all(o["origin"] == "farm" and o["id"].startswith("farm:") for o in objs)
    assert len({o["id"] for o in data["tests"]}) == len(data["tests"])
    xcr0 = next(c for c in data["checkouts"] if c["misc"]["kernel"] == XCR0)
    assert re.fullmatch("[0-9a-f]{64}", xcr0["patchset_hash"]) and xcr0["misc"]["baseline"] == BASE
    paths = {t["path"] for t in data["tests"]}
    assert {"xcr0", "xcr0.xcr0_case_2", "cpuinfo.cpuinfo_case_4"} <= paths
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", p) for p in paths)
    by_id = {t["id"]: t for t in data["tests"]}
    crash = by_id[f"farm:r1:{XCR0}/Skylake-Server/cpuinfo"]
    assert crash["status"] == "FAIL" and crash["misc"]["farm_status"] == "CRASH"
    assert crash["log_excerpt"].startswith("Kernel panic")
    assert crash["environment"]["misc"]["cpu_model"] == "Skylake-Server"
    assert crash["environment"]["misc"]["accel"] == "tcg"
    assert by_id[f"farm:r1:{BASE}/Skylake-Server/xcr0"]["status"] == "MISS"
    assert by_id[f"farm:r1:{BASE}/Broadwell/xcr0"]["status"] == "ERROR"
    flaky = by_id[f"farm:r1:{BASE}/Broadwell/cpuinfo"]
    assert flaky["status"] == "FAIL" and flaky["misc"]["farm_status"] == "FLAKY"
    evil_case = by_id[f"farm:r1:{BASE}/Broadwell/cpuinfo:1"]
    assert evil_case["misc"]["case"].startswith("]]>\\x00")  # the NUL is shown, never sent
    assert "\\u0000" not in kcidb.dumps(kcidb.render(run))


# --- history -----------------------------------------------------------------------------------------

def _day(n: int) -> str:
    return f"2026-11-{n:02d}T10:00:00+00:00"


def test_history_line_changes_and_idempotent_record(tmp_path: Path):
    db = tmp_path / "history.sqlite"
    flip = f"{BASE}/Broadwell/xcr0"
    broken = f"{BASE}/Skylake-Server/cpuinfo"
    plan = [  # per run: the statuses that are not PASS
        {},
        {flip: "FAIL"},
        {flip: "PASS", broken: "FAIL"},
        {flip: "FAIL", broken: "FAIL"},
        {flip: "FAIL"},
    ]
    runs = [_run(tmp_path, statuses, run_id=f"run{i}", started=_day(i + 1), files=False)
            for i, statuses in enumerate(plan)]
    with History(db) as h:
        for r in runs:
            h.record(r)
        h.record(runs[2])  # again: replaced, not doubled
        assert len(h.runs()) == 5
        line = h.line("xcr0", "Broadwell", BASE)
        assert [(p.run_id, p.status) for p in line] == [
            ("run0", "PASS"), ("run1", "FAIL"), ("run2", "PASS"), ("run3", "FAIL"), ("run4", "FAIL")]
        case_line = h.line("xcr0", "Broadwell", BASE, case="xcr0_case_4")
        assert [p.status for p in case_line] == ["PASS", "FAIL", "PASS", "FAIL", "FAIL"]
        assert len(h.line("xcr0", "Broadwell")) == 10  # both kernels

        assert h.changes(runs[0]).previous is None
        ch1 = h.changes(runs[1])
        assert ch1.previous == "run0"
        assert {c.where for c in ch1.new_failures} == {f"{flip}", f"{flip}.xcr0_case_4"}
        ch2 = h.changes(runs[2])
        assert {c.where for c in ch2.new_failures} == {broken, f"{broken}.cpuinfo_case_4"}
        assert {c.where for c in ch2.flaky} == {flip, f"{flip}.xcr0_case_4"}  # P F P
        assert not ch2.fixed
        ch4 = h.changes(runs[4])
        assert {c.where for c in ch4.fixed} == {broken, f"{broken}.cpuinfo_case_4"}
        assert ch4.mark(BASE, "Broadwell", "xcr0") == "flaky" and ch4.mark(BASE, "Skylake-Server", "cpuinfo") == "fixed"
        assert [c.line for c in ch4.flaky if c.case == ""] == ["PFPFF"]


def test_history_in_reports_and_history_command(tmp_path: Path):
    from .conftest import run_farm

    results = tmp_path / "results"
    db = results / "history.sqlite"
    for i, statuses in enumerate([{}, {f"{XCR0}/Broadwell/xcr0": "FAIL"}]):
        run_dir = results / f"run{i}"
        run_dir.mkdir(parents=True)
        run = _run(run_dir, statuses, run_id=f"run{i}", started=_day(i + 1))
        RunWriter(run, run_dir / "run.json").save()
        res = run_farm("report", str(run_dir))  # records into results/history.sqlite
        assert res.returncode == 0, res.stderr
    body = (results / "run1" / "summary.txt").read_text()
    assert "previous run of this job (run0): 2 new" in body
    page = (results / "run1" / "report.html").read_text()
    assert "new failure" in page and 'id="history"' in page
    out = run_farm("history", "--test", "xcr0", "--cpu", "Broadwell", "--kernel", XCR0, "--db", str(db))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(f"{XCR0} Broadwell xcr0: PF")
    none = run_farm("history", "--test", "nope", "--db", str(db))
    assert none.returncode == 2 and "no results" in none.stderr


@pytest.mark.parametrize("content", [b"this is not sqlite at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupted_history_db_is_an_input_error(tmp_path: Path, content: bytes):
    from .conftest import run_farm

    db = tmp_path / "history.sqlite"
    db.write_bytes(content)
    with pytest.raises(InputError, match="history.sqlite"):
        with History(db) as h:
            h.record(_run(tmp_path))
    res = run_farm("history", "--test", "xcr0", "--db", str(db))
    assert res.returncode == 2 and "history.sqlite" in res.stderr and "Traceback" not in res.stderr
    # reports are still written; the problem is named
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = _run(run_dir)
    with pytest.raises(InputError, match="history.sqlite"):
        write_all(run, run_dir, history=db)
    assert (run_dir / "summary.txt").is_file()
    seen = []
    write_all(run, run_dir, history=db, on_history_error=seen.append)
    assert seen and "history.sqlite" in seen[0]


def test_other_sqlite_file_is_not_a_history_db(tmp_path: Path):
    import sqlite3

    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(InputError, match="not a farm history database"):
        History(db)


# --- write_all and the HTML report -----------------------------------------------------------------

def test_write_all_writes_every_output_atomically(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL"})
    paths = write_all(run, tmp_path, history=tmp_path / "h.sqlite")
    assert [p.name for p in paths] == ["report.html", "summary.txt", "junit.xml", "kcidb.json"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert not list(tmp_path.glob(".*.tmp"))


def test_html_ab_build_metadata_and_reproduce(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{BASE}/Skylake-Server/xcr0": "FAIL"})
    page = html.render(run, tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&amp;lt;" not in page  # escaped once, not twice
    assert "\x00" not in page and "\x1b" not in page and "]]&gt;\\x00\\x1b[31m" in page
    ab = page[page.index("A/B: patched kernels"):page.index("What each CPU model delivered")]
    assert ab.index('class="regression"') < ab.index('class="fixed"')
    assert 'id="kernel-linux-6_1-xcr0"' in page and "x86/fpu: part 1" in page and "tinyconfig" in page
    assert "cd /src/linux-6.1 &amp;&amp; KBUILD_OUTPUT=/b make -j2 bzImage" in page
    assert "farm run --job default --kernel linux-6.1-xcr0 --cpu Broadwell --test xcr0" in page
    assert "qemu-system-x86_64 -cpu Broadwell" in page


def test_html_large_run_links_consoles_instead_of_inlining(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(html, "FULL_CELLS", 3)
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL"})
    page = html.render(run, tmp_path)
    assert 'id="compact"' in page and "7 more cells that passed" in page
    assert page.count("<summary>console") == 1  # only the failing cell's console is inlined
    assert 'href="cells/linux-6.1/Broadwell/xcr0/console.log"' in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_report_in_headless_chromium(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "CRASH"})
    run.cells[0].reason = EVIL  # in a cell's note too
    (tmp_path / "cells" / BASE / "Broadwell" / "xcr0" / "output.txt").write_text(
        f"TAP version 13\n1..1\nok 1 {EVIL}\n<img src=x onerror=\"document.title='img'\">\n")
    page = html.write(run, tmp_path)
    res = _chromium(tmp_path, "--virtual-time-budget=2000", "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title == "farm run r1: FAIL"  # no script ran (it would have set 'pwned' or 'img')
    assert "pwned" not in title and "<script>document" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    assert "&lt;img src=x" in dom and "<img" not in dom
    cells = re.findall(r'data-cell="([^"]+)"', dom)
    assert sorted(cells) == sorted(c.id for c in run.cells)
    grid = dom[dom.index('id="grid"'):dom.index("</table>", dom.index('id="grid"'))]
    assert grid.count('class="s PASS"') == 6 and 'class="s FAIL"' in grid and 'class="s CRASH"' in grid
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
