// The mutable tree a rootfs-producing step works on, and path resolution that never leaves it.

import { chmodSync, closeSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, rmSync, symlinkSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { TarParser, type TarHeader } from "../../formats/tar.js";
import type { SpecialNodeSpec, Tree } from "../types.js";
import { createSpecialNodes, applyXattrs, readXattrs } from "./host-metadata.js";
import { ctimeBaseline } from "./ctime.js";
import { walkTree } from "./diff.js";
import { withoutRootId } from "../../formats/capability.js";
import type { XattrItem } from "../../formats/xattr-dump.js";
import type { TreeOverrides } from "./diff.js";
import { resolveSymlinks } from "./paths.js";
import { readLinkTarget } from "./diff.js";
import { hostPath } from "../../formats/names.js";
import { checkedArchivePath, openDecompressed } from "./import.js";

/**
 * Resolves `path` inside `root` the way the kernel would inside a chroot: absolute symlink
 * targets restart at `root`, ".." stops at `root`. The result is always inside `root`.
 */
export function resolveInRoot(root: string, path: string, followFinal = true): string {
  const resolved = resolveSymlinks(path, (candidate) => {
    try {
      const full = join(root, candidate);
      return lstatSync(hostPath(full)).isSymbolicLink() ? { symlinkTarget: readLinkTarget(full) } : {};
    } catch {
      return undefined; // does not exist (yet): taken literally
    }
  }, { followFinal, missing: "literal" });
  return join(root, ...resolved!);
}

/** Normalizes a user-given tree path to the layer form ("etc/passwd"). */
function treeRelative(path: string): string {
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) throw new Error(`path '${path}' must not contain '..'`);
  return parts.join("/");
}

/** How many ids Tree.withShiftedOwners moves (a rootfs's users and groups live below 65536). */
const MAPPED_IDS = 65536;

export class StepTree implements Tree {
  constructor(
    readonly root: string,
    readonly overrides: TreeOverrides,
    private readonly asRoot: boolean,
    private readonly tempDir: string,
    /** Inodes whose ctime is above this were changed by the step (see ctime.ts). */
    public baselineCtimeMs: number,
    /** Told the layer paths each `extract` wrote, for provenance. */
    private readonly onExtracted: (archive: string, paths: readonly string[]) => void = () => undefined,
  ) {}

  async withShiftedOwners<T>(offset: number, fn: () => Promise<T>): Promise<T> {
    if (!this.asRoot) return fn();
    if (!Number.isSafeInteger(offset) || offset < MAPPED_IDS || offset + MAPPED_IDS > 0xffffffff) throw new Error(`withShiftedOwners: ${offset} is not an id range above the host's own ids`);
    // Ids 0–65535 move up; others (unmapped inside, seen there as nobody) stay. For that to
    // be undone exactly, no id may already be in the range they move to.
    const inRange = (id: number): boolean => id >= offset && id < offset + MAPPED_IDS;
    await this.shiftOwners((id) => (id < MAPPED_IDS ? id + offset : id), undefined, (path, id) => {
      if (inRange(id)) throw new Error(`/${path} is owned by id ${id}, inside the range ${offset}-${offset + MAPPED_IDS - 1} the sandbox maps the rootfs's ids to: change its owner first`);
    });
    try {
      return await fn();
    } finally {
      await this.shiftOwners((id) => (inRange(id) ? id - offset : id), offset);
    }
  }

