"""Every report: from synthetic runs with hostile guest text and from a real run of the xcr0 job kept as a
fixture (written by an older farm: run.json stays readable). A/B, summary.txt, junit.xml, kcidb.json, the
history DB, the HTML report (also loaded in headless Chromium), run.json itself, and the compare/history/report
commands."""

from __future__ import annotations

import gzip
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
from farm.results import run as runfile
from farm.results.history import History
from farm.results.run import Case, Cell, Crash, HostRecord, Run, RunWriter, Status

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
    run.cells[[c.id for c in run.cells].index(f"{XCR0}/Broadwell/xcr0")].status = Status.CRASH
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
    assert (body.index("Regressions and new failures against the baseline") < body.index("infrastructure problems")
            < body.index("A/B: linux-6.1-xcr0 against linux-6.1"))
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


def test_html_ab_pivot_build_metadata_and_reproduce(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{BASE}/Skylake-Server/xcr0": "FAIL",
                          f"{BASE}/Broadwell/cpuinfo": "SKIP", f"{BASE}/Skylake-Server/cpuinfo": "SKIP"})
    page = html.render(run, tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&amp;lt;" not in page  # escaped once, not twice
    assert "\x00" not in page and "\x1b" not in page and "]]&gt;\\x00\\x1b[31m" in page
    ab = page[page.index('<h2 id="ab">'):page.index('<h2 id="time">')]
    # the pivot: one row per case, one column per CPU model, baseline -> patched in each cell
    row = re.search(r'<tr class="regression"><td>xcr0<td>xcr0_case_4(.*?)</tr>', ab).group(1)
    assert re.findall(r'<td class="ab (\S+)"[^>]*>([^<]*)', row) == [
        ("regression", "PASS &rarr; FAIL"), ("fixed", "FAIL &rarr; PASS")]
    assert ab.count("<tr class=") == 1  # the other 3 cases of xcr0 are unchanged: folded away
    assert "3 unchanged row(s)</summary>" in ab
    # new coverage in one line per test and model group, not one row per case
    assert "cpuinfo: 4 case(s) SKIP -&gt; PASS on all 2 CPU models" in ab and "cpuinfo_case_2" in ab
    assert 'id="kernel-linux-6_1-xcr0"' in page and "x86/fpu: part 1" in page and "tinyconfig" in page
    assert "cd /src/linux-6.1 &amp;&amp; KBUILD_OUTPUT=/b make -j2 bzImage" in page
    assert "farm run --job default --kernel linux-6.1-xcr0 --cpu Broadwell --test xcr0" in page
    assert "qemu-system-x86_64 -cpu Broadwell" in page


def test_html_links_consoles_and_inlines_only_excerpts(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "CRASH",
                          f"{BASE}/Skylake-Server/xcr0": "TIMEOUT"})
    for c in run.cells:  # consoles of 2 MB each: none of it may reach the page but the excerpts
        path = tmp_path / c.files["console"]
        body = path.read_text()
        if c.status is Status.CRASH:
            filler = "".join(f"[{i:5}.000000] boot line {i}\n" for i in range(40000))
            path.write_text(filler + body + "Call Trace:\n<TASK>\n ? die+0x1/0x2\n---[ end Kernel panic ]---\nafter\n")
            c.crashes[0].lineno = 40000 + body.count("\n")  # the panic line, the last of the body
        else:
            path.write_text("x" * (2 << 20) + "\n" + body)
    page = html.render(run, tmp_path)
    assert len(page.encode()) < 120_000
    assert "x" * 300 not in page and "boot line 100\n" not in page  # excerpt lines are clipped to 240
    for c in run.cells:  # every console one click away
        assert f'href="{c.files["console"]}"' in page
    crash = page[page.index('id="crash-1"'):]
    crash = crash[:crash.index("</div>")]
    assert "boot line 39999" in crash and "boot line 39998" not in crash  # 4 lines before the crash line
    assert '<span class="crash">Kernel panic - not syncing: &lt;script&gt;' in crash
    assert "end Kernel panic" in crash and "after" not in crash  # to the end of its report
    failing = page[page.index(f'id="{html.pictures.anchor(XCR0 + "/Broadwell/xcr0")}"'):]
    assert "not ok 4 xcr0_case_4" in failing[:failing.index("</div>")]  # the failing case's excerpt
    timeout = page[page.index(f'id="{html.pictures.anchor(BASE + "/Skylake-Server/xcr0")}"'):]
    timeout = timeout[:timeout.index("</div>")]
    assert "farm-init: ready" in timeout and "x" * 200 + "x [...]\n" in timeout  # the console's end, clipped


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))


