// The small initrd `osbuild boot` uses to start a disk image with a kernel whose disk and
// filesystem drivers are modules (Debian's): busybox loads them, mounts the image's root
// read-only and switches to its /sbin/init. Kata's own guest kernels have these drivers
// built in and boot the image directly.

import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { QemuMachine } from "./qemu.js";

/** What Debian's kernel needs to see a disk image attached as an NVDIMM (x86). */
export const NVDIMM_MODULES = ["libnvdimm", "nfit", "nd_btt", "nd_pmem"];

/** Modules that may be needed on that machine, loaded per boot as osbuild.modules= says. */
export function bootModules(machine: Pick<QemuMachine, "diskModules" | "nvdimm">): string[] {
  return [...machine.diskModules, "crc32c_generic", "ext4", "erofs", "xfs", "dm_verity", ...(machine.nvdimm ? NVDIMM_MODULES : [])];
}

const APPLETS = ["sh", "mount", "umount", "modprobe", "insmod", "sleep", "cat", "echo", "mkdir", "ls", "switch_root", "poweroff", "tr", "dmesg"];

const INIT_SCRIPT = `#!/bin/sh
# osbuild boot: load what the disk needs, mount it read-only, hand over to its init.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
root= fstype=ext4 flags=ro modules= probe=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    osbuild.root=*) root=\${arg#*=} ;;
    osbuild.fstype=*) fstype=\${arg#*=} ;;
    osbuild.flags=*) flags=\${arg#*=} ;;
    osbuild.modules=*) modules=$(echo "\${arg#*=}" | tr , ' ') ;;
    osbuild.probe) probe=yes ;;
  esac
done
if [ -n "$probe" ]; then echo "osbuild-boot: probe ok"; poweroff -f; fi
for module in $modules; do modprobe "$module" || echo "osbuild-boot: cannot load $module"; done
tries=0
while [ ! -b "$root" ] && [ $tries -lt 200 ]; do sleep 0.1; tries=$((tries + 1)); done
if [ ! -b "$root" ]; then echo "osbuild-boot: $root did not appear"; ls /dev; poweroff -f; fi
mkdir -p /newroot
if ! mount -t "$fstype" -o "$flags" "$root" /newroot; then echo "osbuild-boot: cannot mount $root ($fstype, $flags)"; dmesg | tail -20; poweroff -f; fi
echo "osbuild-boot: mounted $root ($fstype, $flags), starting /sbin/init"
mount --move /dev /newroot/dev 2>/dev/null || true
umount /proc /sys
exec switch_root /newroot /sbin/init
`;

/** Writes the boot initrd's base tree (busybox and the init script) under `dir`, content-addressed. */
export function writeBootTree(dir: string, busybox = "/bin/busybox"): string {
  if (!existsSync(busybox)) throw new Error(`${busybox} not found: install the Debian package busybox-static`);
  const id = createHash("sha256").update(INIT_SCRIPT).update(APPLETS.join(" ")).update(readFileSync(busybox)).digest("hex").slice(0, 16);
  const tree = join(dir, `boot-tree-${id}`);
  if (existsSync(tree)) return tree;
  const temp = `${tree}.${process.pid}.tmp`;
  rmSync(temp, { recursive: true, force: true });
  for (const sub of ["bin", "dev", "proc", "sys", "newroot", "lib/modules"]) mkdirSync(join(temp, sub), { recursive: true });
  copyFileSync(busybox, join(temp, "bin/busybox"));
  chmodSync(join(temp, "bin/busybox"), 0o755);
  for (const applet of APPLETS) symlinkSync("busybox", join(temp, "bin", applet));
  writeFileSync(join(temp, "init"), INIT_SCRIPT, { mode: 0o755 });
  chmodSync(join(temp, "init"), 0o755);
  try {
    renameSync(temp, tree);
  } catch {
    rmSync(temp, { recursive: true, force: true }); // another process made it first
  }
  return tree;
}
