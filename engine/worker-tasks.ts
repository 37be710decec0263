// The layer tasks that run in worker threads (see workers.ts). Arguments and results are
// plain data: they cross a thread boundary by structured clone.

import { closeSync, lutimesSync, openSync } from "node:fs";
import { join } from "node:path";
import type { Digest } from "./key.js";
import { diffTreeSync, type TreeOverrides } from "./layers/diff.js";
import { extractLayerSync, setDirectoryTimes } from "./layers/extract.js";
import { canonicalizeArchive, openDecompressed, spoolTar } from "./layers/import.js";
import { MergedView } from "./layers/merge.js";
import type { Toc } from "./layers/toc.js";
import { writeLayerSync, type WrittenLayer } from "./layers/writer.js";
import { rmSync } from "node:fs";
import { hostPath } from "../formats/names.js";

export interface ExtractArgs {
  root: string;
  layers: Array<{ path: string; digest: Digest; toc: Toc }>;
  asRoot: boolean;
  /** `root` is empty and nothing is below the first layer. */
  fresh: boolean;
  tempDir: string;
  /** Final directory mtimes, set after everything is written. */
  dirTimes: Array<{ path: string; mtime: number }>;
}

export async function extractLayers(args: ExtractArgs): Promise<void> {
  args.layers.forEach((layer, index) => {
    extractLayerSync(layer.path, layer.digest, layer.toc, args.root, { asRoot: args.asRoot, fresh: args.fresh && index === 0, tempDir: args.tempDir });
  });
  setDirectoryTimes(args.root, args.dirTimes);
}

export interface CommitArgs {
  root: string;
  /** TOCs of the rootfs the tree started from (empty: everything is new). */
  baseTocs: Toc[];
  asRoot: boolean;
  sourceDateEpoch: number;
  baselineCtimeMs: number;
  overrides: TreeOverrides;
  readDiskXattrs: boolean;
  outPath: string;
  /** Put the layer's canonical mtimes back on disk, so the tree can be cached as is. */
  normalizeTimes: boolean;
}

export interface CommitResult extends WrittenLayer {
  /** Number of changed entries (0: the step changed nothing). */
  changes: number;
  skippedSockets: string[];
}

export async function commitTree(args: CommitArgs): Promise<CommitResult> {
  const base = MergedView.of(args.baseTocs);
  const overrides = reviveOverrides(args.overrides);
  const diff = diffTreeSync(args.root, base, { ...args, overrides });
  const written = writeLayerSync(args.outPath, diff.items);
  if (args.normalizeTimes) {
    for (const entry of diff.changed) {
      if (entry.type !== "dir" && entry.type !== "hardlink") lutimesSync(hostPath(join(args.root, entry.path)), entry.mtime, entry.mtime);
    }
    setDirectoryTimes(args.root, diff.changed.filter((entry) => entry.type === "dir"));
  }
  return { ...written, changes: diff.items.length, skippedSockets: diff.skippedSockets };
}

export interface ImportArgs {
  archivePath: string;
  spoolPath: string;
  outPath: string;
  sourceDateEpoch: number;
  lowerTocs?: Toc[];
  keepWhiteouts: boolean;
}

export async function importArchive(args: ImportArgs): Promise<WrittenLayer> {
  try {
    const spooled = await spoolTar(openDecompressed(args.archivePath), args.spoolPath);
    const lower = args.lowerTocs ? MergedView.of(args.lowerTocs) : undefined;
    const fd = openSync(args.spoolPath, "r");
    try {
      const items = canonicalizeArchive(spooled, fd, { sourceDateEpoch: args.sourceDateEpoch, lower, keepWhiteouts: args.keepWhiteouts });
      return writeLayerSync(args.outPath, items);
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(args.spoolPath, { force: true });
  }
}

// Buffers arrive as Uint8Arrays after a structured clone.
function reviveOverrides(overrides: TreeOverrides): TreeOverrides {
  const xattrs = new Map<string, Record<string, Buffer>>();
  for (const [path, values] of overrides.xattrs) {
    xattrs.set(path, Object.fromEntries(Object.entries(values).map(([name, value]) => [name, Buffer.from(value)])));
  }
  return { owners: overrides.owners, specials: overrides.specials, xattrs, changed: overrides.changed };
}
