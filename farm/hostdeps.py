"""The host programs the farm and its tests run, and the Debian 12 packages that bring them: the one list.

install.sh's package list is generated from it (`python3 farm/hostdeps.py --install-block`; a test keeps
the two the same), `farm doctor` checks that every farm program is there, and a test scans the code for
every program it runs and asserts each is listed. Standard library only: install.sh runs this before the
venv exists.
"""

from __future__ import annotations

import shutil
import sys

# program -> (Debian package, what it is for). Essential packages (coreutils, tar, grep, sed, util-linux,
# mount) are on every Debian install and are listed anyway when the farm runs them, so nothing is assumed.
FARM = {
    "qemu-system-x86_64": ("qemu-system-x86", "the guests"),
    "busybox": ("busybox-static", "userland of the guest"),
    "dropbear": ("dropbear-bin", "SSH server of the guest"),
    "dropbearkey": ("dropbear-bin", "host key of the guest, made at image build"),
    "ldd": ("libc-bin", "libraries of dropbear, copied into the image"),
    "gcc": ("gcc", "kernel builds and static test programs"),
    "cc1": ("gcc", "the compiler proper"),
    "as": ("binutils", "kernel builds"),
    "ld": ("binutils", "kernel builds"),
    "make": ("make", "kernel builds and selftests"),
    "ccache": ("ccache", "kernel builds from a warm cache"),
    "flex": ("flex", "Kconfig of the kernel"),
    "bison": ("bison", "Kconfig of the kernel"),
    "bc": ("bc", "kernel builds: timeconst"),
    "perl": ("perl", "checkpatch.pl and kernel build scripts"),
    "git": ("git", "git sources, git apply/am, worktrees"),
    "tar": ("tar", "unpacking the kernel tarball"),
    "xz": ("xz-utils", "the linux-source tarball is .tar.xz"),
    "cp": ("coreutils", "work trees"),
    "cat": ("coreutils", "booted-guest snapshots: QEMU saves to and restores from exec:cat"),
    "sh": ("dash", "build scripts of the kernel"),
    "bash": ("bash", "scripts/decode_stacktrace.sh: crash frames to file:line"),
    "addr2line": ("binutils", "decode_stacktrace.sh: crash frames to file:line"),
    "python3": ("python3", "the farm itself; install.sh"),
    "ssh": ("openssh-client", "farm shell: an interactive session into a guest"),
    "b4": ("b4", "farm run --series MESSAGE-ID: b4 am"),
}
# packages with no program of their own that the above need (headers, the kernel source, 32-bit libc)
FARM_PACKAGES = {
    "libc6-dev": "static test programs",
    "gcc-multilib": "32-bit test programs and selftests: ia32 paths",
    "libelf-dev": "kernel builds: objtool",
    "libssl-dev": "kernel builds: certificates",
    "linux-source-6.1": "the tree the farm builds and patches",
    "linux-image-cloud-amd64": "the stock kernel",
    "python3-venv": "install.sh makes a venv",
    "python3-dev": "Python packages that compile",
}
# what the test suite runs beside the farm
TESTS = {
    "pgrep": ("procps", "finding the QEMU processes of a run"),
    "ss": ("iproute2", "listening sockets of a live run"),
    "ip": ("iproute2", "farm hosts in network namespaces"),
    "sshd": ("openssh-server", "farm hosts in network namespaces"),
    "ssh-keygen": ("openssh-client", "host keys of the namespace hosts"),
    "chromium": ("chromium", "the report in a headless browser"),
    "tmux": ("tmux", "terminal tests through a real pseudo-terminal"),
    "mount": ("mount", "a full-disk fault on a small tmpfs"),
    "umount": ("mount", "a full-disk fault on a small tmpfs"),
    "id": ("coreutils", "user on the remote hosts"),
    "sleep": ("coreutils", "slow test programs"),
    "true": ("coreutils", "host probes"),
}


# the LAVA lab the LAVA tests start on this machine: opt-in, `./install.sh --lava` installs these
LAVA = {
    "lava-server": ("lava-server", "web service, scheduler and publisher of the lab"),
    "lava-worker": ("lava-dispatcher", "worker of the lab"),
    "lava-run": ("lava-dispatcher", "the dispatcher that runs a job"),
    "gunicorn3": ("gunicorn", "web service of lava-server"),
    "pg_ctlcluster": ("postgresql-common", "database of the lab"),
    "pg_lsclusters": ("postgresql-common", "database of the lab"),
}

# packages the tests need that bring no program of their own on PATH
TEST_PACKAGES = {
    "git-email": "git send-email takes a farm reply message in the reply test",
    "libmailtools-perl": "git send-email dies without Mail::Address",
}


def packages() -> list[str]:
    """Every Debian package install.sh installs, in a stable order."""
    out = ([pkg for pkg, _ in FARM.values()] + list(FARM_PACKAGES) + [pkg for pkg, _ in TESTS.values()]
           + list(TEST_PACKAGES))
    return list(dict.fromkeys(out))


def missing(programs: dict[str, tuple[str, str]] = FARM) -> list[tuple[str, str, str]]:
    """(program, package, what for) for each program not on PATH (cc1 is gcc's, not on PATH)."""
    return [(prog, pkg, why) for prog, (pkg, why) in programs.items()
            if prog != "cc1" and shutil.which(prog) is None]


def install_block() -> str:
    """The `packages=(...)` block of install.sh."""
    lines = ["packages=("]
    for pkg in packages():
        why = next((w for p, w in [*FARM.values(), *TESTS.values()] if p == pkg),
                   FARM_PACKAGES.get(pkg) or TEST_PACKAGES.get(pkg, ""))
        lines.append(f"  {pkg:<24} # {why}")
    lines.append(")")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--install-block"]:
        print(install_block())
    elif sys.argv[1:] == ["--packages"]:
        print("\n".join(packages()))
    else:
        print("usage: hostdeps.py --install-block | --packages", file=sys.stderr)
        sys.exit(2)
