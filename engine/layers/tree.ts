// The mutable tree a rootfs-producing step works on, and path resolution that never leaves it.

import { chmodSync, lchownSync, lstatSync, readlinkSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Tree } from "../types.js";
import { createSpecialNodes, applyXattrs } from "./host-metadata.js";
import type { TreeOverrides } from "./diff.js";

const MAX_SYMLINK_HOPS = 40;

/**
 * Resolves `path` inside `root` the way the kernel would inside a chroot: absolute symlink
 * targets restart at `root`, ".." stops at `root`. The result is always inside `root`.
 */
export function resolveInRoot(root: string, path: string, followFinal = true): string {
  let pending = path.split("/").filter((part) => part !== "" && part !== ".");
  const resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const isFinal = pending.length === 0;
    const candidate = join(root, ...resolved, part);
    let isLink = false;
    if (!isFinal || followFinal) {
      try {
        isLink = lstatSync(candidate).isSymbolicLink();
      } catch {
        isLink = false; // does not exist (yet): taken literally
      }
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINK_HOPS) throw new Error(`too many levels of symbolic links resolving '${path}' in the tree`);
    const target = readlinkSync(candidate);
    if (target.startsWith("/")) resolved.length = 0;
    pending = [...target.split("/").filter((item) => item !== "" && item !== "."), ...pending];
  }
  return join(root, ...resolved);
}

/** Normalizes a user-given tree path to the layer form ("etc/passwd"). */
export function treeRelative(path: string): string {
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) throw new Error(`path '${path}' must not contain '..'`);
  return parts.join("/");
}

export class StepTree implements Tree {
  constructor(
    readonly root: string,
    readonly overrides: TreeOverrides,
    private readonly asRoot: boolean,
    private readonly tempDir: string,
  ) {}

  path(path: string, options?: { followSymlink?: boolean }): string {
    return resolveInRoot(this.root, path, options?.followSymlink ?? true);
  }

  /** The layer path of a tree path, after resolving parent symlinks. */
  private layerPath(path: string): string {
    const host = this.path(path, { followSymlink: false });
    return host === this.root ? "" : host.slice(this.root.length + 1);
  }

  chown(path: string, uid: number, gid: number): void {
    const relative = this.layerPath(path);
    if (this.asRoot) lchownSync(join(this.root, relative), uid, gid);
    else {
      lchownSync(join(this.root, relative), process.getuid!(), process.getgid!()); // bumps ctime: marks it changed
      this.overrides.owners.set(relative, { uid, gid });
    }
  }

  mknod(path: string, node: { type: "char" | "block" | "fifo"; major?: number; minor?: number; mode: number; uid?: number; gid?: number }): void {
    const relative = this.layerPath(path);
    const host = join(this.root, relative);
    rmSync(host, { force: true });
    const major = node.major ?? 0;
    const minor = node.minor ?? 0;
    if (this.asRoot || node.type === "fifo") {
      createSpecialNodes(this.root, [{ path: relative, type: node.type, major, minor }]);
      chmodSync(host, node.mode & 0o7777);
      if (this.asRoot) lchownSync(host, node.uid ?? 0, node.gid ?? 0);
    } else writeFileSync(host, "", { mode: 0o600 }); // placeholder; the layer records the node
    this.overrides.specials.set(relative, { type: node.type, major, minor, mode: node.mode & 0o7777 });
    this.overrides.owners.set(relative, { uid: node.uid ?? 0, gid: node.gid ?? 0 });
  }

  setXattr(path: string, name: string, value: Buffer): void {
    const relative = this.layerPath(path);
    const current = this.overrides.xattrs.get(relative) ?? {};
    current[name] = value;
    this.overrides.xattrs.set(relative, current);
    if (this.asRoot) applyXattrs(this.root, [{ path: relative, xattrs: { [name]: value } }], this.tempDir);
  }
}
