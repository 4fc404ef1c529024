"""`farm reply`: the summary as a reply to the series, checked with Python's email parser and taken by a real
`git send-email` (its --smtp-server pointed at a program that keeps the message: nothing is sent).

The series comes from a real `git format-patch --cover-letter --base --thread -v2` of a scratch git repo."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from farm.errors import InputError
from farm.report import reply, text
from farm.report.synthetic import make_run
from farm.results.run import RunWriter, SeriesRecord

from .conftest import git, run_farm

XCR0 = "linux-6.1-xcr0"
BASE = "linux-6.1"


def _git(repo: Path, *args: str) -> str:
    return git(repo, *args, name="Jörg Dev", email="dev@example.org")


def format_patch_series(tmp: Path) -> SeriesRecord:
    """A 3-patch v2 series with a cover letter, made by git format-patch, read back with the email parser."""
    repo = tmp / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "fpu.c").write_text("int xcr0;\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD").strip()
    for i in range(1, 4):
        (repo / "fpu.c").write_text((repo / "fpu.c").read_text() + f"int part{i};\n")
        _git(repo, "commit", "-qam", f"x86/fpu: part {i} of the per-thread XCR0 override")
    out = tmp / "series"
    _git(repo, "format-patch", "-q", "-v2", "--cover-letter", "--thread", f"--base={base}", "-o", str(out),
         "--to=linux-kernel@vger.kernel.org", "--cc=x86@kernel.org", "--cc=Maintainer <maint@example.org>", "HEAD~3")
    files = sorted(out.glob("*.patch"))
    cover_file = files[0]  # as its author would, fill in the cover letter's subject and blurb
    cover_file.write_text(cover_file.read_text().replace("*** SUBJECT HERE ***", "x86/fpu: per-thread XCR0 override")
                          .replace("*** BLURB HERE ***", "A per-thread XCR0, set with arch_prctl()."))
    parsed = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    cover = parsed[0]
    body = cover.get_content()
    return SeriesRecord(
        subject=str(cover["Subject"]), version=2, message_id=str(cover["Message-Id"]),
        source=str(out), base_commit=re.search(r"^base-commit: (\w+)", body, re.M).group(1),
        patches=[{"subject": str(m["Subject"]), "message_id": str(m["Message-Id"]), "file": f.name}
                 for f, m in zip(files[1:], parsed[1:], strict=True)],
        author=str(cover["From"]), cc=[str(cover["To"]), *str(cover["Cc"]).split(", ")])


@pytest.fixture
def series(tmp_path: Path) -> SeriesRecord:
    return format_patch_series(tmp_path)


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_reply_threads_to_the_cover_letter_with_the_summary_and_tested_by(tmp_path: Path, series: SeriesRecord):
    run = make_run(tmp_path, series=series)
    msg = _parse(bytes(reply.message(run, "https://ci.example.org/runs/r1/report.html")))
    assert series.subject.startswith("[PATCH v2 0/3] ")
    assert msg["Subject"] == "Re: " + series.subject
    assert msg["In-Reply-To"] == series.message_id == msg["References"]
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", msg["Message-ID"]) and msg["Message-ID"] != series.message_id
    assert msg["To"] == series.author and "Jörg Dev" in msg["To"]  # the author, RFC 2047 on the wire
    assert b"=?utf-8?" in bytes(reply.message(run))
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["linux-kernel@vger.kernel.org", "x86@kernel.org",
                                                           "maint@example.org"]
    assert msg["From"] == "farm <farm@farmhost>" and msg["Date"]
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "us-ascii"
    content = msg.get_content()
    summary = text.render(run)
    assert content.replace("Full report: https://ci.example.org/runs/r1/report.html\n", "") == summary
    lines = content.splitlines()
    assert lines[1].startswith("Verdict: PASS") and lines[2] == "Full report: https://ci.example.org/runs/r1/report.html"
    assert lines[-1] == "Tested-by: farm <farm@farmhost>"
    assert all(len(x) <= 72 for x in lines)
    assert "Series: [PATCH v2 0/3] x86/fpu" in content and series.message_id in content
    assert f"base-commit {series.base_commit}" in content


@pytest.mark.parametrize("status", ["FAIL", "CRASH", "TIMEOUT", "FLAKY", "ERROR", "PENDING"])
def test_reply_has_no_tested_by_when_anything_failed(tmp_path: Path, series: SeriesRecord, status: str):
    run = make_run(tmp_path, series=series, statuses={f"{XCR0}/Broadwell/xcr0": status})
    content = _parse(bytes(reply.message(run))).get_content()
    assert "Tested-by" not in content and "Verdict: " in content.splitlines()[1]


def test_reply_command_writes_a_file_git_send_email_takes(tmp_path: Path, series: SeriesRecord):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = make_run(run_dir, series=series)
    RunWriter(run, run_dir / "run.json").save()
    res = run_farm("reply", str(run_dir), "--report-url", "https://ci.example.org/r1/report.html")
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip())
    assert path == run_dir / "reply.eml"
    raw = path.read_bytes()
    assert b"\r\n" not in raw and raw.isascii()
    msg = _parse(raw)
    assert msg["In-Reply-To"] == series.message_id and "Tested-by: farm <farm@farmhost>" in msg.get_content()

    # git send-email, with a sendmail stand-in that keeps what it was given: the farm never sends
    assert shutil.which("git-send-email") or Path("/usr/lib/git-core/git-send-email").exists(), \
        "git send-email is not installed: install.sh installs git-email"
    kept = tmp_path / "kept.eml"
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\ncat > {kept}\n")
    sendmail.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    sent = subprocess.run(["git", "send-email", "--from=farm <farm@farmhost>", f"--smtp-server={sendmail}",
                           "--confirm=never", "--suppress-cc=self", "--no-validate", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1"), stdin=subprocess.DEVNULL)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    got = _parse(kept.read_bytes())
    assert got["In-Reply-To"] == series.message_id and got["References"] == series.message_id
    assert got["Subject"] == "Re: " + series.subject and got["Message-ID"] == msg["Message-ID"]
    assert got.get_content().splitlines()[0] == f"farm run {run.run_id}: PASS"  # no From: line pushed into it
    recipients = (tmp_path / "argv").read_text().split()
    assert {"dev@example.org", "linux-kernel@vger.kernel.org", "x86@kernel.org", "maint@example.org"} <= set(recipients)


def test_reply_without_a_series_is_one_line_exit_2(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunWriter(make_run(run_dir), run_dir / "run.json").save()
    res = run_farm("reply", str(run_dir))
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert "has no series" in res.stderr and "--series" in res.stderr and "Traceback" not in res.stderr
    assert not (run_dir / "reply.eml").exists()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("message_id", "<abc@example.org>\nBcc: victim@example.org", "series.message_id: not a message-id"),
    ("message_id", "", "series.message_id is empty"),
    ("author", "Someone <a@b>\r\nBcc: victim@example.org", "series.author: an address with a line break"),
    ("cc", ["not an address"], "series.cc: not an e-mail address"),
])
def test_reply_refuses_header_text_that_is_not_what_it_claims(tmp_path: Path, series: SeriesRecord, field, value,
                                                              message):
    setattr(series, field, value)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunWriter(make_run(run_dir, series=series), run_dir / "run.json").save()
    res = run_farm("reply", str(run_dir))
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr


def test_reply_report_url_and_from(tmp_path: Path, series: SeriesRecord):
    run = make_run(tmp_path, series=series)
    with pytest.raises(InputError, match="--report-url: not an http"):
        reply.message(run, "javascript:alert(1)")
    with pytest.raises(InputError, match="--report-url"):
        reply.message(run, "https://x.example/a\nBcc: v@example.org")
    msg = _parse(bytes(reply.message(run, sender="Lab Robot <robot@lab.example>")))
    assert msg["From"] == "Lab Robot <robot@lab.example>"
    assert msg.get_content().rstrip().splitlines()[-1] == "Tested-by: Lab Robot <robot@lab.example>"
    assert msg["Message-ID"].endswith("@lab.example>")
