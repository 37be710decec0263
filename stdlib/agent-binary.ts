// Checks an agent binary before it goes into a guest: an ELF executable for the guest's
// architecture (a script, a library or an arm64 build on x86 fail with what to do instead).

import { closeSync, openSync, readSync, statSync } from "node:fs";
import type { Arch, ToolSpec } from "../engine/index.js";
import { ELF_MACHINES, elfArchitecture, hasProgramInterpreter, parseElfHeader } from "../formats/elf.js";

export interface AgentBinary {
  /** Linked against shared libraries (it names a dynamic loader). */
  dynamic: boolean;
}

/** Fails (through `fail`) unless `file` is an ELF executable for `arch`. */
export function checkAgentBinary(file: string, arch: Arch, fail: (message: string) => never, guest = "rootfs"): AgentBinary {
  if (!statSync(file).isFile()) fail(`the agent ${file} is not a file: give the kata-agent binary`);
  const fd = openSync(file, "r");
  try {
    const read = (offset: number, length: number): Buffer => {
      const buffer = Buffer.alloc(length);
      const got = readSync(fd, buffer, 0, length, offset);
      return buffer.subarray(0, got);
    };
    const head = read(0, 64);
    const elf = parseElfHeader(head);
    if (!elf) {
      const what = head.subarray(0, 2).toString("latin1") === "#!" ? "a script" : `a file starting with ${head.subarray(0, 4).toString("hex")}`;
      fail(`the agent ${file} is not an ELF executable (it is ${what}): give the kata-agent binary itself`);
    }
    if (elf.type !== 2 && elf.type !== 3) fail(`the agent ${file} is an ELF file of type ${elf.type}, not an executable`);
    const found = elfArchitecture(elf);
    if (found !== arch) {
      fail(`the agent ${file} is built for ${found ?? `machine ${elf.machine}`}, but the ${guest} is for ${arch} (ELF machine ${ELF_MACHINES[arch]!.machine}): build or download the agent for ${arch}`);
    }
    return { dynamic: hasProgramInterpreter(elf, head, read) };
  } finally {
    closeSync(fd);
  }
}

/** GNU triplets and the Debian packages of their binutils (binutils-<triplet with _ as ->). */
const GNU_TRIPLETS: Readonly<Record<Arch, string>> = {
  x86_64: "x86_64-linux-gnu",
  aarch64: "aarch64-linux-gnu",
  ppc64le: "powerpc64le-linux-gnu",
  s390x: "s390x-linux-gnu",
};

/**
 * The strip that knows `arch`'s binaries: the machine's own `strip` for its architecture,
 * else binutils' cross strip (aarch64-linux-gnu-strip, ...). Debian's plain `strip` knows only
 * the machine's architecture, so it is never used for another. Optional: without it the
 * agent is installed unstripped (the step says so), and installing it later rebuilds.
 */
export function stripTool(arch: Arch, hostArch: Arch): ToolSpec {
  if (arch === hostArch) return { command: "strip", versionArgs: ["--version"], package: "binutils" };
  const triplet = GNU_TRIPLETS[arch];
  return { command: `${triplet}-strip`, versionArgs: ["--version"], package: `binutils-${triplet.replace(/_/g, "-")}`, optional: true };
}
