"""Every program the farm and its tests run is on the one list (farm/hostdeps.py), install.sh installs that
list, and it is installed here: a fresh Debian 12 machine must not lack what this one happened to have."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from farm import hostdeps

from .conftest import REPO

CALLS = {"run", "Popen", "check_output", "check_call", "call"}
# argv lists that run inside a guest or are printed for a person, not run on this host
NOT_HOST = {"env": "the test's argv in the guest (env FARM_ATTEMPT=... /opt/farm/tests/x)",
            "farm": "the reproduce command printed in reports"}
ARGV_NAMES = re.compile(r"(argv|cmd|command)$")


def _programs_in(path: Path) -> set[str]:
    """argv[0] of every literal argv list the code hands to subprocess or to the build runner."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        lists = []
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in CALLS and node.args:
                lists.append(node.args[0])
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and ARGV_NAMES.search(t.id)
                                                  for t in node.targets):
            lists.append(node.value)
        for value in lists:
            if isinstance(value, ast.List) and value.elts and isinstance(value.elts[0], ast.Constant) \
                    and isinstance(value.elts[0].value, str):
                prog = value.elts[0].value
                if re.fullmatch(r"[a-z][a-z0-9_.+-]*", prog):
                    found.add(prog)
    return found


def _code_programs() -> set[str]:
    files = [*REPO.glob("farm/**/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("bench/*.py")]
    return set().union(*(_programs_in(f) for f in files))


def test_the_scan_finds_what_the_code_runs():
    found = _code_programs()
    assert {"git", "perl", "tar", "ldd", "pgrep", "ss", "ip", "make"} <= found, found  # the scan itself works


def test_every_program_the_code_runs_is_on_the_list():
    listed = set(hostdeps.FARM) | set(hostdeps.TESTS) | set(hostdeps.LAVA)
    from farm.guest import image
    from farm.vm import boot

    indirect = {boot.QEMU, image.BUSYBOX.name, image.DROPBEAR.name, image.DROPBEARKEY.name, "gcc", "ccache"}
    unlisted = sorted((_code_programs() | indirect) - listed - set(NOT_HOST))
    assert unlisted == [], f"add these to farm/hostdeps.py: {unlisted}"


def test_install_sh_installs_exactly_the_list():
    text = (REPO / "install.sh").read_text()
    assert hostdeps.install_block() in text, "regenerate: python3 farm/hostdeps.py --install-block"
    # Exactly one block, followed directly by the code: a stray copy of package lines after the closing
    # parenthesis runs each line as a command (`git  # ...` printed git's usage and failed CI in 1 s).
    assert text.count("\npackages=(") == 1
    assert hostdeps.install_block().rstrip("\n") + "\nmissing=()" in text
    # No quote character in a comment: a tool that reads the script as shell words without comment handling
    # (a "guest's" in one comment and a "kernel's" in a later one) would see every package between as one
    # quoted word, so the list it checks would silently lose them.
    comments = [m.group(1) for line in text.splitlines()[1:] if (m := re.search(r"(?:^|\s)#(.*)$", line))]
    assert [c for c in comments if "'" in c or '"' in c] == []
    # Nor a parenthesis or backtick in the package block's comments: a reader that takes the block as
    # `packages=( ... )` up to the first closing parenthesis would stop there and lose the rest.
    block = hostdeps.install_block()
    assert [c for c in re.findall(r"#(.*)", block) if set(c) & set("()`")] == []


def test_install_sh_lava_installs_the_lab():
    text = (REPO / "install.sh").read_text()
    lava = text[text.index('if [ "$lava" = 1 ]'):]
    for pkg in {pkg for pkg, _ in hostdeps.LAVA.values()} - {"postgresql-common", "gunicorn"}:
        assert pkg in lava, pkg  # postgresql-common and gunicorn come with postgresql and lava-server


def test_everything_on_the_list_is_installed_here():
    missing = [(prog, pkg) for prog, (pkg, _) in {**hostdeps.FARM, **hostdeps.TESTS}.items()
               if prog != "cc1" and shutil.which(prog) is None]
    assert missing == [], f"run ./install.sh: {missing}"
