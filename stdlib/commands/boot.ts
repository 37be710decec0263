// `osbuild boot TARGET`: boots an initrd or a disk image of the config (or any such file)
// in QEMU with the machine's kernel, console on stdout, and succeeds when --expect appears.

import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ConfigError, type CommandContext, type CommandSpec } from "../../engine/index.js";
import { addKernelModules } from "../add-kernel-modules.js";
import { fetchBase } from "../fetch-base.js";
import { mkCpio } from "../mk-cpio.js";
import { compressionOf } from "../../formats/compression.js";
import { parseMbr } from "../../formats/mbr.js";
import { BOOT_MODULES, writeBootTree } from "../boot/boot-initrd.js";
import { extensionKernelParam, hasHashPartition, MAX_EXTENSIONS, parseExtensionOption, readVerityParams } from "../boot/extensions.js";
import { runQemu, type QemuBoot } from "../boot/qemu.js";

/** What `osbuild boot` does; its name and options are in ./index.ts. */
export const boot: Pick<CommandSpec, "run"> = {
  async run(args, options, ctx) {
    if (args.length !== 1) throw new ConfigError("boot needs one target name or file: osbuild boot TARGET");
    const file = await artifactPath(args[0]!, ctx);
    const kernel = findKernel(options.kernel as string | undefined);
    const timeoutMs = Number(options.timeout ?? 180) * 1000;
    if (!(timeoutMs > 0)) throw new ConfigError(`--timeout ${String(options.timeout)}: expected seconds`);
    const memoryMiB = Number(options.memory ?? 1024);
    const expect = options.expect as string | undefined;
    const requested = (options.extension as string[] | undefined) ?? [];
    if (requested.length > MAX_EXTENSIONS) throw new ConfigError(`--extension: at most ${MAX_EXTENSIONS} extension images, got ${requested.length}`);
    const extensions = await Promise.all(requested.map((value) => attachExtension(value, ctx)));
    const extra = [(options.append as string | undefined) ?? "", ...extensions.map((extension) => extension.kernelParam)].filter(Boolean).join(" ");
    const kind = detectKind(file);

    let boot: QemuBoot;
    const base = { kernel: kernel.path, memoryMiB, timeoutMs, expect, extensions, onOutput: (text: string) => void process.stdout.write(text) };
    if (kind === "initrd") {
      boot = { ...base, initrd: file, append: `console=ttyS0 panic=-1 ${extra}`.trim(), accel: await accel(options.accel, ctx, kernel, file) };
    } else {
      const bootInitrd = await buildBootInitrd(ctx, kernel, options.modules as string | undefined);
      const fstype = filesystemOf(file);
      const nvdimm = options.nvdimm === true;
      // crc32c first: ext4, xfs and erofs need it through softdeps, which busybox modprobe ignores.
      const modules = [...(nvdimm ? ["libnvdimm", "nfit", "nd_btt", "nd_pmem"] : ["virtio_pci", "virtio_blk"]), "crc32c_generic", fstype];
      // Extensions are erofs on dm-verity, on virtio-blk whatever the root is on (Kata's guest kernels have these built in).
      if (extensions.length > 0) modules.push(...["virtio_pci", "virtio_blk", "dm_verity", "erofs"].filter((name) => !modules.includes(name)));
      const append = [
        "console=ttyS0 panic=-1",
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
        accel: await accel(options.accel, ctx, kernel, bootInitrd.path),
      };
    }
    ctx.log(`booting ${file} (${kind}) with ${kernel.path} on ${boot.accel}${expect ? `, waiting for "${expect}"` : ""}`);
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
  const path = await artifactPath(request.image, ctx);
  const params = request.verityParams === undefined ? undefined : readVerityParams(await artifactPath(request.verityParams, ctx));
  if (params === undefined && hasHashPartition(path)) {
    ctx.log(`warning: extension ${request.name} has a dm-verity hash partition but no verity params: Kata's mount script will refuse it (give NAME=IMAGE,VERITY_PARAMS)`);
  }
  return { name: request.name, path, kernelParam: extensionKernelParam(request.name, params) };
}

/** A target of the config is built first; anything else must be a file. */
async function artifactPath(name: string, ctx: CommandContext): Promise<string> {
  if (existsSync(name) && statSync(name).isFile()) return resolve(name);
  const targets = await ctx.targetNames();
  if (!targets.includes(name)) throw new ConfigError(`'${name}' is neither a file nor a target of the config`, undefined, `targets: ${targets.join(", ")}`);
  const built = await ctx.build([name]);
  if (!built.ok || !built.outputs[name]) throw new ConfigError(`building '${name}' failed: nothing to boot`);
  if (!statSync(built.outputs[name]!).isFile()) throw new ConfigError(`target '${name}' is a rootfs: boot an initrd or a disk image made from it`);
  return built.outputs[name]!;
}

interface Kernel {
  path: string;
  version: string | undefined;
}

function findKernel(given: string | undefined): Kernel {
  if (given) {
    if (!existsSync(given)) throw new ConfigError(`kernel ${given} does not exist`);
    return { path: resolve(given), version: /vmlinuz-(.+)$/.exec(given)?.[1] };
  }
  const candidates = existsSync("/boot") ? readdirSync("/boot").filter((name) => name.startsWith("vmlinuz-")).sort(compareVersions) : [];
  const newest = candidates[candidates.length - 1];
  if (!newest) throw new ConfigError("no kernel in /boot", undefined, "install the Debian package linux-image-amd64, or pass --kernel PATH");
  const path = join("/boot", newest);
  try {
    closeSync(openSync(path, "r"));
  } catch {
    throw new ConfigError(`cannot read ${path}`, undefined, `run as root, or make it readable (chmod 0644 ${path}), or pass --kernel PATH`);
  }
  return { path, version: newest.slice("vmlinuz-".length) };
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

/** The boot initrd for this kernel: busybox, its modules (if it has them as modules), an /init. */
async function buildBootInitrd(ctx: CommandContext, kernel: Kernel, modulesDir: string | undefined): Promise<{ path: string; hasModules: boolean }> {
  const tree = writeBootTree(join(ctx.cacheDir, "commands"));
  const from = modulesDir ?? "/lib/modules";
  const hasModules = kernel.version !== undefined && existsSync(join(from, kernel.version, "modules.dep"));
  const result = await ctx.buildArtifacts(`boot-initrd-${kernel.version ?? "custom"}`, () => {
    const base = fetchBase({ directory: tree });
    const rootfs = hasModules ? addKernelModules(base, { from, kernelVersion: kernel.version!, modules: BOOT_MODULES }) : base;
    return { initrd: mkCpio(rootfs, { compression: "gzip", level: 6, initLink: false, checks: false }) };
  });
  if (!result.ok) throw new ConfigError("building the boot initrd failed (see above)");
  return { path: result.outputs.initrd!, hasModules };
}

/** KVM when it works here, remembered per kernel and QEMU; TCG otherwise. */
async function accel(wanted: unknown, ctx: CommandContext, kernel: Kernel, initrd: string): Promise<"tcg" | "kvm"> {
  if (wanted === "tcg" || wanted === "kvm") return wanted;
  if (wanted !== undefined && wanted !== "auto") throw new ConfigError(`--accel ${String(wanted)}: expected tcg, kvm or auto`);
  if (!existsSync("/dev/kvm")) return "tcg";
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
    const probe = await runQemu({ kernel: kernel.path, initrd, append: "console=ttyS0 panic=-1 osbuild.probe", memoryMiB: 256, accel: "kvm", timeoutMs: 8000, expect: "osbuild-boot: probe ok" });
    known[key] = probe.ok;
    writeFileSync(memo, JSON.stringify(known));
    ctx.log(`KVM ${probe.ok ? "works" : "does not run guests"} here: booting with ${probe.ok ? "kvm" : "tcg"}`);
  }
  return known[key] ? "kvm" : "tcg";
}
