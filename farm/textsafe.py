"""Text from guests and data files, made safe for a terminal: control characters and escape sequences shown
as \\xNN, never sent (a guest could move the cursor, retitle the window or hide a line)."""

from __future__ import annotations

import re

# C0 controls (tab kept where asked), DEL, C1 controls, lone surrogates, Unicode line breaks
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def _hex(m: re.Match) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def one_line(text: str) -> str:
    """One terminal line: every control character (newlines too) shown as \\xNN."""
    return _CONTROL.sub(_hex, text.replace("\t", " "))
