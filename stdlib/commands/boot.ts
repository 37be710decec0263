// `osbuild boot TARGET`: boots an initrd or a disk image of the config (or any such file)
// in QEMU with the machine's kernel, console on stdout, and succeeds when --expect appears.
// A guest of another architecture (the config's arch, --arch, or what --kernel is for) boots
// in that architecture's QEMU under emulation, with a kernel given by --kernel.

import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { ConfigError, machineArch, parseArch, type Arch, type CommandContext, type CommandSpec } from "../../engine/index.js";
import { addKernelModules } from "../add-kernel-modules.js";
import { fetchBase } from "../fetch-base.js";
import { mkCpio } from "../mk-cpio.js";
import { compressionOf } from "../../formats/compression.js";
import { parseMbr } from "../../formats/mbr.js";
import { elfArchitecture, parseElfHeader } from "../../formats/elf.js";
import { KERNEL_HEADER_BYTES, kernelImageArchitecture } from "../../formats/kernel-image.js";
import { ociArchitecture } from "../../formats/oci.js";
import { NVDIMM_MODULES, bootModules, writeBootTree } from "../boot/boot-initrd.js";
import { extensionKernelParam, hasHashPartition, MAX_EXTENSIONS, parseExtensionOption, readVerityParams } from "../boot/extensions.js";
import { QEMU_MACHINES, runQemu, type QemuBoot } from "../boot/qemu.js";

/** What `osbuild boot` does; its name and options are in ./index.ts. */
export const boot: Pick<CommandSpec, "run"> = {
  async run(args, options, ctx) {
    if (args.length !== 1) throw new ConfigError("boot needs one target name or file: osbuild boot TARGET");
    const wantedArch = options.arch === undefined ? undefined : parseArch(String(options.arch), "--arch");
    const artifact = await artifactOf(args[0]!, ctx);
    const kernel = findKernel(options.kernel as string | undefined, wantedArch ?? artifact.arch);
    const arch = wantedArch ?? artifact.arch ?? kernel.arch ?? machineArch();
    if (kernel.arch !== undefined && kernel.arch !== arch) {
      throw new ConfigError(`the kernel ${kernel.path} is for ${kernel.arch}, but the guest is for ${arch}`, undefined, `pass --kernel with a ${arch} kernel${wantedArch ? "" : `, or --arch ${kernel.arch} if the guest is for that`}`);
    }
    const machine = QEMU_MACHINES[arch];
    if (!machine) throw new ConfigError(`osbuild boot cannot boot ${arch} guests yet`, undefined, `it boots ${Object.keys(QEMU_MACHINES).join(", ")}`);
    const file = artifact.path;
    const timeoutMs = Number(options.timeout ?? 180) * 1000;
    if (!(timeoutMs > 0)) throw new ConfigError(`--timeout ${String(options.timeout)}: expected seconds`);
    const memoryMiB = Number(options.memory ?? 1024);
    const expect = options.expect as string | undefined;
    const requested = (options.extension as string[] | undefined) ?? [];
    if (requested.length > MAX_EXTENSIONS) throw new ConfigError(`--extension: at most ${MAX_EXTENSIONS} extension images, got ${requested.length}`);
    const extensions = await Promise.all(requested.map((value) => attachExtension(value, ctx)));
    const extra = [(options.append as string | undefined) ?? "", ...extensions.map((extension) => extension.kernelParam)].filter(Boolean).join(" ");
    const kind = detectKind(file);
    const consoleArgs = `console=${machine.kernelConsole} panic=-1`;

    let boot: QemuBoot;
    const base = { arch, kernel: kernel.path, memoryMiB, timeoutMs, expect, extensions, onOutput: (text: string) => void process.stdout.write(text) };
    if (kind === "initrd") {
      boot = { ...base, initrd: file, append: `${consoleArgs} ${extra}`.trim(), accel: await accel(options.accel, ctx, arch, kernel, file) };
    } else {
      const nvdimm = options.nvdimm === true;
      if (nvdimm && !machine.nvdimm) throw new ConfigError(`--nvdimm: a ${arch} guest cannot be given the image as an NVDIMM here`, undefined, `boot it without --nvdimm (through ${machine.diskDevice})`);
      const bootInitrd = await buildBootInitrd(ctx, arch, kernel, options.modules as string | undefined);
      const fstype = filesystemOf(file);
      // crc32c first: ext4, xfs and erofs need it through softdeps, which busybox modprobe ignores.
      const modules = [...(nvdimm ? NVDIMM_MODULES : machine.diskModules), "crc32c_generic", fstype];
      // Extensions are erofs on dm-verity, on virtio-blk whatever the root is on (Kata's guest kernels have these built in).
      if (extensions.length > 0) modules.push(...[...machine.diskModules, "dm_verity", "erofs"].filter((name) => !modules.includes(name)));
      const append = [
        consoleArgs,
        `osbuild.root=${nvdimm ? "/dev/pmem0p1" : "/dev/vda1"}`,
        `osbuild.fstype=${fstype}`,
        `osbuild.flags=${nvdimm ? "ro,dax" : "ro"}`,
        bootInitrd.hasModules ? `osbuild.modules=${modules.join(",")}` : "",
        extra,
      ].filter(Boolean).join(" ");
      boot = {
        ...base,
        initrd: bootInitrd.path,
        append,
        ...(nvdimm ? { nvdimm: { path: file, bytes: statSync(file).size } } : { disk: file }),
        accel: await accel(options.accel, ctx, arch, kernel, bootInitrd.path),
      };
    }
    ctx.log(`booting ${file} (${kind}, ${arch}) with ${kernel.path} in ${machine.binary} on ${boot.accel}${expect ? `, waiting for "${expect}"` : ""}`);
    const result = await runQemu(boot);
    if (result.ok) {
      if (expect) ctx.log(`\nosbuild boot: found "${expect}"`);
      return 0;
    }
    if (result.timedOut) ctx.log(`\nosbuild boot: timed out after ${timeoutMs / 1000} s${expect ? ` without "${expect}"` : ""}`);
    else ctx.log(`\nosbuild boot: the guest stopped (qemu exit ${result.exitCode})${expect ? ` without printing "${expect}"` : ""}`);
    return 1;
  },
};

