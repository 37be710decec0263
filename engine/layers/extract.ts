// Extracts canonical layers into a directory. Synchronous, for worker threads.
//
// Layers in the store are canonical, but extraction still refuses to write through a
// symlink or outside the target: a damaged cache must never touch the host.

import { createHash } from "node:crypto";
import {
  closeSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  linkSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  rmSync,
  symlinkSync,
  chmodSync,
  chownSync,
  utimesSync,
  writeSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { decodeName, hostPath } from "../../formats/names.js";
import { TarParser, type TarHeader } from "../../formats/tar.js";
import { CorruptContentError } from "../errors.js";
import type { Digest } from "../key.js";
import { createSpecialNodes, applyXattrs, type SpecialNode } from "./host-metadata.js";
import { UnsafeArchiveError, isSafeMarkerPath } from "./import.js";
import { parentOf } from "./merge.js";
import { type Toc, WHITEOUT_PREFIX } from "./toc.js";

export interface ExtractOptions {
  /** Apply owners, device nodes and all xattrs (only possible as root). */
  asRoot: boolean;
  /** The directory was empty before this layer: skip existence checks. */
  fresh: boolean;
  /** Where to put temporary files (the xattr dump). */
  tempDir: string;
}

/** The host path of a tree path, for fs: its exact bytes (see formats/names.ts). */
function at(root: string, path: string): string | Buffer {
  return hostPath(join(root, path));
}

/** Modes on disk when not root: the owner must keep read/write access to copy and diff the tree. */
export function diskMode(type: "file" | "dir", mode: number, asRoot: boolean): number {
  if (asRoot) return mode;
  return type === "dir" ? mode | 0o700 : mode | 0o600;
}

/**
 * Applies one layer (at `layerPath`, expected digest `digest`) onto `root`. Throws
 * CorruptContentError when the bytes don't hash to the digest.
 */
export function extractLayerSync(layerPath: string, digest: Digest, toc: Toc, root: string, options: ExtractOptions): void {
  if (!options.fresh) applyDeletions(root, toc);
  const knownDirs = new Set<string>([""]);
  const specials: SpecialNode[] = [];
  const xattrs: Array<{ path: string; xattrs: Record<string, Buffer> }> = [];
  let openFile: { fd: number; header: TarHeader } | undefined;

  const ensureSafeParent = (path: string, raw: string): void => {
    const parent = parentOf(path);
    if (knownDirs.has(parent)) return;
    let current = parent;
    const chain: string[] = [];
    while (!knownDirs.has(current)) {
      chain.push(current);
      current = parentOf(current);
    }
    for (const dir of chain.reverse()) {
      let stats;
      try {
        stats = lstatSync(at(root, dir));
      } catch {
        throw new UnsafeArchiveError(raw, `needs the directory '${dir}', which no layer creates`);
      }
      if (!stats.isDirectory()) throw new UnsafeArchiveError(raw, `would be written through '${dir}', which is not a directory`);
      knownDirs.add(dir);
    }
  };

  const clearPath = (path: string, wantDir: boolean): boolean => {
    if (options.fresh) return false;
    let stats;
    try {
      stats = lstatSync(at(root, path));
    } catch {
      return false;
    }
    if (wantDir && stats.isDirectory()) return true;
    rmSync(at(root, path), { recursive: true, force: true });
    return false;
  };

  const parser = new TarParser({
    onEntry(header) {
      const path = header.path;
      const slash = path.lastIndexOf("/");
      if (path.slice(slash + 1).startsWith(WHITEOUT_PREFIX)) return; // applied up front
      if (path === "" || path.startsWith("/") || path.split("/").includes("..")) throw new UnsafeArchiveError(header.rawPath, "has an unsafe path");
      ensureSafeParent(path, header.rawPath);
      const target = at(root, path);
      switch (header.type) {
        case "dir": {
          const exists = clearPath(path, true);
          if (!exists) mkdirSync(target, { mode: 0o700 });
          if (options.asRoot) chownSync(target, header.uid, header.gid);
          chmodSync(target, diskMode("dir", header.mode, options.asRoot));
          knownDirs.add(path);
          break;
        }
        case "file": {
          clearPath(path, false);
          const fd = openSync(target, "wx", 0o600);
          if (header.size > 0) openFile = { fd, header };
          else finishFile(fd, header);
          break;
        }
        case "symlink":
          clearPath(path, false);
          symlinkSync(hostPath(header.linkTarget!), target);
          if (options.asRoot) lchownSync(target, header.uid, header.gid);
          lutimesSync(target, header.mtime, header.mtime);
          break;
        case "hardlink": {
          clearPath(path, false);
          const linkTarget = header.linkTarget!.replace(/^(\.\/)+/, "");
          if (linkTarget.startsWith("/") || linkTarget.split("/").includes("..")) throw new UnsafeArchiveError(header.rawPath, `links outside the tree (${linkTarget})`);
          ensureSafeParent(linkTarget, header.rawPath);
          linkSync(at(root, linkTarget), target);
          break;
        }
        case "char":
        case "block":
        case "fifo":
          clearPath(path, false);
          if (options.asRoot || header.type === "fifo") specials.push({ path, type: header.type, major: header.devMajor ?? 0, minor: header.devMinor ?? 0 });
          else {
            // A placeholder: the layer keeps the real node. Its time is the node's, as the
            // tools that read the tree (mke2fs -d under fakeroot) take times from the disk.
            writeFileSync(target, "", { mode: 0o600 });
            utimesSync(target, header.mtime, header.mtime);
          }
          break;
      }
      if (header.xattrs && header.type !== "hardlink") xattrs.push({ path, xattrs: header.xattrs });
    },
    onData(chunk) {
      let offset = 0;
      while (offset < chunk.length) offset += writeSync(openFile!.fd, chunk, offset, chunk.length - offset);
    },
    onEntryEnd() {
      if (openFile) {
        finishFile(openFile.fd, openFile.header);
        openFile = undefined;
      }
    },
  });

  function finishFile(fd: number, header: TarHeader): void {
    try {
      if (options.asRoot) fchownSync(fd, header.uid, header.gid);
      fchmodSync(fd, diskMode("file", header.mode, options.asRoot));
      futimesSync(fd, header.mtime, header.mtime);
    } finally {
      closeSync(fd);
    }
  }

  const hash = createHash("sha256");
  const fd = openSync(layerPath, "r");
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const read = readSync(fd, buffer, 0, buffer.length, null);
      if (read === 0) break;
      const chunk = buffer.subarray(0, read);
      hash.update(chunk);
      if (!parser.ended) parser.write(chunk);
    }
    parser.end();
  } finally {
    closeSync(fd);
    if (openFile) closeSync(openFile.fd);
  }
  const actual = `sha256:${hash.digest("hex")}`;
  if (actual !== digest) throw new CorruptContentError(digest, `layer read back as ${actual}`);

  createSpecialNodes(root, specials);
  const specialPaths = new Set(specials.map((node) => node.path));
  for (const entry of toc.entries) {
    if (specialPaths.has(entry.path) && entry.type !== "whiteout" && entry.type !== "opaque") {
      if (options.asRoot) lchownSync(at(root, entry.path), entry.uid, entry.gid);
      chmodSync(at(root, entry.path), entry.mode);
      utimesSync(at(root, entry.path), entry.mtime, entry.mtime);
    }
  }
  if (options.asRoot) applyXattrs(root, xattrs, options.tempDir);
  else applyXattrs(root, xattrs.map(({ path, xattrs: all }) => ({ path, xattrs: userXattrs(all) })).filter(({ xattrs: kept }) => Object.keys(kept).length > 0), options.tempDir);
}

