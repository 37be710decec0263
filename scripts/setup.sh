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
  cpio pigz zstd xz-utils libdeflate-tools   # initrds (libdeflate-gzip: the gzip members)
  attr libcap2-bin            # xattrs (security.capability) on disk
  binutils file               # strip, file
  gcc libc6-dev               # the test agent
  python3                     # independent archive writer in the tests
  qemu-system-x86 qemu-utils linux-image-amd64   # boot tests, and Kata's osbuilder (qemu-img)
  parted makedev python3-yaml # Kata's real osbuilder (../shared/osbuilder/run.sh): tests and benchmarks
  docker-registry skopeo      # a real OCI registry and client for the tests
  apache2-utils               # htpasswd: the registry tests with Basic auth
  ca-certificates time         # /usr/bin/time for the benchmarks
  # Guests of other architectures, built and booted here:
  qemu-user-static binfmt-support arch-test   # their programs run through QEMU (foreign bases, run)
  qemu-system-arm qemu-system-misc            # boot arm64 and s390x guests
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu   # the test agent for arm64, its strip
  gcc-s390x-linux-gnu libc6-dev-s390x-cross binutils-s390x-linux-gnu       # and for s390x
)

# Architectures whose guests the tests build and boot, with Debian's name for each.
declare -A FOREIGN_ARCHES=([aarch64]=arm64 [s390x]=s390x)

sudo=""
if ((EUID != 0)); then sudo=sudo; fi

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [[ -n $sudo ]]; then command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }; fi
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

# Other architectures' programs run here through QEMU's user-mode emulators, registered
# with binfmt_misc (Debian's qemu-user-static handlers carry the F flag, so they work in a
# chroot). Registering needs root; it lasts until the machine reboots.
binfmt=/proc/sys/fs/binfmt_misc
for arch in "${!FOREIGN_ARCHES[@]}"; do
  [[ $(uname -m) == "$arch" ]] && continue
  if [[ ! -e $binfmt/status ]]; then
    echo "setup: mounting binfmt_misc"
    $sudo mount -t binfmt_misc binfmt_misc "$binfmt"
  fi
  if ! grep -qx enabled "$binfmt/qemu-$arch" 2>/dev/null; then
    echo "setup: registering the qemu-$arch binfmt handler"
    $sudo update-binfmts --enable "qemu-$arch"
  fi
done

# Guest kernels of those architectures, for osbuild boot: Debian's kernel package and
# busybox-static of each, unpacked (never installed) into build/guest-kernels/ARCH, with
# modules.dep made as the package's postinst would (osbuild boot --kernel build/guest-kernels/ARCH).
for arch in "${!FOREIGN_ARCHES[@]}"; do
  debian=${FOREIGN_ARCHES[$arch]}
  dir=build/guest-kernels/$arch
  [[ -f $dir/.complete ]] && continue
  echo "setup: fetching Debian's $debian kernel and busybox-static into $dir"
  if ! dpkg --print-foreign-architectures | grep -qx "$debian" && [[ $(dpkg --print-architecture) != "$debian" ]]; then
    $sudo dpkg --add-architecture "$debian"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  fi
  kernel=$(apt-cache depends "linux-image-$debian:$debian" | sed -n 's/^ *Depends: //p' | head -n 1)
  [[ -n $kernel ]] || { echo "setup: apt knows no linux-image-$debian:$debian (apt-get update?)" >&2; exit 1; }
  work=$(mktemp -d)
  chmod 755 "$work" # apt downloads as its sandbox user _apt
  (cd "$work" && apt-get download -q "$kernel" "busybox-static:$debian")
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dir.tmp"; done
  rm -rf "$work"
  version=$(ls "$dir.tmp/lib/modules")
  depmod -b "$dir.tmp" "$version"
  touch "$dir.tmp/.complete"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
done

# The test agent for each of them, cross-compiled and static (build/agent/ARCH/kata-agent).
for arch in "${!FOREIGN_ARCHES[@]}"; do
  agent=build/agent/$arch/kata-agent
  if [[ ! -x $agent || agent/test-agent.c -nt $agent ]]; then
    echo "setup: building the $arch test agent ($agent)"
    mkdir -p "build/agent/$arch"
    "$arch-linux-gnu-gcc" -static -O2 -Wall -o "$agent" agent/test-agent.c
  fi
done
