// Boots a kernel with an initrd and optionally a disk (virtio-blk or a read-only NVDIMM, as
// Kata does on x86) in QEMU, with the serial console streamed, a timeout, and an expected text.
// Each architecture has its own QEMU, machine, console and disk device.

import { spawn } from "node:child_process";
import type { Arch } from "../../engine/index.js";

/** How QEMU emulates a guest of one architecture, and what its Debian kernel calls things. */
export interface QemuMachine {
  /** The QEMU program, and the Debian package it is in. */
  binary: string;
  package: string;
  /** The machine (and CPU, under emulation) to start. */
  machine(accel: "tcg" | "kvm"): string[];
  /** Options that put the guest's console on QEMU's stdio. */
  console: string[];
  /** The kernel's name for that console (console=...). */
  kernelConsole: string;
  /** The virtio block device, and the modules Debian's kernel needs for it (in load order). */
  diskDevice: string;
  diskModules: readonly string[];
  /** Whether a disk image can be attached as an NVDIMM (Kata's DAX boot on x86). */
  nvdimm: boolean;
}

const SERIAL_ON_STDIO = ["-serial", "stdio"];

export const QEMU_MACHINES: Readonly<Partial<Record<Arch, QemuMachine>>> = {
  x86_64: {
    binary: "qemu-system-x86_64",
    package: "qemu-system-x86",
    machine: () => ["-machine", "pc"],
    console: SERIAL_ON_STDIO,
    kernelConsole: "ttyS0",
    diskDevice: "virtio-blk-pci",
    diskModules: ["virtio_pci", "virtio_blk"],
    nvdimm: true,
  },
  aarch64: {
    binary: "qemu-system-aarch64",
    package: "qemu-system-arm",
    machine: (accel) => ["-machine", "virt", "-cpu", accel === "kvm" ? "host" : "cortex-a57"],
    console: SERIAL_ON_STDIO, // the virt machine's PL011 UART
    kernelConsole: "ttyAMA0",
    diskDevice: "virtio-blk-pci",
    diskModules: ["virtio_pci", "virtio_blk"],
    // QEMU describes NVDIMMs to an arm64 guest through ACPI only, which a direct kernel boot has not.
    nvdimm: false,
  },
  s390x: {
    binary: "qemu-system-s390x",
    package: "qemu-system-misc",
    machine: () => ["-machine", "s390-ccw-virtio"],
    console: ["-chardev", "stdio,id=console", "-device", "sclpconsole,chardev=console"],
    kernelConsole: "ttysclp0",
    diskDevice: "virtio-blk-ccw", // the channel subsystem's virtio transport is built into Debian's kernel
    diskModules: ["virtio_blk"],
    nvdimm: false,
  },
};

/** The QEMU machine for `arch`, or a message saying osbuild cannot boot it. */
export function qemuMachine(arch: Arch): QemuMachine {
  const machine = QEMU_MACHINES[arch];
  if (!machine) throw new Error(`osbuild boot does not boot ${arch} guests (it boots ${Object.keys(QEMU_MACHINES).join(", ")})`);
  return machine;
}

export interface QemuBoot {
  arch: Arch;
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

function qemuArgs(boot: QemuBoot, machine: QemuMachine): string[] {
  const args = ["-accel", boot.accel, "-nodefaults", "-display", "none", ...machine.console, "-no-reboot", "-smp", "1"];
  if (boot.nvdimm) {
    if (!machine.nvdimm) throw new Error(`an NVDIMM cannot be attached to a ${boot.arch} guest here: boot the disk image through ${machine.diskDevice}`);
    args.push("-machine", "pc,nvdimm=on", "-m", `${boot.memoryMiB}M,slots=2,maxmem=${boot.memoryMiB * 4}M`);
    args.push("-object", `memory-backend-file,id=mem1,share=off,readonly=on,mem-path=${optionValue(boot.nvdimm.path)},size=${boot.nvdimm.bytes}`);
    args.push("-device", "nvdimm,id=nv1,memdev=mem1,unarmed=on");
  } else args.push(...machine.machine(boot.accel), "-m", `${boot.memoryMiB}M`);
  if (boot.disk) args.push("-drive", `file=${optionValue(boot.disk)},format=raw,if=none,id=disk,snapshot=on`, "-device", `${machine.diskDevice},drive=disk`);
  // Extensions sit in PCI slots after the root disk's, so that the root disk stays vda.
  for (const [index, extension] of (boot.extensions ?? []).entries()) {
    const slot = machine.diskDevice.endsWith("-pci") ? `,addr=0x${(EXTENSION_SLOT + index).toString(16)}` : "";
    args.push("-drive", `file=${optionValue(extension.path)},format=raw,if=none,id=extension${index},readonly=on`);
    args.push("-device", `${machine.diskDevice},drive=extension${index},serial=extension-${extension.name}${slot}`);
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
  const machine = qemuMachine(boot.arch);
  const args = qemuArgs(boot, machine);
  return new Promise((resolve, reject) => {
    const child = spawn(machine.binary, args, { stdio: ["ignore", "pipe", "pipe"] });
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
      reject(new Error(`cannot run ${machine.binary}: ${error.message} (install the Debian package ${machine.package})`));
    });
    child.on("close", (code) => finish({ ok: boot.expect === undefined && code === 0, timedOut: false, exitCode: code }));
  });
}
