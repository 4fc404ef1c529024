"""QMP, the QEMU monitor, for every guest: qemu.qmp's QMPClient on one background event loop.

Commands are called from worker threads and run on that loop; events (SHUTDOWN with its reason,
GUEST_PANICKED, RESET, STOP, migration status) are collected as they arrive, so the farm can ask later why a
machine stopped. The same link serves a local QEMU (its unix socket) and one on a farm host (a socket the
remote backend relays over SSH).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from qemu.qmp import QMPClient

from ..errors import InfraError

_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="qmp-loop", daemon=True).start()
        return _LOOP


class QmpError(InfraError):
    pass


class Qmp:
    def __init__(self, name: str):
        self.name = name
        self.client = QMPClient(name)
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._pump: Any = None

    def _call(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coro, _loop())
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise QmpError(f"QMP ({self.name}): no answer within {timeout:.0f} s") from None

    def connect(self, address: str | socket.socket, timeout: float = 10.0) -> None:
        """Connect and negotiate. Raises OSError while QEMU does not listen yet (callers retry)."""
        self._call(self.client.connect(address), timeout)
        self._pump = asyncio.run_coroutine_threadsafe(self._collect(), _loop())

    async def _collect(self) -> None:
        try:
            while True:
                event = await self.client.events.get()
                with self._changed:
                    self.events.append(dict(event))
                    self._changed.notify_all()
        except asyncio.CancelledError:
            pass

    def cmd(self, name: str, timeout: float = 10.0, **args: Any) -> Any:
        try:
            return self._call(self.client.execute(name, args or None), timeout)
        except QmpError:
            raise
        except Exception as e:  # noqa: BLE001 - the client's errors (disconnected, refused command)
            raise QmpError(f"QMP {name} ({self.name}): {type(e).__name__}: {e}") from None

    def hmp(self, command_line: str, timeout: float = 10.0) -> str:
        return str(self.cmd("human-monitor-command", timeout=timeout, **{"command-line": command_line}))

    def wait_event(self, names: tuple[str, ...], timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for ev in self.events:
                    if ev.get("event") in names:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def stop_reason(self) -> str:
        """Why the machine stopped, from its events: guest-panic, guest-reset, guest-shutdown, host-signal,
        host-qmp-quit, ... ('' while nothing says)."""
        with self._changed:
            for ev in self.events:
                if ev.get("event") == "GUEST_PANICKED":
                    return "guest-panic"
            for ev in self.events:
                if ev.get("event") == "SHUTDOWN":
                    return str((ev.get("data") or {}).get("reason", "shutdown"))
        return ""

    def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        try:
            self._call(self.client.disconnect(), 5.0)
        except Exception:  # noqa: BLE001 - QEMU may already be gone
            pass


def connect_retrying(name: str, address_factory, deadline: float, alive) -> Qmp:
    """A connected Qmp once QEMU listens. The socket file appears at bind(), a moment before listen(), so a
    refused connection is retried until `alive()` turns false or the deadline passes."""
    while True:
        if not alive():
            raise QmpError("QEMU exited before its QMP socket answered")
        if time.monotonic() > deadline:
            raise QmpError("QEMU never opened its QMP socket")
        address = address_factory()
        if address is not None:
            qmp = Qmp(name)
            try:
                qmp.connect(address, timeout=max(1.0, deadline - time.monotonic()))
                return qmp
            except (OSError, EOFError, QmpError):
                qmp.close()
            except Exception:  # noqa: BLE001 - qemu.qmp wraps a refused connect in its own ConnectError
                qmp.close()
        time.sleep(0.01)
