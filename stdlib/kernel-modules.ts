// What addKernelModules and dracut both know of a kernel's modules tree: how a kernel version
// looks, a module's name from its file, the modules built into the kernel, and which
// architecture the modules are for.

import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import type { Arch, ExecResult } from "../engine/index.js";
import { ELF_MACHINES, elfArchitecture, parseElfHeader } from "../formats/elf.js";

/** undefined when `version` looks like `uname -r`, else what to tell the user. */
export function kernelVersionProblem(version: string | undefined): string | undefined {
  if (/^[A-Za-z0-9._+-]+$/.test(version ?? "")) return undefined;
  return `kernelVersion must look like \`uname -r\` (e.g. 6.1.0-56-amd64), got ${JSON.stringify(version)}`;
}

/** "kernel/drivers/block/virtio_blk.ko.xz" → "virtio_blk" (modprobe treats - and _ alike). */
export function moduleName(file: string): string {
  return file.slice(file.lastIndexOf("/") + 1).replace(/\.ko(\.(xz|zst|gz))?$/, "").replace(/-/g, "_");
}

/** The names of the modules built into the kernel whose modules directory is `dir` (modules.builtin). */
export function builtinModules(dir: string): Set<string> {
  const list = join(dir, "modules.builtin");
  return new Set(existsSync(list) ? readFileSync(list, "utf8").split("\n").filter(Boolean).map(moduleName) : []);
}

type Exec = (command: string, args: readonly string[]) => Promise<ExecResult>;

/**
 * undefined when the modules in `dir` are for `arch`, else what to tell the user. One module
 * is read (the first of modules.order, else the first found): a kernel's modules are all
 * built for the same machine. Compressed modules are read through xz or zstd (`exec`).
 */
export async function modulesArchitectureProblem(dir: string, arch: Arch, guest: string, exec: Exec): Promise<string | undefined> {
  const module = firstModule(dir);
  if (module === undefined) return undefined; // no module to tell by: nothing to refuse
  const head = await moduleHead(join(dir, module), exec);
  const elf = parseElfHeader(head);
  if (!elf) return `${join(dir, module)} is not an ELF kernel module: is ${dir} a kernel's modules directory?`;
  const found = elfArchitecture(elf);
  if (found === arch) return undefined;
  return `the kernel modules in ${dir} are for ${found ?? `ELF machine ${elf.machine}`} (${module}), but the ${guest} is for ${arch} (ELF machine ${ELF_MACHINES[arch]!.machine}): give the modules of a ${arch} kernel`;
}

const MODULE_FILE = /\.ko(\.(xz|zst|gz))?$/;

/** A module of the tree (relative path): modules.order's first that exists, else the first by name. */
function firstModule(dir: string): string | undefined {
  const order = join(dir, "modules.order");
  if (existsSync(order)) {
    for (const line of readFileSync(order, "utf8").split("\n")) {
      const path = line.trim();
      if (!path || path.startsWith("/") || path.split("/").includes("..")) continue;
      const file = ["", ".xz", ".zst", ".gz"].map((suffix) => path + suffix).find((candidate) => isFile(join(dir, candidate)));
      if (file) return file;
    }
  }
  const walk = (relative: string, depth: number): string | undefined => {
    if (depth > 12) return undefined;
    let names: string[];
    try {
      names = readdirSync(join(dir, relative)).sort();
    } catch {
      return undefined;
    }
    for (const name of names) {
      const path = relative ? `${relative}/${name}` : name;
      const stats = statSync(join(dir, path), { throwIfNoEntry: false });
      if (stats?.isFile() && MODULE_FILE.test(name)) return path;
      if (stats?.isDirectory()) {
        const found = walk(path, depth + 1);
        if (found) return found;
      }
    }
    return undefined;
  };
  return walk("", 0);
}

/** The first 64 bytes of a module, decompressed. */
async function moduleHead(file: string, exec: Exec): Promise<Buffer> {
  if (file.endsWith(".gz")) return gunzipSync(readFileSync(file)).subarray(0, 64);
  if (file.endsWith(".xz")) return (await exec("xz", ["-dc", "--", file])).stdout.subarray(0, 64);
  if (file.endsWith(".zst")) return (await exec("zstd", ["-dcq", "--", file])).stdout.subarray(0, 64);
  const head = Buffer.alloc(64);
  const fd = openSync(file, "r");
  try {
    return head.subarray(0, readSync(fd, head, 0, 64, 0));
  } finally {
    closeSync(fd);
  }
}

function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}
