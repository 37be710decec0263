// overlay: copies a host directory into the rootfs (like debos' overlay action).
// Files land root-owned unless told otherwise, with their modes; symlinks in the rootfs
// are followed as inside a chroot, so nothing is ever written outside the tree.

import { copyFileSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync, chmodSync, type Stats } from "node:fs";
import { join } from "node:path";
import { defineStep, type Tree } from "../engine/index.js";

export interface OverlayOptions {
  /** Host directory whose contents are copied (relative to the config file). */
  from: string;
  /** Where in the rootfs they go. Default "/". */
  to?: string;
  /** Owner of everything copied. Default root (0:0); "preserve" keeps the host's numeric owners. */
  owner?: { uid: number; gid: number } | "preserve";
}

export const overlay = defineStep({
  kind: "overlay",
  version: 3,
  inputs: ["rootfs"],
  output: "rootfs",
  hostPaths: ["from"],
  validate(options: OverlayOptions) {
    if (typeof options.from !== "string" || options.from === "") return "'from' must name a host directory";
    if (options.to !== undefined && !options.to.startsWith("/")) return `'to' must be an absolute path in the rootfs, got '${options.to}'`;
    return undefined;
  },
  async run(options: OverlayOptions, ctx) {
    const source = lstatSync(options.from);
    if (!source.isDirectory()) ctx.fail(`overlay 'from' must be a directory: ${options.from}`);
    const tree = await ctx.tree();
    const destination = (options.to ?? "/").replace(/\/+$/, "");
    ensureDirectory(tree, destination || "/");
    copyInto(tree, options.from, destination, options.owner ?? { uid: 0, gid: 0 });
    ctx.provenance.hostFile(destination || "/", options.from);
  },
});

function copyInto(tree: Tree, hostDir: string, treeDir: string, owner: NonNullable<OverlayOptions["owner"]>): void {
  for (const name of readdirSync(hostDir).sort()) {
    const hostPath = join(hostDir, name);
    const treePath = `${treeDir}/${name}`;
    const stats = lstatSync(hostPath);
    if (stats.isDirectory()) {
      ensureDirectory(tree, treePath, stats.mode & 0o7777);
      applyOwner(tree, treePath, owner, stats);
      copyInto(tree, hostPath, treePath, owner);
      continue;
    }
    // Replace whatever is there (unlinking first, so a hardlinked file's twins are untouched).
    const target = tree.path(treePath, { followSymlink: false });
    rmSync(target, { recursive: true, force: true });
    if (stats.isSymbolicLink()) symlinkSync(readlinkSync(hostPath), target);
    else if (stats.isFile()) {
      copyFileSync(hostPath, target);
      chmodSync(target, stats.mode & 0o7777);
    } else continue; // sockets, devices and fifos on the host are not copied
    applyOwner(tree, treePath, owner, stats);
  }
}

function ensureDirectory(tree: Tree, path: string, mode?: number): void {
  const target = tree.path(path);
  let existing;
  try {
    existing = lstatSync(target);
  } catch {
    existing = undefined;
  }
  if (existing && !existing.isDirectory()) rmSync(target, { force: true });
  if (!existing || !existing.isDirectory()) mkdirSync(target, { recursive: true, mode: 0o755 });
  if (mode !== undefined) chmodSync(target, mode);
}

function applyOwner(tree: Tree, path: string, owner: NonNullable<OverlayOptions["owner"]>, stats: Stats): void {
  const wanted = owner === "preserve" ? { uid: stats.uid, gid: stats.gid } : owner;
  tree.chown(path, wanted.uid, wanted.gid);
}