/** --extension NAME=IMAGE[,VERITY_PARAMS]: the image and the kernel parameter the runtime adds for it. */
async function attachExtension(value: string, ctx: CommandContext): Promise<{ name: string; path: string; kernelParam: string }> {
  const request = parseExtensionOption(value);
  const { path } = await artifactOf(request.image, ctx);
  const params = request.verityParams === undefined ? undefined : readVerityParams((await artifactOf(request.verityParams, ctx)).path);
  if (params === undefined && hasHashPartition(path)) {
    ctx.log(`warning: extension ${request.name} has a dm-verity hash partition but no verity params: Kata's mount script will refuse it (give NAME=IMAGE,VERITY_PARAMS)`);
  }
  return { name: request.name, path, kernelParam: extensionKernelParam(request.name, params) };
}

/** A target of the config is built first (for the architecture it builds for); anything else must be a file. */
async function artifactOf(name: string, ctx: CommandContext): Promise<{ path: string; arch: Arch | undefined }> {
  if (existsSync(name) && statSync(name).isFile()) return { path: resolve(name), arch: undefined };
  const targets = await ctx.targetNames();
  if (!targets.includes(name)) throw new ConfigError(`'${name}' is neither a file nor a target of the config`, undefined, `targets: ${targets.join(", ")}`);
  const built = await ctx.build([name]);
  if (!built.ok || !built.outputs[name]) throw new ConfigError(`building '${name}' failed: nothing to boot`);
  if (!statSync(built.outputs[name]!).isFile()) throw new ConfigError(`target '${name}' is a rootfs: boot an initrd or a disk image made from it`);
  return { path: built.outputs[name]!, arch: built.arch };
}

interface Kernel {
  path: string;
  version: string | undefined;
  /** What its image header says, when osbuild can tell. */
  arch: Arch | undefined;
  /** The tree it belongs to ("/" for /boot, DIR for DIR/boot/vmlinuz-*): where its modules and a busybox are. */
  root: string | undefined;
}

/**
 * The kernel to boot: --kernel's file, or the newest DIR/boot/vmlinuz-* when it names a
 * directory (a Debian kernel package unpacked, with busybox-static beside it); without it,
 * the machine's newest /boot/vmlinuz-* for its own architecture.
 */
