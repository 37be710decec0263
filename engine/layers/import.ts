// Turns a foreign tar archive (a base tarball, an OCI layer) into a canonical layer, and
// refuses archives that would write outside their tree: absolute paths, "..", entries
// below a symlink, hardlinks to files the archive does not hold.

import { spawn } from "node:child_process";
import { closeSync, createReadStream, createWriteStream, openSync, readSync } from "node:fs";
import { once } from "node:events";
import { pipeline } from "node:stream/promises";
import { Writable, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { compressionOf, type Compression } from "../../formats/compression.js";
import { TarParser, type TarHeader } from "../../formats/tar.js";
import { parentOf, type MergedView } from "./merge.js";
import { toolEnvironment } from "../tool-environment.js";
import { type TocEntry, type TocFile, tocEntryFromHeader, isFile, sortByPath } from "./toc.js";
import type { LayerItem } from "./writer.js";

export class UnsafeArchiveError extends Error {
  constructor(
    readonly entry: string,
    reason: string,
  ) {
    super(`archive entry '${entry}' ${reason}`);
    this.name = "UnsafeArchiveError";
  }
}

/** Linux's dev_t: 12 bits of major, 20 of minor (MINORBITS). */
const MAX_DEVICE_MAJOR = 4095;
const MAX_DEVICE_MINOR = 0xfffff;

export interface SpooledEntry {
  header: TarHeader;
  /** Offset of the entry's data in the spool file. */
  offset: number;
}

function detectCompression(path: string): Compression {
  const fd = openSync(path, "r");
  const magic = Buffer.alloc(6);
  try {
    readSync(fd, magic, 0, 6, 0);
  } finally {
    closeSync(fd);
  }
  return compressionOf(magic);
}

/** The archive's tar bytes, decompressed with zlib or the zstd/xz/bzip2 programs. */
export function openDecompressed(path: string): Readable {
  const compression = detectCompression(path);
  if (compression === "none") return createReadStream(path, { highWaterMark: 1 << 20 });
  if (compression === "gzip") return createReadStream(path, { highWaterMark: 1 << 20 }).pipe(createGunzip());
  const program = { zstd: "zstd", xz: "xz", bzip2: "bzip2" }[compression];
  const child = spawn(program, ["-dc", path], { stdio: ["ignore", "pipe", "pipe"], env: toolEnvironment() });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.on("error", (error) => child.stdout.destroy(new Error(`cannot run ${program} to decompress ${path}: ${error.message} (install the Debian package ${program})`)));
  child.on("close", (code) => {
    if (code !== 0) child.stdout.destroy(new Error(`${program} could not decompress ${path}: ${stderr.trim() || `exit ${code}`}`));
  });
  return child.stdout;
}

/** Copies the (decompressed) archive to `spoolPath` while parsing its headers. */
export async function spoolTar(input: Readable, spoolPath: string): Promise<SpooledEntry[]> {
  const entries: SpooledEntry[] = [];
  const parser = new TarParser({ onEntry: (header, offset) => entries.push({ header, offset }) });
  const spool = createWriteStream(spoolPath, { flags: "wx" });
  // The spool is not part of the pipeline: its errors (a full disk) must fail it, or they
  // would go unhandled and end the worker thread before anything removes the spool.
  spool.on("error", (error) => tee.destroy(error));
  const tee = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      try {
        if (!parser.ended) parser.write(chunk);
      } catch (error) {
        callback(error as Error);
        return;
      }
      if (!spool.write(chunk)) spool.once("drain", () => callback());
      else callback();
    },
    final(callback) {
      try {
        parser.end();
      } catch (error) {
        callback(error as Error);
        return;
      }
      spool.end(callback);
    },
  });
  try {
    await pipeline(input, tee);
  } finally {
    if (!spool.closed) {
      spool.destroy();
      await once(spool, "close").catch(() => undefined);
    }
  }
  return entries;
}