/** The xattrs a tree without root can hold: the user namespace's. */
export function userXattrs(xattrs: Record<string, Buffer>): Record<string, Buffer> {
  return Object.fromEntries(Object.entries(xattrs).filter(([name]) => name.startsWith("user.")));
}

/** Whiteouts and opaque markers delete from the layers below, before anything is written. */
function applyDeletions(root: string, toc: Toc): void {
  for (const entry of toc.entries) {
    if ((entry.type === "whiteout" || entry.type === "opaque") && !isSafeMarkerPath(entry.path, entry.type)) throw new UnsafeArchiveError(entry.path, "is a whiteout outside its directory");
    if (entry.type === "whiteout") rmSync(at(root, entry.path), { recursive: true, force: true });
    else if (entry.type === "opaque") {
      let names: Buffer[] = [];
      try {
        names = readdirSync(at(root, entry.path), { encoding: "buffer" });
      } catch {
        continue;
      }
      for (const name of names) rmSync(at(root, entry.path === "" ? decodeName(name) : `${entry.path}/${decodeName(name)}`), { recursive: true, force: true });
    }
  }
}

/** Sets directory mtimes last, deepest first, since writing children changes them. */
export function setDirectoryTimes(root: string, dirs: ReadonlyArray<{ path: string; mtime: number }>): void {
  const sorted = [...dirs].sort((a, b) => b.path.length - a.path.length);
  for (const dir of sorted) utimesSync(at(root, dir.path), dir.mtime, dir.mtime);
}
