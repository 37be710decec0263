#!/usr/bin/env bash
# Installs whatever is missing for osbuild on Debian 12 (Node 20 present): the Debian
# packages of the tools osbuild and its tests run, the npm packages, the compiled engine,
# and the test agent. Safe to run again: it only does what is not done yet.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the steps run, and what the tests and benchmarks use to check them.
PACKAGES=(
  mmdebstrap uidmap           # Debian/Ubuntu bases (uidmap: --mode=unshare without root)
  e2fsprogs fdisk gdisk       # ext4 images, partition tables (and their checkers)
  fakeroot                    # mke2fs/mkfs.erofs see the layers' owners, devices and xattrs
  xfsprogs erofs-utils        # the other image filesystems
  cryptsetup-bin              # veritysetup for measured rootfs
  kmod                        # depmod for kernel modules
  dracut                      # the dracut build method
  busybox-static              # the boot initrd that mounts a disk image
  cpio pigz zstd xz-utils     # initrds
  attr libcap2-bin            # xattrs (security.capability) on disk
  binutils file               # strip, file
  gcc libc6-dev               # the test agent
  python3                     # independent archive writer in the tests
  qemu-system-x86 qemu-utils linux-image-amd64   # boot tests, and Kata's osbuilder (qemu-img)
  parted makedev python3-yaml # Kata's real osbuilder (../shared/osbuilder/run.sh): tests and benchmarks
  docker-registry skopeo      # a real OCI registry and client for the tests
  apache2-utils               # htpasswd: the registry tests with Basic auth
  ca-certificates time         # /usr/bin/time for the benchmarks
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund
fi

echo "setup: compiling osbuild (when the sources changed)"
npx tsc -b tsconfig.json

if [[ ! -x build/agent/kata-agent || agent/test-agent.c -nt build/agent/kata-agent ]]; then
  echo "setup: building the test agent (build/agent/kata-agent)"
  mkdir -p build/agent
  gcc -static -O2 -Wall -o build/agent/kata-agent agent/test-agent.c
fi