function findKernel(given: string | undefined, arch: Arch | undefined): Kernel {
  const host = machineArch();
  if (given) {
    if (!existsSync(given)) throw new ConfigError(`kernel ${given} does not exist`);
    if (statSync(given).isDirectory()) {
      const dir = resolve(given);
      const boot = existsSync(join(dir, "boot")) ? join(dir, "boot") : dir;
      const newest = newestKernel(boot);
      if (!newest) throw new ConfigError(`no vmlinuz-* in ${boot}`, undefined, "give the kernel file, or a directory holding boot/vmlinuz-<version> (a linux-image .deb unpacked with dpkg-deb -x)");
      return kernelAt(join(boot, newest), dir);
    }
    const path = resolve(given);
    return kernelAt(path, basename(dirname(path)) === "boot" ? dirname(dirname(path)) : undefined);
  }
  if (arch !== undefined && arch !== host) {
    const debian = ociArchitecture(arch);
    throw new ConfigError(
      `no ${arch} kernel given: booting a ${arch} guest needs --kernel, a ${arch} kernel (and, for a disk image, its modules and busybox)`,
      undefined,
      `fetch Debian's, as scripts/setup.sh does into build/guest-kernels/${arch}:\n` +
        `    dpkg --add-architecture ${debian} && apt-get update\n` +
        `    apt-get download $(apt-cache depends linux-image-${debian}:${debian} | sed -n 's/.*Depends: //p') busybox-static:${debian}\n` +
        `    for deb in *_${debian}.deb; do dpkg-deb -x "$deb" DIR; done; depmod -b DIR $(ls DIR/lib/modules)\n` +
        `  then: osbuild boot ... --arch ${arch} --kernel DIR`,
    );
  }
  const newest = newestKernel("/boot");
  if (!newest) throw new ConfigError("no kernel in /boot", undefined, "install the Debian package linux-image-amd64, or pass --kernel PATH");
  return kernelAt(join("/boot", newest), "/");
}

function newestKernel(dir: string): string | undefined {
  const candidates = existsSync(dir) ? readdirSync(dir).filter((name) => name.startsWith("vmlinuz-")).sort(compareVersions) : [];
  return candidates[candidates.length - 1];
}

function kernelAt(path: string, root: string | undefined): Kernel {
  let head: Buffer;
  try {
    head = readHead(path, KERNEL_HEADER_BYTES);
  } catch {
    throw new ConfigError(`cannot read ${path}`, undefined, `run as root, or make it readable (chmod 0644 ${path}), or pass --kernel PATH`);
  }
  return { path, version: /vmlinuz-(.+)$/.exec(path)?.[1], arch: kernelImageArchitecture(head), root };
}

function readHead(file: string, bytes: number): Buffer {
  const head = Buffer.alloc(bytes);
  const fd = openSync(file, "r");
  try {
    return head.subarray(0, readSync(fd, head, 0, bytes, 0));
  } finally {
    closeSync(fd);
  }
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true });
}

function detectKind(file: string): "initrd" | "disk" {
  const head = Buffer.alloc(512);
  const fd = openSync(file, "r");
  try {
    readSync(fd, head, 0, 512, 0);
  } finally {
    closeSync(fd);
  }
  const magic = head.subarray(0, 6).toString("latin1");
  if (["gzip", "zstd", "xz"].includes(compressionOf(head)) || magic === "070701") return "initrd";
  if (head[510] === 0x55 && head[511] === 0xaa) return "disk";
  throw new ConfigError(`${file} is neither an initrd (gzip, zstd, xz or cpio) nor a partitioned disk image`);
}

/** The filesystem in the image's first partition, from its superblock magic. */
function filesystemOf(image: string): "ext4" | "erofs" | "xfs" {
  const fd = openSync(image, "r");
  try {
    const sector = Buffer.alloc(512);
    readSync(fd, sector, 0, 512, 0);
    const first = parseMbr(sector).partitions[0];
    const offset = (first?.startLba ?? 2048) * 512;
    const probe = Buffer.alloc(2048);
    readSync(fd, probe, 0, 2048, offset);
    if (probe.readUInt16LE(1024 + 56) === 0xef53) return "ext4";
    if (probe.readUInt32LE(1024) === 0xe0f5e1e2) return "erofs";
    if (probe.subarray(0, 4).toString("latin1") === "XFSB") return "xfs";
  } finally {
    closeSync(fd);
  }
  throw new ConfigError(`no ext4, erofs or xfs filesystem found in the first partition of ${image}`);
}

/**
 * The boot initrd for this kernel: a busybox of the guest's architecture, the kernel's
 * modules (if it has its drivers as modules), an /init. Built for `arch`, so that its steps
 * check the busybox and the modules against it.
 */
