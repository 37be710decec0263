// Turns the kept tree of a stack back into the tree of one of its prefixes, in place, by
// undoing the top layers: what they added is deleted, and what they replaced or deleted is
// written again from the layers below (each file's bytes read at its TOC offset and checked
// against its sha256). When a step on top of a kept tree changes (a new agent on the same
// rootfs), this costs what the old change touched, where copying or extracting the prefix
// costs the whole tree. Hardlinks are left to a full extraction: an inode shared with an
// untouched path cannot be written again without writing through to that path.

import { createHash } from "node:crypto";
import { chmodSync, chownSync, closeSync, fchmodSync, fchownSync, futimesSync, lchownSync, lstatSync, lutimesSync, mkdirSync, openSync, readSync, rmSync, symlinkSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { hostPath } from "../../formats/names.js";
import { CorruptContentError } from "../errors.js";
import type { Digest } from "../key.js";
import { diskMode, setDirectoryTimes, userXattrs } from "./extract.js";
import { applyXattrs, createSpecialNodes, type SpecialNode } from "./host-metadata.js";
import { type MergedFile, type MergedView, parentOf } from "./merge.js";
import { decodeXattrs } from "./toc.js";

export interface RevertPlan {
  /** Paths to delete, with everything below them (parents before children; covered ones left out). */
  remove: string[];
  /** Entries of the prefix to write again, parents before children. */
  restore: MergedFile[];
  /** Directories, and files with the same bytes, whose own metadata (mode, owner, time) goes back to the prefix's. */
  metadata: MergedFile[];
  /** Bytes of file data to write again. */
  bytes: number;
}

/** Why a revert is not worth it or not possible; the caller extracts the prefix instead. */
export type RevertRefusal = { refused: string };

/**
 * What turns a tree of `upper` into a tree of `lower`, where `lower`'s layers are the first
 * `lowerLayers` of `upper`'s. Refused when hardlinks are involved, or when the work would
 * come near rewriting the whole tree (then extracting is as fast).
 */
export function planRevert(upper: MergedView, lower: MergedView, lowerLayers: number): RevertPlan | RevertRefusal {
  const linked = new Set<string>();
  for (const entry of lower.entries()) if (entry.type === "hardlink") linked.add(entry.path).add(entry.linkTarget!);
  const remove: string[] = [];
  const restore: MergedFile[] = [];
  const metadata: MergedFile[] = [];
  const removedSet = new Set<string>();
  const removed = (path: string): boolean => {
    for (let parent = path; parent !== ""; parent = parentOf(parent)) if (removedSet.has(parent)) return true;
    return false;
  };
  const restoredSet = new Set<string>();
  let bytes = 0;
  let totalBytes = 0;
  for (const entry of lower.entries()) if (entry.type === "file") totalBytes += entry.size;

  const restoreEntry = (entry: MergedFile): RevertRefusal | undefined => {
    if (restoredSet.has(entry.path)) return undefined;
    if (entry.type === "hardlink" || linked.has(entry.path)) return { refused: `'${entry.path}' is hardlinked` };
    if (entry.type === "file" && entry.sha256 === undefined) return { refused: `the layers have no checksum for '${entry.path}'` };
    restoredSet.add(entry.path);
    restore.push(entry);
    if (entry.type === "file") bytes += entry.size;
    return undefined;
  };

  for (const entry of upper.entries()) {
    if (entry.layer < lowerLayers) continue; // unchanged since the prefix
    if (entry.type === "hardlink") return { refused: `the layers to undo hold a hardlink ('${entry.path}')` };
    const before = lower.get(entry.path);
    if (!before) {
      if (!removed(entry.path)) {
        remove.push(entry.path);
        removedSet.add(entry.path);
      }
      continue;
    }
    const sameXattrs = JSON.stringify(entry.xattrs ?? {}) === JSON.stringify(before.xattrs ?? {});
    if (before.type === "dir" && entry.type === "dir") {
      if (!sameXattrs) return { refused: `the layers to undo changed the xattrs of directory '${entry.path}'` };
      metadata.push(before);
      continue;
    }
    // A file whose mode, owner or time changed, not its bytes (the tree holds the upper's bytes).
    if (before.type === "file" && entry.type === "file" && sameXattrs && before.sha256 !== undefined && before.sha256 === entry.sha256 && before.size === entry.size && !linked.has(entry.path)) {
      metadata.push(before);
      continue;
    }
    remove.push(entry.path);
    removedSet.add(entry.path);
    const refusal = restoreEntry(before);
    if (refusal) return refusal;
  }
  // What the top layers deleted, or hid below a path they replaced (a non-directory, an opaque one).
  for (const entry of lower.entries()) {
    if (upper.get(entry.path) !== undefined) continue; // unchanged, or handled above
    const refusal = restoreEntry(entry);
    if (refusal) return refusal;
  }
  if (bytes > totalBytes / 2) return { refused: `undoing would write ${bytes} of the tree's ${totalBytes} bytes` };
  restore.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { remove, restore, metadata, bytes };
}

export interface RevertOptions {
  asRoot: boolean;
  /** The store path of each layer of the prefix, by index from the bottom, with its digest. */
  layers: ReadonlyArray<{ path: string; digest: Digest }>;
  tempDir: string;
  /** Every directory of the prefix with its time: set again last, since writing children moves them. */
  dirTimes: ReadonlyArray<{ path: string; mtime: number }>;
}

/**
 * Carries out a plan on the tree at `root`. Throws CorruptContentError when a layer's bytes do
 * not match, and an Error when the tree is not what the plan was made for.
 */
export function revertTreeSync(root: string, plan: RevertPlan, options: RevertOptions): void {
  const at = (path: string): string | Buffer => hostPath(join(root, path));
  // The kept tree is a cache, and a damaged one must never make this write outside it (as
  // extraction refuses to): every path is a plain one below directories of the tree, never
  // through a symlink, and nothing is written over something already there.
  const directories = new Set<string>([""]);
  const inside = (path: string): string | Buffer => {
    if (path === "" || path.startsWith("/") || path.split("/").some((part) => part === "" || part === "." || part === "..")) throw new Error(`'${path}' is not a path inside the tree`);
    const unchecked: string[] = [];
    for (let dir = parentOf(path); !directories.has(dir); dir = parentOf(dir)) unchecked.push(dir);
    for (const dir of unchecked.reverse()) {
      if (!lstatSync(at(dir), { throwIfNoEntry: false })?.isDirectory()) throw new Error(`'${dir}' in the kept tree is not a directory`);
      directories.add(dir);
    }
    return at(path);
  };
  for (const path of plan.remove) rmSync(inside(path), { recursive: true, force: true });
  const specials: SpecialNode[] = [];
  const specialEntries: MergedFile[] = [];
  const xattrs: Array<{ path: string; xattrs: Record<string, Buffer> }> = [];
  const keepXattrs = (entry: MergedFile): void => {
    if (!entry.xattrs) return;
    const all = decodeXattrs(entry.xattrs) ?? {};
    const kept = options.asRoot ? all : userXattrs(all);
    if (Object.keys(kept).length > 0) xattrs.push({ path: entry.path, xattrs: kept });
  };
  const buffer = Buffer.allocUnsafe(1 << 20);
  for (const entry of plan.restore) {
    const target = inside(entry.path);
    switch (entry.type) {
      case "dir":
        mkdirSync(target, { mode: 0o700 });
        directories.add(entry.path);
        if (options.asRoot) chownSync(target, entry.uid, entry.gid);
        chmodSync(target, diskMode("dir", entry.mode, options.asRoot));
        break;
      case "file":
        writeFileFromLayer(target, entry, options, buffer);
        break;
      case "symlink":
        symlinkSync(hostPath(entry.linkTarget!), target);
        if (options.asRoot) lchownSync(target, entry.uid, entry.gid);
        lutimesSync(target, entry.mtime, entry.mtime);
        break;
      case "char":
      case "block":
      case "fifo":
        if (options.asRoot || entry.type === "fifo") {
          specials.push({ path: entry.path, type: entry.type, major: entry.devMajor ?? 0, minor: entry.devMinor ?? 0 });
          specialEntries.push(entry);
        } else {
          writeFileSync(target, "", { mode: 0o600, flag: "wx" }); // the placeholder extraction writes (see extract.ts)
          utimesSync(target, entry.mtime, entry.mtime);
        }
        break;
      default:
        throw new Error(`revert: cannot restore a ${entry.type} ('${entry.path}')`);
    }
    keepXattrs(entry);
  }
  createSpecialNodes(root, specials);
  for (const entry of specialEntries) {
    if (options.asRoot) lchownSync(at(entry.path), entry.uid, entry.gid);
    chmodSync(at(entry.path), entry.mode);
    utimesSync(at(entry.path), entry.mtime, entry.mtime);
  }
  for (const entry of plan.metadata) {
    const type = entry.type === "dir" ? "dir" : "file";
    const stats = lstatSync(inside(entry.path), { throwIfNoEntry: false });
    if (!(type === "dir" ? stats?.isDirectory() : stats?.isFile())) throw new Error(`'${entry.path}' in the kept tree is not a ${type === "dir" ? "directory" : "regular file"}`);
    if (options.asRoot) chownSync(at(entry.path), entry.uid, entry.gid);
    chmodSync(at(entry.path), diskMode(type, entry.mode, options.asRoot));
    if (type === "file") utimesSync(at(entry.path), entry.mtime, entry.mtime);
    keepXattrs(entry); // chown drops security.capability: set again
  }
  applyXattrs(root, xattrs, options.tempDir);
  // Every directory whose entries changed, and every one restored, gets the prefix's time back.
  const touched = new Set<string>();
  for (const path of [...plan.remove, ...plan.restore.map((entry) => entry.path)]) touched.add(parentOf(path));
  for (const entry of [...plan.restore, ...plan.metadata]) if (entry.type === "dir") touched.add(entry.path);
  setDirectoryTimes(root, options.dirTimes.filter((dir) => touched.has(dir.path)));
}

/** Writes one file of the prefix from its layer's bytes, checked against the TOC's sha256. */
function writeFileFromLayer(target: string | Buffer, entry: MergedFile, options: RevertOptions, buffer: Buffer): void {
  const layer = options.layers[entry.dataLayer ?? entry.layer];
  if (!layer) throw new Error(`revert: '${entry.path}' names layer ${entry.dataLayer ?? entry.layer}, which the prefix does not have`);
  const source = openSync(layer.path, "r");
  const fd = openSync(target, "wx", 0o600);
  try {
    const hash = createHash("sha256");
    let position = entry.offset ?? 0;
    let left = entry.size;
    while (left > 0) {
      const read = readSync(source, buffer, 0, Math.min(buffer.length, left), position);
      if (read === 0) throw new CorruptContentError(layer.digest, `ends inside '${entry.path}'`);
      const chunk = buffer.subarray(0, read);
      hash.update(chunk);
      let written = 0;
      while (written < read) written += writeSync(fd, chunk, written, read - written);
      position += read;
      left -= read;
    }
    if (hash.digest("hex") !== entry.sha256) throw new CorruptContentError(layer.digest, `holds other bytes for '${entry.path}' than its TOC says`);
    if (options.asRoot) fchownSync(fd, entry.uid, entry.gid);
    fchmodSync(fd, diskMode("file", entry.mode, options.asRoot));
    futimesSync(fd, entry.mtime, entry.mtime);
  } finally {
    closeSync(fd);
    closeSync(source);
  }
}
