"""Where things live: the data folders of the checkout and the farm's cache."""

import os
from pathlib import Path


def data_root() -> Path:
    """The folder holding cpumodels/, kernels/, guests/ and jobs/ (FARM_ROOT, else the checkout)."""
    env = os.environ.get("FARM_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "cpumodels").is_dir():
        return here
    return Path.cwd()


def cache_root() -> Path:
    """Build products that are keyed by content: guest images, kernels, ccache, unpacked sources."""
    env = os.environ.get("FARM_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "farm"
