"""Kernel configuration: a base (tinyconfig, defconfig, ...) plus fragments, merged with the tree's own
scripts/kconfig/merge_config.sh, then checked: every option a fragment asks for must be set as asked.
Kconfig silently drops an option whose dependencies are not met; those are reported by name.

tinyconfig and allnoconfig bases go through `merge_config.sh -n` (allnoconfig with the base's fragments and
ours as KCONFIG_ALLCONFIG): merging into a finished tinyconfig with -m + olddefconfig would turn on the
default-y children of everything the fragments enable (hundreds of options). Other bases are made with
`make <base>` and merged with -m + olddefconfig. Fragment paths are absolute: merge_config.sh runs in the
source tree and a relative path silently yields the bare base.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..catalog import ConfigRecipe
from .cache import sha256_file
from .errors import BuildError
from .run import Runner

ARCH = "x86_64"

# the fragments `make tinyconfig` / `make allnoconfig` use (relative to the source tree)
BASE_FRAGMENTS = {
    "tinyconfig": ("kernel/configs/tiny-base.config", "kernel/configs/tiny.config", "arch/x86/configs/tiny.config"),
    "allnoconfig": (),
}

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """Options of a .config or fragment: name -> value as written ('n' for `# CONFIG_X is not set`)."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = _SET.match(line)
        if m:
            options[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            options[m.group(1)] = "n"
    return options


def requested(fragments: tuple[Path, ...] | list[Path]) -> dict[str, tuple[str, str]]:
    """What the fragments ask for: name -> (value, fragment file name); a later fragment wins."""
    want: dict[str, tuple[str, str]] = {}
    for frag in fragments:
        for name, value in parse_config(frag.read_text()).items():
            want[name] = (value, frag.name)
    return want


def unmet(want: dict[str, tuple[str, str]], final: dict[str, str]) -> list[dict]:
    """The requested options the final .config does not have as asked, in request order."""
    missing = []
    for name, (value, fragment) in want.items():
        actual = final.get(name)
        ok = (actual in (None, "n")) if value == "n" else actual == value
        if not ok:
            missing.append({"option": name, "requested": value, "actual": actual, "fragment": fragment})
    return missing


def recipe_inputs(recipe: ConfigRecipe) -> dict:
    """The config recipe as it enters the kernel's key: base name and each fragment's name and content."""
    return {"base": recipe.base, "fragments": [[f.name, sha256_file(f)] for f in recipe.fragments]}


def commands(tree: Path, build_dir: Path, recipe: ConfigRecipe, make_vars: list[str]) -> list[list[str]]:
    """The argv lists (run in the source tree with ARCH set) that write build_dir/.config from the recipe."""
    frags = [str(f.resolve()) for f in recipe.fragments]
    merge = str(tree / "scripts/kconfig/merge_config.sh")
    if recipe.base in BASE_FRAGMENTS:
        base = [str(tree / f) for f in BASE_FRAGMENTS[recipe.base]]
        return [["sh", merge, "-n", "-O", str(build_dir), *base, *frags]]
    make = ["make", "-C", str(tree), f"O={build_dir}", *make_vars]
    steps = [make + [recipe.base]]
    if frags:
        steps.append(["sh", merge, "-m", "-O", str(build_dir), str(build_dir / ".config"), *frags])
        steps.append(make + ["olddefconfig"])
    return steps


def configure(tree: Path, build_dir: Path, recipe: ConfigRecipe, runner: Runner, make_vars: list[str]) -> list[dict]:
    """Write build_dir/.config from the recipe; return the requested options that did not stick."""
    for frag in recipe.fragments:
        if not frag.is_file():
            raise BuildError(f"config fragment {frag} does not exist")
    for argv in commands(tree, build_dir, recipe, make_vars):
        rc, out = runner.run(argv, cwd=tree, env={"ARCH": ARCH})
        if rc != 0:
            raise BuildError(
                f"configuring ({recipe.base} + {', '.join(f.name for f in recipe.fragments)}) failed",
                [ln for ln in out if "rror" in ln or "***" in ln][-10:] or out[-10:],
            )
    final = parse_config((build_dir / ".config").read_text())
    return unmet(requested(recipe.fragments), final)
