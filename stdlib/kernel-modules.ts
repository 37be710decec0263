// What addKernelModules and dracut both know of a kernel's modules tree: how a kernel version
// looks, a module's name from its file, and the modules built into the kernel.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

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
