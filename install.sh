#!/usr/bin/env bash
# Installs what the farm needs on a Debian 12 host (as root): Debian packages and a venv with the package.
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")"

packages=(
  qemu-system-x86 qemu-utils          # the guests
  busybox-static dropbear-bin cpio    # the guest image
  linux-image-cloud-amd64             # the stock kernel
  linux-source-6.1                    # the tree the farm builds and patches
  gcc make libc6-dev ccache flex bison bc libelf-dev libssl-dev xz-utils git   # kernel and test builds
  python3 python3-venv python3-dev
  chromium                            # the report's browser test
  openssh-server iproute2             # farm hosts in tests: network namespaces running sshd
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

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
echo "install.sh: ready; the farm is .venv/bin/farm" >&2
