// Reads a layer pulled from a registry as it streams in, and makes its table of contents from
// the bytes themselves: nothing the registry says about a layer's files is believed. A layer
// osbuild would not have written (paths that are not canonical or out of order, no end
// marker, data hidden after it) is refused before anything uses it.

import { createHash, type Hash } from "node:crypto";
import { TarFormatError, TarParser } from "../../formats/tar.js";
import { checkedArchivePath } from "../layers/import.js";
import { comparePaths, isFile, tocEntryFromHeader, type Toc, type TocEntry, type TocFile } from "../layers/toc.js";
import { RefusedContentError } from "./format.js";

export class LayerReader {
  private readonly entries: TocEntry[] = [];
  private readonly parser: TarParser;
  private lastMarker: string | undefined;
  private lastFile: string | undefined;
  private problem: string | undefined;
  private afterEnd = false;
  /** The regular file whose data is coming, and the hash of it so far (the TOC keeps each file's sha256). */
  private file: { entry: TocFile; hash: Hash } | undefined;

  constructor(private readonly what: string) {
    this.parser = new TarParser({
      onEntry: (header, offset) => this.add(tocEntryFromHeader(header, offset), header.rawPath),
      onData: (chunk) => this.file?.hash.update(chunk),
      onEntryEnd: () => {
        if (this.file) this.file.entry.sha256 = this.file.hash.digest("hex");
        this.file = undefined;
      },
    });
  }

  write(chunk: Buffer): void {
    if (this.problem) return;
    if (this.afterEnd) {
      if (chunk.some((byte) => byte !== 0)) this.problem = "it has data after its end-of-archive marker";
      return;
    }
    try {
      this.parser.write(chunk);
    } catch (error) {
      this.problem = error instanceof TarFormatError ? error.message : String(error);
      return;
    }
    // The parser stops at the end marker and keeps nothing of the rest: check that it is zeros.
    if (this.parser.ended) this.afterEnd = true;
  }

  /** The layer's TOC; throws RefusedContentError when it is not a layer osbuild would write. */
  finish(): Toc {
    if (!this.problem) {
      try {
        this.parser.end();
        if (!this.parser.ended) this.problem = "it has no end-of-archive marker";
      } catch (error) {
        this.problem = error instanceof TarFormatError ? error.message : String(error);
      }
    }
    if (this.problem) throw new RefusedContentError(`${this.what} is not a layer osbuild wrote: ${this.problem}`);
    return { version: 1, entries: this.entries };
  }

  private add(entry: TocEntry, rawPath: string): void {
    if (this.problem) return;
    const canonical = (path: string): boolean => {
      try {
        return path !== "" && checkedArchivePath(path, rawPath) === path;
      } catch {
        return false;
      }
    };
    if (!canonical(entry.path) && !(entry.type === "opaque" && entry.path === "")) {
      this.problem = `the entry '${rawPath}' does not have a canonical path`;
      return;
    }
    // Canonical layers hold their whiteouts first, then their files, each in byte order.
    if (isFile(entry)) {
      if (this.lastFile !== undefined && comparePaths(this.lastFile, entry.path) >= 0) this.problem = `'${entry.path}' comes after '${this.lastFile}'`;
      if (entry.type === "hardlink" && !canonical(entry.linkTarget ?? "")) this.problem = `the hardlink '${entry.path}' points to '${entry.linkTarget}'`;
      this.lastFile = entry.path;
      if (entry.type === "file") this.file = { entry, hash: createHash("sha256") };
    } else {
      if (this.lastFile !== undefined) this.problem = `the whiteout of '${entry.path}' comes after files`;
      if (this.lastMarker !== undefined && comparePaths(this.lastMarker, entry.path) >= 0) this.problem = `the whiteout of '${entry.path}' is out of order`;
      this.lastMarker = entry.path;
    }
    this.entries.push(entry);
  }
}
