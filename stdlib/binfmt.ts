// Running another architecture's programs on this machine, as a foreign base's package
// scripts and `run`'s commands need: the kernel's binfmt_misc hands such an ELF file to one
// of QEMU's user-mode emulators. Debian's qemu-user-static registers them with the F flag
// (the kernel opens the emulator when it is registered), so that it works inside a chroot
// and a user namespace, where the emulator's path does not exist.

import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { Arch, StepContext } from "../engine/index.js";
import { ELF_MACHINES } from "../formats/elf.js";

export const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";

/** The handler Debian's qemu-user-static installs for an architecture (/usr/share/binfmts/NAME). */
export function qemuHandler(arch: Arch): string {
  return `qemu-${arch}`;
}

export interface ForeignProgramsProblem {
  /** What is wrong, in a sentence. */
  problem: string;
  /** The commands (as root) that put it right, in order. */
  commands: string[];
  /** The Debian packages among them that are not installed yet. */
  packages: string[];
}

/** Why programs for `arch` cannot run here, or undefined when they can. */
export function foreignProgramsProblem(arch: Arch, dir = BINFMT_DIR): ForeignProgramsProblem | undefined {
  const handler = qemuHandler(arch);
  const packages = [...(existsSync(`/usr/share/binfmts/${handler}`) ? [] : ["qemu-user-static"]), ...(existsSync("/usr/sbin/update-binfmts") ? [] : ["binfmt-support"])];
  const install = packages.length > 0 ? [`apt-get install ${packages.join(" ")}`] : [];
  const enable = [...install, `update-binfmts --enable ${handler}`];
  const problem = (text: string, commands: string[]): ForeignProgramsProblem => ({ problem: text, commands, packages });
  if (!existsSync(join(dir, "status"))) return problem(`binfmt_misc is not mounted at ${dir}`, [...install, `mount -t binfmt_misc binfmt_misc ${dir}`, `update-binfmts --enable ${handler}`]);
  if (read(join(dir, "status")).trim() !== "enabled") return problem("binfmt_misc is disabled", [`echo 1 > ${dir}/status`]);
  const header = elfHeader(arch);
  const matching = handlers(dir).filter((entry) => entry.matches(header));
  const usable = matching.find((entry) => entry.enabled && entry.flags.includes("F"));
  if (usable) return undefined;
  const withoutF = matching.find((entry) => entry.enabled);
  if (withoutF) {
    const text = `the binfmt handler '${withoutF.name}' for ${arch} has no F flag, so its emulator (${withoutF.interpreter}) cannot be found inside a rootfs`;
    return problem(text, [`update-binfmts --disable ${withoutF.name}`, ...enable]);
  }
  return problem(`no binfmt handler for ${arch} programs is registered${matching.length > 0 ? ` (${matching.map((entry) => entry.name).join(", ")} disabled)` : ""}`, enable);
}

type ForeignContext = Pick<StepContext<readonly [], "rootfs">, "arch" | "hostArch" | "log" | "fail" | "exec">;

/**
 * Makes sure the step can run programs of its architecture (nothing to do for the
 * machine's own). As root, registers Debian's handler when it is missing (it stays
 * registered until the machine reboots); otherwise fails naming the commands to run.
 */
export async function ensureForeignPrograms(ctx: ForeignContext, purpose: string): Promise<void> {
  if (ctx.arch === ctx.hostArch) return;
  let problem = foreignProgramsProblem(ctx.arch);
  if (!problem) return;
  const explain = (found: ForeignProgramsProblem): never =>
    ctx.fail(`${purpose} runs ${ctx.arch} programs on this ${ctx.hostArch} machine, through QEMU's user-mode emulation, but ${found.problem}.\nAs root, run:\n${found.commands.map((command) => `  ${command}`).join("\n")}`);
  const root = process.getuid?.() === 0;
  const registerable = problem.commands.every((command) => command.startsWith("mount ") || command.startsWith("update-binfmts --enable "));
  if (!root || !registerable) explain(problem);
  ctx.log(`${problem.problem}: registering Debian's ${ctx.arch} emulator (it stays registered until a reboot)`);
  for (const command of problem.commands) {
    const [program, ...args] = command.split(" ");
    // A concurrent step may have mounted or enabled it first: what counts is the state afterwards.
    await ctx.exec(program!, args).catch((error: unknown) => ctx.log(`${command}: ${(error as Error).message}`));
  }
  problem = foreignProgramsProblem(ctx.arch);
  if (problem) explain(problem);
}

interface Handler {
  name: string;
  enabled: boolean;
  flags: string;
  interpreter: string;
  matches(header: Buffer): boolean;
}

/** The registered magic handlers (extension handlers never match an ELF program). */
function handlers(dir: string): Handler[] {
  const found: Handler[] = [];
  for (const name of readdirSync(dir)) {
    if (name === "status" || name === "register") continue;
    const text = read(join(dir, name));
    const field = (key: string): string => new RegExp(`^${key}[: ] *(.*)$`, "m").exec(text)?.[1]?.trim() ?? "";
    const magic = Buffer.from(field("magic"), "hex");
    const mask = field("mask") ? Buffer.from(field("mask"), "hex") : Buffer.alloc(magic.length, 0xff);
    const offset = Number(field("offset") || 0);
    found.push({
      name,
      enabled: /^enabled$/m.test(text),
      flags: field("flags"),
      interpreter: field("interpreter"),
      matches: (header) => magic.length > 0 && magic.every((byte, index) => ((header[offset + index] ?? 0) & mask[index]!) === (byte & mask[index]!)),
    });
  }
  return found;
}

/** The first 20 bytes of a static executable for `arch`: what a handler's magic is tested against. */
function elfHeader(arch: Arch): Buffer {
  const machine = ELF_MACHINES[arch]!;
  const header = Buffer.alloc(20);
  header.write("\x7fELF", 0, "latin1");
  header[4] = machine.bits === 64 ? 2 : 1;
  header[5] = machine.endian === "little" ? 1 : 2;
  header[6] = 1; // EV_CURRENT
  const write16 = (value: number, offset: number): number => (machine.endian === "little" ? header.writeUInt16LE(value, offset) : header.writeUInt16BE(value, offset));
  write16(2, 16); // ET_EXEC
  write16(machine.machine, 18);
  return header;
}

function read(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