  /**
   * Gives every inode the owner `map` says. The chown moves each ctime, so the changes made
   * so far are remembered first and the baseline moves past the chowns. A chown also clears
   * setuid/setgid bits and security.capability: both are put back (a capability set inside
   * the namespace, version 3 with the namespace's root, becomes the plain kind).
   */
  private async shiftOwners(map: (id: number) => number, namespaceRoot?: number, check?: (path: string, id: number) => void): Promise<void> {
    const walked = walkTree(this.root);
    if (check) for (const { path, stats } of walked) for (const id of [stats.uid, stats.gid]) check(path, id);
    for (const { path, stats } of walked) if (stats.ctimeMs > this.baselineCtimeMs) this.overrides.changed.add(path);
    const files = walked.filter(({ stats }) => stats.isFile()).map(({ path }) => path);
    const capabilities: XattrItem[] = [];
    for (const [path, xattrs] of readXattrs(this.root, files)) {
      const capability = xattrs["security.capability"];
      if (capability) capabilities.push({ path, xattrs: { "security.capability": namespaceRoot === undefined ? capability : withoutRootId(capability, namespaceRoot) } });
    }
    for (const { path, stats } of walked) {
      const host = hostPath(join(this.root, path));
      lchownSync(host, map(stats.uid), map(stats.gid));
      if (!stats.isSymbolicLink() && (stats.mode & 0o6000) !== 0) chmodSync(host, stats.mode & 0o7777);
    }
    const rootStats = lstatSync(this.root);
    lchownSync(this.root, map(rootStats.uid), map(rootStats.gid));
    applyXattrs(this.root, capabilities, this.tempDir);
    this.baselineCtimeMs = await ctimeBaseline(this.tempDir);
  }

  path(path: string, options?: { followSymlink?: boolean }): string {
    return resolveInRoot(this.root, path, options?.followSymlink ?? true);
  }

  /** The layer path of a tree path, after resolving parent symlinks. */
  layerPath(path: string): string {
    const host = this.path(path, { followSymlink: false });
    return host === this.root ? "" : host.slice(this.root.length + 1);
  }

  chown(path: string, uid: number, gid: number): void {
    this.chownAt(this.layerPath(path), uid, gid);
  }

  /** chown of an already resolved layer path. */
  private chownAt(relative: string, uid: number, gid: number): void {
    const host = hostPath(join(this.root, relative));
    if (this.asRoot) {
      // chown clears setuid and setgid (for root too): put the mode back as it was.
      const mode = lstatSync(host).mode;
      lchownSync(host, uid, gid);
      if ((mode & 0o6000) !== 0 && !lstatSync(host).isSymbolicLink()) chmodSync(host, mode & 0o7777);
    } else {
      // The owner lives in the layer only; touching the inode (without chown, which would
      // drop setuid bits) marks it as changed for the diff.
      const stats = lstatSync(host);
      if (stats.isSymbolicLink()) lutimesSync(host, stats.atime, stats.mtime);
      else chmodSync(host, stats.mode & 0o7777);
      this.overrides.owners.set(relative, { uid, gid });
    }
  }

  mknod(path: string, node: SpecialNodeSpec): void {
    this.mknodAll([{ path, ...node }]);
  }

  mknodAll(nodes: ReadonlyArray<SpecialNodeSpec & { path: string }>): void {
    const made = nodes.map((node) => ({ ...node, relative: this.layerPath(node.path), major: node.major ?? 0, minor: node.minor ?? 0 }));
    const host = (relative: string): string | Buffer => hostPath(join(this.root, relative));
    for (const node of made) rmSync(host(node.relative), { force: true });
    const onDisk = made.filter((node) => this.asRoot || node.type === "fifo");
    createSpecialNodes(this.root, onDisk.map((node) => ({ path: node.relative, type: node.type, major: node.major, minor: node.minor })));
    for (const node of made) {
      if (this.asRoot || node.type === "fifo") {
        chmodSync(host(node.relative), node.mode & 0o7777);
        if (this.asRoot) lchownSync(host(node.relative), node.uid ?? 0, node.gid ?? 0);
      } else writeFileSync(host(node.relative), "", { mode: 0o600 }); // placeholder; the layer records the node
      this.overrides.specials.set(node.relative, { type: node.type, major: node.major, minor: node.minor, mode: node.mode & 0o7777 });
      this.overrides.owners.set(node.relative, { uid: node.uid ?? 0, gid: node.gid ?? 0 });
    }
  }

  setXattr(path: string, name: string, value: Buffer): void {
    this.setXattrsAt(this.layerPath(path), { [name]: value });
  }

  /** Sets xattrs on an already resolved layer path, all in one go. */
  private setXattrsAt(relative: string, xattrs: Record<string, Buffer>): void {
    this.overrides.xattrs.set(relative, { ...this.overrides.xattrs.get(relative), ...xattrs });
    if (this.asRoot) applyXattrs(this.root, [{ path: relative, xattrs }], this.tempDir);
  }

