// emptyMachineId: what osbuilder's image_builder.sh does to a disk image's tree (not an
// initrd's): an empty /etc/machine-id, which systemd bind-mounts its own over on a read-only
// root. A tree with no /etc (an extension's content) gets none.

import { existsSync, lstatSync, writeFileSync } from "node:fs";
import { defineStep } from "../engine/index.js";

export const emptyMachineId = defineStep({
  kind: "empty-machine-id",
  version: 1,
  inputs: ["rootfs"],
  output: "rootfs",
  async run(_options: Record<string, never>, ctx) {
    const tree = await ctx.tree();
    const etc = tree.path("etc");
    if (!existsSync(etc) || !lstatSync(etc).isDirectory()) {
      ctx.log("no /etc in the rootfs: no machine-id");
      return;
    }
    const machineId = tree.path("etc/machine-id", { followSymlink: false });
    if (existsSync(machineId) || isSymlink(machineId)) return; // touch changes only its time
    writeFileSync(machineId, "", { mode: 0o644 });
    tree.chown("etc/machine-id", 0, 0);
  },
});

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