export interface CanonicalizeOptions {
  /** mtimes above this are clamped to it. */
  sourceDateEpoch: number;
  /** The layers below, for OCI layers; undefined for a base. */
  lower?: MergedView;
  /** Keep OCI whiteouts (layers above a base); a base has nothing to delete. */
  keepWhiteouts: boolean;
}

/**
 * Checks the spooled archive and returns its entries in canonical form: sorted, duplicates
 * resolved (last wins), parents present, hardlinks pointing at the first path of their group.
 */
export function canonicalizeArchive(spooled: readonly SpooledEntry[], spoolFd: number, options: CanonicalizeOptions): LayerItem[] {
  const files = new Map<string, { entry: TocFile; dataOffset: number; seq: number }>();
  // A non-directory that replaces a directory removes what was below it: recorded here (path →
  // when) and applied once at the end, so that no entry costs a pass over all the others.
  const replacedDirs = new Map<string, number>();
  let seq = 0;
  const whiteouts = new Map<string, TocEntry>();
  const lower = options.lower;

  const typeOf = (path: string): string | undefined => files.get(path)?.entry.type ?? (whiteouts.has(path) ? undefined : lower?.get(path)?.type);

  const checkParents = (path: string, raw: string): void => {
    let parent = parentOf(path);
    while (parent !== "") {
      const type = typeOf(parent);
      if (type === "symlink") {
        const target = files.get(parent)?.entry.linkTarget ?? lower?.get(parent)?.linkTarget;
        throw new UnsafeArchiveError(raw, `would be written through the symlink '${parent}' (→ ${target})`);
      }
      if (type !== undefined && type !== "dir") throw new UnsafeArchiveError(raw, `is below '${parent}', which is a ${type}, not a directory`);
      parent = parentOf(parent);
    }
  };

  for (const { header, offset } of spooled) {
    const raw = header.rawPath;
    const path = checkedArchivePath(header.path, raw);
    if (path === "") continue; // the root directory itself: its metadata is fixed
    const entry = tocEntryFromHeader({ ...header, path }, offset);
    checkParents(path, raw);
    if (!isFile(entry) && !isSafeMarkerPath(entry.path, entry.type)) throw new UnsafeArchiveError(raw, `is a whiteout of '${entry.path || "/"}', which would delete more than an entry of its directory`);
    if (!isFile(entry)) {
      if (options.keepWhiteouts) whiteouts.set(entry.path, entry);
      continue;
    }
    if (entry.type === "char" || entry.type === "block") {
      const major = entry.devMajor ?? 0;
      const minor = entry.devMinor ?? 0;
      if (major > MAX_DEVICE_MAJOR || minor > MAX_DEVICE_MINOR) throw new UnsafeArchiveError(raw, `is a device node ${major}:${minor}, which Linux can't have (majors go to ${MAX_DEVICE_MAJOR}, minors to ${MAX_DEVICE_MINOR})`);
    }
    if (entry.type === "hardlink") {
      let target = checkedArchivePath(entry.linkTarget!, raw, "link");
      checkParents(target, raw);
      // A link to a name that is itself a link (GNU tar writes these): the file it names.
      const chained = files.get(target)?.entry;
      if (chained?.type === "hardlink") target = chained.linkTarget!;
      const inArchive = files.get(target);
      const below = inArchive ? undefined : lower?.get(target);
      if (inArchive?.entry.type === "file") {
        entry.type = "hardlink";
        entry.linkTarget = target;
      } else if (below?.type === "file" && !whiteouts.has(target)) {
        entry.linkTarget = target; // a link to a lower layer's file: kept, resolved when merged
      } else {
        throw new UnsafeArchiveError(raw, `is a hardlink to '${entry.linkTarget}', which is not a regular file earlier in the archive`);
      }
    }
    entry.mtime = Math.min(entry.mtime, options.sourceDateEpoch);
    // A later entry replaces an earlier one; a non-directory replaces a whole subtree.
    const existing = files.get(path);
    if (existing?.entry.type === "dir" && entry.type !== "dir") replacedDirs.set(path, seq);
    files.set(path, { entry, dataOffset: offset, seq: seq++ });
  }
  if (replacedDirs.size > 0) {
    for (const [path, value] of files) {
      for (let parent = parentOf(path); parent !== ""; parent = parentOf(parent)) {
        const replacedAt = replacedDirs.get(parent);
        if (replacedAt !== undefined && replacedAt > value.seq) {
          files.delete(path);
          break;
        }
      }
    }
    for (const { entry } of files.values()) {
      if (entry.type === "hardlink" && !files.has(entry.linkTarget!) && lower?.get(entry.linkTarget!)?.type !== "file") {
        throw new UnsafeArchiveError(entry.path, `is a hardlink to '${entry.linkTarget}', which a later entry of the archive removed`);
      }
    }
  }

  // Parents the archive left out.
  for (const path of [...files.keys()]) {
    let parent = parentOf(path);
    while (parent !== "" && !files.has(parent) && lower?.get(parent)?.type !== "dir") {
      files.set(parent, { entry: { path: parent, type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: options.sourceDateEpoch }, dataOffset: 0, seq: seq++ });
      parent = parentOf(parent);
    }
  }

  // Hardlink groups within the archive: the first path in sorted order carries the data.
  const sorted = sortByPath([...files.values()].map((value) => ({ path: value.entry.path, value })));
  const primaryOf = new Map<string, string>(); // original data path → first path in order
  const groups = new Map<string, string[]>();
  for (const { value } of sorted) {
    const entry = value.entry;
    if (entry.type === "hardlink" && files.get(entry.linkTarget!)?.entry.type === "file") {
      const members = groups.get(entry.linkTarget!) ?? [];
      members.push(entry.path);
      groups.set(entry.linkTarget!, members);
    }
  }
  for (const [target, links] of groups) {
    const first = [target, ...links].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))[0]!;
    primaryOf.set(target, first);
  }

  // Whiteouts first: they apply to the layers below, before this layer's own entries.
  const items: LayerItem[] = sortByPath([...whiteouts.values()]).map((entry) => ({ entry }));
  for (const { value } of sorted) {
    const entry = value.entry;
    const group = entry.type === "file" ? primaryOf.get(entry.path) : entry.type === "hardlink" ? primaryOf.get(entry.linkTarget!) : undefined;
    if (group === undefined) {
      items.push(entry.type === "file" ? { entry, content: { fd: spoolFd, offset: value.dataOffset } } : { entry });
      continue;
    }
    const dataPath = entry.type === "file" ? entry.path : entry.linkTarget!;
    if (entry.path === group) {
      const data = files.get(dataPath)!;
      const source = data.entry;
      // The name that carries the group's data gets the file's metadata: a hardlink's own
      // header says nothing of the file (extraction links the name to the file's inode).
      const { mode, uid, gid, mtime, xattrs } = source;
      items.push({ entry: { ...entry, type: "file", size: source.size, mode, uid, gid, mtime, xattrs, linkTarget: undefined }, content: { fd: spoolFd, offset: data.dataOffset } });
    } else {
      items.push({ entry: { ...entry, type: "hardlink", size: 0, linkTarget: group } });
    }
  }
  return items;
}

/**
 * Whether a whiteout or opaque marker names something inside the tree: a whiteout of "",
 * "." or ".." (from ".wh.", ".wh.." or ".wh...") would delete a whole directory or its parent.
 */
export function isSafeMarkerPath(path: string, type: "whiteout" | "opaque"): boolean {
  if (type === "opaque" && path === "") return true; // hides everything below: the root's own business
  return path !== "" && path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

/** An archive entry's path (or hardlink target) relative to the tree, or an UnsafeArchiveError naming it. */
export function checkedArchivePath(path: string, raw: string, role: "path" | "link" = "path"): string {
  const subject = role === "path" ? "has the" : "points to the";
  if (path.startsWith("/")) throw new UnsafeArchiveError(raw, `${subject} absolute path '${path}'`);
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) {
    throw new UnsafeArchiveError(raw, role === "path" ? `has the path '${path}', which leaves the tree through '..'` : `points to '${path}', which leaves the tree`);
  }
  return parts.join("/");
}
