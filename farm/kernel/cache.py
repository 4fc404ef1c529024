"""The content-addressed kernel cache and the digests it is keyed by.

A kernel's key is the sha256 of: the source digest, each patch's sha256, the config recipe (base name and
each fragment's content), the compiler (`gcc --version`), the rest of the toolchain (`ld --version`,
`make --version`), the farm's own build recipe (build.recipe(): environment, compiler command, make
arguments, recipe version), the image path and this layout's version.
A key that is in the cache is returned without running make. Layout under paths.cache_root():

  kernels/<key>/<image name>, metadata.json, build.log   finished kernels (written atomically)
  kernels/.locks/<key>.lock                              one builder per key at a time
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .. import paths

LAYOUT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digest_json(obj) -> str:
    return sha256_text(json.dumps(obj, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=4)
def compiler_version(cc: str = "gcc") -> str:
    """The full `gcc --version` text (its first line names the version)."""
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        from .errors import BuildError

        raise BuildError(f"cannot run the compiler '{cc} --version': {e}") from None
    return out.strip()


TOOLS = {"ld": ["ld", "--version"], "make": ["make", "--version"]}


@lru_cache(maxsize=1)
def toolchain() -> dict[str, str]:
    """The first line of each build tool's version (gcc is `compiler`): binutils' ld and make."""
    out = {}
    for name, argv in TOOLS.items():
        try:
            text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            from .errors import BuildError

            raise BuildError(f"cannot run '{' '.join(argv)}': {e}") from None
        out[name] = (text.strip().splitlines() or [""])[0]
    return out


def kernel_key(
    source_digest: str,
    patch_digests: list[str],
    config_inputs: dict,
    compiler: str,
    image: str,
    tools: dict | None = None,
    recipe: dict | None = None,
) -> tuple[str, dict]:
    """The content key of a kernel and the inputs it was computed from (recorded in metadata.json)."""
    inputs = {
        "layout": LAYOUT_VERSION,
        "source": source_digest,
        "patches": list(patch_digests),
        "config": config_inputs,
        "compiler": compiler,
        "toolchain": dict(tools or {}),
        "recipe": dict(recipe or {}),
        "image": image,
    }
    return digest_json(inputs), inputs


def root() -> Path:
    """paths.cache_root(), absolute (make runs with -C and O=, so relative paths would break)."""
    return paths.cache_root().resolve()


def kernels_root() -> Path:
    return root() / "kernels"


def entry_dir(key: str) -> Path:
    return kernels_root() / key


def lookup(key: str, image_name: str) -> Path | None:
    """The cache folder of key if it holds a finished kernel, else None."""
    folder = entry_dir(key)
    if (folder / "metadata.json").is_file() and (folder / image_name).is_file():
        return folder
    return None


def load_metadata(key: str) -> dict | None:
    try:
        return json.loads((entry_dir(key) / "metadata.json").read_text())
    except (OSError, ValueError):
        return None


def store(
    key: str, image: Path, image_name: str, metadata: dict, log_path: Path, extra: dict[str, Path] | None = None
) -> Path:
    """Copy a finished kernel into the cache; the entry appears whole or not at all."""
    root = kernels_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=root))
    try:
        shutil.copy2(image, tmp / image_name)
        if log_path.is_file():
            shutil.copyfile(log_path, tmp / "build.log")
        for name, path in (extra or {}).items():
            if path.is_file():
                shutil.copyfile(path, tmp / name)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        final = entry_dir(key)
        if final.exists() and lookup(key, image_name) is None:
            shutil.rmtree(final)  # a damaged entry (no image or no metadata): replace it
        if final.exists():  # someone else finished the same key first: theirs is as good
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive fcntl.flock on path (created if needed), held for the with-block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def key_lock(key: str) -> Path:
    return kernels_root() / ".locks" / f"{key}.lock"