async function buildBootInitrd(ctx: CommandContext, arch: Arch, kernel: Kernel, modulesDir: string | undefined): Promise<{ path: string; hasModules: boolean }> {
  const tree = writeBootTree(join(ctx.cacheDir, "commands"), bootBusybox(arch, kernel));
  const from = modulesDir ?? join(kernel.root ?? "/", "lib/modules");
  const hasModules = kernel.version !== undefined && existsSync(join(from, kernel.version, "modules.dep"));
  const modules = bootModules(QEMU_MACHINES[arch]!);
  const result = await ctx.buildArtifacts(
    `boot-initrd-${arch}-${kernel.version ?? "custom"}`,
    () => {
      const base = fetchBase({ directory: tree });
      const rootfs = hasModules ? addKernelModules(base, { from, kernelVersion: kernel.version!, modules }) : base;
      return { initrd: mkCpio(rootfs, { compression: "gzip", level: 6, initLink: false, checks: false }) };
    },
    { arch },
  );
  if (!result.ok) throw new ConfigError("building the boot initrd failed (see above)");
  return { path: result.outputs.initrd!, hasModules };
}

/**
 * The busybox of the boot initrd: the kernel tree's (DIR/bin/busybox, from Debian's
 * busybox-static of that architecture), else the machine's own when the guest is of its
 * architecture. It must run in the guest, so its ELF machine is checked.
 */
function bootBusybox(arch: Arch, kernel: Kernel): string {
  const roots = [...(kernel.root && kernel.root !== "/" ? [kernel.root] : []), ...(arch === machineArch() ? ["/"] : [])];
  const candidates = roots.flatMap((root) => ["bin/busybox", "usr/bin/busybox"].map((path) => join(root, path)));
  const found = candidates.find((path) => existsSync(path));
  if (!found) {
    const debian = ociArchitecture(arch);
    throw new ConfigError(
      `booting a disk image needs a busybox for ${arch} in its boot initrd, and none is ${kernel.root ? `in ${kernel.root}` : "beside the kernel"}`,
      undefined,
      arch === machineArch()
        ? "install the Debian package busybox-static"
        : `unpack Debian's busybox-static:${debian} beside the kernel (apt-get download busybox-static:${debian} && dpkg-deb -x busybox-static_*_${debian}.deb DIR) and pass --kernel DIR`,
    );
  }
  const elf = parseElfHeader(readHead(found, 64));
  const busyboxArch = elf ? elfArchitecture(elf) : undefined;
  if (busyboxArch !== arch) throw new ConfigError(`${found} is ${busyboxArch ? `for ${busyboxArch}` : "not an ELF program"}, and the boot initrd of a ${arch} guest needs a ${arch} busybox`, undefined, "pass --kernel DIR where DIR/bin/busybox is Debian's busybox-static of that architecture");
  return found;
}

/** KVM when it works here (only for a guest of the machine's own architecture), remembered per kernel and QEMU; TCG otherwise. */
async function accel(wanted: unknown, ctx: CommandContext, arch: Arch, kernel: Kernel, initrd: string): Promise<"tcg" | "kvm"> {
  if (wanted === "tcg" || wanted === "kvm") return wanted;
  if (wanted !== undefined && wanted !== "auto") throw new ConfigError(`--accel ${String(wanted)}: expected tcg, kvm or auto`);
  if (arch !== machineArch() || !existsSync("/dev/kvm")) return "tcg";
  const memo = join(ctx.cacheDir, "memo", "kvm.json");
  const key = `${readFileSync("/proc/sys/kernel/osrelease", "utf8").trim()} ${kernel.path}`;
  let known: Record<string, boolean> = {};
  try {
    known = JSON.parse(readFileSync(memo, "utf8")) as Record<string, boolean>;
  } catch {
    /* first time */
  }
  if (known[key] === undefined) {
    // A guest that cannot run under KVM here hangs rather than failing: give it a few seconds.
    const append = `console=${QEMU_MACHINES[arch]!.kernelConsole} panic=-1 osbuild.probe`;
    const probe = await runQemu({ arch, kernel: kernel.path, initrd, append, memoryMiB: 256, accel: "kvm", timeoutMs: 8000, expect: "osbuild-boot: probe ok" });
    known[key] = probe.ok;
    writeFileSync(memo, JSON.stringify(known));
    ctx.log(`KVM ${probe.ok ? "works" : "does not run guests"} here: booting with ${probe.ok ? "kvm" : "tcg"}`);
  }
  return known[key] ? "kvm" : "tcg";
}