def test_html_report_in_headless_chromium(tmp_path: Path):
    assert CHROMIUM, "chromium is not installed: install.sh installs it"
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL", f"{XCR0}/Skylake-Server/cpuinfo": "CRASH"})
    run.cells[0].reason = EVIL  # in a cell's note too
    failing = next(c for c in run.cells if c.status is Status.FAIL)
    failing.cases = []  # a whole-test failure: the end of its output is the excerpt shown inline
    (tmp_path / failing.files["output"]).write_text(
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
    grid = dom[dom.index('id="matrix"'):dom.index("</svg>", dom.index('id="matrix"'))]
    assert grid.count('data-status="PASS"') == 6 and 'data-status="FAIL"' in grid and 'data-status="CRASH"' in grid
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


# --- run.json and a small hand-made run ---------------------------------------------------------------


def _small(tmp_path: Path) -> Run:
    cells = [
        Cell(id="k/Broadwell/t", kernel="k", cpu="Broadwell", test="t", status=Status.PASS, stage="test",
             facts={"xcr0": "0x7", "xsave_size": "832"}, files={"output": "cells/k/Broadwell/t/output.txt",
                                                             "console": "cells/k/Broadwell/t/console.log"},
             cases=[Case(1, EVIL, Status.PASS, "", [EVIL])],
             crashes=[Crash("warning", "WARNING: CPU: 0 PID: 1 at x.c:1 f", 3)]),
        Cell(id="k/Skylake-Server/t", kernel="k", cpu="Skylake-Server", test="t", status=Status.CRASH, stage="test",
             reason="Kernel panic - not syncing: " + EVIL, filtered_features=["avx512f"],
             crashes=[Crash("panic", "Kernel panic - not syncing: " + EVIL, 9)]),
        Cell(id="k/max/t", kernel="k", cpu="max", test="t"),
    ]
    d = tmp_path / "cells/k/Broadwell/t"
    d.mkdir(parents=True)
    (d / "output.txt").write_text(f"TAP version 13\n1..1\nok 1 {EVIL}\n")
    (d / "console.log").write_text(f"farm-init: ready\n{EVIL}\nWARNING: CPU: 0 PID: 1 at x.c:1 f\nCall Trace:\n")
    return Run(run_id="r1", job="j", job_file="jobs/j.yaml", started="now", cells=cells, interrupted=True,
               host=HostRecord(hostname="h", qemu="QEMU 7.2", accel="tcg", accel_reason="test"))


def test_report_escapes_guest_text_lists_missing_cells_and_marks_crash_lines(tmp_path: Path):
    page = html.render(_small(tmp_path), tmp_path)
    assert "<script>" not in page
    assert "&lt;script&gt;document.title=" in page
    assert "Missing results" in page and "k/max/t" in page
    assert "FAIL" in page  # the verdict: a crash fails the run
    # the console line the scan recorded (line 3) is highlighted, by its number: the next line is not
    assert '<span class="crash">WARNING: CPU: 0 PID: 1 at x.c:1 f</span>' in page
    assert '<span class="crash">Call Trace:</span>' not in page
    assert "0x7" in page and "avx512f" in page


def test_run_json_round_trip_and_exit_codes(tmp_path: Path):
    run = _small(tmp_path)
    RunWriter(run, tmp_path / "run.json").save()
    back = runfile.load(tmp_path)
    assert back == run  # every field, typed, comes back
    assert back.cells[1].status is Status.CRASH and back.cells[2].status is Status.PENDING
    assert back.cells[1].crashes[0].lineno == 9
    assert back.exit_code() == 1
    back.cells[1].status = Status.PASS
    assert back.exit_code() == 3  # a pending cell is missing evidence
    back.cells[2].status = Status.SKIP
    assert back.exit_code() == 0


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "not a farm run.json"),
    ('{"schema": 99}', "not a farm run.json"),
    ('{"schema": 1, "cells": [{"bogus": 1}]}', "malformed run.json"),
    ('{"schema": 2, "run_id": "r", "job": "j", "job_file": "j", "started": "s", "cells": [{"id": "a", '
     '"kernel": "k", "cpu": "c", "test": "t", "status": "GREAT"}]}', "cells.0.status"),
])
def test_damaged_run_json_is_an_input_error_naming_the_field(tmp_path: Path, content: str, message: str):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(InputError, match=message):
        runfile.load(tmp_path)


