// Turns the changes a step made to its private tree into one layer.
//
// The tree started as an exact copy of the input rootfs. Any change to an inode (content,
// mode, owner, links, xattrs) moves its ctime past the baseline taken before the step ran,
// so one lstat walk finds every change without reading unchanged files. Metadata that
// cannot live on disk without root (owners, device nodes, security xattrs) comes from the
// input layers, or from what the step recorded through the Tree API.

import { lstatSync, readdirSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { decodeName, hostPath } from "../../formats/names.js";
import { diskMode } from "./extract.js";
import { readXattrs } from "./host-metadata.js";
import { type MergedView, parentOf } from "./merge.js";
import { type TocFile, type TocWhiteout, encodeXattrs, decodeXattrs, sortByPath } from "./toc.js";
import type { LayerItem } from "./writer.js";

export interface SpecialOverride {
  type: "char" | "block" | "fifo";
  major: number;
  minor: number;
  mode: number;
}

/** Metadata a step set through the Tree API, by path. */
export interface TreeOverrides {
  owners: Map<string, { uid: number; gid: number }>;
  specials: Map<string, SpecialOverride>;
  xattrs: Map<string, Record<string, Buffer>>;
  /** Paths changed before the ctime baseline last moved (see Tree.withShiftedOwners). */
  changed: Set<string>;
}

export function emptyOverrides(): TreeOverrides {
  return { owners: new Map(), specials: new Map(), xattrs: new Map(), changed: new Set() };
}

export interface DiffOptions {
  asRoot: boolean;
  sourceDateEpoch: number;
  /** Entries whose ctime is above this were changed by the step. */
  baselineCtimeMs: number;
  overrides: TreeOverrides;
  /** Read xattrs of changed files from disk (needs the attr tools). */
  readDiskXattrs: boolean;
}

export interface WalkedEntry {
  path: string;
  stats: Stats;
}

/** Every path under `root` (not `root` itself) with its lstat, sorted byte-wise. */
export function walkTree(root: string): WalkedEntry[] {
  const result: WalkedEntry[] = [];
  const visit = (relative: string): void => {
    const dir = relative === "" ? root : join(root, relative);
    // Names as bytes: a name that is not UTF-8 must not come back as U+FFFD.
    for (const dirent of readdirSync(hostPath(dir), { withFileTypes: true, encoding: "buffer" })) {
      const name = decodeName(dirent.name);
      const path = relative === "" ? name : `${relative}/${name}`;
      const stats = lstatSync(hostPath(join(root, path)));
      result.push({ path, stats });
      if (stats.isDirectory()) visit(path);
    }
  };
  visit("");
  return sortByPath(result);
}

/** A symlink's target, whatever bytes it holds. */
export function readLinkTarget(path: string): string {
  return decodeName(readlinkSync(hostPath(path), { encoding: "buffer" }));
}

export function fileTypeOf(stats: Stats): TocFile["type"] | "socket" {
  if (stats.isFile()) return "file";
  if (stats.isDirectory()) return "dir";
  if (stats.isSymbolicLink()) return "symlink";
  if (stats.isCharacterDevice()) return "char";
  if (stats.isBlockDevice()) return "block";
  if (stats.isFIFO()) return "fifo";
  return "socket";
}

/** Linux's encoding of dev_t into major and minor numbers. */
export function splitDevice(rdev: number): { major: number; minor: number } {
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev >>> 0;
  return {
    major: ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0),
    minor: (low & 0xff) | ((low >>> 12) & 0xfff00),
  };
}

export interface DiffResult {
  items: LayerItem[];
  /** Changed entries, for putting canonical times back on disk afterwards. */
  changed: TocFile[];
  /** Sockets found in the tree: a tar layer cannot hold them, so they are left out. */
  skippedSockets: string[];
}

