#!/usr/bin/env bash
# Installs what the farm needs on a Debian 12 host (as root): Debian packages and a venv with the package.
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")"

# --lava: also the LAVA lab the LAVA tests start (tests/lava/lab.py): lava-server, lava-dispatcher, lavacli
# and PostgreSQL, from Debian 12. Opt-in: ~200 packages, ~1.5 min; the default install stays as it was.
lava=0
for arg in "$@"; do
  case "$arg" in
    --lava) lava=1 ;;
    *) echo "install.sh: unknown option '$arg' (known: --lava)" >&2; exit 2 ;;
  esac
done

# generated from farm/hostdeps.py (python3 farm/hostdeps.py --install-block); a test keeps them equal
packages=(
  qemu-system-x86          # the guests
  busybox-static           # userland of the guest
  dropbear-bin             # SSH server of the guest
  libc-bin                 # libraries of dropbear, copied into the image
  gcc                      # kernel builds and static test programs
  binutils                 # kernel builds
  make                     # kernel builds and selftests
  ccache                   # kernel builds from a warm cache
  flex                     # Kconfig of the kernel
  bison                    # Kconfig of the kernel
  bc                       # kernel builds: timeconst
  perl                     # checkpatch.pl and kernel build scripts
  git                      # git sources, git apply/am, worktrees
  tar                      # unpacking the kernel tarball
  xz-utils                 # the linux-source tarball is .tar.xz
  coreutils                # work trees
  dash                     # build scripts of the kernel
  bash                     # scripts/decode_stacktrace.sh: crash frames to file:line
  python3                  # the farm itself; install.sh
  openssh-client           # farm shell: an interactive session into a guest
  b4                       # farm run --series MESSAGE-ID: b4 am
  libc6-dev                # static test programs
  gcc-multilib             # 32-bit test programs and selftests: ia32 paths
  libelf-dev               # kernel builds: objtool
  libssl-dev               # kernel builds: certificates
  linux-source-6.1         # the tree the farm builds and patches
  linux-image-cloud-amd64  # the stock kernel
  python3-venv             # install.sh makes a venv
  python3-dev              # Python packages that compile
  procps                   # finding the QEMU processes of a run
  iproute2                 # listening sockets of a live run
  openssh-server           # farm hosts in network namespaces
  chromium                 # the report in a headless browser
  tmux                     # terminal tests through a real pseudo-terminal
  mount                    # a full-disk fault on a small tmpfs
  git-email                # git send-email takes a farm reply message in the reply test
  libmailtools-perl        # git send-email dies without Mail::Address
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$lava" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  lava_packages=(lava-server lava-dispatcher lavacli)
  lava_missing=()
  for p in postgresql "${lava_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || lava_missing+=("$p")
  done
  if [ ${#lava_missing[@]} -gt 0 ]; then
    echo "install.sh: installing ${lava_missing[*]} (the LAVA lab)" >&2
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # The postinst of lava-server creates its database: PostgreSQL must run now. Without systemd nothing started
    # it, so start every cluster that is down, and stop again those started here (the lab starts its own).
    started=()
    while read -r version name _port status _rest; do
      if [ "$status" != online ]; then
        pg_ctlcluster "$version" "$name" start
        started+=("$version/$name")
      fi
    done < <(pg_lsclusters --no-header)
    apt-get install -y -qq --no-install-recommends "${lava_packages[@]}" >/dev/null
    for c in "${started[@]}"; do
      pg_ctlcluster "${c%/*}" "${c#*/}" stop
    done
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
echo "install.sh: ready; the farm is .venv/bin/farm" >&2
