"""The console parser's bounds: a line without a newline is cut, not kept whole; the crash list stops growing
(a panic after it is still seen). bench/console.py has the seconds against the parser before the caps."""

from __future__ import annotations

from farm.vm.console import MAX_CRASHES, MAX_LINE, ConsoleState

from .conftest import FIXTURES

PANIC_LOG = (FIXTURES / "console-panic-no-root.log").read_text()


def test_16_mib_without_a_newline_keeps_one_bounded_line_and_the_crash_after_it_is_found():
    state = ConsoleState("farm-init: ready")
    chunk = "x" * 65536
    held = 0
    for _ in range(256):  # 16 MiB, as the console pump reads it
        state.feed(chunk)
        held = max(held, len(state._partial))
    assert held == MAX_LINE  # the unfinished line never grows past the cap
    state.feed("\n" + PANIC_LOG)
    assert state.panicked
    first = state.first_crash()
    assert first.line.startswith("Kernel panic - not syncing: VFS")
    assert state.lines == 1 + PANIC_LOG.count("\n")  # the 16 MiB line counts as one: line numbers stay right


def test_the_cut_line_is_still_scanned_for_a_crash_in_its_first_part():
    state = ConsoleState("farm-init: ready")
    panic = next(line for line in PANIC_LOG.splitlines() if "Kernel panic" in line)
    state.feed(panic + "y" * (4 << 20) + "\n")
    assert state.panicked


def test_the_crash_list_is_bounded_and_a_later_panic_is_still_kept():
    warn = next(line for line in (FIXTURES / "crashes" / "warning.log").read_text().splitlines()
                if "WARNING: CPU:" in line)
    state = ConsoleState("farm-init: ready")
    state.feed((warn + "\n") * (MAX_CRASHES + 300))
    assert len(state.crashes) == MAX_CRASHES
    assert state.dropped == 300
    assert not state.panicked
    state.feed(PANIC_LOG)
    assert state.panicked and state.crashes[-1].kind == "panic"

