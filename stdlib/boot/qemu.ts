// Boots a kernel with an initrd and optionally a disk (virtio-blk or a read-only NVDIMM, as
// Kata does on x86) in QEMU, with the serial console streamed, a timeout, and an expected text.

import { spawn } from "node:child_process";

export interface QemuBoot {
  kernel: string;
  initrd: string;
  append: string;
  /** A raw disk image on virtio-blk (writes go to a throw-away overlay). */
  disk?: string;
  /** The disk as a read-only NVDIMM instead (the image must be 128 MiB aligned). */
  nvdimm?: { path: string; bytes: number };
  /** Guest extension images, read-only on virtio-blk with serial extension-<name>, as Kata's runtime attaches them. */
  extensions?: ReadonlyArray<{ name: string; path: string }>;
  memoryMiB: number;
  accel: "tcg" | "kvm";
  timeoutMs: number;
  /** Stop with success as soon as this appears on the console. */
  expect?: string;
  onOutput?: (chunk: string) => void;
}

export interface QemuResult {
  /** The expected text appeared (or, with none expected, the guest powered off). */
  ok: boolean;
  timedOut: boolean;
  exitCode: number | null;
  console: string;
}

/** The first PCI slot of the extension images (up to slot 31). */
const EXTENSION_SLOT = 0x18;

function qemuArgs(boot: QemuBoot): string[] {
  const args = ["-accel", boot.accel, "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot", "-smp", "1"];
  if (boot.nvdimm) {
    args.push("-machine", "pc,nvdimm=on", "-m", `${boot.memoryMiB}M,slots=2,maxmem=${boot.memoryMiB * 4}M`);
    args.push("-object", `memory-backend-file,id=mem1,share=off,readonly=on,mem-path=${optionValue(boot.nvdimm.path)},size=${boot.nvdimm.bytes}`);
    args.push("-device", "nvdimm,id=nv1,memdev=mem1,unarmed=on");
  } else args.push("-machine", "pc", "-m", `${boot.memoryMiB}M`);
  if (boot.disk) args.push("-drive", `file=${optionValue(boot.disk)},format=raw,if=virtio,snapshot=on`);
  // Extensions sit in PCI slots after the root disk's, so that the root disk stays vda.
  for (const [index, extension] of (boot.extensions ?? []).entries()) {
    args.push("-drive", `file=${optionValue(extension.path)},format=raw,if=none,id=extension${index},readonly=on`);
    args.push("-device", `virtio-blk-pci,drive=extension${index},serial=extension-${extension.name},addr=0x${(EXTENSION_SLOT + index).toString(16)}`);
  }
  args.push("-kernel", boot.kernel, "-initrd", boot.initrd, "-append", boot.append);
  return args;
}

/**
 * A value inside a QEMU "key=value,key=value" option: QEMU reads a doubled comma as one
 * comma of the value, so a path with commas stays one path and adds no options.
 */
export function optionValue(value: string): string {
  return value.replace(/,/g, ",,");
}

export function runQemu(boot: QemuBoot): Promise<QemuResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("qemu-system-x86_64", qemuArgs(boot), { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let settled = false;
    const finish = (result: Omit<QemuResult, "console">): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null) child.kill("SIGKILL");
      resolve({ ...result, console: output });
    };
    const timer = setTimeout(() => finish({ ok: false, timedOut: true, exitCode: null }), boot.timeoutMs);
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString("utf8");
      output += text;
      boot.onOutput?.(text);
      if (boot.expect !== undefined && output.includes(boot.expect)) finish({ ok: true, timedOut: false, exitCode: null });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`cannot run qemu-system-x86_64: ${error.message} (install the Debian package qemu-system-x86)`));
    });
    child.on("close", (code) => finish({ ok: boot.expect === undefined && code === 0, timedOut: false, exitCode: code }));
  });
}