export function diffTreeSync(root: string, base: MergedView, options: DiffOptions): DiffResult {
  const walked = walkTree(root);
  const present = new Set<string>();
  for (const { path } of walked) present.add(path);

  const whiteouts: TocWhiteout[] = [];
  for (const entry of base.entries()) {
    if (present.has(entry.path)) continue;
    const parent = parentOf(entry.path);
    if (parent !== "" && !present.has(parent)) continue; // the parent's whiteout covers it
    whiteouts.push({ path: entry.path, type: "whiteout" });
  }

  const { overrides } = options;
  const isChanged = (path: string, stats: Stats): boolean => {
    const before = base.get(path);
    if (!before || stats.ctimeMs > options.baselineCtimeMs) return true;
    if (overrides.owners.has(path) || overrides.specials.has(path) || overrides.xattrs.has(path) || overrides.changed.has(path)) return true;
    return false;
  };

  // Hardlinked files travel together: if one member changed, the whole group is emitted.
  const groups = new Map<number, string[]>();
  const changedInodes = new Set<number>();
  for (const { path, stats } of walked) {
    if (!stats.isFile() || stats.nlink < 2) continue;
    const members = groups.get(stats.ino) ?? [];
    members.push(path);
    groups.set(stats.ino, members);
    if (isChanged(path, stats)) changedInodes.add(stats.ino);
  }

  const changed: TocFile[] = [];
  const skippedSockets: string[] = [];
  const items: LayerItem[] = whiteouts.map((entry) => ({ entry }));
  const diskXattrCandidates: TocFile[] = [];
  for (const { path, stats } of walked) {
    const inGroup = stats.isFile() && stats.nlink > 1 && groups.get(stats.ino)!.length > 1;
    if (inGroup ? !changedInodes.has(stats.ino) : !isChanged(path, stats)) continue;
    const before = base.get(path);
    const special = overrides.specials.get(path);
    let type = fileTypeOf(stats);
    if (type === "socket") {
      skippedSockets.push(path);
      continue;
    }
    // Without root, device nodes are empty placeholder files on disk.
    const placeholder = !options.asRoot && type === "file" && stats.size === 0 && before && (before.type === "char" || before.type === "block") && stats.ctimeMs <= options.baselineCtimeMs;
    if (special) type = special.type;
    else if (placeholder) type = before.type;

    const owner = overrides.owners.get(path) ?? (options.asRoot ? { uid: stats.uid, gid: stats.gid } : before && before.type === type ? { uid: before.uid, gid: before.gid } : { uid: 0, gid: 0 });
    let mode = stats.mode & 0o7777;
    if (special) mode = special.mode;
    else if (!options.asRoot && before && before.type === type && (type === "file" || type === "dir") && mode === diskMode(type, before.mode, false)) mode = before.mode;
    else if (placeholder) mode = before.mode;

    const entry: TocFile = {
      path,
      type,
      mode,
      uid: owner.uid,
      gid: owner.gid,
      size: type === "file" ? stats.size : 0,
      mtime: Math.min(Math.floor(stats.mtimeMs / 1000), options.sourceDateEpoch),
    };
    if (type === "symlink") entry.linkTarget = readLinkTarget(join(root, path));
    if (type === "char" || type === "block") {
      const device = special ?? (placeholder ? { major: before.devMajor ?? 0, minor: before.devMinor ?? 0 } : splitDevice(stats.rdev));
      entry.devMajor = device.major;
      entry.devMinor = device.minor;
    }
    const primary = inGroup ? groups.get(stats.ino)![0]! : path;
    if (primary !== path) {
      entry.type = "hardlink";
      entry.size = 0;
      entry.linkTarget = primary;
      items.push({ entry });
      changed.push(entry);
      continue;
    }
    if (!options.readDiskXattrs && before?.xattrs && before.type === type) entry.xattrs = before.xattrs;
    const extra = overrides.xattrs.get(path);
    if (extra) entry.xattrs = encodeXattrs({ ...decodeXattrs(entry.xattrs), ...extra });
    if (options.readDiskXattrs && type !== "symlink") diskXattrCandidates.push(entry);
    items.push(type === "file" ? { entry, content: { path: join(root, path) } } : { entry });
    changed.push(entry);
  }

  if (diskXattrCandidates.length > 0) {
    const found = readXattrs(root, diskXattrCandidates.map((entry) => entry.path));
    for (const entry of diskXattrCandidates) {
      const onDisk = found.get(entry.path);
      const extra = overrides.xattrs.get(entry.path);
      const merged = { ...(onDisk ?? {}), ...(extra ?? {}) };
      entry.xattrs = encodeXattrs(merged);
      if (!entry.xattrs) delete entry.xattrs;
    }
  }
  return { items, changed, skippedSockets };
}