def test_report_command_rerenders(tmp_path: Path):
    from .conftest import run_farm

    RunWriter(_small(tmp_path), tmp_path / "run.json").save()
    result = run_farm("report", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "&lt;script&gt;" in (tmp_path / "report.html").read_text()
    (tmp_path / "run.json").write_text("{")
    bad = run_farm("report", str(tmp_path))
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr and len(bad.stderr.splitlines()) == 1


# --- a real run of the xcr0 job, written by the farm before the typed record (schema 1) ---------------

GOLDEN = Path(__file__).parent / "fixtures" / "run-v1-xcr0"


@pytest.fixture
def v1_run(tmp_path: Path) -> Path:
    (tmp_path / "run.json").write_bytes(gzip.decompress((GOLDEN / "run.json.gz").read_bytes()))
    return tmp_path


def test_old_run_json_loads_typed(v1_run: Path):
    run = runfile.load(v1_run)
    assert run.schema == 2 and len(run.cells) == 24 and run.counts()[Status.PASS] == 24
    builds = run.builds()
    assert builds["linux-6.1"].outcome == "cached" and builds["linux-6.1-xcr0"].outcome == "built"
    assert [r.ok for r in builds["linux-6.1-xcr0"].checkpatch] == [True] * 3
    assert builds["linux-6.1-xcr0"].release == "6.1.192"
    xcr0 = next(c for c in run.cells if c.id == "linux-6.1-xcr0/Skylake-Server/xcr0")
    assert len(xcr0.cases) == 48 and all(isinstance(k, Case) for k in xcr0.cases)


def test_old_run_renders_every_report_as_it_did(v1_run: Path):
    run = runfile.load(v1_run)
    assert text.render(run) == (GOLDEN / "summary.txt").read_text()
    assert junit.render(run, v1_run) == gzip.decompress((GOLDEN / "junit.xml.gz").read_bytes()).decode()
    assert kcidb.render(run) == json.loads(gzip.decompress((GOLDEN / "kcidb.json.gz").read_bytes()))
    page = html.render(run, v1_run)
    assert "farm run v1-xcr0-run: PASS" in page and page.count("data-cell=") == 24
    assert "checkpatch" in page and "118</b> new-coverage" in page


def test_old_run_through_report_and_compare_commands(v1_run: Path, tmp_path: Path):
    from .conftest import run_farm

    res = run_farm("report", str(v1_run))
    assert res.returncode == 0, res.stderr
    assert {p.name for p in v1_run.iterdir()} >= {"report.html", "summary.txt", "junit.xml", "kcidb.json"}
    assert runfile.load(v1_run).schema == 2  # rendering reads, it does not rewrite run.json
    other = tmp_path / "other"
    other.mkdir()
    run = runfile.load(v1_run)
    broken = next(c for c in run.cells if c.id == "linux-6.1-xcr0/Broadwell/xcr0")
    broken.status = Status.FAIL
    broken.cases[5].status = Status.FAIL
    RunWriter(run, other / "run.json").save()
    cmp = run_farm("compare", str(v1_run), str(other))
    assert cmp.returncode == 1, cmp.stderr  # old run against a new one: the regression is found
    assert "regression" in cmp.stdout.splitlines()[1] and broken.cases[5].name in cmp.stdout


# --- issue 14/16: crash groups, applies-to, grouped A/B, pictures, farm run's last lines ---------------------

def _crash(cell: Cell, title: str, fingerprint: str, lineno: int = 4) -> None:
    cell.status, cell.reason = Status.CRASH, title
    cell.crashes = [Crash("warning", f"WARNING: CPU: 0 PID: 1 at arch/x86/kernel/fpu/xstate.c:99 {title}", lineno,
                          title=title, fingerprint=fingerprint, frames=["xstate_set+0x1c/0x40", "do_syscall_64"])]


def test_crashes_grouped_by_fingerprint_with_where_and_first_seen(tmp_path: Path):
    db = tmp_path / "history.sqlite"
    first = _run(tmp_path / "a", run_id="run-a", started=_day(1))
    _crash(next(c for c in first.cells if c.id == f"{XCR0}/Broadwell/xcr0"), "WARNING in xstate_set", "fp-xstate")
    with History(db) as h:
        h.record(first)
    run = _run(tmp_path, run_id="run-b", started=_day(2))
    for cid in (f"{XCR0}/Broadwell/xcr0", f"{XCR0}/Skylake-Server/xcr0"):  # the same crash on two models
        _crash(next(c for c in run.cells if c.id == cid), "WARNING in xstate_set", "fp-xstate")
    _crash(next(c for c in run.cells if c.id == f"{XCR0}/Skylake-Server/cpuinfo"), "BUG in fpu_clone", "fp-clone")
    paths = write_all(run, tmp_path, history=db)
    page = paths[0].read_text()
    crashes = page[page.index("<h3>Crashes (2 distinct, by fingerprint)"):page.index("</div>", page.index('id="crash-2"'))]
    one = crashes[crashes.index('id="crash-1"'):crashes.index('id="crash-2"')]
    assert "<b>WARNING in xstate_set</b>" in one and "2 time(s)" in one
    assert "seen on <b>Broadwell, Skylake-Server</b>" in one
    assert "first seen in run <code>run-a</code> (2026-11-01T10:00:00+00:00), in 2 runs so far" in one
    assert "xstate_set+0x1c/0x40" in one  # the frames
    two = crashes[crashes.index('id="crash-2"'):]
    assert "BUG in fpu_clone" in two and "first seen in run <code>run-b</code>" in two and "Broadwell" not in two
    body = paths[1].read_text()
    _summary_ok(body)
    assert "Crashes (2 distinct)" in body and "seen on Broadwell, Skylake-Server" in body
    assert "first seen in run run-a (2026-11-01T10:00:00+00:00)" in body
    assert body.index("Regressions and new failures") < body.index("Crashes (2 distinct)") < body.index("A/B:")


def test_crashes_without_fingerprint_group_by_their_line_numbers_aside():
    from farm.results.history import crash_key

    a = Crash("oops", "[   12.345678] BUG: unable to handle page fault for address: ffff888003a1c000", 7)
    b = Crash("oops", "[    3.000001] BUG: unable to handle page fault for address: ffff888004b2d000", 9)
    c = Crash("oops", "[    3.000001] general protection fault, probably for non-canonical address", 9)
    assert crash_key(a) == crash_key(b) != crash_key(c)
    assert crash_key(Crash("panic", "x", fingerprint="abc")) == "abc"


def test_applies_to_table_and_series_on_top(tmp_path: Path):
    from farm.results.run import PatchApplies, SeriesRecord

    hunk = (Path(__file__).parent / "fixtures" / "kbuild" / "git-apply-hunk-failure.log").read_text().splitlines()[1]
    series = SeriesRecord(subject="[PATCH v3 0/2] x86/fpu: per-thread XCR0", version=3, message_id="<c@example.org>",
                          base_commit="deadbeef", base_used="v6.1.192", base_note="base-commit deadbeef is not in "
                          "the tree: built on the configured base instead",
                          patches=[{"subject": "[PATCH v3 1/2] a"}, {"subject": "[PATCH v3 2/2] b"}],
                          applies={BASE: [PatchApplies("0001-a.patch", True), PatchApplies("0002-b.patch", True)],
                                   XCR0: [PatchApplies("0001-a.patch", True),
                                          PatchApplies("0002-b.patch", False, hunk)]})
    run = _run(tmp_path, series=series)
    page = html.render(run, tmp_path)
    top = page[page.index('id="tested"'):page.index('id="results"')]
    assert "[PATCH v3 0/2] x86/fpu: per-thread XCR0</b> (v3, 2 patch(es))" in top and "&lt;c@example.org&gt;" in top
    assert "does not apply to linux-6.1-xcr0 at 0002-b.patch</span>: <code>error: patch failed: kernel/panic.c:50" in top
    assert "not in the tree: built on the configured base instead" in top and "v6.1.192" in top
    table = page[page.index('<h2 id="applies">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 5 and table.count('class="s FAIL">no<') == 1
    body = text.render(run)
    _summary_ok(body)
    assert "Does not apply to linux-6.1-xcr0 at 0002-b.patch: error: patch failed:" in body
    assert "Series: [PATCH v3 0/2] x86/fpu: per-thread XCR0 (v3, 2 patch(es))" in body
    series.applies[XCR0][1] = PatchApplies("0002-b.patch", True)
    page = html.render(run, tmp_path)
    assert 'id="applies"' not in page and "every patch applies to linux-6.1, linux-6.1-xcr0" in page


def test_grouped_ab_one_line_per_test_and_model_group(tmp_path: Path):
    run = _run(tmp_path, {f"{BASE}/Broadwell/cpuinfo": "SKIP", f"{BASE}/Skylake-Server/cpuinfo": "SKIP",
                          f"{BASE}/Skylake-Server/xcr0": "SKIP", f"{XCR0}/Broadwell/xcr0": "FAIL"})
    g = abtest.grouped(abtest.within_run(run)[0], ["Broadwell", "Skylake-Server"])
    assert [gr.line(g.cpus) for gr in g.groups] == [
        "cpuinfo: 4 case(s) SKIP -> PASS on all 2 CPU models", "xcr0: 3 case(s) SKIP -> PASS on Skylake-Server"]
    # case 4 regressed on Broadwell: its row is listed whole (with its new coverage on Skylake-Server)
    assert [(r.test, r.case, r.kind) for r in g.rows] == [("xcr0", "xcr0_case_4", "regression")]
    assert {cpu: x.kind for cpu, x in g.rows[0].cells.items()} == {"Broadwell": "regression",
                                                                    "Skylake-Server": "new-coverage"}
    assert g.quiet == []  # every other row has new coverage on some model: it is in a group's line


def test_passing_xcr0_summary_fits_one_screen(v1_run: Path):
    body = text.render(runfile.load(v1_run))
    _summary_ok(body)
    assert len(body.splitlines()) <= 60
    assert "new-coverage: xcr0: 28 case(s) SKIP -> PASS on all 4 CPU models" in body
    assert body.count("SKIP -> PASS") == 3  # 118 new-coverage rows, in 3 lines


def test_xcr0_page_is_small_and_every_console_is_linked(v1_run: Path):
    run = runfile.load(v1_run)
    page = html.render(run, v1_run)
    assert len(page.encode()) < 300_000
    for c in run.cells:
        assert f'href="{c.files["console"]}"' in page


def test_strip_marks():
    from farm.report.pictures import strip_marks

    assert strip_marks(["PASS", "FAIL", "FAIL", "PASS"]) == ["", "new", "", "fixed"]
    assert strip_marks(["PASS", "FAIL", "PASS", "PASS"]) == ["", "flaky", "", ""]  # a blip, not a fix
    assert strip_marks(["FAIL", "PASS", "FAIL"]) == ["", "flaky", ""]
    assert strip_marks([None, "PASS", "SKIP", "FLAKY"]) == ["", "", "", "flaky"]
    assert strip_marks(["PASS", None, "SKIP", "CRASH"]) == ["", "", "", "new"]  # SKIP and absent runs are skipped


def test_timeline_segments_from_cell_timings(tmp_path: Path):
    from farm.report.pictures import bars

    run = _run(tmp_path, timeline=True)
    cell = run.cells[3]
    cell.attempts = 2
    cell.timings["start"] -= 5.0  # an earlier attempt ran for 5 s before the last one
    (bar,) = [b for b in bars(run) if b.cell is cell]
    kinds = [k for k, _, _ in bar.segments]
    assert kinds == ["build", "queue", "retry", "boot", "setup", "test", "shutdown"]
    assert bar.segments[0][1:] == (0.0, 30.0)
    retry = bar.segments[2]
    assert retry[2] - retry[1] == pytest.approx(5.0)
    assert bar.segments[-1][2] == cell.timings["end"]
    svg, note = html.pictures.timeline(run)
    assert svg.count('<g class="bar"') == len(run.cells) and "8 cells" in note
    old = _run(tmp_path)  # a record without start/end (an older farm): no picture, and the page says why
    assert html.pictures.timeline(old)[0] is None and "no timeline" in html.render(old, tmp_path)


def test_closing_lines_give_verdict_counts_time_split_and_path(tmp_path: Path):
    run = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "FAIL"}, timeline=True)
    run.host.parallel = 1
    lines = text.closing_lines(run, tmp_path)
    assert lines[0] == "FAIL: 7 PASS, 1 FAIL; 1 regression(s) against the baseline"
    assert lines[-1] == str(tmp_path)
    boot = sum(c.timings["boot_to_ssh"] for c in run.cells)
    test = sum(c.timings["test"] for c in run.cells)
    wall = run.phases["prepare"] + run.phases["execute"]
    assert lines[1] == (f"time: {text._secs(wall)} wall = build 30.0 s (2 kernel(s) built in {text._secs(240.5)}) + cells "
                        f"{text._secs(run.phases['execute'])}; in the cells: boot {text._secs(boot)}, test "
                        f"{text._secs(test)} (guest time, 1 at once)")
    assert all(len(x) <= 200 for x in lines)


# --- two real runs of the xcr0 job (schema 2, with the timeline), the second with real failures -------------

V2 = Path(__file__).parent / "fixtures" / "run-v2-xcr0"


def real_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run A (all PASS) and run B (7 FAIL, with its cells' files) in one results folder; A recorded in the
    history DB there, then B's reports written (recording B)."""
    import tarfile

    results = tmp_path / "results"
    dirs = []
    for name in ("a", "b"):
        d = results / f"xcr0-{name}"
        d.mkdir(parents=True)
        (d / "run.json").write_bytes(gzip.decompress((V2 / f"run-{name}.json.gz").read_bytes()))
        dirs.append(d)
    with tarfile.open(V2 / "cells-b.tar.gz") as tar:
        tar.extractall(dirs[1], filter="data")
    db = results / "history.sqlite"
    write_all(runfile.load(dirs[0]), dirs[0], history=db)
    write_all(runfile.load(dirs[1]), dirs[1], history=db)
    return dirs[0], dirs[1]


def test_real_runs_passing_summary_fits_and_failing_page_is_small_and_grouped(tmp_path: Path):
    a, b = real_runs(tmp_path)
    passing = (a / "summary.txt").read_text()
    _summary_ok(passing)
    assert len(passing.splitlines()) <= 60 and passing.rstrip().endswith("Tested-by: farm <farm@vm>")
    assert len((a / "report.html").read_bytes()) < 300_000
    page = (b / "report.html").read_text()
    assert len(page.encode()) < 300_000
    run = runfile.load(b)
    for c in run.cells:  # every console one click away, and the link leads to the file
        assert f'href="{c.files["console"]}"' in page and (b / c.files["console"]).is_file()
    # the 7 cells that failed the same way are one group, with one excerpt and every cell linked
    problems = page[page.index('<h2 id="problems">'):page.index('<h2 id="ab">')]
    assert problems.count('<div class="problem">') == 1 and "(7 cell(s))" in problems
    assert problems.count('<pre class="excerpt"') == 1 and "not ok" in problems and "syscall_numbering_64" in problems
    failed = [c for c in run.cells if c.status is Status.FAIL]
    assert len(failed) == 7 and all(f'id="{html.pictures.anchor(c.id)}"' in problems for c in failed)
    # the timeline and the history strip of the two runs
    assert page.count('<g class="bar"') == 24 and page.count('<g class="strip-row"') == 24
    assert page.count('class="mark m-new"') == 7 + 7  # the strip's dots and the matrix's
    body = (b / "summary.txt").read_text()
    _summary_ok(body)
    assert "Tested-by" not in body
    assert ("  FAIL x86-selftests: failed: syscall_numbering_64\n    on linux-6.1-xcr0: Broadwell, Skylake-Client, "
            "max; linux-6.1:\n      Broadwell, Skylake-Client, Skylake-Server, max\n") in body
    assert "new failure: x86-selftests.syscall_numbering_64 PASS -> FAIL on" in body
    assert body.count("new failure:") == 1  # 14 changes (7 cells, whole test and case) in one line


def test_history_db_of_an_older_farm_gets_the_crashes_table_in_place(tmp_path: Path):
    import sqlite3

    db = tmp_path / "history.sqlite"
    run = _run(tmp_path, run_id="old", started=_day(1))
    with History(db) as h:
        h.record(run)
    with sqlite3.connect(db) as c:  # as the farm before crash grouping left it: schema 1 without the table
        c.execute("DROP TABLE crashes")
    again = _run(tmp_path, {f"{XCR0}/Broadwell/xcr0": "CRASH"}, run_id="new", started=_day(2))
    with History(db) as h:
        h.record(again)
        changes = h.changes(again)
        assert [p.status for p in h.line("xcr0", "Broadwell", XCR0)] == ["PASS", "CRASH"]
    (fp,) = changes.crashes
    assert changes.crashes[fp].run_id == "new" and changes.previous == "old"


def test_skip_on_both_sides_of_a_patched_kernel_is_flagged_not_unchanged(tmp_path: Path):
    run = _run(tmp_path, {f"{BASE}/Broadwell/xcr0": "SKIP", f"{XCR0}/Broadwell/xcr0": "SKIP"})
    [comp] = abtest.within_run(run)
    flagged = comp.of("skipped-both")
    assert {(r.cpu, r.test) for r in flagged} == {("Broadwell", "xcr0")} and len(flagged) == 4
    assert abtest.classify("SKIP", "SKIP") == "unchanged"  # between two runs of the same kernel: no flag
    body = text.render(run)
    assert "xcr0: 4 case(s) SKIP -> SKIP on Broadwell" in body
