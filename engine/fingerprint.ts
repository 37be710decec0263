// Content fingerprints of host files and directories named in step options. A file's hash
// is remembered with its stat (device, inode, size, mtime, ctime), like git's index, so a
// no-op build re-hashes nothing. Paths and mtimes never enter a fingerprint: only content,
// type, mode, owners and link targets do.

import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readlinkSync, statSync, type Stats } from "node:fs";
import { join } from "node:path";
import { readMemoFile, writeMemoFile } from "./memo.js";
import { hashFileSync, hexOf } from "./store.js";

export interface Fingerprint {
  type: "file" | "dir";
  sha256: string;
  /** Permission bits of a file (a directory's are inside its hash). */
  mode?: number;
}

/**
 * A directory's files as its fingerprint saw them: relative path → type, mode, owners and
 * content hash (or link target). Kept beside a build's key so that explain can name the files
 * that changed; never part of a key.
 */
export type DirectoryListing = Record<string, string>;

/** Directories with more entries than this are fingerprinted but not listed. */
const LISTING_LIMIT = 10_000;

interface MemoEntry {
  stat: string;
  sha256: string;
}

const MEMO_LIMIT = 200_000;

export class Fingerprinter {
  private readonly memo = new Map<string, MemoEntry>();
  private readonly used = new Set<string>();
  /** Directories walked in this run: two steps naming one directory walk it once. */
  private readonly directories = new Map<string, { sha256: string; listing: DirectoryListing | undefined }>();
  private dirty = false;

  constructor(private readonly memoFile: string) {
    for (const [path, entry] of Object.entries(readMemoFile<Record<string, MemoEntry>>(memoFile, {}))) this.memo.set(path, entry);
  }

  /** Fingerprint of a host path (followed if it is a symlink); throws ENOENT when missing. */
  fingerprint(path: string): Fingerprint {
    const stats = statSync(path);
    if (stats.isDirectory()) return { type: "dir", sha256: this.directory(path).sha256 };
    if (!stats.isFile()) throw new Error(`${path} is neither a file nor a directory`);
    return { type: "file", sha256: this.hashFile(path, stats), mode: stats.mode & 0o7777 };
  }

  private hashFile(path: string, stats: Stats): string {
    const statKey = `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}:${stats.mode}`;
    this.used.add(path);
    const known = this.memo.get(path);
    if (known && known.stat === statKey) return known.sha256;
    const sha256 = hashContent(path);
    this.memo.set(path, { stat: statKey, sha256 });
    this.dirty = true;
    return sha256;
  }

  /** The listing of a directory fingerprinted in this run; undefined when it was too large. */
  listingOf(path: string): DirectoryListing | undefined {
    return this.directories.get(path)?.listing;
  }

  private directory(root: string): { sha256: string; listing: DirectoryListing | undefined } {
    const known = this.directories.get(root);
    if (known) return known;
    const hash = createHash("sha256");
    // No prototype: a file may be called __proto__ or constructor.
    let listing: DirectoryListing | undefined = Object.create(null) as DirectoryListing;
    let listed = 0;
    const add = (type: string, path: string, details: string): void => {
      hash.update(`${type} ${path} ${details}\n`);
      if (listing && ++listed > LISTING_LIMIT) listing = undefined;
      if (listing) listing[path] = `${type} ${details}`;
    };
    const visit = (relative: string): void => {
      const names = readdirSync(relative === "" ? root : join(root, relative)).sort();
      for (const name of names) {
        const path = relative === "" ? name : `${relative}/${name}`;
        const full = join(root, path);
        const stats = lstatSync(full);
        const meta = `${(stats.mode & 0o7777).toString(8)} ${stats.uid}:${stats.gid}`;
        if (stats.isDirectory()) {
          add("d", path, meta);
          visit(path);
        } else if (stats.isFile()) add("f", path, `${meta} ${this.hashFile(full, stats)}`);
        else if (stats.isSymbolicLink()) add("l", path, `${meta} ${readlinkSync(full)}`);
        else add("s", path, `${meta} ${stats.mode >>> 12} ${stats.rdev}`);
      }
    };
    visit("");
    const walked = { sha256: hash.digest("hex"), listing };
    this.directories.set(root, walked);
    return walked;
  }

  /** Saves the memo (atomically), keeping what this run used first. */
  save(): void {
    if (!this.dirty) return;
    const entries: Record<string, MemoEntry> = {};
    let count = 0;
    for (const path of this.used) {
      const entry = this.memo.get(path);
      if (entry && count++ < MEMO_LIMIT) entries[path] = entry;
    }
    for (const [path, entry] of this.memo) if (!(path in entries) && count++ < MEMO_LIMIT) entries[path] = entry;
    writeMemoFile(this.memoFile, entries);
  }
}

function hashContent(path: string): string {
  return hexOf(hashFileSync(path));
}