  async extract(archive: string, options?: { to?: string }): Promise<void> {
    const base = treeRelative(options?.to ?? "/");
    let current: { fd: number; header: TarHeader; relative: string } | undefined;
    // Directory times are set once everything is in: adding entries changes them.
    const directoryTimes: Array<{ path: string; mtime: number }> = [];
    // Each entry's path is resolved once; owners and xattrs go to what it resolved to.
    const written: string[] = [];
    const layerPathOf = (host: string): string => {
      const relative = host.slice(this.root.length + 1);
      written.push(relative);
      return relative;
    };
    const finish = (header: TarHeader, relative: string): void => {
      this.chownAt(relative, header.uid, header.gid);
      if (header.xattrs && Object.keys(header.xattrs).length > 0) this.setXattrsAt(relative, header.xattrs);
    };
    const parser = new TarParser({
      onEntry: (header) => {
        const relative = checkedArchivePath(header.path, header.rawPath);
        if (relative === "") return; // the archive's root: the tree keeps its own
        const path = base ? `${base}/${relative}` : relative;
        const slash = path.lastIndexOf("/");
        const parent = this.path(slash < 0 ? "" : path.slice(0, slash));
        const target = join(parent, path.slice(slash + 1));
        if (header.type === "dir") {
          const resolved = this.path(path); // an existing symlink to a directory is kept and followed
          let isDir = false;
          try {
            isDir = lstatSync(hostPath(resolved)).isDirectory();
          } catch {
            /* missing */
          }
          if (!isDir) {
            rmSync(hostPath(resolved), { force: true });
            mkdirSync(hostPath(resolved), { recursive: true });
          }
          chmodSync(hostPath(resolved), header.mode);
          finish(header, layerPathOf(resolved));
          directoryTimes.push({ path, mtime: header.mtime });
          return;
        }
        mkdirSync(hostPath(parent), { recursive: true });
        rmSync(hostPath(target), { recursive: true, force: true });
        switch (header.type) {
          case "file": {
            const fd = openSync(hostPath(target), "wx", 0o600);
            current = { fd, header, relative: layerPathOf(target) }; // closed at the entry's end, after its data
            return;
          }
          case "symlink":
            symlinkSync(hostPath(header.linkTarget!), hostPath(target));
            lutimesSync(hostPath(target), header.mtime, header.mtime);
            finish(header, layerPathOf(target));
            return;
          case "hardlink": {
            const linked = checkedArchivePath(header.linkTarget!, header.rawPath, "link");
            linkSync(hostPath(this.path(base ? `${base}/${linked}` : linked, { followSymlink: false })), hostPath(target));
            layerPathOf(target);
            return;
          }
          default:
            written.push(this.layerPath(path));
            this.mknod(path, { type: header.type, major: header.devMajor, minor: header.devMinor, mode: header.mode, uid: header.uid, gid: header.gid });
        }
      },
      onData: (chunk) => {
        let offset = 0;
        while (offset < chunk.length) offset += writeSync(current!.fd, chunk, offset, chunk.length - offset);
      },
      onEntryEnd: () => {
        if (current) this.closeExtracted(current, finish);
        current = undefined;
      },
    });
    try {
      for await (const chunk of openDecompressed(archive)) {
        if (!parser.ended) parser.write(chunk as Buffer);
      }
      parser.end();
    } finally {
      if (current) closeSync(current.fd);
    }
    // Looked up again: a later entry may have replaced the directory (with a symlink, even one
    // pointing out of the tree), and only a directory still inside the tree gets its time.
    for (const { path, mtime } of directoryTimes) {
      const host = hostPath(this.path(path));
      if (lstatSync(host, { throwIfNoEntry: false })?.isDirectory()) utimesSync(host, mtime, mtime);
    }
    this.onExtracted(archive, written);
  }

  private closeExtracted(file: { fd: number; header: TarHeader; relative: string }, finish: (header: TarHeader, relative: string) => void): void {
    closeSync(file.fd);
    const host = hostPath(join(this.root, file.relative));
    chmodSync(host, file.header.mode);
    finish(file.header, file.relative);
    utimesSync(host, file.header.mtime, file.header.mtime);
  }
}
