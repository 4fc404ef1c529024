"""The VM backends, by name (syzkaller's vmimpl.Register is the model).

A backend is one module with a function `pools(options: PoolOptions) -> list[Pool]` and one line in
BACKENDS. `farm run --pool KIND:ARG` (and its spellings --hosts FILE, --lava URL) reaches it; the local
QEMU pool is always there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..guest.keys import ClientKey
from .accel import Accel
from .base import Pool

BACKENDS: dict[str, str] = {
    "qemu": "farm.vm.qemu",  # guests on this machine
    "remote": "farm.vm.remote",  # QEMU on farm hosts over SSH; ARG: an Ansible inventory
    "lava": "farm.vm.lava",  # jobs of a LAVA lab; ARG: its URL
}


@dataclass
class PoolOptions:
    arg: str  # what follows KIND: in --pool KIND:ARG (an inventory file, a lab's URL, ...)
    key: ClientKey  # the farm's SSH key
    accel: str = "auto"  # --accel as given: auto, kvm or tcg
    local_accel: Accel | None = None  # what this machine's probe decided
    slots: int = 1  # -j: guests at once, for backends that do not say themselves
    note: Callable[[str], None] = print
    token_file: str | None = None  # --lava-token-file: a lab's API token (never on the command line)
    left_out: dict[str, dict[str, Any]] = field(default_factory=dict)  # pools that could not be used, and why


def register(kind: str, module: str) -> None:
    """Add a backend at run time (the tests' scripted fake does)."""
    BACKENDS[kind] = module


def pools(kind: str, options: PoolOptions) -> list[Pool]:
    if kind not in BACKENDS:
        raise InputError(f"--pool {kind}: no such backend (known: {', '.join(sorted(BACKENDS))})")
    module = importlib.import_module(BACKENDS[kind])
    return list(module.pools(options))


def parse(text: str) -> tuple[str, str]:
    """`KIND:ARG` (or KIND alone) from --pool."""
    kind, _, arg = text.partition(":")
    if not kind.strip():
        raise InputError(f"--pool {text!r}: expected KIND:ARG, e.g. remote:inventory.yml")
    return kind.strip(), arg
