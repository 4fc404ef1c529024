"""The one error a kernel build raises."""

from __future__ import annotations

from pathlib import Path

from ..errors import FarmError


class BuildError(FarmError):
    """A kernel could not be built: a patch does not apply, a config step failed, a compile error.

    `lines` are the lines that explain it (compiler errors, git's messages, the failing hunk);
    `log_path` the full build log, if one was written; `patch` the patch file at fault, if any;
    `kernel_fault` whether the kernel's own inputs are at fault (a patch that does not apply, a compile
    error: the series does not build) rather than the machinery (an unpacking or worktree failure).
    """

    def __init__(
        self,
        message: str,
        lines: list[str] | None = None,
        log_path: Path | None = None,
        patch: Path | None = None,
        kernel_fault: bool | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.lines = list(lines or [])
        self.log_path = log_path
        self.patch = patch
        self.kernel_fault = patch is not None if kernel_fault is None else kernel_fault

    def __str__(self) -> str:
        return self.message  # one line; callers print .lines and .log_path as they see fit
