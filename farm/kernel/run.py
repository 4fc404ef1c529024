"""Running commands for a build: every command and its output go to the build log, and each is recorded
(argv, cwd, the environment it needs) so metadata.json can say exactly how to reproduce the build."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


class Runner:
    def __init__(self, log_file: TextIO | None = None, base_env: dict[str, str] | None = None):
        self.log_file = log_file
        self.base_env = dict(base_env or {})
        self.commands: list[dict] = []

    def note(self, text: str) -> None:
        if self.log_file:
            self.log_file.write(text.rstrip("\n") + "\n")
            self.log_file.flush()

    def run(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        record: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> tuple[int, list[str]]:
        """Run argv; return (exit status, output lines: stdout and stderr merged). Never raises on failure."""
        extra = {**self.base_env, **(env or {})}
        full_env = {**os.environ, **extra}
        shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(extra.items()))
        self.note(f"$ cd {shlex.quote(str(cwd))} && {shown + ' ' if shown else ''}{shlex.join(argv)}")
        if record:
            self.commands.append({"cwd": str(cwd), "env": extra, "argv": list(argv)})
        start = time.monotonic()
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as e:
            self.note(f"cannot run {argv[0]}: {e}")
            return 127, [f"cannot run {argv[0]}: {e}"]
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if self.log_file:
                self.log_file.write(line)
            if on_line:
                on_line(line.rstrip("\n"))
        rc = proc.wait()
        self.note(f"# exit {rc} after {time.monotonic() - start:.1f} s")
        return rc, lines
