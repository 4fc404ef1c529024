"""Console and QEMU log parsing, on real captured logs kept as fixtures."""

from __future__ import annotations

from farm.vm.console import ConsoleState, parse_filtered_features

from .conftest import FIXTURES

MARKER = "farm-init: ready"


def test_ready_marker_in_real_boot_log_and_retbleed_notice_is_not_a_crash():
    state = ConsoleState(MARKER)
    state.feed((FIXTURES / "console-stock-ready.log").read_text())
    assert state.ready
    assert state.crashes == []  # "RETBleed: WARNING: ..." is a notice, not a WARN() splat


def test_panic_log_is_fatal_and_names_the_panic_line():
    state = ConsoleState(MARKER)
    state.feed((FIXTURES / "console-panic-no-root.log").read_text())
    assert not state.ready
    assert state.panicked
    first = state.first_crash()
    assert first.kind == "panic"
    assert first.line == "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    # the Call Trace under it is the panic's own report, not a crash of its own
    assert [c.kind for c in state.crashes] == ["panic"]
    assert first.frames[2:4] == ["mount_block_root+0x14e/0x1e6", "prepare_namespace+0x136/0x165"]


def test_console_lines_split_across_chunks_are_joined():
    text = (FIXTURES / "console-panic-no-root.log").read_text()
    state = ConsoleState(MARKER)
    for i in range(0, len(text), 7):  # the serial console arrives in arbitrary pieces
        state.feed(text[i:i + 7])
    assert state.panicked
    assert state.first_crash().line.startswith("Kernel panic - not syncing: VFS")


def test_warn_oops_and_bug_are_recognised_and_the_oops_belongs_to_its_bug():
    state = ConsoleState(MARKER)
    state.feed("[    5.1] WARNING: CPU: 1 PID: 77 at arch/x86/kernel/fpu/xstate.c:1020 foo+0x1/0x2\n"
               "[    5.2] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
               "[    5.3] Oops: 0002 [#1] PREEMPT SMP NOPTI\n")
    assert [c.kind for c in state.crashes] == ["warning", "exception"]
    assert not state.panicked
    assert state.first_crash().kind == "exception"
    assert state.crashes[0].title == "WARNING in foo"


def test_marker_must_be_a_whole_line():
    state = ConsoleState(MARKER)
    state.feed("echo farm-init: ready later\n")
    assert not state.ready


def test_filtered_features_from_real_qemu_warnings():
    features = parse_filtered_features((FIXTURES / "qemu-skylake-server-tcg.log").read_text())
    assert "avx512f" in features and "avx512bw" in features and "pcid" in features
    assert "xsavec" in features
    assert len(features) == len(set(features))
