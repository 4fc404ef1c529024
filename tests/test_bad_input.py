"""Bad input as a new user gives it: one line naming what is wrong, exit 2, no traceback, nothing started."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from farm.progress import LiveProgress, Progress
from farm.results.run import Cell, Status

from .conftest import run_farm


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "/proc/forbidden"], "--out /proc/forbidden: cannot write a run there"),
    (["--out", "/dev/null"], "--out /dev/null: exists and is not an empty folder"),
    (["--cpu", ""], "--cpu '': an empty name matches nothing"),
    (["--cpu", " "], "--cpu ' ': an empty name matches nothing"),
    (["--test", ""], "--test '': an empty name matches nothing"),
    (["--cpu", "Pentium"], "--cpu Pentium: no CPU model matches (known: "),
    (["--shard", "3/2"], "--shard 3/2: I must be between 1 and N"),
    (["--pool", "nosuch:x"], "--pool nosuch: no such backend (known: "),
])
def test_bad_run_arguments_are_one_line_exit_2(args, message, tmp_path: Path):
    result = run_farm("run", "--job", "probe", *args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"farm: {message}"), result.stderr
    assert "Traceback" not in result.stderr
    assert len([ln for ln in lines if not ln.startswith("[") and "warning" not in ln]) == 1, result.stderr


def _cell(name: str) -> Cell:
    return Cell(id=f"k/c/{name}", kernel="k", cpu="c", test=name, status=Status.FAIL)


def test_guest_text_cannot_break_the_live_display():
    """A KTAP case named like rich markup, or carrying terminal escapes, is shown as text."""
    out = io.StringIO()
    live = LiveProgress()
    live.console = Console(file=out, force_terminal=True, width=200)
    live.start(1)
    evil = "FAIL: failed: evil[/bold] [red]x[/red] \x1b]0;pwned\x07 \x1b[2J"
    live.cell(_cell("t"), evil)
    live.stop()
    text = out.getvalue()
    assert "evil[/bold]" in text and "[red]x[/red]" in text
    assert "\x1b]0;pwned" not in text and "\x1b[2J" not in text and "\\x1b]0;pwned\\x07" in text


def test_plain_progress_shows_escapes_instead_of_sending_them():
    out = io.StringIO()
    plain = Progress(out)
    plain.cell(_cell("t"), "FAIL: \x1b[31mred\x1b[0m\nsecond line")
    line = out.getvalue()
    assert line.count("\n") == 1 and "\x1b" not in line and "\\x1b[31mred" in line and "\\x0asecond" in line
