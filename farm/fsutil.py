"""Files the farm writes and hashes: atomic replacement, content digests, private folders.

One copy of each, used by the cache, the guest images, the run record and the reports.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

PRIVATE_DIR = 0o700  # cache folders: they hold the farm's SSH key and images carrying a guest's host key
PRIVATE_FILE = 0o600


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> Path:
    """Replace `path` whole: a reader sees the old content or the new, never half of it.

    `mode` sets the permission bits before the file appears under its name (0600 for key-bearing files)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        if mode is not None:
            os.chmod(tmp, mode)  # the umask may have narrowed or the file existed with other bits
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def file_digest(path: Path) -> str:
    """sha256 of a file's content, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_MEMO: dict[tuple[str, int, int, int], str] = {}
_MEMO_LOCK = threading.Lock()


def file_digest_cached(path: Path) -> str:
    """file_digest, remembered in this process by (path, size, mtime, inode): a kernel image hashed
    once per run, however many cells boot it."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    digest = file_digest(path)
    with _MEMO_LOCK:
        _MEMO[key] = digest
    return digest


def text_digest(*parts: bytes | str) -> str:
    """sha256 over parts, each followed by NUL (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def private_dir(path: Path) -> Path:
    """A folder (and its missing parents) readable by this user only."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path
